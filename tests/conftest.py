"""Shared fixtures: tiny image folders, the real assets in ../shared, composed configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CAFFE_VGG = SHARED / "vgg16" / "vgg16_caffe_to_relu4_3.pth"
CAFFE_VGG_FULL = SHARED / "vgg16" / "vgg16_caffe_features.pth"


def write_photo(path: Path, size=(40, 30), seed: int = 0, mode: str = "RGB") -> Path:
    """A smooth random image (gradients + noise) so crops and losses are non-trivial."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack(
        [xx * 255 / max(w, 1), yy * 255 / max(h, 1), (xx + yy) * 127 / max(w + h, 1)], -1
    )
    arr = np.clip(base + rng.normal(0, 30, base.shape), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).convert(mode).save(path)
    return path


def write_tiny_inputs(root: Path) -> tuple[Path, Path]:
    """12 small photos in ``root/photos`` and a painting ``root/style.png``: the inputs
    of a tiny run that module-scoped fixtures train once."""
    photos = root / "photos"
    for i in range(12):
        write_photo(photos / f"img{i:02d}.jpg", size=(48 + 4 * i, 40 + 2 * i), seed=i)
    return photos, write_photo(root / "style.png", size=(64, 48), seed=99)


@pytest.fixture
def photo_dir(tmp_path: Path) -> Path:
    """12 small photos in nested folders, like a real dataset."""
    root = tmp_path / "photos"
    for i in range(12):
        sub = root / ("a" if i % 2 else "b/c")
        write_photo(sub / f"img{i:02d}.jpg", size=(48 + 4 * i, 40 + 2 * i), seed=i)
    return root


@pytest.fixture
def style_file(tmp_path: Path) -> Path:
    return write_photo(tmp_path / "style.png", size=(64, 48), seed=99)


def mounted_tmpfs(mount: Path, options: str, what: str):
    """Mount a real tmpfs at ``mount`` with ``options`` (root only; else skip), yield it,
    unmount. ``what`` names it in the skip message."""
    import subprocess

    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount {what} here (needs root)")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not present")
    return path


def load_script(name: str):
    """Import scripts/<name>.py as a module (scripts import each other by plain name)."""
    import importlib
    import sys

    if str(REPO / "scripts") not in sys.path:
        sys.path.insert(0, str(REPO / "scripts"))
    return importlib.import_module(name)


def script_main(name: str):
    """``main(argv) -> exit code`` of scripts/<name>.py, to run the command in-process."""
    return load_script(name).main


@pytest.fixture(autouse=True)
def _signal_dispositions_restored(request):
    """A test must leave the process's signal handlers as it found them (in-process
    CLIs run Lightning, which installs its own; child processes inherit ignored ones)."""
    import signal

    watched = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)
    before = {s: signal.getsignal(s) for s in watched}
    yield
    changed = [s.name for s in watched if signal.getsignal(s) != before[s]]
    for s in watched:
        signal.signal(s, before[s])
    assert not changed, f"{request.node.nodeid} left signal handlers changed: {changed}"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Downloads and cached ONNX exports go to a folder of this test session, never to
    the user's ~/.cache (tests that need their own set TRANSFORMER_NET_CACHE again)."""
    monkeypatch.setenv("TRANSFORMER_NET_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(autouse=True)
def _root_logging_restored():
    """The root logger as the test found it: in-process train.py runs let Hydra configure
    logging (INFO, handlers on the streams pytest captured for that test), which later
    tests would otherwise log into, closed streams and all ("--- Logging error ---")."""
    import logging

    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)
