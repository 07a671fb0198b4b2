"""What a training run shows and leaves: progress bar, next steps, quiet console,
TensorBoard's HPARAMS tab, and inputs checked (and reported together) before any download."""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from tests.conftest import REPO, write_tiny_inputs
from tests.test_train import make_cfg, scalars, tiny_overrides
from train import train
from transformer_net import download
from transformer_net.console import next_steps, quiet_lightning
from transformer_net.download import DownloadError
from transformer_net.preflight import InputError, prepare_inputs, remove_unused_run_dir
from transformer_net.progress import StepProgressBar

TINY_NET = ["model.channels=[8,16,16]", "model.num_residual=1"]
# Lightning notes that must not reach the console (see transformer_net/console.py).
NOISE = (
    "Tip",
    "litlogger",
    "litmodels",
    "Total Flops",
    "FLOPs",
    "was configured so",
    "does not have many workers",
    "exists and is not empty",
    "`Trainer.fit` stopped",
)


class _Records(logging.Handler):
    """Every log record, whatever handlers Lightning or pytest have installed."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def recording():
    """(stdout, stderr, log messages, warnings) of the code run inside."""
    out, err, handler = io.StringIO(), io.StringIO(), _Records()
    # Lightning's logger does not propagate to the root when it has its own handler.
    lightning = logging.getLogger("pytorch_lightning")
    loggers = [logging.getLogger(), *([] if lightning.propagate else [lightning])]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        with (
            warnings.catch_warnings(record=True) as caught,
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
        ):
            warnings.simplefilter("always")  # train() puts its filters in front of this
            yield SimpleNamespace(out=out, err=err, log=handler.messages, warnings=caught)
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One 6-step run with the default callbacks (progress bar included), recorded."""
    tmp = tmp_path_factory.mktemp("tiny")
    photos, style = write_tiny_inputs(tmp)
    overrides = [o for o in tiny_overrides(tmp, photos, style, steps=6) if "progress_bar" not in o]
    with recording() as rec:
        result = train(make_cfg([*overrides, *TINY_NET, "trainer.log_every_n_steps=2"]))
    return SimpleNamespace(result=result, out_dir=tmp / "run", **vars(rec))


# --- progress bar ---------------------------------------------------------------------


def test_progress_bar_in_a_log_file_writes_a_line_every_log_step(tiny_run):
    err = tiny_run.err.getvalue()
    assert "\r" not in err  # whole lines, not in-place updates
    lines = [line for line in err.splitlines() if line.startswith("step ")]
    # The start, then every log_every_n_steps=2 steps; nothing per epoch (5 batches each).
    steps = [line.split()[1] for line in lines]
    # After step 6 comes the last validation: one more line if it changed val/loss.
    assert steps in (["0/6", "2/6", "4/6", "6/6"], ["0/6", "2/6", "4/6", "6/6", "6/6"]), lines
    assert "Epoch" not in err
    for line in lines[1:]:
        assert " ETA " in line and ("steps/s" in line or "s/step" in line), line
        assert "loss/total=" in line, line
    assert "ETA 00:00" in lines[-1] and "(100%)" in lines[-1]
    assert "val/loss=" not in lines[1] and "val/loss=" in lines[2]  # known from step 3 on
    values, _ = scalars(tiny_run.out_dir)
    final = values["val/loss"][-1]
    assert final[0] == 6 and lines[-1].endswith(f"val/loss={final[1]:.4g}"), lines[-1]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _fit_with_bar(photo_dir, style_file, *, max_steps, max_epochs=None, ckpt=None):
    """A real Trainer with only the progress bar, on the tiny module of test_train."""
    import pytorch_lightning as pl

    from tests.test_train import tiny_module
    from transformer_net.data import ImageFolderDataModule

    data = ImageFolderDataModule(
        root=photo_dir, image_size=32, batch_size=2, num_workers=0, val_count=2
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        max_epochs=max_epochs,
        logger=False,
        callbacks=[StepProgressBar()],
        enable_checkpointing=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        val_check_interval=2,
        num_sanity_val_steps=0,
    )
    trainer.fit(tiny_module(style_file), datamodule=data, ckpt_path=ckpt)
    return trainer


