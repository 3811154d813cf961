"""corral.kernels: quantized matmul against a float64 reference of llama.cpp's arithmetic.

The reference is built independently of the C code: the weight through
corral.quant.dequantize, the activations rounded in numpy the way ggml's x86 CPU backend
rounds them (quantize_row_q8_0/_q8_1 AVX2 code, quantize_row_q8_K_ref), then a float64
matmul. The kernels may only differ from it by float32 summation order.
"""

from __future__ import annotations

import warnings
from fractions import Fraction

import numpy as np
import pytest
import torch
from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as Q
from gguf.quants import quantize

from corral import kernels
from corral.kernels import (
    SUPPORTED_TYPES,
    QMatrix,
    available,
    cpu_features,
    qmatmul,
    qmatmul_many,
    quantize_activations,
    row_bytes,
)
from corral.models.weights import KERNEL_MAX_ROWS
from corral.quant import dequantize

LEGACY = (Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0)
K_QUANTS = (Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K)
WITH_MIN = (Q.Q4_1, Q.Q5_1)  # dotted with Q8_1 activations (they carry s = d*sum(q))
SHAPES = ((64, 256), (96, 512), (576, 1536))  # (N, K)
TOL = 1e-5  # max |y - ref| / max |ref|; in practice ~1e-7
# byte offsets of the fp16 scale fields in each k-quant block: set to sane values in
# otherwise random blocks (every bit pattern of the rest is a valid block)
_K_SCALE_FIELDS = {Q.Q2_K: (80, 82), Q.Q3_K: (108,), Q.Q4_K: (0, 2), Q.Q5_K: (0, 2), Q.Q6_K: (208,)}


def test_extension_is_built() -> None:
    assert available()
    feats = cpu_features()
    assert set(feats) >= {"avx2", "openmp", "omp_max_threads"}


# --- test data ---------------------------------------------------------------------------


