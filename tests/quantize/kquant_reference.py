"""A line-by-line scalar port of ggml's reference K-quant quantizers, for a few blocks.

Slow (Python loops over elements) and deliberately naive: it checks that the vectorized
quantizers in corral.quantize.kquants compute the same codes as the C reference.
All arithmetic is float32, as in ggml-quants.c.
"""

from __future__ import annotations

import numpy as np

f32 = np.float32


def nearest_int(v: float) -> int:
    return int(np.rint(f32(v)))


def make_qkx2_quants(n, nmax, x, weights, rmin, rdelta, nstep):
    L = [0] * n
    mn = f32(x[0])
    mx = f32(x[0])
    sum_w = f32(weights[0])
    sum_x = f32(sum_w * x[0])
    for i in range(1, n):
        mn = min(mn, f32(x[i]))
        mx = max(mx, f32(x[i]))
        w = f32(weights[i])
        sum_w = f32(sum_w + w)
        sum_x = f32(sum_x + f32(w * x[i]))
    if mn > 0:
        mn = f32(0)
    if mx == mn:
        return f32(0), f32(-mn), [0] * n
    iscale = f32(f32(nmax) / f32(mx - mn))
    scale = f32(f32(1) / iscale)
    best_error = f32(0)
    for i in range(n):
        li = nearest_int(iscale * f32(x[i] - mn))
        L[i] = max(0, min(nmax, li))
        diff = f32(f32(scale * L[i]) + mn - x[i])
        best_error = f32(best_error + f32(weights[i]) * f32(diff * diff))
    for step in range(nstep + 1):
        iscale = f32((f32(rmin) + f32(rdelta) * step + nmax) / f32(mx - mn))
        aux = [0] * n
        sum_l = sum_l2 = sum_xl = f32(0)
        for i in range(n):
            li = max(0, min(nmax, nearest_int(iscale * f32(x[i] - mn))))
            aux[i] = li
            w = f32(weights[i])
            sum_l = f32(sum_l + w * li)
            sum_l2 = f32(sum_l2 + w * li * li)
            sum_xl = f32(sum_xl + w * li * f32(x[i]))
        D = f32(sum_w * sum_l2 - sum_l * sum_l)
        if D > 0:
            this_scale = f32(f32(sum_w * sum_xl - sum_x * sum_l) / D)
            this_min = f32(f32(sum_l2 * sum_x - sum_l * sum_xl) / D)
            if this_min > 0:
                this_min = f32(0)
                this_scale = f32(sum_xl / sum_l2)
            cur = f32(0)
            for i in range(n):
                diff = f32(this_scale * aux[i] + this_min - f32(x[i]))
                cur = f32(cur + f32(weights[i]) * diff * diff)
            if cur < best_error:
                L = aux
                best_error = cur
                scale = this_scale
                mn = this_min
    return scale, f32(-mn), L


def quantize_q4_k_block(x, nmax=15, rmin=-1.0, rdelta=0.1, nstep=20):
    """One super-block (256 floats) -> (d, dmin, ls[8], lm[8], L[256]) as ggml computes them."""
    L = [0] * 256
    scales, mins = [], []
    for j in range(8):
        sub = [f32(v) for v in x[32 * j : 32 * j + 32]]
        sum_x2 = f32(0)
        for v in sub:
            sum_x2 = f32(sum_x2 + v * v)
        av_x = f32(np.sqrt(f32(sum_x2 / 32)))
        w = [f32(av_x + abs(v)) for v in sub]
        s, m, lj = make_qkx2_quants(32, nmax, sub, w, rmin, rdelta, nstep)
        scales.append(s)
        mins.append(m)
        L[32 * j : 32 * j + 32] = lj
    max_scale = max([f32(0), *scales])
    max_min = max([f32(0), *mins])
    inv_scale = f32(63) / max_scale if max_scale > 0 else f32(0)
    inv_min = f32(63) / max_min if max_min > 0 else f32(0)
    ls = [min(63, nearest_int(inv_scale * s) & 0xFF) for s in scales]
    lm = [min(63, nearest_int(inv_min * m) & 0xFF) for m in mins]
    d = np.float16(f32(max_scale / f32(63)))
    dmin = np.float16(f32(max_min / f32(63)))
    for j in range(8):
        dj = f32(f32(d) * ls[j])
        if not dj:
            continue
        dm = f32(f32(dmin) * lm[j])
        for ii in range(32):
            L[32 * j + ii] = max(0, min(nmax, nearest_int(f32(f32(x[32 * j + ii]) + dm) / dj)))
    return d, dmin, ls, lm, L


