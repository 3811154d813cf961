"""Shared primitives: RMSNorm, RoPE, attention with GQA and windows.

Only stable pieces live here; each architecture's forward pass reads top to bottom in its own
file. Shape notes: B batch, T new tokens, S cached + new tokens, H heads, Hkv kv heads,
D head dim, E embedding width.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from enum import Enum

import torch
import torch.nn.functional as F

from corral.kernels import rowops

# CORRAL_EXACT=1: plain float32 everywhere (none of llama.cpp's float16 roundings below), for
# comparing with reference implementations such as transformers.
_EXACT = os.environ.get("CORRAL_EXACT", "") not in ("", "0")
_ROWOPS = rowops.available()


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x [..., E] normalised by its root mean square, times weight [E] (float32 inside;
    the result has x's dtype).

    On the CPU as ggml computes it, in one C call (kernels.rowops): squares summed in
    float64, the mean rounded to float32, 1 / sqrtf(mean + eps). Elsewhere (GPUs,
    CORRAL_EXACT, no extension) in torch's float32."""
    if (
        _ROWOPS
        and x.dtype == torch.float32
        and x.device.type == "cpu"
        and not _EXACT
        and weight.numel() == x.shape[-1]
    ):
        return rowops.rms_norm(x, weight, eps)
    xf = x.float()
    if x.device.type != "cpu" and weight.numel() == x.shape[-1]:
        # GPUs: torch's one-kernel norm (the formula below is five launches per norm)
        return F.rms_norm(xf, (xf.shape[-1],), weight, eps).to(x.dtype)
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * weight).to(x.dtype)


class RopeStyle(Enum):
    """NORM rotates adjacent pairs (llama files, whose q/k rows GGUF stores permuted);
    NEOX rotates the first half against the second (gemma, qwen, ...)."""

    NORM = 0
    NEOX = 2


@dataclass(frozen=True)
class RopeFreqs:
    """What a model's rope angles are made from: `inv_freq` [dim/2] (on the model's device)
    for GPUs and CORRAL_EXACT, and llama.cpp's own recipe (base, dims, factors, scale) for
    the CPU tables, which must have its float32 bits (see rope_cos_sin)."""

    inv_freq: torch.Tensor
    base: float
    dim: int
    freq_factors: torch.Tensor | None
    scale: float


def rope_inv_freq(
    dim: int,
    base: float,
    freq_factors: torch.Tensor | None = None,
    scale: float = 1.0,
    device: torch.device | str = "cpu",
) -> RopeFreqs:
    """The rope frequencies of `dim` rotated dims; `freq_factors` divide them (llama 3.1's
    rope_freqs), `scale` multiplies positions (linear rope scaling)."""
    inv = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    ff = None
    if freq_factors is not None:
        ff = freq_factors.detach().to("cpu", torch.float32)
        inv = inv / ff.double()
    return RopeFreqs((inv * scale).float().to(device), float(base), dim, ff, float(scale))


