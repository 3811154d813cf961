"""Shared primitives: weights kept compact, RMSNorm, RoPE, attention with GQA and windows.

Only stable pieces live here; each architecture's forward pass reads top to bottom in its own
file. Shape notes: B batch, T new tokens, S cached + new tokens, H heads, Hkv kv heads,
D head dim, E embedding width.
"""

from __future__ import annotations

import math
from enum import Enum

import torch
import torch.nn.functional as F

# Weights this large are multiplied in float16 rather than upcast (see Weight).
_HALF_MATMUL_ELEMENTS = 1 << 24


class ActQuant(Enum):
    """How llama.cpp rounds the activations that meet a weight of a given type: quantized
    weights are dotted with 8-bit-quantized activations (Q8_0 blocks of 32, or Q8_K blocks
    of 256 for the k-quants). Doing the same keeps our logits next to llama.cpp's."""

    NONE = 0
    Q8_0 = 1
    Q8_K = 2


def fake_quant_q8_0(x: torch.Tensor) -> torch.Tensor:
    """x [..., K] rounded as ggml's Q8_0 activations: per 32 values, d = amax/127 (stored
    as float16), q = round(x/d)."""
    b = x.reshape(-1, 32)
    d = b.abs().amax(-1, keepdim=True) / 127.0
    q = torch.round(b / torch.where(d > 0, d, 1.0))
    return (q * d.half().float()).reshape(x.shape)


def fake_quant_q8_k(x: torch.Tensor) -> torch.Tensor:
    """x [..., K] rounded as ggml's Q8_K activations: per 256 values, scale -128/max where
    max is the value of largest magnitude (sign kept), q clamped to 127."""
    b = x.reshape(-1, 256)
    mx = b.gather(-1, b.abs().argmax(-1, keepdim=True))
    iscale = torch.where(mx != 0, -128.0 / torch.where(mx != 0, mx, 1.0), 0.0)
    q = torch.clamp(torch.round(b * iscale), max=127.0)
    d = torch.where(iscale != 0, 1.0 / torch.where(iscale != 0, iscale, 1.0), 0.0)
    return (q * d).reshape(x.shape)


_FAKE_QUANT = {ActQuant.Q8_0: fake_quant_q8_0, ActQuant.Q8_K: fake_quant_q8_k}
# q/k/v (and gate/up) read the same input: quantize it once. Holding the input keeps it
# alive, so its identity cannot pass to another tensor meanwhile; model code never changes
# a matmul input in place (inference tensors carry no version counter to check that).
_last_quant: list[object] = [None, None, None]


def quantize_activations(x: torch.Tensor, kind: ActQuant) -> torch.Tensor:
    if kind is ActQuant.NONE:
        return x
    if _last_quant[0] is x and _last_quant[1] is kind:
        return _last_quant[2]  # type: ignore[return-value]
    out = _FAKE_QUANT[kind](x)
    _last_quant[:] = [x, kind, out]
    return out


class Weight:
    """A [out, in] weight stored in float16 (2 bytes a weight, against float32's 4).

    Inputs are first rounded as llama.cpp rounds them for this weight's type (`act`). Layer
    weights are upcast to float32 for the matmul: float16 outputs would cost accuracy that
    the parity tests notice. Matrices past `_HALF_MATMUL_ELEMENTS` (vocabulary heads) are
    multiplied in float16 (float32 accumulation, float16 result): upcasting Gemma's 262k x 640
    head would cost ten times its matmul, and a logit's rounding error (~0.01) is harmless.
    """

    def __init__(self, w16: torch.Tensor, act: ActQuant = ActQuant.NONE) -> None:
        self.w = w16  # [out, in] float16
        self.act = act
        self.half_matmul = w16.numel() >= _HALF_MATMUL_ELEMENTS

    @property
    def shape(self) -> torch.Size:
        return self.w.shape

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., in] float32 -> [..., out] float32."""
        x = quantize_activations(x, self.act)
        if self.half_matmul:
            return F.linear(x.half(), self.w).float()
        return F.linear(x, self.w.float())

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Embedding lookup: ids [...] -> [..., in] float32."""
        return self.w[ids].float()


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x [..., E] normalised by its root mean square, times weight [E]."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


class RopeStyle(Enum):
    """NORM rotates adjacent pairs (llama files, whose q/k rows GGUF stores permuted);
    NEOX rotates the first half against the second (gemma, qwen, ...)."""

    NORM = 0
    NEOX = 2


def rope_inv_freq(
    dim: int, base: float, freq_factors: torch.Tensor | None = None, scale: float = 1.0
) -> torch.Tensor:
    """Inverse frequencies [dim/2]; `freq_factors` divide them (llama 3.1's rope_freqs),
    `scale` multiplies positions (linear rope scaling)."""
    inv = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    if freq_factors is not None:
        inv = inv / freq_factors.double()
    return (inv * scale).float()


def rope_cos_sin(
    inv_freq: torch.Tensor, positions: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """positions [B, T] -> cos, sin [B, 1, T, D/2], broadcasting over heads (float64 angles
    keep long contexts exact)."""
    ang = positions.double()[..., None] * inv_freq.double()
    return ang.cos().float()[:, None], ang.sin().float()[:, None]


def apply_rope(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, style: RopeStyle
) -> torch.Tensor:
    """x [B, H, T, D]; cos/sin [B, 1, T, D/2]. Rotates the first 2 * D/2 dims."""
    rot = cos.shape[-1] * 2
    xr, rest = x[..., :rot], x[..., rot:]
    if style is RopeStyle.NORM:
        x0, x1 = xr[..., 0::2], xr[..., 1::2]
        out = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)
    else:
        half = rot // 2
        x0, x1 = xr[..., :half], xr[..., half:]
        out = torch.cat((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1)
    return torch.cat((out, rest), dim=-1) if rest.shape[-1] else out


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float
) -> torch.Tensor:
    """q [B, H, T, D], k/v [B, Hkv, S, D] -> [B, T, H*D]."""
    n_rep = q.shape[1] // k.shape[1]
    if n_rep > 1:
        k = k.repeat_interleave(n_rep, dim=1)
        v = v.repeat_interleave(n_rep, dim=1)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    b, h, t, d = out.shape
    return out.transpose(1, 2).reshape(b, t, h * d)


def default_scale(head_dim: int) -> float:
    return 1.0 / math.sqrt(head_dim)
