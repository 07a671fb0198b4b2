"""Model files: what training writes and ``stylize.py`` reads.

Our model file is small: the arguments that rebuild the TransformerNet, its
weights, and a little metadata (style, training step) - no VGG, no optimizer.
It loads with ``torch.load(weights_only=True)``: a model file from a stranger
cannot run code.

Four layouts are read, all through :func:`load_model`:

- our model file (``{"format": "transformer-net", ...}``);
- a model folder (``model_folder.py``: ``config.json`` and ``model.safetensors``, the
  Hugging Face layout), local or ``hf://user/name[@revision]`` (``hub.py``);
- a Lightning checkpoint written by training (the transformer is extracted);
- a bare TransformerNet state dict, such as the ``.pth`` files of the PyTorch
  examples' ``fast_neural_style`` (widths inferred from the tensor shapes; the
  ``running_mean``/``running_var`` keys that old PyTorch left in the released
  candy/mosaic/udnie/rain_princess models are ignored).

Every file is checked before a network is built, so a bad one is one line
naming it (ModelFileError), never a traceback: a malformed dict is ``FILE: not a
transformer-net model (why)``; weights holding NaN/inf (a diverged run, which
would only give black images) are refused; the network's widths come from the
tensor shapes, so a wrong ``model_args`` entry cannot make it build a huge one.

Multi-style networks (conditional instance norm) have the same tensor names with
(N, C) instead of (C,) norm weights; where the arguments do not say
``num_styles`` it is read from those shapes.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import pickle
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from . import hub
from .atomic import atomic_torch_save
from .errors import ModelFileError, TransformerNetError, first_line
from .image import load_image, style_thumbnail
from .model import TransformerNet
from .safetensors_file import load_file as load_safetensors
from .weights_only import refused_global

FORMAT = "transformer-net"
FORMAT_VERSION = 1
_LEGACY_SUFFIXES = (".running_mean", ".running_var", ".num_batches_tracked")
_LIGHTNING_PREFIX = "transformer."
# A model folder: the architecture and metadata, and the weights (model_folder.py writes it).
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def save_model_file(
    model: TransformerNet, path: str | os.PathLike, *, meta: Mapping[str, Any] | None = None
) -> Path:
    """Write ``model`` as a model file (atomically: temp file + rename)."""
    path = Path(path)
    payload = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "model_args": model.config,
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "meta": dict(meta or {}),
    }
    atomic_torch_save(payload, path)
    return path


def resolve_model_path(path: str | os.PathLike) -> Path:
    """The local path of a model: ``hf://user/name[@rev]`` downloaded (``hub.py``), else as is."""
    return hub.download(path) if hub.is_hub_path(path) else Path(path)


