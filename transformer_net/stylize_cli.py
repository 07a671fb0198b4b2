"""The ``stylize.py`` command: apply a style model to an image or a folder of images."""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import torch

from .checkpoint import ModelFileError
from .color import gray_image, luminance, match_luminance, postprocess
from .image import (
    MAX_PIXELS,
    ImageError,
    image_size,
    is_image_file,
    load_image_alpha,
    resized_size,
    save_image,
    writable_format,
)
from .vgg import DOWNLOADED_WEIGHTS, VGGWeightsError, default_preprocessing, fetch_vgg16
from .video import (
    VIDEO_EXTENSIONS,
    VideoError,
    is_video_file,
    require_av,
    stylize_video,
    video_frame_size,
)

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
  python stylize.py --model wave.pth --input photo.jpg --output out.jpg --preserve-color
  python stylize.py --model wave.pth --input photo.jpg --output out.jpg --strength 0.5

Models: the .pth written by train.py, a Lightning .ckpt from training, a
state dict of the PyTorch examples' fast_neural_style (e.g. its mosaic.pth), or
an .onnx / TorchScript .pt file from scripts/export_model.py.
Existing outputs are skipped unless --overwrite is given. In a folder, inputs
whose outputs would share a name (a.png, a.gif and a.ppm all give a.png) are
never overwritten: a file written under its own name (a.png) keeps it, the
others get their full name plus the output suffix (a.gif.png, a.ppm.png).
Names that differ only in case count as the same (as on macOS and Windows).
"""
# Formats written as-is in folder mode; anything else (e.g. .gif) becomes .png.
_WRITABLE = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
# Formats that store an alpha channel: transparency of the input is kept there.
_ALPHA_FORMATS = {".png", ".tif", ".tiff", ".webp"}


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: the usage block would bury the message (--help has it)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="stylize.py",
        description="Stylize photos with a trained transformer-net model (one forward pass).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model", help="model file (.pth), training checkpoint (.ckpt), .onnx or TorchScript .pt"
    )
    p.add_argument("--input", required=True, help="an image, or a folder (searched recursively)")
    p.add_argument(
        "--output", required=True, help="output image, or output folder for a folder input"
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument("--size", type=_side, help="resize so that the longer side has SIZE pixels")
    size.add_argument("--scale", type=_scale, help="resize both sides by this factor")
    p.add_argument(
        "--device", default="auto", help="auto (GPU if available), cpu, cuda, cuda:1, mps"
    )
    p.add_argument(
        "--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
        help="auto: the fastest measured: on a GPU fp32, or bf16 with --compile; on a CPU "
        "bf16 where it computes it natively, else fp32",
    )  # fmt: skip
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the model: seconds per new size, then faster (many images of one size)",
    )
    p.add_argument(
        "--cuda-graphs", action="store_true",
        help="CUDA: replay a CUDA graph for image sizes that recur (video, same-size photos)",
    )  # fmt: skip
    styles = p.add_mutually_exclusive_group()
    styles.add_argument(
        "--style-index", type=int, default=None, metavar="K",
        help="multi-style models: use style K (default 0; the startup line lists them)",
    )  # fmt: skip
    styles.add_argument(
        "--style-mix", type=_mix_weights, default=None, metavar="W,W,...",
        help="multi-style models: one weight per style, normalized to sum 1 (interpolation)",
    )  # fmt: skip
    p.add_argument(
        "--preserve-color", action="store_true",
        help="keep the photo's colors: stylized luminance + photo chrominance (YIQ)",
    )  # fmt: skip
    p.add_argument(
        "--strength", type=float, default=1.0,
        help="0-1: blend S * stylized + (1 - S) * photo in pixels (default 1)",
    )  # fmt: skip
    p.add_argument("--io-threads", type=int, default=4, help="threads decoding/encoding images (4)")
    p.add_argument(
        "--tile-size", type=int, default=0, metavar="N",
        help="0 (default): one pass, tiles only for images too large for memory; "
        "N: always N-pixel tiles (same result as one pass, ~9x slower)",
    )  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--quiet", action="store_true", help="print only errors and the summary")
    v = p.add_argument_group("video (.mp4 .mov .mkv .avi .webm .m4v; needs PyAV)")
    v.add_argument(
        "--batch-size", type=int, default=None, help="frames per model call (8 on CUDA, else 2)"
    )
    v.add_argument("--crf", type=int, default=18, help="H.264 quality, 0-51, lower is better (18)")
    v.add_argument(
        "--temporal-smoothing", type=float, default=0.0, metavar="A",
        help="0-1: blend each frame with the previous output where the input is still (0: off)",
    )  # fmt: skip
    g = p.add_argument_group(
        "optimization (Gatys et al. 2016)",
        "--method optimize: no model; the image itself is optimized against the training loss",
    )
    g.add_argument("--method", default="feedforward", choices=["feedforward", "optimize"])
    g.add_argument("--style", help="style image (required with --method optimize)")
    g.add_argument("--style-size", type=_side, default=None, help="longer side of the style image")
    g.add_argument(
        "--vgg-weights", default="caffe",
        help="caffe (default: Johnson et al.'s VGG-16), imagenet (torchvision's), both "
        "downloaded once, or a .pth file",
    )  # fmt: skip
    g.add_argument(
        "--preprocessing", choices=["torchvision", "caffe"], default=None,
        help="input convention of the VGG weights (default: torchvision for imagenet, else caffe)",
    )  # fmt: skip
    g.add_argument("--content-weight", type=float, default=1.0)
    g.add_argument(
        "--style-weight", type=float, default=None,
        help="default as in training: 1e5 (torchvision), 1 (caffe)",
    )  # fmt: skip
    g.add_argument("--tv-weight", type=float, default=0.0)
    g.add_argument("--iterations", type=int, default=300)
    g.add_argument("--optimizer", choices=["lbfgs", "adam"], default="lbfgs")
    g.add_argument("--init", choices=["content", "noise"], default="content")
    return p


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


def _style_note(stylizer) -> str:
    """' (3 styles: 0 a, 1 b, 2 c; using 1 b)' for a multi-style model, else ''."""
    model = getattr(stylizer, "model", None)
    n = getattr(model, "num_styles", 1)
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


class GatysStylizer:
    """Per-image optimization behind the interface of ``inference.Stylizer``."""

    def __init__(self, args: argparse.Namespace):
        from .inference import pick_device
        from .loss import PerceptualLoss

        self.device = pick_device(args.device)
        self.dtype = torch.float32
        self.args = args
        style = load_image_alpha(args.style, max_side=args.style_size)[0]
        self.style = style  # (3, H, W) uint8
        # The convention follows the weights' name before the name becomes a file.
        preprocessing = args.preprocessing or default_preprocessing(args.vgg_weights)
        vgg_weights = args.vgg_weights
        if vgg_weights in DOWNLOADED_WEIGHTS:  # downloaded once; offline: this tool's own hint
            hint = f"--vgg-weights /path/vgg16.pth --preprocessing {preprocessing}"
            vgg_weights = str(fetch_vgg16(vgg_weights, hint=hint))
        self.loss = PerceptualLoss(
            style_image=style.float(),
            vgg_weights=vgg_weights,
            preprocessing=preprocessing,
            content_weight=args.content_weight,
            style_weight=args.style_weight,
            tv_weight=args.tv_weight,
        ).to(self.device)

    def timed(self, image: torch.Tensor) -> tuple[torch.Tensor, float]:
        from .optimize import optimize_image

        def progress(i: int, losses: dict) -> None:
            if not self.args.quiet:
                parts = " ".join(f"{k} {v:.4g}" for k, v in losses.items())
                print(f"  iteration {i}/{self.args.iterations}: {parts}", file=sys.stderr)

        start = time.perf_counter()
        if self.args.preserve_color:
            # Luminance-only transfer (Gatys et al. 2017): optimize the gray image of
            # the photo's Y against the style's Y matched to the photo's mean and
            # std; color.postprocess then puts the photo's chrominance back.
            content_y = luminance(image)
            self.loss.set_style(gray_image(match_luminance(luminance(self.style), content_y)))
            image = gray_image(content_y)
        result = optimize_image(
            content=image, loss=self.loss, iterations=self.args.iterations,
            optimizer=self.args.optimizer, init=self.args.init, progress=progress,
        )  # fmt: skip
        return result, time.perf_counter() - start


@dataclass
class Summary:
    done: int = 0
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    # (input, its output, the inputs it would have clashed with): see _unclash
    renamed: list[tuple[Path, Path, list[Path]]] = field(default_factory=list)
    seconds: float = 0.0


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
            summary.skipped.append((path, "not an image or video file"))
            continue
        out = dst / rel
        if out.suffix.lower() not in _WRITABLE and not is_video_file(path):
            out = out.with_suffix(".png")
        planned.append((path, out))
    jobs = []
    for path, out in _unclash(planned, summary):
        if not out.resolve().is_relative_to(dst.resolve()):  # a symlink inside dst
            _record_failure(
                summary, path, f"{out}: leads outside the output folder {dst}; not written"
            )
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
    if args.method == "feedforward" and not args.model:
        return _fail("--model is required (or --method optimize with --style)")
    if args.method == "optimize" and not args.style:
        return _fail("--method optimize needs --style painting.jpg")
    if args.method == "optimize" and (args.style_index is not None or args.style_mix):
        return _fail("--style-index and --style-mix choose a style of a multi-style model")
    if not 0.0 <= args.strength <= 1.0:
        return _fail(f"--strength must be between 0 and 1, got {args.strength}")
    src, dst = Path(args.input), Path(args.output)
    if not src.exists():
        return _fail(f"{src}: input not found")
    if src.is_dir() and dst.exists() and not dst.is_dir():
        return _fail(f"{dst}: output must be a folder when the input is a folder")
    if src.is_dir() and dst.resolve().is_relative_to(src.resolve()):
        return _fail(f"{dst}: output folder is inside the input folder {src}")
    if not 0 <= args.temporal_smoothing < 1:
        return _fail(f"--temporal-smoothing must be in [0, 1), got {args.temporal_smoothing}")
    if not 0 <= args.crf <= 51:
        return _fail(f"--crf must be in 0-51, got {args.crf}")
    if args.batch_size is not None and args.batch_size < 1:
        return _fail(f"--batch-size must be >= 1, got {args.batch_size}")
    summary = Summary()
    jobs = plan_jobs(src, dst, summary)
    if src.is_dir() and not jobs and not summary.failed:
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
    if src.is_file():
        out = jobs[0][1]
        if out.resolve() == src.resolve():
            return _fail(f"{out}: output would overwrite the input")
        problem = _output_name_problem(src, out) or _too_large(src, args)
        if problem:
            return _fail(problem)
        if out.exists() and not args.overwrite:
            return _fail(f"{out}: already exists (pass --overwrite to replace it)")
        if is_video_file(src):
            if args.method == "optimize":
                return _fail(f"{src}: video needs a model (--method feedforward)")
            try:
                require_av(src)
            except VideoError as e:
                return _fail(str(e))
    try:
        if args.method == "optimize":
            stylizer = GatysStylizer(args)
        else:
            stylizer = _feedforward_stylizer(args)
    except (ModelFileError, VGGWeightsError, ImageError, ValueError, RuntimeError) as e:
        return _fail(str(e))
    todo = []
    for path, out in jobs:
        if out.exists() and not args.overwrite:
            summary.skipped.append((path, f"{out} exists (--overwrite replaces it)"))
        else:
            todo.append((path, out))
    if not args.quiet:
        what = (
            f"model {args.model}{_style_note(stylizer)}"
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
    _print_summary(summary, folder=src.is_dir())
    return 1 if summary.failed else 0


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
    except ValueError as e:
        option = f"--size {args.size}" if args.size is not None else f"--scale {args.scale:g}"
        return f"{option}: {src}: {e}"
    return None


def _feedforward_stylizer(args: argparse.Namespace):
    """``inference.Stylizer`` for PyTorch model files; ONNX and TorchScript files by content."""
    from .export import OnnxStylizer, TorchScriptStylizer, is_torchscript_file
    from .inference import Stylizer, bf16_emulation_warning

    onnx = Path(args.model).suffix.lower() == ".onnx"
    if onnx or is_torchscript_file(args.model):
        if args.precision not in ("auto", "fp32") or args.compile or args.cuda_graphs:
            raise ValueError(
                f"{args.model}: --precision, --compile and --cuda-graphs apply to .pth/.ckpt "
                "models; ONNX and TorchScript files run in fp32"
            )
        if args.style_index or args.style_mix or args.tile_size:
            raise ValueError(
                f"{args.model}: --style-index, --style-mix and --tile-size apply to "
                ".pth/.ckpt models"
            )
        runner = OnnxStylizer if onnx else TorchScriptStylizer
        return runner(model_path=args.model, device=args.device)
    stylizer = Stylizer(
        model_path=args.model,
        device=args.device,
        precision=args.precision,
        compile=args.compile,
        cuda_graphs=args.cuda_graphs,
        style=args.style_index if args.style_mix is None else args.style_mix,
        tile_size=args.tile_size,
    )
    warning = bf16_emulation_warning(stylizer.device) if stylizer.dtype == torch.bfloat16 else None
    if warning:
        print(f"warning: --precision {args.precision}: {warning}", file=sys.stderr)
    if not args.quiet:
        stylizer.progress = _tile_progress
    return stylizer


def stylize_all(todo: list[tuple[Path, Path]], stylizer, args, summary: Summary) -> None:
    """Decode ahead and encode behind in threads while the model runs.

    PIL releases the GIL while decoding and encoding, so with a GPU the model
    never waits for JPEG work. Loads are bounded (2 x threads in flight) to keep
    memory flat on folders of thousands of photos; results print in input order.
    """
    threads = max(1, args.io_threads)
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
            except (ImageError, ValueError) as e:
                _record_failure(summary, path, e)
                continue
            if alpha is not None and out.suffix.lower() in _ALPHA_FORMATS:
                result = torch.cat([result, alpha[None]])  # (4, H, W): keep transparency
            saves.append(
                (n, path, out, result.shape, seconds, savers.submit(save_image, result, out))
            )
            while saves and saves[0][-1].done():
                _report_save(saves.popleft(), len(todo), args, summary)
        while saves:
            _report_save(saves.popleft(), len(todo), args, summary)


def stylize_videos(videos: list[tuple[Path, Path]], stylizer, args, summary: Summary) -> None:
    """One video at a time (after the images); each overlaps decoding, model and encoding."""
    for i, (path, out) in enumerate(videos, start=1):
        if not hasattr(stylizer, "batch"):
            _record_failure(summary, path, f"{path}: video needs a model (--method feedforward)")
            continue
        batch = args.batch_size or (8 if stylizer.device.type == "cuda" else 2)
        progress = None if args.quiet else _VideoProgress(path)
        try:
            report = stylize_video(
                path, out, stylizer, max_side=args.size, scale=args.scale, batch_size=batch,
                crf=args.crf, temporal_smoothing=args.temporal_smoothing, progress=progress,
                postprocess=lambda content, stylized: postprocess(
                    content, stylized, strength=args.strength, preserve_color=args.preserve_color
                ),
            )  # fmt: skip
        except (VideoError, ValueError) as e:
            _record_failure(summary, path, e)
            continue
        except torch.cuda.OutOfMemoryError:  # = torch.OutOfMemoryError
            _record_failure(summary, path, f"{path}: out of memory (try a smaller --batch-size)")
            continue
        finally:
            if progress is not None:
                progress.close()
        summary.done += 1
        if report.expected_frames and report.frames < 0.9 * report.expected_frames - 1:
            print(
                f"warning: {path}: {report.frames} of {report.expected_frames} frames decoded "
                "(truncated or damaged file?)",
                file=sys.stderr,
            )
        if not args.quiet:
            (w, h), n, sec, fps = report.size, report.frames, report.seconds, float(report.fps)
            print(
                f"[{i}/{len(videos)}] {path} -> {out}  {w}x{h}  {n} frames at {fps:.3g} fps  "
                f"{sec:.1f} s ({n / max(sec, 1e-9):.1f} frames/s)  {report.codec}, "
                f"audio {report.audio}"
            )


class _VideoProgress:
    """``frame done/total, fps`` on stderr: rewritten in place on a terminal, else every 5 s."""

    def __init__(self, path: Path):
        self.name, self.tty = path.name, sys.stderr.isatty()
        self.start = self.last = time.perf_counter()
        self.printed = False

    def __call__(self, done: int, total: int | None) -> None:
        now = time.perf_counter()
        if now - self.last < (0.5 if self.tty else 5.0):
            return
        self.last = now
        of = f"/{total}" if total else ""
        line = f"  {self.name}: frame {done}{of}, {done / (now - self.start):.1f} fps"
        print(("\r" + line) if self.tty else line, end="" if self.tty else "\n", file=sys.stderr,
              flush=True)  # fmt: skip
        self.printed = True

    def close(self) -> None:
        if self.tty and self.printed:
            print(file=sys.stderr)


def _report_save(item, total: int, args, summary: Summary) -> None:
    n, path, out, shape, seconds, fut = item
    try:
        fut.result()
    except (ImageError, ValueError) as e:
        _record_failure(summary, path, e)
        return
    summary.done += 1
    if not args.quiet:
        h, w = shape[-2:]
        print(f"[{n}/{total}] {path} -> {out}  {w}x{h}  {seconds * 1000:.1f} ms")


def _tile_progress(done: int, total: int) -> None:
    """Tiled images take minutes on a CPU: show the tile count on one line."""
    end = "\n" if done == total else ""
    print(f"\r  tiles {done}/{total}", end=end, file=sys.stderr, flush=True)


def _record_failure(summary: Summary, path: Path, error: Exception | str) -> None:
    summary.failed.append((path, str(error)))
    print(f"error: {error}", file=sys.stderr)


def _print_summary(summary: Summary, *, folder: bool) -> None:
    if not folder:
        return
    for path, reason in summary.skipped:
        print(f"skipped: {path}: {reason}", file=sys.stderr)
    renamed = f", renamed {len(summary.renamed)} (name clashes)" if summary.renamed else ""
    print(
        f"done {summary.done}, skipped {len(summary.skipped)}, failed {len(summary.failed)}"
        f"{renamed} in {summary.seconds:.1f} s "
        f"({summary.done / max(summary.seconds, 1e-9):.1f} images/s)",
        file=sys.stderr,
    )


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        print("interrupted: finished outputs are complete; rerun to do the rest", file=sys.stderr)
        return 130
