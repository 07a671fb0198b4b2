"""Deployment formats: ONNX and TorchScript files of a TransformerNet (Johnson et al. 2016).

Both files hold the whole network (graph + weights) and run without this
package's Python code: the ONNX file in onnxruntime (or any ONNX runtime), the
TorchScript file with ``torch.jit.load`` in Python or C++ (libtorch).

Both are made by tracing the network with ``torch.jit.trace``: the ONNX file
with the legacy TorchScript-based exporter (``torch.onnx.export(dynamo=False)``).
Under tracing, ``model._pad_to_multiple`` switches to a formulation in tensor
arithmetic, so height and width stay dynamic in the graph and every size (odd
ones and 1x1 included) gives the pixels of the eager model. The dynamo exporter
(``torch.export``) specializes the padding's Python branches instead and
accepts only sides >= 5, so it is not used.

Input and output, for both formats: ``image`` (B, 3, H, W) float32 RGB 0-255 ->
``stylized`` (B, 3, H, W) float32 RGB ~0-255 (clamp and round to save), with
B, H and W dynamic. ``runners.py`` runs both files behind the ``inference.Stylizer``
interface (``stylize.py --model wave.onnx``).
"""

from __future__ import annotations

import copy
import io
import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_write
from .model import TransformerNet

ONNX_OPSET = 17  # InstanceNormalization, Resize and dynamic Pad/Range are all older
INPUT_NAME = "image"
OUTPUT_NAME = "stylized"
# The example traced through the network: odd sides exercise the padding path.
_EXAMPLE_SIZE = (67, 45)


def _export_copy(model: TransformerNet) -> TransformerNet:
    """An fp32 CPU copy in eval mode, so exporting never touches the caller's model."""
    return copy.deepcopy(model).float().cpu().eval().requires_grad_(False)


def _example(size: tuple[int, int]) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(1, 3, *size, generator=g) * 255  # (1, 3, H, W)


def _metadata(model: TransformerNet, meta: Mapping[str, Any] | None) -> dict[str, str]:
    return {
        "format": "transformer-net",
        "model_args": json.dumps(model.config),
        "meta": json.dumps(dict(meta or {}), default=str),
    }


def export_onnx(
    model: TransformerNet,
    path: str | os.PathLike,
    *,
    opset: int = ONNX_OPSET,
    dynamic: bool = True,
    size: tuple[int, int] = (256, 256),
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model`` as an ONNX file (atomically); ``dynamic``: any batch, height, width.

    With ``dynamic=False`` the graph accepts only (1, 3, *size*). ``meta`` (style
    name, training step) goes into the file's metadata_props when the ``onnx``
    package is installed.
    """
    net = _export_copy(model)
    axes = {0: "batch", 2: "height", 3: "width"}
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # Deprecation notices of the legacy exporter, and TracerWarnings from the
        # size checks inside F.pad/F.interpolate: the shapes that matter are traced
        # (tests compare the graph with eager PyTorch at several odd sizes).
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (_example(_EXAMPLE_SIZE if dynamic else size),),
            buf,
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes} if dynamic else None,
            do_constant_folding=True,
        )
    data = buf.getvalue()
    try:
        import onnx
    except ImportError:
        pass
    else:
        proto = onnx.load_from_string(data)
        for key, value in _metadata(net, meta).items():
            proto.metadata_props.add(key=key, value=value)
        data = proto.SerializeToString()
    with atomic_write(path) as f:
        f.write(data)
    return Path(path)


def export_torchscript(
    model: TransformerNet, path: str | os.PathLike, *, meta: Mapping[str, Any] | None = None
) -> Path:
    """Write ``model`` as a traced TorchScript file (atomically); any batch, height, width.

    Loads with ``torch.jit.load(path)`` (Python) or ``torch::jit::load`` (C++)
    without this package; ``meta`` is stored as the extra file ``transformer_net.json``.
    """
    net = _export_copy(model)
    buf = io.BytesIO()
    extra = {"transformer_net.json": json.dumps(_metadata(net, meta))}
    with warnings.catch_warnings():
        # TracerWarnings as in export_onnx, and torch.jit's deprecation notice (it
        # still works; ONNX is the recommended deployment format).
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(net, _example(_EXAMPLE_SIZE), check_trace=False)
        torch.jit.save(traced, buf, _extra_files=extra)
    with atomic_write(path) as f:
        f.write(buf.getvalue())
    return Path(path)