def is_model_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder holding ``config.json`` and ``model.safetensors``."""
    path = Path(path)
    return path.is_dir() and all((path / name).is_file() for name in (CONFIG_FILE, WEIGHTS_FILE))


def style_thumbnails(meta: Mapping[str, Any], count: int) -> list[torch.Tensor | None]:
    """A model's paintings as JPEG bytes (1-D uint8 tensors, ``image.style_thumbnail``),
    one per style, from its metadata.

    The thumbnails the metadata carries (written by training; base64 text in ONNX
    metadata) when all ``count`` are JPEGs; else made from the style image files
    it names, where they are on this machine; None for a style neither gives.
    """
    carried = meta.get("style_thumbnails")
    if isinstance(carried, (list, tuple)) and len(carried) == count:
        thumbs = [_jpeg_tensor(item) for item in carried]
        if all(t is not None for t in thumbs):
            return thumbs
    paths = meta.get("style_images", meta.get("style_image"))
    paths = [paths] if isinstance(paths, str) else paths
    if not (isinstance(paths, (list, tuple)) and len(paths) == count):
        return [None] * count
    thumbs = []
    for path in paths:
        try:
            thumbs.append(style_thumbnail(load_image(str(path))))
        except TransformerNetError:  # a moved or unreadable painting: no thumbnail
            thumbs.append(None)
    return thumbs


def _jpeg_tensor(item: Any) -> torch.Tensor | None:
    """A carried thumbnail as a 1-D uint8 tensor of JPEG bytes; None if it is not one."""
    if isinstance(item, str):  # ONNX metadata (export._metadata): base64 text
        try:
            data = bytearray(base64.b64decode(item, validate=True))
        except (binascii.Error, ValueError):
            return None
        item = torch.frombuffer(data, dtype=torch.uint8) if data else None
    if isinstance(item, torch.Tensor) and item.dtype == torch.uint8 and item.dim() == 1:
        if item[:2].tolist() == [0xFF, 0xD8]:  # the JPEG start-of-image marker
            return item
    return None


def check_model_path(path: Path) -> None:
    """ModelFileError naming ``path`` if it is missing, empty, or a folder that is not a
    model folder (the message says which of its files are missing)."""
    if not path.exists():
        raise ModelFileError(f"{path}: model file not found")
    if path.is_dir():
        missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (path / name).is_file()]
        if missing:
            raise ModelFileError(
                f"{path}: a folder without {' and '.join(missing)}: not a model folder "
                f"(a model file, or a folder holding {CONFIG_FILE} and {WEIGHTS_FILE})"
            )
        return
    if path.stat().st_size == 0:
        raise ModelFileError(f"{path}: empty file, not a model")


def read_model_file(path: str | os.PathLike) -> tuple[dict, dict, dict]:
    """Read any supported layout -> (model_args, state_dict, meta), without building.

    Everything is checked before a network is built: malformed files raise
    ModelFileError ``"FILE: not a transformer-net model (why)"``, weights with
    NaN/inf raise one naming the first such tensor. ``model_args`` are those
    that rebuild the network stored (checked against the tensor shapes).
    """
    path = resolve_model_path(path)
    check_model_path(path)
    if path.is_dir():
        return _read_folder(path)
    obj = _torch_load(path)
    if not isinstance(obj, Mapping):
        raise _not_ours(path, f"the file holds {_a(obj)}, not a dict of weights")

    if obj.get("format") == FORMAT:
        _check_version(path, obj, "model file")
        file_args = _field(path, obj, "model_args", Mapping, "a dict")
        sd = _weights(path, _field(path, obj, "state_dict", Mapping, "a dict"), "state_dict")
        meta = obj.get("meta")
        if meta is not None and not isinstance(meta, Mapping):
            raise _not_ours(path, f"'meta' is {_a(meta)}, expected a dict")
        return _model_args(path, sd, file_args), sd, dict(meta or {})

    if "state_dict" in obj or "pytorch-lightning_version" in obj:
        return _read_lightning(path, obj)

    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        keys = ", ".join(repr(k) for k in list(obj)[:5])
        raise _not_ours(path, f"a dict without weight tensors (keys: {keys or 'none'})")
    sd = {k: v for k, v in obj.items() if not str(k).endswith(_LEGACY_SUFFIXES)}
    sd = _weights(path, sd, None)
    return _model_args(path, sd, None), sd, {"source": "state dict"}


def _check_version(path: Path, obj: Mapping, what: str) -> None:
    """Our format's ``version``: an int this program understands (else ModelFileError)."""
    version = obj.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise _not_ours(path, f"'version' is {_a(version)}, expected an int")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: {what} version {version!r} is newer than this program "
            f"understands ({FORMAT_VERSION}); upgrade transformer-net"
        )


def _read_folder(path: Path) -> tuple[dict, dict, dict]:
    """A model folder: ``config.json`` (JSON, never code) and ``model.safetensors``.

    ``meta`` is the config without its format fields and ``model_args``; the
    style thumbnails it lists come back as JPEG bytes (``meta["style_thumbnails"]``),
    as the model file that the folder was made from held them.
    """
    config_path = path / CONFIG_FILE
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(f"{config_path}: not valid JSON ({first_line(e)})") from None
    if not isinstance(config, Mapping) or config.get("format") != FORMAT:
        raise _not_ours(config_path, f'no "format": "{FORMAT}"')
    _check_version(config_path, config, "model folder")
    file_args = _field(config_path, config, "model_args", Mapping, "a dict")
    tensors, _ = load_safetensors(path / WEIGHTS_FILE)
    sd = _weights(path / WEIGHTS_FILE, tensors, None)
    meta = {k: v for k, v in config.items() if k not in ("format", "version", "model_args")}
    thumbnails = []
    for name in meta.get("style_image_files") or ():
        image = path / str(name)
        if Path(str(name)).name == str(name) and image.is_file():  # only files of the folder
            thumbnails.append(torch.frombuffer(bytearray(image.read_bytes()), dtype=torch.uint8))
    if thumbnails:
        meta["style_thumbnails"] = thumbnails
    return _model_args(config_path, sd, file_args), sd, meta


