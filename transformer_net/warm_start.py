"""Warm starts: a new training run whose transformer starts from a trained network.

Johnson et al. 2016 train every style from random weights, although every style
network must first learn the same thing: to reproduce the photo's structure. A run
can instead start from weights that already do (``init_from=``):

- ``photo``: a network of the run's preset trained on the content loss alone
  (``warm_starts/photo-<preset>/``, shipped with the package; how each was made:
  docs/training.md, "Time to quality");
- any trained model: a model file, a model folder, ``hf://user/name``, or a
  Lightning checkpoint, e.g. another style's network. Fine-tuning a network
  trained for other styles to a new one is how Dumoulin et al. 2017 (section 4)
  and Zhang et al. 2019 (MetaStyle) add a style in a fraction of the steps.

Only the weights are taken: the optimizer, the scheduler and the step count start
fresh (this is not a resume: ``ckpt_path`` is). A multi-style source gives one
style's norms (``init_from_style``, default the first); a multi-style run started
from a single-style network gives every style that network's norms.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import hub
from .checkpoint import CONFIG_FILE, read_model_file, resolve_model_path
from .errors import ConfigError, ModelFileError

PHOTO = "photo"
# The photo-reconstruction starts shipped with the package, one model folder per preset.
PHOTO_STARTS = Path(__file__).parent / "warm_starts"


@dataclass
class WarmStart:
    """What a run starts from: ``weights`` to load into the run's TransformerNet, and
    ``description``, recorded in the model file and card (``meta["init_from"]``)."""

    weights: dict[str, torch.Tensor]
    description: str

    def apply(self, transformer: nn.Module) -> None:
        """Copy the weights into ``transformer`` (same architecture: checked by ``read``)."""
        with torch.no_grad():
            for name, tensor in transformer.state_dict().items():
                tensor.copy_(self.weights[name].to(tensor.dtype))


def read_warm_start(
    source: str,
    *,
    model_args: Mapping[str, Any],
    num_styles: int,
    style: str | None = None,
    preset: str | None = None,
) -> WarmStart:
    """The weights that start a run of ``model_args`` (``channels``, ``num_residual``)
    with ``num_styles`` styles, from ``source`` (``photo`` or any model path).

    Raises ConfigError naming ``init_from`` and both architectures when they differ
    (``preset``: the run's preset name, for that message), ModelFileError for an
    unreadable source, and ConfigError for an unknown ``style``.
    """
    source = str(source)
    want = {"channels": [int(c) for c in model_args["channels"]]}
    want["num_residual"] = int(model_args.get("num_residual", 5))
    if source == PHOTO:
        path = photo_start(want, preset=preset)
    else:
        path = resolve_model_path(source) if hub.is_hub_path(source) else Path(source)
        path = path.expanduser()
    try:
        args, weights, meta = read_model_file(path)
    except ModelFileError as e:
        raise ModelFileError(f"init_from={source}: {e}") from None
    got = {"channels": list(args["channels"]), "num_residual": int(args["num_residual"])}
    if got != want:
        raise ConfigError(
            f"init_from={source}: the source is {_describe(got)} but this run trains "
            f"{_describe(want, preset)}; pick the model preset of the source (model=...) "
            "or another source"
        )
    names = _style_names(meta, int(args.get("num_styles") or 1))
    weights, picked = _norms_for(weights, names, num_styles, style, source)
    step = meta.get("global_step")
    details = [
        path.name if source == PHOTO else None,
        f"style {picked}" if picked else None,
        f"step {step}" if step else None,
    ]
    details = [d for d in details if d]
    described = source + (f" ({', '.join(details)})" if details else "")
    return WarmStart(weights=weights, description=described)


def photo_start(model_args: Mapping[str, Any], *, preset: str | None = None) -> Path:
    """The shipped photo-reconstruction start whose architecture is ``model_args``."""
    found = photo_starts()
    for path, args in found.items():
        if args == {k: model_args[k] for k in ("channels", "num_residual")}:
            return path
    shipped = "; ".join(f"{p.name} {_describe(a)}" for p, a in found.items()) or "none"
    raise ConfigError(
        f"init_from={PHOTO}: no photo start for {_describe(dict(model_args), preset)} "
        f"(shipped: {shipped}); train one with the recipe in docs/training.md and pass its "
        "model file as init_from"
    )


def photo_starts() -> dict[Path, dict[str, Any]]:
    """The shipped photo starts: folder -> its ``channels`` and ``num_residual``."""
    found = {}
    for folder in sorted(PHOTO_STARTS.glob("photo-*")):
        try:
            config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
            args = config["model_args"]
            found[folder] = {
                "channels": [int(c) for c in args["channels"]],
                "num_residual": int(args["num_residual"]),
            }
        except (OSError, ValueError, KeyError, TypeError):
            continue  # an incomplete folder (a broken install) is no start; the error lists
    return found


def _describe(args: Mapping[str, Any], preset: str | None = None) -> str:
    name = f"model={preset}, " if preset else ""
    return f"{name}channels {list(args['channels'])}, {args['num_residual']} residual blocks"


def _style_names(meta: Mapping[str, Any], count: int) -> list[str]:
    names = meta.get("styles")
    if isinstance(names, (list, tuple)) and len(names) == count:
        return [str(n) for n in names]
    if count == 1 and meta.get("style"):
        return [str(meta["style"])]
    return [str(k) for k in range(count)]


def _norms_for(
    weights: Mapping[str, torch.Tensor],
    names: Sequence[str],
    num_styles: int,
    style: str | None,
    source: str,
) -> tuple[dict[str, torch.Tensor], str | None]:
    """``weights`` with the instance-norm rows the run needs, and the style picked.

    Norm weights are (C,) in a single-style network and (N, C) in a multi-style
    one (``model.ConditionalInstanceNorm2d``); everything else has the same shape.
    """
    multi = len(names) > 1
    if style is not None and str(style) not in names:
        raise ConfigError(
            f"init_from_style={style}: the source {source} has no such style "
            f"(it has {', '.join(names)})"
        )
    keep_all = multi and num_styles == len(names) and style is None
    row = names.index(str(style)) if style is not None else 0
    picked = None if keep_all or not multi else names[row]
    out = {}
    for key, value in weights.items():
        if _is_norm(key, value, multi):
            if multi and not keep_all:
                value = value[row]  # (N, C) -> (C,)
            if num_styles > 1 and value.dim() == 1:
                value = value.expand(num_styles, -1)  # every style starts from this one
        out[key] = value.clone()
    return out, picked


def _is_norm(key: str, value: torch.Tensor, multi: bool) -> bool:
    """Instance-norm scale/shift: ``in*``/``res*.in*`` weights and biases."""
    leaf = key.rsplit(".", 2)
    owner = leaf[-2] if len(leaf) > 1 else ""
    return owner.startswith("in") and value.dim() == (2 if multi else 1)
