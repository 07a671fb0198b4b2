"""Atomic file writes: a crash or a full disk never leaves a truncated file behind.

Data goes to a temporary file in the destination folder (never ``$TMPDIR``: a
rename across filesystems becomes a copy that truncates the destination first),
is flushed and fsynced, and only then renamed over the destination with
``os.replace`` (atomic on POSIX and Windows). Every model file, checkpoint,
image and video the project writes goes through :func:`atomic_path`.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import torch

from .errors import DiskFullError

_MB = 1e6
# Kept free beyond the file itself: the filesystem's own metadata needs some room,
# and a disk filled to the last byte breaks other programs (and our logs).
_HEADROOM = 1 << 20
_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """``with atomic_write(p) as f: f.write(...)``: ``p`` appears complete or not at all."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        yield f


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` that never leaves a truncated file (temp file + rename).

    Serialized to memory first (model files and checkpoints are a few MB) so that
    a full disk is reported before anything is touched, with the space needed.
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getbuffer())


def atomic_write_bytes(path: str | os.PathLike, data: bytes | memoryview) -> Path:
    """Write ``data`` to ``path`` atomically, refusing up front if it cannot fit.

    Knowing the size first (checkpoints and model files are serialized to memory)
    lets a full disk be reported before anything is touched, with the exact space
    needed; the ENOSPC path of :func:`atomic_path` still covers a disk that fills
    while writing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    needed = len(data)
    free = shutil.disk_usage(path.parent).free
    if needed + _HEADROOM > free:
        raise DiskFullError(_full_message(path, needed=needed, free=free))
    with atomic_path(path, size_hint=needed) as tmp, open(tmp, "wb") as f:
        f.write(data)
    return path


@contextmanager
def atomic_path(path: str | os.PathLike, *, size_hint: int | None = None) -> Iterator[Path]:
    """Like :func:`atomic_write` for writers that need a file name (e.g. a video muxer).

    Yields a temporary path in the destination folder with the same suffix (the
    muxer picks the container format from it); synced to disk and renamed over
    ``path`` on success, deleted on any exception. A full disk (ENOSPC, EDQUOT)
    becomes :class:`DiskFullError`; ``size_hint`` (bytes) lets its message say
    how much space the file needs.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}"
    )
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        # mkstemp creates 0600 files; give the usual permissions of a new file.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
        _fsync_dir(path.parent)  # the rename itself survives a power cut
    except OSError as e:
        written = _size(tmp)
        Path(tmp).unlink(missing_ok=True)
        if e.errno in _FULL and not isinstance(e, DiskFullError):
            needed = size_hint if size_hint is not None else None
            free = shutil.disk_usage(path.parent).free
            raise DiskFullError(
                _full_message(path, needed=needed, written=written, free=free)
            ) from None
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """``with atomic_folder(p) as tmp:`` fill ``tmp``; then it becomes ``p`` in one rename.

    ``tmp`` is a new folder beside ``p`` (same filesystem), deleted on any
    exception, so a crash never leaves a half-written ``p``. An existing ``p`` is
    replaced (moved aside, then deleted once the new one is in place); whether it
    may be is the caller's decision. The files inside are the caller's to sync
    (:func:`atomic_write_bytes` does).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp creates 0700 folders
        _fsync_dir(tmp)
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
            os.replace(path, old)  # onto the empty folder just made: a free name
        try:
            os.replace(tmp, path)
        except BaseException:
            if old is not None:
                os.replace(old, path)  # put the old one back
            raise
        _fsync_dir(path.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _full_message(path: Path, *, needed: int | None, free: int, written: int | None = None) -> str:
    if needed is not None:
        size = f"needs {needed / _MB:,.1f} MB"
    else:
        size = f"needs more than the {(written or 0) / _MB:,.1f} MB written before it filled"
    kept = f"{path.name} was left as it was" if path.exists() else f"no {path.name} was written"
    return (
        f"{path.parent}: disk full: writing {path.name} {size}, {free / _MB:,.1f} MB free; {kept}"
    )


def _size(path: str) -> int | None:
    try:
        return os.path.getsize(path)
    except OSError:
        return None


def _fsync_dir(folder: Path) -> None:
    """fsync a folder so a rename into it is durable (a no-op where not supported)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows cannot open folders; its rename is durable by itself
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
