"""Model folders: a trained network in the Hugging Face layout, with a model card.

A model file (``.pth``) is for this program; a model folder is for sharing. It holds

- ``model.safetensors``: the weights only (``safetensors_file.py``): a file from a
  stranger cannot run code when loaded, by construction of the format;
- ``config.json``: the arguments that rebuild the network, the styles, the loss
  settings and VGG convention, the training steps, images and command, the
  final losses, the versions that wrote it, and the list of the folder's files;
- ``README.md``: the model card, Markdown with YAML front matter following the
  Hub's model-card conventions (``library_name``, ``tags``, ``pipeline_tag``,
  ``license``), which the Hub renders as the repository's page;
- ``style.jpg`` (``style_0.jpg``, ... for several styles): the painting, small;
- ``samples.jpg``: photos and their stylized versions, when there is one.

Training writes one (``callbacks.WriteModelFolder``), ``scripts/export_model.py
--format folder`` makes one from any model file or checkpoint, and every loader
reads one (``checkpoint.read_model_file``: the same tensors as the ``.pth``).
``scripts/publish_model.py`` uploads it. A folder is written atomically (a temp
folder renamed into place), so an interrupted write never leaves half of one.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from . import __version__
from .atomic import atomic_folder, atomic_write_bytes, check_writable, replace_files
from .checkpoint import (
    CONFIG_FILE,
    FORMAT,
    FORMAT_VERSION,
    WEIGHTS_FILE,
    check_meta,
    read_config,
    read_model_file,
    resolve_model_path,
    style_thumbnails,
)
from .errors import ConfigError, ImageError, ModelFileError
from .image import load_image
from .safetensors_file import encode

CARD_FILE = "README.md"
SAMPLES_FILE = "samples.jpg"
LIBRARY = "transformer-net"
PIPELINE_TAG = "image-to-image"
TAGS = ("style-transfer", "neural-style-transfer", "fast-neural-style", "image-to-image")
# The Hub's id of the licence of the weights (its list of licences); the
# painting's rights stay its owner's whatever this says (the card says so).
DEFAULT_LICENSE = "mit"
# The network's convention for each loss preprocessing (loss.py), for people
# reusing the numbers in config.json without this program.
_PREPROCESSING = {
    "caffe": "RGB 0-255 -> BGR 0-255 minus the mean (103.939, 116.779, 123.68)",
    "torchvision": "RGB 0-255 -> RGB 0-1 normalized with the ImageNet mean and std",
}
# Keys config.json holds besides the model file's metadata (rewritten on each save).
_WRITTEN = ("format", "version", "library_name", "model_args", "files", "style_image_files")
# The files an export writes besides the three main ones (see _style_images, SAMPLES_FILE).
_EXPORT_NAME = re.compile(r"style(_[0-9]+)?\.jpg|samples\.jpg")

ModelSource = str | os.PathLike | tuple[Mapping, Mapping, Mapping]


def save_model_folder(
    source: ModelSource,
    folder: str | os.PathLike,
    *,
    license: str = DEFAULT_LICENSE,
    sample_sheet: str | os.PathLike | Image.Image | None = None,
    evaluation: str | os.PathLike | None = None,
    training: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the model folder of ``source`` to ``folder``; returns ``folder``.

    ``source``: any model file or checkpoint that ``checkpoint.read_model_file``
    reads (a model folder too), or its ``(model_args, state_dict, meta)``.
    ``sample_sheet``: the image shown as the samples (training's preview.jpg, or
    one made by ``scripts/export_model.py --samples PHOTOS``). ``evaluation``:
    ``scripts/evaluate.py``'s output folder or its ``evaluation.md``, whose tables
    go into the card. ``training``: what the run adds to config.json's
    ``training`` (command, batch size, images). An existing ``folder`` is replaced
    only if it is empty, or a model folder and ``overwrite`` is set.
    """
    folder = Path(folder)
    if isinstance(source, tuple):
        args, state_dict, meta = (dict(part) for part in source)
    else:
        args, state_dict, meta = read_model_file(source)
    _check_target(folder, overwrite=overwrite)
    state_dict = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    files: dict[str, bytes] = {}
    style_files = _style_images(meta, int(args.get("num_styles") or 1))
    files.update(style_files)
    if isinstance(sample_sheet, Image.Image):
        files[SAMPLES_FILE] = _jpeg(sample_sheet)
    elif sample_sheet is not None:
        files[SAMPLES_FILE] = _jpeg_file(Path(sample_sheet))
    config = folder_config(args, meta, training=training, style_files=list(style_files))
    evaluation_md = _evaluation(evaluation) if evaluation is not None else None
    card = model_card(
        config,
        license=license,
        has_samples=SAMPLES_FILE in files,
        evaluation=evaluation_md,
    )
    files[WEIGHTS_FILE] = encode(state_dict, {"format": "pt"})  # "pt": the Hub's convention
    files[CARD_FILE] = card.encode()
    config["files"] = sorted([*files, CONFIG_FILE])
    files[CONFIG_FILE] = (json.dumps(config, indent=2, ensure_ascii=False) + "\n").encode()
    if folder.is_dir() and any(folder.iterdir()):
        _replace_in(folder, files)
    else:  # a new folder appears whole, in one rename
        with atomic_folder(folder) as tmp:
            for name, data in files.items():
                atomic_write_bytes(tmp / name, data)
    return folder


