"""K-quant quantization: float32 rows -> Q2_K, Q3_K, Q4_K, Q5_K and Q6_K super-blocks.

The arithmetic follows ggml's reference quantizers (`quantize_row_q{2,3,4,5,6}_K_ref`, the
path llama-quantize takes without an importance matrix): per sub-block a weighted search
for scale and minimum (`make_qkx2_quants`: Q2_K on 16 elements with absolute error, Q4_K /
Q5_K on 32 with squared error), or a signed scale search (`make_q3_quants` for Q3_K,
`make_qx_quants` for Q6_K), the sub-block scales then quantized to 4, 6 or 8 bits against
one f16 super-scale, and the elements re-quantized against the rounded scales.

Everything runs on whole arrays of sub-blocks at once (numpy, float32 like ggml's C), so a
chunk of rows costs a few dozen vector passes instead of a Python loop per block.
`nearest` is ggml's `nearest_int` (round half to even, what the FPU's magic-number trick
does). The block layouts are the ones `corral.quant.k_quants` reads back.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from gguf import GGMLQuantizationType as Q

QK_K = 256
_F32 = np.float32
# ggml's GROUP_MAX_EPS: a sub-block whose largest magnitude is below this is all zeros
_GROUP_MAX_EPS = _F32(1e-15)


def nearest(x: np.ndarray) -> np.ndarray:
    """ggml's nearest_int on a float32 array: round half to even, as int32."""
    return np.rint(x).astype(np.int32)


