"""Training recipes compared at equal wall-clock time, against Gatys optimization.

Each variant is a ``train.py`` run (the common overrides plus its own) that writes a
model file at marks of training time (``callbacks.TimedSnapshots``: validation
excluded) and stops after the last. Variants run ``--lanes`` at a time, each with
``cores / lanes`` threads, so that variants running side by side get equal
compute. Every snapshot is then evaluated on held-out photos (``evaluate.py``, the
network only) at each ``--eval-sizes``; ``--reference`` adds Gatys levels from
``evaluate.py``'s ``evaluation.json`` files (same photos and sizes). The report:
``time_to_quality.json``, ``time_to_quality.md`` (a table per size),
``time_to_quality.png`` (loss against minutes, Gatys levels as lines) and a
contact sheet per size at the last mark (content | one panel per variant).

The question is Johnson et al. 2016's: how close does a feed-forward network come
to Gatys et al.'s optimization, here per minute of training on a given machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import evaluate as evaluate_script  # scripts/evaluate.py (this folder)
import torch
from tqdm import tqdm

from transformer_net.contact_sheet import contact_sheet
from transformer_net.errors import ConfigError
from transformer_net.image import list_images, load_image, save_image
from transformer_net.inference import TorchStylizer

ROOT = Path(__file__).resolve().parent.parent

EPILOG = """\
examples:
  # today's default against the photo start, 10 and 20 minutes each, two at a time
  python scripts/time_to_quality.py --out outputs/ttq --minutes 10,20 \\
      --common "style=wave style.size=128 data.image_size=128" \\
      --variant scratch= --variant photo=init_from=photo \\
      --eval-images ../shared/images/content --max-images 2 --eval-sizes 128,256 \\
      --reference 128=docs/eval_wave_init/evaluation.json
  # the report again from the snapshots already written (no training)
  python scripts/time_to_quality.py --out outputs/ttq --minutes 10,20 --report-only ...
