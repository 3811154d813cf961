"""The request scheduler: order, bounded queue, cancellation, async iteration, errors."""

from __future__ import annotations

import asyncio
import threading

import pytest

import corral
from corral.engine.sampling import SamplingParams
from corral.engine.scheduler import Request, Scheduler
from corral.errors import ContextOverflowError, QueueFullError
from tiny_gguf import write_tiny

GREEDY = SamplingParams(temperature=0)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> corral.Model:
    return corral.load(write_tiny(tmp_path_factory.mktemp("s") / "tiny.gguf", context=64))


def test_results_equal_direct_generation(model: corral.Model) -> None:
    s = Scheduler(model)
    try:
        ids = model.tokenize("hello world")
        direct = model.generate(ids, max_tokens=6, temperature=0, ignore_eos=True)
        events = list(s.submit(Request(ids, 6, GREEDY, ignore_eos=True)))
        assert [e.token_id for e in events] == direct.token_ids
        assert s.stats.requests_total == 1 and s.stats.generated_tokens_total == 6
    finally:
        s.close()


def test_queue_bound(model: corral.Model) -> None:
    s = Scheduler(model, max_queue=1)
    gate = threading.Event()
    real = model.generate_with

    def slow(*a, **k):  # type: ignore[no-untyped-def]
        gate.wait(5)
        return real(*a, **k)

    model.generate_with = slow  # type: ignore[method-assign]
    try:
        first = s.submit(Request([5, 6], 2, GREEDY))
        for _ in range(100):  # wait until the worker has taken the first one
            if s.active:
                break
            threading.Event().wait(0.01)
        second = s.submit(Request([5, 6], 2, GREEDY))
        with pytest.raises(QueueFullError, match="server busy"):
            s.submit(Request([5, 6], 2, GREEDY))
        gate.set()
        assert len(list(first)) == 2 and len(list(second)) == 2
    finally:
        model.generate_with = real  # type: ignore[method-assign]
        s.close()


def test_cancel_stops_generation(model: corral.Model) -> None:
    s = Scheduler(model)
    try:
        h = s.submit(Request([5, 6], 40, GREEDY, ignore_eos=True))
        got = []
        for ev in h:
            got.append(ev)
            h.cancel()
        assert len(got) < 40
        assert s.stats.requests_cancelled == 1
    finally:
        s.close()


def test_context_overflow_raised_at_submit(model: corral.Model) -> None:
    s = Scheduler(model)
    try:
        with pytest.raises(ContextOverflowError):
            s.submit(Request(list(range(3, 80)), 4, GREEDY))
    finally:
        s.close()


def test_async_iteration(model: corral.Model) -> None:
    s = Scheduler(model)

    async def run() -> list[int | None]:
        h = s.submit(
            Request([5, 6, 7], 5, GREEDY, ignore_eos=True), loop=asyncio.get_running_loop()
        )
        return [ev.token_id async for ev in h]

    try:
        assert len(asyncio.run(run())) == 5
    finally:
        s.close()
