"""The ``stylize.py`` command: apply a style to an image, a video or a folder of them.

Argument parsing, job planning, image and video I/O, and reporting. The
stylizing itself is behind ``inference.Stylizer``: a trained feed-forward
network (Johnson et al. 2016; ``runners.open_stylizer`` picks the runner for the
model file) or Gatys et al.'s optimization (``optimize.GatysStylizer``).
Only the project's own errors (``errors.TransformerNetError``) become one-line
``error: ...`` messages; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import sys
import time
from collections import defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn, TextIO

import torch
from tqdm import tqdm

from .color import check_strength, postprocess
from .errors import ConfigError, OutputExistsError, TransformerNetError, UntrustedModelError
from .image import (
    MAX_PIXELS,
    ImageBytes,
    image_size,
    is_image_file,
    load_image_alpha,
    resized_size,
    save_image,
    tensor_to_pil,
    writable_format,
)
from .inference import Stylizer, bf16_emulation_warning, default_threads
from .runners import RUNTIMES, open_stylizer
from .stylize_subcommands import (
    StdoutError,
    add_trust_option,
    print_json,
    run_info,
    run_sheet,
    with_trust_hint,
    write_stdout,
)
from .tiling import check_tile_size
from .video import stylize_video
from .video_io import VIDEO_EXTENSIONS, is_video_file, require_av, video_frame_size

EXAMPLES = """\
examples:
  python stylize.py --model outputs/starry_night/starry_night.pth --input photo.jpg --output out.jpg
  python stylize.py --model mosaic.pth --input photos/ --output stylized/      # recursive
  python stylize.py --model candy.pth --input big.jpg --output small.jpg --size 1024
  python stylize.py --model udnie.pth --input photo.jpg --output out.png --device cpu
  python stylize.py --model wave.pth --input clip.mp4 --output out.mp4 --size 720 \\
      --temporal-smoothing 0.7                 # video: keeps fps and audio (needs PyAV)
  python stylize.py --method optimize --style starry_night.jpg --input photo.jpg \\
      --output gatys.jpg --size 512 --iterations 300      # slow, no model needed
  python stylize.py --model wave.pth --input panorama.tif --output out.tif --tile-size 1024
  python stylize.py --model multi.pth --input photo.jpg --output out.jpg --style-index 2
  python stylize.py --model multi.pth --input photo.jpg --output mix.jpg --style-mix 0.5,0.5,0
  python stylize.py --model wave.onnx --input photo.jpg --output out.jpg   # onnxruntime
  python stylize.py --model wave_int8.onnx --input photos/ --output out/   # int8 (CPU)
  python stylize.py --model wave.pth --input photo.jpg --output out.jpg --runtime torch
  python stylize.py --model wave.pth --input photos/ --output out/ --threads 4
  python stylize.py --model wave.pth --input photo.jpg --output out.jpg --preserve-color
  python stylize.py --model wave.pth --input photo.jpg --output out.jpg --strength 0.5
  cat photo.jpg | python stylize.py --model wave.pth --input - --output - > out.png
  python stylize.py --model wave.pth --input photos/ --output out/ --json   # for scripts
  python stylize.py sheet --input photo.jpg --models outputs/ --output sheet.jpg
  python stylize.py info outputs/wave/wave.pth

commands (each has its own --help):
  stylize.py [options]      stylize images, folders and videos (this page)
  stylize.py sheet ...      one photo through several models: a labelled contact sheet
  stylize.py info MODEL     what a model file holds and the runtimes available here

exit codes: 0 all done, 1 some inputs failed (the others are written),
2 bad usage (nothing done), 130 interrupted, 141 the reader of stdout went away.

Models: the .pth written by train.py, a Lightning .ckpt from training, a
state dict of the PyTorch examples' fast_neural_style (e.g. its mosaic.pth), or
an .onnx / TorchScript .pt file from scripts/export_model.py (told apart by
their content, whatever the file is called), a model folder (safetensors and
config.json; train.py writes <output_dir>/model), or hf://user/name on the
Hugging Face Hub (pip install "transformer-net[hub]"; docs/sharing.md).
TorchScript files (a legacy export) run code from the file when loaded, so they
load only with --trust-torchscript.
On a CPU, a .pth/.ckpt runs in onnxruntime by default (--runtime auto; faster
there), through an fp32 ONNX export of the file kept in the cache folder and
made again when the file changes.
Existing outputs are skipped unless --overwrite is given. In a folder, inputs
whose outputs would share a name (a.png, a.gif and a.ppm all give a.png) are
never overwritten: a file written under its own name (a.png) keeps it, the
others get their full name plus the output suffix (a.gif.png, a.ppm.png).
Names that differ only in case count as the same (as on macOS and Windows).
"""
# Formats written as-is in folder mode; anything else (e.g. .gif) becomes .png.
_WRITABLE = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
STDIO = "-"  # --input - reads stdin, --output - writes stdout
STDOUT_FORMATS = ["png", "jpg", "webp", "tif", "bmp"]
# Formats that store an alpha channel: transparency of the input is kept there.
_ALPHA_FORMATS = {".png", ".tif", ".tiff", ".webp"}


class OneLineParser(argparse.ArgumentParser):
    """argparse with one-line errors: the usage block would bury the message (--help has it)."""

    error_message: str | None = None  # the last error, for main's --json error object

    def error(self, message: str) -> NoReturn:
        self.error_message = message
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


SHEET_EXAMPLES = """\
examples:
  python stylize.py sheet --input photo.jpg --models outputs/ --output sheet.jpg
  python stylize.py sheet --input photo.jpg --models wave.pth candy.pth --output - > sheet.png
  python stylize.py sheet --input photo.jpg --models outputs/ --output sheet.jpg --columns 4 --json

