"""A Hugging Face Hub stand-in on localhost: one model repository, read-only, over HTTP.

It answers the requests ``huggingface_hub.snapshot_download`` makes, as the Hub
does (as of huggingface_hub 2.4): the revision's commit
(``GET /api/models/{repo}/revision/{rev}``), the file listing
(``GET /api/models/{repo}/tree/{commit}``), and each file's metadata and bytes
(``HEAD``/``GET /{repo}/resolve/{commit}/{file}``: ``X-Repo-Commit``, ``ETag``,
``Content-Length``). Anything else is a 404 with the Hub's error header, as
the Hub answers for a repository or revision that does not exist. Tests point
``huggingface_hub.constants.ENDPOINT`` at :attr:`FakeHub.url`.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


class FakeHub:
    """Serves ``folder``'s files as ``repo_id`` at ``commit``, on branch ``main``."""

    def __init__(self, repo_id: str, folder: Path, commit: str):
        self.repo_id, self.commit = repo_id, commit
        self.files = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}
        self.requests: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                hub._answer(self, body=True)

            def do_HEAD(self) -> None:  # noqa: N802
                hub._answer(self, body=False)

            def log_message(self, *args) -> None:  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop serving (again: nothing); the port then refuses connections."""
        if self.thread.is_alive():
            self.server.shutdown()
            self.thread.join()
        self.server.server_close()

    def _revision(self, rev: str) -> str | None:
        return self.commit if rev in ("main", self.commit) else None

    def _answer(self, handler: BaseHTTPRequestHandler, *, body: bool) -> None:
        path = unquote(urlsplit(handler.path).path)
        self.requests.append(f"{handler.command} {path}")
        api = f"/api/models/{self.repo_id}/"
        resolve = f"/{self.repo_id}/resolve/"
        if path.startswith(api + "revision/"):
            commit = self._revision(path[len(api + "revision/") :])
            if commit is None:
                return self._error(handler, "RevisionNotFound", "Invalid rev id")
            siblings = [{"rfilename": name} for name in self.files]
            info = {
                "id": self.repo_id,
                "modelId": self.repo_id,
                "sha": commit,
                "siblings": siblings,
            }
            return self._send(handler, json.dumps(info).encode(), "application/json", body=body)
        if path.startswith(api + "tree/"):
            if self._revision(path[len(api + "tree/") :].split("/")[0]) is None:
                return self._error(handler, "RevisionNotFound", "Invalid rev id")
            tree = [
                {"type": "file", "path": name, "size": len(data), "oid": _git_oid(data)}
                for name, data in self.files.items()
            ]
            return self._send(handler, json.dumps(tree).encode(), "application/json", body=body)
        if path.startswith(resolve):
            rev, _, name = path[len(resolve) :].partition("/")
            commit = self._revision(rev)
            if commit is None:
                return self._error(handler, "RevisionNotFound", "Invalid rev id")
            if name not in self.files:
                return self._error(handler, "EntryNotFound", "Entry not found")
            data = self.files[name]
            headers = {"X-Repo-Commit": commit, "ETag": f'"{_git_oid(data)}"'}
            return self._send(handler, data, "application/octet-stream", body=body, **headers)
        return self._error(handler, "RepoNotFound", "Repository not found")

    @staticmethod
    def _send(handler, data: bytes, kind: str, *, body: bool, **headers: str) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", kind)
        handler.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.end_headers()
        if body:
            handler.wfile.write(data)

    @staticmethod
    def _error(handler, code: str, message: str) -> None:
        data = json.dumps({"error": message}).encode()
        handler.send_response(404)
        handler.send_header("X-Error-Code", code)
        handler.send_header("X-Error-Message", message)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(data)


def _git_oid(data: bytes) -> str:
    """A file's git blob id, as the Hub lists it."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # noqa: S324 - git's
