"""The request scheduler: order, bounded queue, cancellation, async iteration, errors."""

from __future__ import annotations

import asyncio
import threading

import pytest

import corral
from corral.engine.sampling import SamplingParams
from corral.engine.scheduler import Request, Scheduler
from corral.errors import ContextOverflowError
from queue_check import check_queue_bound
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
    s = Scheduler(model, max_queue=1, slots=1)
    try:
        check_queue_bound(s, model, [[5, 6], [5, 6]], 2)
    finally:
        s.close()


def test_concurrent_requests_are_batched_and_exact(model: corral.Model) -> None:
    prompts = [model.tokenize(t) for t in ("hello world", "hi", "hello hello hello world")]
    direct = [
        model.generate(p, max_tokens=8, temperature=0, ignore_eos=True).token_ids for p in prompts
    ]
    s = Scheduler(model, slots=4)
    try:
        handles = [s.submit(Request(p, 8, GREEDY, ignore_eos=True)) for p in prompts]
        got = [[e.token_id for e in h] for h in handles]
        assert got == direct
        # more than one row per decode step on average: the requests shared steps
        assert s.stats.decode_rows > s.stats.decode_steps
    finally:
        s.close()


def test_prompt_cache_reuses_previous_turn(model: corral.Model) -> None:
    s = Scheduler(model, slots=2)
    try:
        first_prompt = model.tokenize("hello world hello")
        first = [e for e in s.submit(Request(first_prompt, 5, GREEDY, ignore_eos=True))]
        follow = first_prompt + [e.token_id for e in first] + model.tokenize(" world")
        last = list(s.submit(Request(follow, 3, GREEDY, ignore_eos=True)))[-1]
        # everything the slot held was reused: the prompt and the tokens fed back (all but
        # the final generated token, which was never run through the model)
        assert last.timings.cached_tokens == len(first_prompt) + 4
        assert last.timings.prompt_tokens == len(follow) - (len(first_prompt) + 4)
    finally:
        s.close()


def test_shared_prefix_copied_from_busy_slot(model: corral.Model) -> None:
    s = Scheduler(model, slots=2)
    gate = threading.Event()
    real = model.net.forward
    calls = {"n": 0}

    def counted(*a, **k):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            gate.wait(5)
        return real(*a, **k)

    try:
        prefix = model.tokenize("hello world " * 6)
        a = s.submit(Request(prefix + [7], 30, GREEDY, ignore_eos=True))
        model.net.forward = counted  # type: ignore[method-assign]
        for _ in range(500):
            if calls["n"] >= 3:  # a is decoding, stalled in the gate, its slot busy
                break
            threading.Event().wait(0.01)
        b = s.submit(Request(prefix + [9], 2, GREEDY, ignore_eos=True))
        gate.set()
        b_events = list(b)
        assert b_events[-1].timings.cached_tokens == len(prefix)
        list(a)
    finally:
        model.net.forward = real  # type: ignore[method-assign]
        s.close()
    ref = model.generate(prefix + [9], max_tokens=2, temperature=0, ignore_eos=True)
    assert [e.token_id for e in b_events] == ref.token_ids


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


def test_zero_max_tokens_and_empty_prompt(model: corral.Model) -> None:
    from corral.errors import InvalidRequestError

    s = Scheduler(model)
    try:
        events = list(s.submit(Request([5, 6], 0, GREEDY)))
        assert len(events) == 1 and events[0].token_id is None
        assert events[0].finish_reason is not None and events[0].finish_reason.value == "length"
        with pytest.raises(InvalidRequestError, match="empty prompt"):
            s.submit(Request([], 4, GREEDY))
    finally:
        s.close()


@pytest.mark.parametrize("exact", [True, False])
def test_batched_steps_run_row_by_row_unless_told_otherwise(
    model: corral.Model, monkeypatch: pytest.MonkeyPatch, exact: bool
) -> None:
    from corral import kernels
    from corral.engine.slots import SharedSlots, batch_exact_wanted

    monkeypatch.setenv("CORRAL_BATCH_EXACT", "1" if exact else "0")
    assert batch_exact_wanted() is exact
    slots = SharedSlots(model.net, 2, 32, graphs=False)
    seen: list[str] = []
    forward = model.net.forward

    def spy(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - records the kernels' order
        seen.append(kernels.order())
        return forward(*args, **kwargs)

    monkeypatch.setattr(model.net, "forward", spy)
    for slot in (0, 1):
        slots.prefill(slot, 0, [5, 6, 7])
    logits = slots.decode([0, 1], [3, 3], [8, 9])
    assert logits.shape == (2, model.net.vocab_size)
    # the decode step (the last forward) computed each row as a one-row call, or did not
    assert seen[-1] == ("rows" if exact else kernels.order())
