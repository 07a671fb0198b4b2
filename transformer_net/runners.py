"""Runners for deployment files (ONNX, TorchScript) and :func:`open_stylizer`.

The files come from ``export.py``: a TransformerNet (Johnson et al. 2016) traced
into a graph that runs without this package's Python code. The runners give
them the :class:`inference.Stylizer` interface, so ``stylize.py`` treats them
like a PyTorch model file. :func:`open_stylizer` picks the runner for a file by
its content, not its name: a ``.pth`` renamed to ``.onnx`` still loads. For a
PyTorch model file on the CPU it picks onnxruntime where that is faster
(:func:`pick_runtime`), running an ONNX export of the file kept in the user's
cache (:func:`cached_onnx_export`).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    check_model_path,
    load_model,
    read_model_file,
    refuse_nonfinite,
    resolve_model_path,
)
from .download import cache_dir
from .errors import ConfigError, DiskFullError, ModelFileError, UntrustedModelError, first_line
from .export import EXPORT_VERSION, ONNX_INSTALL_HINT, export_onnx
from .image import to_uint8
from .inference import Stylizer, TorchStylizer, pick_device, pick_precision

RUNTIMES = ("auto", "torch", "onnxruntime")
CACHED_EXPORT = "onnxruntime, cached ONNX export"  # the runtime named on stylize.py's first line
# What each kind of file can be asked for; the rest are errors naming the file.
_FP32_ONLY = (
    "--precision, --compile and --cuda-graphs apply to .pth/.ckpt models; "
    "ONNX and TorchScript files run in fp32"
)
# The metadata_props key of a cached export that holds its onnx_cache_path key.
CACHE_SOURCE_KEY = "transformer_net.source_sha256"
# Cached ONNX exports kept (the most recently used): one per model file in use,
# 0.3-7 MB each for the presets (a few hundred MB at most).
ONNX_CACHE_ENTRIES = 32
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
    or else ``"torch"``, whose loader then says what is wrong with it. A folder
    (a model folder: ``model_folder.py``) is ``"torch"`` too: PyTorch runs it.
    """
    if Path(path).is_dir():
        return "torch"
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


def open_stylizer(
    path: str | os.PathLike,
    *,
    device: str = "auto",
    runtime: str = "auto",
    threads: int | None = None,
    trust_torchscript: bool = False,
    **options,
) -> Stylizer:
    """The runner for the model file at ``path``, chosen by content (:func:`model_file_kind`)
    and ``runtime`` (:func:`pick_runtime`).

    PyTorch files (.pth, .ckpt, examples state dicts) get an
    :class:`inference.TorchStylizer`, which takes every option (``precision``,
    ``compile``, ``cuda_graphs``, ``style``, ``tile_size``, ``progress``), or,
    where onnxruntime runs them faster, an :class:`OnnxStylizer` of their cached
    fp32 ONNX export (:func:`cached_onnx_export`). ONNX and TorchScript files run
    in fp32 as traced: asking them for another precision, compilation, CUDA
    graphs, a style other than 0 or tiles is a :class:`ConfigError` naming the
    file (``progress`` is accepted: they never tile). ``threads``: onnxruntime's
    threads (None: its default, one per physical core); PyTorch's are set for
    the whole process with ``torch.set_num_threads``. ``path`` may be a model folder
    or ``hf://user/name[@revision]`` (downloaded first: ``hub.py``).
    ``trust_torchscript``: load a TorchScript file, which runs code when loaded
    (:class:`TorchScriptStylizer`); without it such a file is an
    :class:`UntrustedModelError`.
    """
    path = resolve_model_path(path)
    chosen = pick_runtime(path, runtime=runtime, device=device, **options)
    if chosen == "torch":
        return TorchStylizer(model_path=path, device=device, **options)
    _refuse_torch_options(path, options, forced=model_file_kind(path) == "torch")
    if chosen == "torchscript":
        return TorchScriptStylizer(model_path=path, device=device, trust=trust_torchscript)
    if model_file_kind(path) == "onnx":
        return OnnxStylizer(model_path=path, device=device, threads=threads)
    return _cached_onnx_stylizer(Path(path), device=device, threads=threads)


