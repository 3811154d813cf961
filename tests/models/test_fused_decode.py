"""SmolLM2 (Q4_1, llama) and Gemma 3 270M (Q4_K_M: Q4_K/Q5_0/Q6_K/Q8_0 blocks, local and
global layers): the fused decode step gives the eager block loop's logits bit for bit, step
after step of a greedy generation, for one sequence and for slots decoded together."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import corral
from corral.engine.kv_cache import SlotBatch
from corral.kernels import decode
from corral.models import fused, layers, weights

pytestmark = [
    pytest.mark.realmodel,
    pytest.mark.skipif(
        not decode.available() or not weights._USE_KERNELS or layers._EXACT or not fused.ENABLED,
        reason="the fused decode step is off or not usable here",
    ),
]


@pytest.fixture(scope="module")
def net(smollm2_path: Path) -> Any:
    net = corral.load(smollm2_path, n_ctx=256).net
    assert net.fused is not None
    return net


def greedy(net: Any, fused: bool, prompt: list[int], steps: int) -> list[torch.Tensor]:
    """Logits [V] of each greedy step after `prompt`, on the fused step or the eager loop."""
    saved = net.fused
    net.fused = saved if fused else None
    try:
        cache = net.make_cache(128)
        logits = net.forward(torch.tensor([prompt]), cache, last_only=True)[0, -1]
        outs = [logits]
        for _ in range(steps):
            tok = torch.tensor([[int(logits.argmax())]])
            logits = net.forward(tok, cache, last_only=True)[0, -1]
            outs.append(logits)
        return outs
    finally:
        net.fused = saved


def slot_steps(
    net: Any, fused: bool, prompts: tuple[list[int], list[int]], first: list[int]
) -> list[torch.Tensor]:
    """Slots 1 and 0 prefilled with `prompts` (different lengths), then 8 greedy steps of
    both rows in one batch starting from tokens `first`: logits [2, V] per step."""
    saved = net.fused
    net.fused = saved if fused else None
    try:
        kv = net.make_cache(64, batch=2)
        net.forward(torch.tensor([prompts[0]]), kv.slot(1, 0))
        net.forward(torch.tensor([prompts[1]]), kv.slot(0, 0))
        offsets, outs = [len(prompts[0]), len(prompts[1])], []
        toks = torch.tensor([[t] for t in first])
        for _ in range(8):
            logits = net.forward(toks, SlotBatch(kv, [1, 0], offsets))[:, -1]
            outs.append(logits)
            toks = logits.argmax(-1, keepdim=True)
            offsets = [o + 1 for o in offsets]
        return outs
    finally:
        net.fused = saved


def assert_bit_identical(fused: list[torch.Tensor], eager: list[torch.Tensor]) -> None:
    for i, (a, b) in enumerate(zip(fused, eager, strict=True)):
        assert torch.equal(a, b), f"step {i}: largest difference {(a - b).abs().max().item()}"


def test_smollm2_fused_decode_is_bit_identical(net: Any) -> None:
    prompt = [1, 504, 3458, 282, 260, 5382, 7115, 314]
    assert_bit_identical(greedy(net, True, prompt, 24), greedy(net, False, prompt, 24))


def test_smollm2_fused_slot_batch_is_bit_identical(net: Any) -> None:
    prompts, first = ([1, 504, 3458, 282], [1, 260]), [314, 7115]
    assert_bit_identical(
        slot_steps(net, True, prompts, first), slot_steps(net, False, prompts, first)
    )


@pytest.fixture(scope="module")
def gemma(gemma3_path: Path) -> Any:
    net = corral.load(gemma3_path, n_ctx=256).net
    assert net.fused is not None
    return net


def test_gemma3_fused_decode_is_bit_identical(gemma: Any) -> None:
    # the prompt itself (8 tokens) goes through the fused step too
    prompt = [2, 818, 5279, 529, 7001, 563, 496, 3207]
    assert_bit_identical(greedy(gemma, True, prompt, 24), greedy(gemma, False, prompt, 24))


def test_gemma3_fused_slot_batch_is_bit_identical(gemma: Any) -> None:
    prompts, first = ([2, 818, 5279, 529, 7001], [2, 563]), [496, 3207]
    assert_bit_identical(
        slot_steps(gemma, True, prompts, first), slot_steps(gemma, False, prompts, first)
    )
