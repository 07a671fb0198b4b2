"""A prepared dataset: photos decoded once into one uint8 array, read at memory speed.

Decoding JPEGs can hold a GPU back (the measured rates of both loaders are in
docs/benchmarks.md, "Data and the Lightning loop"), so ``prepare_dataset``
decodes every photo once, resizes its shorter side to S, center-crops S x S and
stores the result in a folder holding:

- ``images.u8``: a raw uint8 array of shape (N, S, S, 3), RGB, C order (memmap);
- ``meta.json``: ``{"format": "transformer-net-prepared", "version": 1,
  "count": N, "size": S, "source": ..., "files": [N relative paths in order],
  "skipped": [[relative path, reason], ...]}``.

``meta.json`` is written last and atomically, so an interrupted run never leaves
a folder that looks complete. S is somewhat larger than the training crop
(``margin_size``: 288 for 256) so that random crops still differ from epoch to
epoch. ``PreparedDataset`` reads crops from the array with the same items as
``data.ImageFolderDataset``. COCO train2014 (Lin et al. 2014) at S=288 takes
82,783 x 288 x 288 x 3 bytes, about 20.6 GB.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import UnidentifiedImageError
from torch.utils.data import Dataset
from tqdm import tqdm

from .atomic import atomic_write
from .errors import DataError, DiskFullError, first_line
from .image import list_images, load_short_side
from .sampler import crop_rng, randrange

FORMAT = "transformer-net-prepared"
VERSION = 1
ARRAY_NAME = "images.u8"
META_NAME = "meta.json"
# Crop margin: S = image_size * MARGIN, rounded to a multiple of 4.
MARGIN = 1.125


def margin_size(image_size: int) -> int:
    """The stored size S for training crops of ``image_size`` (288 for 256)."""
    return round(image_size * MARGIN / 4) * 4


def is_prepared(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder with a complete, valid ``meta.json``."""
    try:
        read_meta(path)
    except DataError:
        return False
    return True


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The folder's ``meta.json``, checked; raises DataError naming the file."""
    meta_path = Path(path) / META_NAME
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{meta_path}: not found (not a prepared dataset)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{meta_path}: unreadable ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(f"{meta_path}: not a {FORMAT} file")
    if meta.get("version") != VERSION:
        raise DataError(
            f"{meta_path}: format version {meta.get('version')!r}, this code reads {VERSION} "
            "(prepare the dataset again)"
        )
    count, size, files = meta.get("count"), meta.get("size"), meta.get("files")
    if not isinstance(count, int) or count < 1 or not isinstance(size, int) or size < 1:
        raise DataError(f"{meta_path}: bad count or size ({count!r}, {size!r})")
    if not isinstance(files, list) or len(files) != count:
        raise DataError(f"{meta_path}: lists {len(files or [])} files for count={count}")
    return meta


class PreparedDataset(Dataset):
    """Square crops from a prepared folder as (3, S, S) uint8 tensors, RGB 0-255.

    Items are ``(image, 0)`` like ``ImageFolderDataset``'s ``(image, skipped)``:
    unreadable photos were already left out by ``prepare_dataset``. ``indices``
    selects (and orders) the stored images; None: all of them.
    """

    def __init__(
        self, *, root: Path, image_size: int, train: bool, indices: list[int] | None = None
    ):
        self.root = Path(root)
        meta = read_meta(self.root)
        self.count, self.stored_size = int(meta["count"]), int(meta["size"])
        self.image_size = int(image_size)
        self.train = train
        if self.image_size > self.stored_size:
            raise DataError(
                f"{self.root}: prepared at {self.stored_size}x{self.stored_size}, smaller than "
                f"data.image_size={self.image_size} (prepare again with --image-size "
                f"{self.image_size})"
            )
        self.array_path = self.root / ARRAY_NAME
        s = self.stored_size
        expected = self.count * s * s * 3
        try:
            actual = self.array_path.stat().st_size
        except FileNotFoundError:
            raise DataError(f"{self.array_path}: missing (prepare the dataset again)") from None
        if actual != expected:
            raise DataError(
                f"{self.array_path}: {actual} bytes, expected {expected} for {self.count} "
                f"images of {s}x{s} (truncated or from another run; prepare the dataset again)"
            )
        self.indices = list(range(self.count)) if indices is None else [int(i) for i in indices]
        if not self.indices:
            raise DataError(f"{self.root}: no images selected")
        bad = [i for i in self.indices if not 0 <= i < self.count]
        if bad:
            raise DataError(f"{self.root}: image index {bad[0]} out of range 0..{self.count - 1}")
        # Opened on first use in each DataLoader worker, never pickled (see __getstate__).
        self._array: np.memmap | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Pickling a memmap would copy the whole array into every worker.
        return {**self.__dict__, "_array": None}

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        """``key``: an index, or ``(index, crop_seed)`` from ``sampler.ResumableSampler``."""
        index, rng = crop_rng(key)
        if self._array is None:
            s = self.stored_size
            self._array = np.memmap(
                self.array_path, dtype=np.uint8, mode="r", shape=(self.count, s, s, 3)
            )
        stored = self._array[self.indices[index]]  # (S, S, 3) view into the file
        s, c = self.stored_size, self.image_size
        if self.train:
            top = randrange(rng, s - c + 1)
            left = randrange(rng, s - c + 1)
        else:
            top = left = (s - c) // 2
        crop = stored[top : top + c, left : left + c].transpose(2, 0, 1)  # (3, c, c) view
        # One copy out of the read-only map into a contiguous, writable (3, c, c) array.
        return torch.from_numpy(np.array(crop, dtype=np.uint8, order="C")), 0


