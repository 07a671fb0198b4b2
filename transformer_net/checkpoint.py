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

A small file must not cost much memory either: every count taken from it
(widths, residual blocks, styles) is checked against the limits below, every
tensor's shape against the network those counts build (computed on the meta
device: nothing allocated), and every tensor must hold its own bytes (a
stride-0 tensor repeating one stored number is refused), all before a NaN check
or a network allocates anything. The metadata (a model folder's whole
``config.json``) is checked too: JSON values of the expected types, finite
numbers, bounded nesting and size, so nothing that reads it later fails.

Multi-style networks (conditional instance norm) have the same tensor names with
(N, C) instead of (C,) norm weights; where the arguments do not say
``num_styles`` it is read from those shapes.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import pickle
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from . import hub
from .atomic import atomic_torch_save
from .errors import ModelFileError, first_line
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
# What a model file may declare: far above the networks trained here (32-128
# wide, 5 blocks, a few styles), far below what would exhaust a machine's memory
# when built; a file declaring more is refused before anything is allocated.
MAX_WIDTH = 4096
MAX_RESIDUAL = 64
MAX_STYLES = 1024
# A model folder's config.json is a few kB; metadata nests 3 levels deep.
MAX_CONFIG_BYTES = 8 * 2**20
# The paintings a model folder holds are thumbnails (image.THUMBNAIL_SIDE): ~10-30 kB.
MAX_THUMBNAIL_BYTES = 2**20
MAX_META_DEPTH = 32


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

    The one reader of the paintings that the app's gallery, sheets, Gatys in the app,
    ``evaluate.py`` and exported model folders show or copy: only those inside the
    model, the thumbnails it carries (written by training; base64 text in ONNX
    metadata; a model folder's own files, ``_folder_images``) when all ``count`` are
    JPEGs; else None for every style. Never the style image paths the metadata
    names: a model from elsewhere could name any image of this machine, which would
    be shown and, on export, copied into a folder ready to publish.
    """
    carried = meta.get("style_thumbnails")
    if isinstance(carried, (list, tuple)) and len(carried) == count:
        thumbs = [_jpeg_tensor(item) for item in carried]
        if all(t is not None for t in thumbs):
            return thumbs
    return [None] * count


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
        check_meta(path, meta or {})
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
    config = read_config(config_path)
    if config.get("format") != FORMAT:
        raise _not_ours(config_path, f'no "format": "{FORMAT}"')
    _check_version(config_path, config, "model folder")
    file_args = _field(config_path, config, "model_args", Mapping, "a dict")
    check_meta(config_path, config)
    tensors, _ = load_safetensors(path / WEIGHTS_FILE)
    sd = _weights(path / WEIGHTS_FILE, tensors, None)
    meta = {k: v for k, v in config.items() if k not in ("format", "version", "model_args")}
    args = _model_args(path / WEIGHTS_FILE, sd, file_args, args_file=config_path)
    names = meta.get("style_image_files") or []
    if len(names) == args.get("num_styles", 1):  # else they are not one per style: unused
        thumbnails = _folder_images(path, names)
        if thumbnails:
            meta["style_thumbnails"] = thumbnails
    return args, sd, meta


def _inside_model(folder: Path, path: Path) -> bool:
    """Whether ``path`` is a regular file inside the model folder ``folder`` once symlinks
    are followed: a symlink to an image elsewhere on this machine is not the model's.
    The Hub's cache is the exception it must be: a snapshot's files are symlinks into
    its repository's ``blobs/`` (``snapshots/<commit>/style.jpg -> ../../blobs/<sha>``)."""
    try:
        target, home = path.resolve(strict=True), folder.resolve(strict=True)
    except (OSError, RuntimeError):  # missing, a symlink loop
        return False
    inside = [home]
    if home.parent.name == "snapshots":
        inside.append(home.parent.parent / "blobs")
    return target.is_file() and any(target.is_relative_to(p) for p in inside)


def _folder_images(folder: Path, names: list[str]) -> list[torch.Tensor]:
    """The bytes of the files ``names`` of ``folder`` that exist, are not empty and have
    a thumbnail's size (at most MAX_THUMBNAIL_BYTES); each read once, however often a
    config.json names it."""
    read: dict[str, torch.Tensor | None] = {}
    for name in names:
        if name not in read:
            image = folder / name
            read[name] = None
            # only files of the folder: no path a config.json names elsewhere is read
            if Path(name).name == name and _inside_model(folder, image):
                if 0 < image.stat().st_size <= MAX_THUMBNAIL_BYTES:
                    data = bytearray(image.read_bytes()[:MAX_THUMBNAIL_BYTES])
                    read[name] = torch.frombuffer(data, dtype=torch.uint8) if data else None
    return [read[name] for name in names if read[name] is not None]


def read_config(path: str | os.PathLike) -> dict:
    """A model folder's ``config.json`` parsed: a JSON object of at most MAX_CONFIG_BYTES,
    nested at most MAX_META_DEPTH levels, without huge integers, NaN or infinities.

    Anything else (unreadable, not JSON, too large or deep) is ModelFileError
    ``"PATH: not a transformer-net model (why)"``, never a RecursionError or the
    ValueError of an integer of thousands of digits. The fields' types are
    checked by :func:`check_meta`.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:  # read at most one byte past the limit: never all of a huge file
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise ModelFileError(f"{path}: cannot read ({e.strerror or e})") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise _not_ours(
            path, f"larger than the {MAX_CONFIG_BYTES / 2**20:g} MB any model's config takes"
        )
    try:  # integers too long for int() (4300+ digits) stay text: _check_plain names them
        config = json.loads(data.decode("utf-8"), parse_int=_parse_int)
    except RecursionError:
        raise _not_ours(path, f"JSON nested deeper than {MAX_META_DEPTH} levels") from None
    except (UnicodeDecodeError, ValueError) as e:  # JSONDecodeError; an int of 4300+ digits
        raise _not_ours(path, f"not valid JSON: {_short(first_line(e))}") from None
    if not isinstance(config, dict):
        raise _not_ours(path, f"the JSON is {_a(config)}, expected an object")
    _check_plain(path, config)
    return config


class _LongInt:
    """An integer of more than 20 digits in a config.json, kept as its digit count.

    Python's int() refuses 4300+ digits (a ValueError naming no field) and takes
    quadratic time below that; no field of a model needs more than 64 bits.
    """

    def __init__(self, text: str):
        self.digits = len(text.lstrip("-"))


def _parse_int(text: str) -> int | _LongInt:
    return int(text) if len(text) <= 20 else _LongInt(text)


def _short(text: str, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters: names from a file can be megabytes long."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_plain(path: Path, data: Mapping, *, skip: tuple[str, ...] = ()) -> None:
    """``data`` is JSON data: dicts with string keys, lists, strings, booleans, None,
    integers below 2**63 and finite floats, nested at most MAX_META_DEPTH levels.

    Iterative, so a deeply nested value cannot exhaust the stack here; code that
    later walks the data recursively (``json.dumps``, the model card) is safe
    too. Top-level keys in ``skip`` are left out (the thumbnails: tensors).
    """
    stack: list[tuple[str, Any, int]] = [("", data, 0)]
    while stack:
        where, value, depth = stack.pop()
        if depth > MAX_META_DEPTH:
            raise _not_ours(
                path, f"{_short(where)!r} is nested deeper than {MAX_META_DEPTH} levels"
            )
        if isinstance(value, Mapping):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise _not_ours(
                        path, f"{_short(where or 'the metadata')!r} has a key {_short(repr(key))}"
                    )
                if not (depth == 0 and key in skip):
                    stack.append((f"{where}.{key}" if where else key, item, depth + 1))
        elif isinstance(value, (list, tuple)):
            stack += [(f"{where}[{i}]", item, depth + 1) for i, item in enumerate(value)]
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise _not_ours(path, f"{_short(where)!r} is {value}, not a finite number")
        elif isinstance(value, int) and not isinstance(value, bool):
            if abs(value) >= 2**63:
                raise _not_ours(path, f"{_short(where)!r} is an integer beyond 64 bits")
        elif isinstance(value, _LongInt):
            raise _not_ours(path, f"{_short(where)!r} is an integer of {value.digits} digits")
        elif not (value is None or isinstance(value, (str, bool))):
            raise _not_ours(path, f"{_short(where)!r} is {_a(value)}, not JSON data")


# The metadata fields that code reads (info, sheets, the app, the model card,
# evaluation) and the types it expects of them; other fields only need to be JSON.
_TEXT_FIELDS = ("style", "name", "created", "source", "quantized", "library_name", "exported_from")
_NAME_LIST_FIELDS = ("styles", "style_image_files", "files")
_COUNT_FIELDS = ("global_step", "image_size")
_DICT_FIELDS = ("loss", "training", "vgg", "image", "versions", "metrics", "model_args")


def check_meta(path: str | os.PathLike, meta: Mapping) -> None:
    """ModelFileError ``"PATH: not a transformer-net model (why)"`` unless ``meta`` (a model
    file's metadata, or a model folder's whole config.json) is JSON data whose known
    fields have the types their readers expect."""
    path = Path(path)
    _check_plain(path, meta, skip=("style_thumbnails",))

    def wrong(key: str, value: Any, expected: str) -> ModelFileError:
        return _not_ours(path, f"{key!r} is {_a(value)}, expected {expected}")

    def names(value: Any) -> bool:
        return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)

    for key in _TEXT_FIELDS:
        if meta.get(key) is not None and not isinstance(meta[key], str):
            raise wrong(key, meta[key], "a string")
    if meta.get("init_from") is not None and not isinstance(meta["init_from"], str):
        raise wrong("init_from", meta["init_from"], "a string or null")
    for key in _NAME_LIST_FIELDS:
        if key in meta and not names(meta[key]):
            raise wrong(key, meta[key], "a list of strings")
    for key in ("style_image", "style_images"):
        if key in meta and not (isinstance(meta[key], str) or names(meta[key])):
            raise wrong(key, meta[key], "a path or a list of paths")
    for key in _COUNT_FIELDS:
        value = meta.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise _not_ours(path, f"{key!r} is {_short(repr(value))}, expected a whole number >= 0")
    for key in _DICT_FIELDS:
        if meta.get(key) is not None and not isinstance(meta[key], Mapping):
            raise wrong(key, meta[key], "a dict")
    for key, value in (meta.get("metrics") or {}).items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise wrong(f"metrics.{_short(key)}", value, "a number")
    thumbnails = meta.get("style_thumbnails")
    if thumbnails is not None and not isinstance(thumbnails, (list, tuple)):
        raise wrong("style_thumbnails", thumbnails, "a list of JPEG images")
    version = meta.get("version")  # a model folder's; newer ones: _check_version
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
        raise wrong("version", version, "an int")
    args = meta.get("model_args") or {}
    channels = args.get("channels")
    if channels is not None and not (
        isinstance(channels, (list, tuple))
        and len(channels) == 3
        and all(isinstance(c, int) and not isinstance(c, bool) for c in channels)
    ):
        shown = _short(repr(channels))
        raise _not_ours(path, f"'model_args.channels' is {shown}, expected 3 widths")
    for key in ("num_residual", "num_styles"):
        value = args.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise wrong(f"model_args.{key}", value, "an int")


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
    check_meta(path, meta)
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
    """``sd`` checked: string keys, dense floating-point tensors that hold their own bytes.

    (Finiteness is checked once the shapes are known to be the network's:
    :func:`_model_args`.)
    """
    out = {}
    stored: dict[tuple[int, int], int] = {}  # (address, bytes) of each distinct storage
    needed = 0
    for key, value in sd.items():
        name = f"{where}[{prefix + str(key)!r}]" if where else repr(key)
        if not isinstance(key, str):
            raise _not_ours(path, f"{where or 'the dict'} has a key {key!r} that is not a name")
        if not isinstance(value, torch.Tensor):
            raise _not_ours(path, f"{name} is {_a(value)} where a weight tensor should be")
        if value.layout != torch.strided:
            raise _not_ours(path, f"{name} is a {value.layout} tensor, expected a dense one")
        if not value.is_floating_point():
            raise _not_ours(path, f"{name} is a {value.dtype} tensor, expected floating point")
        # A tensor whose strides repeat stored numbers (stride 0) declares more values
        # than the file holds: a few bytes could stand for gigabytes once copied, built
        # or even checked for NaN.
        size = value.numel() * value.element_size()
        storage = value.untyped_storage()
        held = storage.nbytes() - value.storage_offset() * value.element_size()
        if size > held:
            raise _not_ours(
                path,
                f"{name} of shape {tuple(value.shape)} needs {size} bytes but its data holds "
                f"{held} (repeated values)",
            )
        stored[(storage.data_ptr(), storage.nbytes())] = storage.nbytes()
        needed += size
        out[key] = value
    if needed > sum(stored.values()):  # tensors sharing one stored block
        raise _not_ours(
            path, f"the tensors need {needed} bytes but share {sum(stored.values())} bytes of data"
        )
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


def _model_args(
    path: Path,
    sd: Mapping[str, torch.Tensor],
    file_args: Mapping | None,
    *,
    args_file: Path | None = None,
) -> dict:
    """The arguments that rebuild the network of ``sd``; ``file_args`` (read from
    ``args_file``, default ``path``) must agree with them, and every tensor of ``sd``
    must have exactly the shape that network gives it; then its values must be finite.

    They come from the tensor shapes, so a wrong number in a file (say
    ``num_residual: 1e9``) is reported instead of building a network that size,
    and the counts those shapes declare are bounded (MAX_WIDTH, MAX_RESIDUAL,
    MAX_STYLES): a tensor of shape (2**40, 0) holds no bytes but would build
    2**40 styles. Nothing here allocates more than the tensors already take.
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
    _check_counts(path, sd, args)
    for key, value in (file_args or {}).items():
        if key not in ("channels", "num_residual", "num_styles"):
            continue  # other (future) arguments are not needed to rebuild the network
        expected = args.get(key, 1 if key == "num_styles" else None)
        given = list(value) if isinstance(value, (list, tuple)) else value
        if key == "num_styles" and given is None:
            continue
        if given != expected or isinstance(value, bool):
            raise _not_ours(
                args_file or path,
                f"model_args {key}={_short(repr(value))} does not match the weights ({expected!r})",
            )
    _check_shapes(path, sd, args)
    refuse_nonfinite(path, sd.items())
    return args


def _check_counts(path: Path, sd: Mapping[str, torch.Tensor], args: Mapping) -> None:
    """The widths, blocks and styles the shapes declare, within what a network may have."""
    for name, width in zip(("conv1", "conv2", "conv3"), args["channels"], strict=True):
        if width > MAX_WIDTH:
            raise _not_ours(
                path,
                f"'{name}.conv2d.weight' declares {width} channels (at most {MAX_WIDTH})",
            )
    if args["num_residual"] > MAX_RESIDUAL:
        raise _not_ours(path, f"{args['num_residual']} residual blocks (at most {MAX_RESIDUAL})")
    styles = args.get("num_styles", 1)
    if styles > MAX_STYLES:
        raise _not_ours(
            path,
            f"'in1.weight' of shape {tuple(sd['in1.weight'].shape)} declares {styles} styles "
            f"(at most {MAX_STYLES})",
        )


def _check_shapes(path: Path, sd: Mapping[str, torch.Tensor], args: Mapping) -> None:
    """Every tensor of ``sd`` present with the shape that ``TransformerNet(**args)`` gives
    it, and no other: checked on the meta device, so no weights are allocated."""
    try:
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in TransformerNet(**args).state_dict().items()}
    except (TypeError, ValueError) as e:  # e.g. a zero width read from an empty tensor
        raise _not_ours(path, f"cannot build the network {args!r}: {e}") from None
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} tensors missing, first {missing[0]!r}")
        if unexpected:
            parts.append(f"{len(unexpected)} unknown tensors, first {_short(unexpected[0])!r}")
        raise _not_ours(path, "; ".join(parts))
    for key, value in sd.items():
        if tuple(value.shape) != expected[key]:
            raise _not_ours(
                path, f"{key!r} has shape {tuple(value.shape)}, expected {expected[key]}"
            )


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
    # Every tensor's shape is the network's (read_model_file): building it costs no
    # more than the file's weights.
    args, sd, meta = read_model_file(path)
    model = TransformerNet(**args)
    try:
        model.load_state_dict(sd)
    except RuntimeError as e:
        raise _not_ours(Path(path), f"weights do not fit ({first_line(e)})") from None
    return model.to(device).eval(), meta
