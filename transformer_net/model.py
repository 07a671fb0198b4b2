"""The image transformation network of Johnson et al. 2016.

"Perceptual Losses for Real-Time Style Transfer and Super-Resolution", ECCV 2016,
supplementary material, with the two changes everybody adopted since:
instance normalization (Ulyanov et al. 2016) instead of batch normalization, and
nearest-neighbour upsampling followed by a convolution instead of transposed
convolutions (Odena et al. 2016, "Deconvolution and Checkerboard Artifacts").

Layer names match the PyTorch examples' ``fast_neural_style`` model so that its
state dicts load unchanged. Pixel convention: RGB in 0-255 in, RGB in roughly
0-255 out (no output activation; clamp when saving). This file imports only torch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# The network downsamples twice by 2, so inputs are padded to a multiple of 4 and
# the output is cropped back: any width x height comes out at exactly its size.
SIZE_MULTIPLE = 4
# Smallest padded side for which every reflection pad inside the network is valid
# (after two stride-2 convs the 3x3 residual convs need at least 2 pixels).
MIN_SIDE = 8
# Initial output color: the ImageNet mean in 0-255 (see TransformerNet.__init__).
INIT_OUTPUT_RGB = (123.68, 116.78, 103.94)


class ConvLayer(nn.Module):
    """Reflection padding + convolution ("same" size for stride 1)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
        super().__init__()
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2d(self.reflection_pad(x))


class UpsampleConvLayer(nn.Module):
    """Nearest-neighbour x``upsample`` then ConvLayer: no checkerboard artifacts."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, upsample: int = 2):
        super().__init__()
        self.upsample = upsample
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=self.upsample, mode="nearest")
        return self.conv2d(self.reflection_pad(x))


class ResidualBlock(nn.Module):
    """conv-IN-ReLU-conv-IN plus identity (He et al. 2016, as in Gross & Wilber)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = ConvLayer(channels, channels, kernel_size=3)
        self.in1 = nn.InstanceNorm2d(channels, affine=True)
        self.conv2 = ConvLayer(channels, channels, kernel_size=3)
        self.in2 = nn.InstanceNorm2d(channels, affine=True)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.in1(self.conv1(x)))
        y = self.in2(self.conv2(y))
        return x + y