def test_progress_bar_on_a_terminal_counts_steps_of_the_whole_run(
    monkeypatch, tmp_path, photo_dir, style_file
):
    first = _fit_with_bar(photo_dir, style_file, max_steps=4)
    first.save_checkpoint(tmp_path / "4.ckpt")
    screen = _Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    _fit_with_bar(photo_dir, style_file, max_steps=7, ckpt=tmp_path / "4.ckpt")  # resumed at 4
    text = screen.getvalue()
    assert text.count("\r") >= 4  # redrawn in place, every step (refresh_rate 1)
    drawn = [part for part in text.split("\r") if part.startswith("step ")]
    assert drawn[0].startswith("step 4/7 "), drawn[0]  # a resumed run starts at its step
    last = drawn[-1]
    assert last.startswith("step 7/7 100%|") and ", ETA " in last, last
    assert "loss/total=" in last and "val/loss=" in last and "v_num" not in last
    # The rate counts the steps of this session (3), not the resumed ones.
    speed = last.split("| ")[1].split(",")[0]
    assert speed.endswith(("steps/s", "s/step")) and "?" not in speed, speed


def test_progress_bar_without_a_step_limit_counts_the_epochs_steps(
    monkeypatch, photo_dir, style_file
):
    screen = _Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    trainer = _fit_with_bar(photo_dir, style_file, max_steps=-1, max_epochs=1)
    # 10 training photos (2 held out) in batches of 2: 5 steps in the epoch.
    assert StepProgressBar.total_steps(trainer) == 5
    assert screen.getvalue().split("\r")[-1].startswith("step 5/5 100%|")


def test_progress_bar_of_an_endless_run_shows_no_total(monkeypatch, photo_dir, style_file):
    import pytorch_lightning as pl

    trainer = pl.Trainer(accelerator="cpu", max_steps=-1, max_epochs=-1, logger=False)
    monkeypatch.setattr(pl.Trainer, "estimated_stepping_batches", float("inf"))
    assert StepProgressBar.total_steps(trainer) is None


# --- end of the run -------------------------------------------------------------------


def test_the_end_of_a_run_prints_what_to_do_next(tiny_run):
    out = tiny_run.out.getvalue()
    model = tiny_run.result["model_file"]
    assert out.splitlines()[0].startswith("Trained 6 steps in ")
    assert f"model file:  {model}" in out
    assert f"preview:     {tiny_run.out_dir / 'preview.jpg'}" in out
    assert f"tensorboard --logdir {tiny_run.out_dir / 'tb'}" in out
    assert f"python stylize.py --model {model} --input photo.jpg --output out.jpg" in out


def test_next_steps_quote_paths_and_list_the_styles():
    text = next_steps(
        steps=500,
        seconds=3725,
        model_file=Path("out dir/multi.pth"),
        preview=None,
        log_dir=Path("out dir/tb"),
        styles=["wave", "udnie"],
    )
    assert text.splitlines()[0] == "Trained 500 steps in 1:02:05."
    assert "tensorboard --logdir 'out dir/tb'" in text
    assert "python stylize.py --model 'out dir/multi.pth' --input photo.jpg" in text
    assert "--style-index N picks the style: 0 wave, 1 udnie" in text


# --- a quiet console ------------------------------------------------------------------


def test_a_run_shows_no_lightning_tips_flops_or_warnings_about_our_choices(tiny_run):
    shown = [
        *tiny_run.log,
        *(str(w.message) for w in tiny_run.warnings),
        tiny_run.err.getvalue(),
        tiny_run.out.getvalue(),
    ]
    for text in shown:
        for noise in NOISE:
            assert noise not in text, (noise, text)
    summary = next(m for m in tiny_run.log if "Trainable params" in m)  # the summary is kept
    assert "transformer" in summary and "Non-trainable params" in summary


def test_the_filters_hide_only_the_notes_that_do_not_apply():
    from pytorch_lightning.utilities.rank_zero import rank_zero_info, rank_zero_warn

    with recording() as rec:
        quiet_lightning()
        rank_zero_info("💡 Tip: For seamless cloud logging, try installing litlogger")
        rank_zero_info("`Trainer(limit_val_batches=1.0)` was configured so 100% of the batches.")
        rank_zero_info("`Trainer(limit_val_batches=1)` was configured so 1 batch will be used.")
        rank_zero_info("GPU available: False, used: False")
        for message in (
            "The 'train_dataloader' does not have many workers which may be a bottleneck.",
            "Checkpoint directory /x/checkpoints exists and is not empty.",
            "Found 26 module(s) in eval mode at the start of training.",
            "The number of training batches (5) is smaller than the logging interval",
            "The 'val_dataloader' has `shuffle=True`",  # a warning that matters
        ):
            rank_zero_warn(message)
    assert [m for m in rec.log if "GPU" in m or "configured" in m] == [
        "`Trainer(limit_val_batches=1)` was configured so 1 batch will be used.",
        "GPU available: False, used: False",
    ]
    assert not [m for m in rec.log if "Tip" in m]
    assert [str(w.message) for w in rec.warnings] == ["The 'val_dataloader' has `shuffle=True`"]


