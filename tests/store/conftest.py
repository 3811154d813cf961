"""Fixtures for the store tests: a private store, tiny GGUF files, a local HTTP server.

Every test gets its own CORRAL_HOME under tmp_path; nothing here touches the network.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import gguf
import numpy as np
import pytest

from corral.store import Store


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    """An empty store in tmp_path, also the default one (CORRAL_HOME)."""
    home = tmp_path / "home"
    monkeypatch.setenv("CORRAL_HOME", str(home))
    return Store()


@pytest.fixture
def make_gguf(tmp_path: Path) -> Callable[..., Path]:
    """Write a small valid GGUF file; `n_floats` sets its size, `seed` its contents."""

    def make(name: str = "tiny.gguf", n_floats: int = 1024, seed: int = 0) -> Path:
        path = tmp_path / "src" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        w = gguf.GGUFWriter(str(path), "llama")
        w.add_name(f"tiny {seed}")
        w.add_context_length(128)
        w.add_embedding_length(8)
        w.add_block_count(1)
        w.add_file_type(0)
        data = np.random.default_rng(seed).standard_normal(n_floats, dtype=np.float32)
        w.add_tensor("weights", data)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        return path

    return make


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def assert_empty_store() -> Callable[[Store], None]:
    """Check that a failed pull left nothing behind: no blob, manifest or temp file."""

    def check(store: Store) -> None:
        for folder in (store.blobs_dir, store.manifests_dir, store.tmp_dir):
            left = list(folder.rglob("*")) if folder.exists() else []
            assert left == [], f"left behind in {folder.name}: {left}"

    return check


class FileServer(ThreadingHTTPServer):
    """Serves `files` (URL path -> bytes) with ETag, Range and If-Range, like a CDN or the Hub.

    `cut_after[path] = n` makes the next GET of `path` drop the connection after n body bytes.
    `etags[path]` overrides a file's ETag; `extra_headers` go with every file served and
    `not_found_headers` with every 404. Every request is recorded in `log`.
    """

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.etags: dict[str, str] = {}
        self.cut_after: dict[str, int] = {}
        self.log: list[tuple[str, str, dict[str, str]]] = []
        self.extra_headers: dict[str, str] = {}
        self.not_found_headers: dict[str, str] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def etag(self, path: str) -> str:
        return self.etags.get(path) or f'"{hashlib.sha256(self.files[path]).hexdigest()}"'

    def requests(self, method: str) -> list[tuple[str, str, dict[str, str]]]:
        return [r for r in self.log if r[0] == method]


class _Handler(BaseHTTPRequestHandler):
    server: FileServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output quiet
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        srv = self.server
        path = self.path.split("?")[0]
        srv.log.append((self.command, path, dict(self.headers)))
        data = srv.files.get(path)
        if data is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            for key, value in srv.not_found_headers.items():
                self.send_header(key, value)
            self.end_headers()
            return
        etag = srv.etag(path)
        start, status = 0, 200
        rng, if_range = self.headers.get("Range"), self.headers.get("If-Range")
        m = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if m and (if_range is None or if_range == etag):
            start, status = int(m.group(1)), 206
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        self.send_response(status)
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("ETag", etag)
        self.send_header("Accept-Ranges", "bytes")
        for key, value in srv.extra_headers.items():
            self.send_header(key, value)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if not body:
            return
        cut = srv.cut_after.pop(path, None)
        if cut is not None:
            self.wfile.write(data[start : start + cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(data[start:])


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    """A local HTTP server on 127.0.0.1 in a thread; stopped after the test."""
    srv = FileServer()
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)
