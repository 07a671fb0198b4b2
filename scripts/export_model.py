"""Write a small model file (for stylize.py) from a training checkpoint.

Training writes <output_dir>/<style>.pth at the end; this makes one from any
Lightning checkpoint along the way (or converts a PyTorch-examples state dict).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from transformer_net.checkpoint import ModelFileError, load_model, save_model_file

EPILOG = """\
examples:
  python scripts/export_model.py outputs/wave/checkpoints/last.ckpt wave.pth
  python scripts/export_model.py "outputs/wave/checkpoints/step=20000.ckpt" wave_20k.pth
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
    parser.add_argument("output", help="model file to write (.pth)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    args = parser.parse_args(argv)
    if Path(args.output).exists() and not args.overwrite:
        print(f"error: {args.output}: already exists (pass --overwrite)", file=sys.stderr)
        return 2
    try:
        model, meta = load_model(args.checkpoint)
    except ModelFileError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    path = save_model_file(model, args.output, meta={**meta, "exported_from": str(args.checkpoint)})
    size_mb = path.stat().st_size / 1e6
    print(f"wrote {path} ({size_mb:.1f} MB, {model.config})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
