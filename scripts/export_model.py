"""Write a model file (for stylize.py) or a deployment file from a training checkpoint.

Training writes <output_dir>/<style>.pth at the end; this makes one from any
Lightning checkpoint along the way (or converts a PyTorch-examples state dict),
or exports the network as ONNX (onnxruntime and other runtimes; dynamic batch,
height and width) or TorchScript (torch.jit.load in Python or libtorch C++).
ONNX and TorchScript outputs are checked against PyTorch on a random image.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from transformer_net.checkpoint import ModelFileError, load_model, save_model_file

FORMATS = ("pth", "onnx", "torchscript")
_SUFFIX_FORMATS = {".onnx": "onnx", ".pt": "torchscript", ".ts": "torchscript", ".pth": "pth"}

EPILOG = """\
examples:
  python scripts/export_model.py outputs/wave/checkpoints/last.ckpt wave.pth
  python scripts/export_model.py "outputs/wave/checkpoints/step=20000.ckpt" wave_20k.pth
  python scripts/export_model.py outputs/wave/wave.pth wave.onnx          # ONNX, opset 17
  python scripts/export_model.py outputs/wave/wave.pth wave.pt            # TorchScript
  python scripts/export_model.py wave.pth wave.model --format onnx
"""


def main(argv: list[str] | None = None) -> int:
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
        "--format", choices=FORMATS, default=None,
        help="pth (model file), onnx or torchscript; default: from the output suffix",
    )  # fmt: skip
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    args = parser.parse_args(argv)
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
    except ModelFileError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
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
    if fmt != "pth":
        return verify(model, path, fmt)
    return 0


def verify(model, path: Path, fmt: str, size: tuple[int, int] = (131, 97)) -> int:
    """Compare the exported file with PyTorch on a random image of odd size (0-255 units)."""
    from transformer_net.export import ONNX_INSTALL_HINT

    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0)) * 255
    with torch.inference_mode():
        expected = model.float()(x)
    if fmt == "onnx":
        try:
            import onnxruntime as ort
        except ImportError:
            print(f"not verified: onnxruntime is not installed ({ONNX_INSTALL_HINT})")
            return 0
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
        runtime = "onnxruntime"
    else:
        from transformer_net.export import TorchScriptStylizer

        with torch.inference_mode():
            got = TorchScriptStylizer(model_path=path, device="cpu").model(x)
        runtime = "torch.jit.load"
    diff = (got - expected).abs().max().item()
    ok = got.shape == expected.shape and diff < 1e-2
    print(
        f"verified with {runtime} on a random {size[1]}x{size[0]} image: "
        f"max abs difference {diff:.2e} (0-255 units){'' if ok else ': TOO LARGE'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
