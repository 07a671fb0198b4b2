"""Resumable downloads: the COCO train2014 photos, a small COCO sample, cached assets.

Only the standard library is used, so ``scripts/download_coco.py`` starts instantly.
"""

from __future__ import annotations

import http.client
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from .errors import DownloadError

__all__ = [
    "COCO_SAMPLE_URLS",
    "COCO_TRAIN2014_COUNT",
    "COCO_TRAIN2014_URL",
    "DownloadError",
    "cache_dir",
    "download",
    "download_coco",
    "fetch_coco_sample",
    "fetch_file",
]

COCO_TRAIN2014_URL = "http://images.cocodataset.org/zips/train2014.zip"
COCO_TRAIN2014_COUNT = 82783

# 48 of the first COCO train2017 images (those of the coco128 subset; 139 and 285,
# which are val2017 images, are left out).
_COCO_SAMPLE_IDS = (
    9, 25, 30, 34, 36, 42, 49, 61, 64, 71, 72, 73, 74, 77, 78, 81,
    86, 89, 92, 94, 109, 110, 113, 127, 133, 136, 138, 142, 143, 144, 149,
    151, 154, 164, 165, 192, 194, 196, 201, 208, 241, 247, 250, 257, 260, 263, 283, 294,
)  # fmt: skip
COCO_SAMPLE_URLS: tuple[str, ...] = tuple(
    f"http://images.cocodataset.org/train2017/{image_id:012d}.jpg" for image_id in _COCO_SAMPLE_IDS
)

_CHUNK = 1 << 20
_MB = 1e6
_USER_AGENT = "transformer-net-downloader/1.0"
_RESUME_HINT = "check your connection and rerun: the download resumes where it stopped"


