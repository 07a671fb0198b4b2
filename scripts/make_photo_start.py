"""Turn a photo-reconstruction run into the shipped ``init_from=photo`` start of a preset.

The run is ``python train.py experiment=photo_start model=PRESET`` (the content loss
alone: configs/experiment/photo_start.yaml). This writes its network as the model
folder ``transformer_net/warm_starts/photo-PRESET/`` with fp16 weights (a start
needs no more precision: the first optimizer step changes every weight by far more
than fp16's rounding), and prints how well it reproduces held-out photos (PSNR
against the photo, and the fp16 network's largest difference from the fp32 one).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from transformer_net.checkpoint import read_model_file
from transformer_net.errors import TransformerNetError
from transformer_net.image import list_images, load_image
from transformer_net.model import TransformerNet
from transformer_net.model_folder import save_model_folder
from transformer_net.quantize import output_psnr
from transformer_net.warm_start import PHOTO_STARTS

EPILOG = """\
examples:
  python train.py experiment=photo_start model=slim data.root=../shared/data \\
      loss.vgg_weights=../shared/vgg16/vgg16_caffe_to_relu4_3.pth
  python scripts/make_photo_start.py outputs/photo_start_slim/photo.pth --preset slim \\
      --photos ../shared/images/content
"""


def psnr(net: TransformerNet, photo: torch.Tensor) -> float:
    """PSNR (dB) of the network's output, as saved, against the (3, H, W) photo."""
    with torch.no_grad():
        return output_psnr(net(photo.float()[None])[0], photo)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="make_photo_start.py",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", help="the photo_start run's model file or checkpoint")
    p.add_argument("--preset", required=True, help="the configs/model preset it was trained as")
    p.add_argument("--photos", required=True, help="held-out photos to report the PSNR on")
    p.add_argument("--size", type=int, default=256, help="longer side of those photos (256)")
    p.add_argument(
        "--recipe",
        default=None,
        help="the training command, for the card (default: the experiment=photo_start one)",
    )
    p.add_argument("--out", default=None, help="default: transformer_net/warm_starts/photo-PRESET")
    args = p.parse_args(argv)
    try:
        model_args, weights, meta = read_model_file(args.model)
        photos = [load_image(f, max_side=args.size) for f in list_images(args.photos)]
    except TransformerNetError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    net = TransformerNet(**model_args).eval()
    net.load_state_dict(weights)
    half = TransformerNet(**model_args).eval()
    half.load_state_dict({k: v.half().float() for k, v in weights.items()})
    scores = [psnr(net, photo) for photo in photos]
    with torch.no_grad():
        drift = max(
            float((net(x.float()[None]) - half(x.float()[None])).abs().max()) for x in photos
        )
    keep = {"global_step", "image_size", "loss", "metrics", "created"}
    meta = {k: v for k, v in meta.items() if k in keep}
    if isinstance(meta.get("loss"), dict):  # no local paths: a local copy of the Caffe VGG
        meta["loss"] = {**meta["loss"], "vgg_weights": "caffe"}
    meta.update(
        {
            "style": f"photo-{args.preset}",
            "styles": [f"photo-{args.preset}"],
            "purpose": "init_from=photo: a network that reproduces photos, to start "
            "style training from (transformer_net/warm_start.py)",
            "recipe": args.recipe or f"python train.py experiment=photo_start model={args.preset}",
            "psnr_db": round(sum(scores) / len(scores), 2),
        }
    )
    out = Path(args.out or PHOTO_STARTS / f"photo-{args.preset}")
    state_dict = {k: v.half() for k, v in weights.items()}  # fp16: half the bytes
    save_model_folder((model_args, state_dict, meta), out, overwrite=True)
    size = sum(f.stat().st_size for f in out.iterdir()) / 1e6
    print(
        f"wrote {out} ({size:.2f} MB): PSNR {meta['psnr_db']:.2f} dB on {len(photos)} photos "
        f"at {args.size} px; fp16 output within {drift:.3f} of fp32 (0-255)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
