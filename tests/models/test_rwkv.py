"""rwkv6 / rwkv7 against llama.cpp on tiny random GGUF files, and the recurrent state.

The files come from tests/tiny_rwkv.py (seeded); llama.cpp's outputs for them were made once
by tests/models/fixtures/rwkv/make_refs.py in the peer environment and are kept there.
Weights are float32, so logits must agree to 1e-3 (absolute; the observed difference is
~2e-5) and the 16 greedy tokens exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import corral
from corral.errors import UnsupportedError
from tiny_rwkv import write_tiny_rwkv

FIXTURES = Path(__file__).parent / "fixtures" / "rwkv"
ATOL = 1e-3


@pytest.fixture(scope="module", params=["rwkv6", "rwkv7"])
def case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    arch = request.param
    ref = dict(np.load(FIXTURES / f"{arch}.npz"))
    path = tmp_path_factory.mktemp(arch) / f"{arch}.gguf"
    digest = write_tiny_rwkv(path, arch)
    assert digest == str(ref["digest"]), "tiny_rwkv.py changed: rerun make_refs.py"
    return corral.load(path, n_ctx=64), ref, path


def test_logits_match_llama_cpp(case: tuple) -> None:
    model, ref, _ = case
    logits = model.logits(ref["prompt_ids"].tolist())
    assert logits.shape == ref["logits"].shape
    assert np.abs(logits - ref["logits"]).max() <= ATOL


def test_greedy_tokens_match_llama_cpp(case: tuple) -> None:
    model, ref, _ = case
    out = model.generate(ref["prompt_ids"].tolist(), 16, temperature=0, ignore_eos=True)
    assert out.token_ids == ref["greedy_ids"].tolist()


def test_prefill_at_once_equals_token_by_token(case: tuple) -> None:
    model, ref, _ = case
    net, ids = model.net, torch.tensor([ref["prompt_ids"].tolist()])
    whole = net.forward(ids, net.make_cache(64))[0]
    state = net.make_cache(64)
    steps = torch.cat([net.forward(ids[:, i : i + 1], state)[0] for i in range(ids.shape[1])])
    torch.testing.assert_close(steps, whole, atol=1e-4, rtol=1e-4)
    assert state.offset == ids.shape[1]
    chunked = net.make_cache(64)
    last = [net.forward(ids[:, :5], chunked), net.forward(ids[:, 5:], chunked, last_only=True)]
    torch.testing.assert_close(last[1][0, -1], whole[-1], atol=1e-4, rtol=1e-4)


def test_batch_rows_are_independent(case: tuple) -> None:
    model, ref, _ = case
    net, ids = model.net, torch.tensor([ref["prompt_ids"].tolist()])
    both = torch.cat([ids, ids.flip(1)])  # [2, T]
    out = net.forward(both, net.make_cache(64, batch=2))
    for row in range(2):
        alone = net.forward(both[row : row + 1], net.make_cache(64))[0]
        torch.testing.assert_close(out[row], alone, atol=1e-4, rtol=1e-4)


def test_follow_up_reuses_or_restarts_the_state(case: tuple) -> None:
    model, ref, path = case
    fresh = corral.load(path, n_ctx=64)
    prompt = ref["prompt_ids"].tolist()
    first = model.generate(prompt, 4, temperature=0, ignore_eos=True).token_ids
    follow = prompt + first + [260, 261]  # extends everything the state has seen
    assert model._cached_ids == prompt + first[:-1]
    for ids in (follow, prompt[:5] + [33, 260]):  # the second diverges: start afresh
        got = model.generate(ids, 6, temperature=0, ignore_eos=True)
        want = fresh.generate(ids, 6, temperature=0, ignore_eos=True)
        assert got.token_ids == want.token_ids
    assert model.generate(follow, 6, temperature=0, ignore_eos=True).token_ids == (
        fresh.generate(follow, 6, temperature=0, ignore_eos=True).token_ids
    )


def test_continuous_batching_is_refused_in_one_line(case: tuple) -> None:
    model, _, _ = case
    state = model.net.make_cache(64, batch=2)
    for call in (lambda: state.slot(0, 0), lambda: state.copy_slot(0, 1, 3)):
        with pytest.raises(UnsupportedError) as err:
            call()
        assert "\n" not in str(err.value) and "RWKV" in str(err.value)


def test_scheduler_greedy_tokens_match_llama_cpp(case: tuple) -> None:
    from corral.engine.sampling import SamplingParams
    from corral.engine.scheduler import Request, Scheduler

    model, ref, _ = case
    sched = Scheduler(model, slots=2)  # a recurrent state per slot (engine/slots.py)
    try:
        prompt = ref["prompt_ids"].tolist()
        req = Request(prompt, 16, SamplingParams(temperature=0), ignore_eos=True)
        assert [e.token_id for e in sched.submit(req)] == ref["greedy_ids"].tolist()
    finally:
        sched.close()
