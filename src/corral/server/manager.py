"""Loaded models: load by name on first use, one Scheduler each, LRU eviction, keep_alive.

Everything here runs on the event loop thread except the slow parts (loading a model,
closing a scheduler), which go to worker threads so requests for other models keep flowing.
A request holds a `Lease` on its model while it runs; only models nobody holds are evicted
or expire. keep_alive follows ollama: each request sets how long its model stays loaded
after the last lease ends (0: unload at once, negative or inf: never).

Per-request LoRA adapters (server/loras.py): a loaded model is keyed by its name and the
adapter set it was built with, so requests with different adapters run on different
instances and schedulers and are never batched together. Each instance loads, expires and
is evicted on its own like any model; the quantized base weights are memory-mapped and
shared, but the budget counts each instance in full (it may hold its own device copy).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from corral.errors import CorralError, QueueFullError, UnsupportedError
from corral.server.embedders import EmbedderPool, is_embedding_model
from corral.server.loras import AdapterSet, AdapterTable, LoraScale
from corral.server.modelfile import Modelfile
from corral.server.options import GenOptions, apply_options

if TYPE_CHECKING:
    from corral.chat import ChatTemplate
    from corral.engine.scheduler import Scheduler
    from corral.model import Model
    from corral.server.config import ServerConfig
    from corral.store import ModelRef, Store

log = logging.getLogger("corral.server")


class MemoryBudgetError(CorralError):
    """A model larger than the whole memory budget."""


@dataclass
class LoadedModel:
    """One model in memory with its scheduler and the defaults its manifest carries."""

    name: str  # name:tag, as clients asked for it
    ref: ModelRef
    model: Model
    scheduler: Scheduler
    modelfile: Modelfile
    defaults: GenOptions
    template: ChatTemplate | None  # a created model's TEMPLATE; None: the model's own
    adapters: AdapterSet = ()  # request-chosen adapters, on top of the Modelfile's
    loaded_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.monotonic)
    keep_alive: float = 300.0
    expires_at: float | None = None  # wall-clock time of unloading; None while in use/forever
    leases: int = 0
    _timer: asyncio.TimerHandle | None = None

    @property
    def key(self) -> str:
        """The manager's key: the name, plus the adapter set when there is one."""
        return instance_key(self.name, self.adapters)

    @property
    def size(self) -> int:
        return self.ref.size

    @property
    def n_ctx(self) -> int:
        return self.model.info.n_ctx


class Lease:
    """A request's hold on a loaded model; `release()` (idempotent) when the request ends."""

    def __init__(self, manager: ModelManager, entry: LoadedModel, load_s: float) -> None:
        self.manager = manager
        self.entry = entry
        self.load_s = load_s  # time this request spent waiting for the model to load
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.manager._release(self.entry)