"""


def parse_variant(text: str, minutes: list[float]) -> tuple[str, list[str], list[float]]:
    """``NAME[@MARKS]=OVERRIDES`` -> (name, overrides, marks; default ``minutes``)."""
    head, sep, overrides = text.partition("=")
    name, at, marks = head.partition("@")
    if not sep or not name or "/" in name:
        raise ConfigError(
            f"--variant {text!r}: expected NAME[@MINUTES]=OVERRIDES (overrides may be empty)"
        )
    return name, shlex.split(overrides), parse_numbers(marks, "--variant") if at else minutes


def parse_numbers(text: str, what: str, kind: type = float) -> list:
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{what} {text!r}: expected comma-separated numbers") from None
    if not values or min(values) <= 0:
        raise ConfigError(f"{what} {text!r}: expected positive numbers")
    return values


def train_command(args, name: str, overrides: list[str], minutes: list[float]) -> list[str]:
    run_dir = Path(args.out) / "runs" / name
    marks = "[" + ",".join(f"{m:g}" for m in minutes) + "]"
    snapshots = (
        "+callbacks.timed_snapshots={_target_:transformer_net.callbacks.TimedSnapshots,"
        f"dirpath:'{run_dir / 'snapshots'}',minutes:{marks},name:'${{style.name}}'}}"
    )
    return [
        sys.executable,
        str(ROOT / "train.py"),
        *shlex.split(args.common),
        *overrides,
        f"output_dir={run_dir}",
        "overwrite=true",
        "trainer.enable_progress_bar=false",
        snapshots,
    ]


def snapshot_path(args, name: str, minutes: float) -> Path:
    return Path(args.out) / "runs" / name / "snapshots" / f"minutes={minutes:g}.pth"


def run_variant(args, name: str, overrides: list[str], minutes: list[float]) -> int:
    """Train one variant (skipped when all its snapshots exist); returns the exit code."""
    if all(snapshot_path(args, name, m).is_file() for m in minutes):
        return 0
    threads = threads_per_lane(args)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    command = train_command(args, name, overrides, minutes)
    log = Path(args.out) / "runs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        out.write(shlex.join(command) + "\n")
        out.flush()
        started = time.monotonic()
        code = subprocess.call(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        out.write(f"\nexit {code} after {time.monotonic() - started:.0f} s\n")
    return code


def threads_per_lane(args) -> int:
    return args.threads or max(1, (os.cpu_count() or 1) // args.lanes)


def evaluate_snapshot(args, path: Path, size: int) -> dict:
    out = path.parent.parent / "eval" / f"{path.stem}_{size}"
    report_file = out / "evaluation.json"
    if not report_file.is_file() or report_file.stat().st_mtime < path.stat().st_mtime:
        argv = ["--model", str(path), "--images", args.eval_images, "--size", str(size)]
        argv += ["--iterations", "0", "--out", str(out)]
        if args.max_images:
            argv += ["--max-images", str(args.max_images)]
        argv += shlex.split(args.eval_args)
        with contextlib.redirect_stdout(sys.stderr):  # its table: only the report's on stdout
            code = evaluate_script.main(argv)
        if code:
            raise SystemExit(code)
    report = json.loads(report_file.read_text())
    row = next(r for r in report["summary"] if r["method"] == "feed-forward")
    return {k: row.get(k) for k in ("total", "content", "style", "grid")}


def references(args) -> dict[int, dict[str, float]]:
    """size -> Gatys method (those of --levels) -> mean total loss, from evaluate.py reports."""
    levels: dict[int, dict[str, float]] = {}
    for item in args.reference:
        size, sep, file = item.partition("=")
        if not sep:
            raise ConfigError(f"--reference {item!r}: expected SIZE=evaluation.json")
        report = json.loads(Path(file).read_text())
        rows = [r for r in report["summary"] if r["method"] in args.levels.split(",")]
        levels.setdefault(int(size), {}).update({r["method"]: r["total"] for r in rows})
    return levels


def markdown(results: dict, levels: dict, minutes: list[float], sizes: list[int]) -> str:
    names = list(results)
    lines = []
    for size in sizes:
        lines += [f"### Held-out total loss at {size} px", ""]
        lines.append("| minutes | " + " | ".join(names) + " |")
        lines.append("| ---: |" + " ---: |" * len(names))
        labels = [f"{m:g}" for m in minutes]
        labels += sorted({k for r in results.values() for k in r["points"]} - set(labels))
        for label in labels:
            cells = []
            for name in names:
                point = results[name]["points"].get(label)
                cells.append(_cell(point, size) if point else "")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
        for method, total in sorted(levels.get(size, {}).items()):
            lines.append(f"- {method}: {total:.3g}")
        lines.append("")
    return "\n".join(lines)


def _cell(point: dict, size: int) -> str:
    """``2.47e+05 (step 642; grid 5.32)``: the total, the step, and the grid peak if known."""
    losses = point[str(size)]
    grid = f"; grid {losses['grid']:.2f}" if losses.get("grid") is not None else ""
    return f"{losses['total']:.3g} (step {point['step']}{grid})"


def plot(results: dict, levels: dict, sizes: list[int], path: Path) -> bool:
    """Loss against minutes per variant, Gatys levels as dashed lines (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing (pip install matplotlib): no plot", file=sys.stderr)
        return False
    fig, axes = plt.subplots(1, len(sizes), figsize=(6.5 * len(sizes), 4.5), squeeze=False)
    for ax, size in zip(axes[0], sizes, strict=True):
        for name, result in results.items():
            points = sorted(result["points"].values(), key=lambda p: p["minutes"])
            xs = [p["minutes"] for p in points if str(size) in p]
            ys = [p[str(size)]["total"] for p in points if str(size) in p]
            ax.plot(xs, ys, marker="o", label=name)
        # The Gatys levels as gray lines: from the photo dashed and named on the left,
        # from noise (Johnson et al.'s baseline) dotted and named on the right.
        for method, total in sorted(levels.get(size, {}).items()):
            noise = "noise" in method
            ax.axhline(total, linestyle=":" if noise else "--", linewidth=1, color="0.45")
            ax.annotate(
                method, (0.99 if noise else 0.01, total), xycoords=("axes fraction", "data"),
                fontsize=7, color="0.3", ha="right" if noise else "left", va="bottom",
            )  # fmt: skip
        ax.set_xlabel("training minutes")
        ax.set_ylabel("held-out total loss")
        ax.set_title(f"{size} px")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def sheets(args, names: list[str], minutes: float, sizes: list[int]) -> list[Path]:
    """One photo, content | each variant at ``minutes``, per size."""
    photo = list_images(args.eval_images)[0]
    written = []
    for size in sizes:
        content = load_image(photo, max_side=size)
        panels = [("content", content)]
        for name in names:
            path = snapshot_path(args, name, minutes)
            if path.is_file():
                stylizer = TorchStylizer(model_path=path, device="cpu", precision="fp32")
                panels.append((f"{name}, {minutes:g} min", stylizer.timed(content)[0]))
        out = Path(args.out) / f"sheet_{photo.stem}_{size}px_{minutes:g}min.jpg"
        save_image(contact_sheet(panels, height=content.shape[1]), out)
        written.append(out)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="time_to_quality.py",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", required=True, help="folder for the runs and the report")
    p.add_argument("--minutes", required=True, help="marks of training time, e.g. 10,20,40")
    p.add_argument("--common", default="", help="train.py overrides of every variant")
    p.add_argument("--variant", action="append", default=[], help="NAME=OVERRIDES (repeat)")
    p.add_argument("--lanes", type=int, default=2, help="variants trained at once (2)")
    p.add_argument("--threads", type=int, default=None, help="per variant (cores / lanes)")
    p.add_argument("--eval-images", required=True, help="held-out photos (a folder)")
    p.add_argument("--max-images", type=int, default=None)
    p.add_argument("--eval-sizes", default="128,256", help="longer sides to evaluate at")
    p.add_argument(
        "--eval-args",
        default="--content-weight 1 --style-weight 1 --tv-weight 0 --grid-weight 0",
        help="evaluate.py options of every evaluation: one yardstick for all variants, "
        "whatever weights they trained with (default: the default weights, no TV or grid term)",
    )
    p.add_argument("--reference", action="append", default=[], help="SIZE=evaluation.json")
    p.add_argument(
        "--levels",
        default="gatys-50,gatys-100,gatys-noise-50,gatys-noise-100",
        help="the methods of the references to report",
    )
    p.add_argument("--report-only", action="store_true", help="no training: report only")
    args = p.parse_args(argv)
    try:
        minutes = parse_numbers(args.minutes, "--minutes")
        sizes = parse_numbers(args.eval_sizes, "--eval-sizes", int)
        variants = {n: (o, m) for n, o, m in (parse_variant(v, minutes) for v in args.variant)}
        if not variants:
            raise ConfigError("--variant: give at least one")
        if args.lanes < 1:
            raise ConfigError(f"--lanes must be >= 1, got {args.lanes}")
        levels = references(args)
    except (ConfigError, OSError, json.JSONDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    torch.set_num_threads(os.cpu_count() or 1)
    if not args.report_only:
        with ThreadPoolExecutor(args.lanes) as pool:
            codes = dict(
                zip(
                    variants,
                    pool.map(lambda kv: run_variant(args, kv[0], *kv[1]), variants.items()),
                    strict=True,
                )
            )
        failed = [name for name, code in codes.items() if code]
        if failed:
            print(f"error: training failed: {', '.join(failed)} (see runs/*.log)", file=sys.stderr)
    results = {}
    for name, (overrides, marks) in tqdm(variants.items(), desc="evaluating", file=sys.stderr):
        points = {}
        # final.pth: a run that reached max_steps before its last mark (TimedSnapshots)
        final = snapshot_path(args, name, 1).with_name("final.pth")
        for m, path in [*((m, snapshot_path(args, name, m)) for m in marks), (None, final)]:
            if not path.is_file():
                continue
            meta = torch.load(path, map_location="cpu", weights_only=True)["meta"]
            seconds = meta["train_seconds"]
            label = f"{m:g}" if m is not None else f"end ({seconds / 60:.1f})"
            point = {"minutes": seconds / 60 if m is None else m, "step": meta["global_step"]}
            point.update({"seconds": seconds, "label": label})
            point.update({str(s): evaluate_snapshot(args, path, s) for s in sizes})
            points[label] = point
        results[name] = {"overrides": overrides, "points": points}
    out = Path(args.out)
    report = {
        "common": args.common,
        "lanes": args.lanes,
        "threads_per_lane": threads_per_lane(args),
        "minutes": minutes,
        "sizes": sizes,
        "results": results,
        "references": {str(k): v for k, v in levels.items()},
    }
    (out / "time_to_quality.json").write_text(json.dumps(report, indent=2))
    all_marks = sorted({m for _, marks in variants.values() for m in marks})
    table = markdown(results, levels, all_marks, sizes)
    (out / "time_to_quality.md").write_text(table)
    plot(results, levels, sizes, out / "time_to_quality.png")
    sheets(args, list(variants), minutes[-1], sizes)  # every variant at --minutes' last mark
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