def _read_lightning(path: Path, obj: Mapping) -> tuple[dict, dict, dict]:
    """A Lightning checkpoint (or a dict shaped like one): the ``transformer.*`` weights."""
    full = _field(path, obj, "state_dict", Mapping, "a dict")
    sd = {
        k[len(_LIGHTNING_PREFIX) :]: v
        for k, v in full.items()
        if isinstance(k, str) and k.startswith(_LIGHTNING_PREFIX)
    }
    if not sd:
        raise ModelFileError(f"{path}: Lightning checkpoint without a transformer network")
    sd = _weights(path, sd, "state_dict", prefix=_LIGHTNING_PREFIX)
    hparams = obj.get("hyper_parameters")
    if hparams is None:
        hparams = {}
    elif not isinstance(hparams, Mapping):
        raise _not_ours(path, f"'hyper_parameters' is {_a(hparams)}, expected a dict")
    file_args = hparams.get("model")
    if file_args is not None and not isinstance(file_args, Mapping):
        raise _not_ours(path, f"'hyper_parameters.model' is {_a(file_args)}, expected a dict")
    meta = {"source": "lightning checkpoint", "global_step": obj.get("global_step")}
    # style_names / style_sources (lists); checkpoints before 2026-12 hold
    # style_name / style_image (a string, or a list for a multi-style run).
    names = hparams.get("style_names", hparams.get("style_name"))
    sources = hparams.get("style_sources", hparams.get("style_image"))
    if isinstance(names, (list, tuple)) and len(names) > 1:  # a multi-style run
        meta["styles"] = [str(name) for name in names]
    elif names:
        meta["style"] = str(names[0] if isinstance(names, (list, tuple)) else names)
    # What train.py writes into model files, so that a model exported from
    # any checkpoint can be evaluated with the loss it was trained with.
    if isinstance(sources, (list, tuple)) and len(sources) == 1:
        sources = sources[0]
    if isinstance(sources, str):
        meta["style_image"] = sources
    if isinstance(hparams.get("loss"), Mapping):
        meta["loss"] = dict(hparams["loss"])
    return _model_args(path, sd, file_args), sd, meta


