"""Parity with llama.cpp on the two real models (../shared/oracles).

The core-runtime issue's floor was top-1 agreement at >= 97% of positions and every top-5
logit within 1.0; the performance issue's goal, met here, is llama.cpp's exact arithmetic:
its logits to the oracle's last printed decimal, its greedy tokens all the way, teacher-forced
top-1 at every position.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import corral
from corral.engine.kv_cache import generated_tokens

pytestmark = pytest.mark.realmodel


@pytest.fixture(scope="module", params=["smollm2", "gemma3"])
def pair(request: pytest.FixtureRequest) -> tuple[corral.Model, dict]:
    path: Path = request.getfixturevalue(f"{request.param}_path")
    oracle = request.getfixturevalue(f"oracle_{request.param}")
    return corral.load(path, n_ctx=512), oracle


def test_top1_agreement_teacher_forced(pair: tuple[corral.Model, dict]) -> None:
    """llama.cpp's 32 greedy tokens fed after the prompt in one pass, as generated tokens
    (generated_tokens: each computed as its own one-token step, which is how llama.cpp made
    them; fed as more prompt, llama.cpp's own batch kernels would sum them otherwise)."""
    model, oracle = pair
    net = model.net
    agree = total = 0
    for case in oracle["greedy"]["cases"]:
        prompt, gen = case["prompt_ids"], case["generated_ids"]
        cache = net.make_cache(len(prompt) + len(gen))
        first = net.forward(torch.tensor([prompt]), cache, last_only=True)[0, -1]
        with generated_tokens(cache):
            rest = net.forward(torch.tensor([gen[:-1]]), cache)[0]
        pred = torch.cat([first[None], rest]).argmax(-1).numpy()
        agree += int((pred == np.array(gen)).sum())
        total += len(gen)
    lg = oracle["logits"]
    logits = model.logits(lg["prompt_ids"])
    for p in lg["per_position_top5"]:
        agree += int(logits[p["pos"]].argmax() == p["top5"][0][0])
        total += 1
    assert agree == total, f"top-1 agrees at {agree}/{total} positions"


def test_logits_are_llama_cpps_bits(pair: tuple[corral.Model, dict]) -> None:
    """Every top-5 logit at every position of the logits prompt equals llama.cpp's (the
    oracle rounds them to 5 decimals), and so do the final position's top-10 ids."""
    model, oracle = pair
    lg = oracle["logits"]
    logits = model.logits(lg["prompt_ids"])
    worst = max(
        abs(float(logits[p["pos"], tid]) - val)
        for p in lg["per_position_top5"]
        for tid, val in p["top5"]
    )
    assert worst <= 6e-6, f"largest top-5 logit difference {worst:.2e}"
    final = [t["id"] for t in lg["final_top10"]]
    assert np.argsort(-logits[-1], kind="stable")[:10].tolist() == final


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
    """The performance issue's goal, exact greedy equality: every case's 32 tokens are
    llama.cpp's (its integer kernels in the order its AVX2 build picks, attention summed in
    its orders, its rope table and fused rotation, its swiglu and GELU)."""
    model, oracle = pair
    for case in oracle["greedy"]["cases"]:
        want = case["generated_ids"]
        r = model.generate(case["prompt_ids"], max_tokens=len(want), temperature=0, ignore_eos=True)
        assert r.token_ids == want, (case["prompt"], r.token_ids, want)


def test_long_prompts_keep_llama_cpps_arithmetic_without_dense_routes(
    smollm2_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CORRAL_DENSE=0: every matmul stays on the integer kernels, so a 100-token prompt in
    one call gets the bits of the same prompt fed 10 tokens at a time (the route the short
    oracle prompts above pin to llama.cpp's); with the dense routes it does not."""
    from corral import kernels

    ids = list(range(300, 400))

    def logits(dense: bool) -> tuple[np.ndarray, np.ndarray]:
        monkeypatch.setattr(kernels, "DENSE", dense)
        net = corral.load(smollm2_path, n_ctx=256).net
        whole = net.forward(torch.tensor([ids]), net.make_cache(256))[0]
        cache = net.make_cache(256)
        parts = [net.forward(torch.tensor([ids[i : i + 10]]), cache)[0] for i in range(0, 100, 10)]
        return whole.numpy(), torch.cat(parts).numpy()

    whole, parts = logits(dense=False)
    assert np.array_equal(whole, parts)
    whole, parts = logits(dense=True)
    assert not np.array_equal(whole, parts)
