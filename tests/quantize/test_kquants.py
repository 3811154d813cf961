"""K-quant quantizers: the same codes as ggml's C reference, error levels like ggml's tests."""

from __future__ import annotations

import kquant_reference as ref
import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf.quants import quantize as gguf_quantize

from corral.quant import dequantize
from corral.quantize.kquants import K_QUANTIZERS, quantize_q4_k, quantize_q5_k, quantize_q6_k

f32 = np.float32


def _blocks() -> np.ndarray:
    """Super-blocks that exercise the corner cases: outliers, zeros, constants, signs."""
    rng = np.random.default_rng(1)
    spikes = np.where(rng.random(256) < 0.02, 20.0, 1.0)
    rows = [
        rng.standard_normal(256),
        rng.standard_normal(256) * spikes,
        np.zeros(256),
        np.full(256, 0.3),
        np.abs(rng.standard_normal(256)) + 1,
        rng.standard_normal(256) * 1e-3,
        -np.abs(rng.standard_normal(256)),
        np.concatenate([np.zeros(128), rng.standard_normal(128)]),
    ]
    return np.array(rows, dtype=np.float32)


@pytest.mark.parametrize(
    ("qtype", "fn", "args"),
    [(Q.Q4_K, quantize_q4_k, (15, -1.0, 0.1, 20)), (Q.Q5_K, quantize_q5_k, (31, -0.5, 0.1, 15))],
)
def test_affine_k_quants_match_the_scalar_reference(qtype, fn, args) -> None:
    x = _blocks()
    got = dequantize(fn(x), qtype, x.shape).numpy()
    for i, block in enumerate(x):
        d, dmin, ls, lm, codes = ref.quantize_q4_k_block(block, *args)
        want = np.array(
            [f32(f32(d) * ls[j // 32]) * f32(codes[j]) - f32(f32(dmin) * lm[j // 32])
             for j in range(256)], dtype=np.float32,
        )  # fmt: skip
        np.testing.assert_array_equal(got[i], want, err_msg=f"block {i}")


def test_q6_k_matches_the_scalar_reference() -> None:
    x = _blocks()
    got = dequantize(quantize_q6_k(x), Q.Q6_K, x.shape).numpy()
    for i, block in enumerate(x):
        d, sc, codes = ref.quantize_q6_k_block(block)
        want = np.array(
            [f32(f32(d) * sc[j // 16]) * f32(codes[j] - 32) for j in range(256)], dtype=np.float32
        )
        np.testing.assert_array_equal(got[i], want, err_msg=f"block {i}")


def _ggml_test_error(qtype: Q, blocks: np.ndarray, x: np.ndarray) -> float:
    """test-quantize-fns' metric: sqrt(sum of squared errors) / n."""
    y = dequantize(blocks.reshape(1, -1), qtype, (1, x.size)).numpy().ravel()
    return float(np.sqrt(np.sum((x.astype(np.float64) - y) ** 2)) / x.size)


def test_error_on_ggml_test_data_is_within_ggml_limits() -> None:
    # test-quantize-fns: 0.1 + 2 cos(i) over 4096 values, error below 0.002 for these types
    x = (0.1 + 2 * np.cos(np.arange(4096, dtype=np.float32))).astype(np.float32)
    # (Q2_K and Q3_K have their own, looser limits: test_low_bit_kquants.py)
    types = (Q.Q4_K, Q.Q5_K, Q.Q6_K)
    errors = {q: _ggml_test_error(q, K_QUANTIZERS[q](x.reshape(-1, 256)), x) for q in types}
    assert all(e < 0.002 for e in errors.values()), errors
    assert errors[Q.Q6_K] < errors[Q.Q5_K] < errors[Q.Q4_K]


def test_k_quants_beat_the_legacy_types_of_similar_size() -> None:
    rng = np.random.default_rng(0)
    g = rng.standard_normal((64, 1024)).astype(np.float32)

    def rmse(qtype: Q, blocks: np.ndarray) -> float:
        y = dequantize(blocks.reshape(64, -1), qtype, g.shape).numpy()
        return float(np.sqrt(np.mean((g - y) ** 2)))

    k = {q: rmse(q, fn(g.reshape(-1, 256))) for q, fn in K_QUANTIZERS.items()}
    legacy = {q: rmse(q, gguf_quantize(g, q)) for q in (Q.Q4_1, Q.Q5_1, Q.Q8_0)}
    # 4.5 bpw Q4_K under 5 bpw Q4_1; 5.5 bpw Q5_K under 6 bpw Q5_1; Q6_K between Q5 and Q8
    assert k[Q.Q4_K] < legacy[Q.Q4_1]
    assert k[Q.Q5_K] < legacy[Q.Q5_1]
    assert legacy[Q.Q8_0] < k[Q.Q6_K] < k[Q.Q5_K]
    assert k[Q.Q4_K] < 0.08 and k[Q.Q6_K] < 0.02  # relative to unit-variance weights


def test_block_sizes_match_ggml() -> None:
    x = np.ones((3, 256), dtype=np.float32)
    assert quantize_q4_k(x).shape == (3, 144)
    assert quantize_q5_k(x).shape == (3, 176)
    assert quantize_q6_k(x).shape == (3, 210)
