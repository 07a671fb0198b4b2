"""Stylize images too large for memory in tiles, with the result of one whole pass.

A 12000x9000 photo needs about 80 GB of activations in one pass of the Johnson
et al. 2016 network. Cutting it into tiles is easy; getting the *same* picture is
not: instance normalization (Ulyanov et al. 2016) normalizes every channel with
its mean and variance over the whole image, so tiles normalized on their own get
their own colors and contrast, and the seams show. Blending overlaps only
blurs such seams.

Here the tiled output equals the whole-image output up to float rounding:

1. Statistics pass, once per instance-norm layer (in execution order): every
   tile runs up to the first layer whose statistics are still unknown, and that
   layer's per-channel sum and sum of squares over the tile's *core* are
   accumulated (float64). Earlier layers already use whole-image statistics.
2. Final pass: every tile runs through with all statistics fixed, and only its
   core is kept.

Tiles overlap by a margin wider than the network's receptive field, so the
core never sees the tile's own (reflection-padded) border; tile corners sit on
multiples of 4 so the two stride-2 convolutions sample the same grid as in the
whole image. The image is padded exactly as ``TransformerNet.forward`` pads it,
so the statistics cover the same pixels. The price: about (layers / 2 + 1)
network passes instead of one (15 layers at the defaults: roughly 9x), paid
only for images that would not fit otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import contextmanager

import torch
from torch import nn

from .errors import ConfigError, ImageError
from .image import to_uint8
from .model import MIN_SIDE, SIZE_MULTIPLE, TransformerNet

# Peak activation bytes per input pixel of one forward pass, per byte of the
# dtype: about 176 values per pixel are alive around the last upsampling
# (64-channel upsampled map, its reflection-padded copy, the 32-channel output).
VALUES_PER_PIXEL = 200
# Tiles larger than this gain nothing (overhead of the margins is already small).
MAX_TILE = 2048
MIN_TILE = 64


def round_up(x: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` that is >= ``x`` (x >= 0)."""
    return -(-x // multiple) * multiple


class _StopForward(Exception):
    """Raised inside the network once the layer being measured has its statistics."""


def receptive_margin(model: TransformerNet) -> int:
    """Pixels of context an output pixel depends on, rounded up to a multiple of 4.

    conv1 9x9 (4) + two stride-2 3x3 convs (1 + 2) + 2 x 3x3 per residual block at
    1/4 scale (8 each) + two upsample+3x3 at 1/2 and full scale (2 + 1, plus up
    to 3 pixels of nearest-upsampling alignment) + the final 9x9 (4).
    """
    radius = 4 + 1 + 2 + 8 * model.num_residual + 2 + 1 + 3 + 4
    return round_up(radius, SIZE_MULTIPLE)


def memory_budget(device: torch.device) -> int:
    """Bytes a forward pass may use: most of the free GPU memory, half the free RAM."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.8)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 // 2
    except OSError:
        pass
    return 4 << 30  # no /proc (macOS, Windows): assume 4 GB


def bytes_needed(height: int, width: int, dtype: torch.dtype) -> int:
    """Estimated peak activation memory of one whole-image forward pass."""
    itemsize = torch.tensor([], dtype=dtype).element_size()
    return height * width * VALUES_PER_PIXEL * itemsize


def plan_tile_size(height: int, width: int, *, dtype: torch.dtype, budget: int, margin: int) -> int:
    """0 if the whole image fits ``budget`` bytes, else the largest tile core that does."""
    if bytes_needed(height, width, dtype) <= budget:
        return 0
    per_pixel = bytes_needed(1, 1, dtype)
    side = int(math.sqrt(budget / per_pixel)) - 2 * margin
    side = side // SIZE_MULTIPLE * SIZE_MULTIPLE
    return max(MIN_TILE, min(MAX_TILE, side))


def check_tile_size(tile: int) -> None:
    """:class:`ConfigError` unless ``tile`` keeps tiles on the network's stride-4 grid."""
    if tile < MIN_SIDE or tile % SIZE_MULTIPLE:
        raise ConfigError(
            f"tile size must be a multiple of {SIZE_MULTIPLE} and >= {MIN_SIDE}, got {tile}"
        )


def _reflect_index(n: int, pad: int) -> torch.Tensor:
    """Indices 0..n-1 then ``pad`` reflected ones (n-2, n-3, ...), as F.pad(mode='reflect')."""
    tail = (n - 2 - torch.arange(pad)).clamp_(min=0)
    return torch.cat([torch.arange(n), tail])


def pad_like_model(image: torch.Tensor) -> torch.Tensor:
    """(3, H, W) -> (3, H', W') padded bottom/right to a multiple of 4, as the model does."""
    h, w = image.shape[-2:]
    pad_h = max(round_up(h, SIZE_MULTIPLE), MIN_SIDE) - h
    pad_w = max(round_up(w, SIZE_MULTIPLE), MIN_SIDE) - w
    if pad_h >= h or pad_w >= w:  # reflection needs more pixels than it adds
        raise ImageError(f"image of {w}x{h} pixels is too small to tile")
    return image[:, _reflect_index(h, pad_h)][:, :, _reflect_index(w, pad_w)]


class _NormStats:
    """Whole-image statistics of one InstanceNorm2d, accumulated over tile cores."""

    def __init__(self) -> None:
        self.count = 0
        self.sum: torch.Tensor | None = None  # (C,) float64
        self.sumsq: torch.Tensor | None = None
        self.mean: torch.Tensor | None = None  # (1, C, 1, 1) once fixed
        self.invstd: torch.Tensor | None = None

    def add(self, x: torch.Tensor) -> None:
        x = x.double()  # (1, C, h, w): 1e8 pixels need float64 sums
        s, ss = x.sum((0, 2, 3)), x.square().sum((0, 2, 3))
        self.sum = s if self.sum is None else self.sum + s
        self.sumsq = ss if self.sumsq is None else self.sumsq + ss
        self.count += x.shape[0] * x.shape[2] * x.shape[3]

    def fix(self, eps: float) -> None:
        mean = self.sum / self.count
        var = (self.sumsq / self.count - mean.square()).clamp_(min=0)  # biased, as InstanceNorm
        self.mean = mean.view(1, -1, 1, 1)
        self.invstd = (var + eps).rsqrt().view(1, -1, 1, 1)


@contextmanager
def _norms_with_stats(model: nn.Module, core: Callable[[torch.Tensor], torch.Tensor]):
    """Make every InstanceNorm2d of ``model`` use (or measure) whole-image statistics.

    ``core(x)`` crops a norm's input (1, C, h, w) to the current tile's core at
    that layer's resolution. Yields ``{norm: _NormStats}``.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.InstanceNorm2d)]
    stats = {m: _NormStats() for m in norms}

    def forward(norm: nn.InstanceNorm2d, x: torch.Tensor) -> torch.Tensor:
        st = stats[norm]
        if st.mean is None:  # the layer being measured in this pass
            st.add(core(x))
            raise _StopForward
        y = (x - st.mean.to(x.dtype)) * st.invstd.to(x.dtype)
        if norm.affine:
            y = y * norm.weight.view(1, -1, 1, 1) + norm.bias.view(1, -1, 1, 1)
        return y

    for m in norms:
        m.forward = lambda x, m=m: forward(m, x)  # instance attribute shadows the method
    try:
        yield stats
    finally:
        for m in norms:
            del m.forward


Box = tuple[int, int, int, int]  # (y0, y1, x0, x1)


def tile_grid(height: int, width: int, *, tile: int, margin: int) -> list[tuple[Box, Box]]:
    """(outer box, core box relative to the outer box) of every tile, row by row.

    Cores of ``tile`` x ``tile`` pixels cover the (padded) image; each outer box
    adds ``margin`` pixels of context on every side that has image there.
    """
    tiles = []
    for y0 in range(0, height, tile):
        for x0 in range(0, width, tile):
            y1, x1 = min(y0 + tile, height), min(x0 + tile, width)
            oy0, ox0 = max(0, y0 - margin), max(0, x0 - margin)
            oy1, ox1 = min(height, y1 + margin), min(width, x1 + margin)
            tiles.append(((oy0, oy1, ox0, ox1), (y0 - oy0, y1 - oy0, x0 - ox0, x1 - ox0)))
    return tiles


class _TileRunner:
    """Runs the network on one tile at a time and crops norm inputs to that tile's core."""

    def __init__(self, padded, forward, *, device, dtype, channels_last):
        self.padded, self.forward = padded, forward  # (3, Hp, Wp) uint8
        self.device, self.dtype, self.channels_last = device, dtype, channels_last
        self.inner: Box | None = None
        self.width = 0

    def core(self, x: torch.Tensor) -> torch.Tensor:
        """A norm's input (1, C, h, w) cropped to the current tile's core at its resolution."""
        cy0, cy1, cx0, cx1 = self.inner
        s = self.width // x.shape[-1]  # 1, 2 or 4: this layer's downsampling
        return x[..., cy0 // s : cy1 // s, cx0 // s : cx1 // s]

    def run(self, outer: Box, inner: Box) -> torch.Tensor | None:
        """The tile's core of the output, (3, h, w) uint8 on the CPU; None in a statistics pass."""
        oy0, oy1, ox0, ox1 = outer
        x = self.padded[:, oy0:oy1, ox0:ox1].to(self.device, non_blocking=True)[None]
        x = x.to(self.dtype)  # (1, 3, h, w)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        self.inner, self.width = inner, ox1 - ox0
        try:
            y = self.forward(x)  # (1, 3, h, w)
        except _StopForward:
            return None
        cy0, cy1, cx0, cx1 = inner
        return to_uint8(y[0, :, cy0:cy1, cx0:cx1]).cpu()


@torch.inference_mode()
def stylize_tiled(
    model: TransformerNet,
    image: torch.Tensor,
    *,
    tile: int,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """(3, H, W) uint8 -> (3, H, W) uint8, in tiles of ``tile`` x ``tile`` output pixels.

    ``forward`` calls the network on a (1, 3, h, w) batch (default: ``model``);
    it must route through ``model``'s modules (e.g. a lambda adding a style
    argument). ``progress(done, total)`` is called after every tile of every pass.
    """
    check_tile_size(tile)
    h, w = image.shape[-2:]
    padded = pad_like_model(image)  # (3, Hp, Wp) uint8, Hp and Wp multiples of 4
    hp, wp = padded.shape[-2:]
    tiles = tile_grid(hp, wp, tile=tile, margin=receptive_margin(model))
    runner = _TileRunner(
        padded,
        forward or model,
        device=torch.device(device),
        dtype=dtype,
        channels_last=channels_last,
    )
    out = torch.empty((3, hp, wp), dtype=torch.uint8)
    with _norms_with_stats(model, runner.core) as stats:
        total = (len(stats) + 1) * len(tiles)
        done = 0
        for _ in range(len(stats) + 1):  # one pass per norm layer, then the output pass
            measuring = any(st.mean is None for st in stats.values())
            for outer, inner in tiles:
                core_out = runner.run(outer, inner)
                if core_out is not None:
                    if measuring:
                        raise RuntimeError("a norm layer was not reached during tiling")
                    (oy0, _, ox0, _), (cy0, cy1, cx0, cx1) = outer, inner
                    out[:, oy0 + cy0 : oy0 + cy1, ox0 + cx0 : ox0 + cx1] = core_out
                done += 1
                if progress is not None:
                    progress(done, total)
            for norm, st in stats.items():
                if st.mean is None and st.count:
                    st.fix(norm.eps)
        if any(st.mean is None for st in stats.values()):
            raise RuntimeError("tiling: a norm layer of the model is never used")
    return out[:, :h, :w]


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA out-of-memory, or a CPU allocation failure (a RuntimeError with that text)."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and (
        "can't allocate memory" in text or "not enough memory" in text
    )