Models: files (.pth, .ckpt, .onnx, TorchScript .pt) or folders, searched
recursively (training checkpoints, .ckpt, are skipped there: the model file
beside them is the same network). Tiles are labelled with the model's name (its
folder added where two share one); a multi-style model gives one per style.
Exit codes: 0 done, 1 a model failed (the sheet has the others), 2 bad usage.
"""
INFO_EXAMPLES = """\
examples:
  python stylize.py info outputs/starry_night/starry_night.pth
  python stylize.py info wave.onnx --json
"""


def build_sheet_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="stylize.py sheet",
        description="One photo through several models: a labelled contact sheet.",
        epilog=SHEET_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--input", required=True, help="the photo, or - (stdin)")
    p.add_argument("--models", required=True, nargs="+", help="model files and/or folders")
    p.add_argument("--output", required=True, help="the sheet (.jpg, .png, ...), or - (PNG)")
    p.add_argument("--size", type=_side, default=512, help="longer side of each tile (512)")
    p.add_argument("--columns", type=at_least_1, default=None, help="tiles per row (all)")
    p.add_argument("--strength", type=_strength, default=1.0, help="0-1, as for stylizing (1)")
    p.add_argument("--preserve-color", action="store_true", help="keep the photo's colors")
    p.add_argument("--overwrite", action="store_true", help="replace an existing sheet")
    p.add_argument("--json", action="store_true", help="one JSON object per tile, then a summary")
    _add_runtime_options(p)
    add_trust_option(p)
    return p


def build_info_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="stylize.py info",
        description="What a model file holds: architecture, styles, training; runtimes here.",
        epilog=INFO_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", help="model file (.pth, .ckpt, .onnx, TorchScript .pt)")
    p.add_argument("--json", action="store_true", help="one JSON object instead of text")
    return p


COMMANDS = {"sheet": (build_sheet_parser, run_sheet), "info": (build_info_parser, run_info)}


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="stylize.py",
        description="Stylize photos with a trained transformer-net model (one forward pass).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model",
        help="model file (.pth), training checkpoint (.ckpt), .onnx or TorchScript .pt, a model "
        "folder, or hf://user/name[@revision] (docs/sharing.md)",
    )
    p.add_argument(
        "--input", required=True, help="an image, a folder (searched recursively), or - (stdin)"
    )
    p.add_argument(
        "--output",
        required=True,
        help="output image, output folder for a folder input, or - (stdout, PNG or --format)",
    )
    p.add_argument(
        "--format",
        choices=STDOUT_FORMATS,
        default=None,
        help="image format written to stdout with --output - (png)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="for scripts: one JSON object per input on stdout (input, output, size, "
        "milliseconds, runtime), then a summary object",
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument("--size", type=_side, help="resize so that the longer side has SIZE pixels")
    size.add_argument("--scale", type=_scale, help="resize both sides by this factor")
    _add_runtime_options(p)
    _add_model_options(p)
    add_trust_option(p)
    p.add_argument(
        "--io-threads", type=at_least_1, default=4, help="threads decoding/encoding images (4)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--quiet", action="store_true", help="print only errors and the summary")
    v = p.add_argument_group("video (.mp4 .mov .mkv .avi .webm .m4v; needs PyAV)")
    v.add_argument(
        "--batch-size",
        type=at_least_1,
        default=None,
        help="frames per model call (8 on CUDA, else 2)",
    )
    v.add_argument("--crf", type=_crf, default=18, help="H.264 quality, 0-51, lower is better (18)")
    v.add_argument(
        "--temporal-smoothing",
        type=_smoothing,
        default=0.0,
        metavar="A",
        help="0-1: blend each frame with the previous output where the input is still (0: off)",
    )
    _add_optimization_options(p)
    return p


def _add_runtime_options(p: argparse.ArgumentParser) -> None:
    """Where the model runs, in which runtime, with how many CPU threads."""
    p.add_argument(
        "--device", default="auto", help="auto (GPU if available), cpu, cuda, cuda:1, mps"
    )
    p.add_argument(
        "--runtime",
        default="auto",
        choices=RUNTIMES,
        help="auto: the fastest measured: for a .pth/.ckpt on the CPU in fp32, onnxruntime "
        "running an ONNX export of it (made once, cached); else PyTorch. torch: always "
        "PyTorch; onnxruntime: always the cached ONNX export (fp32)",
    )
    p.add_argument(
        "--threads",
        type=thread_count,
        default=None,
        metavar="N",
        help=f"CPU threads of PyTorch and onnxruntime (default: one per physical core, "
        f"{default_threads()} here; at most {max_threads()})",
    )


def _add_model_options(p: argparse.ArgumentParser) -> None:
    """How the model runs (precision, compilation), which style, and the post-processing."""
    p.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16", "fp16"],
        help="auto: the fastest measured: on a GPU fp32, or bf16 with --compile; on a CPU "
        "bf16 where it computes it natively, else fp32",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the model: seconds per new size, then faster (many images of one size)",
    )
    p.add_argument(
        "--cuda-graphs",
        action="store_true",
        help="CUDA: replay a CUDA graph for image sizes that recur (video, same-size photos)",
    )
    styles = p.add_mutually_exclusive_group()
    styles.add_argument(
        "--style-index",
        type=int,
        default=None,
        metavar="K",
        help="multi-style models: use style K (default 0; the startup line lists them)",
    )
    styles.add_argument(
        "--style-mix",
        type=_mix_weights,
        default=None,
        metavar="W,W,...",
        help="multi-style models: one weight per style, normalized to sum 1 (interpolation)",
    )
    p.add_argument(
        "--preserve-color",
        action="store_true",
        help="keep the photo's colors: stylized luminance + photo chrominance (YIQ)",
    )
    p.add_argument(
        "--strength",
        type=_strength,
        default=1.0,
        help="0-1: blend S * stylized + (1 - S) * photo in pixels (default 1)",
    )
    p.add_argument(
        "--tile-size",
        type=_tile_size,
        default=0,
        metavar="N",
        help="0 (default): one pass, tiles only for images too large for memory; "
        "N: always N-pixel tiles (same result as one pass, ~9x slower)",
    )


def _add_optimization_options(p: argparse.ArgumentParser) -> None:
    """--method optimize (Gatys et al. 2016) and its loss and optimizer settings."""
    g = p.add_argument_group(
        "optimization (Gatys et al. 2016)",
        "--method optimize: no model; the image itself is optimized against the training loss",
    )
    g.add_argument("--method", default="feedforward", choices=["feedforward", "optimize"])
    g.add_argument("--style", help="style image (required with --method optimize)")
    g.add_argument("--style-size", type=_side, default=None, help="longer side of the style image")
    g.add_argument(
        "--vgg-weights",
        default="caffe",
        help="caffe (default: Johnson et al.'s VGG-16), imagenet (torchvision's), both "
        "downloaded once, or a .pth file",
    )
    g.add_argument(
        "--preprocessing",
        choices=["torchvision", "caffe"],
        default=None,
        help="input convention of the VGG weights (default: torchvision for imagenet, else caffe)",
    )
    g.add_argument("--content-weight", type=float, default=1.0)
    g.add_argument(
        "--style-weight",
        type=float,
        default=None,
        help="default as in training: 1e5 (torchvision), 1 (caffe)",
    )
    g.add_argument("--tv-weight", type=float, default=0.0)
    g.add_argument("--iterations", type=at_least_1, default=300)
    g.add_argument("--optimizer", choices=["lbfgs", "adam"], default="lbfgs")
    g.add_argument("--init", choices=["content", "noise"], default="content")


def _side(text: str) -> int:
    """--size: a whole number of pixels that some image can have (N x 1 holds N pixels)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number of pixels, got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 pixel, got {value}")
    if value > MAX_PIXELS:
        raise argparse.ArgumentTypeError(
            f"{value} pixels is beyond the limit of {MAX_PIXELS // 1_000_000} MP per image"
        )
    return value


