"""Run folders and checkpoint writes: nothing a user trained is lost or silently replaced."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest
import torch

from tests.conftest import mounted_tmpfs, write_photo
from tests.test_train import make_cfg, tiny_overrides
from train import train
from transformer_net import atomic
from transformer_net.atomic import DiskFullError
from transformer_net.checkpoint_io import AtomicCheckpointIO
from transformer_net.runs import RunFolderError, newest_checkpoint

TINY = ["model.channels=[4,8,8]", "model.num_residual=1"]


def run_args(tmp_path: Path, photo_dir: Path, style_file: Path, steps: int = 3) -> list[str]:
    return [*tiny_overrides(tmp_path, photo_dir, style_file, steps=steps), *TINY]


def step_of(path: Path) -> int:
    return torch.load(path, weights_only=True)["global_step"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, list[str]]:
    """One finished 3-step run (trained once per module); tests work on copies."""
    root = tmp_path_factory.mktemp("finished")
    photos = root / "photos"
    for i in range(8):
        write_photo(photos / f"img{i}.jpg", size=(48, 40), seed=i)
    style = write_photo(root / "style.png", size=(64, 48), seed=99)
    args = run_args(root, photos, style)
    train(make_cfg(args))
    return root / "run", [a for a in args if not a.startswith("output_dir=")]


@pytest.fixture
def run(finished, tmp_path) -> tuple[Path, list[str]]:
    """A copy of the finished run at ``tmp_path/run`` and the arguments that made it."""
    source, args = finished
    shutil.copytree(source, tmp_path / "run")
    return tmp_path / "run", [*args, f"output_dir={tmp_path / 'run'}"]


def test_a_new_run_never_replaces_a_finished_one(run):
    out, args = run
    model_bytes = (out / "custom.pth").read_bytes()
    for extra in ([], ["trainer.max_steps=0"]):  # the same command again, or an untrained run
        with pytest.raises(RunFolderError, match="already holds a run .*ckpt_path=last"):
            train(make_cfg([*args, *extra]))
        assert (out / "custom.pth").read_bytes() == model_bytes
        assert step_of(out / "checkpoints" / "last.ckpt") == 3
    # overwrite=true starts over: the old checkpoints go, the new run's files remain.
    train(make_cfg([*args, "trainer.max_steps=1", "overwrite=true"]))
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert step_of(out / "checkpoints" / "last.ckpt") == 1 and "step=3.ckpt" not in names


def test_resuming_an_older_checkpoint_is_refused(run, tmp_path):
    out, args = run
    older = tmp_path / "older.ckpt"
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    torch.save({**ckpt, "global_step": 2}, older)
    with pytest.raises(RunFolderError, match="at step 2, but .* step 3"):
        train(make_cfg([*args, f"ckpt_path={older}"]))


def test_a_moved_run_folder_resumes_from_its_newest_checkpoint(finished, tmp_path):
    source, args = finished
    moved = tmp_path / "moved"
    shutil.copytree(source, moved)  # a copy: its checkpoints store the old folder
    train(make_cfg([*args, f"output_dir={moved}", "trainer.max_steps=6", "ckpt_path=last"]))
    names = sorted(p.name for p in (moved / "checkpoints").iterdir())
    assert not [n for n in names if "-v" in n], names  # no last-v1.ckpt beside last.ckpt
    assert step_of(moved / "checkpoints" / "last.ckpt") == 6

    # A folder where an older Lightning left last-v1.ckpt (newer) beside a stale
    # last.ckpt: ckpt_path=last takes the newest, and unreadable files are skipped.
    ckpts = moved / "checkpoints"
    state = torch.load(ckpts / "last.ckpt", weights_only=True)
    torch.save({**state, "global_step": 2}, ckpts / "last.ckpt")
    torch.save(state, ckpts / "last-v1.ckpt")
    (ckpts / "broken.ckpt").write_bytes(b"PK\x03\x04 truncated")
    found = newest_checkpoint(moved)
    assert found is not None and found.path.name == "last-v1.ckpt" and found.global_step == 6


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_bytes(b""), "empty file, not a checkpoint"),
        (lambda p: p.write_bytes(b"PK\x03\x04" + b"\0" * 64), "truncated or corrupt checkpoint"),
        (
            lambda p: torch.save({"format": "transformer-net", "version": 1}, p),
            "a model file for stylize.py, not a training checkpoint",
        ),
        (lambda p: torch.save({"weights": torch.zeros(1)}, p), "not a Lightning checkpoint"),
        (  # a pickled object that is not a tensor: could run code when loaded
            lambda p: torch.save({"state_dict": {}, "x": Path("/")}, p),
            r"refused: the file holds Python objects \(.*Path.*\) that could run code",
        ),
    ],
)
def test_bad_resume_checkpoints_are_one_line_errors(tmp_path, photo_dir, style_file, make, message):
    bad = tmp_path / "bad.ckpt"
    make(bad)
    with pytest.raises(RunFolderError, match=message) as info:
        train(make_cfg([*run_args(tmp_path, photo_dir, style_file), f"ckpt_path={bad}"]))
    assert str(bad) in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_resume_with_another_architecture_names_the_settings(run):
    _, args = run
    wider = [*args, "model.channels=[8,8,8]", "trainer.max_steps=4", "ckpt_path=last"]
    with pytest.raises(RunFolderError, match=r"model.channels=\[4, 8, 8\].*model.channels=\[8"):
        train(make_cfg(wider))


def test_resume_with_another_loss_network_is_refused(run):
    """A run started under one VGG convention resumed under another (the default
    changed from torchvision to caffe) would mix Gram targets of two networks."""
    _, args = run  # trained with the default loss=caffe (random weights)
    resumed = [*args, "loss=torchvision", "loss.vgg_weights=random", "ckpt_path=last"]
    with pytest.raises(RunFolderError, match=r"loss.preprocessing=caffe.*=torchvision"):
        train(make_cfg([*resumed, "trainer.max_steps=4"]))


# --- checkpoint writes --------------------------------------------------------


def test_checkpoints_never_pass_through_tmpdir(tmp_path, photo_dir, style_file, monkeypatch):
    """$TMPDIR on another filesystem: Lightning's own save commits with a copy that
    truncates last.ckpt first; a crash in that copy must not touch our checkpoints."""
    other_fs = Path("/dev/shm")
    if not other_fs.is_dir() or os.stat(other_fs).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second filesystem for $TMPDIR")
    tmpdir = other_fs / f"tn-{os.getpid()}"
    tmpdir.mkdir(exist_ok=True)
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    monkeypatch.setattr("tempfile.tempdir", None)  # re-read $TMPDIR

    def crash(*args, **kwargs):
        raise OSError(errno.EIO, "crash while copying across filesystems")

    monkeypatch.setattr(shutil, "copyfileobj", crash)
    monkeypatch.setattr(shutil, "copyfile", crash)
    try:
        result = train(make_cfg(run_args(tmp_path, photo_dir, style_file)))
        assert list(tmpdir.iterdir()) == []
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    assert step_of(result["checkpoint"]) == 3


@pytest.fixture
def small_disk(tmp_path):
    """A real 4 MB tmpfs (root only), else skip."""
    yield from mounted_tmpfs(tmp_path / "disk", "size=4m", "a tmpfs")


def fill(disk: Path, leave: int) -> None:
    free = shutil.disk_usage(disk).free
    with open(disk / "filler", "wb") as f:
        f.write(b"\0" * max(0, free - leave))


@pytest.mark.parametrize("precheck", [True, False], ids=["refused-up-front", "full-mid-write"])
def test_disk_full_keeps_the_previous_checkpoint(small_disk, monkeypatch, precheck):
    io = AtomicCheckpointIO()
    last = small_disk / "checkpoints" / "last.ckpt"
    good = {"global_step": 1, "state_dict": {"w": torch.ones(64 * 1024)}}  # 256 KB
    io.save_checkpoint(good, last)
    fill(small_disk, leave=128 * 1024)
    if not precheck:  # the space check passes; the kernel's ENOSPC comes while writing
        real = shutil.disk_usage
        monkeypatch.setattr(
            atomic.shutil,
            "disk_usage",
            lambda p: real(p)._replace(free=1 << 40),
        )
    with pytest.raises(DiskFullError) as info:
        io.save_checkpoint({"global_step": 2, "state_dict": {"w": torch.zeros(64 * 1024)}}, last)
    message = str(info.value)
    assert message.startswith(f"{last.parent}: disk full: writing last.ckpt")
    assert "last.ckpt was left as it was" in message and "MB" in message
    if precheck:
        assert "needs 0.3 MB" in message
    assert torch.equal(
        torch.load(last, weights_only=True)["state_dict"]["w"], torch.ones(64 * 1024)
    )
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt"]  # no temp files


def test_disk_full_during_training_is_one_error_and_keeps_last(run, monkeypatch):
    out, args = run
    last = out / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    real = shutil.disk_usage
    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    with pytest.raises(DiskFullError, match="disk full: writing .*ckpt needs .* MB, 0.0 MB free"):
        train(make_cfg([*args, "trainer.max_steps=6", "ckpt_path=last"]))
    assert last.read_bytes() == before
