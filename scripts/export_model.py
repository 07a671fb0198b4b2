"""Write a model file (for stylize.py) or a deployment file from a training checkpoint.

Training writes <output_dir>/<style>.pth at the end; this makes one from any
Lightning checkpoint along the way (or converts a PyTorch-examples state dict),
or exports the network as ONNX (onnxruntime and other runtimes; dynamic batch,
height and width) or TorchScript (torch.jit.load in Python or libtorch C++).
ONNX and TorchScript outputs are checked against PyTorch on a random image.
With --quantize int8 the ONNX file is quantized (onnxruntime, calibrated on
photos) and its outputs compared with fp32's on photos it was not calibrated on.
With --format folder it writes a model folder to share (safetensors weights,
config.json, model card: docs/sharing.md), checked to give the same outputs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from transformer_net.atomic import check_writable
from transformer_net.checkpoint import load_model, save_model_file
from transformer_net.errors import ConfigError, TransformerNetError
from transformer_net.export import ONNX_OPSETS
from transformer_net.stylize_cli import OneLineParser, _silence_stdout, at_least_1, thread_count
from transformer_net.stylize_subcommands import StdoutError, write_stdout

FORMATS = ("pth", "onnx", "torchscript", "folder")
_SUFFIX_FORMATS = {".onnx": "onnx", ".pt": "torchscript", ".ts": "torchscript", ".pth": "pth"}

EPILOG = """\
examples:
  python scripts/export_model.py outputs/wave/checkpoints/last.ckpt wave.pth
  python scripts/export_model.py "outputs/wave/checkpoints/step=20000.ckpt" wave_20k.pth
  python scripts/export_model.py outputs/wave/wave.pth wave.onnx          # ONNX, opset 17
  python scripts/export_model.py outputs/wave/wave.pth wave.pt            # TorchScript
  python scripts/export_model.py wave.pth wave.model --format onnx
  python scripts/export_model.py wave.pth wave.onnx --benchmark 512     # + CPU latency
  python scripts/export_model.py wave.pth wave_int8.onnx --quantize int8 \\
      --calibration data/coco_sample --benchmark 512      # int8, calibrated on 32 photos
  python scripts/export_model.py outputs/wave/wave.pth wave-model --format folder \\
      --samples outputs/wave/preview.jpg --evaluation eval/wave   # to share (Hugging Face)
