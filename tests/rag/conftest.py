"""RAG fixtures: a stub embedder (word-hash vectors, whitespace token counts, call counts)
for fast unit tests, and the real MiniLM for the realmodel ones."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rag_stubs import StubEmbedder


@pytest.fixture
def stub() -> StubEmbedder:
    return StubEmbedder()


@pytest.fixture(scope="session")
def minilm():
    """The real all-MiniLM-L6-v2 (`corral pull minilm`, or CORRAL_TEST_MODELS)."""
    from corral.embed import load_embedder

    env = os.environ.get("CORRAL_TEST_MODELS")
    if env and (Path(env) / "all-MiniLM-L6-v2" / "config.json").is_file():
        return load_embedder(Path(env) / "all-MiniLM-L6-v2")
    try:
        from corral.store import Store

        return load_embedder(Store().resolve("minilm").path)
    except Exception as e:  # noqa: BLE001 - a clear failure, as the other real-model tests
        pytest.fail(f"real model 'minilm' not available (run `corral pull minilm`): {e}")
