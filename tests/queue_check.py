"""One scenario both scheduler test files run: a one-slot, one-place queue takes a request,
queues the next and refuses a third with QueueFullError, then serves both in full."""

from __future__ import annotations

import threading

import pytest

import corral
from corral.engine.sampling import SamplingParams
from corral.engine.scheduler import Request, Scheduler
from corral.errors import QueueFullError

GREEDY = SamplingParams(temperature=0.0)


def check_queue_bound(s: Scheduler, model: corral.Model, prompts: list[list[int]], n: int) -> None:
    """`s` has one slot and max_queue=1; prompts: two prompts; n: tokens each generates.
    model.net.forward is held until the third request has been refused."""
    assert s.n_slots == 1 and s.max_queue == 1
    gate = threading.Event()
    real = model.net.forward

    def slow(*a, **k):  # type: ignore[no-untyped-def]
        gate.wait(5)
        return real(*a, **k)

    model.net.forward = slow  # type: ignore[method-assign]
    try:
        first = s.submit(Request(prompts[0], n, GREEDY, ignore_eos=True))
        for _ in range(500):  # until the worker has taken the first one into its slot
            if s.active:
                break
            threading.Event().wait(0.01)
        second = s.submit(Request(prompts[1], n, GREEDY, ignore_eos=True))
        with pytest.raises(QueueFullError, match="server busy"):
            s.submit(Request(prompts[0], 2, GREEDY))
        gate.set()
        assert len(list(first)) == n and len(list(second)) == n
    finally:
        gate.set()
        model.net.forward = real  # type: ignore[method-assign]
