"""Requests from many clients <-> one model, with continuous batching and a prompt cache.

A worker thread owns `slots` sequence places. Each step it (1) admits waiting requests into
free slots, (2) runs one prefill chunk for a request whose prompt is not yet in its slot, and
(3) runs one decode step for every request that is generating, each at its own length.
Requests join and leave between steps.

This module is the request lifecycle, the same for every model: queueing, admission,
sampling (and grammar constraints), stop strings, cancellation, stats. How a model's caches
are laid out and run lives in engine/slots.py (`make_slots`): decoder-only models share one
KV cache whose rows decode in one forward pass and reuse cached prompt prefixes (a follow-up
chat turn, or a second request with the same long system prompt, skips the shared part);
RWKV models keep a recurrent state per slot, batched for decode steps; encoder-decoder
models (t5) keep a decoder cache per slot and decode one slot at a time. The last two have
no prefix reuse.

Clients get a `RequestHandle` to iterate (threads) or async-iterate (asyncio); the queue is
bounded (`QueueFullError`), and a cancelled request (a client that went away) frees its slot
at the next step.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from corral.engine.constraints import LogitsConstraint
from corral.engine.generate import (
    FinishReason,
    GenerationRequest,
    Timings,
    draw,
    finish_reason,
    fit_prompt,
    token_event,
)
from corral.engine.sampling import Sampler, SamplingParams, make_sampler
from corral.engine.slots import make_slots
from corral.errors import InvalidRequestError, QueueFullError
from corral.generation import GenerationEvent, TextStream

if TYPE_CHECKING:
    from corral.model import Model

_DONE = object()
_ids = itertools.count(1)


@dataclass
class Request:
    """One generation to run: token ids in, events out."""

    prompt_ids: list[int]
    max_tokens: int = 256
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop: list[str] = field(default_factory=list)
    ignore_eos: bool = False
    truncate: bool = False
    top_logprobs: int = 0
    constraint: LogitsConstraint | None = None


@dataclass
class SchedulerStats:
    """Counters for /metrics."""

    requests_total: int = 0
    requests_cancelled: int = 0
    prompt_tokens_total: int = 0
    cached_prompt_tokens_total: int = 0
    generated_tokens_total: int = 0
    ttft_seconds_sum: float = 0.0
    ttft_count: int = 0
    decode_steps: int = 0
    decode_rows: int = 0  # sum of batch sizes over decode steps


class RequestHandle:
    """The client side of a submitted request: iterate it for GenerationEvents."""

    def __init__(self, request: Request, loop: asyncio.AbstractEventLoop | None) -> None:
        self.request = request
        self.id = next(_ids)
        self.submitted = time.perf_counter()
        self.first_token_at: float | None = None
        self._loop = loop
        self._aq: asyncio.Queue[object] | None = asyncio.Queue() if loop is not None else None
        self._q: queue.Queue[object] = queue.Queue()
        self._cancelled = threading.Event()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """Stop this request at the next step (a client that disconnected)."""
        self._cancelled.set()

    def _put(self, item: object) -> None:
        if self._loop is not None and self._aq is not None:
            try:
                self._loop.call_soon_threadsafe(self._aq.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                self.cancel()
        else:
            self._q.put(item)

    def __iter__(self) -> Iterator[GenerationEvent]:
        while True:
            item = self._q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]

    async def __aiter__(self) -> AsyncIterator[GenerationEvent]:
        assert self._aq is not None, "submit(..., loop=...) to iterate asynchronously"
        try:
            while True:
                item = await self._aq.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item  # type: ignore[misc]
        finally:
            # the consumer stopped early (client gone): free the slot
            self.cancel()


@dataclass
class _Seq:
    """A request that holds a slot: its prompt still to prefill, or its decoding state."""

    handle: RequestHandle
    req: GenerationRequest
    slot: int
    sampler: Sampler
    text: TextStream
    history: list[int]
    todo: list[int]  # prompt tokens not yet in the slot's cache
    offset: int  # positions filled in the slot (t5: the decoder's)
    timings: Timings = field(default_factory=Timings)
    step: int = 0
    next_token: int = -1
    started: float = field(default_factory=time.perf_counter)
    decode_start: float = 0.0


class Scheduler:
    """Runs requests for one model on a worker thread, batching their decode steps."""

    def __init__(
        self, model: Model, max_queue: int = 64, slots: int = 4, n_ctx: int | None = None
    ) -> None:
        self.model = model
        self.max_queue = max_queue
        self.n_ctx = n_ctx or model.info.n_ctx
        self.n_slots = slots
        self.stats = SchedulerStats()
        self._slots = make_slots(model, slots, self.n_ctx)
        self._seqs: dict[int, _Seq] = {}  # slot -> sequence holding it
        self._waiting: deque[RequestHandle] = deque()
        self._cv = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="corral-scheduler", daemon=True)
        self._thread.start()

    # -- client side -------------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    @property
    def active(self) -> int:
        return len(self._seqs)

    @property
    def _slot_tokens(self) -> list[list[int]]:
        """The tokens each slot's cache holds (bench/complete.py clears them to measure
        without the prompt cache)."""
        return self._slots.held

    def submit(
        self, request: Request, loop: asyncio.AbstractEventLoop | None = None
    ) -> RequestHandle:
        """Queue a request. Raises ContextOverflowError now (not later) for a prompt that
        cannot fit, and QueueFullError when `max_queue` requests already wait."""
        if not request.prompt_ids:
            raise InvalidRequestError("empty prompt: give at least one token")
        request.prompt_ids = fit_prompt(request.prompt_ids, self.n_ctx, request.truncate)
        handle = RequestHandle(request, loop)
        with self._cv:
            if self._closed:
                raise QueueFullError("the model is being unloaded; retry")
            # requests that a free slot will take at the next step are not queued
            free = self.n_slots - len(self._seqs)
            if len(self._waiting) - free >= self.max_queue:
                raise QueueFullError(f"server busy: {len(self._waiting)} requests already queued")
            self._waiting.append(handle)
            self.stats.requests_total += 1
            self._cv.notify()
        return handle

    def close(self, timeout: float = 5.0) -> None:
        """Stop accepting work, cancel what is queued or running, end the worker."""
        with self._cv:
            self._closed = True
            for h in list(self._waiting) + [s.handle for s in self._seqs.values()]:
                h.cancel()
            self._cv.notify()
        self._thread.join(timeout)

    # -- worker ------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._waiting and not self._seqs and not self._closed:
                    self._cv.wait()
                if self._closed:
                    for h in self._waiting:
                        h._put(_DONE)
                    self._waiting.clear()
                    for seq in list(self._seqs.values()):
                        self._release(seq)
                    return
                admitted = self._admit()
            for seq in admitted:
                self._start(seq)
            try:
                self._step()
            except Exception as e:  # noqa: BLE001 - handed to the clients, the worker lives on
                for seq in list(self._seqs.values()):
                    seq.handle._put(e)
                    self._release(seq)

    def _admit(self) -> list[_Seq]:
        """Move waiting requests into free slots (called with the lock held)."""
        admitted = []
        free = [i for i in range(self.n_slots) if i not in self._seqs]
        while self._waiting and free:
            handle = self._waiting.popleft()
            if handle.cancelled:
                self.stats.requests_cancelled += 1
                handle._put(_DONE)
                continue
            if handle.request.max_tokens <= 0:  # nothing to generate: answer at once
                handle._put(GenerationEvent("", None, None, FinishReason.LENGTH, Timings()))
                handle._put(_DONE)
                continue
            slot, reuse = self._slots.place(handle.request.prompt_ids, free, list(self._seqs))
            free.remove(slot)
            r = handle.request
            req = GenerationRequest(
                prompt_ids=r.prompt_ids, max_tokens=r.max_tokens, sampling=r.sampling,
                stop_ids=self.model.tokenizer.eog_ids, ignore_eos=r.ignore_eos,
                top_logprobs=r.top_logprobs, constraint=r.constraint,
            )  # fmt: skip
            seq = _Seq(
                handle, req, slot, make_sampler(r.sampling),
                TextStream(self.model.tokenizer, r.stop), self._slots.history(r.prompt_ids),
                todo=list(r.prompt_ids[reuse:]), offset=reuse,
            )  # fmt: skip
            seq.timings.cached_tokens = reuse
            self._seqs[slot] = seq
            admitted.append(seq)
        return admitted

    def _start(self, seq: _Seq) -> None:
        self.stats.prompt_tokens_total += len(seq.todo)
        self.stats.cached_prompt_tokens_total += seq.timings.cached_tokens

    def _step(self) -> None:
        prefilling = [s for s in self._seqs.values() if s.todo]
        for s in list(self._seqs.values()):
            if s.handle.cancelled:
                self.stats.requests_cancelled += 1
                self._release(s)
        if prefilling and not prefilling[0].handle.cancelled:
            self._prefill_chunk(prefilling[0])
        decoding = [s for s in self._seqs.values() if not s.todo and s.next_token >= 0]
        if decoding:
            self._decode(decoding)

    def _prefill_chunk(self, seq: _Seq) -> None:
        t0 = time.perf_counter()
        n = self._slots.chunk
        chunk, seq.todo = seq.todo[:n], seq.todo[n:]
        logits, seq.offset = self._slots.prefill(seq.slot, seq.offset, chunk)  # [V]
        seq.timings.prompt_tokens += len(chunk)
        seq.timings.prompt_s += time.perf_counter() - t0
        if not seq.todo:
            seq.decode_start = time.perf_counter()
            self._emit(seq, logits)

    def _decode(self, seqs: list[_Seq]) -> None:
        logits = self._slots.decode(
            [s.slot for s in seqs], [s.offset for s in seqs], [s.next_token for s in seqs]
        )  # [B, V]
        self.stats.decode_steps += 1
        self.stats.decode_rows += len(seqs)
        for row, s in enumerate(seqs):
            s.offset += 1
            self._emit(s, logits[row])

    def _emit(self, seq: _Seq, logits: torch.Tensor) -> None:
        """Sample the sequence's next token from `logits` [V] and send its event."""
        token, logprob = draw(seq.req, seq.sampler, logits, seq.history)
        finish = finish_reason(seq.req, token, seq.step, seq.offset, self.n_ctx)
        seq.timings.decode_tokens = seq.step + 1
        seq.timings.decode_s = time.perf_counter() - seq.decode_start
        event = seq.text.push(token_event(seq.req, logits, token, logprob, finish), seq.timings)
        h = seq.handle
        if h.first_token_at is None:
            h.first_token_at = time.perf_counter()
            self.stats.ttft_seconds_sum += h.first_token_at - h.submitted
            self.stats.ttft_count += 1
        if event.token_id is not None and not event.eog:
            self.stats.generated_tokens_total += 1
        h._put(event)
        seq.step += 1
        seq.next_token = token
        if seq.text.done:
            self._release(seq)

    def _release(self, seq: _Seq) -> None:
        seq.handle._put(_DONE)
        self._slots.release(seq.slot)
        self._seqs.pop(seq.slot, None)
