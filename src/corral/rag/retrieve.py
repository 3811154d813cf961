"""Hybrid search: vector (sqlite-vec) and keyword (FTS5 bm25) lists fused by reciprocal rank.

RRF score = sum over lists of 1 / (RRF_K + rank), rank 1-based (Cormack et al. 2009, K=60):
it needs no score calibration between cosine distance and bm25, and a chunk found by both
searches beats one found by either alone. Each list is searched `CANDIDATES_FACTOR` times
deeper than k so that fusion has something to reorder.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Any, Protocol

import numpy as np

from corral.errors import InvalidRequestError
from corral.rag.db import Collection, Filter
from corral.rag.types import Hit

RRF_K = 60
CANDIDATES_FACTOR = 4
MIN_CANDIDATES = 20


class SearchMode(StrEnum):
    HYBRID = "hybrid"
    VECTOR = "vector"
    KEYWORD = "keyword"


class QueryEmbedder(Protocol):
    def embed(self, texts: str | Sequence[str], **options: Any) -> np.ndarray: ...


def search(
    collection: Collection,
    embedder: QueryEmbedder | None,
    query: str,
    k: int = 5,
    where: Filter | dict[str, Any] | None = None,
    mode: SearchMode = SearchMode.HYBRID,
) -> list[Hit]:
    """The k best chunks for `query`, best first, with fused scores and per-list ranks."""
    if not query or not query.strip():
        raise InvalidRequestError("the query is empty")
    if k < 1:
        raise InvalidRequestError(f"k must be at least 1, not {k}")
    where = where if isinstance(where, Filter) else Filter.of(where)
    depth = max(k * CANDIDATES_FACTOR, MIN_CANDIDATES)
    lists: dict[str, list[int]] = {}
    if mode is not SearchMode.KEYWORD:
        if embedder is None:
            raise InvalidRequestError("vector search needs the collection's embedding model")
        # queries longer than the model reads are cut: a question is not a stored chunk
        qvec = embedder.embed([query], truncate="right")[0]
        lists["vector"] = [i for i, _ in collection.vector_search(qvec, depth, where)]
    if mode is not SearchMode.VECTOR:
        lists["keyword"] = [i for i, _ in collection.keyword_search(query, depth, where)]
    return fuse(collection, lists, k)


def fuse(collection: Collection, lists: dict[str, list[int]], k: int) -> list[Hit]:
    """Reciprocal rank fusion of ranked id lists, turned into Hits."""
    scores: dict[int, float] = {}
    ranks: dict[int, dict[str, int]] = {}
    for name, ids in lists.items():
        for rank, cid in enumerate(ids, 1):
            scores[cid] = scores.get(cid, 0.0) + 1.0 / (RRF_K + rank)
            ranks.setdefault(cid, {})[name] = rank
    best = sorted(scores, key=lambda c: (-scores[c], c))[:k]
    rows = collection.chunks(best)
    return [
        Hit(
            id=cid,
            text=rows[cid]["text"],
            path=rows[cid]["path"],
            start_line=rows[cid]["start_line"],
            end_line=rows[cid]["end_line"],
            heading=rows[cid]["heading"] or "",
            score=round(scores[cid], 6),
            vector_rank=ranks[cid].get("vector"),
            keyword_rank=ranks[cid].get("keyword"),
        )
        for cid in best
        if cid in rows
    ]