def _replace_in(folder: Path, files: dict[str, bytes]) -> None:
    """The model folder ``folder`` updated in place: its files replaced by ``files``, the
    ones an earlier export listed and this one does not write removed, the rest kept.

    A model folder is often a clone of its Hub repository (``.git/``,
    ``.gitattributes``) or holds the user's own files: replacing the whole folder
    deleted them, and refusing would make updating a published model a chore, so
    only what this export writes changes. The files are staged before any replaces
    its namesake (``atomic.replace_files``), config.json last: a crash or a full
    disk while writing leaves the old folder whole.
    """
    for name in files:
        if (folder / name).is_dir() and not (folder / name).is_symlink():
            raise ConfigError(
                f"{folder / name}: a folder, where the export writes a file; move it away"
            )
    stale = [n for n in _earlier_export(folder) if n not in files]
    replace_files(folder, files)  # in their order: config.json, added last, goes last
    for name in stale:
        path = folder / name
        if path.is_file() or path.is_symlink():
            path.unlink(missing_ok=True)


def _earlier_export(folder: Path) -> list[str]:
    """The files an earlier export wrote into ``folder`` that a later one may not write
    (paintings, samples): what its config.json lists, of the names exports use, never
    the user's files that a hand-edited or hostile config.json lists too."""
    try:
        listed = listed_files(folder)
    except ModelFileError:
        return []
    return [n for n in listed if _EXPORT_NAME.fullmatch(n)]


def read_model_folder(folder: str | os.PathLike) -> tuple[dict, dict, dict]:
    """``(model_args, state_dict, meta)`` of a model folder (local or ``hf://``), as
    ``checkpoint.read_model_file`` gives them for a model file."""
    path = resolve_model_path(folder)
    if not path.is_dir():
        raise ModelFileError(f"{folder}: not a folder (a model folder holds {CONFIG_FILE} ...)")
    return read_model_file(path)


