"""train(cfg) through Hydra compose: real runs with tiny images and few steps."""

import glob
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import train as train_module
from tests.conftest import CAFFE_VGG, REPO, SHARED, require
from train import train
from transformer_net.catalog import describe
from transformer_net.checkpoint import read_model_file
from transformer_net.image import load_image

CONFIGS = str(REPO / "configs")


def make_cfg(overrides: list[str]):
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


# A 2-conv VGG loss and a small network: what most tests need, at a fraction of the
# compute of the default loss (10 convolutions up to relu4_3) and network.
SHALLOW_LOSS = [
    "~loss.style_layers",
    "+loss.style_layers={relu1_2:1.0}",
    "~loss.content_layers",
    "+loss.content_layers={relu1_2:1.0}",
]
SMALL_NET = ["model.channels=[8,16,16]", "model.num_residual=1"]


def tiny_overrides(
    tmp_path: Path, photo_dir: Path, style_file: Path, steps: int = 6, *, full: bool = False
) -> list[str]:
    """A run of ``steps`` steps on 32 px crops; ``full``: the default network and loss layers."""
    return [
        f"data.root={photo_dir}",
        "data.image_size=32",
        "data.batch_size=2",
        "data.num_workers=0",
        "data.val_count=2",
        "style=custom",
        f"style.image={style_file}",
        "style.size=32",
        "loss.vgg_weights=random",
        f"trainer.max_steps={steps}",
        "trainer.val_check_interval=3",
        "trainer.log_every_n_steps=1",
        "trainer.accelerator=cpu",
        "trainer.devices=1",
        "trainer.enable_progress_bar=false",
        "callbacks.model_checkpoint.every_n_train_steps=3",
        f"output_dir={tmp_path / 'run'}",
        *([] if full else [*SHALLOW_LOSS, *SMALL_NET]),
    ]


def train_cli(args: list, capsys) -> tuple[int, str, str]:
    """``python train.py ARGS`` in this process: (exit code, stdout, stderr)."""
    import train as entry

    capsys.readouterr()  # what came before is not this command's
    argv = sys.argv
    sys.argv = ["train.py", *map(str, args)]
    try:
        entry.main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv = argv
    out, err = capsys.readouterr()
    return code, out, err


def scalars(output_dir: Path) -> tuple[dict, list]:
    runs = sorted(glob.glob(str(output_dir / "tb" / "version_*")))
    values: dict[str, list] = {}
    images: list[str] = []
    for run in runs:
        ea = EventAccumulator(run, size_guidance={"scalars": 0, "images": 0})
        ea.Reload()
        for tag in ea.Tags()["scalars"]:
            values.setdefault(tag, []).extend((e.step, e.value) for e in ea.Scalars(tag))
        images += ea.Tags()["images"]
    return values, images


def test_train_writes_checkpoint_model_file_tensorboard_and_stylize_runs(
    tmp_path, photo_dir, style_file
):
    result = train(make_cfg(tiny_overrides(tmp_path, photo_dir, style_file, full=True)))
    out = tmp_path / "run"
    assert result["model_file"] == out / "custom.pth" and result["model_file"].is_file()
    assert (out / "checkpoints" / "last.ckpt").is_file() and (out / "preview.jpg").is_file()
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 6
    assert not [k for k in ckpt["state_dict"] if k.startswith("loss_net.vgg.")]  # VGG left out
    assert "loss_net.target_gram_relu4_3" in ckpt["state_dict"]
    best = torch.load(out / "checkpoints" / "best.ckpt", weights_only=True)
    assert best["global_step"] in (3, 6)  # selected by val/loss

    values, images = scalars(out)
    for tag in [
        "loss/total",
        "loss/content",
        "loss/style",
        "loss/tv",
        "style_layers/relu1_2",
        "style_layers/relu4_3",
        "opt/lr",
        "perf/images_per_sec",
        "val/loss",
        "data/skipped_images",
    ]:
        assert tag in values, tag
    assert "samples/content|stylized" in images and "style" in images

    # The model file carries its painting (a thumbnail) and the last losses.
    info = describe(result["model_file"])
    style = load_image(style_file)
    thumb = info.thumbnails[0]
    assert thumb is not None and max(thumb.shape[1:]) <= 256
    assert abs(thumb.shape[2] / thumb.shape[1] - style.shape[2] / style.shape[1]) < 0.05
    assert info.meta["metrics"]["val/loss"] == pytest.approx(float(values["val/loss"][-1][1]))

    from transformer_net.stylize_cli import main as stylize

    for model in (result["model_file"], out / "checkpoints" / "last.ckpt"):
        dst = tmp_path / f"styl_{model.suffix[1:]}"
        argv = ["--model", model, "--input", photo_dir, "--output", dst, "--precision", "fp32"]
        assert stylize([str(a) for a in argv]) == 0
        assert len(list(dst.rglob("*.jpg"))) == 12