def _scale(text: str) -> float:
    """--scale: finite and > 0; above sqrt(limit) even a 1x1 image would be too large."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number such as 0.5, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    if value * value > MAX_PIXELS:
        raise argparse.ArgumentTypeError(
            f"{text} makes even a 1x1 image larger than the limit of "
            f"{MAX_PIXELS // 1_000_000} MP per image"
        )
    return value


def _mix_weights(text: str) -> list[float]:
    try:
        return [float(w) for w in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers such as 0.5,0.5,0, got {text!r}"
        ) from None


def _number(text: str, kind: type = float, example: str = "0.5"):
    try:
        return kind(text)
    except ValueError:
        what = "a whole number" if kind is int else f"a number such as {example}"
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None


def _strength(text: str) -> float:
    """--strength: 0 (the photo) to 1 (the stylization)."""
    value = _number(text)
    try:
        return check_strength(value)
    except ConfigError:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value:g}") from None


def _smoothing(text: str) -> float:
    """--temporal-smoothing: 1 would freeze the first frame where the input is still."""
    value = _number(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value:g}")
    return value


def _crf(text: str) -> int:
    """--crf: the range of x264's constant-rate factor for 8-bit video."""
    value = _number(text, int)
    if not 0 <= value <= 51:
        raise argparse.ArgumentTypeError(f"must be in 0-51, got {value}")
    return value


