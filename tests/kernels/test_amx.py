"""The AMX dense route (corral._amx) against the float32 dense route it replaces and against
the float64 reference of llama.cpp's arithmetic (tests/kernels/test_qkernels.py).

The AMX route forms ggml's exact integer block sums, so it must be at least as close to the
reference and to the integer kernels as the float32 GEMM on dequantized weights was.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q
from test_qkernels import make_weight, make_x, reference, rel_err

from corral import kernels
from corral.kernels import QMatrix, qmatmul, qmatmul_many

AMX_TYPES = (Q.Q4_0, Q.Q5_0, Q.Q8_0, Q.Q4_K, Q.Q5_K, Q.Q6_K)
TOL = 1e-6  # max |y - ref| / max |ref|; measured 4e-8 .. 3.2e-7

# needs a CPU with AMX-INT8: deselected elsewhere (tests/conftest.py)
pytestmark = pytest.mark.amx


def _routes(t: Q, raw: np.ndarray, n: int, k: int) -> tuple[QMatrix, QMatrix]:
    w = torch.from_numpy(raw)
    amx = QMatrix(w, t, n, k, dense_rows=1)
    old = QMatrix(w, t, n, k, dense_rows=1)
    old.amx = False  # the float32 GEMM on dequantized weights
    assert amx.amx
    return amx, old


@pytest.mark.parametrize("t", AMX_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("mnk", [(70, 96, 512), (16, 16, 256), (33, 40, 768), (5, 3, 256)])
def test_amx_matches_reference_and_float_route(t: Q, mnk: tuple[int, int, int]) -> None:
    """Partial tiles on both sides (M, N not multiples of 16), one and several blocks."""
    m, n, k = mnk
    raw = make_weight(t, n, k, seed=m + n)
    x = make_x(m, k, seed=k)
    amx, old = _routes(t, raw, n, k)
    ref = reference(t, raw, x)
    y = amx(x)
    assert y.shape == (m, n)
    err = rel_err(y, ref)
    assert err <= TOL
    assert err <= 2 * rel_err(old(x), ref) + 1e-7  # no worse than the route it replaces
    integer = qmatmul(x, torch.from_numpy(raw), t, n, k)
    assert float((y - integer).abs().max() / ref.abs().max()) <= TOL


@pytest.mark.parametrize("t", (Q.Q4_0, Q.Q5_0, Q.Q8_0), ids=lambda t: t.name)
@pytest.mark.parametrize("k", [32, 96, 640])
def test_amx_32_value_types_odd_and_even_block_counts(t: Q, k: int) -> None:
    """The 32-value types keep two blocks in flight (amx.c tile_rows32): one block, an odd
    count (3) and Gemma 3 270M's width (20 blocks) match the integer kernels."""
    m, n = 37, 40
    raw = make_weight(t, n, k, seed=k)
    x = make_x(m, k, seed=k + 1)
    amx, _ = _routes(t, raw, n, k)
    y = amx(x)
    ref = reference(t, raw, x)
    assert rel_err(y, ref) <= TOL
    integer = qmatmul(x, torch.from_numpy(raw), t, n, k)
    assert float((y - integer).abs().max() / ref.abs().max()) <= TOL


def test_amx_threads_and_zero_rows() -> None:
    t, n, k = Q.Q6_K, 48, 512
    raw = make_weight(t, n, k, seed=3)
    amx, _ = _routes(t, raw, n, k)
    x = make_x(40, k, seed=4)
    x[7] = 0.0  # a zero row: activation scale 0
    one = amx(x, n_threads=1)
    assert torch.equal(one, amx(x, n_threads=2))  # each output has one summation order
    assert torch.equal(one[7], torch.zeros(n))
    assert rel_err(one, reference(t, raw, x)) <= TOL


def test_qmatmul_many_shares_amx_rounding() -> None:
    """q/k/v-like matrices of mixed types (AMX and not) on one input equal separate calls."""
    k = 512
    specs = [(Q.Q5_0, 64), (Q.Q8_0, 32), (Q.Q4_1, 48), (Q.Q4_K, 80)]
    mats = []
    for i, (t, n) in enumerate(specs):
        mats.append(QMatrix(torch.from_numpy(make_weight(t, n, k, seed=i)), t, n, k, dense_rows=1))
    assert [q.amx for q in mats] == [True, True, False, True]
    x = make_x(80, k, seed=11)
    for got, q in zip(qmatmul_many(x, mats), mats, strict=True):
        assert torch.equal(got, q(x))


@pytest.mark.parametrize("t", (Q.Q4_K, Q.Q5_K), ids=lambda t: t.name)
def test_amx_kquant_mins_in_kernel(t: Q) -> None:
    """Q4_K/Q5_K's min term is formed in C from the raw blocks: one and two threads give the
    same bits, and the matrix keeps no per-matrix float copy of its mins afterwards."""
    n, k = 40, 768
    raw = make_weight(t, n, k, seed=5)
    amx, _ = _routes(t, raw, n, k)
    x = make_x(37, k, seed=6)
    one = amx(x, n_threads=1)
    assert torch.equal(one, amx(x, n_threads=2))
    assert rel_err(one, reference(t, raw, x)) <= TOL
    kept = [getattr(amx, s, None) for s in type(amx).__slots__]
    assert all(v is None or v is amx.w for v in kept if isinstance(v, torch.Tensor))


@pytest.mark.parametrize(
    ("t", "n"),
    ((Q.Q4_K, 96), (Q.Q4_K, 36), (Q.Q5_K, 40), (Q.Q6_K, 40), (Q.Q4_0, 96)),
    ids=("Q4_K-repacked", "Q4_K-36rows", "Q5_K", "Q6_K", "Q4_0-repacked"),
)
@pytest.mark.parametrize("m", (33, 70))
def test_amx_follows_llama_cpp_kernels_like_the_integer_ones(t: Q, n: int, m: int) -> None:
    """Where llama.cpp leaves ggml_vec_dot (repacked Q4_K and Q4_0 weights, K-quants from 8
    rows: qkernels.c), the AMX route sums in the integer kernels' order, bit for bit: repacked
    Q4_K as ggml's gemm for rows [0, M - M % 4) and its gemv for the rest (M = 33: 32 + 1),
    the others tiled; in the "rows" order the repacked weights still agree (every row gemv)."""
    k = 768
    raw = make_weight(t, n, k, seed=m + n)
    x = make_x(m, k, seed=k + m)
    amx, _ = _routes(t, raw, n, k)
    w = torch.from_numpy(raw)
    assert torch.equal(amx(x), qmatmul(x, w, t, n, k))
    if amx.repacked:
        with kernels.rows_alone():
            assert torch.equal(amx(x), qmatmul(x, w, t, n, k))
