"""Embeddings: encoder models turned into one vector per text.

    emb = corral.load_embedder("minilm")          # store name, .gguf path or model folder
    vecs = emb.embed(["a text", "another"])        # float32 [2, 384], unit length
    vecs = corral.embed("minilm", ["a text"])      # the same, loading the model each call

See `Embedder.embed` for truncation, `dimensions` (Matryoshka) and batching options.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Sequence
from typing import Any

import numpy as np

from corral.embed.embedder import Embedder, EmbedderInfo, Embeddings
from corral.embed.loader import load_embedder
from corral.embed.pooling import Pooling
from corral.embed.text import TextEncoder, TokenInfo, Truncation

__all__ = [
    "Embedder",
    "EmbedderInfo",
    "Embeddings",
    "Pooling",
    "TextEncoder",
    "TokenInfo",
    "Truncation",
    "embed",
    "load_embedder",
]


def embed(model: str | Embedder, texts: str | Sequence[str], **options: Any) -> np.ndarray:
    """Vectors of `texts` from `model` (a loaded Embedder, or a name / path loaded for this
    call only: hold an Embedder from `load_embedder` for repeated calls). `options` are
    `Embedder.embed`'s."""
    embedder = model if isinstance(model, Embedder) else load_embedder(model)
    return embedder.embed(texts, **options)


class _CallableModule(types.ModuleType):
    """`corral.embed(...)` is the function, but once this package is imported Python binds
    `corral.embed` to the package itself; making the package callable keeps both working."""

    def __call__(
        self, model: str | Embedder, texts: str | Sequence[str], **options: Any
    ) -> np.ndarray:
        return embed(model, texts, **options)


sys.modules[__name__].__class__ = _CallableModule
