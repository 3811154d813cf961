"""Decode attention in C against the torch route (models.layers.attention)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from corral.kernels.attention import available, decode_attention
from corral.models import layers

pytestmark = pytest.mark.skipif(not available(), reason="corral._attn not built")


def _reference(q, kb, vb, slots, lengths, scale, window, exact):  # noqa: ANN001, ANN202
    """Each sequence through the torch route on its own gathered cache rows."""
    outs = []
    for i, (s, n) in enumerate(zip(slots.tolist(), lengths.tolist(), strict=True)):
        k = kb[s : s + 1, :, :n].float()
        v = vb[s : s + 1, :, :n].float()
        mask = None
        if window:
            pos = torch.arange(n)
            mask = (n - 1 - pos < window)[None, None, None, :]
        old = layers._EXACT
        layers._EXACT = exact
        try:
            outs.append(layers.attention(q[i : i + 1], k, v, mask, scale))
        finally:
            layers._EXACT = old
    return torch.cat(outs)


@pytest.mark.parametrize("scalar", [False, True])
@pytest.mark.parametrize("exact", [False, True])
@pytest.mark.parametrize(("h", "hkv", "d"), [(9, 3, 64), (4, 1, 256), (2, 2, 12)])
def test_matches_torch_route(scalar: bool, exact: bool, h: int, hkv: int, d: int) -> None:
    g = torch.Generator().manual_seed(h * 100 + d)
    n_slots, max_len = 4, 300
    kb = (torch.randn(n_slots, hkv, max_len, d, generator=g) * 2).half()
    vb = torch.randn(n_slots, hkv, max_len, d, generator=g).half()
    slots = torch.tensor([2, 0, 3])
    lengths = torch.tensor([1, 37, 300])
    q = torch.randn(3, h, 1, d, generator=g) * 2
    scale = d**-0.5
    for window in (None, 16):
        got = decode_attention(
            q, kb, vb, slots, lengths, scale, window, exact=exact, _scalar=scalar
        )
        want = _reference(q, kb, vb, slots, lengths, scale, window, exact)
        assert got.shape == (3, 1, h * d)
        # float32 sums in another order; a float16-rounded weight may land one ulp apart
        torch.testing.assert_close(got, want, atol=2e-3 if not exact else 2e-5, rtol=1e-3)


def test_one_position_returns_its_value() -> None:
    kb = torch.randn(1, 1, 8, 16).half()
    vb = torch.randn(1, 1, 8, 16).half()
    q = torch.randn(1, 2, 1, 16)
    out = decode_attention(q, kb, vb, torch.tensor([0]), torch.tensor([1]), 0.25, exact=True)
    torch.testing.assert_close(out.view(2, 16), vb[0, 0, :1].float().expand(2, 16))


def test_errors() -> None:
    kb = torch.zeros(1, 1, 8, 16).half()
    q = torch.zeros(1, 1, 1, 16)
    with pytest.raises(IndexError, match="full"):
        decode_attention(q, kb, kb, torch.tensor([0]), torch.tensor([9]), 1.0)
    with pytest.raises(ValueError, match="float16"):
        decode_attention(q, kb.float(), kb.float(), torch.tensor([0]), torch.tensor([1]), 1.0)
    with pytest.raises(ValueError, match="one new token"):
        decode_attention(
            torch.zeros(1, 1, 2, 16), kb, kb, torch.tensor([0]), torch.tensor([1]), 1.0
        )


def _ggml_expf(x: np.ndarray) -> np.ndarray:
    """ggml's AVX2 exp (ggml_v_expf) lane by lane, its polynomial branch (-87 < x <= 0)."""
    f32 = np.float32

    def fma(a: object, b: object, c: object) -> np.ndarray:
        return (np.float64(a) * np.float64(b) + np.float64(c)).astype(np.float32)

    def h(s: str) -> np.float32:
        return f32(float.fromhex(s))

    z = fma(x, h("0x1.715476p+0"), h("0x1.8p23"))
    n = (z - h("0x1.8p23")).astype(np.float32)
    b = fma(-n, h("0x1.7f7d1cp-20"), fma(-n, h("0x1.62e4p-1"), x))
    k = ((z.view(np.uint32) << np.uint32(23)) + np.float32(1).view(np.uint32)).view(np.float32)
    u = (b * b).astype(np.float32)
    hi = fma(h("0x1.0e4020p-7"), b, h("0x1.573e2ep-5"))
    lo = fma(h("0x1.555e66p-3"), b, h("0x1.fffdb6p-2"))
    return fma(fma(fma(hi, u, lo), u, (h("0x1.ffffecp-1") * b).astype(np.float32)), k, k)


