"""What a model is, and where the models are: for ``stylize.py --info``, sheets and the app.

:func:`describe` reads a model's metadata without running it: its name, the
styles with their thumbnails (model files written by training carry small
JPEGs of the paintings, ``callbacks.ExportModelFile``), the architecture, the
parameter count and the training settings. :func:`find_models` lists the models
under folders: PyTorch model files, ONNX and TorchScript exports, and model
folders (``config.json`` + ``model.safetensors``). Training checkpoints
(``.ckpt``, with optimizer state) are skipped: the model file exported beside
them holds the same network.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .checkpoint import (
    MAX_STYLES,
    check_meta,
    is_model_folder,
    read_model_file,
    resolve_model_path,
    style_thumbnails,
)
from .errors import ModelFileError
from .image import decode_thumbnail

MODEL_SUFFIXES = (".pth", ".pt", ".onnx")


@dataclass
class ModelInfo:
    """A model's description; ``thumbnails[k]`` is style k's painting, (3, H, W) uint8 or None."""

    path: Path
    name: str
    kind: str  # "torch", "onnx", "torchscript" or "folder"
    style_names: list[str]
    thumbnails: list[torch.Tensor | None]
    model_args: dict[str, Any] | None = None
    parameters: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_styles(self) -> int:
        return len(self.style_names)

    def summary(self) -> dict[str, Any]:
        """JSON-ready: everything but the thumbnails."""
        meta = {k: v for k, v in self.meta.items() if k != "style_thumbnails"}
        return {
            "path": str(self.path),
            "name": self.name,
            "kind": self.kind,
            "styles": self.style_names,
            "architecture": self.model_args,
            "parameters": self.parameters,
            "training": meta,
        }


def describe(path: str | os.PathLike) -> ModelInfo:
    """The model at ``path`` (a file, a model folder, ``hf://user/name``) described from its
    metadata; a bad file: ModelFileError."""
    from .runners import model_file_kind  # runners imports onnx-related code lazily too

    path = resolve_model_path(path)
    kind = "folder" if is_model_folder(path) else model_file_kind(path)
    if kind == "onnx":
        return _describe_onnx(path)
    if kind == "torchscript":
        return ModelInfo(path, path.stem, kind, [path.stem], [None])
    args, state_dict, meta = read_model_file(path)
    return _info(path, kind, meta, args, sum(t.numel() for t in state_dict.values()))


def _info(
    path: Path, kind: str, meta: dict, args: dict | None, parameters: int | None
) -> ModelInfo:
    num_styles = int((args or {}).get("num_styles") or 1)
    names = meta.get("styles")
    if not (isinstance(names, list) and len(names) == num_styles):
        single = meta.get("style") or meta.get("name")
        names = [str(single)] if num_styles == 1 and single else None
    name = str(meta.get("style") or meta.get("name") or _stem(path))
    names = [str(n) for n in names] if names else [f"style {k}" for k in range(num_styles)]
    if num_styles == 1 and names == ["style 0"]:
        names = [name]
    return ModelInfo(
        path, name, kind, names, _thumbnails(meta, num_styles), args, parameters, dict(meta)
    )


def _stem(path: Path) -> str:
    return path.name if path.is_dir() else path.stem


def _thumbnails(meta: dict, count: int) -> list[torch.Tensor | None]:
    """The paintings, decoded: (3, H, W) uint8 each, or None."""
    return [
        decode_thumbnail(jpeg) if jpeg is not None else None
        for jpeg in style_thumbnails(meta, count)
    ]


def _describe_onnx(path: Path) -> ModelInfo:
    """ONNX exports carry the model file's arguments and metadata as JSON strings.

    The graph runs whatever they say, so metadata that does not parse or check
    (too deep, a huge integer, a count above MAX_STYLES, fields of the wrong type)
    is ignored, as without the ``onnx`` package: the model is described by its name.
    """
    props = _onnx_metadata(path)
    try:
        args = json.loads(props["model_args"]) if "model_args" in props else None
        meta = json.loads(props["meta"]) if "meta" in props else {}
    except (RecursionError, ValueError):  # JSONDecodeError; an integer of 4300+ digits
        args, meta = None, {}
    if not isinstance(meta, dict):
        meta = {}
    try:
        check_meta(path, meta)
    except ModelFileError:
        meta = {}
    styles = args.get("num_styles", 1) if isinstance(args, dict) else None
    if isinstance(styles, bool) or not isinstance(styles, int) or not 1 <= styles <= MAX_STYLES:
        args = None  # not a count to build names and thumbnails from
    if "quantized" in props:
        meta["quantized"] = props["quantized"]
    return _info(path, "onnx", meta, args, None)


def _onnx_metadata(path: Path) -> dict[str, str]:
    try:
        import onnx
    except ImportError:
        return {}  # described by its name only
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - onnx raises DecodeError, OSError, ...
        raise ModelFileError(f"{path}: not an ONNX model onnx can read ({e})") from None
    return {p.key: p.value for p in model.metadata_props}


def find_models(folders: Iterable[str | os.PathLike]) -> list[Path]:
    """Model files and model folders under ``folders`` (files count as themselves).

    In the order given; a folder's models sorted by path. ``hf://user/name``
    paths are downloaded (``hub.py``). Hidden folders are not searched, nor
    ``.ckpt`` files; a missing folder is a ModelFileError naming it.
    """
    found: list[Path] = []
    for name in folders:
        root = resolve_model_path(name)  # hf://user/name: its downloaded folder
        if not root.exists():
            raise ModelFileError(f"{root}: no such file or folder")
        if root.is_file() or is_model_folder(root):
            found.append(root)
            continue
        below = []
        for dirpath, dirnames, filenames in os.walk(root):
            here = Path(dirpath)
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for d in list(dirnames):
                if is_model_folder(here / d):
                    below.append(here / d)
                    dirnames.remove(d)  # its files are the folder's, not models of their own
            below += [here / f for f in filenames if f.lower().endswith(MODEL_SUFFIXES)]
        found += sorted(below)
    return list(dict.fromkeys(found))  # in the order asked, each folder's sorted


def describe_all(paths: Sequence[Path]) -> tuple[list[ModelInfo], list[tuple[Path, str]]]:
    """Describe each; files that are not models go to the second list with the reason."""
    infos, skipped = [], []
    for path in paths:
        try:
            infos.append(describe(path))
        except ModelFileError as e:
            skipped.append((path, str(e)))
    return infos, skipped


def unique_labels(infos: Sequence[ModelInfo]) -> list[str]:
    """Each model's name, with its folder added where two models share a name."""
    counts: dict[str, int] = {}
    for info in infos:
        counts[info.name] = counts.get(info.name, 0) + 1
    labels = []
    for info in infos:
        where = info.path.parent.name if info.kind != "folder" else info.path.name
        labels.append(info.name if counts[info.name] == 1 else f"{info.name} ({where})")
    return labels
