"""Running a generation for a route: submit to the model's scheduler, stream or collect its
events, count tokens and time to first token, and map engine errors to HTTP ones.

Every generation the server runs goes through `submit`; only the Scheduler runs models.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from starlette.requests import Request

from corral.engine.generate import Timings
from corral.errors import CorralError
from corral.server.errors import ApiError, from_corral_error

if TYPE_CHECKING:
    from corral.engine.constraints import LogitsConstraint
    from corral.engine.scheduler import RequestHandle
    from corral.generation import GenerationEvent
    from corral.server.manager import LoadedModel
    from corral.server.metrics import Metrics
    from corral.server.options import GenOptions

T = TypeVar("T")


@dataclass
class Completion:
    """A finished generation as routes report it."""

    text: str
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str  # "stop" or "length"
    prompt_tokens: int
    timings: Timings = field(default_factory=Timings)
    # per token: the most likely alternatives as (id, logprob), when they were asked for
    top: list[tuple[tuple[int, float], ...]] = field(default_factory=list)

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids)


class Run:
    """One submitted generation: iterate `events()` or await `collect()`, once."""

    def __init__(self, handle: RequestHandle, prompt_tokens: int, metrics: Metrics) -> None:
        self.handle = handle
        self.prompt_tokens = prompt_tokens
        self.metrics = metrics
        self.finished = False
        self.first_token_s: float | None = None

    def cancel(self) -> None:
        """Stop the generation at its next token (the client went away)."""
        if not self.finished:
            self.finished = True
            self.metrics.cancelled += 1
            self.handle.cancel()

    async def events(self) -> AsyncIterator[GenerationEvent]:
        """The generation's events; the last carries the finish reason. Engine failures
        raise ApiError."""
        start = time.perf_counter()
        try:
            async for ev in self.handle:
                if self.first_token_s is None:
                    self.first_token_s = time.perf_counter() - start
                    self.metrics.observe_ttft(self.first_token_s)
                if ev.token_id is not None and not ev.eog:
                    self.metrics.generated_tokens += 1
                if ev.finish_reason is not None:
                    self.finished = True
                    self.metrics.prompt_tokens += self.prompt_tokens
                    if ev.timings is not None:
                        self.metrics.cached_prompt_tokens += ev.timings.cached_tokens
                yield ev
                if ev.finish_reason is not None:
                    return
        except CorralError as e:
            self.finished = True
            raise from_corral_error(e) from None
        except ApiError:
            raise
        except Exception as e:  # noqa: BLE001 - an engine bug: a 500 for this request only
            self.finished = True
            raise ApiError(500, f"generation failed: {type(e).__name__}: {e}") from None
        self.finished = True  # ended without a final event (max_tokens 0)

    async def collect(self) -> Completion:
        """Run to the end and gather text, tokens and timings."""
        parts: list[str] = []
        ids: list[int] = []
        logprobs: list[float] = []
        top: list[tuple[tuple[int, float], ...]] = []
        reason, timings = "length", Timings()
        async for ev in self.events():
            parts.append(ev.text)
            if ev.token_id is not None and not ev.eog:
                ids.append(ev.token_id)
                logprobs.append(ev.logprob if ev.logprob is not None else 0.0)
                top.append(ev.top_logprobs or ())
            if ev.finish_reason is not None:
                reason = finish_name(ev)
                timings = ev.timings or timings
        text = "".join(parts)
        return Completion(text, ids, logprobs, reason, self.prompt_tokens, timings, top)


def finish_name(ev: GenerationEvent) -> str:
    """ "stop" or "length" (the names both APIs use)."""
    value = ev.finish_reason.value if ev.finish_reason is not None else "length"
    return "length" if value == "length" else "stop"


class _NoTokens:
    """The handle of a generation asked for zero tokens: it ends at once, unsubmitted."""

    def cancel(self) -> None:
        pass

    async def __aiter__(self) -> AsyncIterator[GenerationEvent]:
        return
        yield


def submit(
    entry: LoadedModel,
    prompt_ids: list[int],
    opts: GenOptions,
    metrics: Metrics,
    retry_after_s: int = 1,
    top_logprobs: int = 0,
    constraint: Callable[[], LogitsConstraint | None] | None = None,
) -> Run:
    """Queue a generation on `entry`'s scheduler. Raises ApiError now (not mid-stream) for
    an empty prompt, a prompt over the context, or a full queue. `constraint` makes the
    run's own grammar matcher (corral.server.structured)."""
    from corral.engine.generate import fit_prompt
    from corral.engine.scheduler import Request

    if not prompt_ids:
        raise ApiError(400, "the prompt is empty: give at least one token", param="prompt")
    n_ctx = entry.n_ctx
    # None: until an end token or the context is full (the engine stops there by itself)
    max_tokens = n_ctx if opts.max_tokens is None else max(0, opts.max_tokens)
    request = Request(
        prompt_ids=list(prompt_ids),
        max_tokens=max_tokens,
        sampling=opts.sampling,
        stop=list(opts.stop),
        top_logprobs=top_logprobs,
        constraint=constraint() if constraint is not None else None,
    )
    try:
        if max_tokens == 0:  # the engine always makes one token; zero means none
            fit_prompt(request.prompt_ids, n_ctx, truncate=False)
            return Run(_NoTokens(), len(request.prompt_ids), metrics)  # type: ignore[arg-type]
        handle = entry.scheduler.submit(request, loop=asyncio.get_running_loop())
    except CorralError as e:
        raise from_corral_error(e, retry_after_s) from None
    return Run(handle, len(request.prompt_ids), metrics)


def submit_many(
    entry: LoadedModel,
    prompts: list[list[int]],
    opts: list[GenOptions],
    metrics: Metrics,
    retry_after_s: int = 1,
    top_logprobs: int = 0,
    constraint: Callable[[], LogitsConstraint | None] | None = None,
) -> list[Run]:
    """Submit several generations (n > 1, several prompts); all or none: if one cannot be
    queued, those already queued are cancelled."""
    runs: list[Run] = []
    try:
        for ids, o in zip(prompts, opts, strict=True):
            runs.append(submit(entry, ids, o, metrics, retry_after_s, top_logprobs, constraint))
    except ApiError:
        for r in runs:
            r.cancel()
        raise
    return runs


async def merged(runs: list[Run]) -> AsyncIterator[tuple[int, GenerationEvent]]:
    """Events of several runs as they come, tagged with the run's index.

    An error in one run is raised here after the others are cancelled."""
    queue: asyncio.Queue[tuple[int, object]] = asyncio.Queue()
    done = object()

    async def pump(i: int, run: Run) -> None:
        try:
            async for ev in run.events():
                await queue.put((i, ev))
        except Exception as e:  # noqa: BLE001 - handed to the consumer below
            await queue.put((i, e))
        await queue.put((i, done))

    tasks = [asyncio.create_task(pump(i, r)) for i, r in enumerate(runs)]
    remaining = len(tasks)
    try:
        while remaining:
            i, item = await queue.get()
            if item is done:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield i, item  # type: ignore[misc]
    finally:
        for t in tasks:
            t.cancel()
        for r in runs:
            r.cancel()


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await `work` unless the client disconnects first; then cancel it and raise ClientGone.

    Non-streamed answers need this: nothing else notices a client that gave up waiting,
    and its generation would run to the end for nobody.
    """
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(watch())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        raise ClientGone
    return task.result()
