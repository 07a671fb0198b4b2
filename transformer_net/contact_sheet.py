"""Labelled contact sheets: images side by side, each with its name above it.

One layout for every place that compares images: ``evaluate.py`` (content |
style | feed-forward | Gatys), ``stylize.py sheet`` (one photo through several
models), the app's "All styles" and the sample sheet of a shared model folder.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from torchvision.utils import make_grid

from .catalog import ModelInfo, unique_labels
from .color import postprocess
from .errors import TransformerNetError
from .image import pil_to_tensor, tensor_to_pil
from .inference import Stylizer

LABEL_HEIGHT = 18  # pixels above each panel for its label
MAX_LABEL = 40  # characters; longer labels are shortened with an ellipsis


def contact_sheet(
    panels: Sequence[tuple[str, torch.Tensor]], height: int, *, columns: int | None = None
) -> Image.Image:
    """Label each (3, H, W) uint8 panel and lay them out ``height`` pixels high.

    Panels keep their aspect ratio, centered in boxes as wide as the widest one
    (a style image's shape may differ from the photo's), on white; ``columns``
    per row (default: all in one row).
    """
    if not panels:
        raise ValueError("a contact sheet needs at least one panel")
    pils = [tensor_to_pil(tensor) for _, tensor in panels]
    pils = [img.resize((max(1, round(img.width * height / img.height)), height)) for img in pils]
    width = max(img.width for img in pils)
    boxes = []
    for (label, _), img in zip(panels, pils, strict=True):
        box = Image.new("RGB", (width, height + LABEL_HEIGHT), "white")
        box.paste(img, ((width - img.width) // 2, LABEL_HEIGHT))
        ImageDraw.Draw(box).text((4, 3), _short(label), fill="black")
        boxes.append(pil_to_tensor(box))  # (3, LABEL_HEIGHT + height, width) uint8
    grid = make_grid(torch.stack(boxes), nrow=columns or len(boxes), padding=4, pad_value=255)
    return tensor_to_pil(grid)


def _short(label: str) -> str:
    return label if len(label) <= MAX_LABEL else label[: MAX_LABEL - 3] + "..."


def sheet_tiles(infos: Sequence[ModelInfo]) -> list[tuple[str, Path, int | None]]:
    """The tiles of "one photo through these models": (label, model path, style index).

    One tile per model, labelled with its name (:func:`catalog.unique_labels`),
    or for a multi-style model one per style (``"name: style"``; index set).
    ``stylize.py sheet`` and the app's "All styles" lay out the same tiles.
    """
    tiles = []
    for label, info in zip(unique_labels(infos), infos, strict=True):
        if info.num_styles == 1:
            tiles.append((label, info.path, None))
        else:
            tiles += [(f"{label}: {name}", info.path, k) for k, name in enumerate(info.style_names)]
    return tiles


@dataclass
class Tile:
    """One model's (or style's) tile of a sheet: the stylized photo, or why there is none."""

    label: str
    path: Path
    image: torch.Tensor | None  # (3, H, W) uint8; None when the model failed
    error: str | None
    runtime: str | None
    seconds: float


def stylized_tiles(
    photo: torch.Tensor,
    infos: Sequence[ModelInfo],
    open_tile: Callable[[Path, int | None], Stylizer],
    *,
    strength: float = 1.0,
    preserve_color: bool = False,
) -> Iterator[Tile]:
    """The photo ((3, H, W) uint8) through each of :func:`sheet_tiles`, one tile at a time.

    ``open_tile(path, style)`` gives the stylizer (a cache, or a fresh one so that
    memory stays that of one model). A model that fails (a :class:`TransformerNetError`)
    gives a tile with ``error`` set and the others go on, as ``stylize.py sheet``
    and the app both want. The post-processing is ``stylize.py``'s.
    """
    for label, path, style in sheet_tiles(infos):
        start = time.perf_counter()
        try:
            stylizer = open_tile(path, style)
            image = postprocess(
                photo, stylizer(photo), strength=strength, preserve_color=preserve_color
            )
        except TransformerNetError as e:
            yield Tile(label, path, None, str(e), None, time.perf_counter() - start)
            continue
        yield Tile(label, path, image, None, stylizer.runtime, time.perf_counter() - start)