class TransformerNet(nn.Module):
    """c9s1-32, d64, d128, 5 x R128, u64, u32, c9s1-3 (widths configurable).

    ``channels`` are the widths of the three encoder stages (the decoder mirrors
    them); ``num_residual`` the number of residual blocks at the bottleneck.
    At the defaults the network has 1,679,235 parameters.
    """

    def __init__(self, *, channels: tuple[int, int, int] = (32, 64, 128), num_residual: int = 5):
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if len(channels) != 3 or min(channels) < 1:
            raise ValueError(f"channels must be three positive widths, got {channels}")
        if num_residual < 0:
            raise ValueError(f"num_residual must be >= 0, got {num_residual}")
        c1, c2, c3 = channels
        self.channels = channels
        self.num_residual = int(num_residual)
        # Encoder: (B, 3, H, W) -> (B, c3, H/4, W/4)
        self.conv1 = ConvLayer(3, c1, kernel_size=9, stride=1)
        self.in1 = nn.InstanceNorm2d(c1, affine=True)
        self.conv2 = ConvLayer(c1, c2, kernel_size=3, stride=2)
        self.in2 = nn.InstanceNorm2d(c2, affine=True)
        self.conv3 = ConvLayer(c2, c3, kernel_size=3, stride=2)
        self.in3 = nn.InstanceNorm2d(c3, affine=True)
        # Bottleneck: named res1..resN like the reference so state dicts match.
        for i in range(1, self.num_residual + 1):
            self.add_module(f"res{i}", ResidualBlock(c3))
        # Decoder: (B, c3, H/4, W/4) -> (B, 3, H, W)
        self.deconv1 = UpsampleConvLayer(c3, c2, kernel_size=3, upsample=2)
        self.in4 = nn.InstanceNorm2d(c2, affine=True)
        self.deconv2 = UpsampleConvLayer(c2, c1, kernel_size=3, upsample=2)
        self.in5 = nn.InstanceNorm2d(c1, affine=True)
        self.deconv3 = ConvLayer(c1, 3, kernel_size=9, stride=1)
        self.relu = nn.ReLU()
        # Pixels are 0-255 with no output activation, so a default-initialized
        # network starts out black; starting from the ImageNet mean color instead
        # saves the first few hundred training steps.
        with torch.no_grad():
            self.deconv3.conv2d.bias.copy_(torch.tensor(INIT_OUTPUT_RGB))

    @property
    def config(self) -> dict:
        """The keyword arguments that rebuild this network."""
        return {"channels": list(self.channels), "num_residual": self.num_residual}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB 0-255 -> (B, 3, H, W) RGB ~0-255, for any H, W >= 1."""
        h, w = x.shape[-2:]
        x = _pad_to_multiple(x)
        y = self.relu(self.in1(self.conv1(x)))
        y = self.relu(self.in2(self.conv2(y)))
        y = self.relu(self.in3(self.conv3(y)))
        for i in range(1, self.num_residual + 1):
            y = getattr(self, f"res{i}")(y)
        y = self.relu(self.in4(self.deconv1(y)))
        y = self.relu(self.in5(self.deconv2(y)))
        y = self.deconv3(y)
        return y[..., :h, :w]


def _pad_to_multiple(x: torch.Tensor) -> torch.Tensor:
    """Pad bottom/right so both sides are multiples of 4 and at least MIN_SIDE.

    Reflection keeps image statistics at the border; sides too small to reflect
    (e.g. a 1x1 image) fall back to edge replication.
    """
    if torch.jit.is_tracing():  # ONNX / TorchScript export: sizes are graph values
        return _pad_to_multiple_traced(x)
    h, w = x.shape[-2:]
    pad_h = max(-h % SIZE_MULTIPLE, MIN_SIDE - h)
    pad_w = max(-w % SIZE_MULTIPLE, MIN_SIDE - w)
    if pad_h == 0 and pad_w == 0:
        return x
    mode = "reflect" if pad_h < h and pad_w < w else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


def _pad_to_multiple_traced(x: torch.Tensor) -> torch.Tensor:
    """:func:`_pad_to_multiple` as tensor arithmetic, for graphs with dynamic H and W.

    The eager version decides with Python ``max`` and ``if`` on the sizes, which a
    trace would freeze at the example's size. Here the padded sizes and the mode
    are tensors and the padding is a gather with computed row/column indices
    (reflection: i -> 2(n-1) - i past the edge; replication: i -> n-1), so one
    exported graph gives the same pixels as eager for every size, 1x1 included.
    """
    h, w = x.shape[-2], x.shape[-1]  # 0-dim tensors while tracing, ints in eager
    if not isinstance(h, torch.Tensor):
        h, w = torch.tensor(h), torch.tensor(w)
    hp = torch.clamp((h + SIZE_MULTIPLE - 1) // SIZE_MULTIPLE * SIZE_MULTIPLE, min=MIN_SIDE)
    wp = torch.clamp((w + SIZE_MULTIPLE - 1) // SIZE_MULTIPLE * SIZE_MULTIPLE, min=MIN_SIDE)
    reflect = (hp - h < h) & (wp - w < w)  # 0-dim bool: both sides can reflect

    def source(n: torch.Tensor, padded: torch.Tensor) -> torch.Tensor:
        i = torch.arange(padded, device=x.device)  # (padded,)
        reflected = torch.where(i < n, i, 2 * (n - 1) - i)
        return torch.where(reflect, reflected, torch.clamp(i, max=n - 1))

    return x.index_select(-2, source(h, hp)).index_select(-1, source(w, wp))
