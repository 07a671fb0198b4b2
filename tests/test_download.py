"""Tests for transformer_net.download against a local HTTP server on 127.0.0.1."""

from __future__ import annotations

import io
import subprocess
import sys
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from transformer_net import download as dl

REPO_ROOT = Path(__file__).resolve().parent.parent
PAYLOAD = bytes(range(256)) * 400  # 102,400 bytes


@dataclass
class ServerState:
    files: dict[str, bytes] = field(default_factory=dict)
    ignore_range: bool = False  # answer 200 with the whole file even to a Range request
    cut_after: int | None = None  # send only this many body bytes, once, then hang up
    extra_length: int = 0  # announce a Content-Length this much larger than the body
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range)


class _Handler(BaseHTTPRequestHandler):
    state: ServerState  # set on the per-server subclass
    timeout = 5

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        state = self.state
        range_header = self.headers.get("Range")
        state.requests.append((self.path, range_header))
        body = state.files.get(self.path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        if range_header and not state.ignore_range:
            start = int(range_header.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        chunk = body[start:]
        self.send_header("Content-Length", str(len(chunk) + state.extra_length))
        self.end_headers()
        if state.cut_after is not None:
            chunk = chunk[: state.cut_after]
            state.cut_after = None
        self.wfile.write(chunk)


class LocalServer:
    def __init__(self) -> None:
        self.state = ServerState()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def url(self, path: str) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}{path}"

    def add(self, path: str, body: bytes) -> str:
        self.state.files[path] = body
        return self.url(path)


@pytest.fixture
def server():
    srv = LocalServer()
    srv.thread.start()
    try:
        yield srv
    finally:
        srv.httpd.shutdown()
        srv.httpd.server_close()
        srv.thread.join(timeout=2)


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


# --- download -------------------------------------------------------------------


def test_full_download(server, tmp_path):
    url = server.add("/file.bin", PAYLOAD)
    dest = tmp_path / "sub" / "file.bin"
    assert dl.download(url, dest, progress=False) == dest
    assert dest.read_bytes() == PAYLOAD
    assert not dest.with_suffix(".bin.part").exists()
    assert server.state.requests == [("/file.bin", None)]


def test_existing_dest_is_not_downloaded_again(server, tmp_path):
    url = server.add("/file.bin", PAYLOAD)
    dest = tmp_path / "file.bin"
    dest.write_bytes(b"already here")
    assert dl.download(url, dest, progress=False) == dest
    assert dest.read_bytes() == b"already here"
    assert server.state.requests == []


def test_resume_from_part(server, tmp_path):
    url = server.add("/file.bin", PAYLOAD)
    dest = tmp_path / "file.bin"
    dest.with_suffix(".bin.part").write_bytes(PAYLOAD[:1000])
    dl.download(url, dest, progress=False)
    assert server.state.requests == [("/file.bin", "bytes=1000-")]
    assert dest.read_bytes() == PAYLOAD


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    url = server.add("/file.bin", PAYLOAD)
    server.state.ignore_range = True
    dest = tmp_path / "file.bin"
    dest.with_suffix(".bin.part").write_bytes(b"x" * 1000)  # wrong bytes: must be replaced
    dl.download(url, dest, progress=False)
    assert server.state.requests == [("/file.bin", "bytes=1000-")]
    assert dest.read_bytes() == PAYLOAD


def test_complete_part_answered_416_is_renamed(server, tmp_path):
    url = server.add("/file.bin", PAYLOAD)
    dest = tmp_path / "file.bin"
    dest.with_suffix(".bin.part").write_bytes(PAYLOAD)
    dl.download(url, dest, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert not dest.with_suffix(".bin.part").exists()


def test_part_larger_than_file_is_restarted(server, tmp_path):
    url = server.add("/file.bin", PAYLOAD)
    dest = tmp_path / "file.bin"
    dest.with_suffix(".bin.part").write_bytes(PAYLOAD + b"junk")
    dl.download(url, dest, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert [r for _, r in server.state.requests] == [f"bytes={len(PAYLOAD) + 4}-", None]


def test_interrupted_transfer_keeps_part_and_resumes(server, tmp_path):
    url = server.add("/file.bin", PAYLOAD)
    server.state.cut_after = 30_000
    dest = tmp_path / "file.bin"
    part = dest.with_suffix(".bin.part")
    with pytest.raises(dl.DownloadError, match="resumes where it stopped") as info:
        dl.download(url, dest, progress=False)
    assert url in str(info.value)
    assert "\n" not in str(info.value)
    assert not dest.exists()
    assert part.read_bytes() == PAYLOAD[:30_000]

    dl.download(url, dest, progress=False)
    assert server.state.requests[-1] == ("/file.bin", "bytes=30000-")
    assert dest.read_bytes() == PAYLOAD
    assert not part.exists()


def test_size_mismatch_raises(server, tmp_path):
    url = server.add("/file.bin", PAYLOAD)
    server.state.extra_length = 10
    dest = tmp_path / "file.bin"
    with pytest.raises(dl.DownloadError, match=f"{len(PAYLOAD)} of {len(PAYLOAD) + 10} bytes"):
        dl.download(url, dest, progress=False)
    assert not dest.exists()


def test_http_error_names_url(server, tmp_path):
    url = server.url("/missing.bin")
    with pytest.raises(dl.DownloadError, match="HTTP 404") as info:
        dl.download(url, tmp_path / "missing.bin", progress=False)
    assert url in str(info.value)
    assert not (tmp_path / "missing.bin.part").exists()


def test_unreachable_url_raises_download_error(tmp_path):
    url = "http://127.0.0.1:1/x"
    with pytest.raises(dl.DownloadError) as info:
        dl.download(url, tmp_path / "x", progress=False, timeout=2)
    assert url in str(info.value)


def test_invalid_url_raises_download_error(tmp_path):
    with pytest.raises(dl.DownloadError, match="not a valid URL"):
        dl.download("not-a-url", tmp_path / "x", progress=False)


def test_progress_line_on_stderr(server, tmp_path, capsys):
    url = server.add("/file.bin", PAYLOAD)
    dl.download(url, tmp_path / "file.bin", progress=True)
    err = capsys.readouterr().err
    assert "file.bin" in err and "MB/s" in err and err.endswith("\n")


# --- cache ----------------------------------------------------------------------


def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("TRANSFORMER_NET_CACHE", str(tmp_path / "c"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert dl.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("TRANSFORMER_NET_CACHE")
    assert dl.cache_dir() == tmp_path / "xdg" / "transformer-net"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert dl.cache_dir() == tmp_path / "home" / ".cache" / "transformer-net"


def test_fetch_file_caches(server, monkeypatch, tmp_path):
    monkeypatch.setenv("TRANSFORMER_NET_CACHE", str(tmp_path / "cache"))
    url = server.add("/weights/vgg.pth", PAYLOAD)
    path = dl.fetch_file(url, progress=False)
    assert path == tmp_path / "cache" / "assets" / "vgg.pth"
    assert path.read_bytes() == PAYLOAD
    assert dl.fetch_file(url, progress=False) == path
    assert len(server.state.requests) == 1  # second call served from the cache

    named = dl.fetch_file(url, name="other.pth", subdir="models", progress=False)
    assert named == tmp_path / "cache" / "models" / "other.pth"


# --- COCO -----------------------------------------------------------------------


def test_sample_urls_are_train2017_images():
    assert len(dl.COCO_SAMPLE_URLS) == 48
    assert len(set(dl.COCO_SAMPLE_URLS)) == 48
    assert dl.COCO_SAMPLE_URLS[0] == "http://images.cocodataset.org/train2017/000000000009.jpg"
    assert all(
        u.startswith("http://images.cocodataset.org/train2017/") for u in dl.COCO_SAMPLE_URLS
    )


def test_download_coco_extracts_and_removes_zip(server, tmp_path):
    url = server.add(
        "/train2014.zip", _zip_bytes({"train2014/a.jpg": b"a", "train2014/b.jpg": b"b"})
    )
    root = tmp_path / "coco"
    images = dl.download_coco(root, url=url, expected_count=2, progress=False)
    assert images == root / "train2014"
    assert sorted(p.name for p in images.iterdir()) == ["a.jpg", "b.jpg"]
    assert not (root / "train2014.zip").exists()

    # already complete: no new request
    n = len(server.state.requests)
    assert dl.download_coco(root, url=url, expected_count=2, progress=False) == images
    assert len(server.state.requests) == n


def test_download_coco_keep_zip(server, tmp_path):
    url = server.add("/train2014.zip", _zip_bytes({"train2014/a.jpg": b"a"}))
    dl.download_coco(tmp_path, url=url, expected_count=None, keep_zip=True, progress=False)
    assert (tmp_path / "train2014.zip").is_file()
    assert (tmp_path / "train2014" / "a.jpg").read_bytes() == b"a"


def test_download_coco_wrong_count_raises(server, tmp_path):
    url = server.add(
        "/train2014.zip", _zip_bytes({"train2014/a.jpg": b"a", "train2014/b.jpg": b"b"})
    )
    with pytest.raises(dl.DownloadError, match="holds 2 .jpg files but 5 were expected"):
        dl.download_coco(tmp_path, url=url, expected_count=5, progress=False)


def test_download_coco_rejects_path_escape(server, tmp_path):
    url = server.add(
        "/train2014.zip", _zip_bytes({"train2014/a.jpg": b"a", "../evil.jpg": b"evil"})
    )
    root = tmp_path / "coco"
    with pytest.raises(dl.DownloadError, match="outside"):
        dl.download_coco(root, url=url, expected_count=None, progress=False)
    assert not (tmp_path / "evil.jpg").exists()
    assert not (root / "train2014").exists()


def test_download_coco_bad_zip(server, tmp_path):
    url = server.add("/train2014.zip", b"this is not a zip file" * 10)
    with pytest.raises(dl.DownloadError, match="not a valid zip archive; delete it and rerun"):
        dl.download_coco(tmp_path, url=url, expected_count=None, progress=False)


def test_fetch_coco_sample_tolerates_failures(server, monkeypatch, tmp_path, capsys):
    good = [server.add(f"/train2017/{i:012d}.jpg", f"img{i}".encode()) for i in range(3)]
    missing = server.url("/train2017/000000999999.jpg")
    monkeypatch.setattr(dl, "COCO_SAMPLE_URLS", (*good, missing))
    dest = tmp_path / "sample"
    assert dl.fetch_coco_sample(dest, progress=False) == dest
    assert sorted(p.name for p in dest.iterdir()) == [f"{i:012d}.jpg" for i in range(3)]
    assert missing in capsys.readouterr().err

    # files already there are skipped
    n = len(server.state.requests)
    dl.fetch_coco_sample(dest, count=3, progress=False)
    assert len(server.state.requests) == n


def test_fetch_coco_sample_raises_when_most_fail(server, monkeypatch, tmp_path):
    good = server.add("/train2017/000000000001.jpg", b"img")
    missing = [server.url(f"/train2017/00000000010{i}.jpg") for i in range(3)]
    monkeypatch.setattr(dl, "COCO_SAMPLE_URLS", (good, *missing))
    with pytest.raises(dl.DownloadError, match=r"\(1 of 4 photos: .*data.root=/path/to/photos"):
        dl.fetch_coco_sample(tmp_path / "sample", progress=False)
    assert (tmp_path / "sample" / "000000000001.jpg").is_file()  # what arrived is kept


def test_download_error_says_whether_the_server_was_reached(server, tmp_path):
    with pytest.raises(dl.DownloadError) as refused:
        dl.download(server.url("/nope.bin"), tmp_path / "a" / "nope.bin", progress=False)
    with pytest.raises(dl.DownloadError) as unreachable:
        dl.download("http://127.0.0.1:1/x.bin", tmp_path / "b" / "c" / "x.bin", progress=False)
    assert not refused.value.network and unreachable.value.network
    # Folders made for a file that never arrived are removed again.
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_offline_coco_sample_fails_in_one_line_and_leaves_no_folder(monkeypatch, tmp_path, capfd):
    urls = tuple(f"http://127.0.0.1:1/train2017/{i:012d}.jpg" for i in range(48))
    monkeypatch.setattr(dl, "COCO_SAMPLE_URLS", urls)
    calls = []
    real = dl.download
    monkeypatch.setattr(dl, "download", lambda *a, **k: calls.append(a) or real(*a, **k))
    dest = tmp_path / "data" / "coco_sample"
    with pytest.raises(dl.DownloadError) as info:
        dl.fetch_coco_sample(dest)
    message = str(info.value)
    assert "\n" not in message and message.endswith("data.root=/path/to/photos")
    assert "0 of 48 photos" in message and "127.0.0.1:1" in message
    assert len(calls) == 1  # offline: one try, not 48
    assert capfd.readouterr().err == ""  # nothing per photo: the error is the one line
    assert not (tmp_path / "data").exists()
    # A folder that was there before stays, with what it held.
    dest.mkdir(parents=True)
    (dest / "README.txt").write_text("mine")
    with pytest.raises(dl.DownloadError):
        dl.fetch_coco_sample(dest)
    assert [p.name for p in dest.iterdir()] == ["README.txt"]


# --- CLI ------------------------------------------------------------------------


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "scripts/download_coco.py", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_cli_reports_download_error(server, tmp_path):
    url = server.url("/missing.zip")
    result = _run_cli("--root", str(tmp_path), "--url", url, "--no-verify")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and url in lines[0]


def test_cli_success_prints_next_command(server, tmp_path):
    url = server.add("/train2014.zip", _zip_bytes({"train2014/a.jpg": b"a"}))
    result = _run_cli("--root", str(tmp_path), "--url", url, "--no-verify")
    assert result.returncode == 0, result.stderr
    assert f"python train.py data.root={tmp_path / 'train2014'}" in result.stdout


def test_cli_help_has_examples():
    result = _run_cli("--help")
    assert result.returncode == 0
    assert "examples:" in result.stdout