def test_scalars_are_logged_every_log_every_n_steps(tmp_path, photo_dir, style_file):
    # self.log is called at the steps Lightning writes only (it costs ~1 ms each).
    overrides = tiny_overrides(tmp_path, photo_dir, style_file, steps=8)
    overrides += ["trainer.log_every_n_steps=4", "trainer.val_check_interval=100"]
    train(make_cfg(overrides))
    values, _ = scalars(tmp_path / "run")
    for tag in ("loss/total", "loss/style", "style_layers/relu1_2", "opt/lr"):
        assert [step for step, _ in values[tag]] == [3, 7], tag
    rates = values["perf/images_per_sec"]
    assert [step for step, _ in rates] == [3, 7] and all(v > 0 for _, v in rates)


def test_total_loss_falls(tmp_path, photo_dir, style_file):
    overrides = tiny_overrides(tmp_path, photo_dir, style_file, steps=40)
    overrides += ["optim.lr=1e-2", "model.channels=[16,32,32]", "model.num_residual=2"]
    train(make_cfg(overrides))
    values, _ = scalars(tmp_path / "run")
    losses = [v for _, v in sorted(values["loss/total"])]
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.7 * first, (first, last)


def test_training_with_the_real_caffe_vgg(tmp_path, style_file):
    vgg = require(CAFFE_VGG)
    photos = require(SHARED / "data" / "coco128")
    overrides = tiny_overrides(tmp_path, photos, style_file, steps=40, full=True) + [
        "loss=caffe",
        f"loss.vgg_weights={vgg}",
        "optim.lr=1e-2",
        "data.max_images=8",
        "model.channels=[16,32,32]",
        "model.num_residual=2",
    ]
    train(make_cfg(overrides))
    values, _ = scalars(tmp_path / "run")
    losses = [v for _, v in sorted(values["loss/total"])]
    assert sum(losses[-5:]) < 0.8 * sum(losses[:5])


def test_resume_continues_at_the_same_step(tmp_path, photo_dir, style_file):
    overrides = tiny_overrides(tmp_path, photo_dir, style_file, steps=4)
    train(make_cfg(overrides))
    first = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert first["global_step"] == 4
    train(make_cfg([*overrides, "trainer.max_steps=7", "ckpt_path=last"]))
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 7
    # Adam's step counter carried over: 4 steps before the restart + 3 after.
    state = next(iter(ckpt["optimizer_states"][0]["state"].values()))
    assert int(state["step"]) == 7
    values, _ = scalars(tmp_path / "run")
    steps = sorted({s for s, _ in values["loss/total"]})
    assert steps[-1] == 6 and len(steps) == 7  # 0..6, no restart from zero


