"""Compare a trained network with Gatys optimization on the same photos and loss.

For each photo: the content, style, TV and total loss of the feed-forward output
and of Gatys et al.'s optimization after 50, 100 and 300 L-BFGS iterations (at
the same size, with the same loss network and weights), the time of each, and a
contact sheet (content | style | feed-forward | Gatys ...). Johnson et al. 2016
report that their networks reach the loss of 50 to 100 iterations of a baseline
that starts from noise (--init noise); by default Gatys starts from the photo,
a stronger yardstick.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from transformer_net.checkpoint import style_thumbnails
from transformer_net.contact_sheet import contact_sheet
from transformer_net.errors import ConfigError, TransformerNetError
from transformer_net.image import ImageBytes, list_images, load_image, pil_to_tensor, save_image
from transformer_net.inference import TorchStylizer
from transformer_net.loss import PerceptualLoss
from transformer_net.optimize import INITS, optimize_image, perceptual_loss
from transformer_net.vgg import WEIGHT_NAMES, default_preprocessing

EPILOG = """\
examples:
  python scripts/evaluate.py --model outputs/wave/wave.pth --images ../shared/images/content
  python scripts/evaluate.py --model m.pth --images photos/ --size 256 --iterations 50,100 \\
      --vgg-weights vgg16_caffe.pth --preprocessing caffe --out docs/eval_wave
  # Gatys started from the photo and from noise (Johnson et al.'s baseline), side by side
  python scripts/evaluate.py --model m.pth --images photos/ --init content,noise
  # the network's loss over training (train with callbacks.model_checkpoint.save_top_k=-1
  # to keep every step=N checkpoint); the Gatys levels of these photos are evaluated once
  for c in outputs/wave/checkpoints/step=*.ckpt; do
    python scripts/evaluate.py --model "$c" --images photos/ --iterations 0 \\
        --out "eval/$(basename "$c" .ckpt)" --tensorboard outputs/wave/tb/eval; done

