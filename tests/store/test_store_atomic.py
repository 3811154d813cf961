"""Atomicity: a write interrupted anywhere leaves the store as it was, with no temp files."""

from __future__ import annotations

import os

import pytest

import corral.store._fsutil as fsutil
import corral.store.store as store_mod
from corral.store import Store


def _interrupt_after(n_calls: int):
    """A progress callback that presses Ctrl-C on its n-th call."""
    calls = []

    def progress(desc: str, done: int, total: int | None) -> None:
        calls.append(done)
        if len(calls) >= n_calls:
            raise KeyboardInterrupt

    return progress


def test_ctrl_c_mid_copy_leaves_nothing(store: Store, make_gguf, assert_empty_store) -> None:
    src = make_gguf(n_floats=1 << 20)  # 4 MiB: several copy chunks
    with pytest.raises(KeyboardInterrupt):
        store.add_file(src, "tiny", progress=_interrupt_after(2))
    assert_empty_store(store)


def test_failed_blob_rename_leaves_nothing(
    store: Store, make_gguf, assert_empty_store, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(store_mod.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk on fire"):
        store.add_file(make_gguf(), "tiny")
    assert_empty_store(store)


def test_failed_manifest_write_keeps_the_old_one(
    store: Store, make_gguf, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = store.add_file(make_gguf(seed=1), "tiny")
    manifest = store.manifests_dir / "tiny" / "latest"
    before = manifest.read_text()

    real_replace = os.replace

    def replace(src: str, dst: str) -> None:
        if str(dst).startswith(str(store.manifests_dir)):
            raise KeyboardInterrupt  # Ctrl-C between writing and renaming the manifest
        real_replace(src, dst)

    monkeypatch.setattr(fsutil.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        store.add_file(make_gguf("other.gguf", seed=2), "tiny")
    assert manifest.read_text() == before
    assert store.resolve("tiny") == old
    assert [p.name for p in manifest.parent.iterdir()] == ["latest"], "temp manifest left"
    assert list(store.tmp_dir.iterdir()) == []
    # the new blob is unreferenced: the next gc takes it
    store.garbage_collect()
    assert [p.name for p in store.blobs_dir.iterdir()] == [old.path.name]


def test_stale_temp_files_are_swept(store: Store, make_gguf) -> None:
    store.add_file(make_gguf(), "tiny")
    stale = store.tmp_dir / "crashed.tmp"
    stale.write_bytes(b"x")
    os.utime(stale, (0, 0))
    fresh = store.tmp_dir / "in-progress.tmp"
    fresh.write_bytes(b"y")
    store.garbage_collect()
    assert not stale.exists() and fresh.exists()