def pick_runtime(
    path: str | os.PathLike, *, runtime: str = "auto", device: str = "auto", **options
) -> str:
    """``"torch"``, ``"onnxruntime"`` or ``"torchscript"``: what runs the model file at ``path``.

    ONNX and TorchScript files run in their own runtime (``runtime`` may name it
    or be ``auto``). A PyTorch model file runs in PyTorch with ``runtime="torch"``,
    in onnxruntime (its cached ONNX export) with ``"onnxruntime"``, and with
    ``"auto"`` in onnxruntime where that was measured faster: on the CPU, in
    fp32, with none of the options only PyTorch has (``precision`` bf16/fp16,
    ``compile``, ``cuda_graphs``, ``tile_size``, a ``style``), onnxruntime
    installed (docs/benchmarks.md). Elsewhere (GPUs, bf16 on CPUs that compute
    it natively) PyTorch is the faster or the only way; multi-style models stay
    in PyTorch too (their first line lists the styles). Errors are
    :class:`ConfigError` naming the file.
    """
    if runtime not in RUNTIMES:
        raise ConfigError(f"--runtime must be one of {', '.join(RUNTIMES)}; got {runtime!r}")
    kind = model_file_kind(path)
    if kind == "torch":
        if runtime == "auto":
            faster = _onnx_is_faster(device, options) and _num_styles(path) == 1
            return "onnxruntime" if faster else "torch"
        if runtime == "onnxruntime" and not _has_onnxruntime():
            raise ConfigError(
                f"{path}: --runtime onnxruntime needs onnxruntime: {ONNX_INSTALL_HINT}"
            )
        return runtime
    native = "onnxruntime" if kind == "onnx" else "torchscript"
    if runtime not in ("auto", native):
        what = "an ONNX" if kind == "onnx" else "a TorchScript"
        raise ConfigError(
            f"{path}: --runtime {runtime} cannot run {what} file; --runtime torch and "
            "onnxruntime choose how a .pth/.ckpt model runs (use --runtime auto)"
        )
    return native


def _onnx_is_faster(device: str, options: dict[str, Any]) -> bool:
    """Whether onnxruntime fp32 beats PyTorch for a PyTorch model file (``runtime="auto"``).

    A style asked for, even 0, keeps PyTorch (its first line lists the styles).
    """
    if _torch_only_flags(options) or options.get("style") is not None:
        return False
    if not _has_onnxruntime():
        return False
    where = pick_device(device)
    precision = pick_precision(options.get("precision", "auto"), where)
    return where.type == "cpu" and precision == torch.float32


def _num_styles(path: str | os.PathLike) -> int:
    """Styles of the network in a PyTorch model file (read, not built)."""
    args, _, _ = read_model_file(path)
    return int(args.get("num_styles", 1))


def _has_onnxruntime() -> bool:
    try:
        return importlib.util.find_spec("onnxruntime") is not None
    except ValueError:  # sys.modules["onnxruntime"] is None (hidden): not importable
        return False


def _torch_only_flags(options: dict[str, Any]) -> list[str]:
    """The stylize.py options among ``options`` that only a TorchStylizer honours."""
    flags = {
        "--precision": options.get("precision", "auto") not in ("auto", "fp32"),
        "--compile": bool(options.get("compile")),
        "--cuda-graphs": bool(options.get("cuda_graphs")),
        "--style-index/--style-mix": bool(options.get("style")),
        "--tile-size": bool(options.get("tile_size")),
    }
    return [flag for flag, given in flags.items() if given]


def _refuse_torch_options(
    path: str | os.PathLike, options: dict[str, Any], *, forced: bool
) -> None:
    """:class:`ConfigError` for options of a PyTorch model that a traced file cannot honour.

    ``forced``: a PyTorch model file sent to onnxruntime by ``runtime="onnxruntime"``.
    """
    unknown = set(options) - _TORCH_OPTIONS
    if unknown:  # a caller's typo, as for any function: TypeError
        raise TypeError(f"open_stylizer() got unexpected options {sorted(unknown)}")
    flags = _torch_only_flags(options)
    if flags and forced:
        raise ConfigError(
            f"{path}: --runtime onnxruntime runs the model in fp32, style 0, in one pass; "
            f"for {', '.join(flags)} use --runtime torch or auto"
        )
    if set(flags) & {"--precision", "--compile", "--cuda-graphs"}:
        raise ConfigError(f"{path}: {_FP32_ONLY}")
    if flags:
        raise ConfigError(f"{path}: {_TORCH_ONLY}")


