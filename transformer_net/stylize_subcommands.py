"""``stylize.py info`` and ``stylize.py sheet``: commands about models, beside stylizing.

- ``info MODEL``: what a model file says about itself (architecture, parameter
  count, styles, training settings, last losses; ``catalog.describe``) and the
  runtimes this machine offers, with the one ``--runtime auto`` would pick.
- ``sheet``: one photo through several models (files, or folders searched for
  models), as a labelled contact sheet (``contact_sheet.py``): the quickest way
  to compare styles. Multi-style models give one tile per style.

Both take ``--json`` for scripts. Exit codes as ``stylize.py``'s: 0 done, 1 some
work failed (a model that would not load or run: the sheet has the others),
2 bad usage.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from .catalog import ModelInfo, describe, describe_all, find_models
from .contact_sheet import contact_sheet, sheet_tiles, stylized_tiles
from .errors import ConfigError, OutputExistsError, TransformerNetError, UntrustedModelError
from .image import ImageBytes, load_image, save_image, writable_format
from .inference import default_threads
from .runners import available_runtimes, open_stylizer, pick_runtime

# The option that loads TorchScript files (they run code when loaded: runners.py).
TRUST_TORCHSCRIPT = "--trust-torchscript"


def add_trust_option(p: argparse.ArgumentParser) -> None:
    """``--trust-torchscript``, for the commands that load models (stylizing, ``sheet``)."""
    p.add_argument(
        TRUST_TORCHSCRIPT,
        action="store_true",
        help="load TorchScript files (legacy .pt exports), which run code from the file when "
        "loaded: only files from a source you trust",
    )


def with_trust_hint(error: UntrustedModelError) -> UntrustedModelError:
    """The library's refusal of a TorchScript file, with the option that loads it."""
    return UntrustedModelError(f"{error} (pass {TRUST_TORCHSCRIPT} to load it)")


def run_info(args: argparse.Namespace) -> int:
    info = describe(args.model)
    auto = _auto_runtime(info)
    if args.json:
        write_stdout(to_json({**info.summary(), "runtimes": available_runtimes(), "auto": auto}))
        return 0
    lines = [*info_lines(info), "runtimes here:"]
    lines += [f"  {runtime}" for runtime in available_runtimes()]
    lines.append(f"  --runtime auto runs it in: {auto}")
    write_stdout("\n".join(lines))
    return 0


def _auto_runtime(info: ModelInfo) -> str:
    try:
        return pick_runtime(info.path)
    except TransformerNetError as e:
        return f"none ({e})"


def info_lines(info: ModelInfo) -> list[str]:
    """The human description of a model, line by line."""
    kinds = {
        "torch": "PyTorch model file",
        "onnx": "ONNX export",
        "torchscript": f"TorchScript export (legacy; runs code when loaded: {TRUST_TORCHSCRIPT})",
        "folder": "model folder (safetensors)",
    }
    meta = info.meta
    kind = kinds.get(info.kind, info.kind)
    if meta.get("source") == "lightning checkpoint":
        kind = "Lightning training checkpoint (its network)"
    lines = [f"{info.path}: {kind}", f"  name: {info.name}"]
    if info.model_args:
        args = ", ".join(f"{k} {v}" for k, v in info.model_args.items())
        lines.append(f"  architecture: TransformerNet ({args})")
    if info.parameters is not None:
        lines.append(f"  parameters: {info.parameters:,}")
    images = meta.get("style_images", meta.get("style_image"))
    images = [images] if isinstance(images, str) else images or []
    lines.append(f"  styles: {info.num_styles}")
    for k, name in enumerate(info.style_names):
        source = f" ({images[k]})" if k < len(images) else ""
        lines.append(f"    {k} {name}{source}")
    training = []
    if meta.get("global_step") is not None:
        training.append(f"{meta['global_step']} steps")
    if meta.get("image_size"):
        training.append(f"{meta['image_size']} px crops")
    if meta.get("created"):
        training.append(f"written {meta['created']}")
    if meta.get("quantized"):
        training.append(f"quantized: {meta['quantized']}")
    if training:
        lines.append(f"  training: {', '.join(training)}")
    if isinstance(meta.get("loss"), dict):
        loss = ", ".join(f"{k} {v}" for k, v in meta["loss"].items())
        lines.append(f"  loss: {loss}")
    if isinstance(meta.get("metrics"), dict) and meta["metrics"]:
        metrics = ", ".join(f"{k} {v:.4g}" for k, v in meta["metrics"].items())
        lines.append(f"  last losses: {metrics}")
    return lines


