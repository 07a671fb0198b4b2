"""Feed-forward stylization: one pass of a trained TransformerNet (Johnson et al. 2016).

:class:`Stylizer` is what every way of stylizing offers: this module's
:class:`TorchStylizer` (a PyTorch model file), the ONNX and TorchScript runners
(``runners.py``) and Gatys et al.'s optimization (``optimize.py``).
``runners.open_stylizer`` picks the runner for a model file by its content.

Imports neither Lightning nor Hydra, so ``stylize.py`` starts fast.
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import torch

from .checkpoint import load_model
from .errors import ConfigError
from .image import to_uint8
from .model import SIZE_MULTIPLE
from .tiling import (
    MAX_TILE,
    MIN_TILE,
    check_tile_size,
    is_out_of_memory,
    memory_budget,
    plan_tile_size,
    receptive_margin,
    round_up,
    stylize_tiled,
)

DEVICE_HELP = "auto, cpu, cuda, cuda:N or mps"


def default_threads() -> int:
    """CPU threads for a stylization: one per physical core this process may use.

    The cores are those of the CPUs in the process's affinity mask (``taskset``,
    container cpusets), counted once per core where Linux says which CPUs are
    hyperthreads of one core (a second thread on a core shares its vector
    units: no faster for convolutions), and capped by a cgroup CPU quota
    (``docker --cpus``). Elsewhere (macOS, Windows): ``os.cpu_count()``.
    """
    try:
        cpus = os.sched_getaffinity(0)
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            package = (topology / "physical_package_id").read_text().strip()
            cores.add((package, (topology / "core_id").read_text().strip()))
        except OSError:  # no topology in /sys: every CPU counts
            cores.add((str(cpu), ""))
    return max(1, min(len(cores), _cgroup_cpu_quota() or len(cores)))


def _cgroup_cpu_quota() -> int | None:
    """CPUs granted by a cgroup v2 quota (``cpu.max``: "200000 100000" is 2), rounded up."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return math.ceil(int(quota) / int(period))
    except (OSError, ValueError, ZeroDivisionError):  # no cgroup v2, or "max": no quota
        return None


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: the first CUDA GPU if there is one, else Apple MPS, else CPU.

    A device that is not there (CUDA without a GPU, ``cuda:3`` with one GPU,
    MPS off a Mac) or a name torch does not know is a :class:`ConfigError`.
    """
    mps = getattr(torch.backends, "mps", None)
    mps_available = bool(mps and mps.is_available())
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps_available else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r} (use {DEVICE_HELP})") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} requested but CUDA is not available")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(f"device {name!r} requested but there are {count} CUDA GPU(s)")
    elif device.type == "mps" and not mps_available:
        raise ConfigError(f"device {name!r} requested but Apple MPS is not available")
    return device


PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively: Ampere+ GPUs, CPUs with AVX512-BF16/AMX.

    On such CPUs bf16 is the faster precision, with outputs close to fp32's
    (docs/benchmarks.md); elsewhere it is emulated and far slower. On GPUs it
    pays once compiled (``pick_precision``).
    """
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def bf16_emulation_warning(device: torch.device) -> str | None:
    """A one-line warning when bf16 was asked for on a CPU that only emulates it.

    Emulated bf16 is hundreds of times slower than fp32 (an AVX2-only CPU in
    docs/benchmarks.md), so asking for it there is almost always a mistake.
    """
    if device.type != "cpu" or native_bf16(device):
        return None
    return (
        "bf16 is emulated on this CPU (no AVX512-BF16 or AMX) and runs hundreds of times "
        "slower than fp32; use fp32 (precision auto picks it here)"
    )