"""
# int8 outputs further than this from fp32's are visibly different (a warning, not an error).
PSNR_WARNING_DB = 30.0
HELD_OUT = 4  # photos the int8 file is compared on
SAMPLE_PHOTOS, SAMPLE_HEIGHT = 4, 192  # --samples PHOTOS: rows of the sheet, their height


def _opset(text: str) -> int:
    """--opset: one whose graph onnxruntime runs (export.ONNX_OPSETS)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value not in ONNX_OPSETS:
        low, high = ONNX_OPSETS[0], ONNX_OPSETS[-1]
        raise argparse.ArgumentTypeError(f"must be in {low}-{high}, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(  # one-line errors: the usage block would bury the message
        prog="export_model.py",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "checkpoint", help="Lightning .ckpt, model file or TransformerNet state dict"
    )
    parser.add_argument("output", help="file to write (.pth, .onnx, .pt/.ts), or a folder")
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default=None,
        help="pth (model file), onnx, torchscript or folder (a model folder to share); "
        "default: from the output suffix",
    )
    parser.add_argument("--opset", type=_opset, default=None, help="ONNX opset (default 17)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument(
        "--benchmark",
        type=at_least_1,
        metavar="SIZE",
        default=None,
        help="also time PyTorch fp32 against the exported file on a SIZE x SIZE image (CPU)",
    )
    parser.add_argument("--runs", type=at_least_1, default=5, help="timed runs for --benchmark (5)")
    parser.add_argument(
        "--threads",
        type=thread_count,  # bounded: a huge count dies inside the OpenMP runtime
        default=None,
        help="CPU threads for both PyTorch and onnxruntime (default: their own defaults)",
    )
    f = parser.add_argument_group("model folder (--format folder: docs/sharing.md)")
    f.add_argument(
        "--samples",
        metavar="SHEET_OR_PHOTOS",
        help="the sample sheet: an image (e.g. the run's preview.jpg), or a folder of photos "
        "of which 4 are stylized into one",
    )
    f.add_argument(
        "--evaluation",
        metavar="DIR",
        help="scripts/evaluate.py's --out folder: its evaluation.md goes into the model card",
    )
    f.add_argument(
        "--license",
        default=None,
        help="the Hub's licence id for the weights, in the card (default: mit)",
    )
    q = parser.add_argument_group("int8 quantization (ONNX, onnxruntime static quantization)")
    q.add_argument("--quantize", choices=["int8"], default=None, help="write an int8 ONNX file")
    q.add_argument(
        "--calibration",
        metavar="PHOTO_FOLDER",
        help="photos whose activations set the int8 ranges (searched recursively)",
    )
    q.add_argument(
        "--calibration-count", type=int, default=32, metavar="N", help="photos used (32)"
    )
    q.add_argument(
        "--calibration-size",
        type=int,
        default=256,
        metavar="S",
        help="side of the centre crops they are resized to (256)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """export_model.py: the exit code (0 done, 1 failed work, 2 bad usage, 141 stdout
    closed by its reader); argument errors return theirs too (one line, no SystemExit)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a one-line argument error (2)
        return int(e.code or 0)
    try:
        return run(args)
    except TransformerNetError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    # stdout's lines come after each file is written (write_stdout): the files stay whole
    except BrokenPipeError:  # the reader went away (`... | head`): stop quietly
        _silence_stdout()
        return 141  # what a shell reports for a command stopped by SIGPIPE
    except StdoutError as e:  # a full device
        print(f"error: cannot write to standard output ({e.strerror}); stopped", file=sys.stderr)
        _silence_stdout()
        return 1


def run(args: argparse.Namespace) -> int:
    """Write the file the arguments ask for, then check (and time) it: the exit code."""
    fmt = args.format or _SUFFIX_FORMATS.get(Path(args.output).suffix.lower())
    if fmt is None:
        raise ConfigError(
            f"{args.output}: unknown suffix; use .pth, .onnx, .pt or .ts, or pass --format"
        )
    _check_quantize_options(args, fmt)
    _check_folder_options(args, fmt)
    _check_output(args, fmt)
    if fmt == "folder":
        return export_folder(args)
    if Path(args.output).exists() and not args.overwrite:
        raise ConfigError(f"{args.output}: already exists (pass --overwrite)")
    model, meta = load_model(args.checkpoint)
    meta = {**meta, "exported_from": str(args.checkpoint)}
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quantize:
        return export_int8(model, meta, args)
    if fmt == "pth":
        path = save_model_file(model, args.output, meta=meta)
    else:
        from transformer_net.export import ONNX_OPSET, export_onnx, export_torchscript

        if fmt == "onnx":
            path = export_onnx(model, args.output, opset=args.opset or ONNX_OPSET, meta=meta)
        else:
            path = export_torchscript(model, args.output, meta=meta)
    _print_written(path, fmt, model)
    if fmt == "pth":
        return 0
    runner = exported_runner(path, fmt, threads=args.threads)
    if runner is None:
        return 0
    model = model.float().eval()
    rc = verify(model, *runner)
    if args.benchmark:
        benchmark({"PyTorch fp32 eager": model, runner[0]: runner[1]}, **_timing(args))
    return rc


def _print_written(path: Path, what: str, model) -> None:
    write_stdout(f"wrote {path} ({what}, {path.stat().st_size / 1e6:.1f} MB, {model.config})")


def _timing(args: argparse.Namespace) -> dict:
    return {"size": args.benchmark, "runs": args.runs}


def _check_output(args: argparse.Namespace, fmt: str) -> None:
    """One line before the model loads for an output that cannot be written, or that
    would replace the input model (--overwrite replaces an output, never the input)."""
    out, source = Path(args.output), Path(args.checkpoint)
    if fmt != "folder":
        if out.is_dir():
            raise ConfigError(f"{out}: a folder; {fmt} writes a file (name the file)")
        if out.exists() and source.exists() and os.path.samefile(out, source):
            raise ConfigError(f"{out}: the output is the input model; write to another path")
        if source.is_dir() and out.resolve().is_relative_to(source.resolve()):
            raise ConfigError(
                f"{out}: inside the input model folder {source}; write to another path"
            )
    # A model folder exported onto itself is allowed: all is read before anything is
    # written, and only the folder's files are replaced (model_folder._replace_in).
    check_writable(out)


def _check_folder_options(args: argparse.Namespace, fmt: str) -> None:
    """--samples, --evaluation and --license describe a model folder."""
    given = [
        o
        for o, v in (
            ("--samples", args.samples),
            ("--evaluation", args.evaluation),
            ("--license", args.license),
        )
        if v is not None
    ]
    if given and fmt != "folder":
        raise ConfigError(f"{', '.join(given)}: for --format folder only")
    if args.samples is not None and not Path(args.samples).exists():
        raise ConfigError(f"--samples {args.samples}: not found")


def export_folder(args: argparse.Namespace) -> int:
    """The model folder of args.checkpoint, read back and compared with the model."""
    from transformer_net.image import list_images
    from transformer_net.model_folder import DEFAULT_LICENSE, save_model_folder

    model, meta = load_model(args.checkpoint)
    sheet = Path(args.samples) if args.samples else None
    if sheet is not None and sheet.is_dir():
        photos = list_images(sheet)
        if not photos:
            raise ConfigError(f"--samples {sheet}: no images in the folder")
        sheet = sample_sheet(model, meta, photos[:SAMPLE_PHOTOS])
    folder = save_model_folder(
        args.checkpoint,
        args.output,
        license=args.license or DEFAULT_LICENSE,
        sample_sheet=sheet,
        evaluation=args.evaluation,
        overwrite=args.overwrite,
    )
    files = sorted(p for p in folder.iterdir() if p.is_file())
    size = sum(p.stat().st_size for p in files) / 1e6
    names = ", ".join(p.name for p in files)
    write_stdout(f"wrote {folder} (model folder, {size:.1f} MB: {names})")
    loaded, _ = load_model(folder)
    return verify(model.float().eval(), "the model folder", loaded.float().eval())


def sample_sheet(model, meta: dict, photos: list[Path]):
    """A PIL image, one row per photo: the photo, then the model's output for each style."""
    from transformer_net.contact_sheet import contact_sheet
    from transformer_net.image import load_image, to_uint8

    styles = list(meta.get("styles") or [])
    count = model.num_styles
    labels = styles if len(styles) == count else [f"style {k}" for k in range(count)]
    panels = []
    with torch.inference_mode():
        for photo in photos:
            image = load_image(photo, max_side=2 * SAMPLE_HEIGHT)
            panels.append(("photo", image))
            for k, label in enumerate(labels):
                panels.append(
                    (label, to_uint8(model(image[None].float(), k if count > 1 else None))[0])
                )
    return contact_sheet(panels, height=SAMPLE_HEIGHT, columns=1 + count)


def _check_quantize_options(args: argparse.Namespace, fmt: str) -> None:
    """--quantize and --calibration go together, and only with ONNX."""
    if args.quantize and fmt != "onnx":
        raise ConfigError(f"{args.output}: --quantize int8 writes ONNX files (.onnx)")
    if args.quantize and not args.calibration:
        raise ConfigError("--quantize int8 needs --calibration PHOTO_FOLDER")
    if args.calibration and not args.quantize:
        raise ConfigError("--calibration is for --quantize int8")
    if args.calibration_count < 1 or args.calibration_size < 1:
        raise ConfigError("--calibration-count and --calibration-size must be >= 1")


def export_int8(model, meta: dict, args: argparse.Namespace) -> int:
    """fp32 ONNX (checked against PyTorch), quantized to args.output, compared on photos."""
    from transformer_net.export import ONNX_INSTALL_HINT, ONNX_OPSET, export_onnx
    from transformer_net.quantize import photo_files, quantize_onnx

    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ConfigError(f"--quantize int8 needs onnxruntime: {ONNX_INSTALL_HINT}") from None
    photos = photo_files(args.calibration)
    count, size = args.calibration_count, args.calibration_size
    with tempfile.TemporaryDirectory(prefix="export-int8.") as tmp:
        fp32 = export_onnx(
            model, Path(tmp) / "fp32.onnx", opset=args.opset or ONNX_OPSET, meta=meta
        )
        fp32_runner = exported_runner(fp32, "onnx", threads=args.threads)
        model = model.float().eval()
        rc = verify(model, *fp32_runner)
        path = quantize_onnx(fp32, args.output, photos=photos, size=size, count=count)
        _print_written(path, f"onnx int8, calibrated on {min(count, len(photos))} photos", model)
        compare_int8(fp32, path, photos, count=count, size=size, threads=args.threads)
        if args.benchmark:
            int8_runner = exported_runner(path, "onnx", threads=args.threads)
            contenders = {"PyTorch fp32 eager": model, "onnxruntime fp32": fp32_runner[1]}
            benchmark({**contenders, "onnxruntime int8": int8_runner[1]}, **_timing(args))
    return rc


def compare_int8(
    fp32: Path, int8: Path, photos: list[Path], *, count: int, size: int, threads: int | None
) -> float:
    """Mean PSNR of int8 against fp32 outputs on photos left out of calibration, if any;
    printed, with a warning (not an error) below PSNR_WARNING_DB."""
    from transformer_net.quantize import calibration_image, output_psnr
    from transformer_net.runners import OnnxStylizer

    held_out = photos[count : count + HELD_OUT]
    which = f"{len(held_out)} photos not used for calibration"
    if not held_out:
        held_out = photos[:HELD_OUT]
        which = f"{len(held_out)} of the calibration photos (the folder has no others)"
    runners = [OnnxStylizer(model_path=p, device="cpu", threads=threads) for p in (fp32, int8)]
    values = []
    for photo in held_out:
        image = torch.from_numpy(calibration_image(photo, size)).to(torch.uint8)
        values.append(output_psnr(*(r.batch(image) for r in runners)))
    mean = statistics.fmean(values)
    write_stdout(f"int8 vs fp32 outputs on {which}, {size}x{size}: mean PSNR {mean:.1f} dB")
    if mean < PSNR_WARNING_DB:
        print(
            f"warning: {int8}: mean PSNR {mean:.1f} dB is below {PSNR_WARNING_DB:g} dB: int8 "
            "outputs visibly differ from fp32 (more or other calibration photos may help)",
            file=sys.stderr,
        )
    return mean


def exported_runner(path: Path, fmt: str, *, threads: int | None = None):
    """(runtime name, function (B, 3, H, W) float -> float) for the written file, or None."""
    from transformer_net.runners import ONNX_INSTALL_HINT, TorchScriptStylizer

    if fmt == "torchscript":
        # trusted: the file this run has just written (atomically) from a .pth
        module = TorchScriptStylizer(model_path=path, device="cpu", trust=True).model
        return "torch.jit.load", module
    try:
        import onnxruntime as ort
    except ImportError:
        write_stdout(f"not verified: onnxruntime is not installed ({ONNX_INSTALL_HINT})")
        return None
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return "onnxruntime", lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])


