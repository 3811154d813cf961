"""Store basics: add, resolve (name, name:tag, path), list, copy, remove, gc, not-found hints."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from corral.errors import CorralError, GGUFError, ModelNotFoundError
from corral.store import KNOWN_MODELS, Store, parse_name, rich_progress


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_default_home_comes_from_env(store: Store, tmp_path: Path) -> None:
    assert store.home == tmp_path / "home"
    assert Store(tmp_path / "other").home == tmp_path / "other"


def test_add_and_resolve_by_name_and_tag(store: Store, make_gguf) -> None:
    src = make_gguf()
    ref = store.add_file(src, "tiny")
    digest = _sha(src)
    assert (ref.name, ref.tag, ref.full_name) == ("tiny", "latest", "tiny:latest")
    assert ref.digest == f"sha256:{digest}"
    assert ref.path == store.blobs_dir / f"sha256-{digest}"
    assert ref.path.read_bytes() == src.read_bytes()
    assert ref.size == src.stat().st_size
    for spelling in ("tiny", "tiny:latest", "TINY"):
        assert store.resolve(spelling) == ref
    m = json.loads((store.manifests_dir / "tiny" / "latest").read_text())
    assert m["digest"] == ref.digest and m["size"] == ref.size and m["format"] == "gguf"
    assert m["source"] == str(src) and m["file_name"] == "tiny.gguf" and m["created"]
    assert m["gguf"]["architecture"] == "llama" and m["gguf"]["context_length"] == 128
    assert m["gguf"]["parameters"] == 1024 and m["gguf"]["file_type"] == "ALL_F32"


def test_add_with_tag_and_default_name_from_stem(store: Store, make_gguf) -> None:
    src = make_gguf("My Model.Q4_0.gguf")
    assert store.add_file(src).full_name == "my-model.q4_0:latest"
    assert store.add_file(src, "tiny:v2").full_name == "tiny:v2"
    assert store.names() == ["my-model.q4_0:latest", "tiny:v2"]
    assert [r.full_name for r in store.list()] == store.names()
    # both names share one content-addressed blob
    assert len(list(store.blobs_dir.iterdir())) == 1


def test_resolve_path_returns_file_in_place(store: Store, make_gguf) -> None:
    src = make_gguf("direct.gguf")
    for spelling in (str(src), src):
        ref = store.resolve(spelling)
        assert ref.path == src.resolve() and ref.digest is None
        assert ref.name == "direct" and ref.size == src.stat().st_size
    assert not store.blobs_dir.exists()  # nothing copied
    with pytest.raises(ModelNotFoundError, match="model file 'nope.gguf' not found"):
        store.resolve("nope.gguf")


def test_copy_shares_the_blob(store: Store, make_gguf) -> None:
    ref = store.add_file(make_gguf(), "tiny")
    copy = store.copy("tiny", "alias:v1")
    assert copy.full_name == "alias:v1" and copy.path == ref.path
    assert store.resolve("alias:v1").digest == ref.digest
    assert store.names() == ["alias:v1", "tiny:latest"]
    with pytest.raises(ModelNotFoundError):
        store.copy("missing", "x")


def test_remove_collects_unused_blobs(store: Store, make_gguf) -> None:
    a = store.add_file(make_gguf("a.gguf", seed=1), "a")
    b = store.add_file(make_gguf("b.gguf", seed=2), "b")
    store.copy("a", "a2")
    assert store.remove("a").full_name == "a:latest"
    assert a.path.exists(), "still used by a2"
    assert not (store.manifests_dir / "a").exists()
    store.remove("a2:latest")
    assert not a.path.exists() and b.path.exists()
    assert store.names() == ["b:latest"]
    with pytest.raises(ModelNotFoundError, match="model 'a' not found"):
        store.remove("a")


def test_garbage_collect_removes_orphans(store: Store, make_gguf) -> None:
    ref = store.add_file(make_gguf(), "tiny")
    orphan = store.blobs_dir / ("sha256-" + "0" * 64)
    orphan.write_bytes(b"x")
    assert store.garbage_collect() == ["sha256:" + "0" * 64]
    assert not orphan.exists() and ref.path.exists()


def test_not_found_names_the_closest_match(store: Store, make_gguf) -> None:
    store.add_file(make_gguf(), "smollm2")
    with pytest.raises(ModelNotFoundError) as e:
        store.resolve("smolm2")
    assert str(e.value) == (
        "model 'smolm2' not found; did you mean smollm2:latest? (corral pull NAME fetches one)"
    )
    with pytest.raises(ModelNotFoundError) as e:
        store.resolve("zzzzzz")
    assert str(e.value) == "model 'zzzzzz' not found (corral pull NAME fetches one)"


def test_not_found_known_model_says_how_to_pull(store: Store) -> None:
    assert "gemma3-270m" in KNOWN_MODELS
    with pytest.raises(ModelNotFoundError, match="corral pull gemma3-270m fetches it"):
        store.resolve("gemma3-270m")
    with pytest.raises(ModelNotFoundError, match="did you mean gemma3-270m"):
        store.resolve("gemma3-27m")


def test_damaged_model_is_reported(store: Store, make_gguf) -> None:
    ref = store.add_file(make_gguf(), "tiny")
    ref.path.unlink()
    with pytest.raises(ModelNotFoundError, match="damaged"):
        store.resolve("tiny")


def test_rejects_bad_names_and_non_gguf(store: Store, tmp_path: Path, make_gguf) -> None:
    with pytest.raises(CorralError, match="invalid model name"):
        store.add_file(make_gguf(), "bad name!")
    not_gguf = tmp_path / "weights.gguf"
    not_gguf.write_bytes(b'{"not": "gguf"}')
    with pytest.raises(GGUFError, match="not a GGUF file"):
        store.add_file(not_gguf)
    assert store.list() == []
    with pytest.raises(ModelNotFoundError):
        store.add_file(tmp_path / "missing.gguf")


def test_parse_name() -> None:
    assert parse_name("Foo") == ("foo", "latest")
    assert parse_name("foo:q4_k_m") == ("foo", "q4_k_m")
    for bad in ("", ":x", "foo:", "a/b", "../x", "foo:bar:baz"):
        with pytest.raises(CorralError):
            parse_name(bad)


def test_rich_progress_callback() -> None:
    out = io.StringIO()
    with rich_progress(Console(file=out, width=100)) as progress:
        progress("download x", 0, 100)
        progress("download x", 100, 100)
        progress("unpack", 5, None)
    assert "download x" in out.getvalue()
