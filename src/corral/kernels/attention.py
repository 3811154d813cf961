"""Decode-step attention over the float16 KV cache, in C (`corral._attn`).

One new query per sequence attends to that sequence's cached keys and values where they lie
in the cache buffers, with llama.cpp's CPU roundings (query and softmax weights meet the
float16 cache as float16). Prompts (several new tokens) keep to torch (`models.layers`).
`available()` is False where the extension could not be built; callers then use torch.
"""

from __future__ import annotations

import torch

try:  # torch first: its libgomp then also serves our OpenMP
    from corral import _attn as _ext
except ImportError:  # pragma: no cover - the extension is built by pip install
    _ext = None

__all__ = ["available", "decode_attention"]


def available() -> bool:
    """Whether the C extension is importable."""
    return _ext is not None


def decode_attention(
    q: torch.Tensor,
    k_buf: torch.Tensor,
    v_buf: torch.Tensor,
    slots: torch.Tensor,
    lengths: torch.Tensor,
    scale: float,
    window: int | None = None,
    *,
    exact: bool = False,
    n_threads: int | None = None,
    checked_max: int | None = None,
    one_token: bool = False,
    _scalar: bool = False,
) -> torch.Tensor:
    """q [B, H, 1, D] float32; k_buf/v_buf [slots, Hkv, L, D] float16 (one layer's cache,
    unit stride on D); slots/lengths int64 [B]: sequence b lives in buffer row slots[b] and
    has lengths[b] positions, the new one included (already written). -> [B, 1, H*D].

    `window`: only the last `window` positions are visible. `exact`: no float16 roundings.
    `checked_max`: max(lengths), from a caller that checked it against the buffers once per
    step (the KV caches); saves a reduction and a host sync per layer. `one_token`: sum in
    the order llama.cpp uses for one-token batches (ggml_vec_dot_f16) rather than for prompt
    batches (tinyBLAS); the two differ in last bits (see attention.c).
    """
    if _ext is None:
        raise RuntimeError("corral._attn is not built (reinstall corral: pip install -e .)")
    b, h, t, d = q.shape
    if t != 1:
        raise ValueError(f"decode_attention takes one new token per sequence, got {t}")
    if k_buf.dtype != torch.float16 or v_buf.dtype != torch.float16:
        raise ValueError("decode_attention reads a float16 cache")
    if k_buf.stride() != v_buf.stride() or k_buf.stride(-1) != 1:
        raise ValueError("k and v buffers must share strides, with unit stride on D")
    hkv = k_buf.shape[1]
    longest = (
        checked_max if checked_max is not None else int(lengths.max()) if lengths.numel() else 0
    )
    if longest > k_buf.shape[2]:
        raise IndexError("KV cache slot is full")
    qc = q.reshape(b, h, d).to(torch.float32).contiguous()
    slots = slots.to(torch.int64).contiguous()
    lengths = lengths.to(torch.int64).contiguous()
    out = torch.empty(b, 1, h * d, dtype=torch.float32)
    s_slot, s_head, s_pos, _ = k_buf.stride()
    _ext.decode(
        qc.data_ptr(),
        k_buf.data_ptr(),
        v_buf.data_ptr(),
        out.data_ptr(),
        slots.data_ptr(),
        lengths.data_ptr(),
        b,
        h,
        hkv,
        d,
        s_slot,
        s_head,
        s_pos,
        window or 0,
        float(scale),
        int(exact),
        torch.get_num_threads() if n_threads is None else int(n_threads),
        int(_scalar),
        int(one_token),
    )
    return out
