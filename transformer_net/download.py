"""Downloads: small assets through torch.hub, the 13 GB COCO zip resumably.

- Small files (style paintings, the COCO sample photos, the VGG-16 weights of
  ``vgg.py``): :func:`fetch_url`, i.e. ``torch.hub.download_url_to_file``, which
  writes a temporary file, checks the SHA-256 prefix where one is known, and
  keeps the file under its real name only when complete.
- The COCO train2014 zip (Lin et al. 2014, https://cocodataset.org; the photos
  Johnson et al. 2016 train on): :func:`download`, which resumes an interrupted
  transfer with an HTTP Range request instead of starting 13 GB again.

Every failure is a one-line :class:`DownloadError` naming the URL, with
``network=True`` when the server could not be reached. Only the standard library
and tqdm are imported here (torch on the first small download), so
``scripts/download_coco.py`` starts instantly.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import os
import re
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from tqdm import tqdm

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
    "fetch_url",
]

COCO_TRAIN2014_URL = "http://images.cocodataset.org/zips/train2014.zip"
COCO_TRAIN2014_COUNT = 82783

# 48 of the first COCO train2017 images (those of the coco128 subset; 139 and 285,
# which are val2017 images, are left out). Kept as a block of numbers: one per
# line would make the list three screens long.
_COCO_SAMPLE_IDS = (
    9, 25, 30, 34, 36, 42, 49, 61, 64, 71, 72, 73, 74, 77, 78, 81,
    86, 89, 92, 94, 109, 110, 113, 127, 133, 136, 138, 142, 143, 144, 149,
    151, 154, 164, 165, 192, 194, 196, 201, 208, 241, 247, 250, 257, 260, 263, 283, 294,
)  # fmt: skip
COCO_SAMPLE_URLS: tuple[str, ...] = tuple(
    f"http://images.cocodataset.org/train2017/{image_id:012d}.jpg" for image_id in _COCO_SAMPLE_IDS
)

_CHUNK = 1 << 20
_USER_AGENT = "transformer-net-downloader/1.0"
_RESUME_HINT = "check your connection and rerun: the download resumes where it stopped"
# OSErrors about the local folder, not the connection: other downloads would not fail too.
_LOCAL_ERRNOS = {errno.ENOSPC, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT}
_LOCAL_ERRNOS.add(getattr(errno, "EDQUOT", errno.ENOSPC))
_URL_HINT = "check the URL and rerun"


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


# --- small files: torch.hub ------------------------------------------------------


def fetch_url(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    what: str | None = None,
    advice: str | None = None,
    progress: bool = True,
    timeout: float = 60,
) -> Path:
    """Download the small file at ``url`` to ``dest`` unless it exists; return ``dest``.

    ``torch.hub.download_url_to_file`` does the transfer (a tqdm bar on stderr
    when ``progress``) and checks that the file's SHA-256 starts with ``sha256``
    when given. It does not compare the bytes received with the announced
    length, so without a hash an image (by ``dest``'s suffix) must decode
    completely before it is kept: a connection cut short never leaves a
    truncated photo in the cache. Nothing is ever left under ``dest`` but a
    complete file, and folders created for it are removed again on failure.

    Failures raise ``DownloadError("cannot download <what> (<why>); <advice>")``,
    ``what`` defaulting to the URL and ``advice`` to what fits the failure;
    ``network`` is True when the server could not be reached. A full disk
    raises :class:`~transformer_net.errors.DiskFullError`, naming the space needed.
    """
    dest = Path(dest)
    if dest.exists():
        return dest
    _check_url(url)
    # Imported here, not at the top: torch is slow to import, and
    # scripts/download_coco.py never needs it.
    import torch.hub

    from .atomic import atomic_path
    from .errors import DiskFullError
    from .image import is_image_file

    created = _make_folder(dest.parent)
    try:
        with _socket_timeout(timeout), atomic_path(dest) as tmp:
            torch.hub.download_url_to_file(url, str(tmp), hash_prefix=sha256, progress=progress)
            if sha256 is None and is_image_file(dest):
                _check_image(tmp)
    except DiskFullError:
        _remove_empty(dest.parent, up_to=created)
        raise
    except Exception as err:
        _remove_empty(dest.parent, up_to=created)
        why, default_advice, network = _failure(err, sha256)
        raise DownloadError(
            f"cannot download {what or url} ({why}); {advice or default_advice}", network=network
        ) from None
    return dest


class _IncompleteImage(Exception):
    """A downloaded image does not decode completely (truncated, or not an image)."""


def _check_image(path: Path) -> None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()  # decodes every byte: a truncated file fails here
    except UnidentifiedImageError:  # its message names our temporary file
        raise _IncompleteImage("not an image PIL can read") from None
    except Exception as err:  # PIL's errors for truncated files vary
        raise _IncompleteImage(_one_line(err) or type(err).__name__) from None


def _failure(err: Exception, sha256: str | None) -> tuple[str, str, bool]:
    """(why, advice, network) for a failed small download; re-raises a bug."""
    if isinstance(err, urllib.error.HTTPError):
        return f"the server answered HTTP {err.code} {_one_line(err.reason)}", _URL_HINT, False
    if isinstance(err, _IncompleteImage):
        return f"the file received is not a complete image: {err}", "rerun", False
    got = re.search(r'got "([0-9a-f]+)"', str(err)) if isinstance(err, RuntimeError) else None
    if got:  # torch.hub's hash check
        why = (
            f"the file's SHA-256 starts {got.group(1)[:8]}, not {sha256}: the transfer was cut "
            "short or the file on the server changed, and nothing was kept"
        )
        return why, "rerun", False
    if isinstance(err, OSError) and not isinstance(err, urllib.error.URLError):
        if err.errno in _LOCAL_ERRNOS:
            return _reason(err), "free some disk space or fix the folder's permissions", False
    if isinstance(err, OSError | http.client.HTTPException):
        return _reason(err), "check your connection and rerun", True
    raise err


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """The process-wide socket timeout, for the duration of a torch.hub download.

    ``download_url_to_file`` opens its connection without a timeout, so a server
    that stops answering would hang the run forever; its ``urlopen`` uses this
    default instead. Downloads run before training, while no other thread opens
    connections.
    """
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def fetch_file(
    url: str,
    *,
    name: str | None = None,
    subdir: str = "assets",
    progress: bool = True,
    sha256: str | None = None,
) -> Path:
    """Download ``url`` once into ``cache_dir()/subdir/name`` and return that path.

    ``name`` defaults to the last component of the URL's path; ``sha256``, the
    start of the file's SHA-256 where it is known (see :func:`fetch_url`).
    """
    if name is None:
        name = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name
    if not name:
        raise ValueError(f"cannot derive a file name from {url!r}; pass name=")
    return fetch_url(url, cache_dir() / subdir / name, sha256=sha256, progress=progress)


def fetch_coco_sample(dest: Path, *, count: int = 48, progress: bool = True) -> Path:
    """Download up to ``count`` COCO train2017 photos (from ``COCO_SAMPLE_URLS``) into ``dest``.

    Files already present are skipped. The first failure to reach the server
    (offline) ends the fetch at once; photos the server refuses are skipped and
    counted. Either way there is at most one line about it: a warning naming how
    many photos are missing, or a :class:`DownloadError` when fewer than half
    arrived, with the way to train on photos of one's own. Photos that arrived
    are kept; folders created here are removed if they stay empty. The progress
    bar (photos fetched) shows only on a terminal.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    dest = Path(dest)
    created = _first_missing(dest)  # the top folder made for the first photo, if any
    urls = COCO_SAMPLE_URLS[:count]
    ok, failed, offline = 0, [], False
    # disable=None: tqdm draws only on a terminal, not into logs.
    bar = tqdm(
        urls,
        desc=f"fetching COCO sample into {dest}",
        unit="photo",
        file=sys.stderr,
        disable=None if progress else True,
    )
    with bar:
        for url in bar:
            target = dest / Path(urllib.parse.urlsplit(url).path).name
            try:
                fetch_url(url, target, progress=False, timeout=30)
                ok += 1
            except DownloadError as err:
                failed.append(str(err).split("; ")[0])  # what failed, without the advice
                if err.network:
                    offline = True
                    break  # offline: the other photos would fail the same way, one by one
    if 2 * ok < len(urls):
        _remove_empty(dest, up_to=created)
        raise DownloadError(
            f"could not fetch the COCO sample into {dest} ({ok} of {len(urls)} photos: "
            f"{failed[0] if failed else 'no photos'}); offline, train on photos of your own "
            "instead: data.root=/path/to/photos" + (" (the photos fetched are kept)" if ok else ""),
            network=offline,
        )
    if failed:
        tqdm.write(
            f"warning: {len(failed)} of {len(urls)} COCO sample photos could not be fetched "
            f"(first: {failed[0]}); training on the {ok} others",
            file=sys.stderr,
        )
    return dest


# --- the COCO zip: resumable --------------------------------------------------------


class _Restart(Exception):
    """The .part file cannot be resumed from; start again from zero."""


def download(url: str, dest: Path, *, progress: bool = True, timeout: float = 60) -> Path:
    """Download ``url`` to ``dest`` and return ``dest``; an existing ``dest`` is kept as is.

    Bytes go to ``dest`` + ``.part`` first, which is renamed to ``dest`` only when
    complete (and, when the server says how big the file is, of the right size).
    An existing ``.part`` is resumed with an HTTP Range request. On failure a
    :class:`DownloadError` naming the URL is raised and the ``.part`` is kept, so
    calling again continues where the transfer stopped. Used for the COCO zip;
    small files go through :func:`fetch_url`.
    """
    dest = Path(dest)
    if dest.exists():
        return dest
    _check_url(url)
    part = dest.with_suffix(dest.suffix + ".part")
    created = _make_folder(dest.parent)  # removed again if nothing arrives
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


def _transfer(url: str, part: Path, *, progress: bool, timeout: float) -> None:
    """Fetch ``url`` into ``part``, resuming from its current size; raise on failure."""
    offset = part.stat().st_size if part.exists() else 0
    response = _open(url, offset, timeout)
    if response is None:  # the .part is already complete
        return
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
        name = Path(urllib.parse.urlsplit(url).path).name or url
        bar = tqdm(
            total=total,
            initial=offset,
            desc=name,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            file=sys.stderr,
            disable=not progress,
        )
        with bar:
            _receive(response, part, mode, bar)
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


def _open(url: str, offset: int, timeout: float) -> http.client.HTTPResponse | None:
    """The response for the bytes from ``offset`` on; None when there are none left."""
    headers = {"User-Agent": _USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        with err:
            if err.code == 416 and offset:  # nothing left to send: complete, or a stale .part
                total = _parse_content_range(err.headers.get("Content-Range"))[1]
                if total is None or total == offset:
                    return None
                raise _Restart from None
            raise DownloadError(
                f"{url}: the server answered HTTP {err.code} {_one_line(err.reason)}; {_URL_HINT}"
            ) from None


def _receive(response: http.client.HTTPResponse, part: Path, mode: str, bar: tqdm) -> None:
    """Append (``mode="ab"``) or write the response body to ``part``."""
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
            bar.update(len(chunk))


def _write_error(part: Path, err: OSError) -> DownloadError:
    return DownloadError(
        f"could not write {part}: {_reason(err)}; free some disk space or fix the folder's "
        "permissions, then rerun: the download resumes where it stopped"
    )


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
        try:
            bar = tqdm(
                members,
                desc=f"extracting {zip_path.name}",
                unit="file",
                file=sys.stderr,
                disable=not progress,
            )
            with bar:
                for info in bar:
                    archive.extract(info, base)
        except (zipfile.BadZipFile, EOFError) as err:
            raise DownloadError(f"{zip_path} is corrupt ({_reason(err)}); {bad_zip}") from err
        except OSError as err:
            raise DownloadError(
                f"could not extract {zip_path} into {root}: {_reason(err)}; "
                "free some disk space and rerun"
            ) from err


# --- shared -----------------------------------------------------------------------


def _check_url(url: str) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise DownloadError(f"{url!r} is not a valid URL; pass an http:// or https:// URL")


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _reason(err: BaseException) -> str:
    """Why a transfer failed, in a few words: ``Connection refused``, ``timed out``..."""
    if isinstance(err, urllib.error.URLError) and not isinstance(err, urllib.error.HTTPError):
        if not isinstance(err.reason, BaseException):
            return _one_line(err.reason)
        err = err.reason
    if isinstance(err, TimeoutError):
        return "timed out"
    if isinstance(err, OSError) and err.strerror:
        return _one_line(err.strerror)
    return _one_line(err) or type(err).__name__


def _make_folder(folder: Path) -> Path | None:
    """Create ``folder``; return the outermost folder created (None: it existed)."""
    created = _first_missing(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DownloadError(
            f"cannot create {folder}: {_reason(err)}; choose another folder"
        ) from err
    return created


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