The loss settings come from the model file's metadata (written by train.py),
and the style image is the painting the model holds (its 256 px thumbnail; pass
--style painting.jpg for a larger style size); --style, --vgg-weights,
--preprocessing and the weights override them. Without metadata the loss
network is the default, caffe (Johnson et al.'s VGG-16, downloaded once into the
torch hub cache; offline: --vgg-weights /path/vgg16.pth --preprocessing caffe).
"""


def build_loss(args, meta: dict, device) -> tuple[PerceptualLoss, torch.Tensor]:
    """The model's training loss (from its metadata, overridden by the options), and its
    style image (3, H, W) uint8."""
    cfg = dict(meta.get("loss") or {})
    # The painting the model holds (checkpoint.style_thumbnails), never a path its metadata
    # names: a model from elsewhere could name any image here, shown in the sheets.
    style_path = args.style
    if style_path is None:
        thumbnail = style_thumbnails(meta, 1)[0]
        if thumbnail is None:
            raise ConfigError(
                f"{args.model}: the model holds no style image: pass --style painting.jpg"
            )
        style_path = ImageBytes(thumbnail.numpy().tobytes(), name=f"{args.model}: its painting")
    for key in (
        "vgg_weights",
        "preprocessing",
        "content_weight",
        "style_weight",
        "tv_weight",
        "grid_weight",
    ):
        value = getattr(args, key)
        if value is not None:
            cfg[key] = value
    weights = str(cfg.setdefault("vgg_weights", "caffe"))
    if args.preprocessing is None and (
        args.vgg_weights in WEIGHT_NAMES or "preprocessing" not in cfg
    ):
        cfg["preprocessing"] = default_preprocessing(weights)  # a named release has its own
    style_size = args.style_size or meta.get("image_size") or args.size
    style = load_image(style_path, max_side=style_size)
    hint = "--vgg-weights /path/vgg16.pth --preprocessing {preprocessing}"  # offline advice
    return perceptual_loss(style, device=device, hint=hint, **cfg), style


def losses_of(loss: PerceptualLoss, image: torch.Tensor, content: torch.Tensor, device) -> dict:
    """The losses of ``image`` (3, H, W) against ``content``, and its grid peak."""
    with torch.no_grad():
        out = loss(image.to(device).float()[None], content.to(device).float()[None])
    return {k: float(out[k]) for k in ("content", "style", "tv", "total")} | {
        "grid": grid_peak(image)
    }


def grid_peak(image: torch.Tensor) -> float | None:
    """How strongly ``image`` (3, H, W) repeats every 2 and 4 pixels: 1 is not at all.

    The texture a stride-4 decoder leaves (docs/training.md, "The grid texture")
    shows in the spectrum of the image as peaks at the frequencies of periods 2
    and 4. Each peak is divided by the median of the spectrum around it, and the
    peaks (vertical, horizontal and diagonal) are averaged. Photos score about
    1.4. None for images under 32 px.
    """
    n = min(image.shape[-2:])
    if n < 32:
        return None
    gray = image[:, :n, :n].float().mean(dim=0)  # (n, n) top-left square
    spectrum = torch.fft.fft2(gray - gray.mean()).abs()
    ratios = []
    for k in (n // 2, n // 4, 3 * n // 4):
        for u, v in ((k, 0), (0, k), (k, k)):
            around = [
                spectrum[(u + du) % n, (v + dv) % n]
                for du in range(-3, 4)
                for dv in range(-3, 4)
                if (du, dv) != (0, 0)
            ]
            ratios.append(float(spectrum[u, v] / (torch.stack(around).median() + 1e-9)))
    return sum(ratios) / len(ratios)


def evaluate(args) -> dict:
    """Every photo: the network's output and Gatys' at each iteration count, their losses,
    a contact sheet; then the report (JSON, Markdown, optionally TensorBoard)."""
    iterations = parse_iterations(args.iterations)
    inits = parse_inits(args.init)
    # fp32 as in training: the losses compare the network with the optimization
    stylizer = TorchStylizer(model_path=args.model, device=args.device, precision="fp32")
    device = stylizer.device
    loss, style = build_loss(args, stylizer.meta, device)
    photos = (
        list_images(args.images)[: args.max_images]
        if Path(args.images).is_dir()
        else [Path(args.images)]
    )
    if not photos:
        raise ConfigError(f"{args.images}: no images found")
    out_dir = Path(args.out)
    rows = []
    sheets: dict[str, Image.Image] = {}
    for path in tqdm(photos, desc="photos", unit="photo", file=sys.stderr):
        content = load_image(path, max_side=args.size)  # (3, H, W) uint8
        ff, ff_time = stylizer.timed(content)
        rows.append(
            {
                "image": path.name,
                "method": "feed-forward",
                "seconds": ff_time,
                **losses_of(loss, ff, content, device),
            }
        )
        panels = [("content", content), ("style", style), ("feed-forward", ff)]
        line = f"{path.name}: feed-forward {rows[-1]['total']:.4g}"
        for init in inits if iterations else []:
            gatys_rows, gatys_panels = gatys_levels(content, loss, iterations, init, device)
            rows += [{"image": path.name, **row} for row in gatys_rows]
            panels += gatys_panels
            last = gatys_rows[-1]
            line += f", {last['method'].capitalize()} {last['total']:.4g}"
        sheet = contact_sheet(panels, height=content.shape[1])
        save_image(sheet, out_dir / f"{path.stem}_sheet.jpg")
        sheets[path.stem] = sheet
        tqdm.write(line, file=sys.stderr)
    summary = summarize(rows)
    report = {
        "model": str(args.model),
        "size": args.size,
        "device": str(device),
        "init": inits,
        "rows": rows,
        "summary": summary,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "evaluation.json").write_text(json.dumps(report, indent=2))
    (out_dir / "evaluation.md").write_text(markdown(summary, rows))
    if args.tensorboard:
        step = int(stylizer.meta.get("global_step") or 0)
        write_tensorboard(args.tensorboard, step, summary, sheets)
    return report


def gatys_levels(
    content: torch.Tensor, loss: PerceptualLoss, iterations: list[int], init: str, device
) -> tuple[list[dict], list[tuple[str, torch.Tensor]]]:
    """One Gatys run of max(iterations) from ``init``: a row (method, seconds, losses)
    and a labelled panel for the best image at each count in ``iterations``."""
    snapshots: dict[int, torch.Tensor | None] = dict.fromkeys(iterations)
    start = time.perf_counter()
    optimize_image(
        content=content, loss=loss, iterations=max(iterations), init=init, snapshots=snapshots
    )
    seconds = time.perf_counter() - start
    # "gatys-100" starts from the photo; "gatys-noise-100" from noise, as
    # Johnson et al.'s baseline does (their "50 to 100 iterations" is that one).
    tag = "" if init == "content" else f"{init}-"
    rows, panels = [], []
    for its in iterations:
        image = snapshots[its]
        if image is None:  # L-BFGS stopped early (converged): use the final image
            image = [v for v in snapshots.values() if v is not None][-1]
        rows.append(
            {
                "method": f"gatys-{tag}{its}",
                "seconds": seconds * its / max(iterations),
                **losses_of(loss, image, content, device),
            }
        )
        panels.append((f"Gatys {its}" + (f" ({init})" if tag else ""), image))
    return rows, panels


def parse_iterations(text: str) -> list[int]:
    """``"50,100,300"`` -> [50, 100, 300]; ``"0"`` or ``"none"`` -> [] (feed-forward only:
    the Gatys levels do not change between checkpoints of one run, so evaluate them once)."""
    if text.strip().lower() in ("0", "none", ""):
        return []
    try:
        counts = sorted({int(i) for i in text.split(",")})
    except ValueError:
        counts = [0]
    if counts[0] < 1:
        raise ConfigError(
            f"--iterations: expected positive counts separated by commas (or 0), got {text!r}"
        )
    return counts


def parse_inits(text: str) -> list[str]:
    """``"content,noise"`` -> ["content", "noise"]: the starting images of Gatys runs."""
    inits = list(dict.fromkeys(i.strip() for i in text.split(",") if i.strip()))
    bad = [i for i in inits if i not in INITS]
    if bad or not inits:
        raise ConfigError(
            f"--init: expected {' or '.join(INITS)} (or both, separated by a comma), got {text!r}"
        )
    return inits


def write_tensorboard(log_dir: str, step: int, summary: list[dict], sheets: dict) -> None:
    """Mean losses per method and the contact sheets, at the model's training step.

    Evaluating several checkpoints of one run into the same folder plots the
    feed-forward loss against the Gatys levels over training.
    """
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir) as writer:
        for row in summary:
            for key in ("content", "style", "tv", "total"):
                writer.add_scalar(f"eval/{row['method']}/{key}", row[key], step)
        for name, sheet in sheets.items():
            image = pil_to_tensor(sheet.convert("RGB"))  # (3, H, W) uint8
            writer.add_image(f"eval/{name}", image, step)
        writer.add_text("eval/summary", markdown(summary, []), step)


def summarize(rows: list[dict]) -> list[dict]:
    methods = list(dict.fromkeys(r["method"] for r in rows))
    out = []
    for m in methods:
        sel = [r for r in rows if r["method"] == m]
        mean = {
            k: sum(r[k] for r in sel) / len(sel)
            for k in ("content", "style", "tv", "total", "seconds")
        }
        peaks = [r["grid"] for r in sel if r.get("grid") is not None]
        mean["grid"] = sum(peaks) / len(peaks) if peaks else None
        out.append({"method": m, "images": len(sel), **mean})
    return out


def _peak(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def markdown(summary: list[dict], rows: list[dict]) -> str:
    head = (
        "| method | content | style | TV | total | grid peak | seconds / image |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n"
    )
    body = "".join(
        f"| {s['method']} | {s['content']:.4g} | {s['style']:.4g} | {s['tv']:.4g} | "
        f"{s['total']:.4g} | {_peak(s.get('grid'))} | {s['seconds']:.3g} |\n"
        for s in summary
    )
    text = f"## Mean over images\n\n{head}{body}"
    if rows:
        text += (
            "\n## Per image\n\n| image | method | total | seconds |\n| --- | --- | ---: | ---: |\n"
        )
        text += "".join(
            f"| {r['image']} | {r['method']} | {r['total']:.4g} | {r['seconds']:.3g} |\n"
            for r in rows
        )
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="evaluate.py",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="model file, checkpoint or state dict")
    p.add_argument("--images", required=True, help="a photo or a folder of photos")
    p.add_argument("--out", default="evaluation", help="folder for sheets and the report")
    p.add_argument("--size", type=int, default=256, help="longer side of the photos (256)")
    p.add_argument(
        "--iterations",
        default="50,100,300",
        help="Gatys L-BFGS iterations to report; 0: the network only",
    )
    p.add_argument(
        "--init",
        default="content",
        help="start of the Gatys runs: content (the photo, the strongest yardstick), noise "
        "(Johnson et al.'s baseline), or content,noise for both",
    )
    p.add_argument("--max-images", type=int, default=None)
    p.add_argument("--style", default=None, help="style image (default: from the model file)")
    p.add_argument("--style-size", type=int, default=None)
    p.add_argument(
        "--vgg-weights",
        default=None,
        help="caffe (Johnson et al.'s VGG-16), imagenet (torchvision's) or a .pth file "
        "(default: as in the model file, else caffe)",
    )
    p.add_argument(
        "--preprocessing",
        choices=["torchvision", "caffe"],
        default=None,
        help="default: that of a named --vgg-weights (imagenet: torchvision, caffe: caffe), "
        "else as in the model file, else caffe",
    )
    p.add_argument("--content-weight", type=float, default=None)
    p.add_argument("--style-weight", type=float, default=None)
    p.add_argument("--tv-weight", type=float, default=None)
    p.add_argument(
        "--grid-weight",
        type=float,
        default=None,
        help="the grid penalty's weight (loss.grid_weight); 0 compares networks trained "
        "with and without it on the same loss",
    )
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--tensorboard",
        default=None,
        metavar="DIR",
        help="also log the losses and sheets to TensorBoard (e.g. outputs/wave/tb/eval)",
    )
    args = p.parse_args(argv)
    try:
        report = evaluate(args)
    except TransformerNetError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    print(markdown(report["summary"], []))
    print(f"wrote {Path(args.out) / 'evaluation.md'} and contact sheets", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
