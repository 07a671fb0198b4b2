"""Tests for transformer_net.download against a local HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import threading
import time
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import script_main
from transformer_net import download as dl

REPO_ROOT = Path(__file__).resolve().parent.parent
PAYLOAD = bytes(range(256)) * 400  # 102,400 bytes


@dataclass
class ServerState:
    files: dict[str, bytes] = field(default_factory=dict)
    ignore_range: bool = False  # answer 200 with the whole file even to a Range request
    cut_after: int | None = None  # send only this many body bytes, once, then hang up
    extra_length: int = 0  # announce a Content-Length this much larger than the body
    delay: float = 0.0  # seconds to wait before answering (a server that stopped answering)
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
        time.sleep(state.delay)
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


def _jpeg(seed: int = 0) -> bytes:
    """A small real JPEG: the sample photos must decode before they are kept."""
    buf = io.BytesIO()
    Image.new("RGB", (24, 16), (seed * 40 % 256, 90, 160)).save(buf, "JPEG")
    return buf.getvalue()


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


def test_progress_bar_on_stderr_and_quiet_mode(server, tmp_path, capsys):
    url = server.add("/file.bin", PAYLOAD)
    dl.download(url, tmp_path / "file.bin", progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    # tqdm's bar: the file name, the size received and the speed, closed by a newline.
    assert "file.bin" in captured.err and "100k/100k" in captured.err
    assert "B/s" in captured.err and captured.err.endswith("\n")
    dl.download(url, tmp_path / "again.bin", progress=False)
    assert capsys.readouterr().err == ""


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


def test_fetch_file_checks_a_known_hash_and_keeps_nothing_else(server, monkeypatch, tmp_path):
    monkeypatch.setenv("TRANSFORMER_NET_CACHE", str(tmp_path / "cache"))
    url = server.add("/styles/wave.jpg", _jpeg())
    real = hashlib.sha256(_jpeg()).hexdigest()[:8]
    wrong = "0" * 8 if real != "0" * 8 else "1" * 8
    with pytest.raises(dl.DownloadError) as info:
        dl.fetch_file(url, subdir="styles", sha256=wrong, progress=False)
    message = str(info.value)
    assert "\n" not in message and url in message and not info.value.network
    assert f"SHA-256 starts {real}, not {wrong}" in message and "nothing was kept" in message
    assert not (tmp_path / "cache").exists()  # no file, no partial file, no empty folders
    path = dl.fetch_file(url, subdir="styles", sha256=real, progress=False)
    assert path.read_bytes() == _jpeg()
    assert [p.name for p in path.parent.iterdir()] == ["wave.jpg"]


def test_a_truncated_image_is_not_kept(server, monkeypatch, tmp_path):
    # torch.hub does not compare the bytes received with Content-Length: the
    # image must decode before it is kept.
    monkeypatch.setenv("TRANSFORMER_NET_CACHE", str(tmp_path / "cache"))
    body = _jpeg()
    url = server.add("/styles/wave.jpg", body)
    server.state.cut_after = len(body) // 2
    with pytest.raises(dl.DownloadError, match="not a complete image") as info:
        dl.fetch_file(url, subdir="styles", progress=False)
    assert url in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "cache").exists()
    assert dl.fetch_file(url, subdir="styles", progress=False).read_bytes() == body  # a rerun


def test_a_server_that_stops_answering_times_out(server, tmp_path):
    import socket

    url = server.add("/slow.jpg", _jpeg())
    server.state.delay = 1.0
    before = socket.getdefaulttimeout()
    with pytest.raises(dl.DownloadError, match=r"\(timed out\); check your connection") as info:
        dl.fetch_url(url, tmp_path / "slow.jpg", progress=False, timeout=0.2)
    assert info.value.network and not (tmp_path / "slow.jpg").exists()
    assert socket.getdefaulttimeout() == before  # the process-wide default is restored


def test_fetch_url_names_what_it_fetches_and_takes_the_callers_advice(server, tmp_path):
    url = server.url("/missing.pth")
    with pytest.raises(dl.DownloadError) as info:
        dl.fetch_url(url, tmp_path / "w.pth", what=f"the weights from {url}", advice="pass a file")
    assert str(info.value) == (
        f"cannot download the weights from {url} (the server answered HTTP 404 Not Found); "
        "pass a file"
    )
    assert not info.value.network


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
    good = [server.add(f"/train2017/{i:012d}.jpg", _jpeg(i)) for i in range(3)]
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
    good = server.add("/train2017/000000000001.jpg", _jpeg())
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
    real = dl.fetch_url
    monkeypatch.setattr(dl, "fetch_url", lambda *a, **k: calls.append(a) or real(*a, **k))
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

SCRIPT = REPO_ROOT / "scripts" / "download_coco.py"
cli_main = script_main("download_coco")


def test_cli_reports_download_error(server, tmp_path, capsys):
    url = server.url("/missing.zip")
    assert cli_main(["--root", str(tmp_path), "--url", url, "--no-verify"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and url in lines[0]


def test_cli_success_prints_next_command(server, tmp_path, capsys):
    url = server.add("/train2014.zip", _zip_bytes({"train2014/a.jpg": b"a"}))
    assert cli_main(["--root", str(tmp_path), "--url", url, "--no-verify"]) == 0
    assert f"python train.py data.root={tmp_path / 'train2014'}" in capsys.readouterr().out


def test_cli_help_has_examples(capsys):
    with pytest.raises(SystemExit) as info:
        cli_main(["--help"])
    assert info.value.code == 0
    assert "examples:" in capsys.readouterr().out


def test_the_script_runs_from_the_command_line():
    # The one subprocess: the script's own imports, from the repository root as documented.
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "--keep-zip" in result.stdout