def at_least_1(text: str) -> int:
    """A whole number >= 1 (--batch-size, --threads, ...; app.py's options too)."""
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def max_threads() -> int:
    """The most CPU threads an option may ask for: 4 per logical CPU. More only slows
    the work down, and a huge count dies inside the OpenMP runtime (not one line)."""
    return 4 * (os.cpu_count() or 1)


def thread_count(text: str) -> int:
    """--threads: a whole number from 1 to :func:`max_threads` (app.py's too)."""
    value = at_least_1(text)
    if value > max_threads():
        raise argparse.ArgumentTypeError(
            f"must be at most {max_threads()} (4 per CPU here), got {value}"
        )
    return value


def _tile_size(text: str) -> int:
    """--tile-size: 0 (automatic) or a size on the network's stride-4 grid."""
    value = _number(text, int)
    try:
        if value:
            check_tile_size(value)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return value


@dataclass
class Summary:
    """What happened to each input, told as it happens: lines for people, or JSON for scripts.

    People get ``[n/total] in -> out ...`` lines on stdout (stderr when the
    image itself goes to stdout), errors on stderr, and for folders a closing
    ``done ...`` line. With ``--json`` stdout holds one JSON object per line:
    ``{"type": "image"|"video"|"error"|"skipped", ...}`` per input and a final
    ``{"type": "summary", ...}``; errors are still printed on stderr too.
    """

    json: bool = False
    quiet: bool = False
    stream: TextIO | None = None  # people's lines; None: sys.stdout at the time
    done: int = 0
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    # (input, its output, the inputs it would have clashed with): see _unclash
    renamed: list[tuple[Path, Path, list[Path]]] = field(default_factory=list)
    seconds: float = 0.0
    runtime: str | None = None
    folder: bool = False  # a folder run: an output that appears meanwhile is skipped

    def emit(self, kind: str, **fields) -> None:
        """One JSON object on stdout (``--json`` only)."""
        if self.json:
            print_json(kind, **fields)

    def say(self, line: str) -> None:
        """A line for people (not with ``--json`` or ``--quiet``)."""
        if not (self.json or self.quiet):
            if self.stream is None:
                write_stdout(line)  # a full stdout: one line from main, not a traceback
            else:
                print(line, file=self.stream)

    def skip(self, path: Path, reason: str) -> None:
        self.skipped.append((path, reason))
        self.emit("skipped", input=str(path), reason=reason)

    def fail(self, path: Path, error: Exception | str) -> None:
        self.failed.append((path, str(error)))
        print(f"error: {error}", file=sys.stderr)
        self.emit("error", input=str(path), error=str(error))

    def image(self, n: int, total: int, path: Path, out: Path, shape, seconds: float) -> None:
        self.done += 1
        h, w = shape[-2:]
        self.say(f"[{n}/{total}] {path} -> {out}  {w}x{h}  {seconds * 1000:.1f} ms")
        self.emit(
            "image",
            input=str(path),
            output=str(out),
            size=[int(w), int(h)],
            milliseconds=round(seconds * 1000, 3),
            runtime=self.runtime,
        )

    def finish(self, *, folder: bool) -> int:
        """The closing line or object; the exit code (0 all done, 1 some failed)."""
        code = 1 if self.failed else 0
        rate = self.done / max(self.seconds, 1e-9)
        self.emit(
            "summary",
            done=self.done,
            skipped=len(self.skipped),
            failed=len(self.failed),
            renamed=len(self.renamed),
            seconds=round(self.seconds, 3),
            images_per_second=round(rate, 3),
            exit_code=code,
        )
        if folder and not self.json:
            for path, reason in self.skipped:
                print(f"skipped: {path}: {reason}", file=sys.stderr)
            renamed = f", renamed {len(self.renamed)} (name clashes)" if self.renamed else ""
            print(
                f"done {self.done}, skipped {len(self.skipped)}, failed {len(self.failed)}"
                f"{renamed} in {self.seconds:.1f} s ({rate:.1f} images/s)",
                file=sys.stderr,
            )
        return code


def plan_jobs(src: Path, dst: Path, summary: Summary) -> list[tuple[Path, Path]]:
    """(input, output) pairs; non-image files go to the summary as skipped.

    Outputs that two inputs would share are renamed here, before any work (see
    :func:`_unclash`), so no result ever overwrites another.
    """
    if src.is_file():
        out = dst / src.name if dst.is_dir() else dst
        if dst.is_dir() and not is_video_file(src) and out.suffix.lower() not in _WRITABLE:
            out = out.with_suffix(".png")
        return [(src, out)]
    planned = []
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        rel = path.relative_to(src)
        if not is_image_file(path) and not is_video_file(path):
            summary.skip(path, "not an image or video file")
            continue
        out = dst / rel
        if out.suffix.lower() not in _WRITABLE and not is_video_file(path):
            out = out.with_suffix(".png")
        planned.append((path, out))
    jobs = []
    for path, out in _unclash(planned, summary):
        if not out.resolve().is_relative_to(dst.resolve()):  # a symlink inside dst
            summary.fail(path, f"{out}: leads outside the output folder {dst}; not written")
            continue
        jobs.append((path, out))
    return jobs