def run_sheet(args: argparse.Namespace) -> int:
    """Check, find the models, stylize the photo with each, write the sheet."""
    out = Path(args.output)
    to_stdout = args.output == "-"
    if to_stdout and args.json:
        raise ConfigError("--json and --output - both write to stdout; choose one")
    if not to_stdout:
        if writable_format(out) is None:
            raise ConfigError(f"--output {out}: not an image file name (use .jpg or .png)")
        if args.input != "-" and _same_file(out, Path(args.input)):  # even with --overwrite
            raise ConfigError(f"{out}: output would overwrite the input")
        if out.exists() and not args.overwrite:
            raise ConfigError(f"{out}: already exists (pass --overwrite to replace it)")
    source = ImageBytes.from_stdin("--input -") if args.input == "-" else Path(args.input)
    photo = load_image(source, max_side=args.size)  # (3, H, W) uint8
    infos, failed = describe_all(find_models(args.models))
    for path, reason in failed:
        _failure(args, path, reason)
    if not infos:
        what = "no usable model (see above)" if failed else "no model found"
        raise ConfigError(f"--models {' '.join(args.models)}: {what}")
    threads = args.threads or default_threads()
    torch.set_num_threads(threads)
    panels = [(source.name, photo)]

    def open_tile(path: Path, style: int | None):  # opened per tile: memory of one model
        options = {} if style is None else {"style": style}
        try:
            return open_stylizer(
                path,
                device=args.device,
                runtime=args.runtime,
                threads=threads,
                trust_torchscript=args.trust_torchscript,
                **options,
            )
        except UntrustedModelError as e:
            raise with_trust_hint(e) from None

    tiles = stylized_tiles(
        photo, infos, open_tile, strength=args.strength, preserve_color=args.preserve_color
    )
    # Seconds per model on a CPU: a bar on stderr for people (scripts read --json).
    bar = tqdm(
        tiles,
        total=len(sheet_tiles(infos)),
        desc="sheet",
        unit="tile",
        file=sys.stderr,
        disable=args.json,
        leave=False,
        mininterval=0.5 if sys.stderr.isatty() else 5.0,
    )
    for tile in bar:
        if tile.error is not None:
            bar.clear()
            failed.append((tile.path, tile.error))
            _failure(args, tile.path, tile.error)
            continue
        panels.append((tile.label, tile.image))
        ms = round(tile.seconds * 1000, 3)
        _emit(
            args,
            "tile",
            model=str(tile.path),
            label=tile.label,
            runtime=tile.runtime,
            milliseconds=ms,
        )
    if len(panels) == 1:
        print("error: no model could stylize the photo; no sheet written", file=sys.stderr)
        return 1
    sheet = contact_sheet(panels, height=photo.shape[1], columns=args.columns)
    if to_stdout:
        buffer = io.BytesIO()  # whole, then written: a failed encode leaves stdout empty
        sheet.save(buffer, format="PNG")
        write_stdout(buffer.getvalue())
    else:
        try:  # not over a sheet another run wrote meanwhile (checked above, before the work)
            save_image(sheet, out, overwrite=args.overwrite)
        except OutputExistsError as e:
            raise OutputExistsError(f"{e} (--overwrite replaces it)") from None
    code = 1 if failed else 0
    tiles = len(panels) - 1
    _emit(
        args,
        "summary",
        output=args.output,
        tiles=tiles,
        failed=len(failed),
        size=list(sheet.size),
        exit_code=code,
    )
    if not (args.json or to_stdout):
        write_stdout(f"{out}: {len(panels) - 1} tile(s), {sheet.width}x{sheet.height}")
    return code


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one file (``./x/../p.png``, a link, a hard link)."""
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one does not exist (yet): not the same file
        return False


def _failure(args: argparse.Namespace, path: Path, reason: str) -> None:
    print(f"error: {reason}", file=sys.stderr)
    _emit(args, "error", model=str(path), error=reason)


def _emit(args: argparse.Namespace, kind: str, **fields) -> None:
    if args.json:
        print_json(kind, **fields)


def print_json(kind: str, **fields) -> None:
    """One ``--json`` object on a line of stdout: ``{"type": kind, ...fields}``."""
    write_stdout(to_json({"type": kind, **fields}))


def to_json(obj: Any) -> str:
    """``obj`` as strict JSON: NaN and infinities (which Python's json writes as the
    non-JSON ``NaN``/``Infinity``) become null."""
    return json.dumps(_finite(obj), allow_nan=False)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


class StdoutError(OSError):
    """Standard output took no more (a full device, an I/O error); ``main`` reports it in
    one line and stops. Not a :class:`TransformerNetError`: no per-input handler may
    catch it and go on writing to the same stdout. A closed pipe stays a
    ``BrokenPipeError`` (exit 141, quietly, as after SIGPIPE)."""


def write_stdout(data: str | bytes) -> None:
    """A line of text (a newline added) or bytes (as they are) on stdout, flushed now, so
    that a full device fails here, not at the interpreter's exit."""
    try:
        if isinstance(data, bytes):
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        else:
            sys.stdout.write(data + "\n")
            sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as e:
        raise StdoutError(e.errno, e.strerror or str(e)) from None
