"""The image transformation network of Johnson et al. 2016.

"Perceptual Losses for Real-Time Style Transfer and Super-Resolution", ECCV 2016,
supplementary material, with the two changes everybody adopted since:
instance normalization (Ulyanov et al. 2016) instead of batch normalization, and
nearest-neighbour upsampling followed by a convolution instead of transposed
convolutions (Odena et al. 2016, "Deconvolution and Checkerboard Artifacts").

Layer names match the PyTorch examples' ``fast_neural_style`` model so that its
state dicts load unchanged. Pixel convention: RGB in 0-255 in, RGB in roughly
0-255 out (no output activation; clamp when saving). This file imports only torch.

With ``num_styles > 1`` one network holds several styles: every instance norm
becomes a conditional instance norm with one scale and shift per style (Dumoulin
et al. 2017, "A Learned Representation for Artistic Style"); the convolutions are
shared, and mixing the per-style scales and shifts interpolates between styles.
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


class ConditionalInstanceNorm2d(nn.Module):
    """Instance norm with one learned scale and shift per style (Dumoulin et al. 2017).

    The normalization itself is a plain ``nn.InstanceNorm2d`` without affine
    parameters (code that hooks instance norms, e.g. to replace their statistics,
    finds it); ``weight`` and ``bias`` are (num_styles, C): row k is style k's
    gamma and beta. ``style`` (see :func:`style_tensor`) is a (B',) index tensor
    or (B', num_styles) mixing weights; a mix combines the gammas and betas
    linearly, which interpolates between styles.
    """

    def __init__(self, num_features: int, num_styles: int):
        super().__init__()
        self.norm = nn.InstanceNorm2d(num_features, affine=False)
        self.weight = nn.Parameter(torch.ones(num_styles, num_features))  # (N, C)
        self.bias = nn.Parameter(torch.zeros(num_styles, num_features))  # (N, C)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        y = self.norm(x)  # (B, C, H, W)
        if style.is_floating_point():  # (B', N) weights -> (B', C); elementwise, so
            # autocast keeps it in fp32, and a one-hot mix gives a row exactly
            mix = style.float().unsqueeze(-1)  # (B', N, 1)
            gamma = (mix * self.weight.float()).sum(1)
            beta = (mix * self.bias.float()).sum(1)
        else:  # (B',) indices -> (B', C)
            gamma, beta = self.weight[style], self.bias[style]
        # B' is 1 (one style for the batch) or B; cast for bf16/fp16 networks.
        gamma = gamma.to(y.dtype)[:, :, None, None]
        beta = beta.to(y.dtype)[:, :, None, None]
        return y * gamma + beta


def instance_norm(channels: int, num_styles: int) -> nn.Module:
    """The plain affine instance norm for one style, a conditional one for several."""
    if num_styles == 1:
        return nn.InstanceNorm2d(channels, affine=True)
    return ConditionalInstanceNorm2d(channels, num_styles)


def _norm(layer: nn.Module, x: torch.Tensor, style: torch.Tensor | None) -> torch.Tensor:
    return layer(x, style) if isinstance(layer, ConditionalInstanceNorm2d) else layer(x)


def style_tensor(
    style: int | torch.Tensor | None, num_styles: int, *, batch: int, device: torch.device
) -> torch.Tensor:
    """Any accepted ``style`` argument -> (B',) long indices or (B', N) float weights.

    ``None``: style 0; an int k: style k; a (N,) float tensor: mixing weights for
    the whole batch (used as given: callers normalize them, e.g. to sum 1); a
    (B,) integer tensor or a (B, N) float tensor: one style or mix per image.
    B' is 1 or ``batch``. Raises ValueError for indices out of range or shapes
    that do not fit.
    """
    if style is None:
        style = 0
    if isinstance(style, bool) or not isinstance(style, (int, torch.Tensor)):
        raise ValueError(f"style must be an int or a tensor, got {type(style).__name__}")
    if isinstance(style, int):  # checked without a tensor: no device sync
        if not 0 <= style < num_styles:
            raise ValueError(
                f"style index {style} out of range: the network has {num_styles} style(s)"
            )
        return torch.full((1,), style, dtype=torch.long, device=device)
    if style.is_floating_point():
        if style.dim() not in (1, 2) or style.shape[-1] != num_styles:
            raise ValueError(
                f"style mixing weights must have shape (N,) or (B, N) with N = {num_styles} "
                f"styles, got {tuple(style.shape)}"
            )
        if style.dim() == 1:
            style = style.unsqueeze(0)  # (1, N)
    else:
        if style.dim() == 0:
            style = style.reshape(1)
        if style.dim() != 1:
            raise ValueError(f"style indices must have shape (B,), got {tuple(style.shape)}")
        low, high = int(style.min()), int(style.max())  # one sync; checks every index
        if low < 0 or high >= num_styles:
            bad = low if low < 0 else high
            raise ValueError(
                f"style index {bad} out of range: the network has {num_styles} style(s)"
            )
        style = style.long()
    if style.shape[0] not in (1, batch):
        raise ValueError(f"{style.shape[0]} styles given for a batch of {batch} images")
    return style.to(device)


class ResidualBlock(nn.Module):
    """conv-IN-ReLU-conv-IN plus identity (He et al. 2016, as in Gross & Wilber)."""

    def __init__(self, channels: int, num_styles: int = 1):
        super().__init__()
        self.conv1 = ConvLayer(channels, channels, kernel_size=3)
        self.in1 = instance_norm(channels, num_styles)
        self.conv2 = ConvLayer(channels, channels, kernel_size=3)
        self.in2 = instance_norm(channels, num_styles)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        y = self.relu(_norm(self.in1, self.conv1(x), style))
        y = _norm(self.in2, self.conv2(y), style)
        return x + y


class TransformerNet(nn.Module):
    """c9s1-32, d64, d128, 5 x R128, u64, u32, c9s1-3 (widths configurable).

    ``channels`` are the widths of the three encoder stages (the decoder mirrors
    them); ``num_residual`` the number of residual blocks at the bottleneck.
    At the defaults the network has 1,679,235 parameters.

    ``num_styles > 1``: every instance norm is a :class:`ConditionalInstanceNorm2d`
    with one gamma/beta row per style (same parameter names, (N, C) instead of
    (C,)); each extra style adds 2 x 1,600 = 3,200 parameters at the defaults.
    With one style the network and its state dict are those of a plain model.
    """

    def __init__(
        self,
        *,
        channels: tuple[int, int, int] = (32, 64, 128),
        num_residual: int = 5,
        num_styles: int = 1,
    ):
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if len(channels) != 3 or min(channels) < 1:
            raise ValueError(f"channels must be three positive widths, got {channels}")
        if num_residual < 0:
            raise ValueError(f"num_residual must be >= 0, got {num_residual}")
        if isinstance(num_styles, bool) or int(num_styles) != num_styles or num_styles < 1:
            raise ValueError(f"num_styles must be a positive integer, got {num_styles}")
        c1, c2, c3 = channels
        self.channels = channels
        self.num_residual = int(num_residual)
        self.num_styles = n = int(num_styles)
        # Encoder: (B, 3, H, W) -> (B, c3, H/4, W/4)
        self.conv1 = ConvLayer(3, c1, kernel_size=9, stride=1)
        self.in1 = instance_norm(c1, n)
        self.conv2 = ConvLayer(c1, c2, kernel_size=3, stride=2)
        self.in2 = instance_norm(c2, n)
        self.conv3 = ConvLayer(c2, c3, kernel_size=3, stride=2)
        self.in3 = instance_norm(c3, n)
        # Bottleneck: named res1..resN like the reference so state dicts match.
        for i in range(1, self.num_residual + 1):
            self.add_module(f"res{i}", ResidualBlock(c3, n))
        # Decoder: (B, c3, H/4, W/4) -> (B, 3, H, W)
        self.deconv1 = UpsampleConvLayer(c3, c2, kernel_size=3, upsample=2)
        self.in4 = instance_norm(c2, n)
        self.deconv2 = UpsampleConvLayer(c2, c1, kernel_size=3, upsample=2)
        self.in5 = instance_norm(c1, n)
        self.deconv3 = ConvLayer(c1, 3, kernel_size=9, stride=1)
        self.relu = nn.ReLU()
        # Pixels are 0-255 with no output activation, so a default-initialized
        # network starts out black; starting from the ImageNet mean color instead
        # saves the first few hundred training steps.
        with torch.no_grad():
            self.deconv3.conv2d.bias.copy_(torch.tensor(INIT_OUTPUT_RGB))

    @property
    def config(self) -> dict:
        """The keyword arguments that rebuild this network.

        ``num_styles`` only appears for multi-style networks, so that the model
        files of single-style networks stay exactly as they were.
        """
        config = {"channels": list(self.channels), "num_residual": self.num_residual}
        if self.num_styles > 1:
            config["num_styles"] = self.num_styles
        return config

    def forward(self, x: torch.Tensor, style: int | torch.Tensor | None = None) -> torch.Tensor:
        """(B, 3, H, W) RGB 0-255 -> (B, 3, H, W) RGB ~0-255, for any H, W >= 1.

        ``style`` (multi-style networks): None (style 0), an int index, a (N,)
        float tensor of mixing weights, or per image a (B,) integer tensor or
        (B, N) float tensor; see :func:`style_tensor`. A single-style network
        accepts only style 0.
        """
        h, w = x.shape[-2:]
        s = None
        if self.num_styles > 1 or style is not None:
            s = style_tensor(style, self.num_styles, batch=x.shape[0], device=x.device)
            if self.num_styles == 1:
                s = None  # validated: it can only mean style 0
        x = _pad_to_multiple(x)
        y = self.relu(_norm(self.in1, self.conv1(x), s))
        y = self.relu(_norm(self.in2, self.conv2(y), s))
        y = self.relu(_norm(self.in3, self.conv3(y), s))
        for i in range(1, self.num_residual + 1):
            y = getattr(self, f"res{i}")(y, s)
        y = self.relu(_norm(self.in4, self.deconv1(y), s))
        y = self.relu(_norm(self.in5, self.deconv2(y), s))
        y = self.deconv3(y)
        return y[..., :h, :w]


class ChannelPaddedConv2d(nn.Conv2d):
    """A Conv2d that pads its input and output channels with zeros to a multiple.

    The same math, the same parameters and state-dict keys. Convolutions with 3
    channels (the first and last 9x9 layers, VGG's conv1_1) do not fit the GPU's
    tensor-core kernels, and cuDNN runs them with slow generic kernels (their share
    of a stylization: docs/benchmarks.md). Padded to 8 channels they fit. A speed
    switch to be measured (``scripts/benchmark.py`` configurations ``-pad8``), off
    by default.
    """

    channel_multiple: int = 8

    def _conv_forward(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        out_ch, in_ch = weight.shape[:2]
        pad_in, pad_out = -in_ch % self.channel_multiple, -out_ch % self.channel_multiple
        if not (pad_in or pad_out):
            return super()._conv_forward(x, weight, bias)
        fmt = (
            torch.channels_last
            if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
            else torch.contiguous_format
        )
        x = F.pad(x, (0, 0, 0, 0, 0, pad_in)).contiguous(memory_format=fmt)  # (B, C+pad, H, W)
        weight = F.pad(weight, (0, 0, 0, 0, 0, pad_in, 0, pad_out)).contiguous(memory_format=fmt)
        if bias is not None:
            bias = F.pad(bias, (0, pad_out))
        y = super()._conv_forward(x, weight, bias)  # (B, out+pad, H', W')
        return y[:, :out_ch] if pad_out else y


def pad_conv_channels(module: nn.Module, multiple: int = 8) -> int:
    """Make every plain Conv2d in ``module`` whose channels are not a multiple of
    ``multiple`` a :class:`ChannelPaddedConv2d` (in place; parameters and
    state-dict keys unchanged). Returns how many were changed."""
    changed = 0
    for conv in module.modules():
        if type(conv) is not nn.Conv2d or conv.groups != 1 or conv.padding_mode != "zeros":
            continue
        if conv.in_channels % multiple == 0 and conv.out_channels % multiple == 0:
            continue
        conv.__class__ = ChannelPaddedConv2d  # same attributes, other _conv_forward
        conv.channel_multiple = multiple
        changed += 1
    return changed


class SliceReflectionPad2d(nn.Module):
    """Reflection padding written as flipped slices and concatenations.

    The same values as ``nn.ReflectionPad2d``. Its backward adds slices, where
    Inductor compiles ReflectionPad2d's backward into a scatter with atomic adds
    (its share of a compiled training step: docs/benchmarks.md). A speed switch to
    be measured (``scripts/benchmark.py`` configurations ``-slicepad``), off by
    default.
    """

    def __init__(self, padding: int):
        super().__init__()
        self.padding = int(padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.padding
        if p == 0:
            return x
        if p >= x.shape[-1] or p >= x.shape[-2]:  # the same error as ReflectionPad2d
            raise RuntimeError(
                f"padding size {p} must be less than the input dimensions {tuple(x.shape[-2:])}"
            )
        for dim in (-1, -2):  # (B, C, H, W) -> (B, C, H, W + 2p) -> (B, C, H + 2p, W + 2p)
            n = x.shape[dim]
            before = x.narrow(dim, 1, p).flip(dim)  # x[1..p] mirrored, the edge excluded
            after = x.narrow(dim, n - 1 - p, p).flip(dim)
            x = torch.cat([before, x, after], dim=dim)
        return x


def use_slice_reflection_pad(module: nn.Module) -> int:
    """Replace every ``nn.ReflectionPad2d`` with a square padding in ``module`` by a
    :class:`SliceReflectionPad2d` (in place; they hold no parameters, so state dicts
    are unchanged). Returns how many were replaced."""
    targets = [
        (parent, name, child)
        for parent in module.modules()
        for name, child in parent.named_children()
        if type(child) is nn.ReflectionPad2d and len(set(child.padding)) == 1
    ]
    for parent, name, child in targets:
        setattr(parent, name, SliceReflectionPad2d(child.padding[0]))
    return len(targets)


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