def make_qx_quants(n, nmax, x):
    mx = f32(0)
    amax = f32(0)
    for v in x:
        if abs(v) > amax:
            amax = abs(f32(v))
            mx = f32(v)
    if amax < f32(1e-15):
        return f32(0), [0] * n
    iscale = f32(-nmax / mx)
    sumlx = suml2 = f32(0)
    L = [0] * n
    for i in range(n):
        li = max(-nmax, min(nmax - 1, nearest_int(iscale * f32(x[i]))))
        L[i] = li + nmax
        w = f32(x[i] * x[i])
        sumlx = f32(sumlx + w * f32(x[i]) * li)
        suml2 = f32(suml2 + w * li * li)
    scale = f32(sumlx / suml2) if suml2 else f32(0)
    best = f32(scale * sumlx)
    for step in range(-9, 10):
        if step == 0:
            continue
        iscale = f32(-(f32(nmax) + f32(0.1) * step) / mx)
        sumlx = suml2 = f32(0)
        for i in range(n):
            li = max(-nmax, min(nmax - 1, nearest_int(iscale * f32(x[i]))))
            w = f32(x[i] * x[i])
            sumlx = f32(sumlx + w * f32(x[i]) * li)
            suml2 = f32(suml2 + w * li * li)
        if suml2 > 0 and sumlx * sumlx > best * suml2:
            for i in range(n):
                li = nearest_int(iscale * f32(x[i]))
                L[i] = nmax + max(-nmax, min(nmax - 1, li))
            scale = f32(sumlx / suml2)
            best = f32(scale * sumlx)
    return scale, L


def quantize_q6_k_block(x):
    """One super-block -> (d, scales int8[16], L[256] in 0..63) as ggml computes them."""
    L = [0] * 256
    scales = []
    max_scale = f32(0)
    max_abs = f32(0)
    for ib in range(16):
        s, lb = make_qx_quants(16, 32, [f32(v) for v in x[16 * ib : 16 * ib + 16]])
        scales.append(s)
        L[16 * ib : 16 * ib + 16] = lb
        if abs(s) > max_abs:
            max_abs = abs(s)
            max_scale = s
    if max_abs < f32(1e-15):
        return np.float16(0), [0] * 16, [0] * 256
    iscale = f32(f32(-128) / max_scale)
    d = np.float16(f32(1) / iscale)
    sc = [min(127, nearest_int(iscale * s)) for s in scales]
    for j in range(16):
        dj = f32(f32(d) * sc[j])
        if not dj:
            continue
        for ii in range(16):
            L[16 * j + ii] = max(-32, min(31, nearest_int(f32(x[16 * j + ii]) / dj))) + 32
    return d, sc, L


def make_qkx2_quants_mad(n, nmax, x, weights, rmin, rdelta, nstep):
    """make_qkx2_quants with use_mad (absolute error), as Q2_K calls it."""
    L = [0] * n
    mn = f32(x[0])
    mx = f32(x[0])
    sum_w = f32(weights[0])
    sum_x = f32(sum_w * x[0])
    for i in range(1, n):
        mn = min(mn, f32(x[i]))
        mx = max(mx, f32(x[i]))
        w = f32(weights[i])
        sum_w = f32(sum_w + w)
        sum_x = f32(sum_x + f32(w * x[i]))
    if mn > 0:
        mn = f32(0)
    if mx == mn:
        return f32(0), f32(-mn), [0] * n
    iscale = f32(f32(nmax) / f32(mx - mn))
    scale = f32(f32(1) / iscale)
    best_error = f32(0)
    for i in range(n):
        L[i] = max(0, min(nmax, nearest_int(iscale * f32(x[i] - mn))))
        diff = f32(f32(scale * L[i]) + mn - x[i])
        best_error = f32(best_error + f32(weights[i]) * abs(diff))
    for step in range(nstep + 1):
        # ggml divides by (max - min) with min as updated by earlier improvements
        iscale = f32((f32(rmin) + f32(rdelta) * step + nmax) / f32(mx - mn))
        aux = [0] * n
        sum_l = sum_l2 = sum_xl = f32(0)
        for i in range(n):
            li = max(0, min(nmax, nearest_int(iscale * f32(x[i] - mn))))
            aux[i] = li
            w = f32(weights[i])
            sum_l = f32(sum_l + w * li)
            sum_l2 = f32(sum_l2 + w * li * li)
            sum_xl = f32(sum_xl + w * li * f32(x[i]))
        D = f32(sum_w * sum_l2 - sum_l * sum_l)
        if D > 0:
            this_scale = f32(f32(sum_w * sum_xl - sum_x * sum_l) / D)
            this_min = f32(f32(sum_l2 * sum_x - sum_l * sum_xl) / D)
            if this_min > 0:
                this_min = f32(0)
                this_scale = f32(sum_xl / sum_l2)
            cur = f32(0)
            for i in range(n):
                diff = f32(this_scale * aux[i] + this_min - f32(x[i]))
                cur = f32(cur + f32(weights[i]) * abs(diff))
            if cur < best_error:
                L = aux
                best_error = cur
                scale = this_scale
                mn = this_min
    return scale, f32(-mn), L