@pytest.mark.parametrize(
    "override,message",
    [
        ("data.root=/nonexistent/photos", "/nonexistent/photos: data folder does not exist"),
        (
            "style.image=/nonexistent/painting.jpg",
            "/nonexistent/painting.jpg: style image not found",
        ),
        (
            "loss.vgg_weights=/nonexistent/vgg.pth",
            "/nonexistent/vgg.pth: VGG-16 weights file not found",
        ),
        ("ckpt_path=/nonexistent/x.ckpt", "/nonexistent/x.ckpt: checkpoint not found"),
        ("loss.style_weight=-5", "style_weight must be >= 0 and finite, got -5"),
        ("data.image_size=30", "data.image_size must be a multiple of 4 and >= 16, got 30"),
        ("module.compile=fast", "module.compile must be true, false or auto, got 'fast'"),
        ("optim.scheduler=cos", "'optim.schedulers.cos' not found (config key module.scheduler)"),
        ("module.nan_policy=ignore", "module.nan_policy must be one of stop, skip; got 'ignore'"),
        ("model.num_residual=-1", "model: num_residual must be >= 0, got -1"),
    ],
)
def test_cli_reports_bad_input_in_one_line(
    tmp_path, photo_dir, style_file, override, message, capsys
):
    args = [*tiny_overrides(tmp_path, photo_dir, style_file), override]
    code, _, err = train_cli(args, capsys)
    assert code == 2
    assert err.strip().splitlines()[-1].startswith("error: ")
    assert message in err
    assert "Traceback" not in err
    # Hydra made the run folder (.hydra/, train.log) before train() ran: it is gone again.
    assert not (tmp_path / "run").exists()


def test_a_bug_keeps_its_traceback(tmp_path, photo_dir, style_file, monkeypatch, capsys):
    """Only the project's own errors become one line: a plain RuntimeError is a bug."""
    from transformer_net import preflight

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in the package")

    monkeypatch.setattr(train_module, "prepare_inputs", broken)
    with pytest.raises(RuntimeError, match="a bug in the package"):
        train(make_cfg(tiny_overrides(tmp_path, photo_dir, style_file)))
    code, _, err = train_cli(tiny_overrides(tmp_path, photo_dir, style_file), capsys)
    assert code == 1 and "Traceback" in err and "RuntimeError: a bug in the package" in err
    assert not err.strip().splitlines()[-1].startswith("error: ")
    assert preflight.prepare_inputs is not broken


def test_quickstart_fetches_what_it_needs_then_trains(tmp_path, monkeypatch, style_file):
    """The download path of the quick start, with the network replaced by local files."""
    from tests.conftest import write_photo
    from transformer_net import download

    fetched = {}

    def fake_sample(dest, *, count, progress=True):
        fetched["photos"] = count
        for i in range(6):
            write_photo(Path(dest) / f"{i:012d}.jpg", size=(50, 40), seed=i)
        return dest

    def fake_fetch(url, *, name=None, subdir="assets", progress=True):
        fetched["style"] = (url, name, subdir)
        return style_file

    monkeypatch.setattr(download, "fetch_coco_sample", fake_sample)
    monkeypatch.setattr(download, "fetch_file", fake_fetch)
    monkeypatch.setenv("TRANSFORMER_NET_CACHE", str(tmp_path / "cache"))  # nothing cached
    cfg = make_cfg(
        [
            "experiment=quickstart",
            f"paths.data_root={tmp_path / 'data'}",
            f"output_dir={tmp_path / 'qs'}",
            "loss.vgg_weights=random",
            "data.image_size=32",
            "data.num_workers=0",
            "data.val_count=2",
            "data.batch_size=2",
            "trainer.max_steps=2",
            "trainer.accelerator=cpu",
            "trainer.enable_progress_bar=false",
        ]
    )
    result = train(cfg)
    assert fetched["photos"] == 48 and fetched["style"][1:] == ("starry_night.jpg", "styles")
    assert fetched["style"][0].startswith("https://")
    assert len(list((tmp_path / "data" / "coco_sample").glob("*.jpg"))) == 6
    assert (
        result["model_file"] == tmp_path / "qs" / "starry_night.pth"
        and result["model_file"].is_file()
    )
    assert (tmp_path / "qs" / "preview.jpg").is_file()
    # it starts from the shipped photo start of its preset (slim)
    _, _, meta = read_model_file(result["model_file"])
    assert meta["init_from"] == "photo (photo-slim, step 500)"


