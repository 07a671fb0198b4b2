"""Post-processing of a stylized image: color preservation and style strength.

Color preservation follows the luminance-only transfer of Gatys et al. 2017,
"Controlling Perceptual Factors in Neural Style Transfer" (CVPR 2017, sec. 5.1):
the style changes only the luminance, and the colors come from the photo. Here
it is applied to the finished output (both for feed-forward networks and for
``--method optimize``): the Y channel (YIQ) of the stylized image is combined
with the I and Q channels (chrominance) of the content photo.

Strength interpolates pixels: ``S * stylized + (1 - S) * content``. Both are
linear maps, so their order does not matter: with color preservation, strength
scales only the change of luminance.

Everything works on (3, H, W) RGB tensors in 0-255 (uint8 in and out for
:func:`postprocess`).
"""

from __future__ import annotations

import numbers

import torch

from .errors import ConfigError
from .image import to_uint8

# RGB -> YIQ (NTSC 1953; Y is the Rec. 601 luma), rows Y, I, Q.
RGB_TO_YIQ = torch.tensor(
    [
        [0.299, 0.587, 0.114],
        [0.595716, -0.274453, -0.321263],
        [0.211456, -0.522591, 0.311135],
    ],
    dtype=torch.float64,
)
# The exact inverse (not the rounded textbook one), so RGB -> YIQ -> RGB is the identity.
YIQ_TO_RGB = torch.linalg.inv(RGB_TO_YIQ)


def _apply(matrix: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """(3, 3) x (3, H, W) -> (3, H, W) float32: the matrix applied to every pixel."""
    return torch.einsum("ij,jhw->ihw", matrix.to(torch.float32), image.float())


def rgb_to_yiq(image: torch.Tensor) -> torch.Tensor:
    """(3, H, W) RGB 0-255 -> (3, H, W) float32 YIQ (Y in 0-255, I and Q signed)."""
    return _apply(RGB_TO_YIQ, image)


def yiq_to_rgb(image: torch.Tensor) -> torch.Tensor:
    """(3, H, W) YIQ -> (3, H, W) float32 RGB (not clamped)."""
    return _apply(YIQ_TO_RGB, image)


def luminance(image: torch.Tensor) -> torch.Tensor:
    """(3, H, W) RGB 0-255 -> (H, W) float32 Y of YIQ."""
    return rgb_to_yiq(image)[0]


def match_luminance(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Shift and scale the luminance ``source`` to the mean and std of ``target``.

    Gatys et al. 2017, sec. 5.1: the style's luminance histogram is matched to the
    photo's before luminance-only transfer, so that the style keeps its contrast
    pattern but not its overall brightness. (H, W) -> (H', W') float32.
    """
    source, target = source.float(), target.float()
    scale = target.std() / source.std().clamp_min(1e-6)
    return (source - source.mean()) * scale + target.mean()


def gray_image(y: torch.Tensor) -> torch.Tensor:
    """(H, W) luminance -> (3, H, W) uint8 gray RGB image (R = G = B = Y)."""
    return to_uint8(y).expand(3, *y.shape).contiguous()


def transfer_luminance(content: torch.Tensor, stylized: torch.Tensor) -> torch.Tensor:
    """Luminance of ``stylized``, chrominance of ``content`` -> (3, H, W) float32 RGB.

    Not clamped: a bright luminance with a strongly colored chrominance can leave
    0-255 (clamp when converting to pixels).
    """
    if content.shape != stylized.shape:
        raise ValueError(
            f"content {tuple(content.shape)} and stylized {tuple(stylized.shape)} differ in size"
        )
    yiq = rgb_to_yiq(content)  # (3, H, W)
    yiq[0] = rgb_to_yiq(stylized)[0]
    return yiq_to_rgb(yiq)


def blend(content: torch.Tensor, stylized: torch.Tensor, strength: float) -> torch.Tensor:
    """``strength * stylized + (1 - strength) * content`` -> (3, H, W) float32."""
    check_strength(strength)
    return torch.lerp(content.float(), stylized.float(), float(strength))


def check_strength(strength: float) -> float:
    """``strength`` itself if it is in [0, 1], else :class:`ConfigError` (NaN included, and
    anything that is not a number: a web request can send any JSON value)."""
    if isinstance(strength, bool) or not isinstance(strength, numbers.Real):
        raise ConfigError(f"strength must be a number in [0, 1], got {strength!r}")
    if not 0.0 <= strength <= 1.0:
        raise ConfigError(f"strength must be in [0, 1], got {strength}")
    return strength


def postprocess(
    content: torch.Tensor,
    stylized: torch.Tensor,
    *,
    strength: float = 1.0,
    preserve_color: bool = False,
) -> torch.Tensor:
    """(3, H, W) uint8 photo and its stylization -> (3, H, W) uint8 final image.

    With the defaults (strength 1, no color preservation) ``stylized`` is
    returned as it is. Shared by every stylize path (images, frames) so that
    they agree pixel for pixel.
    """
    check_strength(strength)
    if strength == 1.0 and not preserve_color:
        return stylized
    out = transfer_luminance(content, stylized) if preserve_color else stylized.float()
    if strength != 1.0:
        out = torch.lerp(content.float(), out, float(strength))
    return to_uint8(out)