def quantize_q2_k_block(x):
    """One super-block -> (d, dmin, scales bytes[16], L[256] in 0..3) as ggml computes them."""
    L = [0] * 256
    scales, mins = [], []
    for j in range(16):
        sub = [f32(v) for v in x[16 * j : 16 * j + 16]]
        s, m, lj = make_qkx2_quants_mad(16, 3, sub, [abs(v) for v in sub], -0.5, 0.1, 15)
        scales.append(s)
        mins.append(m)
        L[16 * j : 16 * j + 16] = lj
    max_scale = max([f32(0), *scales])
    max_min = max([f32(0), *mins])
    sc = [0] * 16
    d = np.float16(0)
    dmin = np.float16(0)
    if max_scale > 0:
        iscale = f32(f32(15) / max_scale)
        sc = [nearest_int(iscale * s) & 0xFF for s in scales]
        d = np.float16(f32(max_scale / f32(15)))
    if max_min > 0:
        iscale = f32(f32(15) / max_min)
        sc = [(sc[j] | (nearest_int(iscale * mins[j]) << 4)) & 0xFF for j in range(16)]
        dmin = np.float16(f32(max_min / f32(15)))
    for j in range(16):
        dj = f32(f32(d) * (sc[j] & 0xF))
        if not dj:
            continue
        dm = f32(f32(dmin) * (sc[j] >> 4))
        for ii in range(16):
            L[16 * j + ii] = max(0, min(3, nearest_int(f32(f32(x[16 * j + ii]) + dm) / dj)))
    return d, dmin, sc, L


def make_q3_quants(n, nmax, x):
    """ggml's make_q3_quants with do_rmse: (scale, L in 0..2 nmax - 1)."""
    mx = f32(0)
    amax = f32(0)
    for v in x:
        if abs(v) > amax:
            amax = abs(f32(v))
            mx = f32(v)
    if amax < f32(1e-15):
        return f32(0), [0] * n
    iscale = f32(-nmax / mx)
    L = [0] * n
    sumlx = suml2 = f32(0)
    for i in range(n):
        li = max(-nmax, min(nmax - 1, nearest_int(iscale * f32(x[i]))))
        L[i] = li
        w = f32(x[i] * x[i])
        sumlx = f32(sumlx + w * f32(x[i]) * li)
        suml2 = f32(suml2 + w * li * li)
    for _ in range(5):
        changed = 0
        for i in range(n):
            w = f32(x[i] * x[i])
            slx = f32(sumlx - w * f32(x[i]) * L[i])
            if slx > 0:
                sl2 = f32(suml2 - w * L[i] * L[i])
                new = max(-nmax, min(nmax - 1, nearest_int(f32(x[i]) * sl2 / slx)))
                if new != L[i]:
                    slx = f32(slx + w * f32(x[i]) * new)
                    sl2 = f32(sl2 + w * new * new)
                    if sl2 > 0 and slx * slx * suml2 > sumlx * sumlx * sl2:
                        L[i], sumlx, suml2 = new, slx, sl2
                        changed += 1
        if not changed:
            break
    return f32(sumlx / suml2), [v + nmax for v in L]


def quantize_q3_k_block(x):
    """One super-block -> (d, signed scales[16], L[256] in 0..7) as ggml computes them."""
    L = [0] * 256
    scales = []
    max_scale = amax = f32(0)
    for j in range(16):
        s, lj = make_q3_quants(16, 4, [f32(v) for v in x[16 * j : 16 * j + 16]])
        scales.append(s)
        L[16 * j : 16 * j + 16] = lj
        if abs(s) > amax:
            amax = abs(s)
            max_scale = s
    if not max_scale:
        return np.float16(0), [0] * 16, L
    iscale = f32(f32(-32) / max_scale)
    d = np.float16(f32(1) / iscale)
    sc = [max(-32, min(31, nearest_int(iscale * s))) for s in scales]
    for j in range(16):
        dj = f32(f32(d) * sc[j])
        if not dj:
            continue
        for ii in range(16):
            L[16 * j + ii] = max(-4, min(3, nearest_int(f32(x[16 * j + ii]) / dj))) + 4
    return d, sc, L