def _unclash(planned: list[tuple[Path, Path]], summary: Summary) -> list[tuple[Path, Path]]:
    """Give every input its own output: a.png, a.gif and a.ppm would all write a.png.

    The input written under its own name (a.png) keeps the name, so adding files
    to a folder never renames earlier outputs of that kind; every other input of
    the clash gets its full name plus the output suffix (a.gif.png, a.ppm.png;
    a.gif.2.png if even that is taken). Names are compared ignoring case, as
    macOS and Windows file systems do (a.PNG and a.png are one file there); of
    names equal but for case, the first in sorted order keeps its own. The
    choice depends only on the folder's contents, so a rerun plans the same
    names and skips finished outputs.
    """

    def key(out: Path) -> str:
        return str(out).casefold()

    groups: dict[str, list[tuple[Path, Path]]] = defaultdict(list)
    for path, out in planned:
        groups[key(out)].append((path, out))
    final: dict[Path, Path] = {}
    for members in groups.values():
        owner = next(((p, o) for p, o in members if len(members) == 1 or p.name == o.name), None)
        if owner is not None:
            final[owner[0]] = owner[1]
    taken = {key(out) for out in final.values()}
    for members in groups.values():
        for path, out in members:
            if path in final:
                continue
            new, k = out.with_name(path.name + out.suffix), 2
            while key(new) in taken:
                new, k = out.with_name(f"{path.name}.{k}{out.suffix}"), k + 1
            taken.add(key(new))
            final[path] = new
            summary.renamed.append((path, new, [p for p, _ in members if p != path]))
    return [(path, final[path]) for path, _ in planned]


def run(args: argparse.Namespace) -> int:
    """Check, plan, open the stylizer, stylize; the exit code (0 done, 1 some failed).

    Problems found before any work raise :class:`TransformerNetError`
    (:func:`main` prints them on one line).
    """
    _check_method(args)
    _check_stdio(args)
    to_stdout = args.output == STDIO
    # With the image on stdout, every line for people goes to stderr.
    summary = Summary(json=args.json, quiet=args.quiet, stream=sys.stderr if to_stdout else None)
    if args.input == STDIO:
        src, dst = ImageBytes.from_stdin(), Path(args.output)
        if dst.is_dir():
            raise ConfigError(f"--output {dst}: is a folder; name the output file for --input -")
        jobs = [(src, dst)]
    else:
        src, dst = Path(args.input), Path(args.output)
        _check_paths(src, dst)
        jobs = plan_jobs(src, dst, summary)
    folder = summary.folder = isinstance(src, Path) and src.is_dir()
    if folder and not jobs and not summary.failed:
        # Nothing to do is almost always a wrong --input: say so instead of "done 0".
        others = summary.skipped
        what = (
            f"no image or video files ({len(others)} other file(s), e.g. {others[0][0].name})"
            if others
            else "empty folder"
        )
        print(f"error: {src}: {what}; nothing to stylize", file=sys.stderr)
        return 1
    if not args.quiet:  # before any work: where each result goes is no surprise
        for path, new, others in summary.renamed:
            print(
                f"note: {path} -> {new} (its plain output name is shared with "
                f"{', '.join(map(str, others))})",
                file=sys.stderr,
            )
    if not folder:
        _check_single_job(src, jobs[0][1], args)
    stylizer = open_model(args)
    summary.runtime = stylizer.runtime
    todo = []
    for path, out in jobs:
        if out != Path(STDIO) and out.exists() and not args.overwrite:
            summary.skip(path, f"{out} exists (--overwrite replaces it)")
        else:
            todo.append((path, out))
    if not args.quiet:
        what = (
            f"model {args.model} ({stylizer.runtime}){_style_note(stylizer)}"
            if args.method == "feedforward"
            else "optimization"
        )
        print(
            f"{what} on {stylizer.device} ({str(stylizer.dtype)[6:]}); {len(todo)} image(s)",
            file=sys.stderr,
        )
    start = time.perf_counter()
    videos = [(path, out) for path, out in todo if is_video_file(path)]
    stylize_all([job for job in todo if not is_video_file(job[0])], stylizer, args, summary)
    stylize_videos(videos, stylizer, args, summary)
    summary.seconds = time.perf_counter() - start
    return summary.finish(folder=folder)


def _check_stdio(args: argparse.Namespace) -> None:
    """``-`` (stdin/stdout) combinations that cannot work, said before any work."""
    if args.output == STDIO:
        if args.json:
            raise ConfigError("--json and --output - both write to stdout; choose one")
        if args.input != STDIO and Path(args.input).is_dir():
            raise ConfigError(f"--output -: {args.input} is a folder; stdout takes one image")
        if args.input != STDIO and is_video_file(args.input):
            raise ConfigError("--output -: videos are written to files (e.g. --output out.mp4)")
    elif args.format is not None:
        raise ConfigError("--format applies to --output - (a file's format is its extension)")


