"""Runners for deployment files (ONNX, TorchScript) and :func:`open_stylizer`.

The files come from ``export.py``: a TransformerNet (Johnson et al. 2016) traced
into a graph that runs without this package's Python code. The runners give
them the :class:`inference.Stylizer` interface, so ``stylize.py`` treats them
like a PyTorch model file. :func:`open_stylizer` picks the runner for a file by
its content, not its name: a ``.pth`` renamed to ``.onnx`` still loads.
"""

from __future__ import annotations

import os
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import check_model_path, refuse_nonfinite
from .errors import ConfigError, ModelFileError, first_line
from .image import to_uint8
from .inference import Stylizer, TorchStylizer, pick_device

ONNX_INSTALL_HINT = 'pip install "transformer-net[onnx]"'
# What each kind of file can be asked for; the rest are errors naming the file.
_FP32_ONLY = (
    "--precision, --compile and --cuda-graphs apply to .pth/.ckpt models; "
    "ONNX and TorchScript files run in fp32"
)
_TORCH_ONLY = "--style-index, --style-mix and --tile-size apply to .pth/.ckpt models"
# The keyword arguments of inference.TorchStylizer besides model_path and device.
_TORCH_OPTIONS = {"precision", "compile", "cuda_graphs", "style", "tile_size", "progress"}


def is_torchscript_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a TorchScript archive (``torch.jit.save``), not a ``torch.save`` file.

    Both are zip files; only TorchScript archives hold compiled ``code/``.
    """
    try:
        with zipfile.ZipFile(path) as z:
            return any(name.split("/")[1:2] == ["code"] for name in z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def model_file_kind(path: str | os.PathLike) -> str:
    """``"torchscript"``, ``"onnx"`` or ``"torch"`` (``torch.save``), from the first bytes.

    A zip archive is TorchScript if it holds compiled code, else a ``torch.save``
    file; a pickle (``torch.save``'s legacy format) is ``"torch"``. An ONNX file
    is a protobuf ``ModelProto`` whose first field is ``ir_version`` (tag byte
    0x08). Anything else (empty, missing, garbage) goes by its suffix, ``.onnx``
    or else ``"torch"``, whose loader then says what is wrong with it.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        head = b""
    if head.startswith(b"PK\x03\x04"):
        return "torchscript" if is_torchscript_file(path) else "torch"
    if head[:1] == b"\x08":
        return "onnx"
    if head[:1] != b"\x80" and Path(path).suffix.lower() == ".onnx":  # 0x80: a pickle
        return "onnx"
    return "torch"


def open_stylizer(path: str | os.PathLike, *, device: str = "auto", **options) -> Stylizer:
    """The runner for the model file at ``path``, chosen by content (:func:`model_file_kind`).

    PyTorch files (.pth, .ckpt, examples state dicts) get an
    :class:`inference.TorchStylizer`, which takes every option (``precision``,
    ``compile``, ``cuda_graphs``, ``style``, ``tile_size``, ``progress``). ONNX
    and TorchScript files run in fp32 as traced: asking them for another
    precision, compilation, CUDA graphs, a style other than 0 or tiles is a
    :class:`ConfigError` naming the file (``progress`` is accepted: they never tile).
    """
    kind = model_file_kind(path)
    if kind == "torch":
        return TorchStylizer(model_path=path, device=device, **options)
    _refuse_torch_options(path, options)
    runner = OnnxStylizer if kind == "onnx" else TorchScriptStylizer
    return runner(model_path=path, device=device)


def _refuse_torch_options(path: str | os.PathLike, options: dict[str, Any]) -> None:
    """:class:`ConfigError` for options of a PyTorch model that a traced file cannot honour."""
    unknown = set(options) - _TORCH_OPTIONS
    if unknown:  # a caller's typo, as for any function: TypeError
        raise TypeError(f"open_stylizer() got unexpected options {sorted(unknown)}")
    precision = options.get("precision", "auto")
    if precision not in ("auto", "fp32") or options.get("compile") or options.get("cuda_graphs"):
        raise ConfigError(f"{path}: {_FP32_ONLY}")
    if options.get("style") or options.get("tile_size"):
        raise ConfigError(f"{path}: {_TORCH_ONLY}")


class _TracedStylizer(Stylizer):
    """What the ONNX and TorchScript runners share: fp32, one style, any batch of frames."""

    dtype = torch.float32
    num_styles = 1
    style_names = None
    style = None
    supports_video = True


class OnnxStylizer(_TracedStylizer):
    """An ``.onnx`` file (``export.export_onnx``) run by onnxruntime.

    fp32 only. ``device``: ``cpu``, or ``cuda``/``auto`` where onnxruntime has
    the CUDA execution provider (the ``onnxruntime-gpu`` package).
    """

    def __init__(self, *, model_path: str | os.PathLike, device: str = "auto"):
        self.path = path = Path(model_path)
        try:
            import onnxruntime as ort
        except ImportError:
            raise ModelFileError(
                f"{path}: running .onnx models needs onnxruntime: {ONNX_INSTALL_HINT}"
            ) from None
        check_model_path(path)
        gpu = "CUDAExecutionProvider" in ort.get_available_providers()
        if device.startswith("cuda") and not gpu:
            raise ConfigError(
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
            raise ModelFileError(
                f"{path}: not an image model: expected one (B, 3, H, W) input, found {shapes}"
            )
        self.input_name = inputs[0].name
        # A graph exported with dynamic=False takes batches of exactly that size.
        batch = inputs[0].shape[0]
        self.fixed_batch = batch if isinstance(batch, int) else None
        self.device = torch.device("cuda" if use_gpu else "cpu")
        _check_onnx_weights(path)

    def batch(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) uint8 RGB -> (B, 3, H, W) uint8 RGB: one run for B frames (video)."""
        if self.fixed_batch == 1 and frames.shape[0] > 1:  # dynamic=False export
            return torch.cat([self.batch(f[None]) for f in frames])
        x = frames.float().numpy()  # (B, 3, H, W) float32 0-255
        try:
            y = self.session.run(None, {self.input_name: x})[0]
        except Exception as e:  # a fixed-size graph given another size, for one
            raise ModelFileError(f"{self.path}: onnxruntime failed: {first_line(e)}") from None
        return to_uint8(torch.from_numpy(y))


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


class TorchScriptStylizer(_TracedStylizer):
    """A TorchScript file (``export.export_torchscript``) loaded with ``torch.jit.load``.

    fp32. Note that a TorchScript file is a program (TorchScript ops, not
    arbitrary Python): load only files you trust, as with any executable.
    """

    def __init__(self, *, model_path: str | os.PathLike, device: str = "auto"):
        path = Path(model_path)
        check_model_path(path)
        self.device = pick_device(device)
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

    @torch.inference_mode()
    def batch(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) uint8 RGB -> (B, 3, H, W) uint8 RGB on the CPU: one pass for B frames."""
        return to_uint8(self.model(frames.to(self.device).float())).cpu()
