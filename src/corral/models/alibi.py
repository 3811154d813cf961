"""ALiBi attention (bloom, mpt): no rope; each head adds slope * key position to its scores.

Slopes follow llama.cpp (and Press et al.): with n2 the largest power of two <= H and
max_bias b, head h < n2 gets 2^(-b (h+1) / n2), and the heads past n2 get the odd powers of
2^(-b / (2 n2)). Adding slope * key_position rather than slope * (key - query) changes each
softmax row by a constant only, so it is the same attention.
"""

from __future__ import annotations

import math

import torch

from corral.models import layers


def alibi_slopes(n_head: int, max_bias: float) -> torch.Tensor:
    """Per-head slopes [H]."""
    n2 = 2 ** math.floor(math.log2(n_head))
    m0 = 2.0 ** (-max_bias / n2)
    m1 = 2.0 ** (-(max_bias / 2.0) / n2)
    return torch.tensor(
        [m0 ** (h + 1) if h < n2 else m1 ** (2 * (h - n2) + 1) for h in range(n_head)],
        dtype=torch.float32,
    )


def alibi_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float,
    slopes: torch.Tensor,
) -> torch.Tensor:
    """q [B, H, T, D], k/v [B, Hkv, S, D] (key j at position j) -> [B, T, H*D].

    Rounds queries and softmax weights to float16 as `layers.attention` does on the CPU
    (llama.cpp's arithmetic), except in CORRAL_EXACT mode.
    """
    b, h, t, d = q.shape
    r = h // k.shape[1]
    if r > 1:
        k, v = k.repeat_interleave(r, dim=1), v.repeat_interleave(r, dim=1)
    exact = layers._EXACT or q.device.type != "cpu"
    qr = q if exact else q.half().float()
    pos = torch.arange(k.shape[2], device=q.device, dtype=torch.float32)
    scores = (qr @ k.transpose(-1, -2).to(q.dtype)) * scale  # [B, H, T, S]
    scores = scores + (slopes.to(q.device)[:, None, None] * pos).to(scores.dtype)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    p = scores.float().softmax(-1)
    p = (p if exact else p.half().float()).to(v.dtype)
    return (p @ v).transpose(1, 2).reshape(b, t, h * d)