def is_our_folder(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a config.json written by this program (a model folder)."""
    try:  # bounded and checked: a hostile config.json is not ours, never a traceback
        config = read_config(Path(folder) / CONFIG_FILE)
    except ModelFileError:
        return False
    return config.get("format") == FORMAT


def missing_files(folder: str | os.PathLike) -> list[str]:
    """What a complete model folder lacks: the three main files, and every file its
    config.json lists (empty: complete, and ready to publish)."""
    folder = Path(folder)
    missing = [n for n in (CONFIG_FILE, WEIGHTS_FILE, CARD_FILE) if not (folder / n).is_file()]
    if CONFIG_FILE not in missing:
        listed = listed_files(folder)
        missing += [n for n in listed if n not in missing and not (folder / n).is_file()]
    return missing


def listed_files(folder: str | os.PathLike) -> list[str]:
    """The files config.json says the folder holds (what publishing uploads)."""
    path = Path(folder) / CONFIG_FILE
    config = read_config(path)  # ModelFileError for what is not JSON, too large or deep
    check_meta(path, config)
    listed = config.get("files")
    if not (isinstance(listed, list) and all(isinstance(n, str) for n in listed)):
        raise ModelFileError(f"{path}: 'files' is not a list of file names")
    # Names only: a config.json from elsewhere must not make publishing read ../secrets.
    bad = [n for n in listed if Path(n).name != n or n in ("", ".", "..")]
    if bad:
        raise ModelFileError(f"{path}: 'files' names {bad[0]!r}, not a file of the folder")
    return listed


def folder_config(
    args: Mapping,
    meta: Mapping,
    *,
    training: Mapping[str, Any] | None = None,
    style_files: Sequence[str] = (),
) -> dict:
    """config.json's content (without ``files``): the model file's metadata, made JSON,
    plus the architecture, VGG convention, training facts and versions."""
    plain = {k: _plain(v) for k, v in meta.items() if k not in (*_WRITTEN, "style_thumbnails")}
    plain = {k: v for k, v in plain.items() if v is not _SKIP}
    loss = plain.get("loss") if isinstance(plain.get("loss"), dict) else {}
    run = dict(plain.get("training") or {})
    run.update({k: _plain(v) for k, v in (training or {}).items()})
    if plain.get("global_step") is not None:
        run.setdefault("steps", plain["global_step"])
    if plain.get("image_size"):
        run.setdefault("image_size", plain["image_size"])
    if run.get("steps") and run.get("batch_size"):  # images seen, all devices together
        factor = int(run.get("devices") or 1) * int(run.get("accumulate_grad_batches") or 1)
        run.setdefault("images", int(run["steps"]) * int(run["batch_size"]) * factor)
    config = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "library_name": LIBRARY,
        "model_args": _plain(dict(args)),
        **plain,
        "style_image_files": list(style_files),
        "image": {  # what the network takes and gives (stylize.py does this for you)
            "input": "(batch, 3, height, width) float32 RGB in 0-255, any size",
            "output": "the same shape and range (clamp to 0-255 and round)",
        },
        "training": run,
        "versions": {"transformer_net": __version__, "torch": torch.__version__.split("+")[0]},
    }
    if loss:
        preprocessing = str(loss.get("preprocessing", ""))
        config["vgg"] = {
            "weights": Path(str(loss.get("vgg_weights", "caffe"))).name,
            "preprocessing": preprocessing,
            "convention": _PREPROCESSING.get(preprocessing, "see transformer_net/loss.py"),
        }
    if "styles" not in config:
        config["styles"] = [str(meta["style"])] if meta.get("style") else []
    return config


def model_card(
    config: Mapping,
    *,
    license: str = DEFAULT_LICENSE,
    has_samples: bool = False,
    evaluation: str | None = None,
) -> str:
    """README.md of a model folder: YAML front matter (the Hub's model-card metadata),
    then what the model is, how to use it, how it was trained and its licence."""
    from omegaconf import OmegaConf  # Hydra's dependency: YAML without another package

    styles = [str(s) for s in config.get("styles") or []]
    name = str(config.get("style") or (styles[0] if len(styles) == 1 else "multi-style"))
    front = {
        "library_name": LIBRARY,
        "license": license,
        "pipeline_tag": PIPELINE_TAG,
        "tags": [*TAGS, LIBRARY, "pytorch", "safetensors"],
    }
    yaml = OmegaConf.to_yaml(OmegaConf.create(front)).strip()
    run = config.get("training") or {}
    args = config.get("model_args") or {}
    lines = [f"---\n{yaml}\n---", ""]
    lines += [
        f"# {name}: fast neural style transfer",
        "",
        "A feed-forward network (Johnson et al. 2016, *Perceptual Losses for Real-Time Style "
        "Transfer and Super-Resolution*) that paints a photo in the style of "
        + (f"**{styles[0]}**" if len(styles) == 1 else f"{len(styles)} paintings")
        + " in one forward pass, trained with transformer-net (PyTorch).",
        "",
    ]
    lines += ["## Style", ""]
    files = list(config.get("style_image_files") or [])
    if files:
        for style, file in zip(styles or [name] * len(files), files, strict=False):
            lines.append(f"![style image: {style}]({file})")
        lines.append("")
    else:
        lines += ["No style image was recorded with this model.", ""]
    lines += ["## Samples", ""]
    if has_samples:
        lines += [f"![photos and their stylized versions]({SAMPLES_FILE})", ""]
    else:
        lines += [
            "No sample sheet (`scripts/export_model.py --format folder --samples PHOTOS` "
            "makes one).",
            "",
        ]
    lines += _usage(styles)
    lines += _training(config, run, args)
    metrics = config.get("metrics") or run.get("final_losses")
    if isinstance(metrics, Mapping) and metrics:
        lines += ["### Final losses", "", "| value | |", "| --- | ---: |"]
        lines += [f"| `{k}` | {float(v):.4g} |" for k, v in sorted(metrics.items())]
        lines.append("")
    if evaluation:
        lines += ["## Evaluation against Gatys et al.", "", _demote(evaluation).strip(), ""]
    lines += [
        "## Licence",
        "",
        f"The weights: `{license}` (the `license` field above). The style "
        f"image{'s' if len(styles) > 1 else ''} and the photos in the samples are not "
        "covered: their rights are their owners'. Check them before using this model's "
        "outputs for anything but research.",
        "",
        "## Files",
        "",
        f"- `{WEIGHTS_FILE}`: the weights (safetensors: loading it cannot run code)",
        f"- `{CONFIG_FILE}`: architecture, styles, loss settings and VGG convention, training "
        "facts, versions",
        f"- `{CARD_FILE}`: this card",
        *(f"- `{f}`: the style image, small" for f in files),
        *([f"- `{SAMPLES_FILE}`: the sample sheet"] if has_samples else []),
        "",
    ]
    return "\n".join(lines)


def _usage(styles: Sequence[str]) -> list[str]:
    lines = [
        "## Use",
        "",
        "```bash",
        'pip install "transformer-net[hub]"',
        "python stylize.py --model hf://USER/NAME --input photo.jpg --output out.jpg",
        "python stylize.py --model path/to/this/folder --input photo.jpg --output out.jpg",
        "```",
        "",
        "(`hf://USER/NAME` is this repository's id; `@revision` after it picks a branch, tag "
        "or commit.)",
    ]
    if len(styles) > 1:
        listed = ", ".join(f"{k} {s}" for k, s in enumerate(styles))
        lines.append(f"`--style-index N` picks the style: {listed}.")
    return [*lines, ""]


def _training(config: Mapping, run: Mapping, args: Mapping) -> list[str]:
    lines = ["## Training", ""]
    facts = [f"network: `{json.dumps(dict(args))}`"]
    for key, what in (("steps", "steps"), ("images", "images"), ("batch_size", "batch size")):
        if isinstance(run.get(key), int):
            facts.append(f"{what}: {run[key]:,}")
    if run.get("image_size"):
        facts.append(f"crop size: {run['image_size']} px")
    if "init_from" in config:  # recorded by training since 2026-12 (None: random weights)
        facts.append(f"started from: {config['init_from'] or 'random weights'}")
    vgg = config.get("vgg")
    if isinstance(vgg, Mapping):
        facts.append(f"loss network: VGG-16 `{vgg['weights']}`, {vgg['convention']}")
    loss = config.get("loss")
    if isinstance(loss, Mapping):
        keys = ("content_weight", "style_weight", "tv_weight", "grid_weight")
        weights = ", ".join(f"{k} {loss[k]:g}" for k in keys if k in loss)
        facts.append(f"loss weights: {weights}")
    lines += [f"- {fact}" for fact in facts] + [""]
    command = run.get("command")
    if command:
        lines += ["```bash", str(command), "```", ""]
    else:
        lines += ["The training command was not recorded.", ""]
    return lines


def _demote(markdown: str) -> str:
    """Headings one level down, under the card's own section."""
    return "\n".join(f"#{line}" if line.startswith("#") else line for line in markdown.splitlines())


def _evaluation(path: str | os.PathLike) -> str:
    path = Path(path)
    if path.is_dir():
        path = path / "evaluation.md"
    try:
        return path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(
            f"{path}: cannot read the evaluation ({e.strerror or e}); pass the folder that "
            "scripts/evaluate.py --out wrote"
        ) from None


def _check_target(folder: Path, *, overwrite: bool) -> None:
    """ConfigError unless ``folder`` may become the model folder (or be updated, with
    ``overwrite``: only the files an export writes are replaced, see ``_replace_in``)."""
    check_writable(folder)  # read-only, or under a file: one line before any work
    if not folder.exists():
        return
    if not folder.is_dir():
        raise ConfigError(f"{folder}: exists and is not a folder")
    entries = sorted(p.name for p in folder.iterdir())
    if not entries:
        return
    if not is_our_folder(folder):
        shown = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if entries[3:] else "")
        raise ConfigError(
            f"{folder}: holds {shown}: not a transformer-net model folder; refusing to "
            "write into it (choose another path)"
        )
    if not overwrite:
        raise ConfigError(f"{folder}: a model folder already (pass --overwrite to replace it)")


def _style_images(meta: Mapping, num_styles: int) -> dict[str, bytes]:
    """``{file name: JPEG bytes}``: the model's paintings (``checkpoint.style_thumbnails``),
    one per style, or none at all."""
    names = ["style.jpg"] if num_styles == 1 else [f"style_{k}.jpg" for k in range(num_styles)]
    thumbs = style_thumbnails(meta, num_styles)
    if any(t is None for t in thumbs):
        return {}
    return {name: t.numpy().tobytes() for name, t in zip(names, thumbs, strict=True)}


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=88)
    return buffer.getvalue()


def _jpeg_file(path: Path) -> bytes:
    """A sample sheet given as a file: a JPEG as it is, another image re-encoded."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ImageError(f"{path}: cannot read the sample sheet ({e.strerror or e})") from None
    if data.startswith(b"\xff\xd8"):
        return data
    return _jpeg(Image.fromarray(load_image(path).permute(1, 2, 0).numpy()))


_SKIP = object()


def _plain(value: Any) -> Any:
    """``value`` as JSON (dicts, lists, strings, numbers); _SKIP for what JSON cannot hold."""
    if isinstance(value, Mapping):
        out = {str(k): _plain(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not _SKIP}
    if isinstance(value, (list, tuple)):
        items = [_plain(v) for v in value]
        return [v for v in items if v is not _SKIP]
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return _SKIP
