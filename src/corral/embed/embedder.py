"""`Embedder`: texts in, one vector per text out.

tokenize (cut to the model's maximum) -> plan batches by length under a token budget ->
pad each batch -> encoder forward -> pool -> optional Matryoshka cut -> L2 normalize,
then the rows go back to the caller's order. One forward pass runs at a time per embedder
(a lock): two threads sharing the CPU's cores would each run at half speed anyway.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from corral.embed.batching import (
    DEFAULT_FORWARD_TOKENS,
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_BATCH_TOKENS,
    pad,
    plan_batches,
    split_for_forward,
)
from corral.embed.pooling import Pooling, check_dimensions, l2_normalize, matryoshka, pool
from corral.embed.text import TextEncoder, Truncation
from corral.errors import InvalidRequestError
from corral.models.encoder import EncoderModel


@dataclass(frozen=True)
class EmbedderInfo:
    """What an embedding model is, as `show`, TEI's /info and the RAG layer need it."""

    name: str
    path: Path
    architecture: str
    dimensions: int  # width of the vectors it makes (before any `dimensions` cut)
    max_tokens: int  # longest input it reads, special tokens included
    pooling: Pooling
    normalize: bool  # whether the model's own pipeline L2-normalizes (sentence-transformers)
    source_format: str  # "gguf" or "folder"
    load_seconds: float = field(default=0.0, compare=False)


@dataclass(frozen=True)
class Embeddings:
    """Vectors [N, D] float32 in input order, and the tokens each input used."""

    vectors: np.ndarray
    token_counts: list[int]

    @property
    def total_tokens(self) -> int:
        return sum(self.token_counts)


class Embedder:
    """A loaded embedding model (see `corral.load_embedder`)."""

    def __init__(self, model: EncoderModel, text: TextEncoder, info: EmbedderInfo) -> None:
        self.model = model
        self.text = text
        self.info = info
        # padded tokens per forward pass: batches bigger than this run in several passes
        self.forward_tokens = DEFAULT_FORWARD_TOKENS
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def dimensions(self) -> int:
        return self.info.dimensions

    @property
    def max_tokens(self) -> int:
        return self.info.max_tokens

    def count_tokens(self, texts: str | Sequence[str]) -> list[int]:
        """Tokens each text takes, special tokens included, uncut: a RAG splitter sizes
        chunks with this so that none exceeds `max_tokens`."""
        return self.text.count(_as_list(texts))

    def tokenize(
        self, texts: str | Sequence[str], truncate: Truncation | bool | str = Truncation.RIGHT
    ) -> list[list[int]]:
        """Token ids as the model reads them: special tokens in, cut to `max_tokens`."""
        return self.text.encode(_as_list(texts), Truncation.of(truncate))

    def embed(
        self,
        texts: str | Sequence[str],
        *,
        normalize: bool = True,
        truncate: Truncation | bool | str = Truncation.RIGHT,
        dimensions: int | None = None,
        max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        pooling: Pooling | None = None,
    ) -> np.ndarray:
        """One float32 vector per text: [len(texts), dimensions or self.dimensions].

        normalize: L2-normalize (after the `dimensions` cut, so Matryoshka vectors are unit
        length too). truncate: RIGHT / LEFT cut a text longer than `max_tokens`, ERROR (or
        False) raises ContextOverflowError. pooling: override the model's own.
        """
        return self.embed_with_counts(
            texts,
            normalize=normalize,
            truncate=truncate,
            dimensions=dimensions,
            max_batch_tokens=max_batch_tokens,
            max_batch_size=max_batch_size,
            pooling=pooling,
        ).vectors

    def embed_with_counts(
        self,
        texts: str | Sequence[str],
        *,
        normalize: bool = True,
        truncate: Truncation | bool | str = Truncation.RIGHT,
        dimensions: int | None = None,
        max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        pooling: Pooling | None = None,
    ) -> Embeddings:
        """`embed`, also saying how many tokens each text used (API usage counts)."""
        ids = self.tokenize(texts, truncate)
        return self.embed_ids(
            ids,
            normalize=normalize,
            dimensions=dimensions,
            max_batch_tokens=max_batch_tokens,
            max_batch_size=max_batch_size,
            pooling=pooling,
        )

    def embed_ids(
        self,
        ids: Sequence[Sequence[int]],
        *,
        normalize: bool = True,
        dimensions: int | None = None,
        max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        pooling: Pooling | None = None,
    ) -> Embeddings:
        """Vectors for token id lists already wrapped and cut (see `tokenize`)."""
        self._check_ids(ids)
        check_dimensions(dimensions, self.dimensions)  # before any work
        pooling = pooling or self.info.pooling
        width = self.dimensions if dimensions is None else dimensions
        out = np.empty((len(ids), width), dtype=np.float32)
        lengths = [len(s) for s in ids]
        with self._lock:
            passes = (
                part
                for planned in plan_batches(lengths, max_batch_tokens, max_batch_size)
                for part in split_for_forward(planned, lengths, self.forward_tokens)
            )
            for batch in passes:
                tokens, mask = pad([ids[i] for i in batch.indices], self.text.pad_id)
                hidden = self.model.forward(tokens, mask)
                vecs = matryoshka(pool(hidden, mask, pooling), dimensions)
                if normalize:
                    vecs = l2_normalize(vecs)
                out[list(batch.indices)] = vecs.numpy()
        return Embeddings(out, lengths)

    def _check_ids(self, ids: Sequence[Sequence[int]]) -> None:
        vocab = self.model.vocab_size
        for n, seq in enumerate(ids):
            if not seq:
                raise InvalidRequestError(f"input {n} is empty")
            if len(seq) > self.max_tokens:
                raise InvalidRequestError(
                    f"input {n} has {len(seq)} tokens; this model reads at most {self.max_tokens}"
                )
            if min(seq) < 0 or max(seq) >= vocab:
                raise InvalidRequestError(f"input {n} has a token id outside 0..{vocab - 1}")

    def __repr__(self) -> str:
        i = self.info
        return f"<corral.Embedder {i.name} ({i.architecture}, {i.dimensions}d, {i.pooling.value})>"


def _as_list(texts: str | Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    texts = list(texts)
    for n, t in enumerate(texts):
        if not isinstance(t, str):
            raise InvalidRequestError(f"input {n} is a {type(t).__name__}, not text")
    return texts