def _check_method(args: argparse.Namespace) -> None:
    """Options that go together: a model, or optimization with a style image."""
    if args.method == "feedforward" and not args.model:
        raise ConfigError("--model is required (or --method optimize with --style)")
    if args.method == "optimize" and not args.style:
        raise ConfigError("--method optimize needs --style painting.jpg")
    if args.method == "optimize" and (args.style_index is not None or args.style_mix):
        raise ConfigError("--style-index and --style-mix choose a style of a multi-style model")


def _check_paths(src: Path, dst: Path) -> None:
    if not src.exists():
        raise ConfigError(f"{src}: input not found")
    if src.is_dir() and dst.exists() and not dst.is_dir():
        raise ConfigError(f"{dst}: output must be a folder when the input is a folder")
    if src.is_dir() and dst.resolve().is_relative_to(src.resolve()):
        raise ConfigError(f"{dst}: output folder is inside the input folder {src}")


def _check_single_job(src: Path, out: Path, args: argparse.Namespace) -> None:
    """One input file: what would fail is said before the model loads."""
    if isinstance(src, ImageBytes):  # stdin: read, not planned; loading checks its size
        src_problem = None
    else:
        if out.resolve() == src.resolve():
            raise ConfigError(f"{out}: output would overwrite the input")
        src_problem = _too_large(src, args)
    if out == Path(STDIO):
        if src_problem:
            raise ConfigError(src_problem)
        return
    problem = _output_name_problem(src, out) or src_problem
    if problem:
        raise ConfigError(problem)
    if out.exists() and not args.overwrite:
        raise ConfigError(f"{out}: already exists (pass --overwrite to replace it)")
    if is_video_file(src):
        if args.method == "optimize":
            raise ConfigError(f"{src}: video needs a model (--method feedforward)")
        require_av(src)


def _output_name_problem(src: Path, out: Path) -> str | None:
    """Why ``out`` cannot hold the result for ``src`` (checked before the model loads)."""
    if is_video_file(src):
        if is_video_file(out):
            return None
        kinds = ", ".join(sorted(VIDEO_EXTENSIONS))
        return f"--output {out}: a video is written as a video file ({kinds})"
    if writable_format(out) is not None:
        return None
    if not out.suffix:
        return (
            f"--output {out}: no file extension (use .jpg, .png, .webp or .tif; to write "
            "into a folder, create it first)"
        )
    return (
        f"--output {out}: Pillow cannot write {out.suffix!r} images (use .jpg, .png, .webp or .tif)"
    )


def _too_large(src: Path, args: argparse.Namespace) -> str | None:
    """--size/--scale that would make this input larger than an image may be."""
    if args.size is None and args.scale is None:
        return None
    size = video_frame_size(src) if is_video_file(src) else image_size(src)
    if size is None:  # unreadable: loading it says why
        return None
    try:
        resized_size(size, max_side=args.size, scale=args.scale)
    except ConfigError as e:
        option = f"--size {args.size}" if args.size is not None else f"--scale {args.scale:g}"
        return f"{option}: {src}: {e}"
    return None


def open_model(args: argparse.Namespace) -> Stylizer:
    """The stylizer the arguments ask for: a model file's runner, or optimization."""
    threads = args.threads or default_threads()
    torch.set_num_threads(threads)  # PyTorch's are process-wide (onnxruntime's: per session)
    if args.method == "optimize":
        from .optimize import GatysStylizer  # loads the loss network's modules

        return GatysStylizer(
            args.style,
            device=args.device,
            style_size=args.style_size,
            vgg_weights=args.vgg_weights,
            preprocessing=args.preprocessing,
            content_weight=args.content_weight,
            style_weight=args.style_weight,
            tv_weight=args.tv_weight,
            iterations=args.iterations,
            optimizer=args.optimizer,
            init=args.init,
            preserve_color=args.preserve_color,
            progress=None if args.quiet else _IterationPrinter(args.iterations),
            vgg_hint="--vgg-weights /path/vgg16.pth --preprocessing {preprocessing}",
        )
    try:
        stylizer = open_stylizer(
            args.model,
            device=args.device,
            runtime=args.runtime,
            threads=threads,
            trust_torchscript=args.trust_torchscript,
            precision=args.precision,
            compile=args.compile,
            cuda_graphs=args.cuda_graphs,
            style=args.style_index if args.style_mix is None else args.style_mix,
            tile_size=args.tile_size,
            progress=None if args.quiet else _ProgressBar("tiles", unit="tile"),
        )
    except UntrustedModelError as e:
        raise with_trust_hint(e) from None
    warning = bf16_emulation_warning(stylizer.device) if stylizer.dtype == torch.bfloat16 else None
    if warning:
        print(f"warning: --precision {args.precision}: {warning}", file=sys.stderr)
    return stylizer