def prepare_dataset(
    *, source: Path, output: Path, size: int, workers: int = 0, progress: bool = True
) -> dict[str, Any]:
    """Decode every photo below ``source`` into a prepared folder ``output``; returns meta.

    Unreadable photos are skipped with a warning on stderr and listed in the meta.
    ``workers`` > 0 decodes in that many processes. An existing prepared folder at
    ``output`` is replaced (it stops being valid as soon as this starts).
    ``progress``: a tqdm bar on stderr (images done, images/s, skipped).
    Every problem raises :class:`DataError` naming the folder (a full disk:
    :class:`~transformer_net.errors.DiskFullError`).
    """
    source, output = Path(source).expanduser(), Path(output).expanduser()
    if size < 1:
        raise DataError(f"{output}: size must be >= 1, got {size}")
    if not source.is_dir():
        what = "does not exist" if not source.exists() else "is not a folder"
        raise DataError(f"{source}: data folder {what}")
    files = list_images(source)
    if not files:
        raise DataError(f"{source}: no images found (searched recursively for .jpg, .png, ...)")
    try:
        output.mkdir(parents=True, exist_ok=True)
        # Invalidate an older result first: from here until the end, the folder is incomplete.
        (output / META_NAME).unlink(missing_ok=True)
        kept, skipped = _write_array(source, files, output, size, workers, progress)
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "count": len(kept),
            "size": int(size),
            "source": str(source.resolve()),
            "files": kept,
            "skipped": skipped,
        }
        with atomic_write(output / META_NAME) as f:  # last: marks the folder complete
            f.write(json.dumps(meta, indent=1).encode("utf-8"))
    except DiskFullError:  # names the space needed and what was kept
        raise
    except OSError as e:  # permissions, a read-only disk, output is a file...
        raise DataError(f"{output}: cannot write the prepared dataset ({first_line(e)})") from None
    return meta


def _write_array(
    source: Path, files: list[Path], output: Path, size: int, workers: int, progress: bool
) -> tuple[list[str], list[list[str]]]:
    """Decode ``files`` into ``output/images.u8``; (kept relative paths, [path, reason] skipped).

    The array is written as ``images.u8.partial`` and renamed when complete; it
    is removed on any failure, Ctrl-C included.
    """
    partial = output / f"{ARRAY_NAME}.partial"
    kept: list[str] = []
    skipped: list[list[str]] = []
    results = _decoded(files, size, workers)
    bar = tqdm(
        total=len(files),
        desc="prepared",
        unit="image",
        file=sys.stderr,
        disable=not progress,
        mininterval=0.5,
    )
    try:
        # Sized for every file; truncated to the readable ones at the end.
        array = np.memmap(partial, dtype=np.uint8, mode="w+", shape=(len(files), size, size, 3))
        for path, (image, reason) in zip(files, results, strict=True):
            if image is None:
                skipped.append([path.relative_to(source).as_posix(), reason])
                # tqdm.write keeps the bar below the warning (and prints without a bar too).
                tqdm.write(f"warning: skipping unreadable image {path} ({reason})", sys.stderr)
                bar.set_postfix(skipped=len(skipped), refresh=False)
            else:
                array[len(kept)] = image
                kept.append(path.relative_to(source).as_posix())
            bar.update()
        array.flush()
        del array  # unmap before truncating
        if not kept:
            raise DataError(f"{source}: none of the {len(files)} images could be read")
        os.truncate(partial, len(kept) * size * size * 3)
        os.replace(partial, output / ARRAY_NAME)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        bar.close()
        results.close()  # stops the worker pool now, also on Ctrl-C
    return kept, skipped


def decode_square(path: str | os.PathLike, size: int) -> np.ndarray:
    """A photo as a (size, size, 3) uint8 RGB array: shorter side resized, center crop."""
    img = load_short_side(path, size)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)


def _decode_job(job: tuple[str, int]) -> tuple[np.ndarray | None, str]:
    """(image, "") or (None, why it is unreadable); never raises, for Pool.imap."""
    path, size = job
    try:
        return decode_square(path, size), ""
    except UnidentifiedImageError:
        empty = os.path.getsize(path) == 0
        return None, "empty file" if empty else "not an image PIL can read"
    except Exception as e:  # truncated JPEG, decompression bomb, I/O error, ...
        return None, str(e).strip() or type(e).__name__


def _ignore_sigint() -> None:
    # Ctrl-C reaches the whole process group; only the parent handles it, by
    # terminating the pool, instead of every worker printing a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _decoded(files: list[Path], size: int, workers: int):
    """Yields ``_decode_job`` results in the order of ``files``."""
    jobs = [(str(p), size) for p in files]
    if workers <= 0:
        yield from map(_decode_job, jobs)
        return
    # Chunks amortize the inter-process round trips; small enough to balance load.
    chunksize = max(1, min(32, len(jobs) // (workers * 4)))
    with multiprocessing.Pool(workers, initializer=_ignore_sigint) as pool:
        yield from pool.imap(_decode_job, jobs, chunksize=chunksize)
