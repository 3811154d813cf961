"""A deterministic stand-in embedder for RAG tests (importable from any test file)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


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
