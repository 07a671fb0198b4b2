"""Where the time goes: a torch.profiler table of one training step or one stylization.

Builds the same configurations as ``scripts/benchmark.py`` (precision, -cl,
-compile, -graph), times them after a warm-up (compilation, cuDNN autotuning),
then profiles a few calls and prints the kernels sorted by their own device time
(CPU time on a CPU). This is how docs/benchmarks.md found that the two 9x9
convolutions with 3 channels dominate a compiled 1920x1080 stylization on a GPU.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchmark as bm  # noqa: E402  (scripts/benchmark.py)

from transformer_net.errors import ConfigError  # noqa: E402
from transformer_net.image import save_image  # noqa: E402
from transformer_net.inference import pick_device  # noqa: E402

EPILOG = """\
examples:
  python scripts/kernel_profile.py train --config bf16-cl-compile --batch-size 16 --device cuda
  python scripts/kernel_profile.py train --config bf16-cl-compile --batch-size 16,32 --device cuda
  python scripts/kernel_profile.py stylize --config bf16-cl-compile --size 1920x1080 --device cuda
  python scripts/kernel_profile.py stylize --config fp32-cl --size 512 --rows 10       # this CPU
"""


def profile_table(fn, device: torch.device, *, calls: int, rows: int) -> str:
    """Profile ``calls`` calls of ``fn`` (already warm): the top ``rows`` operators."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(calls):
            fn()
        bm.sync(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=70)


def time_calls(fn, device: torch.device, *, calls: int, warmup: int) -> float:
    """Milliseconds per call after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    bm.sync(device)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    bm.sync(device)
    return (time.perf_counter() - start) / calls * 1000


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kernel_profile.py",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("what", choices=["train", "stylize"])
    p.add_argument("--config", default="fp32", help="as in benchmark.py, e.g. bf16-cl-compile")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--batch-size", default="4", help="train: one or more, comma-separated")
    p.add_argument("--image-size", type=int, default=256, help="train: crop size")
    p.add_argument("--size", default="512", help="stylize: W[xH]")
    p.add_argument("--calls", type=int, default=5, help="profiled (and 4x timed) calls")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls first")
    p.add_argument("--rows", type=int, default=18, help="operators shown")
    p.add_argument("--compile-mode", default=None, help="torch.compile mode for -compile")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        device = pick_device(args.device)
        cfg = bm.Config.parse(args.config)
        sizes = [int(b) for b in args.batch_size.split(",")]
        if cfg.graph and (args.what == "train" or device.type != "cuda"):
            raise ConfigError("-graph is for stylize on CUDA")
    except ValueError as e:  # ConfigError, and int() of --batch-size
        print(f"error: {e}", file=sys.stderr)
        return 2
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.set_float32_matmul_precision("high")
    # A new batch size compiles a new static graph, as a training run would.
    torch._dynamo.config.automatic_dynamic_shapes = False
    warmup = max(args.warmup, 3 if cfg.graph else 1)

    if args.what == "stylize":
        w, h = bm.parse_size(args.size)
        run, prepare = bm.make_inference(cfg, device, compile_mode=args.compile_mode)
        x = prepare(torch.rand(1, 3, h, w, device=device) * 255)
        ms = time_calls(lambda: run(x), device, calls=4 * args.calls, warmup=warmup)
        print(f"stylize {cfg.name} {w}x{h} on {device}: {ms:.2f} ms", flush=True)
        print(profile_table(lambda: run(x), device, calls=args.calls, rows=args.rows))
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        style = Path(tmp) / "style.png"
        save_image(torch.rand(3, args.image_size, args.image_size) * 255, style)
        opts = SimpleNamespace(
            vgg_weights="random", vgg_preprocessing="caffe", image_size=args.image_size
        )
        for i, bs in enumerate(sizes):
            step = bm.make_trainer_step(cfg, opts, device, style)
            x = torch.randint(
                0, 256, (bs, 3, args.image_size, args.image_size), dtype=torch.uint8, device=device
            )
            start = time.perf_counter()
            step(x)
            bm.sync(device)
            first = time.perf_counter() - start

            def call(step=step, x=x):
                return step(x)

            ms = time_calls(call, device, calls=4 * args.calls, warmup=warmup)
            print(
                f"train {cfg.name} batch {bs} on {device}: first step {first:.1f} s, "
                f"{ms:.2f} ms/step, {bs * 1000 / ms:.0f} images/s",
                flush=True,
            )
            if i == 0:
                print(profile_table(call, device, calls=args.calls, rows=args.rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
