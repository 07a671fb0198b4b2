"""Data: recursive folders, crops, conversions, unreadable files skipped and counted."""

import logging

import pytest
import torch

from tests.conftest import write_photo
from transformer_net.data import DataError, ImageFolderDataModule, ImageFolderDataset
from transformer_net.image import ImageError, list_images, load_image


def test_crops_are_square_uint8_rgb_for_every_mode(tmp_path):
    files = [
        write_photo(tmp_path / "rgb.jpg", size=(60, 40)),
        write_photo(tmp_path / "gray.jpg", size=(40, 70), mode="L"),
        write_photo(tmp_path / "cmyk.jpg", size=(50, 50), mode="CMYK"),
        write_photo(tmp_path / "pal.png", size=(33, 45), mode="P"),
        write_photo(tmp_path / "rgba.png", size=(45, 33), mode="RGBA"),
    ]
    for train in (True, False):
        ds = ImageFolderDataset(files=files, image_size=32, train=train)
        for i in range(len(ds)):
            img, skipped = ds[i]
            assert img.shape == (3, 32, 32) and img.dtype == torch.uint8 and skipped == 0


def test_center_crop_is_deterministic_random_crop_is_not(tmp_path):
    f = [write_photo(tmp_path / "wide.png", size=(200, 40))]
    val = ImageFolderDataset(files=f, image_size=32, train=False)
    assert torch.equal(val[0][0], val[0][0])
    train = ImageFolderDataset(files=f, image_size=32, train=True)
    torch.manual_seed(0)
    crops = {train[0][0].sum().item() for _ in range(10)}
    assert len(crops) > 1


def test_unreadable_files_are_skipped_with_warning_and_counted(tmp_path, caplog):
    good = write_photo(tmp_path / "good.jpg")
    truncated = tmp_path / "trunc.jpg"
    truncated.write_bytes(good.read_bytes()[:200])
    text = tmp_path / "text.jpg"
    text.write_text("hello")
    ds = ImageFolderDataset(files=[truncated, text, good], image_size=16, train=True)
    with caplog.at_level(logging.WARNING):
        img, skipped = ds[0]
    assert skipped == 2 and img.shape == (3, 16, 16)
    assert "trunc.jpg" in caplog.text and "text.jpg" in caplog.text


def test_all_unreadable_is_a_data_error(tmp_path):
    bad = [tmp_path / f"{i}.jpg" for i in range(3)]
    for p in bad:
        p.write_bytes(b"")
    with pytest.raises(DataError, match="all unreadable"):
        ImageFolderDataset(files=bad, image_size=16, train=True)[0]


def test_datamodule_recursive_split_and_loader(photo_dir):
    dm = ImageFolderDataModule(
        root=str(photo_dir), image_size=32, batch_size=4, val_count=3, num_workers=0
    )
    dm.setup("fit")
    assert len(dm.train_files) == 9 and len(dm.val_files) == 3
    assert not set(dm.train_files) & set(dm.val_files)
    dm2 = ImageFolderDataModule(
        root=str(photo_dir), image_size=32, batch_size=4, val_count=3, num_workers=0
    )
    dm2.setup("fit")
    assert dm2.val_files == dm.val_files  # the same validation photos every run
    images, skipped = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 3, 32, 32) and skipped.tolist() == [0, 0, 0, 0]
    assert next(iter(dm.val_dataloader()))[0].shape == (3, 3, 32, 32)


def test_datamodule_val_root(photo_dir, tmp_path):
    write_photo(tmp_path / "val" / "v.png")
    dm = ImageFolderDataModule(
        root=str(photo_dir), val_root=str(tmp_path / "val"), image_size=32, num_workers=0
    )
    dm.setup()
    assert len(dm.train_files) == 12 and [p.name for p in dm.val_files] == ["v.png"]


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(root="/nonexistent/folder"), "data folder does not exist"),
        (dict(image_size=30), "multiple of 4"),
        (dict(batch_size=0), "batch_size"),
    ],
)
def test_datamodule_errors(photo_dir, kwargs, message):
    with pytest.raises(DataError, match=message):
        dm = ImageFolderDataModule(**{"root": str(photo_dir), "num_workers": 0, **kwargs})
        dm.setup()


def test_empty_folder_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no photos here")
    dm = ImageFolderDataModule(root=str(tmp_path / "empty"), num_workers=0)
    with pytest.raises(DataError, match="empty: no images found"):
        dm.setup()


def test_list_images_and_load_image_errors(tmp_path, photo_dir):
    assert len(list_images(photo_dir)) == 12
    (tmp_path / "z.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match="z.jpg: empty file"):
        load_image(tmp_path / "z.jpg")
    with pytest.raises(ImageError, match="missing.png: file not found"):
        load_image(tmp_path / "missing.png")


def test_sixteen_bit_png_is_rescaled_not_clipped(tmp_path):
    import numpy as np
    from PIL import Image

    arr = np.full((8, 8), 32768, dtype=np.uint16)  # mid-gray in 16 bits
    Image.fromarray(arr).save(tmp_path / "g16.png")
    img = load_image(tmp_path / "g16.png")
    assert img.shape == (3, 8, 8) and abs(int(img[0, 0, 0]) - 128) <= 1


def test_resumable_sampler_shards_skips_and_seeds_crops_deterministically():
    from transformer_net.sampler import ResumableSampler

    full = list(ResumableSampler(length=11, seed=3))
    assert sorted(i for i, _ in full) == list(range(11))
    assert full == list(ResumableSampler(length=11, seed=3))  # same seed, same order + crops
    s = ResumableSampler(length=11, seed=3)
    s.set_epoch(1)
    assert [i for i, _ in s] != [i for i, _ in full]  # a new order each epoch
    # Two ranks: disjoint halves of the same permutation, the odd item dropped.
    r0 = list(ResumableSampler(length=11, seed=3, num_replicas=2, rank=0))
    r1 = list(ResumableSampler(length=11, seed=3, num_replicas=2, rank=1))
    assert len(r0) == len(r1) == 5 and not {i for i, _ in r0} & {i for i, _ in r1}
    assert r0 == full[0:10:2] and r1 == full[1:10:2]
    # Starting mid-epoch yields exactly the rest, once.
    s = ResumableSampler(length=11, seed=3)
    s.start = 4
    assert list(s) == full[4:] and list(s) == full


def test_resumable_loader_restores_its_position(photo_dir):
    dm = ImageFolderDataModule(
        root=str(photo_dir), image_size=32, batch_size=2, val_count=2, num_workers=0
    )
    dm.setup()
    loader = dm.train_dataloader()
    epoch = [b[0] for b in loader]  # 10 training photos -> 5 batches of (2, 3, 32, 32)
    it = iter(loader)
    next(it), next(it)
    state = loader.state_dict()
    assert state["batches"] == 2

    fresh = dm.train_dataloader()
    fresh.load_state_dict(state)
    rest = [b[0] for b in fresh]
    assert len(rest) == 3
    for a, b in zip(rest, epoch[2:], strict=True):
        assert torch.equal(a, b)  # same photos, same random crops
    # Another dataset size: a warning, and the epoch starts over.
    fresh.load_state_dict({**state, "samples": 99})
    assert len(list(fresh)) == 5