def make_weight(t: Q, n: int, k: int, seed: int = 0) -> np.ndarray:
    """Raw blocks uint8 [n, row_bytes]: gguf's quantizer for the legacy types (it has none
    for the k-quants), random blocks with sane fp16 scales for the k-quants."""
    rng = np.random.default_rng(seed)
    if t in LEGACY:
        return quantize(rng.standard_normal((n, k)).astype(np.float32), t)
    block, size = GGML_QUANT_SIZES[t]
    raw = rng.integers(0, 256, size=(n, k // block, size), dtype=np.uint8)
    for off in _K_SCALE_FIELDS[t]:
        d = rng.uniform(2e-4, 2e-3, size=(n, k // block)).astype(np.float16)
        raw[:, :, off : off + 2] = d.view(np.uint8).reshape(n, k // block, 2)
    return raw.reshape(n, -1)


def make_x(m: int, k: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g)
    x[:, : min(k, 32)] *= 8.0  # blocks of very different scales
    return x


# --- reference activation rounding (numpy, after ggml) ------------------------------------


def ref_q8_0(x: np.ndarray, with_sum: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ggml's AVX2 quantize_row_q8_0/_q8_1: per 32 values, d = amax/127 stored as fp16,
    q = round-half-even(x * (127/amax)); s = fp16(d * sum(q)). Returns (q int8 [M, nb, 32],
    d float32 [M, nb] (the fp16 value), s float32 [M, nb])."""
    b = x.astype(np.float32).reshape(x.shape[0], -1, 32)
    amax = np.abs(b).max(-1)
    d = (amax / np.float32(127)).astype(np.float32)
    with np.errstate(divide="ignore"):
        inv = np.where(amax != 0, np.float32(127) / amax, np.float32(0)).astype(np.float32)
    q = np.clip(np.rint(b * inv[..., None]), -128, 127).astype(np.int8)
    s = np.zeros_like(d)
    if with_sum:
        s = (d * q.astype(np.int32).sum(-1).astype(np.float32)).astype(np.float16)
    return q, d.astype(np.float16).astype(np.float32), s.astype(np.float32)


def ref_q8_k(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """quantize_row_q8_K_ref: per 256 values, iscale = -127/max (max: the first value of
    largest magnitude, sign kept), q = min(127, round-half-even(iscale * x)), d = 1/iscale
    in float32. Returns (q int8 [M, nb, 256], d float32 [M, nb])."""
    b = x.astype(np.float32).reshape(x.shape[0], -1, 256)
    idx = np.abs(b).argmax(-1)  # first occurrence, as ggml's strict '>'
    mx = np.take_along_axis(b, idx[..., None], -1)[..., 0]
    zero = mx == 0
    iscale = np.where(zero, np.float32(1), np.float32(-127) / np.where(zero, 1, mx))
    iscale = iscale.astype(np.float32)
    q = np.minimum(np.rint(b * iscale[..., None]), 127).astype(np.int8)
    q[zero] = 0
    d = np.where(zero, np.float32(0), np.float32(1) / iscale).astype(np.float32)
    return q, d


def ggml_act_bytes(t: Q, x: np.ndarray) -> np.ndarray:
    """The reference activations in ggml's block layout, uint8 [M, bytes]."""
    m = x.shape[0]
    if t in K_QUANTS:
        q, d = ref_q8_k(x)
        bsums = q.reshape(m, -1, 16, 16).astype(np.int16).sum(-1, dtype=np.int16)
        parts = [d[..., None].view(np.uint8), q.view(np.uint8), bsums.view(np.uint8)]
    else:
        q, d, s = ref_q8_0(x, t in WITH_MIN)
        parts = [d.astype(np.float16)[..., None].view(np.uint8)]
        if t in WITH_MIN:
            parts.append(s.astype(np.float16)[..., None].view(np.uint8))
        parts.append(q.view(np.uint8))
    return np.concatenate(parts, axis=-1).reshape(m, -1)


def reference(t: Q, raw: np.ndarray, x: torch.Tensor) -> torch.Tensor:
    """float64 y [M, N] as llama.cpp computes it, up to summation order."""
    n = raw.shape[0]
    k = x.shape[1]
    w = dequantize(raw, t, (n, k)).double()
    xn = x.numpy()
    if t in K_QUANTS:
        q, d = ref_q8_k(xn)
        xq = torch.from_numpy(q.astype(np.float64) * d[..., None].astype(np.float64))
        return xq.reshape(x.shape[0], k) @ w.T
    q, d, s = ref_q8_0(xn, t in WITH_MIN)
    xq = torch.from_numpy(q.astype(np.float64) * d[..., None]).reshape(x.shape[0], k)
    if t not in WITH_MIN:
        return xq @ w.T
    # w = d*q + m per block; ggml dots the d*q part with the rounded activations and adds
    # m * s per block, where s is d_x * sum(q_x) rounded to fp16 (not d_x16 * sum(q_x))
    mins = raw.reshape(n, k // 32, -1)[:, :, 2:4].copy().view(np.float16)[..., 0]
    mins = torch.from_numpy(mins.astype(np.float64))  # [N, nb]
    w_no_min = w - mins.repeat_interleave(32, dim=1)
    return xq @ w_no_min.T + torch.from_numpy(s.astype(np.float64)) @ mins.T


def rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    return float((y.double() - ref).abs().max() / ref.abs().max())


# --- tests ------------------------------------------------------------------------------


@pytest.mark.parametrize("t", SUPPORTED_TYPES, ids=lambda t: t.name)
def test_activation_blocks_match_ggml(t: Q) -> None:
    x = make_x(5, 512)
    x[1, 32:64] = 0.0  # a zero block (Q8_0: d = 0; Q8_K block 0 keeps its other values)
    x[2, 256:512] = 0.0  # a zero Q8_K block
    x[3, 7] = -x[3, :256].abs().max() * 2  # negative value of largest magnitude
    # exact ties: with -127 the largest magnitude, both multipliers are 1.0 and ggml
    # rounds half to even (rint), not away from zero (roundf): 2.5 -> 2, 0.5 -> 0
    x[4, :256] = x[4, :256].clamp(-3, 3)
    x[4, 5:10] = torch.tensor([-127.0, 2.5, 0.5, -1.5, -0.5])
    want = ggml_act_bytes(t, x.numpy())
    for scalar in (False, True):
        got = quantize_activations(x, t, _scalar=scalar).numpy()
        np.testing.assert_array_equal(got, want, err_msg=f"scalar={scalar}")


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("t", SUPPORTED_TYPES, ids=lambda t: t.name)
def test_qmatmul_matches_reference(t: Q, shape: tuple[int, int]) -> None:
    n, k = shape
    raw = make_weight(t, n, k)
    x = make_x(7, k)
    y = qmatmul(x, torch.from_numpy(raw), t, n, k)
    assert y.shape == (7, n) and y.dtype == torch.float32
    assert rel_err(y, reference(t, raw, x)) <= TOL


@pytest.mark.parametrize("t", SUPPORTED_TYPES, ids=lambda t: t.name)
def test_batch_rows_equal_single_rows(t: Q) -> None:
    """In the "rows" order (kernels.rows_alone) row m of a batch is computed exactly as that
    row alone (M=1, 7 and 64), whatever the type. (In the default "llama" order that holds
    only where llama.cpp's own kernels keep rows apart: see the tests of the orders below.)"""
    n, k = 96, 512
    w = torch.from_numpy(make_weight(t, n, k))
    x = make_x(64, k)
    assert kernels.order() == "llama"
    with kernels.rows_alone():
        assert kernels.order() == "rows"
        y64 = qmatmul(x, w, t, n, k)
        y7 = qmatmul(x[:7], w, t, n, k)
        assert torch.equal(y64[:7], y7)
        for m in (0, 3, 6, 63):
            assert torch.equal(qmatmul(x[m : m + 1], w, t, n, k)[0], y64[m])
    assert kernels.order() == "llama"
    assert rel_err(y64, reference(t, w.numpy(), x)) <= TOL


@pytest.mark.parametrize("t", SUPPORTED_TYPES, ids=lambda t: t.name)
def test_scalar_path_matches_avx2(t: Q) -> None:
    n, k = 96, 512
    w = torch.from_numpy(make_weight(t, n, k, seed=3))
    x = make_x(9, k, seed=4)
    fast = qmatmul(x, w, t, n, k)
    portable = qmatmul(x, w, t, n, k, _scalar=True)
    ref = reference(t, w.numpy(), x)
    assert rel_err(portable, ref) <= TOL
    assert float((fast - portable).abs().max() / ref.abs().max()) <= 1e-6


@pytest.mark.parametrize("t", (Q.Q4_1, Q.Q8_0, Q.Q6_K), ids=lambda t: t.name)
def test_threads_and_leading_dims(t: Q) -> None:
    n, k = 200, 768
    w = torch.from_numpy(make_weight(t, n, k))
    x = make_x(6, k).reshape(2, 3, k)
    y1 = qmatmul(x, w, t, n, k, n_threads=1)
    y2 = qmatmul(x, w, t, n, k, n_threads=2)
    assert y1.shape == (2, 3, n)
    assert torch.equal(y1, y2)
    assert torch.equal(QMatrix(w, t, n, k)(x), y1)
    xt = make_x(k, 6).T  # non-contiguous x is copied
    assert torch.equal(qmatmul(xt, w, t, n, k), qmatmul(xt.contiguous(), w, t, n, k))


@pytest.mark.parametrize("m", (1, 5))
def test_qmatmul_many_equals_separate_calls(m: int) -> None:
    """Fused calls (Q8_0-activation types together, Q8_K ones together, Q8_1 alone) give
    exactly the separate results, in order."""
    k = 512
    types = (Q.Q5_0, Q.Q8_0, Q.Q6_K, Q.Q4_1, Q.Q4_K, Q.Q4_0, Q.Q5_1, Q.Q2_K, Q.Q3_K, Q.Q5_K)
    mats = [
        QMatrix(torch.from_numpy(make_weight(t, n, k, seed=i)), t, n, k)
        for i, (t, n) in enumerate(
            zip(types, (64, 96, 40, 8, 200, 32, 64, 16, 48, 72), strict=True)
        )
    ]
    x = make_x(m, k).reshape(1, m, k)
    outs = qmatmul_many(x, mats)
    assert len(outs) == len(mats)
    for qm, y in zip(mats, outs, strict=True):
        assert y.shape == (1, m, qm.n_out)
        assert torch.equal(y, qm(x))
    many = [mats[0]] * 11  # more than one C call's worth
    assert all(torch.equal(y, outs[0]) for y in qmatmul_many(x, many))
    assert qmatmul_many(x, []) == []
    # prompt-sized: each matrix's dense route, as a single call (types that share an
    # activation block share one rounding of x: Q5_0/Q8_0/Q4_0, Q4_1/Q5_1, the k-quants)
    big = make_x(70, k)
    dense_mats = [QMatrix(qm.w, qm.ggml_type, qm.n_out, k, dense_rows=64) for qm in mats]
    for qm, y in zip(dense_mats, qmatmul_many(big, dense_mats), strict=True):
        assert torch.equal(y, qm(big))
    with pytest.raises(ValueError):
        qmatmul_many(
            x, [mats[0], QMatrix(torch.from_numpy(make_weight(Q.Q8_0, 8, 256)), Q.Q8_0, 8, 256)]
        )
    with pytest.raises(ValueError):
        qmatmul_many(make_x(1, 256), mats[:1])


@pytest.mark.parametrize("t", SUPPORTED_TYPES, ids=lambda t: t.name)
def test_dense_route_matches_reference(t: Q, monkeypatch: pytest.MonkeyPatch) -> None:
    """Prompt-sized calls (dequantize + float GEMM on the kernels' rounded activations) agree
    with the reference as closely as the integer kernels, in one slice of rows or many."""
    n, k = 96, 512
    raw = make_weight(t, n, k, seed=5)
    w = torch.from_numpy(raw)
    x = make_x(70, k, seed=6)
    ref = reference(t, raw, x)
    dense = QMatrix(w, t, n, k, dense_rows=1)
    assert rel_err(dense(x), ref) <= TOL
    monkeypatch.setattr(kernels, "_DENSE_SLICE", 20 * k)  # 5 slices, the last one short
    sliced = dense(x.reshape(7, 10, k))
    assert sliced.shape == (7, 10, n)
    assert rel_err(sliced.reshape(70, n), ref) <= TOL
    integer = QMatrix(w, t, n, k, dense_rows=None)(x)
    assert float((sliced.reshape(70, n) - integer).abs().max() / ref.abs().max()) <= 5e-6
    # by default (the environment unset) always the integer kernels, bit-identical to qmatmul
    assert torch.equal(QMatrix(w, t, n, k)(x), qmatmul(x, w, t, n, k))
    auto = QMatrix(w, t, n, k, dense_rows="auto")
    amx_rows = kernels.AMX_BREAK_EVEN.get(int(t)) if auto.amx else None
    assert auto.dense_rows == (amx_rows or (64 if t in LEGACY else 128))
    assert auto.dense_rows > KERNEL_MAX_ROWS  # short steps keep llama.cpp's exact arithmetic
    assert torch.equal(auto(x[:3]), qmatmul(x[:3], w, t, n, k))
    with pytest.raises(ValueError):
        QMatrix(w, t, n, k, dense_rows="sometimes")


@pytest.mark.parametrize("t", SUPPORTED_TYPES, ids=lambda t: t.name)
def test_dequantize_matches_corral_quant(t: Q) -> None:
    n, k = 40, 512
    raw = make_weight(t, n, k, seed=7)
    qm = QMatrix(torch.from_numpy(raw), t, n, k)
    want = dequantize(raw, t, (n, k))
    assert torch.equal(qm.dequantize(), want)
    assert torch.equal(qm.dequantize(slice(5, 17), n_threads=1), want[5:17])
    assert qm.dequantize(slice(30, 10)).shape == (0, k)
    with pytest.raises(ValueError):
        qm.dequantize(slice(0, 10, 2))
    ids = torch.tensor([[3, 0, 39], [-1, 7, 3]])
    assert torch.equal(qm.rows(ids), want[ids])
    assert qm.rows(torch.tensor([], dtype=torch.long)).shape == (0, k)
    for bad in (torch.tensor([40]), torch.tensor([-41])):
        with pytest.raises(IndexError):
            qm.rows(bad)
    with pytest.raises(ValueError):
        qm.rows(torch.tensor([1.0]))


def test_readonly_memmap_weight(tmp_path) -> None:  # noqa: ANN001 - pytest fixture
    t, n, k = Q.Q8_0, 64, 256
    raw = make_weight(t, n, k)
    path = tmp_path / "w.bin"
    raw.tofile(path)
    mm = np.memmap(path, dtype=np.uint8, mode="r", shape=raw.shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch: non-writable array
        w = torch.from_numpy(mm)
    x = make_x(2, k)
    y = qmatmul(x, w, t, n, k)
    assert rel_err(y, reference(t, raw, x)) <= TOL
    assert np.array_equal(np.asarray(mm), raw)


def test_zero_input_and_empty_batch() -> None:
    t, n, k = Q.Q4_K, 32, 256
    w = torch.from_numpy(make_weight(t, n, k))
    assert torch.equal(qmatmul(torch.zeros(2, k), w, t, n, k), torch.zeros(2, n))
    assert qmatmul(torch.zeros(0, k), w, t, n, k).shape == (0, n)


def test_misuse_raises_value_error() -> None:
    t, n, k = Q.Q4_0, 16, 64
    w = torch.from_numpy(make_weight(t, n, k))
    x = make_x(2, k)
    bad = [
        lambda: qmatmul(x[:, :32], w, t, n, k),  # x's last dim is not k
        lambda: qmatmul(x.double(), w, t, n, k),  # dtype
        lambda: qmatmul(x, w, t, n + 1, k),  # n_out does not match w
        lambda: qmatmul(x, w, t, n, 2 * k),  # k does not match the row bytes
        lambda: qmatmul(x, w.view(-1), t, n, k),  # w not 2-D
        lambda: qmatmul(x, w.float(), t, n, k),  # w not bytes
        lambda: qmatmul(x, w[:, ::2], t, n, k // 2),  # w not contiguous
        lambda: qmatmul(x, w, Q.F16, n, k),  # no kernel for F16
        lambda: qmatmul(x, w, 999, n, k),  # not a type
        lambda: qmatmul(make_x(2, 48), w, t, n, 48),  # k not a block multiple
        lambda: qmatmul(x, w, t, 0, k),
        lambda: qmatmul(x, w, t, n, k, n_threads=0),
        lambda: qmatmul(x.numpy(), w, t, n, k),  # type: ignore[arg-type]
        lambda: qmatmul(torch.tensor(1.0), w, t, n, k),
        lambda: quantize_activations(make_x(1, 48), t),
        lambda: quantize_activations(make_x(1, 128), Q.Q6_K),  # k-quants need 256s
        lambda: QMatrix(w, t, n, 2 * k),
        lambda: QMatrix(w, t, n, k)(x[:, :32]),
        lambda: row_bytes(Q.Q6_K, 100),
    ]
    for call in bad:
        with pytest.raises(ValueError):
            call()


@pytest.mark.realmodel
@pytest.mark.parametrize("fixture", ("smollm2_path", "gemma3_path"))
def test_real_model_matrices(fixture: str, request: pytest.FixtureRequest) -> None:
    """One matrix of each (type, shape) in the real files (the read-only mapped bytes, as
    the model code will hand them over) against the reference, at M=1 and M=3, plus the
    dense route at M=70 for one of them."""
    from corral.gguf.reader import open_gguf

    g = open_gguf(request.getfixturevalue(fixture))
    seen: set[tuple[Q, tuple[int, ...]]] = set()
    checked = 0
    for t in g.tensors.values():
        if len(t.shape) != 2 or t.ggml_type not in SUPPORTED_TYPES:
            continue
        if (t.ggml_type, t.shape) in seen:
            continue
        seen.add((t.ggml_type, t.shape))
        n, k = t.shape
        raw = np.asarray(t.data[: min(n, 512)])  # the head has 49k-262k rows: a slice
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            w = torch.from_numpy(t.data[: raw.shape[0]])
        for m in (1, 3):
            x = make_x(m, k, seed=m)
            y = qmatmul(x, w, t.ggml_type, raw.shape[0], k)
            assert rel_err(y, reference(t.ggml_type, raw, x)) <= TOL, (t.name, m)
        checked += 1
        last = (t.ggml_type, raw, w, k)
    assert checked >= 2
    qt, raw, w, k = last
    x = make_x(70, k, seed=9)
    dense = QMatrix(w, qt, raw.shape[0], k, dense_rows=1)
    assert rel_err(dense(x), reference(qt, raw, x)) <= TOL


@pytest.mark.parametrize("t", (Q.Q8_0, Q.Q4_1, Q.Q4_K), ids=lambda t: t.name)
def test_quantize_activations_threads_split_rows_only(
    t: Q, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prompt's rows go to several threads: the same bytes as one thread, also for row
    counts that do not divide evenly (block_q8_0, block_q8_1, block_q8_K)."""
    x = make_x(131, 512)
    prev = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        threaded = quantize_activations(x, t)
        monkeypatch.setattr(kernels, "_QUANT_PARALLEL_ROWS", 10**9)
        single = quantize_activations(x, t)
    finally:
        torch.set_num_threads(prev)
    assert torch.equal(threaded, single)


# --- llama.cpp's other kernels: repacked Q4_K / Q4_0, tiled K-quants ------------------------
#
# llama.cpp's AVX2 build multiplies Q4_K and Q4_0 weights with a multiple of 8 rows with its
# repacked kernels (ggml-cpu/arch/x86/repack.cpp) and the other K-quants times 8 rows or more
# with its tiled ones (ggml-cpu/tiled); each sums in its own float order (qkernels.c, "Which
# of llama.cpp's kernels a matmul follows"). The emulations below redo those float operations
# one by one in float32 (an FMA rounded once, exactly, through fractions) from integer sums
# formed here from the raw blocks, and the kernels must match them bit for bit.


def _fp16(b: np.ndarray) -> np.ndarray:
    return b.copy().view(np.float16).astype(np.float32)


def _f32(v: Fraction) -> np.float32:
    """v rounded to the nearest float32, ties to even (normal range)."""
    if v == 0:
        return np.float32(0.0)
    sign, a = (-1, -v) if v < 0 else (1, v)
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if Fraction(2) ** e > a:
        e -= 1
    elif Fraction(2) ** (e + 1) <= a:
        e += 1
    scaled = a * Fraction(2) ** (23 - e)
    q, r = divmod(scaled.numerator, scaled.denominator)
    if 2 * r > scaled.denominator or (2 * r == scaled.denominator and q % 2):
        q += 1
    return np.float32(sign * q * 2.0 ** (e - 23))


def _fma(a: np.float32, b: np.float32, c: np.float32) -> np.float32:
    """a * b + c rounded once to float32 (vfmadd)."""
    return _f32(Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c)))


def _q4k_blocks(raw: np.ndarray, k: int) -> tuple[np.ndarray, ...]:
    """Q4_K rows [N, row_bytes] -> q uint [N, nb, 256], scales and mins [N, nb, 8] (per 32
    values, ggml's get_scale_min_k4), d and dmin float32 [N, nb]."""
    n = raw.shape[0]
    b = raw.reshape(n, k // 256, 144).astype(np.int64)
    d, dmin = _fp16(raw.reshape(n, -1, 144)[..., 0:2]), _fp16(raw.reshape(n, -1, 144)[..., 2:4])
    s = b[..., 4:16]
    sc = np.empty(b.shape[:2] + (8,), np.int64)
    mn = np.empty_like(sc)
    for j in range(8):
        if j < 4:
            sc[..., j], mn[..., j] = s[..., j] & 63, s[..., j + 4] & 63
        else:
            sc[..., j] = (s[..., j + 4] & 0xF) | ((s[..., j - 4] >> 6) << 4)
            mn[..., j] = (s[..., j + 4] >> 4) | ((s[..., j] >> 6) << 4)
    qs = b[..., 16:144].reshape(n, -1, 4, 32)
    q = np.concatenate([qs & 0xF, qs >> 4], axis=-1).reshape(n, -1, 256)  # 64j..: low, high
    return q, sc, mn, d[..., 0], dmin[..., 0]


def _q6k_blocks(raw: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Q6_K rows -> q - 32 [N, nb, 256], int8 scales per 16 values [N, nb, 16], d [N, nb]."""
    n = raw.shape[0]
    b = raw.reshape(n, k // 256, 210).astype(np.int64)
    q = np.empty(b.shape[:2] + (256,), np.int64)
    for h in range(2):
        ql, qh = b[..., 64 * h : 64 * h + 64], b[..., 128 + 32 * h : 128 + 32 * h + 32]
        o = 128 * h
        q[..., o : o + 32] = (ql[..., :32] & 0xF) | ((qh & 3) << 4)
        q[..., o + 32 : o + 64] = (ql[..., 32:] & 0xF) | (((qh >> 2) & 3) << 4)
        q[..., o + 64 : o + 96] = (ql[..., :32] >> 4) | (((qh >> 4) & 3) << 4)
        q[..., o + 96 : o + 128] = (ql[..., 32:] >> 4) | (((qh >> 6) & 3) << 4)
    sc = raw.reshape(n, -1, 210)[..., 192:208].copy().view(np.int8).astype(np.int64)
    return q - 32, sc, _fp16(raw.reshape(n, -1, 210)[..., 208:210])[..., 0]


def _emulate_q4k_repacked(raw: np.ndarray, x: torch.Tensor, gemm_rows: int) -> torch.Tensor:
    """ggml_gemm_q4_K_8x8_q8_K (rows < gemm_rows: an FMA per 64 values) and
    ggml_gemv_q4_K_8x8_q8_K (the others: one per 256), two accumulators, acc - accm."""
    m, k = x.shape
    q, sc, mn, d, dmin = _q4k_blocks(raw, k)
    q8, d8 = ref_q8_k(x.numpy())
    q8 = q8.astype(np.int64)
    # integer sums per 32 values: [N, M, nb, 8]
    dots = np.einsum("nbsv,mbsv->nmbs", q.reshape(*q.shape[:2], 8, 32), q8.reshape(m, -1, 8, 32))
    isub = dots * sc[:, None]
    msub = mn[:, None] * q8.reshape(m, -1, 8, 32).sum(-1)[None]
    y = np.empty((m, raw.shape[0]), np.float32)
    for i in range(m):
        step = 2 if i < gemm_rows else 8  # sub-blocks per FMA
        for n in range(raw.shape[0]):
            acc = accm = np.float32(0)
            for b in range(k // 256):
                dd, dm = d[n, b] * d8[i, b], dmin[n, b] * d8[i, b]
                for j in range(0, 8, step):
                    acc = _fma(np.float32(isub[n, i, b, j : j + step].sum()), dd, acc)
                    accm = _fma(np.float32(msub[n, i, b, j : j + step].sum()), dm, accm)
            y[i, n] = acc - accm
    return torch.from_numpy(y)


def _emulate_q40_repacked(raw: np.ndarray, x: torch.Tensor) -> torch.Tensor:
    """ggml's q4_0_8x8 gemm and gemv: acc += isum * (d_w * d_a), an FMA per 32 values."""
    m, k = x.shape
    n = raw.shape[0]
    b = raw.reshape(n, k // 32, 18)
    dw = _fp16(b[..., 0:2])[..., 0]
    qs = b[..., 2:].astype(np.int64)
    q = np.concatenate([qs & 0xF, qs >> 4], axis=-1) - 8
    q8, d8, _ = ref_q8_0(x.numpy(), False)
    isum = np.einsum("nbv,mbv->nmb", q, q8.astype(np.int64))
    y = np.empty((m, n), np.float32)
    for i in range(m):
        for j in range(n):
            acc = np.float32(0)
            for bb in range(k // 32):
                acc = _fma(np.float32(isum[j, i, bb]), dw[j, bb] * d8[i, bb], acc)
            y[i, j] = acc
    return torch.from_numpy(y)


def _emulate_tiled(t: Q, raw: np.ndarray, x: torch.Tensor) -> torch.Tensor:
    """ggml-cpu/tiled, per 256 values: res = d_w * isum, res -= dmin_w * msum (FMA, Q4_K),
    acc += res * d_a (FMA)."""
    m, k = x.shape
    q8, d8 = ref_q8_k(x.numpy())
    q8 = q8.astype(np.int64)
    if t == Q.Q4_K:
        q, sc, mn, d, dmin = _q4k_blocks(raw, k)
        group = 32
    else:
        q, sc, d = _q6k_blocks(raw, k)
        mn, dmin, group = np.zeros_like(sc), np.zeros_like(d), 16
    g = 256 // group
    dots = np.einsum(
        "nbsv,mbsv->nmbs", q.reshape(*q.shape[:2], g, group), q8.reshape(m, -1, g, group)
    )
    isum = (dots * sc[:, None]).sum(-1)
    msum = (mn[:, None] * q8.reshape(m, -1, g, group).sum(-1)[None]).sum(-1)
    y = np.empty((m, raw.shape[0]), np.float32)
    for i in range(m):
        for n in range(raw.shape[0]):
            acc = np.float32(0)
            for b in range(k // 256):
                res = d[n, b] * np.float32(isum[n, i, b])
                if t == Q.Q4_K:
                    res = _fma(-dmin[n, b], np.float32(msum[n, i, b]), res)
                acc = _fma(res, d8[i, b], acc)
            y[i, n] = acc
    return torch.from_numpy(y)


@pytest.mark.parametrize("m", (1, 3, 4, 6, 9))
def test_repacked_q4k_follows_ggml_gemm_and_gemv(m: int) -> None:
    """A Q4_K weight of 16 rows (a multiple of 8: llama.cpp repacks it): rows [0, M - M % 4)
    in the gemm's order when M > 3, the others in the gemv's; AVX2 and portable C alike.
    ggml_vec_dot_q4_K_q8_K's order (the "vec_dot" order) gives other bits."""
    t, n, k = Q.Q4_K, 16, 512
    raw = make_weight(t, n, k, seed=11)
    w = torch.from_numpy(raw)
    x = make_x(m, k, seed=12)
    gemm_rows = m - m % 4 if m > 3 else 0
    want = _emulate_q4k_repacked(raw, x, gemm_rows)
    assert QMatrix(w, t, n, k).repacked
    for scalar in (False, True):
        assert torch.equal(qmatmul(x, w, t, n, k, _scalar=scalar), want), scalar
    # each row as a one-row call: all in the gemv's order
    with kernels.rows_alone():
        assert torch.equal(qmatmul(x, w, t, n, k), _emulate_q4k_repacked(raw, x, 0))
    old = kernels.set_order("vec_dot")
    try:
        assert not torch.equal(qmatmul(x, w, t, n, k), want)
    finally:
        kernels.set_order(old)


def test_repacked_q4k_gemm_rows_take_the_other_tie_sign() -> None:
    """ggml quantizes gemm rows with quantize_mat_q8_K, which picks the positive one of +amax
    and -amax (quantize_row_q8_K_ref: the first), negating a block's q, bsums and d: the
    products keep their bits, so the one rounding the kernels use gives the same result."""
    t, n, k = Q.Q4_K, 8, 256
    raw = make_weight(t, n, k, seed=13)
    x = make_x(4, k, seed=14).clamp(-3, 3)
    x[:, 5], x[:, 9] = -4.0, 4.0  # -amax first: the two rules disagree
    q8, d8 = ref_q8_k(x.numpy())
    assert (d8 > 0).all()  # the reference rule: iscale = -127/max with max = -4
    want = _emulate_q4k_repacked(raw, x, 4)
    q, sc, mn, d, dmin = _q4k_blocks(raw, k)
    # the same emulation from quantize_mat_q8_K's blocks (q and d negated)
    neg = np.einsum(
        "nsv,msv->nms", q[:, 0].reshape(n, 8, 32), -q8[:, 0].astype(np.int64).reshape(4, 8, 32)
    )
    y = np.empty((4, n), np.float32)
    for i in range(4):
        for j in range(n):
            acc = accm = np.float32(0)
            dd, dm = d[j, 0] * -d8[i, 0], dmin[j, 0] * -d8[i, 0]
            for p in range(0, 8, 2):
                isum = (neg[j, i, p : p + 2] * sc[j, 0, p : p + 2]).sum()
                msum = (
                    mn[j, 0, p : p + 2]
                    * -q8[i, 0].astype(np.int64).reshape(8, 32)[p : p + 2].sum(-1)
                ).sum()
                acc = _fma(np.float32(isum), dd, acc)
                accm = _fma(np.float32(msum), dm, accm)
            y[i, j] = acc - accm
    assert torch.equal(torch.from_numpy(y), want)
    assert torch.equal(qmatmul(x, torch.from_numpy(raw), t, n, k), want)


@pytest.mark.parametrize("m", (1, 5, 9))
def test_repacked_q4_0_follows_ggml_order(m: int) -> None:
    """A Q4_0 weight of 24 rows (repacked): one FMA per block, whatever the row (gemm and
    gemv sum alike), also on the decode step's two-rows-at-once path (M = 1)."""
    t, n, k = Q.Q4_0, 24, 256
    raw = make_weight(t, n, k, seed=15)
    w = torch.from_numpy(raw)
    x = make_x(m, k, seed=16)
    want = _emulate_q40_repacked(raw, x)
    for scalar in (False, True):
        assert torch.equal(qmatmul(x, w, t, n, k, _scalar=scalar), want), scalar
    with kernels.rows_alone():
        assert torch.equal(qmatmul(x, w, t, n, k), want)
    old = kernels.set_order("vec_dot")
    try:
        assert not torch.equal(qmatmul(x, w, t, n, k), want)
    finally:
        kernels.set_order(old)
    # 20 rows: not repacked, vec_dot's order
    assert not QMatrix(w[:20], t, 20, k).repacked
    y20 = qmatmul(x, w[:20], t, 20, k)
    old = kernels.set_order("vec_dot")
    try:
        assert torch.equal(qmatmul(x, w[:20], t, 20, k), y20)
    finally:
        kernels.set_order(old)
    assert not torch.equal(y20, want[:, :20])


@pytest.mark.parametrize(("t", "n"), ((Q.Q6_K, 16), (Q.Q4_K, 12)), ids=("Q6_K", "Q4_K-12rows"))
def test_kquants_from_8_rows_follow_ggml_tiled_order(t: Q, n: int) -> None:
    """Not repacked K-quants (any Q6_K; a Q4_K of 12 rows) times 8 rows or more: the tiled
    kernels' order for every row; below 8 rows each row is its one-row call (vec_dot)."""
    k = 512
    raw = make_weight(t, n, k, seed=17)
    w = torch.from_numpy(raw)
    x = make_x(9, k, seed=18)
    want = _emulate_tiled(t, raw, x)
    for scalar in (False, True):
        assert torch.equal(qmatmul(x, w, t, n, k, _scalar=scalar), want), scalar
        assert torch.equal(qmatmul(x[:8], w, t, n, k, _scalar=scalar), want[:8]), scalar
    seven = qmatmul(x[:7], w, t, n, k)
    singles = torch.cat([qmatmul(x[i : i + 1], w, t, n, k) for i in range(7)])
    assert torch.equal(seven, singles)
    assert not torch.equal(seven, want[:7])
    with kernels.rows_alone():
        assert torch.equal(qmatmul(x, w, t, n, k)[:7], singles)


def test_order_setting() -> None:
    assert kernels.order() == "llama"
    assert kernels.set_order("rows") == "llama"
    try:
        assert kernels.order() == "rows"
        with kernels.rows_alone():
            assert kernels.order() == "rows"
    finally:
        assert kernels.set_order("llama") == "rows"
    with kernels.rows_alone():
        with kernels.rows_alone():
            assert kernels.order() == "rows"
        assert kernels.order() == "rows"
    assert kernels.order() == "llama"
    with pytest.raises(ValueError):
        kernels.set_order("fast")