def onnx_cache_path(model_path: str | os.PathLike) -> Path:
    """Where the ONNX export of a PyTorch model file is cached: keyed by the SHA-256 of
    the file's bytes and the exporter (``export.EXPORT_VERSION``, torch's version), so a
    retrained or edited file, or a changed exporter, gets an entry of its own. A model
    folder is keyed by its config and weights (its card and images do not matter)."""
    digest = hashlib.sha256(f"{EXPORT_VERSION} {torch.__version__}\n".encode())
    parts = [Path(model_path)]
    if parts[0].is_dir():
        parts = [parts[0] / name for name in (CONFIG_FILE, WEIGHTS_FILE)]
        # each part's size first: where one file ends and the next begins is hashed too
        digest.update(" ".join(str(part.stat().st_size) for part in parts).encode())
    for part in parts:
        with open(part, "rb") as f:
            for chunk in iter(lambda f=f: f.read(1 << 20), b""):
                digest.update(chunk)
    return cache_dir() / "onnx" / f"{digest.hexdigest()}.onnx"


def cached_onnx_export(model_path: str | os.PathLike, *, rebuild: bool = False) -> Path:
    """The fp32 ONNX export of a PyTorch model file, from the cache or written there now.

    Written atomically (``export.export_onnx``), so a crash leaves no partial
    entry; ``rebuild`` replaces an entry that onnxruntime could not load. The
    folder (``download.cache_dir() / "onnx"``) may be deleted at any time.
    """
    path = Path(model_path)
    check_model_path(path)
    cached = onnx_cache_path(path)
    # An entry names its source's hash inside: one holding another model's export
    # (copied over it, a cache folder shared by mistake) is made again, not trusted.
    if cached.is_file() and not rebuild and cache_entry_source(cached) == cached.stem:
        with contextlib.suppress(OSError):  # its use time, for prune_onnx_cache
            os.utime(cached)
        return cached
    model, meta = load_model(path)
    try:
        export_onnx(model, cached, meta=meta, props={CACHE_SOURCE_KEY: cached.stem})
    except DiskFullError:
        raise
    except OSError as e:  # a read-only home, say
        raise ModelFileError(
            f"{cached.parent}: cannot write the ONNX export of {path} there ({e.strerror or e}); "
            "set TRANSFORMER_NET_CACHE to a writable folder or use --runtime torch"
        ) from None
    prune_onnx_cache(cached.parent, keep=cached)
    return cached


def cache_entry_source(entry: str | os.PathLike) -> str | None:
    """The source hash a cached export holds (``CACHE_SOURCE_KEY`` in its metadata_props;
    :func:`onnx_cache_path`'s key), or None: none, or not a protobuf this can read.

    Read from the file's top-level protobuf fields, without the ``onnx`` package:
    only the metadata is looked at (the graph is skipped by its length).
    """
    try:
        data = Path(entry).read_bytes()
        found = None
        for field, value in _protobuf_fields(data):
            if field == 14:  # ModelProto.metadata_props: StringStringEntryProto
                entry_fields = dict(_protobuf_fields(value))
                if entry_fields.get(1) == CACHE_SOURCE_KEY.encode():
                    found = entry_fields.get(2, b"").decode()
        return found
    except (OSError, ValueError, IndexError):  # unreadable, truncated, not UTF-8
        return None