def pick_precision(name: str, device: torch.device, *, compiled: bool = False) -> torch.dtype:
    """``auto``: the faster of bf16 and fp32 as measured (docs/benchmarks.md).

    CUDA: fp32 in eager mode (eager instance norm is slower in bf16), bf16 when
    ``compiled`` (Inductor fuses the norms). CPU: bf16 where it is native
    (AVX512-BF16/AMX), else fp32.
    """
    if name == "auto":
        if device.type == "cuda" and not compiled:
            return torch.float32
        return torch.bfloat16 if native_bf16(device) else torch.float32
    if name not in PRECISIONS:
        raise ConfigError(f"precision must be auto, {', '.join(PRECISIONS)}; got {name!r}")
    return PRECISIONS[name]


class CudaGraphForward:
    """Replays a captured CUDA graph for input shapes that recur (video frames, a
    folder of same-size photos); other shapes run ``forward`` as it is.

    Eager, the network launches about a hundred kernels, which is most of a
    small image's time (replayed, 5x faster at 256x256: docs/benchmarks.md). A shape is
    captured the second time it is seen (so a folder of all-different sizes pays
    no capture cost), and at most ``max_graphs`` graphs are kept (each holds its
    own activation memory), least recently used dropped first. The output is
    copied out of the graph's buffer, so results of earlier calls stay valid.
    """

    def __init__(self, forward: Callable, *, max_graphs: int = 4):
        self.forward = forward
        self.max_graphs = max_graphs
        self.seen: Counter = Counter()
        self.graphs: OrderedDict = OrderedDict()

    def __call__(self, x: torch.Tensor, style=None) -> torch.Tensor:
        if x.device.type != "cuda" or torch.is_grad_enabled():
            return self.forward(x, style)
        # A mixing tensor is fixed per TorchStylizer: its identity is enough.
        style_key = id(style) if isinstance(style, torch.Tensor) else style
        key = (tuple(x.shape), x.dtype, x.stride(), style_key)
        entry = self.graphs.get(key)
        if entry is None:
            self.seen[key] += 1
            if self.seen[key] < 2:
                return self.forward(x, style)
            entry = self._capture(x, style)
            self.graphs[key] = entry
            if len(self.graphs) > self.max_graphs:
                self.graphs.popitem(last=False)
        self.graphs.move_to_end(key)
        graph, static_in, static_out = entry
        static_in.copy_(x)
        graph.replay()
        return static_out.clone()

    def _capture(self, x: torch.Tensor, style) -> tuple:
        static_in = x.clone()  # clone keeps x's strides (channels_last)
        # Warm up on a side stream, as capture requires: cuDNN picks its
        # algorithms (and torch.compile compiles) outside the graph.
        side = torch.cuda.Stream(device=x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):
            for _ in range(2):
                self.forward(static_in, style)
        torch.cuda.current_stream(x.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: CUDA calls of other threads (loaders pinning memory) may go on
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            static_out = self.forward(static_in, style)
        return graph, static_in, static_out


class Stylizer(Protocol):
    """What every way of stylizing offers; images are uint8 RGB tensors on the CPU.

    Implemented by :class:`TorchStylizer` (PyTorch model files), the ONNX and
    TorchScript runners (``runners.py``) and Gatys et al.'s optimization
    (``optimize.GatysStylizer``). Callers ask the attributes, never the type:

    - ``device``, ``dtype``: where and in which precision it computes.
    - ``num_styles``, ``style_names`` (None when the file names none) and
      ``style``, the style in use: an index, (N,) mixing weights, or None (style 0).
    - ``supports_video``: whether it stylizes frames at model speed. False for
      optimization (minutes per image): callers refuse videos instead.
    - ``runtime``: what computes, in words for people (``pytorch``,
      ``onnxruntime``, ``onnxruntime, cached ONNX export``, ``torch.jit``).

    ``__call__`` and ``timed`` here are defaults that runners inherit by
    subclassing the protocol.
    """

    device: torch.device
    dtype: torch.dtype
    num_styles: int
    style_names: list[str] | None
    style: int | torch.Tensor | None
    supports_video: bool
    runtime: str = "pytorch"

    def batch(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) uint8 RGB -> (B, 3, H, W) uint8 RGB on the CPU."""
        ...

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """(3, H, W) uint8 RGB -> (3, H, W) uint8 RGB, same size, on the CPU."""
        return self.batch(image.unsqueeze(0))[0]

    def timed(self, image: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Like calling it; also returns the wall time in seconds.

        Outputs are on the CPU, so the device has finished when the clock stops.
        """
        start = time.perf_counter()
        out = self(image)
        return out, time.perf_counter() - start


class TorchStylizer(Stylizer):
    """A PyTorch model file (.pth, Lightning .ckpt, examples state dict) loaded on a device.

    ``precision`` ``auto`` picks what was measured fastest (``pick_precision``):
    on CUDA fp32 in eager mode, bf16 and the channels_last memory format with
    ``compile``. Uploads are uint8 from pinned memory (4x fewer bytes than float)
    and converted on the device. ``compile`` uses ``torch.compile`` (seconds per
    new image size, then faster: worth it for many images of one size, e.g.
    video frames; docs/benchmarks.md).
    ``cuda_graphs`` replays a CUDA graph for sizes that recur (``CudaGraphForward``,
    then :attr:`cuda_graph`; CUDA only, ignored elsewhere).
    ``style`` (multi-style models): an index (None: 0), or one weight per style
    to interpolate between styles (normalized to sum 1).

    ``tile_size``: 0 (default) runs each image in one pass unless its
    activations would not fit in memory (estimated, or an out-of-memory error),
    then in tiles with whole-image statistics (``tiling.py``: same result, about
    9x the compute); N > 0 always uses N-pixel tiles. ``progress(done, total)``
    is called per tile when tiling.
    """

    supports_video = True

    def __init__(
        self,
        *,
        model_path: str | os.PathLike,
        device: str = "auto",
        precision: str = "auto",
        compile: bool = False,
        cuda_graphs: bool = False,
        style: int | Sequence[float] | None = None,
        tile_size: int = 0,
        progress: Callable[[int, int], None] | None = None,
    ):
        if tile_size:
            check_tile_size(tile_size)
        self.tile_size = int(tile_size)
        self.progress = progress
        self.device = pick_device(device)
        self.dtype = pick_precision(precision, self.device, compiled=compile)
        self.model, self.meta = load_model(model_path, device=self.device)
        self.num_styles = self.model.num_styles
        names = self.meta.get("styles")
        n = self.num_styles
        self.style_names = [str(s) for s in names] if names and len(names) == n else None
        self.style = style_argument(style, num_styles=n, model_path=model_path)
        if isinstance(self.style, torch.Tensor):
            self.style = self.style.to(self.device)
        self.model.requires_grad_(False).to(dtype=self.dtype)
        # channels_last pays only once compiled: in eager mode its instance norm
        # copies (docs/benchmarks.md), so NCHW stays the eager layout.
        self.channels_last = self.device.type == "cuda" and compile
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self._forward = torch.compile(self.model) if compile else self.model
        self.cuda_graph: CudaGraphForward | None = None
        if cuda_graphs and self.device.type == "cuda":
            self.cuda_graph = self._forward = CudaGraphForward(self._forward)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """(3, H, W) uint8 RGB -> (3, H, W) uint8 RGB, same size, on the CPU; tiles if needed."""
        h, w = image.shape[-2:]
        tile = self.tile_size or self._plan_tiles(h, w, memory_budget(self.device))
        if tile:
            return self._tiled(image, tile)
        out = self._unless_out_of_memory(self._one_pass, image.unsqueeze(0))
        if out is not None:
            return out[0]
        # The estimate was optimistic (or memory is taken by others): tiles that
        # fit in half of what is free now.
        budget = memory_budget(self.device) // 2
        return self._tiled(image, self._plan_tiles(h, w, budget, force=True))

    def batch(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) uint8 RGB -> (B, 3, H, W) uint8 RGB on the CPU: one pass for B frames.

        Video frames share one size, so a batch fills the GPU far better than
        single frames (and amortizes the per-call overhead on the CPU). A batch
        that runs out of memory is split in halves, down to single frames, which
        tile if they must (video frames at 4K on a small GPU; fp32, the eager
        default on CUDA, needs twice bf16's memory).
        """
        out = self._unless_out_of_memory(self._one_pass, frames)
        if out is not None:
            return out
        if frames.shape[0] == 1:
            return self(frames[0]).unsqueeze(0)  # tiles when the whole frame cannot fit
        half = frames.shape[0] // 2
        return torch.cat([self.batch(frames[:half]), self.batch(frames[half:])])

    @torch.inference_mode()
    def _one_pass(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) uint8 -> (B, 3, H, W) uint8 on the CPU: the network once, no fallback."""
        if self.device.type == "cuda":
            frames = frames.pin_memory()
        x = frames.to(self.device, non_blocking=True).to(self.dtype)  # (B, 3, H, W)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return to_uint8(self._forward(x, self.style)).cpu()

    def _plan_tiles(self, h: int, w: int, budget: int, *, force: bool = False) -> int:
        """Tile size for ``budget`` bytes: 0 (whole image) if it fits, unless ``force``."""
        margin = receptive_margin(self.model)
        tile = plan_tile_size(h, w, dtype=self.dtype, budget=budget, margin=margin)
        if force and not tile:  # fits by the estimate, yet ran out: at least 2 x 2 tiles
            half = (max(h, w) + 1) // 2
            tile = max(MIN_TILE, min(MAX_TILE, round_up(half, SIZE_MULTIPLE)))
        return tile

    def _tiled(self, image: torch.Tensor, tile: int) -> torch.Tensor:
        return stylize_tiled(
            self.model,
            image,
            tile=tile,
            forward=lambda x: self.model(x, self.style),
            device=self.device,
            dtype=self.dtype,
            channels_last=self.channels_last,
            progress=self.progress,
        )

    def _unless_out_of_memory(self, fn: Callable, x: torch.Tensor) -> torch.Tensor | None:
        """``fn(x)``, or None when it runs out of memory (the CUDA cache is then
        emptied for what the caller tries next)."""
        try:
            return fn(x)
        except RuntimeError as e:  # torch.OutOfMemoryError is one too
            if not is_out_of_memory(e):
                raise
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return None


def style_argument(
    style: int | Sequence[float] | None, *, num_styles: int, model_path: str | os.PathLike
) -> int | torch.Tensor | None:
    """Check ``style`` against a model of ``num_styles`` styles -> the model's argument.

    An index stays an int; mixing weights (one per style, >= 0) become a (N,)
    tensor normalized to sum 1, a convex combination of the styles' gammas and
    betas (Dumoulin et al. 2017). Errors are :class:`ConfigError` naming ``model_path``.
    """
    if style is None:
        return None
    if isinstance(style, int):
        if 0 <= style < num_styles:
            return style
        if num_styles == 1:
            raise ConfigError(
                f"{model_path}: style index {style}: a single-style model has style 0 only"
            )
        raise ConfigError(
            f"{model_path}: style index {style} out of range: the model has {num_styles} "
            f"styles (0-{num_styles - 1})"
        )
    weights = [float(w) for w in style]
    if num_styles == 1:
        raise ConfigError(
            f"{model_path}: style mixing needs a multi-style model; this one has one style"
        )
    if len(weights) != num_styles:
        raise ConfigError(
            f"{model_path}: {len(weights)} style mixing weights for a model with "
            f"{num_styles} styles"
        )
    if not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) <= 0:
        raise ConfigError(
            f"{model_path}: style mixing weights must be >= 0 with a positive sum, got {weights}"
        )
    total = sum(weights)
    return torch.tensor([w / total for w in weights])
