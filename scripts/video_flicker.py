"""Measure the flicker of a stylized clip, with and without temporal smoothing.

Flicker (``transformer_net.video.flicker``) is mean |out_t - out_{t-1}| over
mean |in_t - in_{t-1}|: how much more the stylized frames change from one to the
next than the input frames do. The stylized frames are measured before video
encoding (encoding would blur the numbers). Also printed: the mean absolute
difference between the smoothed frames and the plain per-frame stylization (how
far smoothing moves the result, 0-255).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from transformer_net.errors import TransformerNetError
from transformer_net.runners import open_stylizer
from transformer_net.video import TemporalSmoother, flicker
from transformer_net.video_io import read_frames

EPILOG = """\
examples:
  python scripts/video_flicker.py --model outputs/wave/wave.pth --input ../shared/video/fox.mp4
  python scripts/video_flicker.py --model wave.pth --input clip.mp4 --frames 120 --size 512 \\
      --smoothing 0.5 0.7 0.9
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="video_flicker.py",
        description=__doc__.split("\n\n")[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model", required=True, help="model file (.pth), training checkpoint, .onnx or .pt"
    )
    p.add_argument("--input", required=True, help="video file")
    p.add_argument("--frames", type=int, default=60, help="first N frames (60)")
    p.add_argument("--size", type=int, default=256, help="longer side in pixels (256)")
    p.add_argument(
        "--smoothing",
        type=float,
        nargs="+",
        default=[0.5, 0.7, 0.9],
        help="--temporal-smoothing values to compare with 0 (0.5 0.7 0.9)",
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="fp32", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--batch-size", type=int, default=2)
    args = p.parse_args(argv)
    try:
        frames, rate = read_frames(args.input, max_side=args.size, max_frames=args.frames)
        stylizer = open_stylizer(args.model, device=args.device, precision=args.precision)
        smoothers = [TemporalSmoother(strength=a) for a in args.smoothing]
    except TransformerNetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    t, _, h, w = frames.shape
    start = time.perf_counter()
    stylized = torch.cat(
        [stylizer.batch(frames[i : i + args.batch_size]) for i in range(0, t, args.batch_size)]
    )  # (T, 3, H, W) uint8
    seconds = time.perf_counter() - start
    print(
        f"{args.input}: {t} frames {w}x{h} at {float(rate):.3g} fps; model {args.model} "
        f"on {stylizer.device} ({t / seconds:.1f} frames/s)"
    )
    print("| temporal smoothing | flicker | mean abs difference to A = 0 |")
    print("| --- | --- | --- |")
    print(f"| 0 (off) | {flicker(frames, stylized):.3f} | 0 |")
    for smoother in smoothers:
        out = smoother(frames, stylized)
        diff = (out.float() - stylized.float()).abs().mean().item()
        print(f"| {smoother.strength:g} | {flicker(frames, out):.3f} | {diff:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
