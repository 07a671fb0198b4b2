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

The ONNX graph computes the output layer column-folded (:class:`_ColumnFoldedConv`):
the same sums, in a shape onnxruntime's CPU convolution runs faster.
``quantize.py`` makes int8 copies of these ONNX files.
"""

from __future__ import annotations

import base64
import copy
import io
import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .atomic import atomic_write
from .errors import ConfigError
from .model import SIZE_MULTIPLE, TransformerNet

# Bumped when exports change (the cached exports of stylize.py --runtime auto are keyed by it).
EXPORT_VERSION = 2  # 2: the column-folded output convolution
ONNX_OPSET = 17  # InstanceNormalization, Resize and dynamic Pad/Range are all older
# The opsets whose graph of this network onnxruntime loads and runs: below 12 Clip takes
# no int64 bounds (the dynamic padding's), above 23 torch's exporter has no symbolics.
ONNX_OPSETS = range(12, 24)
INPUT_NAME = "image"
OUTPUT_NAME = "stylized"
ONNX_INSTALL_HINT = 'pip install "transformer-net[onnx]"'
# The example traced through the network: odd sides exercise the padding path.
_EXAMPLE_SIZE = (67, 45)


def _export_copy(model: TransformerNet) -> TransformerNet:
    """An fp32 CPU copy in eval mode, so exporting never touches the caller's model."""
    return copy.deepcopy(model).float().cpu().eval().requires_grad_(False)


class _ColumnFoldedConv(nn.Module):
    """A stride-1 ``conv`` computed as a stride-(1, f) convolution with f x C outputs.

    Output channel o*C + c at column j holds the original channel c at column
    f*j + o: its kernel is the original shifted right by o columns, with zero
    taps elsewhere, so every output is the same sum of the same products. Why:
    onnxruntime's blocked CPU convolution computes output channels 8 at a time,
    so the 3-channel output layer wastes 5 of every 8 lanes; folded to 12
    channels it wastes none and runs faster (docs/benchmarks.md). The output width
    must be a multiple of f: the output layer's is (the network pads to a
    multiple of SIZE_MULTIPLE).
    """

    def __init__(self, conv: nn.Conv2d, fold: int):
        super().__init__()
        weight = conv.weight.detach()  # (C, C_in, kh, kw)
        out, cin, kh, kw = weight.shape
        folded = weight.new_zeros(fold * out, cin, kh, kw + fold - 1)
        for o in range(fold):
            folded[o * out : (o + 1) * out, :, :, o : o + kw] = weight
        bias = conv.bias.detach() if conv.bias is not None else weight.new_zeros(out)
        self.register_buffer("weight", folded)
        self.register_buffer("bias", bias.repeat(fold))
        self.fold, self.out_channels = fold, out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(x, self.weight, self.bias, stride=(1, self.fold))  # (B, f*C, H, W/f)
        b, _, h, _ = y.shape
        y = y.reshape(b, self.fold, self.out_channels, h, -1)  # (B, f, C, H, W/f)
        return y.permute(0, 2, 3, 4, 1).reshape(b, self.out_channels, h, -1)  # (B, C, H, W)


def _fold_output_layer(net: TransformerNet) -> TransformerNet:
    """Give ``net`` (an export copy) the column-folded output convolution, for onnxruntime."""
    net.deconv3.conv2d = _ColumnFoldedConv(net.deconv3.conv2d, SIZE_MULTIPLE)
    return net


def _example(size: tuple[int, int]) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(1, 3, *size, generator=g) * 255  # (1, 3, H, W)


def _metadata(model: TransformerNet, meta: Mapping[str, Any] | None) -> dict[str, str]:
    meta = dict(meta or {})
    if "style_thumbnails" in meta:  # JPEG bytes as uint8 tensors -> base64 text
        meta["style_thumbnails"] = [
            base64.b64encode(t.numpy().tobytes()).decode("ascii") for t in meta["style_thumbnails"]
        ]
    return {
        "format": "transformer-net",
        "model_args": json.dumps(model.config),
        "meta": json.dumps(meta, default=str),
    }


def export_onnx(
    model: TransformerNet,
    path: str | os.PathLike,
    *,
    opset: int = ONNX_OPSET,
    dynamic: bool = True,
    size: tuple[int, int] = (256, 256),
    meta: Mapping[str, Any] | None = None,
    props: Mapping[str, str] | None = None,
) -> Path:
    """Write ``model`` as an ONNX file (atomically); ``dynamic``: any batch, height, width.

    ``props``: more metadata_props entries (``{key: text}``), written with or without
    the ``onnx`` package (the runners' cache stores its source's hash there).

    With ``dynamic=False`` the graph accepts only (1, 3, *size*). ``meta`` (style
    name, training step) goes into the file's metadata_props when the ``onnx``
    package is installed.
    """
    if opset not in ONNX_OPSETS:
        raise ConfigError(
            f"opset {opset}: ONNX export supports opsets {ONNX_OPSETS[0]}-{ONNX_OPSETS[-1]}"
        )
    net = _fold_output_layer(_export_copy(model))
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
    for key, value in (props or {}).items():
        data += metadata_prop_bytes(key, value)
    with atomic_write(path) as f:
        f.write(data)
    return Path(path)


def metadata_prop_bytes(key: str, value: str) -> bytes:
    """One ONNX ``metadata_props`` entry as the protobuf bytes appended to a ModelProto.

    A protobuf message followed by more fields of it parses as the message with those
    fields added (repeated ones appended), so this needs no ``onnx`` package:
    ModelProto's field 14 holds StringStringEntryProto {key = 1, value = 2}.
    """
    entry = _length_delimited(1, key.encode()) + _length_delimited(2, value.encode())
    return _length_delimited(14, entry)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


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
