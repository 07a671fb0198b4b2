"""Deployment formats: ONNX and TorchScript files of a TransformerNet, and runners for them.

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
B, H and W dynamic.
"""

from __future__ import annotations

import copy
import io
import json
import os
import time
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .atomic import atomic_write
from .checkpoint import ModelFileError, check_model_path, refuse_nonfinite
from .errors import first_line
from .inference import pick_device
from .model import TransformerNet

ONNX_OPSET = 17  # InstanceNormalization, Resize and dynamic Pad/Range are all older
INPUT_NAME = "image"
OUTPUT_NAME = "stylized"
ONNX_INSTALL_HINT = 'pip install "transformer-net[onnx]"'
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


def is_torchscript_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a TorchScript archive (``torch.jit.save``), not a ``torch.save`` file.

    Both are zip files; only TorchScript archives hold compiled ``code/``.
    """
    try:
        with zipfile.ZipFile(path) as z:
            return any(name.split("/")[1:2] == ["code"] for name in z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _to_uint8(y: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) float -> (B, 3, H, W) uint8 on the CPU, as ``inference.Stylizer`` rounds."""
    return y.float().clamp_(0, 255).round_().to(torch.uint8).cpu()


class OnnxStylizer:
    """An ``.onnx`` file run by onnxruntime, with the interface of ``inference.Stylizer``.

    fp32 only. ``device``: ``cpu``, or ``cuda``/``auto`` where onnxruntime has
    the CUDA execution provider (the ``onnxruntime-gpu`` package).
    """

    def __init__(self, *, model_path: str | os.PathLike, device: str = "auto"):
        path = Path(model_path)
        try:
            import onnxruntime as ort
        except ImportError:
            raise RuntimeError(
                f"{path}: running .onnx models needs onnxruntime: {ONNX_INSTALL_HINT}"
            ) from None
        check_model_path(path)
        gpu = "CUDAExecutionProvider" in ort.get_available_providers()
        if device.startswith("cuda") and not gpu:
            raise ValueError(
                f"device {device!r} requested but onnxruntime has no CUDA execution provider "
                "(install onnxruntime-gpu)"
            )
        use_gpu = gpu and (device == "auto" or device.startswith("cuda"))
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if use_gpu else None
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: no warnings on stderr per session
        try:
            self.session = ort.InferenceSession(
                str(path), options, providers=providers or ["CPUExecutionProvider"]
            )
        except Exception as e:  # onnxruntime raises its own exception types
            raise ModelFileError(
                f"{path}: corrupt or not an ONNX model ({first_line(e)})"
            ) from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4 or inputs[0].shape[1] not in (3, "3"):
            shapes = [i.shape for i in inputs]
            raise ModelFileError(f"{path}: not an image model: expected one (B, 3, H, W) input, "
                                 f"found {shapes}")  # fmt: skip
        self.input_name = inputs[0].name
        # A graph exported with dynamic=False takes batches of exactly that size.
        batch = inputs[0].shape[0]
        self.fixed_batch = batch if isinstance(batch, int) else None
        self.device = torch.device("cuda" if use_gpu else "cpu")
        self.dtype = torch.float32
        _check_onnx_weights(path)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """(3, H, W) uint8 RGB -> (3, H, W) uint8 RGB, same size."""
        return self.batch(image.unsqueeze(0))[0]

    def batch(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) uint8 RGB -> (B, 3, H, W) uint8 RGB: one run for B frames (video)."""
        if self.fixed_batch == 1 and frames.shape[0] > 1:  # dynamic=False export
            return torch.cat([self.batch(f[None]) for f in frames])
        x = frames.float().numpy()  # (B, 3, H, W) float32 0-255
        try:
            y = self.session.run(None, {self.input_name: x})[0]
        except Exception as e:
            raise ValueError(f"onnxruntime failed: {first_line(e)}") from None
        return _to_uint8(torch.from_numpy(y))

    def timed(self, image: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Like calling it; also returns the wall time in seconds."""
        start = time.perf_counter()
        out = self(image)
        return out, time.perf_counter() - start


def _check_onnx_weights(path: Path) -> None:
    """NaN/inf in the graph's initializers (its weights); read when ``onnx`` is installed."""
    try:
        import onnx
        from onnx import numpy_helper

        model = onnx.load(str(path))
        weights = [(i.name, numpy_helper.to_array(i)) for i in model.graph.initializer]
    except Exception:  # noqa: BLE001 - no onnx package, or external data: onnxruntime ran it
        return
    floating = [(n, a) for n, a in weights if np.issubdtype(a.dtype, np.floating)]
    refuse_nonfinite(path, [(n, torch.from_numpy(np.array(a))) for n, a in floating])


class TorchScriptStylizer:
    """A TorchScript file (:func:`export_torchscript`) with the interface of ``inference.Stylizer``.

    fp32. Note that a TorchScript file is a program (TorchScript ops, not
    arbitrary Python): load only files you trust, as with any executable.
    """

    def __init__(self, *, model_path: str | os.PathLike, device: str = "auto"):
        path = Path(model_path)
        check_model_path(path)
        self.device = pick_device(device)
        self.dtype = torch.float32
        try:
            with warnings.catch_warnings():
                # torch.jit is deprecated in favour of torch.export (FutureWarning), but
                # still loads; ONNX is the recommended deployment format (README).
                warnings.simplefilter("ignore", FutureWarning)
                self.model = torch.jit.load(str(path), map_location=self.device).eval()
        except Exception as e:  # RuntimeError for anything from a bad zip to unknown ops
            raise ModelFileError(
                f"{path}: corrupt or not a TorchScript file ({first_line(e)})"
            ) from None
        refuse_nonfinite(path, self.model.state_dict().items())

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """(3, H, W) uint8 RGB -> (3, H, W) uint8 RGB, same size, on the CPU."""
        return self.batch(image.unsqueeze(0))[0]

    @torch.inference_mode()
    def batch(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) uint8 RGB -> (B, 3, H, W) uint8 RGB on the CPU: one pass for B frames."""
        return _to_uint8(self.model(frames.to(self.device).float()))

    def timed(self, image: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Like calling it; also returns the wall time in seconds (device synchronized)."""
        start = time.perf_counter()
        out = self(image)  # .cpu() synchronizes with the device
        return out, time.perf_counter() - start