# --- TensorBoard ----------------------------------------------------------------------


def test_tensorboard_has_the_hparams_tab_with_val_loss_as_its_metric(tiny_run):
    (run,) = (tiny_run.out_dir / "tb").glob("version_*")
    ea = EventAccumulator(str(run), size_guidance={"scalars": 0, "images": 0})
    ea.Reload()
    content = ea.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(content)
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    assert [m.name.tag for m in experiment.experiment.metric_infos] == ["val/loss"]
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    assert hparams["data/image_size"].number_value == 32  # the resolved config
    assert hparams["style/name"].string_value == "custom"
    assert hparams["model/channels"].string_value == "[8, 16, 16]"
    assert "val/loss" in ea.Tags()["scalars"] and "hp_metric" not in ea.Tags()["scalars"]


def test_validation_values_and_sample_images_share_their_steps(tiny_run):
    values, _ = scalars(tiny_run.out_dir)
    (run,) = (tiny_run.out_dir / "tb").glob("version_*")
    ea = EventAccumulator(str(run), size_guidance={"images": 0})
    ea.Reload()
    image_steps = [e.step for e in ea.Images("samples/content|stylized")]
    assert image_steps == [0, 3, 6]  # the untrained network, then every val_check_interval
    for tag in ("val/loss", "val/content", "val/style", "val/tv"):
        assert [step for step, _ in values[tag]] == image_steps, tag
    # Step 0 is the sanity check: all validation photos, the same value a validation gives.
    assert values["val/loss"][0][1] > 0


def test_readme_lists_every_logged_tag(tiny_run):
    values, images = scalars(tiny_run.out_dir)
    readme = (REPO / "docs" / "training-guide.md").read_text()  # the full tag list
    section = readme.split("## Monitoring in TensorBoard")[1].split("\n## ")[0]
    for tag in [*values, *images]:
        if tag.startswith("style_layers/"):
            tag = "style_layers/"  # documented as style_layers/relu1_2 ... relu4_3
        assert f"`{tag}" in section, tag


