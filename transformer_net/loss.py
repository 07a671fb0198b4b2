"""Perceptual losses: Gram-matrix style loss, feature content loss, total variation.

Style and content losses of Gatys et al. 2016 ("Image Style Transfer Using
Convolutional Neural Networks") as used to train feed-forward networks by
Johnson et al. 2016. Conventions (the loss weights in ``configs/loss/`` assume them):

- pixels: RGB 0-255 for both the generated and the content image;
- Gram matrix: ``F F^T / (C * H * W)`` per image, computed in fp32;
- style loss of a layer: mean over the C x C entries of the squared difference
  between the output's Gram matrix and the style image's;
- content loss of a layer: mean over C x H x W of the squared feature difference;
- total variation: mean squared difference of neighbouring pixels (0-255 units),
  summed over the vertical and horizontal directions.

These are the conventions of Johnson's ``fast-neural-style`` and of the PyTorch
examples; the default weights for each VGG release are in ``configs/loss/``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError
from .vgg import LAYER_INDEX, VGGFeatures, default_preprocessing

DEFAULT_STYLE_LAYERS = {"relu1_2": 1.0, "relu2_2": 1.0, "relu3_3": 1.0, "relu4_3": 1.0}
DEFAULT_CONTENT_LAYERS = {"relu3_3": 1.0}
# Style weight (content weight 1) per VGG release, as in configs/loss/*.yaml.
DEFAULT_STYLE_WEIGHT = {"torchvision": 1e5, "caffe": 1.0}


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, C) Gram matrices normalized by C*H*W, in fp32.

    Done in fp32 even under bf16/fp16 autocast: the sums over H*W lose too much
    precision in half types and the squared Gram differences can overflow fp16.
    """
    b, c, h, w = features.shape
    f = features.float().reshape(b, c, h * w)
    with torch.autocast(device_type=f.device.type, enabled=False):
        gram = torch.bmm(f, f.transpose(1, 2))
    return gram / (c * h * w)