def verify(model, runtime: str, run, size: tuple[int, int] = (131, 97)) -> int:
    """Compare the exported file with PyTorch on a random image of odd size (0-255 units)."""
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0)) * 255
    with torch.inference_mode():
        expected = model(x)
        got = run(x)
    diff = (got - expected).abs().max().item()
    ok = got.shape == expected.shape and diff < 1e-2
    write_stdout(
        f"verified with {runtime} on a random {size[1]}x{size[0]} image: "
        f"max abs difference {diff:.2e} (0-255 units){'' if ok else ': TOO LARGE'}"
    )
    return 0 if ok else 1


def benchmark(contenders: dict[str, Callable], *, size: int, runs: int) -> None:
    """Median CPU latency of each (B, 3, H, W) float function, runs interleaved; the first
    is the baseline of the speed ratios and of the differences."""
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)) * 255
    times: dict[str, list[float]] = {name: [] for name in contenders}
    with torch.inference_mode():
        # warm-up (allocations, oneDNN/ORT kernel choice) and the outputs to compare
        outputs = {name: fn(x) for name, fn in contenders.items()}
        for _ in range(runs):
            for name, fn in contenders.items():
                start = time.perf_counter()
                fn(x)
                times[name].append(time.perf_counter() - start)
    first = next(iter(contenders))
    base = statistics.median(times[first])
    write_stdout(f"{size}x{size}, median of {runs} runs, {torch.get_num_threads()} threads:")
    for name, t in times.items():
        med = statistics.median(t)
        diff = (outputs[name] - outputs[first]).abs().max().item()
        note = f", max abs difference {diff:.2e}" if name != first else ""
        write_stdout(f"  {name:<20} {med * 1000:8.0f} ms  ({base / med:.2f}x{note})")


if __name__ == "__main__":
    sys.exit(main())
