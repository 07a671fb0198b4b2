"""Reading and writing images as tensors, with the errors a user can act on.

Tensors are (3, H, W) RGB: uint8 when read, any float 0-255 when written. EXIF
orientation is applied on read (phone photos), and every mode PIL knows (grayscale,
palette, CMYK, RGBA, 16-bit) is converted to 8-bit RGB.
"""

from __future__ import annotations

import functools
import io
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .atomic import atomic_write
from .errors import ConfigError, ImageError, ImageWriteError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)
# Decompression-bomb guard: PIL warns at ~89 MP and refuses at twice that; a
# 12000x9000 photo (108 MP) is legitimate here, so allow up to 400 MP. Resizing
# (--size, --scale) is held to the same limit: larger results cannot be read back.
MAX_PIXELS = 400_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


def is_image_file(path: str | os.PathLike) -> bool:
    """Whether the file name has an image extension (the content is not checked)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


@functools.cache
def _writable(suffix: str) -> str | None:
    fmt = Image.registered_extensions().get(suffix)
    if fmt is None or fmt not in Image.SAVE:
        return None
    try:  # some writers are stubs (GRIB, HDF5) or take other modes only (PFM)
        Image.new("RGB", (1, 1)).save(io.BytesIO(), format=fmt)
    except Exception:  # noqa: BLE001 - whatever the plugin raises means 'cannot write'
        return None
    return fmt


def writable_format(path: str | os.PathLike) -> str | None:
    """PIL's format for writing an RGB image to ``path`` (by extension); None if it cannot."""
    return _writable(Path(path).suffix.lower())


def image_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """(W, H) as displayed (EXIF rotation applied), from the header; None if unreadable.

    Nothing is decoded, so a whole folder or a huge file is checked in milliseconds.
    """
    try:
        with Image.open(path) as img:
            w, h = img.size
            rotated = img.getexif().get(0x0112) in (5, 6, 7, 8)  # orientation: 90 degrees
    except Exception:  # noqa: BLE001 - the real load reports why
        return None
    return (h, w) if rotated else (w, h)


def list_images(root: str | os.PathLike) -> list[Path]:
    """All image files below ``root``, recursively, in a stable (sorted) order."""
    root = Path(root)
    return sorted(p for p in root.rglob("*") if p.is_file() and is_image_file(p))


class ImageBytes(os.PathLike):
    """An encoded image held in memory (a pipe, an upload), named like a file in messages.

    ``stylize.py --input -`` reads stdin into one; :func:`open_image` and the
    loaders take it wherever they take a path. Its path is its ``name``, with no
    suffix, so it is never mistaken for a video or an image file on disk.
    """

    def __init__(self, data: bytes, name: str = "<stdin>"):
        self.data, self.name = data, name

    @classmethod
    def from_stdin(cls, option: str = "--input -") -> ImageBytes:
        """The image piped in; a terminal or nothing is a ConfigError naming ``option``."""
        if sys.stdin is None or sys.stdin.isatty():
            raise ConfigError(f"{option}: stdin is a terminal; pipe an image in (cat a.jpg | ...)")
        data = sys.stdin.buffer.read()
        if not data:
            raise ConfigError(f"{option}: nothing on stdin")
        return cls(data, name="<stdin>")

    def __fspath__(self) -> str:
        return self.name

    def __str__(self) -> str:
        return self.name


ImageSource = str | os.PathLike


def open_image(path: ImageSource) -> Image.Image:
    """Open, decode fully and apply EXIF orientation; the mode is left as it is.

    ``path`` may be an :class:`ImageBytes`; errors name it either way. Animated
    images (GIF, WebP, APNG) give their first frame.
    """
    if not isinstance(path, ImageBytes):
        path = Path(path)
    try:
        with Image.open(io.BytesIO(path.data) if isinstance(path, ImageBytes) else path) as img:
            img.load()  # decode now: truncated files fail here, not later
            return ImageOps.exif_transpose(img)
    except FileNotFoundError:
        raise ImageError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a directory, not an image") from None
    except UnidentifiedImageError:
        empty = not path.data if isinstance(path, ImageBytes) else path.stat().st_size == 0
        what = "empty file" if empty else "not an image PIL can read"
        raise ImageError(f"{path}: {what}") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ImageError(f"{path}: cannot decode image ({e})") from None


def has_alpha(img: Image.Image) -> bool:
    """Whether the image carries transparency (RGBA, LA, PA, or a palette with it)."""
    return img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB (16-bit grayscale rescaled, not clipped)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16/32-bit grayscale: PIL's convert("L") clips instead of rescaling.
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr * (255.0 / peak) + 0.5, 0, 255).astype(np.uint8))
    if has_alpha(img):
        img = img.convert("RGBA")
    return img.convert("RGB")