def rope_cos_sin(
    freqs: RopeFreqs | torch.Tensor, positions: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """positions [B, T] -> cos, sin [B, 1, T, D/2], broadcasting over heads.

    On the CPU as llama.cpp makes them (kernels.rowops.rope_table: float32 angles grown by
    repeated products, libm's cosf/sinf), whose last bits the logits depend on; elsewhere
    (GPUs, CORRAL_EXACT, no extension, or bare inverse frequencies) from float64 angles."""
    if isinstance(freqs, RopeFreqs):
        if _ROWOPS and not _EXACT and positions.device.type == "cpu":
            cos, sin = rowops.rope_table(
                positions, freqs.dim // 2, freqs.base, freqs.dim, freqs.scale, freqs.freq_factors
            )
            return cos[:, None], sin[:, None]
        inv_freq = freqs.inv_freq
    else:
        inv_freq = freqs
    ang = positions.double()[..., None] * inv_freq.double()
    return ang.cos().float()[:, None], ang.sin().float()[:, None]


def apply_rope(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, style: RopeStyle
) -> torch.Tensor:
    """x [B, H, T, D]; cos/sin [B, 1, T, D/2]. Rotates the first 2 * D/2 dims (on the CPU
    in one C call with ggml's fused multiply-adds; the torch formula below rounds every
    product, so its last bits may differ)."""
    if _ROWOPS and x.dtype == torch.float32 and x.device.type == "cpu" and cos.dtype == x.dtype:
        return rowops.rope(x, cos, sin, style is RopeStyle.NEOX)
    rot = cos.shape[-1] * 2
    if x.device.type != "cpu" and style is RopeStyle.NORM and rot == x.shape[-1]:
        return rope_complex(x, cos, sin)
    xr, rest = x[..., :rot], x[..., rot:]
    if style is RopeStyle.NORM:
        x0, x1 = xr[..., 0::2], xr[..., 1::2]
        out = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)
    else:
        half = rot // 2
        x0, x1 = xr[..., :half], xr[..., half:]
        out = torch.cat((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1)
    out = out.to(x.dtype)
    return torch.cat((out, rest), dim=-1) if rest.shape[-1] else out


def rope_complex(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """NORM-style rope over all of x's D dims as one complex product (adjacent pairs are a
    complex number's parts): four launches on a GPU where the formula in `apply_rope` takes
    about nine. Same float32 arithmetic; x [B, H, T, D], cos/sin [B, 1, T, D/2]."""
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))  # [B, H, T, D/2]
    return torch.view_as_real(xc * torch.complex(cos, sin)).flatten(-2).to(x.dtype)


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GELU (tanh form) as ggml computes it on the CPU: looked up in a float16 table, so
    input and output are float16-rounded; exact (x or 0) past +-10. Plain GELU on GPUs."""
    if x.device.type != "cpu" or _EXACT:
        return F.gelu(x, approximate="tanh")
    if _ROWOPS and x.dtype == torch.float32:
        return rowops.gelu(x)  # ggml's own table, in one C call
    y = F.gelu(x.half().float(), approximate="tanh").half().float()
    return torch.where(x >= 10.0, x, torch.where(x <= -10.0, torch.zeros_like(x), y))


def gelu_tanh_mul(x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """gelu_tanh(x) * gate (x, gate the same shape): the gated MLP's product in one C pass
    on the CPU where the row-op kernels are built (the same float32 product, without a
    second pass over a prompt's [T, F] activations and a temporary the size of x)."""
    if (
        _ROWOPS
        and not _EXACT
        and x.device.type == "cpu"
        and x.dtype == gate.dtype == torch.float32
        and x.shape == gate.shape
    ):
        return rowops.gelu(x, gate)
    return gelu_tanh(x) * gate


# Query rows per block of a CPU prompt's attention (`attention`): each block scores only the
# keys its rows' mask lets in, so a causal prompt skips the upper triangle (about half the
# products and softmax work at 512 tokens) and a sliding window skips keys behind it.
# Smaller blocks skip more but cost more calls per layer: at 512 tokens (Gemma 3 270M's
# shapes) 128 measured best, 64 close, 32 no faster than no blocks at all.
ATTN_BLOCK = 128


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float
) -> torch.Tensor:
    """q [B, H, T, D], k/v [B, Hkv, S, D] -> [B, T, H*D].

    Rounds as llama.cpp's CPU attention does: queries meet the float16 keys as float16, and
    the softmax weights meet the float16 values as float16. Without this our logits drift
    from llama.cpp's by up to twice as much.

    On the CPU a prompt longer than ATTN_BLOCK goes in blocks of query rows, each over the
    span of keys its mask rows allow (`_attention_blocks`): the same formula, its sums only
    shorter (masked keys add exact zeros, so only the float summation order may change).
    """
    b, h, t, d = q.shape
    hkv = k.shape[1]
    r = h // hkv
    if q.device.type != "cpu":  # GPUs: torch's fused kernels, no llama.cpp emulation
        return sdpa_attention(q, k, v, mask, scale)
    qr = q if _EXACT else round_f16(q)
    if mask is not None and t > ATTN_BLOCK and mask.shape[-2:] == (t, k.shape[2]):
        return _attention_blocks(qr, k, v, mask, scale)  # a mask per query row and key
    # the r query heads of a group share one kv head: fold them into the query axis
    return (
        _attention_rows(qr.reshape(b, hkv, r * t, d), k, v, mask, scale, h)
        .view(b, h, t, d)
        .transpose(1, 2)
        .reshape(b, t, h * d)
    )


def _attention_rows(
    qg: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float,
    h: int,
) -> torch.Tensor:  # fmt: skip
    """The CPU formula on grouped queries: qg [B, Hkv, r*T, D] (the r query heads of a group
    folded into the rows, float16-rounded unless exact), k/v [B, Hkv, S, D], mask
    broadcastable to [B, H, T, S] or None, h = H query heads -> [B, Hkv, r*T, D]."""
    b, hkv, rt, _ = qg.shape
    scores = qg @ k.transpose(-1, -2)  # [B, Hkv, r*T, S], a new tensor
    scores.mul_(scale)  # in place from here on: a prompt's scores are the largest tensor
    if mask is not None:
        t = rt * hkv // h  # query rows: the mask meets the scores as [B, H, T, S]
        scores.view(b, h, t, scores.shape[-1]).masked_fill_(~mask, float("-inf"))
    p = scores.softmax(-1)
    if not _EXACT:
        p = round_f16(p, inplace=True)
    return p @ v