def _torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)``, its failures as one-line ModelFileErrors.

    A file refused because it would import Python objects (which could run
    code) gets a message saying so, distinct from a corrupt file.
    """
    try:
        with warnings.catch_warnings():
            # torch warns on stderr about the pickle protocol of files torch.save
            # did not write (raw pickles); the error below says all there is.
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError, truncated zip, bad magic, I/O error
        unsafe = refused_global(e, path)
        if unsafe:
            raise ModelFileError(
                f"{path}: refused to load: it holds a pickled Python object ({unsafe}), which "
                "could run code when loaded; only weights (tensors, numbers, strings) are "
                "loaded"
            ) from None
        # The unpickler's own words (a KeyError of a byte value, torch's advice on
        # weights_only) say nothing to the user; zip and I/O errors do.
        garbled = isinstance(e, (KeyError, EOFError, pickle.UnpicklingError))
        reason = "unreadable data" if garbled else first_line(e)
        raise ModelFileError(f"{path}: corrupt or not a PyTorch file ({reason})") from None


def _not_ours(path: Path, why: str) -> ModelFileError:
    return ModelFileError(f"{path}: not a transformer-net model ({why})")


def _a(value: Any) -> str:
    """'a list', 'an int', 'None': how a wrong value is described in errors."""
    if value is None:
        return "None"
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


_MISSING = object()


def _field(path: Path, obj: Mapping, key: str, kind: type, expected: str) -> Any:
    value = obj.get(key, _MISSING)
    if value is _MISSING:
        raise _not_ours(path, f"no '{key}'")
    if not isinstance(value, kind):
        raise _not_ours(path, f"'{key}' is {_a(value)}, expected {expected}")
    return value


def _weights(
    path: Path, sd: Mapping, where: str | None, *, prefix: str = ""
) -> dict[str, torch.Tensor]:
    """``sd`` checked: string keys, floating-point tensors, all finite."""
    out = {}
    for key, value in sd.items():
        name = f"{where}[{prefix + str(key)!r}]" if where else repr(key)
        if not isinstance(key, str):
            raise _not_ours(path, f"{where or 'the dict'} has a key {key!r} that is not a name")
        if not isinstance(value, torch.Tensor):
            raise _not_ours(path, f"{name} is {_a(value)} where a weight tensor should be")
        if not value.is_floating_point():
            raise _not_ours(path, f"{name} is a {value.dtype} tensor, expected floating point")
        out[key] = value
    refuse_nonfinite(path, out.items())
    return out


def refuse_nonfinite(path: str | os.PathLike, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
    """ModelFileError naming ``path`` and the first floating tensor holding NaN/inf.

    A diverged training run saves NaN weights: the model would only give black
    images, so every loader (model files, TorchScript, ONNX) refuses it instead.
    """
    for name, value in weights:
        if not value.is_floating_point():
            continue
        bad = int((~torch.isfinite(value.detach())).sum())
        if bad:
            raise ModelFileError(
                f"{path}: weights hold NaN/inf ({bad} of {value.numel()} values of {name!r}): "
                "the model would give black images (training diverged?)"
            )


def _model_args(path: Path, sd: Mapping[str, torch.Tensor], file_args: Mapping | None) -> dict:
    """The arguments that rebuild the network of ``sd``; ``file_args`` must agree with them.

    They come from the tensor shapes, so a wrong number in a file (say
    ``num_residual: 1e9``) is reported instead of building a network that size.
    """
    for name in ("conv1", "conv2", "conv3"):
        weight = sd.get(f"{name}.conv2d.weight")
        if weight is None:
            raise _not_ours(path, f"no tensor '{name}.conv2d.weight'")
        # Widths come from these shapes: an empty or flat tensor would build nonsense.
        if weight.dim() != 4 or weight.numel() == 0:
            raise _not_ours(
                path,
                f"'{name}.conv2d.weight' has shape {tuple(weight.shape)}, "
                "expected a (out, in, k, k) convolution weight",
            )
    args = infer_model_args(sd)
    for key, value in (file_args or {}).items():
        if key not in ("channels", "num_residual", "num_styles"):
            continue  # other (future) arguments are not needed to rebuild the network
        expected = args.get(key, 1 if key == "num_styles" else None)
        given = list(value) if isinstance(value, (list, tuple)) else value
        if key == "num_styles" and given is None:
            continue
        if given != expected or isinstance(value, bool):
            raise _not_ours(
                path, f"model_args {key}={value!r} does not match the weights ({expected!r})"
            )
    return args


def infer_model_args(state_dict: Mapping[str, torch.Tensor]) -> dict:
    """Widths and residual-block count from the tensor shapes of a state dict."""
    channels = [
        int(state_dict[f"{name}.conv2d.weight"].shape[0]) for name in ("conv1", "conv2", "conv3")
    ]
    num_residual = 0
    while f"res{num_residual + 1}.conv1.conv2d.weight" in state_dict:
        num_residual += 1
    args = {"channels": channels, "num_residual": num_residual}
    if infer_num_styles(state_dict) > 1:
        args["num_styles"] = infer_num_styles(state_dict)
    return args


def infer_num_styles(state_dict: Mapping[str, torch.Tensor]) -> int:
    """Styles of a network from its first norm: weight (N, C) conditional, (C,) plain."""
    weight = state_dict.get("in1.weight")
    return int(weight.shape[0]) if weight is not None and weight.dim() == 2 else 1


def load_model(
    path: str | os.PathLike, *, device: str | torch.device = "cpu"
) -> tuple[TransformerNet, dict]:
    """Build the TransformerNet stored in ``path`` -> (model in eval mode, meta)."""
    path = resolve_model_path(path)  # downloaded once; the messages below name the folder
    args, sd, meta = read_model_file(path)
    try:
        model = TransformerNet(**args)
    except (TypeError, ValueError) as e:  # e.g. a zero width read from an empty tensor
        raise _not_ours(Path(path), f"cannot build the network {args!r}: {e}") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} tensors missing, first {missing[0]!r}")
        if unexpected:
            parts.append(f"{len(unexpected)} unknown tensors, first {unexpected[0]!r}")
        raise _not_ours(Path(path), "; ".join(parts))
    for key, value in sd.items():  # name the tensor; load_state_dict's error is a list
        if value.shape != expected[key].shape:
            raise _not_ours(
                Path(path),
                f"{key!r} has shape {tuple(value.shape)}, expected {tuple(expected[key].shape)}",
            )
    try:
        model.load_state_dict(sd)
    except RuntimeError as e:
        raise _not_ours(Path(path), f"weights do not fit ({first_line(e)})") from None
    return model.to(device).eval(), meta