def _protobuf_fields(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(field number, bytes) of each length-delimited field of one protobuf message; the
    others are skipped. ValueError or IndexError where ``data`` is not a message."""

    def varint(i: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            byte = data[i]
            value |= (byte & 0x7F) << shift
            i, shift = i + 1, shift + 7
            if not byte & 0x80:
                return value, i
            if shift > 63:
                raise ValueError("varint too long")

    i = 0
    while i < len(data):
        key, i = varint(i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, i = varint(i)
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        elif wire == 2:
            size, i = varint(i)
            if i + size > len(data):
                raise ValueError("truncated")
            yield field, data[i : i + size]
            i += size
        else:
            raise ValueError(f"wire type {wire}")
        if i > len(data):
            raise ValueError("truncated")


def prune_onnx_cache(folder: Path, *, keep: Path, entries: int = ONNX_CACHE_ENTRIES) -> None:
    """Delete all but the ``entries`` most recently used exports in ``folder``.

    Every retrained or edited model file gets an entry of its own (its SHA-256
    names it), so without this the folder would only grow; ``keep`` (the one in
    use) always stays. A file that cannot be deleted (another process using it
    on Windows, a read-only folder) is left for the next time.
    """

    def used(p: Path) -> float:
        try:
            return p.stat().st_mtime
        except OSError:  # deleted meanwhile by another process's pruning
            return 0.0

    exports = sorted(folder.glob("*.onnx"), key=used, reverse=True)
    for old in [p for p in exports if p != keep][max(entries - 1, 0) :]:
        with contextlib.suppress(OSError):
            old.unlink()


def _cached_onnx_stylizer(path: Path, *, device: str, threads: int | None) -> OnnxStylizer:
    """An OnnxStylizer of the cached export of ``path``; a damaged entry is rebuilt once."""
    cached = cached_onnx_export(path)
    try:
        stylizer = OnnxStylizer(model_path=cached, device=device, threads=threads)
    except ModelFileError:  # the write was atomic; the disk or a person may still damage it
        rebuilt = cached_onnx_export(path, rebuild=True)
        stylizer = OnnxStylizer(model_path=rebuilt, device=device, threads=threads)
    stylizer.runtime = CACHED_EXPORT
    return stylizer


class _TracedStylizer(Stylizer):
    """What the ONNX and TorchScript runners share: fp32, one style, any batch of frames."""

    dtype = torch.float32
    num_styles = 1
    style_names = None
    style = None
    supports_video = True


class OnnxStylizer(_TracedStylizer):
    """An ``.onnx`` file (``export.export_onnx``, ``quantize.quantize_onnx``) run by onnxruntime.

    Input and output in fp32 (an int8 file quantizes inside its graph; then
    :attr:`runtime` says so). ``device``: ``cpu``, or ``cuda``/``auto`` where
    onnxruntime has the CUDA execution provider (the ``onnxruntime-gpu``
    package). ``threads``: onnxruntime's intra-op threads (None: its default).
    """

    runtime = "onnxruntime"

    def __init__(
        self, *, model_path: str | os.PathLike, device: str = "auto", threads: int | None = None
    ):
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
        self.session = _session(ort, path, gpu=use_gpu, threads=threads)
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
        quantized = self.session.get_modelmeta().custom_metadata_map.get("quantized")
        if quantized:
            self.runtime = f"onnxruntime, {quantized}"
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


def _session(ort: Any, path: Path, *, gpu: bool, threads: int | None) -> Any:
    """An ``onnxruntime.InferenceSession`` of ``path``; a file it cannot load: ModelFileError."""
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if gpu else None
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: no warnings on stderr per session
    if threads:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(
            str(path), options, providers=providers or ["CPUExecutionProvider"]
        )
    except Exception as e:  # onnxruntime raises its own exception types
        raise ModelFileError(f"{path}: corrupt or not an ONNX model ({first_line(e)})") from None


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
    """A TorchScript file (``export.export_torchscript``, legacy) loaded with ``torch.jit.load``.

    fp32. A TorchScript file is a program: ``torch.jit.load`` runs code from the
    file while loading it (a scripted class's ``__setstate__``, for one), so it
    loads only with ``trust=True``, the caller vouching for the file's source.
    This is the one place in the package that calls ``torch.jit.load``; without
    ``trust`` it raises :class:`UntrustedModelError` before opening the file.
    """

    runtime = "torch.jit"

    def __init__(self, *, model_path: str | os.PathLike, device: str = "auto", trust: bool = False):
        path = Path(model_path)
        check_model_path(path)
        if not trust:
            raise UntrustedModelError(
                f"{path}: refused: a TorchScript file runs code from the file when it is "
                "loaded; load one only from a source you trust"
            )
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


def available_runtimes() -> list[str]:
    """What can run models on this machine, in words: ``["pytorch 2.5 (cpu, cuda: NAME)",
    "onnxruntime 1.20 (CPUExecutionProvider)"]``; ``stylize.py info`` lists them."""
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices.append(f"cuda: {torch.cuda.get_device_name(0)}")
    if torch.backends.mps.is_available():
        devices.append("mps")
    found = [f"pytorch {torch.__version__} ({', '.join(devices)})"]
    try:
        import onnxruntime as ort
    except ImportError:
        found.append(f"onnxruntime: not installed ({ONNX_INSTALL_HINT})")
    else:
        found.append(f"onnxruntime {ort.__version__} ({', '.join(ort.get_available_providers())})")
    return found
