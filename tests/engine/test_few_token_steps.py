"""A step of a few new tokens gives each row the bits a one-token step would: the property
that lets speculative decoding verify a draft without changing a greedy choice."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from gguf import GGMLQuantizationType as Q

import corral
from corral.engine.kv_cache import DECODE_MAX_T, KVCache, SlotBatch
from corral.kernels import attention


@pytest.mark.skipif(not attention.available(), reason="corral._attn not built")
@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_rows_of_a_multi_token_step_equal_single_steps(tmp_path: Path, arch: str) -> None:
    from tiny_gguf import write_tiny

    path = write_tiny(tmp_path / "m.gguf", arch=arch, qtype=Q.Q8_0, n_embd=64, sliding_window=8)
    net = corral.load(path).net
    prompt = torch.tensor([[5, 9, 11, 3, 7, 12, 4, 8, 10, 6]])
    draft = [13, 14, 15, 16, 17]
    one = net.make_cache(64)
    net.forward(prompt, one)
    singles = [net.forward(torch.tensor([[t]]), one)[0, -1] for t in draft]
    many = net.make_cache(64)
    net.forward(prompt, many)
    batch = net.forward(torch.tensor([draft]), many)[0]
    assert torch.equal(batch, torch.stack(singles))
    assert many.offset == one.offset


@pytest.mark.skipif(not attention.available(), reason="corral._attn not built")
def test_slot_batch_few_tokens_match_the_torch_route() -> None:
    torch.manual_seed(0)
    kv = KVCache(1, 2, 16, 40, batch=3)
    for buf in kv.k + kv.v:
        buf.copy_(torch.randn_like(buf, dtype=torch.float32).half())
    q = torch.randn(2, 4, 3, 16)
    k, v = torch.randn(2, 2, 3, 16), torch.randn(2, 2, 3, 16)
    fast = SlotBatch(kv, [2, 0], [5, 11]).decode_attention(0, q, k, v, 0.25, None, False)
    assert fast is not None and fast.shape == (2, 3, 64)
    from corral.models.layers import attention as torch_attention

    view = SlotBatch(kv, [2, 0], [5, 11])
    ks, vs = view.update_and_fetch(0, k, v)
    want = torch_attention(q, ks, vs, view.mask(3, None), 0.25)
    # both round the query and the weights to float16; sums differ in order only
    torch.testing.assert_close(fast, want, atol=2e-3, rtol=1e-3)
    assert DECODE_MAX_T >= 8
