"""Parity with llama.cpp on the two real models (../shared/oracles).

Teacher-forced: each greedy case's prompt plus llama.cpp's 32 greedy tokens is fed in one
pass, and our argmax at every generated position is compared with llama.cpp's token; the
logits case's top-5 at every position must be within 1.0 of llama.cpp's values. Criteria
from the core-runtime issue: top-1 agrees at >= 97% of positions, every top-5 logit within 1.0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import corral

pytestmark = pytest.mark.realmodel


@pytest.fixture(scope="module", params=["smollm2", "gemma3"])
def pair(request: pytest.FixtureRequest) -> tuple[corral.Model, dict]:
    path: Path = request.getfixturevalue(f"{request.param}_path")
    oracle = request.getfixturevalue(f"oracle_{request.param}")
    return corral.load(path, n_ctx=512), oracle


def test_top1_agreement_teacher_forced(pair: tuple[corral.Model, dict]) -> None:
    model, oracle = pair
    agree = total = 0
    for case in oracle["greedy"]["cases"]:
        ids = case["prompt_ids"] + case["generated_ids"]
        logits = model.logits(ids)
        n = len(case["prompt_ids"])
        pred = logits[n - 1 : -1].argmax(-1)
        agree += int((pred == np.array(case["generated_ids"])).sum())
        total += len(case["generated_ids"])
    lg = oracle["logits"]
    logits = model.logits(lg["prompt_ids"])
    for p in lg["per_position_top5"]:
        agree += int(logits[p["pos"]].argmax() == p["top5"][0][0])
        total += 1
    assert agree / total >= 0.97, f"top-1 agrees at {agree}/{total} positions"


def test_top5_logits_within_one(pair: tuple[corral.Model, dict]) -> None:
    model, oracle = pair
    lg = oracle["logits"]
    logits = model.logits(lg["prompt_ids"])
    worst = max(
        abs(float(logits[p["pos"], tid]) - val)
        for p in lg["per_position_top5"]
        for tid, val in p["top5"]
    )
    assert worst <= 1.0, f"largest top-5 logit difference {worst:.3f}"
    final = {t["id"] for t in lg["final_top10"][:5]}
    ours = set(np.argsort(-logits[-1])[:5].tolist())
    assert len(final & ours) >= 4


def test_prompt_tokens_as_llama_cpp(pair: tuple[corral.Model, dict]) -> None:
    model, oracle = pair
    for case in oracle["greedy"]["cases"]:
        assert (
            model.tokenize(case["prompt"], add_special=True, parse_special=True)
            == case["prompt_ids"]
        )


def test_greedy_generation_starts_as_llama_cpp(pair: tuple[corral.Model, dict]) -> None:
    """Free-running greedy decoding: exact equality over all 32 tokens is the performance
    issue's goal; here the opening tokens must agree (errors compound after a divergence)."""
    model, oracle = pair
    for case in oracle["greedy"]["cases"]:
        r = model.generate(case["prompt_ids"], max_tokens=8, temperature=0, ignore_eos=True)
        assert r.token_ids[:3] == case["generated_ids"][:3], case["prompt"]


def test_free_running_greedy_equals_llama_cpp(pair: tuple[corral.Model, dict]) -> None:
    """The performance issue's goal, exact greedy equality: every SmolLM2 case's 32 tokens
    are llama.cpp's (its integer kernels, attention summed in its orders, its rope table and
    fused rotation, its swiglu). Gemma 3's Q4_K weights go through llama.cpp's repacked
    kernels, whose sums corral does not order alike yet: there all cases but one."""
    model, oracle = pair
    cases = oracle["greedy"]["cases"]
    full = 0
    for case in cases:
        want = case["generated_ids"]
        r = model.generate(case["prompt_ids"], max_tokens=len(want), temperature=0, ignore_eos=True)
        full += int(r.token_ids == want)
    need = len(cases) if oracle["model"] == "smollm2" else len(cases) - 1
    assert full >= need, f"{full} of {len(cases)} cases equal over 32 tokens"


def test_smollm2_logits_are_llama_cpps_bits(smollm2_path: Path, oracle_smollm2: dict) -> None:
    """SmolLM2 (Q4_1: llama.cpp repacks none of its weights): every top-5 logit at every
    position of the logits prompt equals the oracle's (which are rounded to 5 decimals)."""
    model = corral.load(smollm2_path, n_ctx=512)
    lg = oracle_smollm2["logits"]
    logits = model.logits(lg["prompt_ids"])
    worst = max(
        abs(float(logits[p["pos"], tid]) - val)
        for p in lg["per_position_top5"]
        for tid, val in p["top5"]
    )
    assert worst <= 6e-6, f"largest top-5 logit difference {worst:.2e}"


def test_long_prompts_keep_llama_cpps_arithmetic_without_dense_routes(
    smollm2_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CORRAL_DENSE=0: every matmul stays on the integer kernels, so a 100-token prompt in
    one call gets the bits of the same prompt fed 10 tokens at a time (the route the short
    oracle prompts above pin to llama.cpp's); with the dense routes it does not."""
    from corral.models import weights

    ids = list(range(300, 400))

    def logits(dense: bool) -> tuple[np.ndarray, np.ndarray]:
        monkeypatch.setattr(weights, "_DENSE", dense)
        net = corral.load(smollm2_path, n_ctx=256).net
        whole = net.forward(torch.tensor([ids]), net.make_cache(256))[0]
        cache = net.make_cache(256)
        parts = [net.forward(torch.tensor([ids[i : i + 10]]), cache)[0] for i in range(0, 100, 10)]
        return whole.numpy(), torch.cat(parts).numpy()

    whole, parts = logits(dense=False)
    assert np.array_equal(whole, parts)
    whole, parts = logits(dense=True)
    assert not np.array_equal(whole, parts)
