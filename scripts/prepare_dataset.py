"""Decode a folder of photos once into a prepared dataset that trains several times faster.

A prepared folder (one uint8 array of center crops, see transformer_net/prepared.py)
is read several times faster than JPEGs are decoded: the measured rates are in
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from transformer_net.errors import ConfigError, TransformerNetError
from transformer_net.prepared import ARRAY_NAME, META_NAME, margin_size, prepare_dataset

EPILOG = """\
Each photo's shorter side is resized to SIZE and a SIZE x SIZE center crop is
stored; SIZE defaults to 1.125 x --image-size (288 for 256) so that training's
random crops still vary. COCO train2014 at 288 takes about 20.6 GB on disk.
Unreadable photos are skipped and listed in OUTPUT/meta.json.

examples:
  python scripts/prepare_dataset.py --input data/coco/train2014 --output data/coco/prepared288
  python scripts/prepare_dataset.py --input photos --output photos.prepared --image-size 512
  python scripts/prepare_dataset.py --input photos --output out --size 256 --workers 4 --overwrite
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prepare_dataset.py",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--input", type=Path, required=True, metavar="DIR", help="folder of photos (recursive)"
    )
    parser.add_argument(
        "--output", type=Path, required=True, metavar="DIR", help="prepared folder to write"
    )
    parser.add_argument(
        "--image-size",
        type=int,
        default=256,
        metavar="N",
        help="training crop size, data.image_size (default: %(default)s)",
    )
    parser.add_argument(
        "--size",
        type=int,
        metavar="S",
        help="stored size, >= --image-size (default: --image-size x 1.125, multiple of 4)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        metavar="N",
        help="decoding processes, 0: none (default: all CPUs, %(default)s)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing prepared OUTPUT"
    )
    return parser


def stored_size(args: argparse.Namespace) -> int:
    """The stored size S for ``args``; raises ConfigError naming the option that is off."""
    size = args.size if args.size is not None else margin_size(args.image_size)
    if args.image_size < 16 or args.image_size % 4:
        raise ConfigError(f"--image-size must be a multiple of 4 and >= 16, got {args.image_size}")
    if size < args.image_size:
        raise ConfigError(f"--size {size} is smaller than --image-size {args.image_size}")
    if args.workers < 0:
        raise ConfigError(f"--workers must be >= 0, got {args.workers}")
    if not args.overwrite and any((args.output / n).exists() for n in (ARRAY_NAME, META_NAME)):
        raise ConfigError(
            f"{args.output}: already holds a prepared dataset (add --overwrite to replace it)"
        )
    return size


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        size = stored_size(args)
        meta = prepare_dataset(
            source=args.input, output=args.output, size=size, workers=args.workers
        )
    except TransformerNetError as err:
        print(f"error: {err}", file=sys.stderr)  # one line by construction
        return err.exit_code
    except KeyboardInterrupt:
        print(f"\ninterrupted: {args.output} is incomplete; rerun the command", file=sys.stderr)
        return 130

    on_disk = sum((args.output / n).stat().st_size for n in (ARRAY_NAME, META_NAME))
    print(
        f"prepared {meta['count']} images of {size}x{size} "
        f"({len(meta['skipped'])} unreadable skipped) in {args.output}, {_human(on_disk)}"
    )
    print(f"next: python train.py data.root={args.output}")
    return 0


def _human(n: int) -> str:
    """Bytes as a short human-readable size: 20.6 GB, 3.1 MB."""
    if n < 1000:
        return f"{n} B"
    for unit in ("KB", "MB"):
        n /= 1000
        if n < 1000:
            return f"{n:.1f} {unit}"
    return f"{n / 1000:.1f} GB"


if __name__ == "__main__":
    sys.exit(main())