class ModelManager:
    """Models loaded on demand, at most `config.models_max` at once."""

    def __init__(self, config: ServerConfig, store: Store) -> None:
        self.config = config
        self.store = store
        self._loaded: dict[str, LoadedModel] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.adapters = AdapterTable(config.lora, config.lora_apply)
        # (model digest, adapter path) -> whether it fits; for the global default adapters
        self._fits: dict[tuple[str, str], bool] = {}
        # embedding models load their own way: no scheduler, no leases (see embedders.py)
        self.embedders = EmbedderPool(config, store)

    # -- lookups --------------------------------------------------------------------------

    def resolve(self, name: str) -> ModelRef:
        """The stored model `name` (ModelNotFoundError otherwise); file paths are refused
        so API clients cannot make the server open arbitrary files."""
        return self.store.resolve_stored(name.strip())

    def loaded(self) -> list[LoadedModel]:
        """Loaded models, most recently used first."""
        return sorted(self._loaded.values(), key=lambda e: e.last_used, reverse=True)

    def get_loaded(self, name: str) -> LoadedModel | None:
        """The instance of `name` without request adapters, if loaded."""
        try:
            return self._loaded.get(self.resolve(name).full_name)
        except CorralError:
            return None

    async def _adapter_set(self, ref: ModelRef, lora: list[LoraScale] | None) -> AdapterSet:
        """The adapters a request runs with. Named ones must fit the model (a 400 when the
        load fails otherwise); the global defaults apply only to models they fit, so one
        server can hold adapters for several of its models."""
        chosen = self.adapters.resolve(lora)
        if lora is not None or not chosen:
            return chosen
        return tuple([a for a in chosen if await self._fits_model(ref, a[0])])

    async def _fits_model(self, ref: ModelRef, path: str) -> bool:
        key = (ref.digest, path)
        if key not in self._fits:
            from corral.adapters import AdapterError, check_adapters

            try:
                await asyncio.to_thread(check_adapters, ref.path, [(path, 1.0)])
                self._fits[key] = True
            except AdapterError as e:
                log.info("LoRA adapter %s is not applied to %s: %s", path, ref.full_name, e)
                self._fits[key] = False
        return self._fits[key]

    # -- leases ---------------------------------------------------------------------------

    async def acquire(
        self,
        name: str,
        keep_alive: float | None = None,
        n_ctx: int | None = None,
        lora: list[LoraScale] | None = None,
    ) -> Lease:
        """Hold model `name`, loading it first if needed. keep_alive: seconds to stay loaded
        after this request (None: the server default). n_ctx: a context size the request
        needs (an idle model loaded with another size is reloaded, as ollama does).
        lora: the request's adapter choice (None: the server's global scales)."""
        ref = self.resolve(name)
        adapters = await self._adapter_set(ref, lora)
        key = instance_key(ref.full_name, adapters)
        lock = self._locks.setdefault(key, asyncio.Lock())
        t0 = time.perf_counter()
        async with lock:
            entry = self._loaded.get(key)
            want_ctx = n_ctx or self._manifest_ctx(ref)
            stale = entry is not None and entry.ref.digest != ref.digest  # name re-pointed
            resize = entry is not None and want_ctx and entry.n_ctx != want_ctx
            if entry is not None and (stale or resize) and not entry.leases:
                await self._unload_key(key)
                entry = None
            if entry is None:
                entry = await self._load(ref, want_ctx, adapters)
            load_s = time.perf_counter() - t0
            entry.leases += 1
            entry.last_used = time.monotonic()
            entry.keep_alive = self.config.keep_alive if keep_alive is None else keep_alive
            entry.expires_at = None
            if entry._timer is not None:
                entry._timer.cancel()
                entry._timer = None
        return Lease(self, entry, load_s if load_s > 0.05 else 0.0)

    def _release(self, entry: LoadedModel) -> None:
        entry.leases -= 1
        entry.last_used = time.monotonic()
        if entry.leases > 0 or self._loaded.get(entry.key) is not entry:
            return
        self._schedule_expiry(entry)

    def _schedule_expiry(self, entry: LoadedModel) -> None:
        if math.isinf(entry.keep_alive) or entry.keep_alive < 0:  # negative: forever, as ollama
            entry.expires_at = None
            return
        loop = asyncio.get_running_loop()
        entry.expires_at = time.time() + entry.keep_alive
        entry._timer = loop.call_later(
            max(entry.keep_alive, 0.0), lambda: asyncio.ensure_future(self._expire(entry))
        )

    async def _expire(self, entry: LoadedModel) -> None:
        if entry.leases == 0 and self._loaded.get(entry.key) is entry:
            log.info("unloading %s (keep_alive expired)", entry.key)
            await self._unload_key(entry.key)

    # -- loading and unloading ------------------------------------------------------------

    def _manifest_ctx(self, ref: ModelRef) -> int | None:
        params = Modelfile.from_manifest(ref.manifest).parameters
        return params.get("num_ctx") or self.config.n_ctx

    async def _load(
        self, ref: ModelRef, n_ctx: int | None, adapters: AdapterSet = ()
    ) -> LoadedModel:
        if is_embedding_model(ref):
            raise UnsupportedError(
                f"'{ref.full_name}' is an embedding model: use /v1/embeddings, /api/embed or /embed"
            )
        await self._make_room(ref)
        log.info("loading %s", ref.full_name)
        model = await asyncio.to_thread(self._load_sync, ref, n_ctx, adapters)
        from corral.engine.scheduler import Scheduler

        modelfile = Modelfile.from_manifest(ref.manifest)
        try:
            defaults = apply_options(GenOptions(), modelfile.parameters)
            template = make_template(model, modelfile.template)
        except ValueError as e:
            raise CorralError(f"model '{ref.full_name}' has bad defaults: {e}") from None
        entry = LoadedModel(
            name=ref.full_name,
            ref=ref,
            model=model,
            scheduler=Scheduler(model, max_queue=self.config.max_queue, slots=self.config.slots),
            modelfile=modelfile,
            defaults=defaults,
            template=template,
            adapters=adapters,
            keep_alive=self.config.keep_alive,
        )
        self._loaded[entry.key] = entry
        return entry

    def _load_sync(self, ref: ModelRef, n_ctx: int | None, extra: AdapterSet) -> Model:
        import corral

        # a created model's ADAPTERs, then the request's: each set is its own LoadedModel
        # and Scheduler, so requests for different adapter sets are never batched together
        adapters = Modelfile.from_manifest(ref.manifest).adapters + list(extra)
        return corral.load(
            ref.path, n_ctx=n_ctx, threads=self.config.threads, name=ref.full_name,
            adapters=adapters or None,
        )  # fmt: skip

    async def _make_room(self, ref: ModelRef) -> None:
        """Unload least recently used idle models until `ref` fits the count and memory
        limits. A full house of busy models is a 503 rather than cancelling their work."""
        budget = self.config.memory_budget
        if budget is not None and ref.size > budget:
            raise MemoryBudgetError(
                f"model '{ref.full_name}' needs {ref.size} bytes; the memory budget is {budget}"
            )
        while True:
            used = sum(e.size for e in self._loaded.values())
            over_count = len(self._loaded) >= self.config.models_max
            over_memory = budget is not None and used + ref.size > budget
            if not (over_count or over_memory):
                return
            idle = [e for e in self._loaded.values() if e.leases == 0]
            if not idle:
                raise QueueFullError(
                    f"all {len(self._loaded)} loaded models are busy; retry shortly"
                )
            victim = min(idle, key=lambda e: e.last_used)
            log.info("unloading %s to make room for %s", victim.key, ref.full_name)
            await self._unload_key(victim.key)

    async def unload(self, name: str) -> bool:
        """Unload model `name` now, every adapter instance of it (requests still running
        on them are cancelled)."""
        keys = [k for k, e in self._loaded.items() if e.name == name]
        for key in keys:
            await self._unload_key(key)
        return bool(keys)

    async def unload_instance(self, entry: LoadedModel) -> bool:
        """Unload one instance (one adapter set) of a model."""
        return await self._unload_key(entry.key)

    async def _unload_key(self, key: str) -> bool:
        entry = self._loaded.pop(key, None)
        if entry is None:
            return False
        if entry._timer is not None:
            entry._timer.cancel()
        await asyncio.to_thread(entry.scheduler.close)
        del entry
        await asyncio.to_thread(_free_memory)
        return True

    async def close(self) -> None:
        """Unload everything (server shutdown)."""
        for key in list(self._loaded):
            await self._unload_key(key)
        self.embedders.close()

    # -- reporting ------------------------------------------------------------------------

    def queue_depth(self) -> int:
        return sum(e.scheduler.queue_depth for e in self._loaded.values())

    def active(self) -> int:
        return sum(e.scheduler.active for e in self._loaded.values())


def instance_key(name: str, adapters: AdapterSet) -> str:
    """`name`, or `name+lora(path*scale,...)` for an instance with request adapters."""
    if not adapters:
        return name
    return name + "+lora(" + ",".join(f"{p}*{s:g}" for p, s in adapters) + ")"


def make_template(model: Model, source: str | None) -> ChatTemplate | None:
    if not source:
        return None
    from corral.chat import ChatTemplate

    tok = model.tokenizer
    bos = tok.token_text(tok.bos_id) if tok.bos_id is not None else ""
    eos = tok.token_text(tok.eos_id) if tok.eos_id is not None else ""
    return ChatTemplate(source, bos, eos)


def _free_memory() -> None:
    from corral.engine.memory import release_free_memory

    gc.collect()
    release_free_memory()