def _style_note(stylizer: Stylizer) -> str:
    """' (3 styles: 0 a, 1 b, 2 c; using 1 b)' for a multi-style model, else ''."""
    n = stylizer.num_styles
    if n == 1:
        return ""
    names = stylizer.style_names or [f"style {k}" for k in range(n)]
    listed = ", ".join(f"{k} {name}" for k, name in enumerate(names))
    style = stylizer.style
    if isinstance(style, torch.Tensor):
        using = "mix " + " + ".join(
            f"{w:.3g} {name}" for w, name in zip(style.tolist(), names, strict=True) if w > 0
        )
    else:
        k = style or 0
        using = f"{k} {names[k]}"
    return f" ({n} styles: {listed}; using {using})"


def stylize_all(
    todo: list[tuple[Path, Path]], stylizer: Stylizer, args: argparse.Namespace, summary: Summary
) -> None:
    """Decode ahead and encode behind in threads while the model runs.

    PIL releases the GIL while decoding and encoding, so with a GPU the model
    never waits for JPEG work. Loads are bounded (2 x threads in flight) to keep
    memory flat on folders of thousands of photos; results print in input order.
    """
    threads = args.io_threads
    with ThreadPoolExecutor(threads) as loaders, ThreadPoolExecutor(threads) as savers:
        loads: deque = deque()
        queue = iter(todo)

        def submit_load() -> None:
            for path, out in queue:
                fut = loaders.submit(load_image_alpha, path, max_side=args.size, scale=args.scale)
                loads.append((path, out, fut))
                return

        for _ in range(2 * threads):
            submit_load()
        saves: deque = deque()
        n = 0
        while loads:
            path, out, fut = loads.popleft()
            submit_load()
            n += 1
            try:
                image, alpha = fut.result()
                result, seconds = stylizer.timed(image)
                result = postprocess(
                    image, result, strength=args.strength, preserve_color=args.preserve_color
                )
            except TransformerNetError as e:
                summary.fail(path, e)
                continue
            if alpha is not None and _keeps_alpha(out, args):
                result = torch.cat([result, alpha[None]])  # (4, H, W): keep transparency
            saves.append(
                (n, path, out, result.shape, seconds, savers.submit(_save, result, out, args))
            )
            while saves and saves[0][-1].done():
                _report_save(saves.popleft(), len(todo), summary)
        while saves:
            _report_save(saves.popleft(), len(todo), summary)


def _keeps_alpha(out: Path, args: argparse.Namespace) -> bool:
    if out == Path(STDIO):
        return f".{args.format or 'png'}" in _ALPHA_FORMATS
    return out.suffix.lower() in _ALPHA_FORMATS


def stylize_videos(
    videos: list[tuple[Path, Path]],
    stylizer: Stylizer,
    args: argparse.Namespace,
    summary: Summary,
) -> None:
    """One video at a time (after the images); each overlaps decoding, model and encoding."""
    for i, (path, out) in enumerate(videos, start=1):
        if not stylizer.supports_video:
            summary.fail(path, f"{path}: video needs a model (--method feedforward)")
            continue
        batch = args.batch_size or (8 if stylizer.device.type == "cuda" else 2)
        progress = None if args.quiet else _ProgressBar(path.name, unit="frame")
        try:
            report = stylize_video(
                path,
                out,
                stylizer,
                max_side=args.size,
                scale=args.scale,
                batch_size=batch,
                crf=args.crf,
                temporal_smoothing=args.temporal_smoothing,
                progress=progress,
                postprocess=lambda content, stylized: postprocess(
                    content, stylized, strength=args.strength, preserve_color=args.preserve_color
                ),
                overwrite=args.overwrite,
            )
        except OutputExistsError as e:
            _appeared_meanwhile(path, out, e, summary)
            continue
        except TransformerNetError as e:
            summary.fail(path, e)
            continue
        except torch.cuda.OutOfMemoryError:  # = torch.OutOfMemoryError
            summary.fail(path, f"{path}: out of memory (try a smaller --batch-size)")
            continue
        finally:
            if progress is not None:
                progress.close()
        summary.done += 1
        _report_video(report, i, len(videos), path, out, summary)


def _report_video(report, i: int, total: int, path: Path, out: Path, summary: Summary) -> None:
    if report.expected_frames and report.frames < 0.9 * report.expected_frames - 1:
        print(
            f"warning: {path}: {report.frames} of {report.expected_frames} frames decoded "
            "(truncated or damaged file?)",
            file=sys.stderr,
        )
    (w, h), n, sec, fps = report.size, report.frames, report.seconds, float(report.fps)
    summary.say(
        f"[{i}/{total}] {path} -> {out}  {w}x{h}  {n} frames at {fps:.3g} fps  "
        f"{sec:.1f} s ({n / max(sec, 1e-9):.1f} frames/s)  {report.codec}, "
        f"audio {report.audio}"
    )
    summary.emit(
        "video",
        input=str(path),
        output=str(out),
        size=[int(w), int(h)],
        frames=int(n),
        fps=round(fps, 3),
        milliseconds=round(sec * 1000, 3),
        runtime=summary.runtime,
    )


