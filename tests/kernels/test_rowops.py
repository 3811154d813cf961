"""The C row operations against their torch formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from corral.kernels import rowops
from corral.models import layers

pytestmark = pytest.mark.skipif(not rowops.available(), reason="corral._rowops not built")


@pytest.mark.parametrize("style", [layers.RopeStyle.NORM, layers.RopeStyle.NEOX])
@pytest.mark.parametrize(("b", "h", "t", "d", "r"), [(1, 9, 1, 64, 64), (2, 4, 5, 64, 32)])
def test_rope_is_bit_identical_to_the_torch_formula(
    monkeypatch: pytest.MonkeyPatch, style: layers.RopeStyle, b: int, h: int, t: int, d: int, r: int
) -> None:
    torch.manual_seed(b * t + r)
    x = torch.randn(b, t, h, d).transpose(1, 2) * 3  # a view, as the models pass it
    cos, sin = layers.rope_cos_sin(
        layers.rope_inv_freq(r, 10000.0), torch.arange(7, 7 + t).expand(b, t)
    )
    got = rowops.rope(x, cos, sin, style is layers.RopeStyle.NEOX)
    monkeypatch.setattr(layers, "_ROWOPS", False)
    assert torch.equal(got, layers.apply_rope(x, cos, sin, style))


def test_rms_norm_as_ggml() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 5, 576) * 4
    w = torch.rand(576) + 0.5
    got = rowops.rms_norm(x, w, 1e-5)
    # ggml: float32 squares summed in float64, mean rounded to float32, 1/sqrtf
    sq = (x * x).double().sum(-1, keepdim=True)
    mean = (sq / 576).float()
    want = (x * (1.0 / torch.sqrt(mean + 1e-5))) * w
    torch.testing.assert_close(got, want, atol=0, rtol=2e-7)
    assert torch.equal(rowops.rms_norm(x[1:2], w, 1e-5), got[1:2])  # rows are independent
    no_w = rowops.rms_norm(x, None, 1e-5)
    torch.testing.assert_close(no_w * w, got, atol=0, rtol=2e-7)


def test_gelu_is_ggml_table() -> None:
    x = torch.cat([torch.linspace(-12, 12, 20001), torch.tensor([-10.0, 10.0, 0.0])])
    got = rowops.gelu(x)
    exact = torch.nn.functional.gelu(x.double(), approximate="tanh").float()
    inside = x.abs() < 10
    # a float16 table indexed by the float16 input: within two float16 steps of exact
    torch.testing.assert_close(got[inside], exact[inside], atol=2e-3, rtol=2e-3)
    assert torch.equal(got[x >= 10], x[x >= 10]) and bool((got[x <= -10] == 0).all())
    assert torch.equal(got[inside], got[inside].half().float())  # float16 table values
    g = torch.rand_like(x)
    assert torch.equal(rowops.gelu(x, g), got * g)


@pytest.mark.parametrize("n", [0, 7, 8, 1001])
def test_round_f16_equals_half_then_float(n: int) -> None:
    g = torch.Generator().manual_seed(n)
    x = torch.randn(n, generator=g) * torch.logspace(-9, 6, n)
    special = torch.tensor([float("inf"), -float("inf"), 65519.0, 65520.0, 7e4, 1e-8, -0.0, 3e-5])
    x = torch.cat([x, special])
    want = x.half().float()
    assert torch.equal(rowops.round_f16(x), want)
    y = x.clone()
    assert rowops.round_f16(y, out=y) is y and torch.equal(y, want)
    assert torch.isnan(rowops.round_f16(torch.tensor([float("nan")]))).all()


def test_gelu_vector_path_equals_scalar_path() -> None:
    # the AVX2 path (8 at a time) against the scalar tail (a call of one value)
    x = torch.cat([torch.linspace(-11, 11, 4099), torch.tensor([-10.0, 10.0, -0.0, 9.999])])
    g = torch.rand_like(x)
    whole, gated = rowops.gelu(x), rowops.gelu(x, g)
    one = torch.cat([rowops.gelu(x[i : i + 1]) for i in range(len(x))])
    assert torch.equal(whole, one)
    assert torch.equal(
        gated, torch.cat([rowops.gelu(x[i : i + 1], g[i : i + 1]) for i in range(len(x))])
    )


def test_results_do_not_depend_on_the_thread_count() -> None:
    torch.manual_seed(3)
    x = torch.randn(2, 4, 96, 64) * 3  # [B, H, T, D], past the parallel threshold
    w = torch.rand(64) + 0.5
    cos, sin = layers.rope_cos_sin(
        layers.rope_inv_freq(64, 10000.0), torch.arange(96).expand(2, 96)
    )
    before = torch.get_num_threads()
    outs = []
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            outs.append(
                (
                    rowops.rms_norm(x, w, 1e-6),
                    rowops.gelu(x),
                    rowops.rope(x, cos, sin, True),
                    rowops.round_f16(x * 1e-3),
                )
            )
    finally:
        torch.set_num_threads(before)
    for other in outs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(outs[0], other, strict=True))


def test_gelu_table_and_gate_as_ggml_builds_them() -> None:
    """ggml's table (ggml-cpu.c, built with -mfma) has 1 + c*x*x as one FMA: at float16
    -1.9990234375 (0xBFFF) that gives -0.045501708984375, the uncontracted formula
    -0.04547119140625. And ggml_vec_geglu_f32 writes +0 below -10, whatever the gate's sign
    (llama.cpp's Gemma 3 270M geglu tensors: both seen in real activations)."""
    x = torch.tensor([-1.9990234375, -1.999185562133789, -10.896194458007812, -10.0])
    g = torch.tensor([1.0, -0.4805793762207031, -0.5982668399810791, -2.0])
    got = rowops.gelu(x)
    assert got[0].item() == -0.045501708984375
    gated = rowops.gelu(x, g)
    assert gated[1].item() == np.float32(-0.045501708984375) * np.float32(g[1].item())
    assert not torch.signbit(gated[2:]).any()  # +0, not 0 * g
    long = torch.cat([x.repeat(4), x[:1]])  # the 8-wide path and the tail
    assert torch.equal(
        rowops.gelu(long, torch.cat([g.repeat(4), g[:1]])).view(torch.int32)[:4],
        gated.view(torch.int32),
    )
