"""Download and extract the COCO train2014 photos used to train style networks.

COCO (Lin et al. 2014, https://cocodataset.org) train2014 is the training set of
Johnson et al. 2016.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from transformer_net.download import COCO_TRAIN2014_COUNT, COCO_TRAIN2014_URL, download_coco
from transformer_net.errors import DownloadError, TransformerNetError

EPILOG = """\
The archive is about 13 GB and unpacks to 82,783 JPEG files (about 13 GB more).
An interrupted download resumes where it stopped when the same command is rerun.

examples:
  python scripts/download_coco.py
  python scripts/download_coco.py --root /data/coco --keep-zip
  python scripts/download_coco.py --url http://mirror.example/train2014.zip --no-verify
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="download_coco.py",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=Path("data/coco"),
        metavar="DIR",
        help="folder to download and extract into (default: %(default)s)",
    )
    parser.add_argument(
        "--keep-zip", action="store_true", help="keep the zip archive after extracting it"
    )
    parser.add_argument(
        "--url", default=COCO_TRAIN2014_URL, help="where to get the zip (default: %(default)s)"
    )
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="do not check the number of extracted images (for a mirror or a subset)",
    )
    args = parser.parse_args(argv)

    try:
        images = download_coco(
            args.root,
            url=args.url,
            expected_count=None if args.no_verify else COCO_TRAIN2014_COUNT,
            keep_zip=args.keep_zip,
        )
    except TransformerNetError as err:
        print(f"error: {err}", file=sys.stderr)  # one line by construction
        # A download that failed is failed work (1), as this script has always
        # said; DownloadError's own exit_code (2, bad input) serves train.py.
        return 1 if isinstance(err, DownloadError) else err.exit_code
    except KeyboardInterrupt:
        print(
            "\ninterrupted: rerun the same command to resume the download where it stopped",
            file=sys.stderr,
        )
        return 130

    print(f"COCO train2014 images are in {images}")
    print(f"next: python train.py data.root={images}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
