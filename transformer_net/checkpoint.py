"""Model files: what training writes and ``stylize.py`` reads.

Our model file is small: the arguments that rebuild the TransformerNet, its
weights, and a little metadata (style, training step) - no VGG, no optimizer.
It loads with ``torch.load(weights_only=True)``: a model file from a stranger
cannot run code.

Three layouts are read, all through :func:`load_model`:

- our model file (``{"format": "transformer-net", ...}``);
- a Lightning checkpoint written by training (the transformer is extracted);
- a bare TransformerNet state dict, such as the ``.pth`` files of the PyTorch
  examples' ``fast_neural_style`` (widths inferred from the tensor shapes; the
  ``running_mean``/``running_var`` keys that old PyTorch left in the released
  candy/mosaic/udnie/rain_princess models are ignored).

Multi-style networks (conditional instance norm) have the same tensor names with
(N, C) instead of (C,) norm weights; where the arguments do not say
``num_styles`` it is read from those shapes.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_write
from .model import TransformerNet

FORMAT = "transformer-net"
FORMAT_VERSION = 1
_LEGACY_SUFFIXES = (".running_mean", ".running_var", ".num_batches_tracked")
_LIGHTNING_PREFIX = "transformer."


class ModelFileError(ValueError):
    """A model file is missing, unreadable or not a TransformerNet; names the file."""


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


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` that never leaves a truncated file (temp file + rename)."""
    with atomic_write(path) as f:
        torch.save(obj, f)


def check_model_path(path: Path) -> None:
    """ModelFileError naming ``path`` if it is missing, a folder or empty."""
    if not path.exists():
        raise ModelFileError(f"{path}: model file not found")
    if path.is_dir():
        raise ModelFileError(f"{path}: is a directory, not a model file")
    if path.stat().st_size == 0:
        raise ModelFileError(f"{path}: empty file, not a model")


def read_model_file(path: str | os.PathLike) -> tuple[dict, dict, dict]:
    """Read any supported layout -> (model_args, state_dict, meta), without building."""
    path = Path(path)
    check_model_path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" in str(e):
            raise ModelFileError(
                f"{path}: refused to load: the file contains Python objects other than "
                "tensors, which could run code (only weights_only files are loaded)"
            ) from None
        raise ModelFileError(
            f"{path}: corrupt or not a PyTorch file (not loadable with weights_only=True)"
        ) from None
    except Exception as e:  # truncated zip, bad magic, I/O error: all mean 'not usable'
        raise ModelFileError(f"{path}: corrupt or not a PyTorch file ({_short(e)})") from None
    if not isinstance(obj, Mapping):
        raise ModelFileError(f"{path}: expected a dict of weights, found {type(obj).__name__}")

    if obj.get("format") == FORMAT:
        version = obj.get("version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ModelFileError(
                f"{path}: model file version {version!r} is newer than this program "
                f"understands ({FORMAT_VERSION}); upgrade transformer-net"
            )
        return dict(obj["model_args"]), dict(obj["state_dict"]), dict(obj.get("meta") or {})

    if "state_dict" in obj and "pytorch-lightning_version" in obj:
        sd = {
            k[len(_LIGHTNING_PREFIX) :]: v
            for k, v in obj["state_dict"].items()
            if k.startswith(_LIGHTNING_PREFIX)
        }
        if not sd:
            raise ModelFileError(f"{path}: Lightning checkpoint without a transformer network")
        hparams = obj.get("hyper_parameters") or {}
        args = hparams.get("model") or infer_model_args(sd)
        meta = {"source": "lightning checkpoint", "global_step": obj.get("global_step")}
        if isinstance(hparams.get("style_name"), (list, tuple)):  # a multi-style run
            meta["styles"] = list(hparams["style_name"])
        elif hparams.get("style_name"):
            meta["style"] = hparams["style_name"]
        # What train.py writes into model files, so that a model exported from
        # any checkpoint can be evaluated with the loss it was trained with.
        if isinstance(hparams.get("style_image"), str):
            meta["style_image"] = hparams["style_image"]
        if isinstance(hparams.get("loss"), dict):
            meta["loss"] = dict(hparams["loss"])
        return dict(args), sd, meta

    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors or len(tensors) != len(obj):
        raise ModelFileError(
            f"{path}: not a transformer-net model file, Lightning checkpoint or state dict"
        )
    sd = {k: v for k, v in tensors.items() if not k.endswith(_LEGACY_SUFFIXES)}
    try:
        args = infer_model_args(sd)
    except KeyError as e:
        raise ModelFileError(
            f"{path}: not a TransformerNet state dict (no tensor {e.args[0]!r})"
        ) from None
    return args, sd, {"source": "state dict"}


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
    args, sd, meta = read_model_file(path)
    try:
        model = TransformerNet(
            channels=tuple(args.get("channels", (32, 64, 128))),
            num_residual=int(args.get("num_residual", 5)),
            num_styles=int(args.get("num_styles") or infer_num_styles(sd)),
        )
    except (TypeError, ValueError) as e:
        raise ModelFileError(f"{path}: invalid model arguments {args!r} ({e})") from None
    missing, unexpected = _key_mismatch(model, sd)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors (first: {missing[0]!r})")
        if unexpected:
            parts.append(f"{len(unexpected)} unknown tensors (first: {unexpected[0]!r})")
        raise ModelFileError(f"{path}: not a TransformerNet model: {', '.join(parts)}")
    try:
        model.load_state_dict(sd)
    except RuntimeError as e:
        raise ModelFileError(f"{path}: weights do not fit TransformerNet ({_short(e)})") from None
    return model.to(device).eval(), meta


def _key_mismatch(model: torch.nn.Module, sd: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    expected = set(model.state_dict())
    return sorted(expected - set(sd)), sorted(set(sd) - expected)


def _short(e: BaseException) -> str:
    text = str(e).strip()
    text = text.splitlines()[0] if text else type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."