def _hsum8(a: np.ndarray) -> np.float32:
    return ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]))


def _dot(x: np.ndarray, y: np.ndarray, idx: np.ndarray, one_token: bool) -> np.float32:
    """sum x*y (float16 values, so every product is exact in float32) with element i in the
    lane llama.cpp gives index idx[i]: tinyBLAS's 8 lanes, or ggml_vec_dot_f16's 4 x 8 lanes
    over runs of 32 and a float64 tail past the last whole run (n_whole: idx below it)."""
    prod = (x * y).astype(np.float32)
    if not one_token:
        acc = np.zeros(8, np.float32)
        for p, i in zip(prod, idx, strict=True):
            acc[i % 8] += p
        return _hsum8(acc)
    acc = np.zeros((4, 8), np.float32)
    tail = []
    for p, i in zip(prod, idx, strict=True):
        if i < _dot.n_whole:  # type: ignore[attr-defined]
            acc[(i % 32) // 8, i % 8] += p
        else:
            tail.append(p)
    v = (acc[0] + acc[2]) + (acc[1] + acc[3])
    t = v[:4] + v[4:]
    s = np.float64((t[0] + t[1]) + (t[2] + t[3]))
    for p in tail:
        s += np.float64(p)
    return np.float32(s)


@pytest.mark.parametrize("one_token", [False, True])
@pytest.mark.parametrize(("d", "n", "window"), [(64, 45, None), (40, 300, 100)])
def test_sums_in_llama_cpps_orders(one_token: bool, d: int, n: int, window: int | None) -> None:
    """Scores, softmax and values summed exactly as an AVX2 llama.cpp build sums them: its
    tinyBLAS order for prompt batches, ggml_vec_dot_f16's for one-token batches (positions
    counted from 0: llama.cpp pads its cache view to a multiple of 256)."""
    g = torch.Generator().manual_seed(d + n)
    kb = (torch.randn(1, 1, 320, d, generator=g) * 0.5).half()
    vb = torch.randn(1, 1, 320, d, generator=g).half()
    q = torch.randn(1, 1, 1, d, generator=g)
    scale = d**-0.5
    got = decode_attention(
        q, kb, vb, torch.tensor([0]), torch.tensor([n]), scale, window, one_token=one_token
    ).view(d)
    q16 = q.view(d).half().float().numpy()
    k16, v16 = kb[0, 0].float().numpy(), vb[0, 0].float().numpy()
    start = n - window if window and n > window else 0
    _dot.n_whole = (d // 32) * 32  # type: ignore[attr-defined]
    dims = np.arange(d)
    s = np.array([_dot(q16, k16[j], dims, one_token) for j in range(start, n)], np.float32)
    s = (s * np.float32(scale)).astype(np.float32)
    e = _ggml_expf((s - s.max()).astype(np.float32))
    # softmax sum: 8-lane chunks aligned to position 0, each chunk's hsum added in float64
    padded = np.zeros(((n + 7) // 8) * 8, np.float32)
    padded[start:n] = e
    total = sum(np.float64(_hsum8(padded[c : c + 8])) for c in range(0, len(padded), 8))
    p = (e * np.float32(1.0 / total)).astype(np.float16).astype(np.float32)
    _dot.n_whole = 1 << 30  # type: ignore[attr-defined]  # the cache view has no tail
    keys = np.arange(start, n)
    want = np.array([_dot(p, v16[start:n, c], keys, one_token) for c in range(d)], np.float32)
    assert np.array_equal(got.numpy(), want)
