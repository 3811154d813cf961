"""The scheduler on models without a sliceable KV cache: RWKV (a recurrent state per slot,
batched for decode) and t5 (a decoder cache per slot, encoder run once per request).

Tiny random models: rwkv6 / rwkv7 from tests/tiny_rwkv.py; rwkv (v4) and t5 converted from
tiny random transformers checkpoints (skipped without transformers). Every result is checked
against Model.generate on the same model, token for token.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import corral
from corral.engine.constraints import AllowedTokens
from corral.engine.generate import FinishReason
from corral.engine.sampling import SamplingParams
from corral.engine.scheduler import Request, Scheduler
from corral.errors import QueueFullError
from corral.generation import GenerationEvent
from queue_check import check_queue_bound
from tiny_rwkv import write_tiny_rwkv

GREEDY = SamplingParams(temperature=0)
ARCHS = ["rwkv6", "rwkv7", "rwkv", "t5"]


def _convert(folder: Path, save: Callable[[Path], object]) -> Path:
    from corral.convert import convert_hf

    save(folder / "hf")
    return convert_hf(folder / "hf", folder / "m.gguf", "f32")


def write_model(folder: Path, arch: str) -> Path:
    """A tiny GGUF of `arch` in `folder`."""
    if arch in ("rwkv6", "rwkv7"):
        write_tiny_rwkv(folder / f"{arch}.gguf", arch)
        return folder / f"{arch}.gguf"
    pytest.importorskip("transformers")
    if arch == "t5":
        from convert.test_t5_parity import save_tiny_t5

        return _convert(folder, lambda p: save_tiny_t5(p, "flan-t5"))
    from convert.test_rwkv4_parity import _tiny_rwkv

    return _convert(folder, _tiny_rwkv)


@pytest.fixture(scope="module", params=ARCHS)
def model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> corral.Model:
    path = write_model(tmp_path_factory.mktemp(request.param), request.param)
    m = corral.load(path, n_ctx=64)
    assert m.info.architecture == request.param
    return m


@pytest.fixture
def sched(model: corral.Model) -> Iterator[Callable[..., Scheduler]]:
    made: list[Scheduler] = []

    def make(**kw: int) -> Scheduler:
        made.append(Scheduler(model, **kw))
        return made[-1]

    yield make
    for s in made:
        s.close()


def _prompts(model: corral.Model) -> list[list[int]]:
    return [model.tokenize(t) for t in ("hello world", "the", "abc the hello world wor ld")]


def _tokens(events: list[GenerationEvent]) -> list[int]:
    return [e.token_id for e in events if e.token_id is not None and not e.eog]


def test_greedy_tokens_equal_generate(model: corral.Model, sched: Callable[..., Scheduler]) -> None:
    s = sched()
    ids = _prompts(model)[0]
    direct = model.generate(ids, 12, temperature=0, ignore_eos=True)
    events = list(s.submit(Request(ids, 12, GREEDY, ignore_eos=True)))
    assert [e.token_id for e in events] == direct.token_ids
    assert "".join(e.text for e in events) == direct.text
    assert events[-1].finish_reason is FinishReason.LENGTH
    assert events[-1].timings.prompt_tokens == len(ids)
    assert events[-1].timings.cached_tokens == 0  # no prefix reuse for these models
    assert s.stats.generated_tokens_total == 12 and s.active == 0


def test_seeded_sampling_and_stop_strings_as_generate(
    model: corral.Model, sched: Callable[..., Scheduler]
) -> None:
    s = sched()
    ids = _prompts(model)[2]
    hot = SamplingParams(temperature=1.0, top_k=20, repeat_penalty=1.3, seed=11)
    kw = {"temperature": 1.0, "top_k": 20, "repeat_penalty": 1.3, "seed": 11}
    direct = model.generate(ids, 10, ignore_eos=True, **kw)
    got = list(s.submit(Request(ids, 10, hot, ignore_eos=True)))
    assert [e.token_id for e in got] == direct.token_ids
    # a stop string from the middle of a greedy answer cuts both at the same place; the
    # answer keeps to tokens that have text (a tiny t5's greedy choices have none)
    words = set(model.tokenize("the house hello world")) - model.tokenizer.eog_ids

    def words_only() -> AllowedTokens:
        return AllowedTokens(words, max_steps=100)

    text = model.generate_with(ids, 10, GREEDY, ignore_eos=True, constraint=words_only()).text
    stop = text[len(text) // 2 :][:2]
    assert stop.strip()
    want = model.generate_with(ids, 10, GREEDY, stop, ignore_eos=True, constraint=words_only())
    req = Request(ids, 10, GREEDY, stop=[stop], ignore_eos=True, constraint=words_only())
    events = list(s.submit(req))
    assert "".join(e.text for e in events) == want.text
    assert events[-1].finish_reason is FinishReason.STOP is want.finish_reason


def test_constraint_masks_each_step(model: corral.Model, sched: Callable[..., Scheduler]) -> None:
    s = sched()
    allowed = {5, 7, 9}
    req = Request(_prompts(model)[0], 20, SamplingParams(temperature=1.0, seed=2))
    req.constraint = AllowedTokens(allowed, max_steps=4)
    events = list(s.submit(req))
    assert len(events) == 4 and set(_tokens(events)) <= allowed
    assert events[-1].finish_reason is FinishReason.STOP


@pytest.fixture(scope="module", params=["rwkv6", "rwkv7"])
def byte_model(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> corral.Model:
    """The tiny models whose vocabularies hold every byte (JSON punctuation included)."""
    return corral.load(write_model(tmp_path_factory.mktemp(request.param), request.param), n_ctx=64)


def test_json_schema_grammar(byte_model: corral.Model) -> None:
    import json

    from corral.grammar import GrammarSpec, make_constraint

    model = byte_model
    schema = {
        "type": "object",
        "properties": {
            "color": {"enum": ["red", "blue"]},
            "n": {"type": "integer", "minimum": 0, "maximum": 9},
        },
        "required": ["color", "n"],
    }
    s = Scheduler(model, slots=2)
    handles = []
    for i in range(2):  # each request its own matcher, both in one batch
        c = make_constraint(model.tokenizer, GrammarSpec.json_schema(schema))
        sampling = SamplingParams(temperature=1.0, seed=i)
        handles.append(s.submit(Request(_prompts(model)[i], 40, sampling, constraint=c)))
    try:
        for h in handles:
            out = json.loads("".join(e.text for e in h))
            assert out["color"] in ("red", "blue") and isinstance(out["n"], int)
    finally:
        s.close()


def test_concurrent_requests_complete_exactly(
    model: corral.Model, sched: Callable[..., Scheduler]
) -> None:
    prompts = _prompts(model)
    direct = [model.generate(p, 8, temperature=0, ignore_eos=True).token_ids for p in prompts]
    s = sched(slots=4)
    handles = [s.submit(Request(p, 8, GREEDY, ignore_eos=True)) for p in prompts]
    results: list[list[int]] = [[] for _ in handles]

    def drain(i: int) -> None:
        results[i] = [e.token_id for e in handles[i]]  # type: ignore[misc]

    threads = [threading.Thread(target=drain, args=(i,)) for i in range(len(handles))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == direct
    # the requests shared decode steps (RWKV: one batched forward; t5: one step, each row)
    assert s.stats.decode_rows > s.stats.decode_steps
    assert s.stats.requests_total == 3 and s.active == 0


def test_one_slot_queues_then_refuses(model: corral.Model, sched: Callable[..., Scheduler]) -> None:
    check_queue_bound(sched(slots=1, max_queue=1), model, [[5, 6], [7, 8]], 3)


def test_cancelled_request_frees_its_slot(
    model: corral.Model, sched: Callable[..., Scheduler]
) -> None:
    s = sched(slots=1, max_queue=1)
    long = s.submit(Request([5, 6, 7], 50, GREEDY, ignore_eos=True))
    it = iter(long)
    next(it)
    long.cancel()
    assert len(list(it)) < 49  # it stopped early
    # the slot is free again, and the next sequence starts from a fresh cache / state
    ids = _prompts(model)[1]
    direct = model.generate(ids, 6, temperature=0, ignore_eos=True)
    got = [e.token_id for e in s.submit(Request(ids, 6, GREEDY, ignore_eos=True))]
    assert got == direct.token_ids
    assert s.stats.requests_cancelled == 1 and s.active == 0


def test_async_iteration_and_close(model: corral.Model, sched: Callable[..., Scheduler]) -> None:
    import asyncio

    s = sched(slots=2)

    async def run() -> list[int | None]:
        loop = asyncio.get_running_loop()
        h = s.submit(Request([5, 6, 7], 5, GREEDY, ignore_eos=True), loop=loop)
        return [ev.token_id async for ev in h]

    assert len(asyncio.run(run())) == 5
    s.close()
    with pytest.raises(QueueFullError, match="unloaded"):
        s.submit(Request([5, 6], 2, GREEDY))
