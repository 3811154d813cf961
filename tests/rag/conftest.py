"""RAG fixtures: a stub embedder (word-hash vectors, whitespace token counts, call counts)
for fast unit tests, and the real MiniLM for the realmodel ones."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest


class StubEmbedder:
    """Bag-of-words vectors: texts sharing words are near; counts embedding calls."""

    name = "stub"
    dimensions = 32
    max_tokens = 40

    def __init__(self) -> None:
        self.calls = 0
        self.texts = 0

    def count_tokens(self, texts: str | Sequence[str]) -> list[int]:
        texts = [texts] if isinstance(texts, str) else list(texts)
        return [len(t.split()) + 2 for t in texts]  # +2: [CLS] and [SEP]

    def embed(self, texts: str | Sequence[str], **options: object) -> np.ndarray:
        texts = [texts] if isinstance(texts, str) else list(texts)
        self.calls += 1
        self.texts += len(texts)
        out = np.zeros((len(texts), self.dimensions), np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i, sum(map(ord, w.strip(".,?!"))) % self.dimensions] += 1
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


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
