"""URL pulls against a local HTTP server: streaming, sha256 pinning, Range resume, failures."""

from __future__ import annotations

import hashlib

import pytest

from corral.errors import CorralError, DownloadError, GGUFError
from corral.store import Store, pull

BIG = 1 << 20  # floats: a 4 MiB file, several download chunks


@pytest.fixture
def served(file_server, make_gguf):
    """The server with one GGUF file at /models/Tiny-Q8.gguf; returns (server, url, bytes)."""
    data = make_gguf("Tiny-Q8.gguf", n_floats=BIG).read_bytes()
    file_server.files["/models/Tiny-Q8.gguf"] = data
    return file_server, f"{file_server.url}/models/Tiny-Q8.gguf", data


def _partials(store: Store) -> list:
    return sorted(store.partial_dir.glob("*")) if store.partial_dir.exists() else []


def test_pull_url(store: Store, served) -> None:
    srv, url, data = served
    seen = []
    ref = pull(url, store, lambda d, n, t: seen.append((d, n, t)))
    assert ref.full_name == "tiny-q8:latest"
    assert ref.digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert ref.path.read_bytes() == data
    assert ref.manifest["source"] == url and ref.manifest["file_name"] == "Tiny-Q8.gguf"
    assert seen[-1] == ("download Tiny-Q8.gguf", len(data), len(data))
    assert _partials(store) == [] and list(store.tmp_dir.glob("*")) == []


def test_pinned_sha_and_repeat_pull_is_a_noop(store: Store, served) -> None:
    srv, url, data = served
    pinned = f"{url}#sha256={hashlib.sha256(data).hexdigest()}"
    first = pull(pinned, store, name="tiny:q8")
    n_requests = len(srv.log)
    assert pull(pinned, store, name="tiny:q8") == first
    assert len(srv.log) == n_requests, "a stored digest needs no download"
    # another name for the same digest reuses the blob, also without downloading
    assert pull(pinned, store, name="other").path == first.path
    assert len(srv.log) == n_requests


def test_resume_after_ctrl_c(store: Store, served, assert_empty_store) -> None:
    srv, url, data = served
    calls = []

    def interrupt(desc: str, done: int, total: int | None) -> None:
        calls.append(done)
        if done >= len(data) // 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pull(url, store, interrupt)
    assert_empty_store(store)  # no half model anywhere but partial/
    partial = [p for p in _partials(store) if p.suffix == ".partial"]
    assert len(partial) == 1 and 0 < partial[0].stat().st_size < len(data)
    have = partial[0].stat().st_size

    ref = pull(url, store)
    assert ref.path.read_bytes() == data
    last = srv.requests("GET")[-1]
    assert last[2].get("Range") == f"bytes={have}-"
    assert last[2].get("If-Range") == srv.etag("/models/Tiny-Q8.gguf")
    assert _partials(store) == []


def test_resume_after_dropped_connection(store: Store, served, assert_empty_store) -> None:
    srv, url, data = served
    srv.cut_after["/models/Tiny-Q8.gguf"] = 1_500_000
    with pytest.raises(DownloadError, match="pull again to resume"):
        pull(url, store)
    assert_empty_store(store)
    ref = pull(url, store)
    assert ref.path.read_bytes() == data
    assert srv.requests("GET")[-1][2].get("Range") == "bytes=1500000-"


def test_changed_file_is_fetched_whole(store: Store, served, make_gguf) -> None:
    srv, url, data = served
    srv.cut_after["/models/Tiny-Q8.gguf"] = 1_000_000
    with pytest.raises(DownloadError):
        pull(url, store)
    new = make_gguf("new.gguf", n_floats=BIG, seed=7).read_bytes()
    srv.files["/models/Tiny-Q8.gguf"] = new  # new ETag: If-Range no longer matches
    ref = pull(url, store)
    assert ref.path.read_bytes() == new


def test_checksum_mismatch_fails_cleanly(store: Store, served, assert_empty_store) -> None:
    srv, url, data = served
    with pytest.raises(DownloadError, match="checksum mismatch") as e:
        pull(f"{url}#sha256={'ab' * 32}", store)
    assert "\n" not in str(e.value)
    assert_empty_store(store)
    assert _partials(store) == [], "a complete but wrong download is not kept for resuming"


def test_http_errors(store: Store, file_server, assert_empty_store) -> None:
    with pytest.raises(DownloadError, match="HTTP 404"):
        pull(f"{file_server.url}/missing.gguf", store)
    file_server.files["/page.gguf"] = b"<html>not a model</html>"
    with pytest.raises(GGUFError, match="not a GGUF file"):
        pull(f"{file_server.url}/page.gguf", store)
    with pytest.raises(DownloadError):
        pull("http://127.0.0.1:9/nothing-listens-here.gguf", store)
    assert_empty_store(store)
    assert _partials(store) == []


def test_bad_sha_suffix(store: Store, served) -> None:
    with pytest.raises(CorralError, match="#sha256="):
        pull(f"{served[1]}#md5=abc", store)
