"""`hf:` pulls against a local server standing in for the Hub (HF_ENDPOINT points at it)."""

from __future__ import annotations

import hashlib

import pytest

from corral.errors import CorralError, DownloadError
from corral.store import Store, pull

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub(file_server, tmp_path, monkeypatch: pytest.MonkeyPatch):
    """The local server as the Hub: resolve routes answer with X-Repo-Commit and ETag."""
    monkeypatch.setenv("HF_ENDPOINT", file_server.url)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    import huggingface_hub.constants

    # huggingface_hub reads HF_HUB_OFFLINE once, at import: undo an offline CI environment.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    file_server.extra_headers["X-Repo-Commit"] = COMMIT
    # what the Hub says for a file missing from an existing repo
    file_server.not_found_headers["X-Error-Code"] = "EntryNotFound"
    return file_server


def _serve(hub, make_gguf, repo: str, filename: str, seed: int = 0) -> bytes:
    data = make_gguf(filename.rsplit("/", 1)[-1], n_floats=50_000, seed=seed).read_bytes()
    hub.files[f"/{repo}/resolve/main/{filename}"] = data
    return data


def test_pull_from_hub(store: Store, hub, make_gguf, assert_empty_store) -> None:
    data = _serve(hub, make_gguf, "org/repo", "Tiny-Q4_K_M.gguf")
    seen = []
    ref = pull("hf:org/repo/Tiny-Q4_K_M.gguf", store, lambda d, n, t: seen.append((d, n, t)))
    assert ref.full_name == "tiny-q4_k_m:latest"
    assert ref.digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert ref.path.read_bytes() == data
    assert ref.manifest["source"] == "hf:org/repo/Tiny-Q4_K_M.gguf"
    assert ("download Tiny-Q4_K_M.gguf", len(data), len(data)) in seen
    assert list(store.partial_dir.iterdir()) == [], "hf download folder cleaned up"
    assert hub.requests("GET"), "the file came from the fake hub"


def test_pull_from_hub_subfolder(store: Store, hub, make_gguf) -> None:
    data = _serve(hub, make_gguf, "org/repo", "sub/dir/model.gguf")
    ref = pull("hf:org/repo/sub/dir/model.gguf", store, name="mine:q4")
    assert ref.full_name == "mine:q4" and ref.path.read_bytes() == data


def test_repeat_hub_pull_is_a_noop(store: Store, hub, make_gguf) -> None:
    _serve(hub, make_gguf, "org/repo", "tiny.gguf")
    first = pull("hf:org/repo/tiny.gguf", store)
    n_gets = len(hub.requests("GET"))
    assert pull("hf:org/repo/tiny.gguf", store) == first
    assert len(hub.requests("GET")) == n_gets, "only a HEAD to learn the sha256"


def test_hub_checksum_mismatch(store: Store, hub, make_gguf, assert_empty_store) -> None:
    _serve(hub, make_gguf, "org/repo", "tiny.gguf")
    hub.etags["/org/repo/resolve/main/tiny.gguf"] = f'"{"cd" * 32}"'
    with pytest.raises(DownloadError, match="checksum mismatch"):
        pull("hf:org/repo/tiny.gguf", store)
    assert_empty_store(store)
    assert list(store.partial_dir.iterdir()) == []


def test_hub_errors(store: Store, hub, assert_empty_store, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DownloadError) as e:
        pull("hf:org/repo/missing.gguf", store)
    assert str(e.value) == "hf:org/repo/missing.gguf: org/repo has no file missing.gguf"
    hub.not_found_headers["X-Error-Code"] = "RepoNotFound"
    with pytest.raises(DownloadError, match="no repository org/nope on the Hub"):
        pull("hf:org/nope/x.gguf", store)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(DownloadError, match="cannot reach the Hub") as e:
        pull("hf:org/repo/x.gguf", store)
    assert "\n" not in str(e.value)
    with pytest.raises(CorralError, match="hf:ORG/REPO/FILE.gguf"):
        pull("hf:org/repo", store)
    assert_empty_store(store)