def total_variation(image: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between vertically and horizontally adjacent pixels."""
    dy = image[..., 1:, :] - image[..., :-1, :]
    dx = image[..., :, 1:] - image[..., :, :-1]
    return dy.float().pow(2).mean() + dx.float().pow(2).mean()


GRID_PERIOD = 4  # the network's two 2x upsamplings: a pattern repeats every 4 px


def grid_pattern(image: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, 4, 4): the image's mean offset at each pixel phase.

    Each pixel minus a local mean that no period-4 texture survives and that
    follows straight ramps exactly (the kernel [1, 2, 2, 2, 1] / 8 in both
    directions), averaged over all pixels of the same phase (position modulo
    4, anchored at the top-left corner, where the network's grid is).
    A photo's offsets average out (a 128-px crop has 900 pixels per phase); the
    fixed texture a stride-4 decoder leaves (the "grid" of docs/training.md) does
    not, because it repeats at the same phase across the whole image.
    """
    period = GRID_PERIOD  # the kernel's taps sum a whole period
    b, c = image.shape[:2]
    taps = image.new_tensor([1.0, 2.0, 2.0, 2.0, 1.0], dtype=torch.float32) / 8
    kernel = (taps[:, None] * taps[None, :]).expand(c, 1, 5, 5)  # depthwise (C, 1, 5, 5)
    x = image.float()
    offsets = x[..., 2:-2, 2:-2] - F.conv2d(x, kernel, groups=c)  # (B, C, H-4, W-4)
    offsets = offsets[..., 2:, 2:]  # from (4, 4): phase 0 is the image's
    h, w = offsets.shape[-2:]
    h, w = h - h % period, w - w % period
    blocks = offsets[..., :h, :w].reshape(b, c, h // period, period, w // period, period)
    pattern = blocks.mean(dim=(2, 4))  # (B, C, p, p)
    return pattern - pattern.mean(dim=(2, 3), keepdim=True)


class PerceptualLoss(nn.Module):
    """Weighted sum of content, style and total-variation losses on a frozen VGG-16.

    The style targets (one Gram matrix per style layer) are computed once from the
    style image and kept as buffers, so they travel with checkpoints while the
    VGG weights do not need to.

    Several styles (multi-style networks, Dumoulin et al. 2017): ``style_image``
    is a sequence of images; the targets of layer L are then (N, C, C), one per
    style, all measured by the same VGG, and ``forward`` takes the ``style`` of
    the batch.

    ``vgg_weights``: ``"caffe"`` (default), ``"imagenet"``, a ``.pth`` file or
    ``"random"`` (see ``VGGFeatures``). ``preprocessing=None`` takes the convention
    of the weights (``vgg.default_preprocessing``), ``style_weight=None`` the
    weight that belongs to that convention (``DEFAULT_STYLE_WEIGHT``).
    """

    def __init__(
        self,
        *,
        style_image: torch.Tensor | Sequence[torch.Tensor],
        vgg_weights: str = "caffe",
        preprocessing: str | None = None,
        content_layers: Mapping[str, float] | None = None,
        style_layers: Mapping[str, float] | None = None,
        content_weight: float = 1.0,
        style_weight: float | None = None,
        tv_weight: float = 0.0,
        grid_weight: float = 0.0,
    ):
        super().__init__()
        self.content_layers = dict(content_layers or DEFAULT_CONTENT_LAYERS)
        self.style_layers = dict(style_layers or DEFAULT_STYLE_LAYERS)
        for what, layers in (("content", self.content_layers), ("style", self.style_layers)):
            if not layers:
                raise ConfigError(f"at least one {what} layer is needed")
            for name, weight in layers.items():
                if name not in LAYER_INDEX:
                    raise ConfigError(
                        f"unknown {what} layer {name!r}; choose from {list(LAYER_INDEX)}"
                    )
                if not 0 <= weight < math.inf:
                    raise ConfigError(f"{what} layer weight for {name} must be >= 0, got {weight}")
        if preprocessing is None:  # the convention that belongs to the weights
            preprocessing = default_preprocessing(vgg_weights)
        if style_weight is None:  # the default that belongs to the VGG release
            style_weight = DEFAULT_STYLE_WEIGHT.get(preprocessing, 1e5)
        for name, value in (
            ("content", content_weight),
            ("style", style_weight),
            ("tv", tv_weight),
            ("grid", grid_weight),
        ):
            if not 0 <= value < math.inf:  # also rejects NaN and inf
                raise ConfigError(f"{name}_weight must be >= 0 and finite, got {value}")
        self.content_weight = float(content_weight)
        self.style_weight = float(style_weight)
        self.tv_weight = float(tv_weight)
        self.grid_weight = float(grid_weight)
        self.vgg = VGGFeatures(
            layers=[*self.content_layers, *self.style_layers],
            weights=vgg_weights,
            preprocessing=preprocessing,
        )
        # The content image only needs VGG up to the deepest content layer.
        self._content_last = max(self.content_layers, key=LAYER_INDEX.__getitem__)
        self.set_style(style_image)

    @torch.no_grad()
    def set_style(self, style_image: torch.Tensor | Sequence[torch.Tensor]) -> None:
        """Compute the style targets from a (1, 3, H, W) RGB 0-255 image.

        A sequence of (3, H, W) or (1, 3, H, W) images (sizes may differ) gives
        one target per image, in that order: style k's Gram matrices are row k.
        """
        images = [style_image] if isinstance(style_image, torch.Tensor) else list(style_image)
        if not images:
            raise ConfigError("at least one style image is needed")
        device = next(self.vgg.parameters()).device
        grams: dict[str, list[torch.Tensor]] = {name: [] for name in self.style_layers}
        for image in images:
            if image.dim() == 3:
                image = image.unsqueeze(0)
            feats = self.vgg(image.to(device=device, dtype=torch.float32))
            for name in self.style_layers:
                grams[name].append(gram_matrix(feats[name]))  # (1, C, C)
        for name in self.style_layers:
            self.register_buffer(f"target_gram_{name}", torch.cat(grams[name]))  # (N, C, C)
        self.num_styles = len(images)

    def target_gram(self, layer: str) -> torch.Tensor:
        """(N, C, C): the Gram matrices of the N style images at ``layer``."""
        return getattr(self, f"target_gram_{layer}")

    def forward(
        self,
        output: torch.Tensor,
        content: torch.Tensor,
        style: int | torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Losses of stylized ``output`` against ``content`` (both (B, 3, H, W), 0-255).

        ``style``: which style's targets to use, an index or a (B,) index tensor
        per image; None for a loss with one style.
        Returns ``total`` (what is optimized) and its weighted parts, which add up
        to it: ``content``, ``style``, ``tv`` and ``style/<layer>`` per style layer.
        """
        if style is None and self.num_styles > 1:
            raise ValueError(f"the loss holds {self.num_styles} styles: pass style=")
        if isinstance(style, int):
            if not 0 <= style < self.num_styles:
                raise ValueError(f"style {style} out of range: {self.num_styles} style(s)")
            style = slice(style, style + 1)  # keeps the (1, C, C) shape
        with torch.no_grad():
            content_feats = self.vgg(content, last=self._content_last)
        out_feats = self.vgg(output)
        zero = output.new_zeros((), dtype=torch.float32)

        content_loss = zero
        for name, w in self.content_layers.items():
            diff = out_feats[name].float() - content_feats[name].float()
            content_loss = content_loss + w * diff.pow(2).mean()

        losses: dict[str, torch.Tensor] = {}
        style_loss = zero
        for name, w in self.style_layers.items():
            gram = gram_matrix(out_feats[name])  # (B, C, C)
            target = self.target_gram(name)  # (N, C, C)
            if style is not None:
                target = target[style]  # (1, C, C) or (B, C, C)
            layer_loss = (gram - target).pow(2).mean()
            style_loss = style_loss + w * layer_loss
            losses[f"style/{name}"] = (self.style_weight * w * layer_loss).detach()

        tv_loss = total_variation(output) if self.tv_weight > 0 else zero
        content_loss = self.content_weight * content_loss
        style_loss = self.style_weight * style_loss
        tv_loss = self.tv_weight * tv_loss
        losses.update(
            total=content_loss + style_loss + tv_loss,
            content=content_loss,
            style=style_loss,
            tv=tv_loss,
        )
        if self.grid_weight > 0:  # only then: the loss's keys stay as they were
            grid_loss = self.grid_weight * grid_pattern(output).pow(2).mean()
            losses.update(total=losses["total"] + grid_loss, grid=grid_loss)
        return losses
