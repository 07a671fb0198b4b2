"""Write a model file (for stylize.py) or a deployment file from a training checkpoint.

Training writes <output_dir>/<style>.pth at the end; this makes one from any
Lightning checkpoint along the way (or converts a PyTorch-examples state dict),
or exports the network as ONNX (onnxruntime and other runtimes; dynamic batch,
height and width) or TorchScript (torch.jit.load in Python or libtorch C++).
ONNX and TorchScript outputs are checked against PyTorch on a random image.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from transformer_net.checkpoint import load_model, save_model_file
from transformer_net.errors import TransformerNetError

FORMATS = ("pth", "onnx", "torchscript")
_SUFFIX_FORMATS = {".onnx": "onnx", ".pt": "torchscript", ".ts": "torchscript", ".pth": "pth"}

EPILOG = """\
examples:
  python scripts/export_model.py outputs/wave/checkpoints/last.ckpt wave.pth
  python scripts/export_model.py "outputs/wave/checkpoints/step=20000.ckpt" wave_20k.pth
  python scripts/export_model.py outputs/wave/wave.pth wave.onnx          # ONNX, opset 17
  python scripts/export_model.py outputs/wave/wave.pth wave.pt            # TorchScript
  python scripts/export_model.py wave.pth wave.model --format onnx
  python scripts/export_model.py wave.pth wave.onnx --benchmark 512     # + CPU latency
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="export_model.py",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "checkpoint", help="Lightning .ckpt, model file or TransformerNet state dict"
    )
    parser.add_argument("output", help="file to write (.pth, .onnx, .pt/.ts)")
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default=None,
        help="pth (model file), onnx or torchscript; default: from the output suffix",
    )
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument(
        "--benchmark",
        type=int,
        metavar="SIZE",
        default=None,
        help="also time PyTorch fp32 against the exported file on a SIZE x SIZE image (CPU)",
    )
    parser.add_argument("--runs", type=int, default=5, help="timed runs for --benchmark (5)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for both PyTorch and onnxruntime (default: their own defaults)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    fmt = args.format or _SUFFIX_FORMATS.get(Path(args.output).suffix.lower())
    if fmt is None:
        print(
            f"error: {args.output}: unknown suffix; use .pth, .onnx, .pt or .ts, or pass --format",
            file=sys.stderr,
        )
        return 2
    if Path(args.output).exists() and not args.overwrite:
        print(f"error: {args.output}: already exists (pass --overwrite)", file=sys.stderr)
        return 2
    try:
        model, meta = load_model(args.checkpoint)
    except TransformerNetError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    meta = {**meta, "exported_from": str(args.checkpoint)}
    if fmt == "pth":
        path = save_model_file(model, args.output, meta=meta)
    else:
        from transformer_net.export import ONNX_OPSET, export_onnx, export_torchscript

        if fmt == "onnx":
            path = export_onnx(model, args.output, opset=args.opset or ONNX_OPSET, meta=meta)
        else:
            path = export_torchscript(model, args.output, meta=meta)
    size_mb = path.stat().st_size / 1e6
    print(f"wrote {path} ({fmt}, {size_mb:.1f} MB, {model.config})")
    if fmt == "pth":
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    runner = exported_runner(path, fmt, threads=args.threads)
    if runner is None:
        return 0
    model = model.float().eval()
    rc = verify(model, *runner)
    if args.benchmark:
        benchmark(model, *runner, size=args.benchmark, runs=args.runs)
    return rc


def exported_runner(path: Path, fmt: str, *, threads: int | None = None):
    """(runtime name, function (B, 3, H, W) float -> float) for the written file, or None."""
    from transformer_net.runners import ONNX_INSTALL_HINT, TorchScriptStylizer

    if fmt == "torchscript":
        module = TorchScriptStylizer(model_path=path, device="cpu").model
        return "torch.jit.load", module
    try:
        import onnxruntime as ort
    except ImportError:
        print(f"not verified: onnxruntime is not installed ({ONNX_INSTALL_HINT})")
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
    print(
        f"verified with {runtime} on a random {size[1]}x{size[0]} image: "
        f"max abs difference {diff:.2e} (0-255 units){'' if ok else ': TOO LARGE'}"
    )
    return 0 if ok else 1


def benchmark(model, runtime: str, run, *, size: int, runs: int) -> None:
    """Median CPU latency of PyTorch fp32 (eager) and the exported file, runs interleaved."""
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)) * 255
    contenders = {"PyTorch fp32 eager": model, runtime: run}
    times: dict[str, list[float]] = {name: [] for name in contenders}
    with torch.inference_mode():
        # warm-up (allocations, oneDNN/ORT kernel choice) and the outputs to compare
        expected, got = (fn(x) for fn in contenders.values())
        for _ in range(runs):
            for name, fn in contenders.items():
                start = time.perf_counter()
                fn(x)
                times[name].append(time.perf_counter() - start)
    base = statistics.median(times["PyTorch fp32 eager"])
    diff = (got - expected).abs().max().item()
    print(
        f"{size}x{size}, median of {runs} runs, {torch.get_num_threads()} threads "
        f"(max abs difference {diff:.2e}):"
    )
    for name, t in times.items():
        med = statistics.median(t)
        print(f"  {name:<20} {med * 1000:8.0f} ms  ({base / med:.2f}x)")


if __name__ == "__main__":
    sys.exit(main())
