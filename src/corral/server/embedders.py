"""Embedding models for the server: loaded by name on first use, kept in a small LRU.

Generation models go through the ModelManager's leases and schedulers; an embedding request
is one synchronous forward pass, so an embedder needs neither: requests call `embed` here,
which runs the pass in a worker thread (the Embedder's own lock keeps them one at a time).
An embedder evicted while a request still uses it stays alive until that request ends.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from corral.errors import UnsupportedError
from corral.server.errors import bad_request

if TYPE_CHECKING:
    from corral.embed import Embedder, Embeddings
    from corral.server.config import ServerConfig
    from corral.store import ModelRef, Store

MAX_LOADED = 2  # embedding models held at once (they are small; most servers use one)


def is_embedding_model(ref: ModelRef) -> bool:
    """Whether a stored model is an encoder (a folder, or a GGUF of an encoder architecture)."""
    from corral.models.encoder import is_encoder_architecture

    if ref.manifest.get("format") == "folder":
        return True
    return is_encoder_architecture(str((ref.manifest.get("gguf") or {}).get("architecture")))


@dataclass
class Held:
    """An embedder and how long its request waited for it to load."""

    embedder: Embedder
    load_s: float


class EmbedderPool:
    """Embedding models loaded on demand, least recently used dropped past MAX_LOADED."""

    def __init__(self, config: ServerConfig, store: Store) -> None:
        self.config = config
        self.store = store
        self._loaded: OrderedDict[str, Embedder] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}

    def loaded(self) -> list[Embedder]:
        """Loaded embedders, most recently used first."""
        return list(reversed(self._loaded.values()))

    async def get(self, name: str | None) -> Held:
        """The embedder for `name` (None: the only one loaded, or the only one stored)."""
        ref = await asyncio.to_thread(self._resolve, name)
        key = ref.full_name
        t0 = time.perf_counter()
        async with self._locks.setdefault(key, asyncio.Lock()):
            emb = self._loaded.get(key)
            if emb is None or emb.info.path != ref.path:  # name re-pointed: reload
                emb = await asyncio.to_thread(self._load, ref)
                self._loaded[key] = emb
                while len(self._loaded) > MAX_LOADED:
                    self._loaded.popitem(last=False)
            self._loaded.move_to_end(key)
        return Held(emb, time.perf_counter() - t0)

    def _resolve(self, name: str | None) -> ModelRef:
        if name is None or not name.strip():
            return self._default()
        ref = self.store.resolve_stored(name.strip())
        if not is_embedding_model(ref):
            arch = (ref.manifest.get("gguf") or {}).get("architecture", "?")
            raise UnsupportedError(
                f"model '{ref.full_name}' ({arch}) is not an embedding model; use an encoder "
                f"such as minilm (corral pull minilm)"
            )
        return ref

    def _default(self) -> ModelRef:
        # TEI serves one model and its bodies name none: pick the one that is unambiguous
        if len(self._loaded) == 1:
            return self.store.resolve_stored(next(iter(self._loaded)))
        stored = [r for r in self.store.list() if is_embedding_model(r)]
        if len(stored) == 1:
            return stored[0]
        names = ", ".join(r.full_name for r in stored) or "none stored"
        raise bad_request(f"'model' is required to pick an embedding model ({names})", "model")

    def _load(self, ref: ModelRef) -> Embedder:
        from corral.embed import load_embedder

        return load_embedder(ref.path, threads=self.config.threads, name=ref.full_name)

    def close(self) -> None:
        self._loaded.clear()


async def embed_texts(held: Held, texts: Sequence[str], **options: Any) -> Embeddings:
    """Run `Embedder.embed_with_counts` off the event loop."""
    return await asyncio.to_thread(held.embedder.embed_with_counts, texts, **options)


async def embed_ids(held: Held, ids: Sequence[Sequence[int]], **options: Any) -> Embeddings:
    """Vectors of token id inputs (OpenAI accepts those): wrapped in the model's special
    tokens and cut, as texts are."""
    emb = held.embedder
    truncate = options.pop("truncate")
    wrapped = emb.text.wrap(ids, truncate)
    return await asyncio.to_thread(emb.embed_ids, wrapped, **options)