# --- inputs, offline ------------------------------------------------------------------


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network: every connection fails as when the machine is offline. Counts the tries."""
    tries = []

    def refuse(url, *args, **kwargs):
        tries.append(getattr(url, "full_url", url))
        raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(torch.hub, "urlopen", refuse, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # nothing cached
    monkeypatch.setenv("TRANSFORMER_NET_CACHE", str(tmp_path / "cache"))
    return tries


def quickstart(tmp_path: Path, *extra: str):
    return make_cfg(
        [
            "experiment=quickstart",
            f"paths.data_root={tmp_path / 'data'}",
            f"output_dir={tmp_path / 'qs'}",
            *extra,
        ]
    )


def test_offline_quickstart_names_every_missing_input_in_one_message(offline, tmp_path):
    with pytest.raises(InputError) as info:
        train(quickstart(tmp_path))
    message = str(info.value)
    assert "\n" not in message
    for what in (
        "the painting of style starry_night",
        "48 COCO sample photos",
        "the Caffe VGG-16 weights (loss.vgg_weights=caffe)",
        "Name or service not known",
    ):
        assert what in message, what
    assert message.endswith(
        "offline, pass local files instead: python train.py data.root=/path/to/photos "
        "style.image=/path/to/painting.jpg loss.vgg_weights=/path/to/vgg16.pth"
    ), message
    assert len(offline) == 1  # the first download found out; the others were not tried
    assert not (tmp_path / "data").exists() and not (tmp_path / "qs").exists()
    assert not list((tmp_path / "cache").rglob("*.*"))


def test_the_offline_command_keeps_the_command_lines_own_overrides(offline, tmp_path):
    cfg = quickstart(tmp_path, "loss=torchvision")
    with pytest.raises(InputError) as info:
        prepare_inputs(cfg, command=["experiment=quickstart", "style.image=/gone.jpg", "seed=3"])
    assert str(info.value).endswith(
        "python train.py experiment=quickstart seed=3 data.root=/path/to/photos "
        "style.image=/path/to/painting.jpg loss.vgg_weights=/path/to/vgg16.pth"
    )
    assert "torchvision's VGG-16 weights (loss.vgg_weights=imagenet)" in str(info.value)


def test_offline_with_only_the_photos_missing_is_one_line_and_leaves_no_folder(
    offline, tmp_path, style_file, capfd
):
    cfg = quickstart(tmp_path, f"style.image={style_file}", "loss.vgg_weights=random")
    with pytest.raises(DownloadError) as info:
        train(cfg)
    message = str(info.value)
    assert "\n" not in message and message.endswith("data.root=/path/to/photos"), message
    assert message.startswith(f"could not fetch the COCO sample into {tmp_path / 'data'}")
    assert len(offline) == 1  # not one try per photo
    assert capfd.readouterr().err == ""  # and no line per photo
    assert not (tmp_path / "data").exists()


def test_local_problems_are_reported_together_before_any_download(offline, tmp_path):
    cfg = make_cfg(
        [
            "style=wave",
            "style.image=/gone/wave.jpg",
            "loss.vgg_weights=/gone/vgg.pth",
            "data.root=/gone/photos",
            f"output_dir={tmp_path / 'run'}",
        ]
    )
    with pytest.raises(InputError) as info:
        train(cfg)
    message = str(info.value)
    assert message.startswith("3 inputs are missing: ") and "\n" not in message
    for part in (
        "/gone/wave.jpg: style image not found (style.image)",
        "/gone/vgg.pth: VGG-16 weights file not found (loss.vgg_weights)",
        "/gone/photos: data folder does not exist",
    ):
        assert part in message, part
    assert offline == []  # nothing was downloaded for a run that cannot start


def test_a_cached_download_needs_no_network(offline, tmp_path, style_file, photo_dir):
    cached = Path(download.cache_dir()) / "styles" / "wave.jpg"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(style_file.read_bytes())
    cfg = make_cfg(["style=wave", f"data.root={photo_dir}", "loss.vgg_weights=random"])
    assert [(s.name, s.path) for s in prepare_inputs(cfg)] == [("wave", cached)]
    assert offline == []


# --- the run folder after an early failure --------------------------------------------


def test_an_early_failure_removes_only_a_folder_with_nothing_but_hydras_files(tmp_path):
    fresh = tmp_path / "fresh"
    (fresh / ".hydra").mkdir(parents=True)
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        (fresh / ".hydra" / name).write_text("x")
    (fresh / "train.log").write_text("")
    assert remove_unused_run_dir(fresh) and not fresh.exists()

    earlier = tmp_path / "earlier"  # an earlier run's files, or the user's own
    (earlier / ".hydra").mkdir(parents=True)
    (earlier / "train.log").write_text("")
    for extra in (earlier / "notes.txt", earlier / ".hydra" / "mine.yaml"):
        extra.write_text("keep")
        assert not remove_unused_run_dir(earlier) and extra.is_file()
        extra.unlink()
    assert not remove_unused_run_dir(tmp_path / "missing")


# --- the command line -----------------------------------------------------------------


def test_cli_run_console_is_lines_of_progress_then_the_next_steps(tmp_path, photo_dir, style_file):
    args = [
        o
        for o in tiny_overrides(tmp_path, photo_dir, style_file, steps=4)
        if "progress_bar" not in o
    ]
    args += [*TINY_NET, "trainer.log_every_n_steps=2", "trainer.val_check_interval=2"]
    proc = subprocess.run(
        [sys.executable, "train.py", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    progress = [line for line in proc.stderr.splitlines() if line.startswith("step ")]
    steps = [line.split()[1] for line in progress]
    assert steps in (["0/4", "2/4", "4/4"], ["0/4", "2/4", "4/4", "4/4"]), proc.stderr
    assert "\r" not in proc.stderr and "Traceback" not in proc.stderr
    for noise in NOISE:
        assert noise not in proc.stderr + proc.stdout, noise
    model = tmp_path / "run" / "custom.pth"
    assert proc.stdout.startswith("Trained 4 steps in ")
    assert proc.stdout.strip().endswith(
        f"python stylize.py --model {model} --input photo.jpg --output out.jpg"
    )
