"""The CPU prompt attention in blocks of query rows (models.layers._attention_blocks)
against the unblocked formula it replaced: causal and sliding-window masks, batch rows with
their own padding, prompts that continue a cache (offset > 0), prompts shorter than a block;
and the gated GELU of the prompt MLP (layers.gelu_tanh_mul)."""

from __future__ import annotations

import pytest
import torch

from corral.models import layers


def unblocked(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float
) -> torch.Tensor:
    """The formula before blocking, verbatim: q [B, H, T, D], k/v [B, Hkv, S, D] ->
    [B, T, H*D]."""
    b, h, t, d = q.shape
    hkv = k.shape[1]
    r = h // hkv
    qg = layers.round_f16(q).reshape(b, hkv, r * t, d)
    scores = (qg @ k.transpose(-1, -2)).view(b, h, t, -1)
    scores.mul_(scale)
    if mask is not None:
        scores.masked_fill_(~mask, float("-inf"))
    p = layers.round_f16(scores.softmax(-1), inplace=True)
    out = (p.view(b, hkv, r * t, -1) @ v).view(b, h, t, d)
    return out.transpose(1, 2).reshape(b, t, h * d)


def causal_mask(
    t: int, offset: int, window: int | None, pad: list[int] | None = None
) -> torch.Tensor:
    """[B|1, 1, T, offset+T]: query i (at position offset+i) sees keys j <= offset+i, within
    `window` when given; batch row b also skips its first pad[b] keys (left padding)."""
    s = offset + t
    qpos = torch.arange(offset, s)[:, None]
    kpos = torch.arange(s)[None, :]
    m = kpos <= qpos
    if window is not None:
        m &= (qpos - kpos) < window
    m = m[None, None]
    if pad is not None:
        m = m & (kpos >= torch.tensor(pad)[:, None, None, None])
    return m


@pytest.mark.skipif(not layers._ROWOPS or layers._EXACT, reason="the llama.cpp route")
@pytest.mark.parametrize(
    "b,t,offset,window,pad",
    [
        (1, 512, 0, None, None),  # a 512-token prompt, global layer
        (1, 300, 0, 128, None),  # sliding window shorter than the prompt; a ragged last block
        (1, 200, 250, None, None),  # continuing a cache
        (1, 200, 250, 96, None),  # continuing a cache, in a window
        (2, 160, 0, None, [0, 37]),  # two batch rows, one left-padded
        (2, 130, 40, 64, [5, 0]),  # batch, offset, window, padding together
        (1, 40, 10, None, None),  # shorter than a block: the unblocked route
    ],
)
def test_blocked_matches_unblocked(
    b: int, t: int, offset: int, window: int | None, pad: list[int] | None
) -> None:
    torch.manual_seed(t + offset)
    h, hkv, d = 4, 1, 64
    q = torch.randn(b, t, h, d).transpose(1, 2)  # [B, H, T, D], strided as a model makes it
    k = torch.randn(b, hkv, offset + t, d).half().float()  # the cache's float16 values
    v = torch.randn(b, hkv, offset + t, d).half().float()
    mask = causal_mask(t, offset, window, pad)
    want = unblocked(q, k, v, mask, 0.125)
    got = layers.attention(q, k, v, mask, 0.125)
    assert got.shape == want.shape == (b, t, h * d)
    # masked keys add exact zeros; only the order of the float32 sums may differ
    torch.testing.assert_close(got, want, rtol=0, atol=2e-6, equal_nan=True)  # NaN: no key


@pytest.mark.skipif(not layers._ROWOPS or layers._EXACT, reason="the llama.cpp route")
def test_blocked_heads_and_groups() -> None:
    """Several kv heads with grouped queries (r = 2), and a per-head mask."""
    torch.manual_seed(0)
    b, h, hkv, t, d = 1, 8, 4, 150, 32
    q = torch.randn(b, h, t, d)
    k = torch.randn(b, hkv, t, d).half().float()
    v = torch.randn(b, hkv, t, d).half().float()
    mask = causal_mask(t, 0, None)
    torch.testing.assert_close(
        layers.attention(q, k, v, mask, 0.2), unblocked(q, k, v, mask, 0.2), rtol=0, atol=2e-6
    )
    per_head = mask.expand(b, h, t, t).clone()
    per_head[:, 1::2] &= causal_mask(t, 0, 50)  # odd heads: a window
    torch.testing.assert_close(
        layers.attention(q, k, v, per_head, 0.2),
        unblocked(q, k, v, per_head, 0.2),
        rtol=0,
        atol=2e-6,
    )


def test_gelu_tanh_mul_is_the_product() -> None:
    """The gated GELU in one pass (models.layers.gelu_tanh_mul, Gemma 3's MLP) equals
    gelu_tanh(x) * gate bit for bit: the same float32 product."""
    torch.manual_seed(0)
    x = torch.randn(3, 70, 2048) * 6  # past +-10 too: ggml's exact tails
    gate = torch.randn(3, 70, 2048)
    assert torch.equal(layers.gelu_tanh_mul(x, gate), layers.gelu_tanh(x) * gate)
