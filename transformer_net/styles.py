"""The style catalogue: which paintings a run trains, where their files come from.

A single-style run (Johnson et al. 2016) has one ``style`` config (``name``, a
local ``image`` or a ``url`` downloaded once into the cache, ``size``). A
multi-style run (``style=multi``, Dumoulin et al. 2017) lists ``style.names``,
entries of ``style.catalog`` (the single-style configs, plus any added with
``+style.catalog.<name>.image=...``), in the order of the network's style indices.

Nothing here changes the config: :func:`style_sources` reads it and
:func:`load_style_images` decodes the files into the tensors the training module
takes as arguments.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import download
from .errors import ConfigError, DownloadError
from .image import load_image


@dataclass
class StyleSource:
    """One style of a run: its name, its image file and the setting that names that file.

    ``path`` is None until :meth:`fetch` downloads ``url`` (a painting not yet in
    the cache); ``setting`` is the override that passes a local file instead.
    """

    name: str
    setting: str  # "style.image" or "style.catalog.<name>.image"
    path: Path | None
    url: str | None = None

    @property
    def offline_setting(self) -> str:
        """The override that replaces the download, with a placeholder path."""
        placeholder = "painting" if self.setting == "style.image" else self.name
        return f"{self.setting}=/path/to/{placeholder}.jpg"

    def fetch(self) -> Path:
        """Download the painting into the cache (once); returns its path."""
        if self.path is not None:
            return self.path
        assert self.url is not None
        try:
            self.path = download.fetch_file(self.url, name=_file_name(self), subdir="styles")
        except DownloadError as e:
            raise DownloadError(
                f"{e} (offline: pass {self.setting}=/path/to/painting.jpg)", network=e.network
            ) from None
        return self.path


def style_sources(style: Mapping[str, Any]) -> list[StyleSource]:
    """The styles of a ``style`` config, in the order of the network's style indices.

    Checks the names (known, not repeated) before anything is downloaded; a
    painting already in the cache needs no network.
    """
    if "names" not in style:
        entries = [(str(style["name"]), style, "style.image")]
    else:
        names = [str(name) for name in style["names"]]
        catalog = style.get("catalog") or {}
        _check_names(names, catalog)
        entries = [(name, catalog[name], f"style.catalog.{name}.image") for name in names]
    sources = []
    for name, entry, setting in entries:
        if entry.get("image"):
            sources.append(StyleSource(name, setting, Path(str(entry["image"])).expanduser()))
            continue
        url = entry.get("url")
        if not url:
            raise ConfigError(f"style {name!r} has neither style.image nor style.url")
        source = StyleSource(name, setting, None, str(url))
        cached = download.cache_dir() / "styles" / _file_name(source)
        source.path = cached if cached.is_file() else None  # downloaded by an earlier run
        sources.append(source)
    return sources


def _check_names(names: Sequence[str], catalog: Mapping[str, Any]) -> None:
    if not names:
        raise ConfigError("style.names is empty: list the styles to train")
    if len(set(names)) != len(names):
        raise ConfigError(f"style.names lists a style twice: {list(names)}")
    for name in names:
        if name not in catalog:
            raise ConfigError(
                f"style.names: unknown style {name!r}; known: {', '.join(catalog)} "
                f"(add a painting with +style.catalog.{name}.image=/path/painting.jpg)"
            )


def _file_name(source: StyleSource) -> str:
    return f"{source.name}{Path(str(source.url)).suffix or '.jpg'}"


def load_style_images(paths: Sequence[Path], size: int | None) -> list[torch.Tensor]:
    """Decode each style image as (3, H, W) uint8 RGB, its longer side ``size`` (None: as is)."""
    return [load_image(path, max_side=size) for path in paths]
