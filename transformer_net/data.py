"""Training data: any folder of photos, searched recursively (e.g. COCO train2014).

Johnson et al. 2016 train on the 80k COCO 2014 training images resized to 256x256.
Here each photo's shorter side is resized to ``image_size`` and a square crop is
taken (random for training, centered for validation). Grayscale and CMYK JPEGs
(COCO has both) are converted to RGB. A file that cannot be decoded is skipped
with a warning, counted, and replaced by the next readable file, so one bad image
never ends an epoch.

``root`` may also be a folder made by ``scripts/prepare_dataset.py`` (see
``prepared.py``): the photos decoded once into one array, read several times
faster than decoding JPEGs.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from . import download
from .errors import DataError
from .image import is_image_file, list_images, load_short_side, pil_to_tensor
from .prepared import PreparedDataset, is_prepared
from .sampler import ResumableDataLoader, ResumableSampler, crop_rng, randrange

log = logging.getLogger(__name__)
# How many consecutive unreadable files a sample may skip before the data is
# declared broken (a folder of mostly bad files is a configuration error).
MAX_CONSECUTIVE_FAILURES = 50
# Validation photos per batch at most (beyond the training batch size): they are
# processed without gradients, so 16 take less memory than a training batch of 4.
VAL_BATCH_LIMIT = 16


class ImageFolderDataset(Dataset):
    """Square crops of photos as (3, S, S) uint8 tensors, RGB 0-255.

    Items are ``(image, skipped)`` where ``skipped`` counts the unreadable files
    passed over to produce this image (summed into a metric by the trainer).
    """

    def __init__(self, *, files: list[Path], image_size: int, train: bool):
        if not files:
            raise DataError("no image files given")
        self.files = list(files)
        self.image_size = int(image_size)
        self.train = train

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        """``key``: an index, or ``(index, crop_seed)`` from ``sampler.ResumableSampler``."""
        index, rng = crop_rng(key)
        for skipped in range(min(MAX_CONSECUTIVE_FAILURES, len(self.files))):
            path = self.files[(index + skipped) % len(self.files)]
            try:
                return self._load(path, rng), skipped
            except Exception as e:  # truncated JPEG, not an image, I/O error, ...
                log.warning(
                    "skipping unreadable image %s (%s)", path, str(e).strip() or type(e).__name__
                )
        raise DataError(
            f"{self.files[index]}: this and the next {MAX_CONSECUTIVE_FAILURES - 1} images "
            "are all unreadable; check the data folder"
        )

    def _load(self, path: Path, rng: random.Random | None) -> torch.Tensor:
        s = self.image_size
        img = load_short_side(path, s)
        w, h = img.size
        if self.train:
            left = randrange(rng, w - s + 1)
            top = randrange(rng, h - s + 1)
        else:
            left, top = (w - s) // 2, (h - s) // 2
        return pil_to_tensor(img.crop((left, top, left + s, top + s)))


class ImageFolderDataModule(pl.LightningDataModule):
    """Train/validation loaders over a folder of photos.

    Validation images come from ``val_root`` if given, otherwise ``val_count``
    photos are held out of ``root`` (a fixed, seeded choice, so the TensorBoard
    panels always show the same photos).

    When ``root`` is a prepared folder (``prepared.is_prepared``), its images are
    selected by index: ``train_indices``/``val_indices`` are set instead of
    ``train_files``/``val_files`` (``val_files`` still holds a ``val_root``'s
    photos). ``preview_images`` gives center crops from either kind.
    """

    def __init__(
        self,
        *,
        root: str,
        image_size: int = 256,
        batch_size: int = 4,
        val_root: str | None = None,
        val_count: int = 8,
        max_images: int | None = None,
        num_workers: int | None = None,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        download_sample: int = 0,
        seed: int = 0,
    ):
        super().__init__()
        if image_size < 16 or image_size % 4:
            raise DataError(f"data.image_size must be a multiple of 4 and >= 16, got {image_size}")
        if batch_size < 1:
            raise DataError(f"data.batch_size must be >= 1, got {batch_size}")
        self.root = Path(root).expanduser()
        self.val_root = Path(val_root).expanduser() if val_root else None
        self.image_size = int(image_size)
        self.batch_size = int(batch_size)
        self.val_count = int(val_count)
        self.max_images = max_images
        # Leave one core to the training process itself.
        self.num_workers = (
            max(0, min(8, (os.cpu_count() or 1) - 1)) if num_workers is None else int(num_workers)
        )
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        self.persistent_workers = bool(persistent_workers) and self.num_workers > 0
        self.download_sample = int(download_sample or 0)
        self.seed = int(seed)  # the training order and crops: see sampler.py
        self.train_files: list[Path] = []
        self.val_files: list[Path] = []
        # Set instead of the file lists when root is a prepared folder.
        self.prepared = False
        self.train_indices: list[int] = []
        self.val_indices: list[int] = []

    def prepare_data(self) -> None:
        """Fetch a small COCO sample into ``root`` when asked to and it has no images."""
        has_data = self.root.is_dir() and holds_photos(self.root)
        if self.download_sample > 0 and not has_data:
            download.fetch_coco_sample(self.root, count=self.download_sample)

    def find_files(self) -> None:
        """List and split the images; raises DataError naming the folder if unusable."""
        if is_prepared(self.root):
            # Checks the array (size, truncation) now, before any training starts.
            count = len(PreparedDataset(root=self.root, image_size=self.image_size, train=True))
            self.prepared = True
            self.train_indices, self.val_indices = self._split(list(range(count)))
        else:
            self.train_files, self.val_files = self._split(_images_in(self.root, "data.root"))
        if self.val_root is not None:
            self.val_files = _images_in(self.val_root, "data.val_root")[: self.val_count]

    def _split(self, items: list) -> tuple[list, list]:
        """(train, val): ``val_count`` held out by a seeded shuffle unless ``val_root`` is set.

        The shuffle depends only on the length, so a prepared copy of a folder
        (no unreadable files) holds out the same photos as the folder itself.
        """
        train, val = items, []
        if self.val_root is None:
            shuffled = items.copy()
            random.Random(0).shuffle(shuffled)
            n_val = min(self.val_count, max(0, len(items) - 1))
            val, train = sorted(shuffled[:n_val]), sorted(shuffled[n_val:])
        if self.max_images:
            train = train[: int(self.max_images)]
        if len(train) < self.batch_size:
            raise DataError(
                f"{self.root}: {len(train)} training images, fewer than one batch "
                f"(data.batch_size={self.batch_size})"
            )
        return train, val

    def setup(self, stage: str | None = None) -> None:
        if not (self.train_files or self.train_indices):
            self.find_files()

    def _dataset(self, files: list[Path], indices: list[int], *, train: bool) -> Dataset | None:
        """Photos from ``files``, else images ``indices`` of the prepared root; None if neither."""
        if files:
            return ImageFolderDataset(files=files, image_size=self.image_size, train=train)
        if indices:
            return PreparedDataset(
                root=self.root, image_size=self.image_size, train=train, indices=indices
            )
        return None

    def preview_images(self, count: int = 4) -> torch.Tensor:
        """Up to ``count`` validation (else training) center crops, (n, 3, S, S) uint8."""
        if not (self.train_files or self.train_indices):
            self.find_files()
        dataset = self._dataset(self.val_files[:count], self.val_indices[:count], train=False)
        if dataset is None:  # no validation images: the first training ones
            dataset = self._dataset(
                self.train_files[:count], self.train_indices[:count], train=False
            )
        return torch.stack([dataset[i][0] for i in range(len(dataset))])

    def _loader_options(self) -> dict:
        return {
            "batch_size": self.batch_size,
            "num_workers": self.num_workers,
            "pin_memory": self.pin_memory,
            "persistent_workers": self.persistent_workers,
        }

    def train_dataloader(self) -> ResumableDataLoader:
        """Seeded, DDP-sharded order whose position is saved in checkpoints (sampler.py)."""
        dataset = self._dataset(self.train_files, self.train_indices, train=True)
        trainer = getattr(self, "trainer", None)
        world, rank = (trainer.world_size, trainer.global_rank) if trainer else (1, 0)
        if len(dataset) < world * self.batch_size:
            raise DataError(
                f"{self.root}: {len(dataset)} training images, fewer than one batch on each of "
                f"{world} processes (data.batch_size={self.batch_size})"
            )
        sampler = ResumableSampler(
            length=len(dataset), seed=self.seed, num_replicas=world, rank=rank
        )
        return ResumableDataLoader(dataset, sampler=sampler, **self._loader_options())

    def val_dataloader(self) -> DataLoader | list:
        dataset = self._dataset(self.val_files, self.val_indices, train=False)
        if dataset is None:
            return []
        # Larger batches than training (no gradients): the default 8 validation
        # photos are one batch, so that the sanity check before training (one
        # batch, trainer.num_sanity_val_steps) sees them all and logs step 0.
        options = {**self._loader_options(), "batch_size": self.val_batch_size}
        return DataLoader(dataset, shuffle=False, **options)

    @property
    def val_batch_size(self) -> int:
        """Validation batch size: at least the training batch, up to 16 photos."""
        return max(self.batch_size, min(self.val_count, VAL_BATCH_LIMIT))


def has_images(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds any photo (searched recursively, stops at the first)."""
    for _dirpath, _dirs, names in os.walk(folder):
        if any(is_image_file(name) for name in names):
            return True
    return False


def holds_photos(folder: Path) -> bool:
    """Whether ``folder`` holds photos: a prepared folder, or any image file."""
    return is_prepared(folder) or has_images(folder)


def check_folder(folder: Path, key: str, *, prepared_ok: bool = False) -> None:
    """Raise DataError naming ``folder`` and the setting ``key`` if it holds no photos.

    ``prepared_ok``: a folder made by scripts/prepare_dataset.py counts as photos.
    """
    if not folder.exists():
        hint = " or get COCO: python scripts/download_coco.py" if key == "data.root" else ""
        raise DataError(f"{folder}: data folder does not exist (set {key}=/path/to/images{hint})")
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder (set {key}=/path/to/images)")
    if not (holds_photos(folder) if prepared_ok else has_images(folder)):
        raise DataError(f"{folder}: no images found (searched recursively for .jpg, .png, ...)")


def _images_in(folder: Path, key: str) -> list[Path]:
    check_folder(folder, key)
    return list_images(folder)