def cache_dir() -> Path:
    """Where downloaded assets are cached (not created here).

    ``$TRANSFORMER_NET_CACHE`` if set, else ``$XDG_CACHE_HOME/transformer-net``,
    else ``~/.cache/transformer-net``.
    """
    explicit = os.environ.get("TRANSFORMER_NET_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "transformer-net"


class _Progress:
    """A single updating stderr line: MB done / total and the current speed."""

    def __init__(self, label: str, total: int | None, start: int, enabled: bool) -> None:
        self.label = label
        self.total = total
        self.start = start
        self.enabled = enabled
        self.t0 = time.monotonic()
        self.last = 0.0
        self.width = 0
        self.shown = False

    def update(self, done: int, *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self.last < 0.25:
            return
        self.last = now
        rate = (done - self.start) / _MB / max(now - self.t0, 1e-6)
        total = f"{self.total / _MB:,.1f}" if self.total is not None else "?"
        line = f"{self.label}: {done / _MB:,.1f} / {total} MB  {rate:,.1f} MB/s"
        sys.stderr.write("\r" + line.ljust(self.width))
        sys.stderr.flush()
        self.width = len(line)
        self.shown = True

    def close(self, done: int) -> None:
        if self.enabled:
            self.update(done, force=True)
            sys.stderr.write("\n")
            sys.stderr.flush()


class _Restart(Exception):
    """The .part file cannot be resumed from; start again from zero."""


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _reason(err: BaseException) -> str:
    if isinstance(err, urllib.error.URLError) and not isinstance(err, urllib.error.HTTPError):
        if not isinstance(err.reason, BaseException):
            return _one_line(err.reason)
        err = err.reason
    if isinstance(err, TimeoutError):
        return "timed out"
    if isinstance(err, OSError) and err.strerror:
        return _one_line(err.strerror)
    return _one_line(err) or type(err).__name__


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """``bytes 100-199/1000`` -> (100, 1000); ``bytes */1000`` -> (None, 1000)."""
    if not value:
        return None, None
    unit, _, spec = value.strip().partition(" ")
    if unit.lower() != "bytes":
        return None, None
    span, _, total_text = spec.partition("/")
    start_text = span.partition("-")[0]
    start = int(start_text) if start_text.strip().isdigit() else None
    total = int(total_text) if total_text.strip().isdigit() else None
    return start, total


def _write_error(part: Path, err: OSError) -> DownloadError:
    return DownloadError(
        f"could not write {part}: {_reason(err)}; free some disk space or fix the folder's "
        "permissions, then rerun: the download resumes where it stopped"
    )


def _transfer(url: str, part: Path, *, progress: bool, timeout: float) -> None:
    """Fetch ``url`` into ``part``, resuming from its current size; raise on failure."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": _USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise DownloadError(f"{url!r} is not a valid URL; pass an http:// or https:// URL")
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        with err:
            if err.code == 416 and offset:  # nothing left to send: complete, or a stale .part
                total = _parse_content_range(err.headers.get("Content-Range"))[1]
                if total is None or total == offset:
                    return
                raise _Restart from None
            raise DownloadError(
                f"{url}: the server answered HTTP {err.code} {_one_line(err.reason)}; "
                "check the URL and rerun"
            ) from None

    with response:
        if response.status == 206:
            start, total = _parse_content_range(response.headers.get("Content-Range"))
            if start != offset:
                raise _Restart
            mode = "ab"
        else:  # 200: the server ignored the Range header and sends the whole file
            offset, total, mode = 0, None, "wb"
        if total is None:
            length = response.headers.get("Content-Length", "").strip()
            total = offset + int(length) if length.isdigit() else None

        done = offset
        bar = _Progress(Path(parts.path).name or url, total, offset, progress)
        try:
            try:
                out = part.open(mode)
            except OSError as err:
                raise _write_error(part, err) from err
            with out:
                while chunk := response.read(_CHUNK):
                    try:
                        out.write(chunk)
                    except OSError as err:
                        raise _write_error(part, err) from err
                    done += len(chunk)
                    bar.update(done)
        finally:
            bar.close(done)

    size = part.stat().st_size
    if total is not None and size != total:
        if size > total:
            part.unlink(missing_ok=True)
            raise DownloadError(
                f"{url}: received {size} bytes but the server announced {total}; "
                "the partial file was removed, rerun to download it again"
            )
        raise DownloadError(
            f"{url}: the transfer stopped after {size} of {total} bytes; {_RESUME_HINT}",
            network=True,
        )


def download(url: str, dest: Path, *, progress: bool = True, timeout: float = 60) -> Path:
    """Download ``url`` to ``dest`` and return ``dest``; an existing ``dest`` is kept as is.

    Bytes go to ``dest`` + ``.part`` first, which is renamed to ``dest`` only when
    complete (and, when the server says how big the file is, of the right size).
    An existing ``.part`` is resumed with an HTTP Range request. On failure a
    :class:`DownloadError` naming the URL is raised and the ``.part`` is kept, so
    calling again continues where the transfer stopped.
    """
    dest = Path(dest)
    if dest.exists():
        return dest
    part = dest.with_suffix(dest.suffix + ".part")
    created = _first_missing(dest.parent)  # removed again if nothing arrives
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DownloadError(
            f"cannot create {dest.parent}: {_reason(err)}; choose another folder"
        ) from err
    try:
        for _ in range(2):
            try:
                _transfer(url, part, progress=progress, timeout=timeout)
                break
            except _Restart:
                part.unlink(missing_ok=True)
        else:
            raise DownloadError(
                f"{url}: the server does not resume downloads consistently; delete {part} and rerun"
            )
        os.replace(part, dest)
    except DownloadError:
        _remove_empty(dest.parent, up_to=created)
        raise
    except (OSError, http.client.HTTPException) as err:
        _remove_empty(dest.parent, up_to=created)  # a kept .part keeps its folder
        raise DownloadError(
            f"could not download {url}: {_reason(err)}; {_RESUME_HINT}", network=True
        ) from err
    return dest


def _count_jpgs(folder: Path) -> int:
    if not folder.is_dir():
        return 0
    with os.scandir(folder) as entries:
        return sum(1 for e in entries if e.name.lower().endswith(".jpg") and e.is_file())


def _extract(zip_path: Path, root: Path, *, progress: bool) -> None:
    """Extract ``zip_path`` into ``root``, refusing members that would land outside it."""
    bad_zip = f"{zip_path} is not a valid zip archive; delete it and rerun to download it again"
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as err:
        raise DownloadError(bad_zip) from err
    with archive:
        members = archive.infolist()
        if not members:
            raise DownloadError(bad_zip)
        base = root.resolve()
        for info in members:
            name = PurePosixPath(info.filename.replace("\\", "/"))
            target = (base / name).resolve()
            if name.is_absolute() or ".." in name.parts or not target.is_relative_to(base):
                raise DownloadError(
                    f"{zip_path} holds {info.filename!r}, which would be written outside "
                    f"{root}; nothing was extracted: delete the archive and check the URL"
                )
        shown = False
        try:
            for i, info in enumerate(members, 1):
                archive.extract(info, base)
                if progress and (i % 1000 == 0 or i == len(members)):
                    sys.stderr.write(
                        f"\rextracting {zip_path.name}: {i:,} / {len(members):,} files"
                    )
                    sys.stderr.flush()
                    shown = True
        except (zipfile.BadZipFile, EOFError) as err:
            raise DownloadError(f"{zip_path} is corrupt ({_reason(err)}); {bad_zip}") from err
        except OSError as err:
            raise DownloadError(
                f"could not extract {zip_path} into {root}: {_reason(err)}; "
                "free some disk space and rerun"
            ) from err
        finally:
            if shown:
                sys.stderr.write("\n")


def download_coco(
    root: Path,
    *,
    url: str = COCO_TRAIN2014_URL,
    expected_count: int | None = COCO_TRAIN2014_COUNT,
    keep_zip: bool = False,
    progress: bool = True,
) -> Path:
    """Download and extract COCO train2014 into ``root``; return ``root/train2014``.

    The zip (about 13 GB) is downloaded resumably into ``root``, checked to be a
    readable archive, extracted, and deleted unless ``keep_zip``. The number of
    ``.jpg`` files is then checked against ``expected_count`` (``None`` skips the
    check). Nothing is done when the folder already holds the expected number of
    images (with ``expected_count=None``: when it holds any image at all).
    """
    root = Path(root)
    images = root / "train2014"
    found = _count_jpgs(images)
    if found and (expected_count is None or found == expected_count):
        return images

    zip_name = Path(urllib.parse.urlsplit(url).path).name or "train2014.zip"
    zip_path = root / zip_name
    download(url, zip_path, progress=progress)
    _extract(zip_path, root, progress=progress)

    found = _count_jpgs(images)
    if expected_count is not None and found != expected_count:
        raise DownloadError(
            f"{images} holds {found} .jpg files but {expected_count} were expected; the archive "
            f"may be incomplete or the wrong one: delete {zip_path} and {images}, then rerun"
        )
    if not keep_zip:
        zip_path.unlink(missing_ok=True)
    return images


def fetch_coco_sample(dest: Path, *, count: int = 48, progress: bool = True) -> Path:
    """Download up to ``count`` COCO train2017 photos (from ``COCO_SAMPLE_URLS``) into ``dest``.

    Files already present are skipped. The first failure to reach the server
    (offline) ends the fetch at once; photos the server refuses are skipped and
    counted. Either way there is at most one line about it: a warning naming how
    many photos are missing, or a :class:`DownloadError` when fewer than half
    arrived, with the way to train on photos of one's own. Photos that arrived
    are kept; folders created here are removed if they stay empty.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    dest = Path(dest)
    created = _first_missing(dest)  # the top folder mkdir will create, if any
    urls = COCO_SAMPLE_URLS[:count]
    shown = progress and _is_terminal(sys.stderr)  # in-place updates only on a terminal
    ok, failed, offline, drawn = 0, [], False, False
    try:
        for i, url in enumerate(urls, 1):
            target = dest / Path(urllib.parse.urlsplit(url).path).name
            try:
                download(url, target, progress=False, timeout=30)
                ok += 1
            except DownloadError as err:
                target.with_suffix(target.suffix + ".part").unlink(missing_ok=True)
                failed.append(str(err))
                if err.network:
                    offline = True
                    break  # offline: the other photos would fail the same way, one by one
            if shown:
                sys.stderr.write(f"\rfetching COCO sample into {dest}: {i} / {len(urls)}")
                sys.stderr.flush()
                drawn = True
    finally:
        if drawn:
            sys.stderr.write("\n")
    if 2 * ok < len(urls):
        _remove_empty(dest, up_to=created)
        first = failed[0].split("; ")[0] if failed else "no photos"
        raise DownloadError(
            f"could not fetch the COCO sample into {dest} ({ok} of {len(urls)} photos: {first}); "
            "offline, train on photos of your own instead: data.root=/path/to/photos"
            + (" (the photos fetched are kept)" if ok else ""),
            network=offline,
        )
    if failed:
        print(
            f"warning: {len(failed)} of {len(urls)} COCO sample photos could not be fetched "
            f"(first: {failed[0].split('; ')[0]}); training on the {ok} others",
            file=sys.stderr,
        )
    return dest


def _is_terminal(stream: object) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of ``path`` (itself included) that does not exist yet."""
    missing = None
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing = folder
    return missing


def _remove_empty(path: Path, *, up_to: Path | None) -> None:
    """Remove ``path`` and its parents up to ``up_to`` while they are empty folders.

    Only folders this process created (``up_to`` did not exist before) are
    touched, and ``rmdir`` never removes a folder that holds anything.
    """
    if up_to is None:
        return
    for folder in (path, *path.parents):
        try:
            folder.rmdir()
        except OSError:  # not empty (or gone): everything above it stays
            return
        if folder == up_to:
            return


def fetch_file(
    url: str, *, name: str | None = None, subdir: str = "assets", progress: bool = True
) -> Path:
    """Download ``url`` once into ``cache_dir()/subdir/name`` and return that path.

    ``name`` defaults to the last component of the URL's path.
    """
    if name is None:
        name = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name
    if not name:
        raise ValueError(f"cannot derive a file name from {url!r}; pass name=")
    return download(url, cache_dir() / subdir / name, progress=progress)