@pytest.mark.slow
def test_default_architecture_and_weights_learn_on_real_photos(tmp_path):
    """Default model, caffe loss weights, real VGG and photos: 150 steps at 64 px."""
    vgg = require(CAFFE_VGG)
    photos = require(SHARED / "data" / "coco128")
    painting = require(SHARED / "images" / "styles" / "starry_night.jpg")
    overrides = [
        f"data.root={photos}",
        "data.image_size=64",
        "data.num_workers=1",
        "data.val_count=4",
        f"style.image={painting}",
        "style.size=64",
        "loss=caffe",
        f"loss.vgg_weights={vgg}",
        "trainer.max_steps=150",
        "trainer.val_check_interval=50",
        "trainer.log_every_n_steps=5",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        f"output_dir={tmp_path / 'run'}",
    ]
    train(make_cfg(overrides))
    values, images = scalars(tmp_path / "run")
    losses = [v for _, v in sorted(values["loss/total"])]
    assert sum(losses[-5:]) < 0.5 * sum(losses[:5]), losses
    # step 0 (the sanity check saw all 4 photos: the untrained network), then every 50
    assert [step for step, _ in values["val/loss"]] == [0, 50, 100, 150]
    assert "samples/content|stylized" in images


@pytest.mark.slow
def test_two_process_ddp_on_cpu_ranks_agree(tmp_path, photo_dir, style_file):
    """Lightning DDP (gloo) through train.py: both ranks end with identical weights."""
    dump = tmp_path / "ranks"
    args = [
        *tiny_overrides(tmp_path, photo_dir, style_file, steps=4),
        "trainer.devices=2",
        "trainer.strategy=ddp",
        "model.channels=[8,16,16]",
        "model.num_residual=1",
        "optim.lr_scaling=linear",
        "optim.reference_batch=2",
        "+callbacks.dump._target_=tests.ddp_probe.ParamDump",
        f"+callbacks.dump.folder={dump}",
    ]
    proc = subprocess.run(
        [sys.executable, "train.py", *args], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = torch.load(dump / "rank0.pt", weights_only=True)
    r1 = torch.load(dump / "rank1.pt", weights_only=True)
    assert (r0["world"], r1["rank"]) == (2, 1)
    for key, value in r0["state"].items():
        torch.testing.assert_close(value, r1["state"][key], rtol=0, atol=0)
    assert (tmp_path / "run" / "custom.pth").is_file()
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 4
    # lr 1e-3 for a batch of 2; effective batch 2 x 2 ranks -> linear scaling doubles it.
    assert ckpt["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(2e-3)


def tiny_module(style_file: Path, **kwargs):
    from transformer_net.image import load_image
    from transformer_net.module import StyleTransferModule

    return StyleTransferModule(
        model={"channels": [4, 4, 4], "num_residual": 1},
        loss={
            "vgg_weights": "random",
            "style_layers": {"relu1_2": 1.0},
            "content_layers": {"relu1_2": 1.0},
        },
        style_images=[load_image(style_file, max_side=32)],
        style_names=["custom"],
        optimizer={"_target_": "torch.optim.Adam", "lr": 1e-3},
        **kwargs,
    )


@pytest.mark.parametrize("rule,expected", [("none", 1e-3), ("linear", 4e-3), ("sqrt", 2e-3)])
def test_learning_rate_scaling_rules(style_file, rule, expected):
    import pytorch_lightning as pl

    scaling = {"rule": rule, "reference_batch": 4, "batch_size": 8}
    module = tiny_module(style_file, lr_scaling=scaling)
    # 8 images per device x 2 devices = 16 = 4 x the reference batch (DDP is not started).
    module.trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False)
    assert module.trainer.world_size == 2
    assert module.effective_lr() == pytest.approx(expected)
    optimizer = module.configure_optimizers()["optimizer"]
    assert optimizer.param_groups[0]["lr"] == pytest.approx(expected)


@pytest.mark.slow  # compiling the training step takes about a minute on 2 CPU cores
def test_compiled_channels_last_training_matches_eager(tmp_path, photo_dir, style_file):
    runs = {}
    for name, switches in (("eager", "false"), ("compiled", "true")):
        overrides = tiny_overrides(tmp_path / name, photo_dir, style_file, steps=3, full=True)
        overrides += [f"module.compile={switches}", f"module.channels_last={switches}"]
        assert train(make_cfg(overrides))["model_file"].is_file()
        values, _ = scalars(tmp_path / name / "run")
        runs[name] = [v for _, v in sorted(values["loss/total"])]
    # Same seed, same batches, same math: the losses agree up to float rounding.
    assert runs["compiled"] == pytest.approx(runs["eager"], rel=1e-3)


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda",
            marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
        ),
    ],
)
def test_auto_speed_switches_follow_the_training_device(style_file, photo_dir, device):
    import pytorch_lightning as pl

    from transformer_net.data import ImageFolderDataModule

    module = tiny_module(style_file, channels_last="auto", compile="auto")
    data = ImageFolderDataModule(
        root=photo_dir, image_size=32, batch_size=2, num_workers=0, val_count=2
    )
    trainer = pl.Trainer(
        accelerator=device,
        devices=1,
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(module, datamodule=data)  # setup() decides before Lightning moves the module
    on_cuda = device == "cuda"
    assert module.channels_last is on_cuda and module.compile is on_cuda
    weight = module.transformer.conv1.conv2d.weight
    assert weight.is_contiguous(memory_format=torch.channels_last) is on_cuda


@pytest.mark.parametrize("sig,expected_rc", [(signal.SIGTERM, 143), (signal.SIGINT, 1)])
def test_interrupted_training_saves_last_checkpoint_and_resumes(
    tmp_path, photo_dir, style_file, sig, expected_rc, capsys
):
    """Preemption (SIGTERM) or Ctrl-C mid-run: last.ckpt is written at the step reached.

    The signal comes from inside the run (after step 3), to this very process:
    Lightning's handlers see it as they would a scheduler's or a keyboard's.
    """
    args = [
        *tiny_overrides(tmp_path, photo_dir, style_file, steps=100_000),
        "model.channels=[4,8,8]",
        "model.num_residual=1",
        "trainer.val_check_interval=100000",
        "callbacks.model_checkpoint.every_n_train_steps=100000",  # no periodic saves
    ]
    faults = [
        "+callbacks.signal._target_=tests.faults.SignalAtStep",
        "+callbacks.signal.step=3",
        f"+callbacks.signal.signum={int(sig)}",
    ]
    handler = signal.getsignal(signal.SIGINT)
    try:
        code, _, err = train_cli([*args, *faults], capsys)
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores Ctrl-C after the first
    assert code == expected_rc, err[-2000:]
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    step = torch.load(last, weights_only=True)["global_step"]
    assert 3 <= step < 100_000
    assert "Traceback" not in err

    train(make_cfg([*args, f"trainer.max_steps={step + 2}", "ckpt_path=last"]))
    assert torch.load(last, weights_only=True)["global_step"] == step + 2


def _nan_after(monkeypatch, n_good: int):
    """Make the training loss NaN from the (n_good + 1)-th training call on."""
    from transformer_net.module import StyleTransferModule

    original = StyleTransferModule._compute
    calls = {"n": 0}

    def compute(self, images):
        losses, output = original(self, images)
        if torch.is_grad_enabled():  # training steps only, not validation
            calls["n"] += 1
            if calls["n"] > n_good:
                losses["total"] = losses["total"] * float("nan")
        return losses, output

    monkeypatch.setattr(StyleTransferModule, "_compute", compute)


def test_nan_loss_stops_with_the_step_and_writes_no_model(
    tmp_path, photo_dir, style_file, monkeypatch
):
    _nan_after(monkeypatch, n_good=3)
    from transformer_net.module import NonFiniteLossError

    with pytest.raises(NonFiniteLossError, match="loss is nan at step 3"):
        train(make_cfg(tiny_overrides(tmp_path, photo_dir, style_file, steps=6)))
    assert not (tmp_path / "run" / "custom.pth").exists()
    good = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert good["global_step"] == 3  # the periodic checkpoint before the NaN
    assert all(
        torch.isfinite(v).all() for v in good["state_dict"].values() if v.is_floating_point()
    )


def test_nan_loss_skip_policy_skips_batches(tmp_path, photo_dir, style_file, monkeypatch):
    _nan_after(monkeypatch, n_good=4)
    overrides = [
        *tiny_overrides(tmp_path, photo_dir, style_file, steps=4),
        "module.nan_policy=skip",
    ]
    overrides += ["data.max_images=10"]  # 5 batches per epoch: NaN batches are skipped, run ends
    result = train(make_cfg([*overrides, "trainer.max_epochs=2", "trainer.max_steps=-1"]))
    values, _ = scalars(tmp_path / "run")
    assert max(v for _, v in values["data/skipped_nan_batches"]) >= 1
    model = torch.load(result["model_file"], weights_only=True)
    assert all(
        torch.isfinite(v).all() for v in model["state_dict"].values() if v.is_floating_point()
    )


def test_cli_reports_an_unreadable_style_image(tmp_path, photo_dir, capsys):
    bad = tmp_path / "painting.jpg"
    bad.write_text("not a painting")
    code, _, err = train_cli(tiny_overrides(tmp_path, photo_dir, bad), capsys)
    assert code == 2, err[-2000:]
    assert err.strip().splitlines()[-1] == f"error: {bad}: not an image PIL can read"


def test_training_from_a_prepared_dataset(tmp_path, photo_dir, style_file):
    from transformer_net.prepared import prepare_dataset

    prepare_dataset(source=photo_dir, output=tmp_path / "prepared", size=36, progress=False)
    overrides = tiny_overrides(tmp_path, tmp_path / "prepared", style_file, steps=3)
    result = train(make_cfg(overrides))
    assert result["model_file"].is_file() and result["preview"].is_file()
    values, images = scalars(tmp_path / "run")
    assert len(values["loss/total"]) == 3 and "samples/content|stylized" in images


@pytest.mark.parametrize(
    "kill_step,every",
    [(7, 2), (6, 5)],
    ids=["mid-epoch", "at-epoch-end"],  # 5 batches per epoch: step 5 ends epoch 0
)
def test_sigkill_then_resume_gives_the_weights_of_an_uninterrupted_run(
    tmp_path, photo_dir, style_file, kill_step, every
):
    """Killed with SIGKILL (no chance to save), rerun with ckpt_path=last: the same
    weights, optimizer state and TensorBoard run as 10 steps without interruption."""
    base = [
        *tiny_overrides(tmp_path, photo_dir, style_file, steps=10),  # 10 photos, batch 2
        "model.channels=[4,8,8]",
        "model.num_residual=1",
        f"callbacks.model_checkpoint.every_n_train_steps={every}",
    ]
    straight = train(make_cfg([*base, f"output_dir={tmp_path / 'straight'}"]))

    killed = [*base, "data.num_workers=1"]  # the order must not depend on workers
    proc = subprocess.run(
        [
            sys.executable,
            "train.py",
            *killed,
            "+callbacks.kill._target_=tests.faults.KillAtStep",
            f"+callbacks.kill.step={kill_step}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    saved_step = kill_step // every * every
    assert torch.load(last, weights_only=True)["global_step"] == saved_step
    assert not (tmp_path / "run" / "custom.pth").exists()

    resumed = train(make_cfg([*killed, "ckpt_path=last"]))
    a = torch.load(straight["checkpoint"], weights_only=True)
    b = torch.load(resumed["checkpoint"], weights_only=True)
    assert a["global_step"] == b["global_step"] == 10
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    for key, value in a["optimizer_states"][0]["state"].items():
        torch.testing.assert_close(b["optimizer_states"][0]["state"][key], value)
    # The resumed run logs into the killed run's TensorBoard version: one curve.
    assert [p.name for p in (tmp_path / "run" / "tb").iterdir()] == ["version_0"]
    steps = sorted({step for step, _ in scalars(tmp_path / "run")[0]["loss/total"]})
    assert steps[0] <= 1 and steps[-1] >= 9


def test_slurm_requeue_signal_saves_requeues_and_the_requeued_job_resumes(
    tmp_path, photo_dir, style_file, monkeypatch, capsys
):
    """Under SLURM (``#SBATCH --signal=SIGUSR1@90 --requeue``) Lightning saves
    hpc_ckpt_1.ckpt on SIGUSR1 and runs ``scontrol requeue``; the requeued job
    (same command, no ckpt_path) continues from it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "scontrol.txt"
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" > {record}\n')
    scontrol.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "SLURM_NTASKS": "1",
        "SLURM_JOB_NAME": "train",
        "SLURM_JOB_ID": "4242",
        "SLURM_NODELIST": "localhost",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
    }
    marker, log = tmp_path / "training", tmp_path / "train.log"
    args = [
        *tiny_overrides(tmp_path, photo_dir, style_file, steps=100_000),
        "model.channels=[4,8,8]",
        "model.num_residual=1",
        "trainer.val_check_interval=100000",
        "callbacks.model_checkpoint.every_n_train_steps=100000",
    ]
    err_file = log.open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "train.py",
            *args,
            "+callbacks.mark._target_=tests.faults.MarkStep",
            "+callbacks.mark.step=2",
            f"+callbacks.mark.path={marker}",
        ],
        cwd=REPO,
        env=env,
        # a file, not a pipe: a pipe nobody reads fills up and blocks the run mid-write
        stdout=subprocess.DEVNULL,
        stderr=err_file,
    )
    deadline = time.monotonic() + 300
    while not marker.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGUSR1)
    while not record.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.kill()  # SLURM ends the job once it is requeued
    proc.wait(timeout=60)
    err_file.close()
    assert record.is_file(), log.read_text()[-2000:]
    assert record.read_text().split() == ["requeue", "4242"]
    hpc = tmp_path / "run" / "hpc_ckpt_1.ckpt"
    step = torch.load(hpc, weights_only=True)["global_step"]
    assert step >= 2

    # The requeued job: the same command, under the same SLURM variables (in-process).
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code, _, err = train_cli([*args, f"trainer.max_steps={step + 2}"], capsys)
    assert code == 0, err[-2000:]
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == step + 2
    assert [p.name for p in (tmp_path / "run" / "tb").iterdir()] == ["version_0"]


def test_style_warmup_ramps_the_style_term_in(tmp_path, photo_dir, style_file):
    """module.style_warmup_steps: the style term starts at 0 and reaches its weight."""
    args = tiny_overrides(tmp_path, photo_dir, style_file, steps=6)
    train(make_cfg([*args, "module.style_warmup_steps=4", "model.channels=[4,8,8]"]))
    values, _ = scalars(tmp_path / "run")
    style = dict(values["loss/style"])
    total, content = dict(values["loss/total"]), dict(values["loss/content"])
    grid = dict(values["loss/grid"])  # the grid penalty (configs/loss/caffe.yaml) is not ramped
    assert style[0] == 0 and total[0] == pytest.approx(content[0] + grid[0])  # no style at first
    assert total[5] == pytest.approx(content[5] + style[5] + grid[5], rel=1e-5)
    assert 0 < style[2] and style[5] > 0
    layers = sum(dict(v)[2] for tag, v in values.items() if tag.startswith("style_layers/"))
    assert style[2] == pytest.approx(0.5 * layers, rel=1e-4)  # half way: half the weight
    assert "val/loss" in values  # validation keeps the full weights (not checked here)