def _f16_round(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 -> (its f16 bytes as uint8 [..., 2], the f16 value back as float32)."""
    h = x.astype(np.float16)
    return h.view(np.uint8).reshape(*x.shape, 2), h.astype(_F32)


def make_qkx2_quants(
    x: np.ndarray, w: np.ndarray, nmax: int, rmin: float, rdelta: float, nstep: int,
    use_mad: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Affine quantization of each row of x [n, k] to codes 0..nmax with weights w [n, k].

    Returns (scale [n], minus_min [n], codes uint8 [n, k]) with x ~= scale * code - minus_min,
    minus_min >= 0: ggml's make_qkx2_quants for every row at once; the error is squared, or
    absolute with use_mad (as Q2_K asks).
    """
    x = x.astype(_F32, copy=False)
    w = w.astype(_F32, copy=False)
    mx = x.max(axis=1)
    mn = np.minimum(x.min(axis=1), _F32(0))
    sum_w = w.sum(axis=1)
    sum_x = (w * x).sum(axis=1)
    flat = mx == mn
    span = np.where(flat, _F32(1), mx - mn)

    def codes(iscale: np.ndarray, lo: np.ndarray) -> np.ndarray:
        # [n, k] codes for one inverse scale per row; a degenerate span gives 0s, not NaNs
        v = iscale[:, None] * (x - lo[:, None])
        v = np.where(np.isfinite(v), v, _F32(0))
        return np.clip(nearest(v), 0, nmax)

    iscale = (_F32(nmax) / span).astype(_F32)
    scale = (_F32(1) / iscale).astype(_F32)
    loss = np.abs if use_mad else np.square
    best = codes(iscale, mn)
    best_err = (w * loss(scale[:, None] * best + mn[:, None] - x)).sum(axis=1)
    lo = mn.copy()
    for step in range(nstep + 1):
        # ggml moves `min` (and with it max - min) whenever a step improves the fit
        denom = mx - lo
        with np.errstate(divide="ignore", invalid="ignore"):
            iscale = (_F32(rmin) + _F32(rdelta) * _F32(step) + _F32(nmax)) / denom
        iscale = np.where(denom > 0, iscale, _F32(0)).astype(_F32)
        cand = codes(iscale, lo)
        lf = cand.astype(_F32)
        sum_l = (w * lf).sum(axis=1)
        sum_l2 = (w * lf * lf).sum(axis=1)
        sum_xl = (w * lf * x).sum(axis=1)
        det = sum_w * sum_l2 - sum_l * sum_l
        ok = det > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / det
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det
            # a positive minimum is clamped to 0 and the scale refitted alone
            pos = this_min > 0
            this_scale = np.where(pos, sum_xl / sum_l2, this_scale)
        this_min = np.where(pos, _F32(0), this_min)
        err = (w * loss(this_scale[:, None] * lf + this_min[:, None] - x)).sum(axis=1)
        better = ok & (err < best_err) & np.isfinite(err)
        best = np.where(better[:, None], cand, best)
        best_err = np.where(better, err, best_err)
        scale = np.where(better, this_scale, scale).astype(_F32)
        lo = np.where(better, this_min, lo).astype(_F32)
    scale = np.where(flat, _F32(0), scale)
    best = np.where(flat[:, None], 0, best)
    return scale, -lo, best.astype(np.uint8)


def make_qx_quants(x: np.ndarray, nmax: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric quantization of each row of x [n, k] to codes -nmax..nmax-1, weighted by x^2.

    Returns (scale [n] (may be negative), codes + nmax as uint8 [n, k]): ggml's
    make_qx_quants with rmse_type 1 and no importance weights, every row at once.
    """
    x = x.astype(_F32, copy=False)
    n = x.shape[0]
    pick = np.abs(x).argmax(axis=1)  # the first largest magnitude, as ggml's strict `>`
    peak = x[np.arange(n), pick]
    zero = np.abs(peak) < _GROUP_MAX_EPS
    peak = np.where(zero, _F32(1), peak)
    w = x * x

    def fit(iscale: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        lvl = np.clip(nearest(iscale[:, None] * x), -nmax, nmax - 1)
        lf = lvl.astype(_F32)
        return lvl, (w * x * lf).sum(axis=1), (w * lf * lf).sum(axis=1)

    lvl, sumlx, suml2 = fit((_F32(-nmax) / peak).astype(_F32))
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(suml2 != 0, sumlx / suml2, _F32(0)).astype(_F32)
    best = scale * sumlx
    for step in (*range(-9, 0), *range(1, 10)):
        cand, slx, sl2 = fit((-(_F32(nmax) + _F32(0.1) * _F32(step)) / peak).astype(_F32))
        better = (sl2 > 0) & (slx * slx > best * sl2)
        lvl = np.where(better[:, None], cand, lvl)
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.where(better, slx / sl2, scale).astype(_F32)
        best = np.where(better, scale * slx, best)
    codes = np.where(zero[:, None], 0, lvl + nmax).astype(np.uint8)
    return np.where(zero, _F32(0), scale), codes


def make_q3_quants(x: np.ndarray, nmax: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric quantization of each row of x [n, k] to codes -nmax..nmax-1, weighted by x^2,
    refined element by element (ggml's make_q3_quants with do_rmse).

    Returns (scale [n], codes + nmax as uint8 [n, k]); an all-zero row gets scale 0, codes 0.
    """
    x = x.astype(_F32, copy=False)
    n, k = x.shape
    pick = np.abs(x).argmax(axis=1)
    peak = x[np.arange(n), pick]
    zero = np.abs(peak) < _GROUP_MAX_EPS
    iscale = (_F32(-nmax) / np.where(zero, _F32(1), peak)).astype(_F32)
    lvl = np.clip(nearest(iscale[:, None] * x), -nmax, nmax - 1)
    w = x * x
    lf = lvl.astype(_F32)
    sumlx = (w * x * lf).sum(axis=1)
    suml2 = (w * lf * lf).sum(axis=1)
    # ggml's coordinate descent: each element in turn moves to the level that best fits the
    # others' scale, kept when it raises sumlx^2 / suml2. Sequential within a row, so the
    # loop runs over elements, vectorized over rows; a row that changed nothing in a pass
    # would change nothing in the next either, so running every row 5 passes is the same.
    for _ in range(5):
        for i in range(k):
            xi, wi, li = x[:, i], w[:, i], lvl[:, i].astype(_F32)
            slx = sumlx - wi * xi * li
            sl2 = suml2 - wi * li * li
            with np.errstate(divide="ignore", invalid="ignore"):
                new = np.clip(nearest(np.where(slx > 0, xi * sl2 / slx, _F32(0))), -nmax, nmax - 1)
            nf = new.astype(_F32)
            slx_new = slx + wi * xi * nf
            sl2_new = sl2 + wi * nf * nf
            take = (slx > 0) & (new != lvl[:, i]) & (sl2_new > 0)
            take &= slx_new * slx_new * suml2 > sumlx * sumlx * sl2_new
            lvl[:, i] = np.where(take, new, lvl[:, i])
            sumlx = np.where(take, slx_new, sumlx)
            suml2 = np.where(take, sl2_new, suml2)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(zero | (suml2 == 0), _F32(0), sumlx / suml2).astype(_F32)
    codes = np.where(zero[:, None], 0, lvl + nmax).astype(np.uint8)
    return scale, codes


def _pack_2bit(codes: np.ndarray) -> np.ndarray:
    """Codes 0..3 uint8 [nb, 256] -> [nb, 64]: byte l of each 128-run holds elements l,
    l+32, l+64, l+96 in bits 0-1, 2-3, 4-5, 6-7 (Q2_K's and Q3_K's qs)."""
    c = codes.reshape(codes.shape[0], 2, 4, 32)
    return (c[:, :, 0] | (c[:, :, 1] << 2) | (c[:, :, 2] << 4) | (c[:, :, 3] << 6)).reshape(-1, 64)


def quantize_q2_k(x: np.ndarray) -> np.ndarray:
    """float32 [nb, 256] -> Q2_K blocks uint8 [nb, 84] (scales[16] | qs[64] | d | dmin).

    Each scales byte holds a 16-element sub-block's scale (low nibble) and min (high)."""
    nb = x.shape[0]
    sub = x.reshape(nb * 16, 16).astype(_F32, copy=False)
    scales, mins, codes = make_qkx2_quants(sub, np.abs(sub), 3, -0.5, 0.1, 15, use_mad=True)
    scales, mins = scales.reshape(nb, 16), mins.reshape(nb, 16)
    max_scale = np.maximum(scales.max(axis=1), _F32(0))
    max_min = np.maximum(mins.max(axis=1), _F32(0))
    with np.errstate(divide="ignore"):
        inv_scale = np.where(max_scale > 0, _F32(15) / max_scale, _F32(0)).astype(_F32)
        inv_min = np.where(max_min > 0, _F32(15) / max_min, _F32(0)).astype(_F32)
    # ggml stores nearest_int into the uint8_t field as is (then ORs in the min << 4)
    ls = (nearest(inv_scale[:, None] * scales) & 0xFF).astype(np.uint8)
    lm = (nearest(inv_min[:, None] * mins) & 0xFF).astype(np.uint8)
    packed = ls | (lm << 4)
    d_bytes, d = _f16_round((max_scale / _F32(15)).astype(_F32))
    m_bytes, dmin = _f16_round((max_min / _F32(15)).astype(_F32))
    d_sub = d[:, None] * (packed & 0x0F).astype(_F32)  # [nb, 16]
    m_sub = dmin[:, None] * (packed >> 4).astype(_F32)
    xs = x.reshape(nb, 16, 16)
    with np.errstate(divide="ignore", invalid="ignore"):
        req = nearest((xs + m_sub[..., None]) / d_sub[..., None])
    req = np.clip(req, 0, 3).astype(np.uint8)
    codes = np.where((d_sub != 0)[..., None], req, codes.reshape(nb, 16, 16))
    return np.concatenate([packed, _pack_2bit(codes.reshape(nb, QK_K)), d_bytes, m_bytes], 1)


def quantize_q3_k(x: np.ndarray) -> np.ndarray:
    """float32 [nb, 256] -> Q3_K blocks uint8 [nb, 110] (hmask[32] | qs[64] | scales[12] | d).

    3-bit codes: the low 2 bits in qs (as Q2_K), the third in hmask (bit r of byte m is
    element 32 r + m); 6-bit signed sub-block scales, low nibbles in scales[0:8], the top
    2 bits in scales[8:12]."""
    nb = x.shape[0]
    scales, codes = make_q3_quants(x.reshape(nb * 16, 16), 4)
    scales, codes = scales.reshape(nb, 16), codes.reshape(nb, 16, 16)
    pick = np.abs(scales).argmax(axis=1)
    max_scale = scales[np.arange(nb), pick]
    zero = max_scale == 0
    with np.errstate(divide="ignore"):
        iscale = np.where(zero, _F32(0), _F32(-32) / np.where(zero, 1, max_scale)).astype(_F32)
        inv = np.where(zero, _F32(0), _F32(1) / np.where(zero, 1, iscale)).astype(_F32)
    l6 = (np.clip(nearest(iscale[:, None] * scales), -32, 31) + 32).astype(np.uint8)
    l6 = np.where(zero[:, None], 0, l6).astype(np.uint8)  # ggml leaves scales all 0 then
    sc = np.zeros((nb, 12), dtype=np.uint8)
    sc[:, 0:8] = (l6[:, 0:8] & 0x0F) | ((l6[:, 8:16] & 0x0F) << 4)
    hi = (l6 >> 4).reshape(nb, 4, 4)  # [nb, j // 4, j % 4]
    sc[:, 8:12] = hi[:, 0] | (hi[:, 1] << 2) | (hi[:, 2] << 4) | (hi[:, 3] << 6)
    d_bytes, d = _f16_round(inv)
    d_sub = d[:, None] * (l6.astype(np.int32) - 32).astype(_F32)
    d_sub = np.where(zero[:, None], _F32(0), d_sub)
    with np.errstate(divide="ignore", invalid="ignore"):
        req = nearest(x.reshape(nb, 16, 16) / d_sub[..., None])
    req = (np.clip(req, -4, 3) + 4).astype(np.uint8)
    codes = np.where((d_sub != 0)[..., None], req, codes).reshape(nb, QK_K)
    high = codes >> 2  # [nb, 256]: bit r of hmask[m] is element 32 r + m
    hmask = np.bitwise_or.reduce(
        high.reshape(nb, 8, 32) << np.arange(8, dtype=np.uint8)[None, :, None], axis=1
    )
    return np.concatenate([hmask, _pack_2bit(codes & 3), sc, d_bytes], axis=1)


def _pack_scale_min_6bit(ls: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """6-bit scales and mins uint8 [nb, 8] each -> the 12-byte Q4_K/Q5_K scale field."""
    out = np.zeros((ls.shape[0], 12), dtype=np.uint8)
    out[:, 0:4] = ls[:, 0:4] | ((ls[:, 4:8] >> 4) << 6)
    out[:, 4:8] = lm[:, 0:4] | ((lm[:, 4:8] >> 4) << 6)
    out[:, 8:12] = (ls[:, 4:8] & 0x0F) | ((lm[:, 4:8] & 0x0F) << 4)
    return out


def _affine_superblocks(
    x: np.ndarray, nmax: int, rmin: float, rdelta: float, nstep: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Shared Q4_K/Q5_K work: x [nb, 256] -> (d f16 bytes, dmin f16 bytes, scales [nb, 12],
    codes uint8 [nb, 256] in 0..nmax)."""
    nb = x.shape[0]
    sub = x.reshape(nb * 8, 32)
    av_x = np.sqrt((sub * sub).sum(axis=1) / _F32(32))
    weights = av_x[:, None] + np.abs(sub)
    scales, mins, codes = make_qkx2_quants(sub, weights, nmax, rmin, rdelta, nstep)
    scales, mins = scales.reshape(nb, 8), mins.reshape(nb, 8)
    max_scale = np.maximum(scales.max(axis=1), _F32(0))
    max_min = np.maximum(mins.max(axis=1), _F32(0))
    with np.errstate(divide="ignore"):
        inv_scale = np.where(max_scale > 0, _F32(63) / max_scale, _F32(0)).astype(_F32)
        inv_min = np.where(max_min > 0, _F32(63) / max_min, _F32(0)).astype(_F32)
    # ggml stores nearest_int into a uint8_t before MIN(63, .): negatives wrap to 63
    ls = np.minimum(nearest(inv_scale[:, None] * scales) & 0xFF, 63).astype(np.uint8)
    lm = np.minimum(nearest(inv_min[:, None] * mins) & 0xFF, 63).astype(np.uint8)
    d_bytes, d = _f16_round((max_scale / _F32(63)).astype(_F32))
    m_bytes, dmin = _f16_round((max_min / _F32(63)).astype(_F32))
    # re-quantize against the scales as stored; a zero scale keeps the search's codes
    d_sub = d[:, None] * ls.astype(_F32)  # [nb, 8]
    m_sub = dmin[:, None] * lm.astype(_F32)
    xs = x.reshape(nb, 8, 32)
    with np.errstate(divide="ignore", invalid="ignore"):
        req = nearest((xs + m_sub[..., None]) / d_sub[..., None])
    req = np.clip(req, 0, nmax).astype(np.uint8)
    codes = np.where((d_sub != 0)[..., None], req, codes.reshape(nb, 8, 32))
    return d_bytes, m_bytes, _pack_scale_min_6bit(ls, lm), codes.reshape(nb, QK_K)


def quantize_q4_k(x: np.ndarray) -> np.ndarray:
    """float32 [nb, 256] -> Q4_K blocks uint8 [nb, 144] (d | dmin | scales[12] | qs[128])."""
    d, dmin, sc, codes = _affine_superblocks(x, 15, -1.0, 0.1, 20)
    nb = x.shape[0]
    c = codes.reshape(nb, 4, 2, 32)  # 64-element chunks: low nibbles, then high nibbles
    qs = (c[:, :, 0] | (c[:, :, 1] << 4)).reshape(nb, 128)
    return np.concatenate([d, dmin, sc, qs], axis=1)


def quantize_q5_k(x: np.ndarray) -> np.ndarray:
    """float32 [nb, 256] -> Q5_K blocks uint8 [nb, 176] (d | dmin | scales | qh[32] | qs)."""
    d, dmin, sc, codes = _affine_superblocks(x, 31, -0.5, 0.1, 15)
    nb = x.shape[0]
    c = codes.reshape(nb, 8, 32)  # run r of 32 elements gets bit r of qh
    low = c & 0x0F
    qs = (low[:, 0::2] | (low[:, 1::2] << 4)).reshape(nb, 128)
    bits = (c >> 4).astype(np.uint8) << np.arange(8, dtype=np.uint8)[None, :, None]
    qh = np.bitwise_or.reduce(bits, axis=1)  # [nb, 32]
    return np.concatenate([d, dmin, sc, qh, qs], axis=1)


def quantize_q6_k(x: np.ndarray) -> np.ndarray:
    """float32 [nb, 256] -> Q6_K blocks uint8 [nb, 210] (ql[128] | qh[64] | scales[16] | d)."""
    nb = x.shape[0]
    sub = x.reshape(nb * 16, 16)
    scales, codes = make_qx_quants(sub, 32)
    scales, codes = scales.reshape(nb, 16), codes.reshape(nb, 16, 16)
    pick = np.abs(scales).argmax(axis=1)
    max_scale = scales[np.arange(nb), pick]
    zero = np.abs(max_scale) < _GROUP_MAX_EPS
    with np.errstate(divide="ignore"):
        iscale = np.where(zero, _F32(0), _F32(-128) / np.where(zero, 1, max_scale)).astype(_F32)
        inv = np.where(zero, _F32(0), _F32(1) / np.where(zero, 1, iscale)).astype(_F32)
    d_bytes, d = _f16_round(inv)
    sc = np.minimum(nearest(iscale[:, None] * scales), 127).astype(np.int8)  # [nb, 16]
    d_sub = d[:, None] * sc.astype(_F32)
    with np.errstate(divide="ignore", invalid="ignore"):
        req = nearest(x.reshape(nb, 16, 16) / d_sub[..., None])
    req = (np.clip(req, -32, 31) + 32).astype(np.uint8)
    codes = np.where((d_sub != 0)[..., None], req, codes).reshape(nb, 2, 4, 32)
    ql = np.concatenate(
        [codes[:, :, 0] & 0x0F | ((codes[:, :, 2] & 0x0F) << 4),
         codes[:, :, 1] & 0x0F | ((codes[:, :, 3] & 0x0F) << 4)], axis=2,
    ).reshape(nb, 128)  # fmt: skip
    hi = codes >> 4  # [nb, 2, 4, 32]
    qh = (hi[:, :, 0] | (hi[:, :, 1] << 2) | (hi[:, :, 2] << 4) | (hi[:, :, 3] << 6)).reshape(
        nb, 64
    )
    out = np.concatenate([ql, qh, sc.view(np.uint8), d_bytes], axis=1)
    out[zero] = 0  # ggml zeroes the whole block when every sub-block is empty
    return out


K_QUANTIZERS: dict[Q, Callable[[np.ndarray], np.ndarray]] = {
    Q.Q2_K: quantize_q2_k,
    Q.Q3_K: quantize_q3_k,
    Q.Q4_K: quantize_q4_k,
    Q.Q5_K: quantize_q5_k,
    Q.Q6_K: quantize_q6_k,
}