def _attention_blocks(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float
) -> torch.Tensor:
    """`attention` (CPU) in blocks of ATTN_BLOCK query rows: q [B, H, T, D] (already
    float16-rounded unless exact), k/v [B, Hkv, S, D], mask broadcastable to [B, H, T, S]
    -> [B, T, H*D]. Each block attends to keys [lo, hi): the first to the last key any of
    its rows (in any batch row or head) may see; a block whose rows see no key at all keeps
    every key, so it yields what the unblocked formula yields (NaN rows)."""
    b, h, t, d = q.shape
    hkv = k.shape[1]
    r = h // hkv
    s = k.shape[2]
    # which keys each query row may see, in any batch row or head: [T, S]
    seen = mask.expand(*mask.shape[:-2], t, s).reshape(-1, t, s).any(dim=0)
    out = q.new_empty(b, t, h, d)  # [B, T, H, D]: the blocks land in place
    for i0 in range(0, t, ATTN_BLOCK):
        i1 = min(i0 + ATTN_BLOCK, t)
        cols = seen[i0:i1].any(dim=0).nonzero()  # [n, 1]: keys some row of the block sees
        lo, hi = (int(cols[0]), int(cols[-1]) + 1) if len(cols) else (0, s)
        qg = q[:, :, i0:i1].reshape(b, hkv, r * (i1 - i0), d)  # [B, Hkv, r*c, D], a copy
        m = mask[..., i0:i1, lo:hi]
        o = _attention_rows(qg, k[:, :, lo:hi], v[:, :, lo:hi], m, scale, h)
        out[:, i0:i1] = o.view(b, h, i1 - i0, d).transpose(1, 2)
    return out.view(b, t, h * d)


def sdpa_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float
) -> torch.Tensor:
    """`attention` by torch's fused kernels (the GPU route): q [B, H, T, D], k/v
    [B, Hkv, S, D] -> [B, T, H*D]."""
    b, h, t, d = q.shape
    hkv = k.shape[1]
    r = h // hkv
    if r > 1 and t == 1 and (mask is None or mask.shape[1] == 1):
        # one new token: a group's r query heads become r query rows of its kv head
        # (no copy of the cache; the mask [B, 1, 1, S] is the same for every row)
        out = F.scaled_dot_product_attention(
            q.reshape(b, hkv, r, d), k, v, attn_mask=mask, scale=scale
        )  # [B, Hkv, r, D]
        return out.reshape(b, 1, h * d)
    if r > 1:
        k, v = k.repeat_interleave(r, dim=1), v.repeat_interleave(r, dim=1)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    return out.transpose(1, 2).reshape(b, t, h * d)


def swiglu(g: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """silu(g) * u: on the CPU as ggml computes it (kernels.rowops.swiglu: its vector exp), in
    torch elsewhere (GPUs, CORRAL_EXACT, no extension)."""
    if _ROWOPS and not _EXACT and g.device.type == "cpu" and g.dtype == u.dtype == torch.float32:
        return rowops.swiglu(g, u)
    return F.silu(g) * u


def last_rows(x: torch.Tensor, cut: bool) -> torch.Tensor:
    """x [B, T, E] cut to each sequence's last row ([B, 1, E]) when `cut`: a forward that only
    wants the last logits does so before its last block's feed-forward half, as llama.cpp's
    graphs do (inp_out_ids), since its matmul kernels and sums depend on the row count."""
    return x[:, -1:] if cut else x


def round_f16(x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """x float32 rounded to float16 precision (`x.half().float()`), in one C pass where the
    row-op kernels are built; in place when asked and x is contiguous."""
    if not _ROWOPS or x.dtype is not torch.float32:
        return x.half().to(x.dtype)
    if inplace and x.is_contiguous():
        return rowops.round_f16(x, out=x)
    return rowops.round_f16(x)


def cached_attention(
    cache: object, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
    mask: torch.Tensor | None, scale: float, window: int | None = None,
) -> torch.Tensor:  # fmt: skip
    """Store k/v [B, Hkv, T, D] in `cache` and attend q [B, H, T, D] -> [B, T, H*D].

    A decode step (or a few new tokens) on the CPU reads the float16 cache in place (C kernel,
    through the cache's `decode_attention`); otherwise the cache hands back its keys/values for
    `attention`. `mask` must be cache.mask(T, window): the C route applies `window` itself.
    """
    fast = getattr(cache, "decode_attention", None)
    if fast is not None:
        out = fast(layer, q, k, v, scale, window, _EXACT)
        if out is not None:
            return out
    k, v = cache.update_and_fetch(layer, k, v)  # type: ignore[attr-defined]
    return attention(q, k, v, mask, scale)


def default_scale(head_dim: int) -> float:
    return 1.0 / math.sqrt(head_dim)
