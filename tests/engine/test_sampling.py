"""Logit processors and the sampler: each one changes what it should and nothing else."""

from __future__ import annotations

import math

import torch

from corral.engine.sampling import (
    SamplingParams,
    apply_penalties,
    make_sampler,
    min_p,
    top_k,
    top_p,
    typical_p,
)

LOGITS = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, 3.0])


def kept(x: torch.Tensor) -> list[int]:
    return sorted(int(i) for i in torch.nonzero(torch.isfinite(x)).flatten())


def test_top_k() -> None:
    assert kept(top_k(LOGITS, 2)) == [0, 5]
    assert kept(top_k(LOGITS, 0)) == list(range(6))


def test_top_p_keeps_smallest_set_reaching_p() -> None:
    probs = LOGITS.softmax(-1)
    order = torch.argsort(probs, descending=True).tolist()
    # p just above the top token's mass needs the second token too
    p = float(probs[order[0]]) + 1e-3
    assert kept(top_p(LOGITS, p)) == sorted(order[:2])
    assert kept(top_p(LOGITS, 1e-6)) == [order[0]]
    assert kept(top_p(LOGITS, 1.0)) == list(range(6))


def test_min_p() -> None:
    # keep tokens with p >= 0.3 * p_max, i.e. logit >= 3 + ln 0.3 = 1.796
    assert kept(min_p(LOGITS, 0.3)) == [0, 5]


def test_typical_p_keeps_at_least_one() -> None:
    assert len(kept(typical_p(LOGITS, 1e-9))) == 1
    assert len(kept(typical_p(LOGITS, 0.9))) < 6


def test_penalties() -> None:
    p = SamplingParams(repeat_penalty=2.0, presence_penalty=0.5, frequency_penalty=0.25)
    out = apply_penalties(LOGITS, [0, 0, 4], p)
    assert math.isclose(float(out[0]), 2.0 / 2.0 - 0.5 - 2 * 0.25)
    assert math.isclose(float(out[4]), -1.0 * 2.0 - 0.5 - 0.25)
    assert torch.equal(out[[1, 2, 3, 5]], LOGITS[[1, 2, 3, 5]])
    # only the last repeat_last_n tokens count
    out = apply_penalties(LOGITS, [0, 4], SamplingParams(repeat_penalty=2.0, repeat_last_n=1))
    assert float(out[0]) == 2.0 and float(out[4]) == -2.0


def test_greedy_and_logprob() -> None:
    tok, lp = make_sampler(SamplingParams(temperature=0))(LOGITS, [])
    assert tok == 5
    assert math.isclose(lp, float(LOGITS.log_softmax(-1)[5]), rel_tol=1e-6)


def test_same_seed_same_tokens() -> None:
    logits = torch.randn(100, generator=torch.Generator().manual_seed(0))

    def draw(seed: int) -> list[int]:
        s = make_sampler(SamplingParams(temperature=1.5, top_k=0, top_p=1.0, min_p=0.0, seed=seed))
        return [s(logits, [])[0] for _ in range(20)]

    assert draw(7) == draw(7)
    assert draw(7) != draw(8)


def test_temperature_sampling_respects_filters() -> None:
    s = make_sampler(SamplingParams(temperature=5.0, top_k=2, top_p=1.0, min_p=0.0, seed=1))
    assert {s(LOGITS, [])[0] for _ in range(50)} == {0, 5}
