"""Atomic file writes: a crash or a full disk never leaves a truncated file behind.

Data goes to a temporary file in the destination folder (never ``$TMPDIR``: a
rename across filesystems becomes a copy that truncates the destination first),
is flushed and fsynced, and only then renamed over the destination with
``os.replace`` (atomic on POSIX and Windows). Every model file, checkpoint,
image and video the project writes goes through :func:`atomic_path`.

``overwrite=False`` commits without clobbering: a file that appeared under the
name meanwhile (another process writing the same folder) is kept and
:class:`OutputExistsError` raised; the name is taken with a hard link (which
fails if it exists), or where the filesystem has none, claimed with ``O_EXCL``.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import torch

from .errors import ConfigError, DiskFullError, OutputExistsError

_MB = 1e6
# Kept free beyond the file itself: the filesystem's own metadata needs some room,
# and a disk filled to the last byte breaks other programs (and our logs).
_HEADROOM = 1 << 20
_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
# os.link failures that mean "no hard links here" (FAT/exFAT, some FUSE and network
# mounts, Android's shared storage), not "the name is taken".
_NO_LINKS = {
    errno.EPERM,
    errno.EACCES,
    errno.EXDEV,
    errno.EMLINK,
    errno.ENOSYS,
    getattr(errno, "ENOTSUP", errno.EPERM),
    getattr(errno, "EOPNOTSUPP", errno.EPERM),
}


@contextmanager
def atomic_write(path: str | os.PathLike, *, overwrite: bool = True) -> Iterator[BinaryIO]:
    """``with atomic_write(p) as f: f.write(...)``: ``p`` appears complete or not at all.

    ``overwrite=False``: an existing ``p`` (one that appeared while writing, too) is
    kept and :class:`OutputExistsError` raised.
    """
    with atomic_path(path, overwrite=overwrite) as tmp, open(tmp, "wb") as f:
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
def atomic_path(
    path: str | os.PathLike, *, size_hint: int | None = None, overwrite: bool = True
) -> Iterator[Path]:
    """Like :func:`atomic_write` for writers that need a file name (e.g. a video muxer).

    Yields a temporary path in the destination folder with the same suffix (the
    muxer picks the container format from it); synced to disk and renamed over
    ``path`` on success, deleted on any exception. A full disk (ENOSPC, EDQUOT)
    becomes :class:`DiskFullError`; ``size_hint`` (bytes) lets its message say
    how much space the file needs. ``overwrite=False``: never replaces a file (see the
    module's notes); one found under ``path`` at the commit is an
    :class:`OutputExistsError`, and the temporary file is deleted.
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
        if overwrite:
            os.replace(tmp, path)
        else:
            _commit_new(Path(tmp), path)
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


def _commit_new(tmp: Path, path: Path) -> None:
    """Give ``tmp`` the name ``path`` only if no file has it: checked and taken in one step.

    Checking ``path.exists()`` first and renaming after would replace a file another
    process wrote in between. A hard link fails with EEXIST instead; the temporary
    name is then removed. Without hard links, ``O_EXCL`` claims the name (an empty
    file for an instant) and the rename fills it.
    """
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise OutputExistsError(_exists_message(path)) from None
    except OSError as e:
        if e.errno not in _NO_LINKS:
            raise
    else:
        tmp.unlink()
        return
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except FileExistsError:
        raise OutputExistsError(_exists_message(path)) from None
    try:
        os.replace(tmp, path)
    except BaseException:
        path.unlink(missing_ok=True)  # our empty claim, not someone's file
        raise


def _exists_message(path: Path) -> str:
    return (
        f"{path}: already exists (written meanwhile by another run?); it was kept and "
        "this result not written"
    )


@contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """``with atomic_folder(p) as tmp:`` fill ``tmp``; then it becomes ``p`` in one rename.

    ``tmp`` is a new folder beside ``p`` (same filesystem), deleted on any
    exception, so a crash never leaves a half-written ``p``. An empty ``p`` is taken
    over; anything else found under ``p`` at the rename (a folder another process
    wrote meanwhile) is kept and :class:`OutputExistsError` raised: ``rename(2)``
    replaces an empty folder and fails on any other. The files inside are the
    caller's to sync (:func:`atomic_write_bytes` does).
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
        try:
            os.rename(tmp, path)
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                raise
            raise OutputExistsError(
                f"{path}: appeared while this was written (another run?); it is kept and "
                "nothing was written"
            ) from None
        _fsync_dir(path.parent)
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


def replace_files(folder: str | os.PathLike, files: Mapping[str, bytes]) -> None:
    """Write ``files`` (``{name: bytes}``) into the existing ``folder``, replacing files of
    those names and leaving every other entry of the folder as it is.

    All are staged first (temporary files beside their destinations, written and
    synced), so a full disk or a crash while writing leaves the folder as it was;
    then they are renamed into place in the order given (put the file that marks
    the set complete last). Only a crash between two renames, which take no space
    and a few microseconds, can leave some files new and the rest old.
    """
    folder = Path(folder)
    needed = sum(len(data) for data in files.values())
    free = shutil.disk_usage(folder).free
    if needed + _HEADROOM > free:
        raise DiskFullError(
            f"{folder}: disk full: writing {len(files)} files needs {needed / _MB:,.1f} MB, "
            f"{free / _MB:,.1f} MB free; the folder was left as it was"
        )
    umask = os.umask(0)
    os.umask(umask)
    staged: dict[str, str] = {}
    try:
        for name, data in files.items():
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
            staged[name] = tmp
            with open(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600 files
    except BaseException as e:
        for tmp in staged.values():
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno in _FULL and not isinstance(e, DiskFullError):
            raise DiskFullError(
                f"{folder}: disk full while writing {len(files)} files ({needed / _MB:,.1f} "
                "MB); the folder was left as it was"
            ) from None
        raise
    for name, tmp in staged.items():
        os.replace(tmp, folder / name)
    _fsync_dir(folder)


def check_writable(path: str | os.PathLike) -> None:
    """ConfigError naming ``path`` unless the file or folder ``path`` can be written:
    an ancestor that is a file, a read-only filesystem or folder, no permission.

    Checked by creating (and removing) an empty temporary file in the folder that
    will hold the writes (``path`` itself if it is a folder, else the nearest existing
    folder above it): what the kernel answers, so root and read-only mounts are
    judged right too, before any work is done.
    """
    path = Path(path)
    place = path if path.is_dir() else path.parent
    while not place.exists() and not place.is_symlink() and place != place.parent:
        place = place.parent  # the writer creates the missing folders
    if not place.is_dir():
        raise ConfigError(f"{path}: {place} is a file, not a folder")
    try:
        fd, tmp = tempfile.mkstemp(dir=place, prefix=".write-check.", suffix=".tmp")
    except OSError as e:
        raise ConfigError(f"{path}: cannot write in {place} ({e.strerror or e})") from None
    os.close(fd)
    os.unlink(tmp)
