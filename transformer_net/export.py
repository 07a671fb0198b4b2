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
:func:`quantize_onnx` makes an int8 copy of an ONNX file (onnxruntime's static
quantization, calibrated on photos); :func:`output_psnr` measures what it costs.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import io
import json
import logging
import math
import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from .atomic import atomic_write
from .errors import ConfigError, ImageError, ModelFileError, first_line
from .image import list_images, load_short_side
from .model import SIZE_MULTIPLE, TransformerNet

# Bumped when exports change (the cached exports of stylize.py --runtime auto are keyed by it).
EXPORT_VERSION = 2  # 2: the column-folded output convolution
ONNX_OPSET = 17  # InstanceNormalization, Resize and dynamic Pad/Range are all older
INPUT_NAME = "image"
OUTPUT_NAME = "stylized"
ONNX_INSTALL_HINT = 'pip install "transformer-net[onnx]"'
# The example traced through the network: odd sides exercise the padding path.
_EXAMPLE_SIZE = (67, 45)
# What int8 quantization converts: the convolutions, except the two 9x9 layers
# next to the image (3 channels: slower in int8 than in fp32 on AVX2 CPUs, and
# the largest loss of quality). Instance norms, padding and upsampling stay
# fp32: quantized, they were no faster and lost PSNR (docs/benchmarks.md).
INT8_OP_TYPES = ("Conv",)


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
) -> Path:
    """Write ``model`` as an ONNX file (atomically); ``dynamic``: any batch, height, width.

    With ``dynamic=False`` the graph accepts only (1, 3, *size*). ``meta`` (style
    name, training step) goes into the file's metadata_props when the ``onnx``
    package is installed.
    """
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


def output_psnr(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """PSNR in dB between two images of 0-255 pixels (uint8 or float; any equal shapes).

    Float images are clamped to 0-255 and rounded first, as saving them would,
    so the number describes the images a user gets. Identical images: ``inf``.
    """
    x, y = (_saved_pixels(v) for v in (a, b))
    if x.shape != y.shape:
        raise ValueError(f"output_psnr: shapes differ: {x.shape} and {y.shape}")
    mse = float(np.mean((x - y) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def _saved_pixels(image: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().float().numpy()
    return np.clip(np.round(np.asarray(image, dtype=np.float64)), 0, 255)  # uint8: unchanged


def calibration_image(path: str | os.PathLike, size: int) -> np.ndarray:
    """A photo as the exported graph's input: (1, 3, size, size) float32 RGB 0-255.

    The shorter side is resized to ``size`` and the centre cropped square, as
    training crops photos. Unreadable files are an :class:`ImageError` naming them.
    """
    try:
        img = load_short_side(path, size)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ImageError(f"{path}: cannot read the photo ({first_line(e)})") from None
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    arr = np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1)[None])  # (1, 3, S, S)


def photo_files(photos: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """A folder's image files (recursive, sorted), or the given list of files as paths."""
    if isinstance(photos, str | os.PathLike):
        folder = Path(photos)
        if not folder.is_dir():
            raise ConfigError(f"{folder}: calibration photos: not a folder")
        found = list_images(folder)
        if not found:
            raise ConfigError(f"{folder}: calibration photos: no image files in the folder")
        return found
    return [Path(p) for p in photos]


class _CalibrationReader:
    """onnxruntime's ``CalibrationDataReader`` interface (it checks for ``get_next``):
    one photo per call, read as it is needed."""

    def __init__(self, photos: Sequence[Path], size: int):
        self._inputs = ({INPUT_NAME: calibration_image(p, size)} for p in photos)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._inputs, None)


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """onnxruntime's quantizer warns through the root logger (e.g. to run its
    pre-processing, which made no difference here: docs/benchmarks.md)."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def quantize_onnx(
    fp32_path: str | os.PathLike,
    int8_path: str | os.PathLike,
    *,
    photos: str | os.PathLike | Sequence[str | os.PathLike],
    size: int = 256,
    count: int = 32,
) -> Path:
    """Write an int8 copy of the fp32 ONNX file ``fp32_path`` to ``int8_path`` (atomically).

    onnxruntime's static quantization in QDQ format: int8 weights per output
    channel in a 7-bit range (``reduce_range``: AVX2 CPUs without VNNI add pairs
    of products in 16 bits, which full 8-bit weights can overflow), and int8
    activations whose ranges are measured on the first ``count`` of ``photos``
    (a folder or a list of files), each a ``size`` x ``size`` centre crop. Only the layers in
    :data:`INT8_OP_TYPES` are quantized, the image-side 9x9 convolutions excepted.
    The input and output stay float32 RGB 0-255, so the file runs wherever the
    fp32 one does. The metadata of ``fp32_path`` is kept, plus ``quantized: int8``.
    """
    if size < 1 or count < 1:
        raise ConfigError(f"calibration size and count must be >= 1, got {size} and {count}")
    quantization, onnx = _quantization_modules(int8_path)
    chosen = photo_files(photos)[:count]
    if not chosen:
        raise ConfigError(f"{int8_path}: no calibration photos given")
    try:
        model = onnx.load(str(fp32_path))
    except Exception as e:  # noqa: BLE001 - protobuf's DecodeError, OSError, ...
        raise ModelFileError(f"{fp32_path}: cannot read the ONNX model ({first_line(e)})") from None
    convs = [node.name for node in model.graph.node if node.op_type == "Conv"]
    with tempfile.TemporaryDirectory(prefix="transformer-net-int8.") as tmp, _quiet_root_logger():
        out = Path(tmp) / "int8.onnx"
        quantization.quantize_static(
            str(fp32_path),
            str(out),
            _CalibrationReader(chosen, size),
            quant_format=quantization.QuantFormat.QDQ,
            op_types_to_quantize=list(INT8_OP_TYPES),
            nodes_to_exclude=[convs[0], convs[-1]] if convs else [],
            per_channel=True,
            reduce_range=True,
            calibration_providers=["CPUExecutionProvider"],
        )
        quantized = onnx.load(str(out))
    props = {p.key: p.value for p in model.metadata_props}
    props.update(quantized="int8", calibration=f"{len(chosen)} photos, {size}x{size} crops")
    del quantized.metadata_props[:]
    for key, value in props.items():
        quantized.metadata_props.add(key=key, value=value)
    with atomic_write(int8_path) as f:
        f.write(quantized.SerializeToString())
    return Path(int8_path)


def _quantization_modules(int8_path: str | os.PathLike) -> tuple[Any, Any]:
    """(onnxruntime.quantization, onnx), or a :class:`ConfigError` saying how to install them."""
    try:
        import onnx
        from onnxruntime import quantization
    except ImportError:
        raise ConfigError(
            f"{int8_path}: int8 quantization needs onnxruntime and onnx: {ONNX_INSTALL_HINT}"
        ) from None
    return quantization, onnx