class _ProgressBar:
    """A tqdm bar on stderr fed ``(done, total)`` callbacks (tiles of an image, video frames).

    The bar starts at the first call and closes when ``done`` reaches ``total``,
    so one instance serves every tiled image in turn. On a terminal it redraws
    twice a second; in a log file (no terminal) every 5 s.
    """

    def __init__(self, desc: str, *, unit: str):
        self.desc, self.unit = desc, unit
        self.bar: tqdm | None = None

    def __call__(self, done: int, total: int | None) -> None:
        if self.bar is None:
            interval = 0.5 if sys.stderr.isatty() else 5.0
            self.bar = tqdm(
                total=total,
                desc=f"  {self.desc}",
                unit=self.unit,
                file=sys.stderr,
                mininterval=interval,
                dynamic_ncols=True,
            )
        self.bar.update(done - self.bar.n)
        if total is not None and done >= total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class _IterationPrinter:
    """Gatys optimization's progress: one line per report on stderr (minutes per image)."""

    def __init__(self, iterations: int):
        self.iterations = iterations

    def __call__(self, i: int, losses: dict[str, float]) -> None:
        parts = " ".join(f"{k} {v:.4g}" for k, v in losses.items())
        print(f"  iteration {i}/{self.iterations}: {parts}", file=sys.stderr)


def _save(image: torch.Tensor, out: Path, args: argparse.Namespace) -> None:
    """Write the result to its file, or to stdout (``--output -``) in ``--format``."""
    if out != Path(STDIO):
        # Without --overwrite, never over a file another run wrote since the plan.
        save_image(image, out, overwrite=args.overwrite)
        return
    fmt = writable_format(f"x.{args.format or 'png'}")
    if image.shape[0] == 4 and fmt == "JPEG":
        image = image[:3]
    buffer = io.BytesIO()  # whole, then written: a failed encode leaves stdout empty
    tensor_to_pil(image).save(buffer, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    write_stdout(buffer.getvalue())


def _report_save(item, total: int, summary: Summary) -> None:
    n, path, out, shape, seconds, fut = item
    try:
        fut.result()
    except OutputExistsError as e:
        _appeared_meanwhile(path, out, e, summary)
        return
    except TransformerNetError as e:
        summary.fail(path, e)
        return
    summary.image(n, total, path, out, shape, seconds)


def _appeared_meanwhile(path: Path, out: Path, error: Exception, summary: Summary) -> None:
    """An output another run wrote after the plan: kept. In a folder that input is
    skipped, as when its output existed before; a single file's result is an error."""
    if summary.folder:
        reason = "written meanwhile by another run?; --overwrite replaces it"
        summary.skip(path, f"{out} already exists ({reason})")
    else:
        summary.fail(path, f"{error} (--overwrite replaces it)")


def main(argv: list[str] | None = None) -> int:
    """stylize.py: the exit code (0 done, 1 some inputs failed, 2 bad usage, 130 interrupted,
    141 stdout closed by its reader).

    Argument errors and --help return their code too (no SystemExit), so callers
    and tests get one behaviour.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    build, command = build_parser, run
    if argv and argv[0] in COMMANDS:  # stylize.py sheet ... / stylize.py info ...
        build, command = COMMANDS[argv[0]]
        argv = argv[1:]
    parser = build()
    wants_json = "--json" in argv
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a one-line argument error (2)
        code = int(e.code or 0)
        if code and wants_json and parser.error_message:
            return _json_error(parser.error_message, code)
        return code
    try:
        code = command(args)
        _flush_stdout()  # a full device fails here, in one line, not at the interpreter's exit
        return code
    except TransformerNetError as e:  # the user's input; anything else is a bug: traceback
        print(f"error: {e}", file=sys.stderr)
        if wants_json and getattr(args, "output", None) != STDIO:
            return _json_error(str(e), e.exit_code)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted: finished outputs are complete; rerun to do the rest", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of stdout went away (`... | head`): stop quietly
        _silence_stdout()
        return 141  # what a shell reports for a command stopped by SIGPIPE
    except StdoutError as e:  # a full device: the outputs written so far are whole
        print(f"error: cannot write to standard output ({e.strerror}); stopped", file=sys.stderr)
        _silence_stdout()
        return 1


def _json_error(message: str, code: int) -> int:
    """Under --json a fatal error is an object on stdout too: a script reading only stdout
    learns why there is nothing else. Returns ``code``."""
    try:
        print_json("error", error=message, exit_code=code)
        _flush_stdout()
    except OSError:  # stdout is gone too: stderr has the line
        _silence_stdout()
    return code


def _flush_stdout() -> None:
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as e:
        raise StdoutError(e.errno, e.strerror or str(e)) from None


def _silence_stdout() -> None:
    """Point stdout's file descriptor at /dev/null: what is still buffered in it then
    goes nowhere, and the interpreter's last flush cannot fail again ("Exception
    ignored ... BrokenPipeError", exit 120)."""
    try:
        fd = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    try:
        os.dup2(fd, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # not a real file (a test's capture)
        pass
    finally:
        os.close(fd)
