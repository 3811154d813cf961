"""The C row operations against the formulas llama.cpp computes them by."""

from __future__ import annotations

import ctypes
import ctypes.util

import numpy as np
import pytest
import torch

from corral.kernels import rowops
from corral.models import layers

pytestmark = pytest.mark.skipif(not rowops.available(), reason="corral._rowops not built")


def _fma(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """float32 fused multiply-add: the product of two float32s is exact in float64."""
    return (a.double() * b.double() + c.double()).float()


@pytest.mark.parametrize("style", [layers.RopeStyle.NORM, layers.RopeStyle.NEOX])
@pytest.mark.parametrize(("b", "h", "t", "d", "r"), [(1, 9, 1, 64, 64), (2, 4, 5, 64, 32)])
def test_rope_rotates_as_llama_cpp_compiles_it(
    monkeypatch: pytest.MonkeyPatch, style: layers.RopeStyle, b: int, h: int, t: int, d: int,
    r: int,
) -> None:  # fmt: skip
    # x0 cos - x1 sin with x1 sin rounded and the rest fused; x0 sin + x1 cos with x1 cos
    # rounded (what gcc makes of ggml's rotate_pairs with FMA; matched against its tensors)
    torch.manual_seed(b * t + r)
    x = torch.randn(b, t, h, d).transpose(1, 2) * 3  # a view, as the models pass it
    cos, sin = layers.rope_cos_sin(
        layers.rope_inv_freq(r, 10000.0), torch.arange(7, 7 + t).expand(b, t)
    )
    got = rowops.rope(x, cos, sin, style is layers.RopeStyle.NEOX)
    half = r // 2
    if style is layers.RopeStyle.NEOX:
        x0, x1 = x[..., :half], x[..., half:r]
    else:
        x0, x1 = x[..., 0:r:2], x[..., 1:r:2]
    y0, y1 = _fma(x0, cos, -(x1 * sin)), _fma(x0, sin, x1 * cos)
    want = x.clone()
    if style is layers.RopeStyle.NEOX:
        want[..., :half], want[..., half:r] = y0, y1
    else:
        want[..., 0:r:2], want[..., 1:r:2] = y0, y1
    assert torch.equal(got, want)
    # and within rounding of the plain formula (the route without the extension)
    monkeypatch.setattr(layers, "_ROWOPS", False)
    torch.testing.assert_close(got, layers.apply_rope(x, cos, sin, style))


def _libm() -> ctypes.CDLL:
    libm = ctypes.CDLL(ctypes.util.find_library("m"))
    for name in ("cosf", "sinf"):
        getattr(libm, name).restype = ctypes.c_float
        getattr(libm, name).argtypes = [ctypes.c_float]
    libm.powf.restype = ctypes.c_float
    libm.powf.argtypes = [ctypes.c_float, ctypes.c_float]
    return libm


@pytest.mark.parametrize(
    ("dims", "base", "scale", "factors"), [(64, 1e5, 1.0, False), (16, 1e4, 0.25, True)]
)
def test_rope_table_is_ggmls(dims: int, base: float, scale: float, factors: bool) -> None:
    # ggml_rope_cache_init: float32 angle grown by one rounded product per pair, libm cos/sin
    libm = _libm()
    f32 = np.float32
    ff = torch.linspace(1.0, 3.0, dims // 2) if factors else None
    pos = torch.tensor([[0, 1, 4, 517, 4095, 131071]])
    cos, sin = rowops.rope_table(pos, dims // 2, base, dims, scale, ff)
    assert cos.shape == sin.shape == (1, 6, dims // 2)
    theta_scale = f32(libm.powf(f32(base), f32(-2.0) / f32(dims)))
    for j, p in enumerate(pos[0].tolist()):
        theta = f32(p)
        for i in range(dims // 2):
            angle = f32(f32(scale) * f32(theta / (f32(ff[i]) if factors else f32(1.0))))
            assert float(cos[0, j, i]) == libm.cosf(angle), (p, i)
            assert float(sin[0, j, i]) == libm.sinf(angle), (p, i)
            theta = f32(theta * theta_scale)
    # the models' route: layers.rope_cos_sin takes this table on the CPU
    c2, s2 = layers.rope_cos_sin(layers.rope_inv_freq(dims, base, ff, scale), pos)
    assert torch.equal(c2[:, 0], cos) and torch.equal(s2[:, 0], sin)


def _ggml_expf(x: np.ndarray) -> np.ndarray:
    """ggml's AVX2 ggml_v_expf lane by lane for |x| < 87 (its polynomial branch)."""
    f32 = np.float32

    def fma(a: object, b: object, c: object) -> np.ndarray:
        return (np.float64(a) * np.float64(b) + np.float64(c)).astype(np.float32)

    z = fma(x, f32(float.fromhex("0x1.715476p+0")), f32(float.fromhex("0x1.8p23")))
    n = (z - f32(float.fromhex("0x1.8p23"))).astype(np.float32)
    b = fma(-n, f32(float.fromhex("0x1.7f7d1cp-20")), fma(-n, f32(float.fromhex("0x1.62e4p-1")), x))
    k = ((z.view(np.uint32) << np.uint32(23)) + np.float32(1).view(np.uint32)).view(np.float32)
    u = (b * b).astype(np.float32)
    hi = fma(f32(float.fromhex("0x1.0e4020p-7")), b, f32(float.fromhex("0x1.573e2ep-5")))
    lo = fma(f32(float.fromhex("0x1.555e66p-3")), b, f32(float.fromhex("0x1.fffdb6p-2")))
    j = fma(fma(hi, u, lo), u, (f32(float.fromhex("0x1.ffffecp-1")) * b).astype(np.float32))
    return fma(j, k, k)


@pytest.mark.skipif(not torch.backends.cpu.get_cpu_capability().startswith("AVX"), reason="x86")
def test_swiglu_is_ggmls() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 1027, generator=g) * 12  # rows of 128 runs of 8 and a tail of 3
    x[0, :5] = torch.tensor([0.0, -0.0, 80.0, -80.0, 1e-30])
    u = torch.randn(3, 1027, generator=g)
    got = rowops.swiglu(x, u)
    xn, un = x.numpy(), u.numpy()
    body = xn[:, :1024]
    e = _ggml_expf((np.float32(0) - body).astype(np.float32))
    want_body = ((body / (np.float32(1) + e)).astype(np.float32) * un[:, :1024]).astype(np.float32)
    assert np.array_equal(got[:, :1024].numpy(), want_body)
    # the tail of each row: libm's expf, as ggml's scalar loop
    libm = ctypes.CDLL(ctypes.util.find_library("m"))
    libm.expf.restype, libm.expf.argtypes = ctypes.c_float, [ctypes.c_float]
    for r in range(3):
        for i in range(1024, 1027):
            v = np.float32(xn[r, i])
            want = np.float32(np.float32(v / np.float32(1 + np.float32(libm.expf(-v)))) * un[r, i])
            assert float(got[r, i]) == float(want)
    # huge inputs take ggml's overflow branch: silu(-100) = -0, silu(100) = 100
    big = rowops.swiglu(torch.tensor([-100.0, 100.0] * 4), torch.ones(8))
    assert big.tolist() == [0.0, 100.0] * 4
    assert torch.equal(layers.swiglu(x, u), got)  # the models' route on the CPU


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
                    rowops.swiglu(x, x * 0.5),
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
