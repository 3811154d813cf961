"""The GPU route's primitives, checked on the CPU against the formulas they replace: rope as
a complex product, attention with a group's query heads folded onto its kv head, one fused
matrix for q/k/v (gate/up)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from corral.models.layers import rope_complex, rope_cos_sin, sdpa_attention
from corral.models.weights import DeviceWeight, project

GEN = torch.Generator().manual_seed(0)


def _rand(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=GEN)


def test_rope_complex_is_the_norm_formula() -> None:
    x = _rand(2, 3, 5, 8)
    cos, sin = rope_cos_sin(1.0 / (10000 ** (torch.arange(0, 8, 2) / 8)), torch.arange(5)[None])
    cos, sin = cos.expand(2, 1, 5, 4), sin.expand(2, 1, 5, 4)
    x0, x1 = x[..., 0::2], x[..., 1::2]
    want = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)
    torch.testing.assert_close(rope_complex(x, cos, sin), want)
    assert rope_complex(x.bfloat16(), cos, sin).dtype is torch.bfloat16


def _reference(q, k, v, mask, scale):  # type: ignore[no-untyped-def]
    r = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(r, dim=1), v.repeat_interleave(r, dim=1)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    b, h, t, d = q.shape
    return out.transpose(1, 2).reshape(b, t, h * d)


def test_folded_gqa_attention_equals_repeated_heads() -> None:
    b, h, hkv, s, d = 3, 8, 2, 11, 16
    q, k, v = _rand(b, h, 1, d), _rand(b, hkv, s, d), _rand(b, hkv, s, d)
    lengths = torch.tensor([3, 11, 7])
    mask = (torch.arange(s) < lengths[:, None])[:, None, None, :]  # [B, 1, 1, S]
    for m in (None, mask):
        got = sdpa_attention(q, k, v, m, 0.25)
        torch.testing.assert_close(got, _reference(q, k, v, m, 0.25))
    # several new tokens take the repeated-heads route: same results as before
    q4 = _rand(b, h, 4, d)
    torch.testing.assert_close(
        sdpa_attention(q4, k, v, None, 0.25), _reference(q4, k, v, None, 0.25)
    )


def _device_weight(rows: int, cols: int) -> DeviceWeight:
    w = DeviceWeight.__new__(DeviceWeight)  # as made on a GPU, without a GGUF tensor
    w.w = _rand(rows, cols)
    w.shape = w.w.shape
    w.fused = None
    return w


def test_project_fuses_device_weights_once() -> None:
    ws = [_device_weight(n, 16) for n in (32, 8, 8)]
    x = _rand(2, 1, 16)
    want = [x @ w.w.T for w in ws]
    got = project(x, *ws)
    for g, w_ in zip(got, want, strict=True):
        torch.testing.assert_close(g, w_)
    fused = ws[0].fused
    assert fused is not None and fused.w.shape == (48, 16)
    # every weight is now a view of the fused matrix (no second copy), also when called alone
    assert all(w.w.untyped_storage().data_ptr() == fused.w.untyped_storage().data_ptr() for w in ws)
    torch.testing.assert_close(ws[1](x), want[1])
    project(x, *ws)
    assert ws[0].fused is fused  # made once
