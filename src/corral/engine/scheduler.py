"""Requests from many clients <-> one model: a worker thread runs generations, each request
gets its events through a handle it can iterate (threads) or async-iterate (asyncio).

The queue is bounded (`QueueFullError` past `max_queue`); a cancelled request (a client that
went away) stops at its next token. This first scheduler runs one generation at a time, in
arrival order; continuous batching replaces `_serve` without changing this interface.
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

from corral.engine.generate import FinishReason, fit_prompt
from corral.engine.sampling import SamplingParams
from corral.errors import QueueFullError

if TYPE_CHECKING:
    from corral.generation import GenerationEvent
    from corral.model import Model

_DONE = object()


@dataclass
class Request:
    """One generation to run: token ids in, events out."""

    prompt_ids: list[int]
    max_tokens: int = 256
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop: list[str] = field(default_factory=list)
    ignore_eos: bool = False
    truncate: bool = False


@dataclass
class SchedulerStats:
    """Counters for /metrics."""

    requests_total: int = 0
    requests_cancelled: int = 0
    prompt_tokens_total: int = 0
    generated_tokens_total: int = 0
    ttft_seconds_sum: float = 0.0
    ttft_count: int = 0


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
        """Stop this request at its next token (a client that disconnected)."""
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


_ids = itertools.count(1)


class Scheduler:
    """Runs requests for one model on a worker thread."""

    def __init__(self, model: Model, max_queue: int = 64) -> None:
        self.model = model
        self.max_queue = max_queue
        self.stats = SchedulerStats()
        self._waiting: deque[RequestHandle] = deque()
        self._active: list[RequestHandle] = []
        self._cv = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="corral-scheduler", daemon=True)
        self._thread.start()

    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    @property
    def active(self) -> int:
        return len(self._active)

    def submit(
        self, request: Request, loop: asyncio.AbstractEventLoop | None = None
    ) -> RequestHandle:
        """Queue a request. Raises ContextOverflowError now (not later) for a prompt that
        cannot fit, and QueueFullError when `max_queue` requests already wait."""
        request.prompt_ids = fit_prompt(request.prompt_ids, self.model.info.n_ctx, request.truncate)
        handle = RequestHandle(request, loop)
        with self._cv:
            if self._closed:
                raise QueueFullError("the model is being unloaded; retry")
            if len(self._waiting) >= self.max_queue:
                raise QueueFullError(f"server busy: {len(self._waiting)} requests already queued")
            self._waiting.append(handle)
            self.stats.requests_total += 1
            self._cv.notify()
        return handle

    def close(self, timeout: float = 5.0) -> None:
        """Stop accepting work, cancel what is queued or running, end the worker."""
        with self._cv:
            self._closed = True
            for h in list(self._waiting) + self._active:
                h.cancel()
            self._cv.notify()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._waiting and not self._closed:
                    self._cv.wait()
                if self._closed and not self._waiting:
                    return
                handle = self._waiting.popleft()
                self._active.append(handle)
            try:
                self._serve(handle)
            finally:
                with self._cv:
                    self._active.remove(handle)

    def _serve(self, handle: RequestHandle) -> None:
        req = handle.request
        if handle.cancelled:
            self.stats.requests_cancelled += 1
            handle._put(_DONE)
            return
        try:
            events = self.model.generate_with(
                req.prompt_ids, req.max_tokens, req.sampling, req.stop,
                ignore_eos=req.ignore_eos, truncate=req.truncate, stream=True,
            )  # fmt: skip
            for ev in events:  # type: ignore[union-attr]
                if handle.first_token_at is None:
                    handle.first_token_at = time.perf_counter()
                    self.stats.ttft_seconds_sum += handle.first_token_at - handle.submitted
                    self.stats.ttft_count += 1
                if ev.token_id is not None:
                    self.stats.generated_tokens_total += 1
                if ev.finish_reason is not None and ev.timings is not None:
                    self.stats.prompt_tokens_total += (
                        ev.timings.prompt_tokens + ev.timings.cached_tokens
                    )
                handle._put(ev)
                if handle.cancelled:
                    events.close()  # type: ignore[union-attr]
                    self.stats.requests_cancelled += 1
                    break
        except Exception as e:  # noqa: BLE001 - handed to the client, the worker lives on
            handle._put(e)
        handle._put(_DONE)


__all__ = ["FinishReason", "Request", "RequestHandle", "Scheduler", "SchedulerStats"]
