"""int8 copies of ONNX exports: static quantization calibrated on photos.

onnxruntime quantizes the convolutions (``quantize_static``, QDQ format: each
quantized tensor appears as QuantizeLinear -> DequantizeLinear around fp32 ops,
and onnxruntime fuses DequantizeLinear -> Conv -> QuantizeLinear into one
QLinearConv when it loads the file). :func:`quantize_before_copies` then moves
each QuantizeLinear in front of the reflection pads and nearest upsamplings
that feed it: those ops only copy values, so they give the same integers on
one-byte tensors as on four-byte ones, at a quarter of the memory traffic.
Jacob et al. 2018 ("Quantization and Training of Neural Networks for Efficient
Integer-Arithmetic-Only Inference") describe the arithmetic; docs/benchmarks.md
has what each choice here gained or cost. :func:`output_psnr` measures what
quantization costs in the saved pixels.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .atomic import atomic_write
from .errors import ConfigError, ImageError, ModelFileError, first_line
from .export import INPUT_NAME, ONNX_INSTALL_HINT
from .image import list_images, load_short_side

# What int8 quantization converts: the convolutions, except the two 9x9 layers
# next to the image. Quantized, the first loses 2-5 dB of PSNR (its output, before
# the instance norm, spans a wide range that 256 levels resolve coarsely) and the
# last (3 output channels) runs several times slower in onnxruntime's int8
# convolution than in fp32 (docs/benchmarks.md).
INT8_OP_TYPES = ("Conv",)
# Ops that only copy values (op type -> the modes that do): quantizing their input
# instead of their output gives the same integers.
_COPYING_OPS = {"Pad": {"reflect", "edge"}, "Resize": {"nearest"}}
_DEFAULT_MODE = {"Pad": "constant", "Resize": "nearest"}


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
    of products in 16 bits, which full 8-bit weights can overflow), and uint8
    activations whose ranges are measured on the first ``count`` of ``photos``
    (a folder or a list of files), each a ``size`` x ``size`` centre crop. uint8
    activations times int8 weights is the pair x86 CPUs multiply natively; int8
    activations would be converted by onnxruntime only across adjacent
    Quantize -> Dequantize pairs, which :func:`quantize_before_copies` separates.
    Only the layers in :data:`INT8_OP_TYPES` are quantized, the image-side 9x9
    convolutions excepted. The input and output stay float32 RGB 0-255, so the
    file runs wherever the fp32 one does. The metadata of ``fp32_path`` is kept,
    plus ``quantized: int8``.
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
            activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8,
            calibration_providers=["CPUExecutionProvider"],
        )
        quantized = onnx.load(str(out))
    quantize_before_copies(quantized.graph)
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


def quantize_before_copies(graph: Any) -> int:
    """Move QuantizeLinear in front of the copying ops that feed it, in place.

    ``X -> op -> QuantizeLinear -> Y`` becomes ``X -> QuantizeLinear -> op -> Y``
    for a reflection/edge Pad or a nearest Resize whose output only that
    QuantizeLinear reads; repeated, so an upsampling followed by a pad moves too.
    The values of Y are unchanged (a copy of rounded values is the rounding of
    the copy), the op then moves one byte per value instead of four, and the
    DequantizeLinear -> Conv behind it still fuses. ``graph`` is an
    ``onnx.GraphProto``; returns how many ops were moved.
    """
    moved = 0
    while _move_one_quantize(graph):
        moved += 1
    return moved


def _move_one_quantize(graph: Any) -> bool:
    nodes = list(graph.node)
    readers: dict[str, int] = {}
    for node in nodes:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    outputs = {o.name for o in graph.output}
    producer = {out: i for i, node in enumerate(nodes) for out in node.output}
    for quant in nodes:
        i = producer.get(quant.input[0]) if quant.op_type == "QuantizeLinear" else None
        if i is None or not _copies_values(nodes[i]):
            continue
        op = nodes[i]
        if readers[op.output[0]] != 1 or op.output[0] in outputs:
            continue
        moved_quant = copy.deepcopy(quant)
        moved_quant.input[0] = op.input[0]
        moved_quant.output[0] = f"{op.input[0]}_quantized_for_{op.name or i}"
        moved_op = copy.deepcopy(op)
        moved_op.input[0] = moved_quant.output[0]
        moved_op.output[0] = quant.output[0]
        # At the op's place, so every node still follows what it reads.
        rest = [n for n in nodes if n is not quant and n is not op]
        rest[i:i] = [moved_quant, moved_op]
        del graph.node[:]
        graph.node.extend(rest)
        return True
    return False


def _copies_values(node: Any) -> bool:
    """A Pad or Resize whose mode only copies input values (reflect, edge, nearest)."""
    if node.op_type not in _COPYING_OPS:
        return False
    mode = next((a.s.decode() for a in node.attribute if a.name == "mode"), None)
    return (mode or _DEFAULT_MODE[node.op_type]) in _COPYING_OPS[node.op_type]