def load_short_side(path: str | os.PathLike, size: int) -> Image.Image:
    """Decode a photo to RGB with its shorter side resized to ``size`` (for square crops).

    Errors are PIL's own (the data loaders report and skip unreadable files).
    """
    with Image.open(path) as img:
        # JPEG draft mode decodes at 1/2, 1/4 or 1/8 scale when the photo is much
        # larger than needed (never below size x size): several times faster.
        img.draft("RGB", (size, size))
        img.load()
        img = to_rgb(ImageOps.exif_transpose(img))
    w, h = img.size
    scale = size / min(w, h)
    new_size = (max(size, round(w * scale)), max(size, round(h * scale)))
    return img.resize(new_size, Image.Resampling.BILINEAR, reducing_gap=3.0)


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> (3, H, W) uint8 tensor."""
    arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def load_image(
    path: str | os.PathLike, *, max_side: int | None = None, scale: float | None = None
) -> torch.Tensor:
    """Read an image as a (3, H, W) uint8 RGB tensor, optionally resized.

    ``max_side`` scales so that the longer side has that many pixels; ``scale``
    multiplies both sides. Aspect ratio is kept; LANCZOS resampling.
    """
    return load_image_alpha(path, max_side=max_side, scale=scale)[0]


def load_image_alpha(
    path: ImageSource, *, max_side: int | None = None, scale: float | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Like :func:`load_image`, plus the (H, W) uint8 alpha channel if there is one."""
    img = open_image(path)
    try:
        size = resized_size(img.size, max_side=max_side, scale=scale)
    except ValueError as e:  # too large: said before any memory is spent on it
        raise ImageError(f"{path}: {e}") from None
    alpha = img.convert("RGBA").getchannel("A") if has_alpha(img) else None
    img = to_rgb(img)
    if size != img.size:
        img = img.resize(size, Image.Resampling.LANCZOS)
        alpha = alpha.resize(size, Image.Resampling.LANCZOS) if alpha is not None else None
    rgb = pil_to_tensor(img)
    if alpha is None:
        return rgb, None
    return rgb, torch.from_numpy(np.array(alpha, dtype=np.uint8))


def resized_size(
    size: tuple[int, int], *, max_side: int | None = None, scale: float | None = None
) -> tuple[int, int]:
    """(W, H) after scaling the longer side to ``max_side`` or both by ``scale``.

    :class:`ConfigError` (a ValueError) when the result would exceed
    :data:`MAX_PIXELS` (it could not be decoded again, and would take gigabytes
    to compute); callers add the file's name.
    """
    w, h = size
    if max_side is not None:
        if max_side < 1:
            raise ConfigError(f"size must be >= 1, got {max_side}")
        factor = max_side / max(w, h)
    elif scale is not None:
        if not (math.isfinite(scale) and scale > 0):
            raise ConfigError(f"scale must be a finite number > 0, got {scale}")
        factor = scale
    else:
        return size
    new_w, new_h = max(1.0, w * factor), max(1.0, h * factor)  # floats: no overflow
    if new_w * new_h > MAX_PIXELS:
        raise ConfigError(
            f"resizing {w}x{h} to {new_w:.0f}x{new_h:.0f} ({new_w * new_h / 1e6:.0f} MP) "
            f"exceeds the limit of {MAX_PIXELS // 1_000_000} MP per image"
        )
    return max(1, round(w * factor)), max(1, round(h * factor))


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    """Pixels 0-255 of any float dtype (or uint8) -> uint8, clamped and rounded.

    Any shape, on the tensor's own device: the one conversion of every output
    (networks, runners, optimization, tiles, color post-processing).
    """
    if image.dtype == torch.uint8:
        return image
    return image.detach().float().clamp(0, 255).round().to(torch.uint8)


def tensor_to_pil(image: torch.Tensor) -> Image.Image:
    """(3, H, W) float 0-255 (clamped and rounded) or uint8 -> RGB PIL image."""
    if image.dim() == 4:
        if image.shape[0] != 1:
            raise ValueError(f"expected one image, got a batch of {image.shape[0]}")
        image = image[0]
    arr = to_uint8(image).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr, mode="RGB") if arr.shape[2] == 3 else Image.fromarray(arr)


def save_image(
    image: torch.Tensor | Image.Image,
    path: str | os.PathLike,
    *,
    overwrite: bool = True,
    **save_kwargs,
) -> None:
    """Write an image atomically: a crash never leaves a truncated file behind.

    The format comes from the extension; JPEGs are written at quality 95.
    ``overwrite=False``: a file found under ``path`` when the image is committed
    (another process wrote it meanwhile) is kept: :class:`OutputExistsError`.
    A write that fails (no permission, a full disk) is an :class:`ImageWriteError`.
    """
    path = Path(path)
    img = image if isinstance(image, Image.Image) else tensor_to_pil(image)
    fmt = writable_format(path)
    if fmt is None:
        what = f"{path.suffix!r} images" if path.suffix else "an image without an extension"
        raise ImageError(f"{path}: Pillow cannot write {what} (use .jpg or .png)")
    if fmt == "JPEG":
        save_kwargs.setdefault("quality", 95)
    try:
        with atomic_write(path, overwrite=overwrite) as f:
            img.save(f, format=fmt, **save_kwargs)
    except OSError as e:
        raise ImageWriteError(f"{path}: cannot write image ({e})") from None


THUMBNAIL_SIDE = 256  # longer side of the style thumbnails model files carry


def style_thumbnail(image: torch.Tensor, side: int = THUMBNAIL_SIDE) -> torch.Tensor:
    """(3, H, W) uint8 -> JPEG bytes as a 1-D uint8 tensor, longer side at most ``side``.

    A tensor, not ``bytes``: model files load with ``torch.load(weights_only=True)``.
    """
    img = tensor_to_pil(image)
    img.thumbnail((side, side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)


def decode_thumbnail(data: torch.Tensor) -> torch.Tensor | None:
    """A :func:`style_thumbnail` back to (3, H, W) uint8; None if it is not a JPEG, or
    its header declares a picture far larger than a thumbnail (a 600-byte file can
    declare 16000x16000: gigabytes once decoded)."""
    try:
        with Image.open(io.BytesIO(data.numpy().tobytes())) as img:
            if max(img.size) > 4 * THUMBNAIL_SIDE:  # read from the header, nothing decoded
                return None
            return pil_to_tensor(to_rgb(img))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None
