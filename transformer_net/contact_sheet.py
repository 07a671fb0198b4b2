"""Labelled contact sheets: images side by side, each with its name above it.

One layout for every place that compares images: ``evaluate.py`` (content |
style | feed-forward | Gatys), ``stylize.py sheet`` (one photo through several
models), the app's "All styles" and the sample sheet of a shared model folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from torchvision.utils import make_grid

from .catalog import ModelInfo, unique_labels
from .image import pil_to_tensor, tensor_to_pil

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
