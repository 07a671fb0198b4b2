"""Prepared datasets: the array and meta, crops, the DataModule, interruptions, the CLI."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import script_main, write_photo
from transformer_net import prepared as prep
from transformer_net.data import DataError, ImageFolderDataModule
from transformer_net.prepared import PreparedDataset, is_prepared, prepare_dataset

SIZE = 24  # stored size S
CROP = 16  # training crop
RED = (200, 30, 10)


@pytest.fixture
def source(photo_dir: Path) -> Path:
    """The 12 nested photos plus a uniform red one and a corrupt file."""
    Image.new("RGB", (60, 40), RED).save(photo_dir / "a" / "red.png")
    (photo_dir / "b" / "broken.jpg").write_bytes(b"this is not a jpeg")
    return photo_dir


@pytest.fixture
def prepared(source: Path, tmp_path: Path) -> Path:
    out = tmp_path / "prepared"
    prepare_dataset(source=source, output=out, size=SIZE, progress=False)
    return out


def _array(folder: Path) -> np.ndarray:
    count = json.loads((folder / "meta.json").read_text())["count"]
    return np.fromfile(folder / "images.u8", dtype=np.uint8).reshape(count, SIZE, SIZE, 3)


def test_prepare_writes_array_and_meta_and_skips_unreadable(source, tmp_path, capsys):
    out = tmp_path / "out"
    meta = prepare_dataset(source=source, output=out, size=SIZE, progress=True)
    err = capsys.readouterr().err
    # The warning, and tqdm's bar: images done, their rate, how many were skipped.
    assert "warning: skipping unreadable image" in err and "broken.jpg" in err
    assert "14/14" in err and "image/s" in err and "skipped=1" in err
    prepare_dataset(source=source, output=tmp_path / "quiet", size=SIZE, progress=False)
    assert capsys.readouterr().err.count("\n") == 1  # quiet: the warning alone

    assert meta == json.loads((out / "meta.json").read_text())
    assert meta["format"] == "transformer-net-prepared" and meta["version"] == 1
    assert meta["count"] == 13 and meta["size"] == SIZE
    assert meta["source"] == str(source.resolve())
    assert [s[0] for s in meta["skipped"]] == ["b/broken.jpg"]
    assert "b/broken.jpg" not in meta["files"] and "a/red.png" in meta["files"]
    assert meta["files"] == sorted(meta["files"], key=lambda f: source / f)
    assert sorted(os.listdir(out)) == ["images.u8", "meta.json"]  # no temporary files left
    assert is_prepared(out)

    array = _array(out)  # (13, S, S, 3)
    assert (array[meta["files"].index("a/red.png")] == RED).all()
    first = prep.decode_square(source / meta["files"][0], SIZE)
    assert first.shape == (SIZE, SIZE, 3) and np.array_equal(array[0], first)


def test_no_images_is_a_data_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no images found"):
        prepare_dataset(source=tmp_path / "empty", output=tmp_path / "out", size=SIZE)
    with pytest.raises(DataError, match="missing: data folder does not exist"):
        prepare_dataset(source=tmp_path / "missing", output=tmp_path / "out", size=SIZE)


def test_workers_give_the_same_bytes(source, tmp_path):
    serial = prepare_dataset(source=source, output=tmp_path / "w0", size=SIZE, progress=False)
    pooled = prepare_dataset(
        source=source, output=tmp_path / "w2", size=SIZE, workers=2, progress=False
    )
    assert serial == pooled
    assert (tmp_path / "w0/images.u8").read_bytes() == (tmp_path / "w2/images.u8").read_bytes()


def test_center_and_random_crops(prepared):
    array = _array(prepared)
    val = PreparedDataset(root=prepared, image_size=CROP, train=False, indices=[3, 1])
    assert len(val) == 2
    image, skipped = val[0]
    assert image.shape == (3, CROP, CROP) and image.dtype == torch.uint8 and skipped == 0
    m = (SIZE - CROP) // 2
    assert torch.equal(
        image, torch.from_numpy(array[3, m : m + CROP, m : m + CROP]).permute(2, 0, 1)
    )
    assert torch.equal(val[1][0], val[1][0])

    train = PreparedDataset(root=prepared, image_size=CROP, train=True)
    assert len(train) == 13
    torch.manual_seed(0)
    crops = [train[0][0] for _ in range(10)]
    assert len({c.sum().item() for c in crops}) > 1
    full = torch.from_numpy(array[0]).permute(2, 0, 1)  # every crop is a window of the image
    windows = [full[:, t : t + CROP, x : x + CROP] for t in range(9) for x in range(9)]
    assert all(any(torch.equal(c, w) for w in windows) for c in crops)

    assert len(pickle.dumps(train)) < 10_000  # the memmap is not pickled into workers
    with pytest.raises(DataError, match=r"prepared at 24x24, smaller than data.image_size=32"):
        PreparedDataset(root=prepared, image_size=32, train=True)


def test_datamodule_uses_prepared_folder(prepared):
    dm = ImageFolderDataModule(
        root=str(prepared), image_size=CROP, batch_size=4, val_count=3, num_workers=0
    )
    dm.setup("fit")
    assert dm.prepared and dm.train_files == [] and dm.val_files == []
    assert len(dm.train_indices) == 10 and len(dm.val_indices) == 3
    assert sorted(dm.train_indices + dm.val_indices) == list(range(13))
    images, skipped = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 3, CROP, CROP) and images.dtype == torch.uint8
    assert skipped.tolist() == [0, 0, 0, 0]
    assert next(iter(dm.val_dataloader()))[0].shape == (3, 3, CROP, CROP)
    preview = dm.preview_images(4)
    assert preview.shape == (3, 3, CROP, CROP) and preview.dtype == torch.uint8


def test_datamodule_prepared_with_val_root_and_preview_of_folders(prepared, photo_dir, tmp_path):
    write_photo(tmp_path / "val" / "v.png", size=(40, 30))
    dm = ImageFolderDataModule(
        root=str(prepared), val_root=str(tmp_path / "val"), image_size=CROP, num_workers=0
    )
    dm.setup()
    assert dm.train_indices == list(range(13)) and [p.name for p in dm.val_files] == ["v.png"]
    assert dm.preview_images(4).shape == (1, 3, CROP, CROP)

    folder = ImageFolderDataModule(root=str(photo_dir), image_size=CROP, val_count=0)
    assert folder.preview_images(4).shape == (4, 3, CROP, CROP)  # the first training photos


def test_truncated_array_is_a_clear_error(prepared):
    array_file = prepared / "images.u8"
    os.truncate(array_file, array_file.stat().st_size - 100)
    dm = ImageFolderDataModule(root=str(prepared), image_size=CROP, num_workers=0)
    with pytest.raises(DataError, match=r"images.u8: \d+ bytes, expected \d+ for 13 images"):
        dm.setup()


def test_interrupted_prepare_is_not_prepared(prepared, source, monkeypatch):
    (prepared / "meta.json").unlink()
    assert not is_prepared(prepared)
    dm = ImageFolderDataModule(root=str(prepared), image_size=CROP, num_workers=0)
    with pytest.raises(DataError, match="no images found"):
        dm.setup()

    # A rerun interrupted midway leaves neither a meta.json nor a partial array.
    prepare_dataset(source=source, output=prepared, size=SIZE, progress=False)
    calls = []

    def interrupt(path, size):
        calls.append(path)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return np.zeros((size, size, 3), np.uint8)

    monkeypatch.setattr(prep, "decode_square", interrupt)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(source=source, output=prepared, size=SIZE, progress=False)
    assert not is_prepared(prepared) and not (prepared / "images.u8.partial").exists()


cli_main = script_main("prepare_dataset")


def test_cli(photo_dir, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["--input", str(photo_dir), "--output", str(out), "--image-size", "16", "--size", "24"]
    assert cli_main([*args, "--workers", "2"]) == 0, capsys.readouterr().err
    stdout = capsys.readouterr().out
    assert "prepared 12 images of 24x24 (0 unreadable skipped)" in stdout
    assert f"next: python train.py data.root={out}" in stdout
    assert is_prepared(out) and json.loads((out / "meta.json").read_text())["count"] == 12

    with pytest.raises(SystemExit) as info:
        cli_main(["--help"])
    help_text = capsys.readouterr().out
    assert info.value.code == 0 and "examples:" in help_text and "--overwrite" in help_text

    for argv, message in [
        (args, "already holds a prepared dataset (add --overwrite"),
        (["--input", str(tmp_path / "nope"), "--output", str(tmp_path / "o2")], "nope: data"),
        (args[:4] + ["--image-size", "32", "--size", "24"], "smaller than --image-size"),
        ([*args, "--overwrite", "--workers", "-1"], "--workers must be >= 0, got -1"),
    ]:
        assert cli_main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert cli_main([*args, "--overwrite", "--workers", "0"]) == 0
    assert "prepared 12 images" in capsys.readouterr().out


def test_cli_reports_an_unwritable_output_in_one_line(photo_dir, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    argv = ["--input", str(photo_dir), "--output", str(blocker / "out"), "--workers", "0"]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {blocker / 'out'}: cannot write the prepared dataset (")
    assert err.count("\n") == 1
