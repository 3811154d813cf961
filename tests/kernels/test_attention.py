"""Decode attention in C against the torch route (models.layers.attention)."""

from __future__ import annotations

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
