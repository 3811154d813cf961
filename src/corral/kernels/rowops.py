"""Per-row ops in C (`corral._rowops`), each one call instead of the 6-10 torch ops it costs
in a decode step, computed as llama.cpp's CPU backend computes them: RMS norm, rotary
embedding and its cos/sin table, ggml's table GELU and its SwiGLU. `available()` is False
where the extension could not be built; corral.models.layers then computes them in torch
(same formulas, not always the same last bits)."""

from __future__ import annotations

import torch

try:  # torch first (shared OpenMP runtime, as the other extensions)
    from corral import _rowops as _ext
except ImportError:  # pragma: no cover - the extension is built by pip install
    _ext = None

__all__ = ["available", "gelu", "rms_norm", "rope", "rope_table", "round_f16", "swiglu"]


_nth = torch.get_num_threads  # prompt-sized calls split their rows over torch's threads


def available() -> bool:
    """Whether the C extension is importable."""
    return _ext is not None


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    """x [..., n] float32 CPU -> (x * 1/sqrt(mean(x^2) + eps)) * weight, as ggml computes it
    (squares summed in float64, mean rounded to float32). weight [n] float32 or None."""
    assert _ext is not None
    n = x.shape[-1]
    xc = x.contiguous()
    out = torch.empty_like(xc)
    w = 0
    if weight is not None:
        weight = weight.contiguous()
        w = weight.data_ptr()
    _ext.rms_norm(
        xc.data_ptr(), w, out.data_ptr(), xc.numel() // n if n else 0, n, float(eps), _nth()
    )
    return out


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, neox: bool) -> torch.Tensor:
    """x [B, H, T, D] float32 CPU; cos/sin [B, 1, T, R/2] -> x with its first R dims of
    each head rotated (NEOX: i with i + R/2; else 2i with 2i + 1), in a new tensor."""
    assert _ext is not None
    b, h, t, d = x.shape
    xc = x.contiguous()
    c = cos.expand(b, 1, t, cos.shape[-1]).contiguous()
    s = sin.expand(b, 1, t, sin.shape[-1]).contiguous()
    out = torch.empty_like(xc)
    _ext.rope(
        xc.data_ptr(), c.data_ptr(), s.data_ptr(), out.data_ptr(), b, h, t, d, 2 * c.shape[-1],
        int(neox), _nth(),
    )  # fmt: skip
    return out


def rope_table(
    positions: torch.Tensor, n_pairs: int, base: float, n_dims: int, freq_scale: float = 1.0,
    freq_factors: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """cos, sin [*positions.shape, n_pairs] float32 for integer positions, as ggml's rope
    makes them: pair i of position p turns by freq_scale * (theta_i / freq_factors[i]), with
    theta_0 = p and each next theta the last times powf(base, -2 / n_dims), in float32."""
    assert _ext is not None
    pos = positions.to(torch.int64).contiguous()
    cos = torch.empty(*pos.shape, n_pairs)
    sin = torch.empty(*pos.shape, n_pairs)
    ff = 0
    if freq_factors is not None:
        freq_factors = freq_factors.to(torch.float32).contiguous()
        if freq_factors.numel() < n_pairs:
            raise ValueError(f"{freq_factors.numel()} rope frequency factors for {n_pairs} pairs")
        ff = freq_factors.data_ptr()
    _ext.rope_table(
        pos.data_ptr(), pos.numel(), n_pairs, float(base), n_dims, float(freq_scale), ff,
        cos.data_ptr(), sin.data_ptr(),
    )  # fmt: skip
    return cos, sin


def swiglu(g: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """silu(g) * u for float32 CPU tensors of one shape, as ggml's swiglu computes it (its
    AVX2 vector exp in runs of 8 along the last dim, libm's expf on a row's remainder)."""
    assert _ext is not None
    if g.shape != u.shape:
        raise ValueError(f"swiglu of shapes {tuple(g.shape)} and {tuple(u.shape)}")
    gc, uc = g.contiguous(), u.contiguous()
    n = gc.shape[-1] if gc.dim() else 1
    out = torch.empty_like(gc)
    _ext.swiglu(
        gc.data_ptr(), uc.data_ptr(), out.data_ptr(), gc.numel() // n if n else 0, n, _nth()
    )
    return out


def gelu(x: torch.Tensor, gate: torch.Tensor | None = None) -> torch.Tensor:
    """GELU (tanh form) of x float32 CPU as ggml computes it (a float16 table; 0 below -10,
    x above 10), times `gate` (same shape) when given."""
    assert _ext is not None
    xc = x.contiguous()
    out = torch.empty_like(xc)
    g = 0
    if gate is not None:
        gate = gate.contiguous()
        g = gate.data_ptr()
    _ext.gelu(xc.data_ptr(), g, out.data_ptr(), xc.numel(), _nth())
    return out


def round_f16(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """x float32 CPU rounded to float16 precision, as `x.half().float()`, in one pass; into
    `out` (a contiguous float32 tensor of x's size; may be x itself) or a new tensor."""
    assert _ext is not None
    xc = x.contiguous()
    if out is None:
        out = torch.empty_like(xc)
    _ext.round_f16(xc.data_ptr(), out.data_ptr(), xc.numel(), _nth())
    return out
