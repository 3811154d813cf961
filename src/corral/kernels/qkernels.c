/*
 * corral._qkernels: y = x @ W^T with W kept as raw GGML blocks, computed the way
 * llama.cpp's CPU backend computes it (ggml-cpu, x86).
 *
 * For a weight row n and an activation row m, ggml does not dot floats: it first
 * quantizes the activation row to the weight type's "vec_dot_type" (8-bit blocks),
 * then sums integer products block by block and scales each block's integer sum by
 * the two block scales in float32.  We do the same, with the float32 operations of the
 * ggml kernel llama.cpp's AVX2 build picks (vec_dot, repacked or tiled: see "Which of
 * llama.cpp's kernels a matmul follows"), so the results match its bit for bit:
 *
 *   weight type                 activation blocks   (per block)
 *   Q4_0, Q5_0, Q8_0            Q8_0, 32 values     d = amax/127 (stored fp16), q = rint(x*127/amax)
 *   Q4_1, Q5_1                  Q8_1, 32 values     as Q8_0, plus s = fp16(d * sum(q))
 *   Q2_K, Q3_K, Q4_K..Q6_K      Q8_K, 256 values    iscale = -127/max (max: the signed value of
 *                                                   largest magnitude), q = min(127, rint(iscale*x)),
 *                                                   d = 1/iscale (float32), bsums = sums of 16 q's
 *
 * (Q8_0/Q8_1 follow ggml's AVX2 quantize_row_q8_0/_q8_1: multiplier 127/amax, round half to
 * even; the plain-C ggml reference uses 1/d and roundf instead, which differs on ties and by
 * an ulp of the multiplier.  Q8_K uses quantize_row_q8_K_ref on every x86 build.)
 *
 * Layout of the tensors handed over by Python (all little-endian, row-major):
 *   x  float32 [M, K]         activations
 *   W  uint8   [N, row_bytes] N output rows of K/QK blocks each (PyTorch order: W[n] is the
 *                             row that produces y[:, n]); only read, it may be a read-only map
 *   y  float32 [M, N]         output, fully overwritten
 *
 * Code organisation: every weight type has an AVX2+FMA+F16C kernel (compiled with a target
 * attribute, chosen at run time when the CPU has those extensions) and a plain-C kernel.  A
 * kernel takes one weight row and NR <= 4 activation rows and produces NR outputs, so that in
 * prompt processing a weight block is decoded once for several activation rows.  Every output
 * goes through the same sequence of float operations whatever NR is; which sequence is
 * llama.cpp's choice for the call's row count (repacked Q4_K weights, K-quants from 8 rows),
 * so row m of a batch is bit-identical to computing that row alone in the "rows" order only
 * (set_order, set_rows_alone) and otherwise for the weights that stay on vec_dot.
 *
 * Threading: OpenMP over output rows, in chunks handed out through an atomic counter (the
 * machine is shared: dynamic hand-out balances a thread that gets descheduled).  A call may
 * cover several matrices that read the same input (q/k/v, gate/up): the input is quantized
 * once and all their chunks go to one parallel region.  When torch has been imported
 * first, its bundled libgomp.so.1 is the OpenMP runtime we bind to (same soname), so both
 * share one thread pool.
 *
 * Also here, for the dense route of prompt-sized batches (corral.kernels.QMatrix) and for
 * embedding lookups: dequantization of weight rows to float32 (same values as
 * corral.quant.dequantize), and the activations as the kernels see them (q * d per block).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__x86_64__) || defined(__i386__)
#define QK_X86 1
#include <immintrin.h>
#else
#define QK_X86 0
#endif

/* ------------------------------------------------------------------------------------------ */
/* Block formats                                                                              */
/* ------------------------------------------------------------------------------------------ */

/* ggml type ids (enum ggml_type) */
enum {
    T_Q4_0 = 2,
    T_Q4_1 = 3,
    T_Q5_0 = 6,
    T_Q5_1 = 7,
    T_Q8_0 = 8,
    T_Q2_K = 10,
    T_Q3_K = 11,
    T_Q4_K = 12,
    T_Q5_K = 13,
    T_Q6_K = 14,
};

/*
 * Weight blocks (byte offsets; "fp16" is an IEEE half):
 *   Q4_0  18 B / 32:  d fp16 | qs[16]: value j is the low nibble of qs[j], value j+16 the high
 *                     nibble; w = (q - 8) * d
 *   Q4_1  20 B / 32:  d fp16 | m fp16 | qs[16] as Q4_0; w = q * d + m
 *   Q5_0  22 B / 32:  d fp16 | qh[4] (bit j = 5th bit of value j) | qs[16]; w = (q - 16) * d
 *   Q5_1  24 B / 32:  d fp16 | m fp16 | qh[4] | qs[16]; w = q * d + m
 *   Q8_0  34 B / 32:  d fp16 | qs[32] int8; w = q * d
 *   Q2_K  84 B / 256: scales[16] (low nibble: scale, high nibble: min of each 16 values) |
 *                     qs[64] (2 bits each) | d fp16 | dmin fp16;  w = d*sc*q - dmin*m
 *                     value 128*j + 32*l + i sits in bits 2l..2l+1 of qs[32*j + i]
 *   Q3_K 110 B / 256: hmask[32] | qs[64] (low 2 bits, laid out as Q2_K) | scales[12] (16
 *                     6-bit scales, biased by 32) | d fp16;  q = low | high<<2, w = d*sc*(q-4);
 *                     the high bit of value 128*j + 32*l + i is bit 4*j+l of hmask[i]
 *   Q4_K 144 B / 256: d | dmin | scales[12] (8 6-bit scales and 8 6-bit mins, one per 32 values)
 *                     | qs[128]: values 64*j + i (low nibbles) and 64*j + 32 + i (high nibbles)
 *                     of qs[32*j + i];  w = d*sc*q - dmin*m
 *   Q5_K 176 B / 256: d | dmin | scales[12] | qh[32] (5th bit of value 32*s + i is bit s of
 *                     qh[i]) | qs[128] as Q4_K
 *   Q6_K 210 B / 256: ql[128] | qh[64] | scales[16] int8 (one per 16 values) | d fp16;
 *                     w = d*sc*(q-32); value 128*j + 32*l + i: low nibble from ql[64*j + i
 *                     + 32*(l&1)] (low nibble for l<2, high for l>=2), top 2 bits from bits
 *                     2l..2l+1 of qh[32*j + i]
 */

/* Activation blocks, in our own layout (ggml's layout is produced only by quantize()): the
 * block scale is kept as a float (already rounded through fp16 where ggml stores fp16), so
 * the hot loops skip the conversion. */
typedef struct {
    float d;        /* Q8_0/Q8_1 scale: an fp16 value, widened */
    float s;        /* Q8_1 only: fp16(d_unrounded * sum(qs)), widened */
    int8_t qs[32];
} act32;            /* 40 bytes */

typedef struct {
    float d;            /* 1/iscale, float32 as in ggml */
    int16_t bsums[16];  /* sums of qs in groups of 16 */
    int8_t qs[256];
} act256;               /* 292 bytes */

enum { ACT_Q8_0 = 0, ACT_Q8_1 = 1, ACT_Q8_K = 2 };

typedef struct {
    int qk;        /* values per weight block */
    int wbytes;    /* bytes per weight block */
    int act;       /* ACT_* */
} type_info;

static int get_info(int type, type_info *ti) {
    switch (type) {
    case T_Q4_0: *ti = (type_info){32, 18, ACT_Q8_0}; return 1;
    case T_Q4_1: *ti = (type_info){32, 20, ACT_Q8_1}; return 1;
    case T_Q5_0: *ti = (type_info){32, 22, ACT_Q8_0}; return 1;
    case T_Q5_1: *ti = (type_info){32, 24, ACT_Q8_1}; return 1;
    case T_Q8_0: *ti = (type_info){32, 34, ACT_Q8_0}; return 1;
    case T_Q2_K: *ti = (type_info){256, 84, ACT_Q8_K}; return 1;
    case T_Q3_K: *ti = (type_info){256, 110, ACT_Q8_K}; return 1;
    case T_Q4_K: *ti = (type_info){256, 144, ACT_Q8_K}; return 1;
    case T_Q5_K: *ti = (type_info){256, 176, ACT_Q8_K}; return 1;
    case T_Q6_K: *ti = (type_info){256, 210, ACT_Q8_K}; return 1;
    default: return 0;
    }
}

static size_t act_block_bytes(int act) { return act == ACT_Q8_K ? sizeof(act256) : sizeof(act32); }

/* ------------------------------------------------------------------------------------------ */
/* Half-precision conversions (portable; the AVX2 paths use F16C, which gives the same bits)   */
/* ------------------------------------------------------------------------------------------ */

#include "half.h"
#include "scratch.h"
#include "capi.h"

/* rint to an int8 with the saturation an AVX2 cvtps/packs sequence gives (NaN -> -128) */
static inline int8_t sat_i8(float v) {
    const float r = rintf(v);
    if (r >= 127.f) return 127;
    if (!(r > -128.f)) return -128;
    return (int8_t)r;
}

/* ------------------------------------------------------------------------------------------ */
/* Activation quantization, plain C                                                          */
/* ------------------------------------------------------------------------------------------ */

static void quant_q8_0_scalar(const float *x, act32 *y, int nb, int with_sum) {
    for (int i = 0; i < nb; i++, x += 32) {
        float amax = 0.f;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
        const float d = amax / 127.f;
        const float id = amax != 0.f ? 127.f / amax : 0.f;
        int sum = 0;
        for (int j = 0; j < 32; j++) {
            y[i].qs[j] = sat_i8(x[j] * id);
            sum += y[i].qs[j];
        }
        y[i].d = round_f16(d);
        y[i].s = with_sum ? round_f16(d * (float)sum) : 0.f;
    }
}

/* index of the first value of largest magnitude (ggml keeps the first one on ties) */
static inline int argmax_abs(const float *x, int n, float amax) {
    for (int j = 0; j < n; j++)
        if (fabsf(x[j]) == amax) return j;
    return 0;
}

static void q8k_finish(act256 *y, float iscale) {
    for (int g = 0; g < 16; g++) {
        int s = 0;
        for (int j = 0; j < 16; j++) s += y->qs[16 * g + j];
        y->bsums[g] = (int16_t)s;
    }
    y->d = 1.f / iscale;
}

static void quant_q8_k_scalar(const float *x, act256 *y, int nb) {
    for (int i = 0; i < nb; i++, x += 256) {
        float amax = 0.f;
        for (int j = 0; j < 256; j++) {
            const float ax = fabsf(x[j]);
            if (ax > amax) amax = ax;
        }
        if (!(amax > 0.f)) { /* all zero (or NaN): ggml writes d = 0, q = 0 */
            memset(&y[i], 0, sizeof(act256));
            continue;
        }
        const float max = x[argmax_abs(x, 256, amax)];
        const float iscale = -127.f / max;
        for (int j = 0; j < 256; j++) {
            const float r = rintf(iscale * x[j]);
            y[i].qs[j] = r >= 127.f ? 127 : (r > -128.f ? (int8_t)r : -128);
        }
        q8k_finish(&y[i], iscale);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Dot products, plain C (the portable fallback; same integer sums, per-block float order)   */
/* ------------------------------------------------------------------------------------------ */

/* Decode one legacy (32-value) block: values w_j = d * q[j] + m (m = 0 for the _0 types). */
static void decode_legacy(int type, const uint8_t *b, int q[32], float *d, float *m) {
    *d = h2f(rd16(b));
    *m = 0.f;
    switch (type) {
    case T_Q4_0:
        for (int j = 0; j < 16; j++) {
            q[j] = (b[2 + j] & 0xf) - 8;
            q[j + 16] = (b[2 + j] >> 4) - 8;
        }
        break;
    case T_Q4_1:
        *m = h2f(rd16(b + 2));
        for (int j = 0; j < 16; j++) {
            q[j] = b[4 + j] & 0xf;
            q[j + 16] = b[4 + j] >> 4;
        }
        break;
    case T_Q5_0: {
        uint32_t qh;
        memcpy(&qh, b + 2, 4);
        for (int j = 0; j < 16; j++) {
            q[j] = ((b[6 + j] & 0xf) | (((qh >> j) & 1) << 4)) - 16;
            q[j + 16] = ((b[6 + j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) - 16;
        }
        break;
    }
    case T_Q5_1: {
        *m = h2f(rd16(b + 2));
        uint32_t qh;
        memcpy(&qh, b + 4, 4);
        for (int j = 0; j < 16; j++) {
            q[j] = (b[8 + j] & 0xf) | (((qh >> j) & 1) << 4);
            q[j + 16] = (b[8 + j] >> 4) | (((qh >> (j + 16)) & 1) << 4);
        }
        break;
    }
    default: /* T_Q8_0 */
        for (int j = 0; j < 32; j++) q[j] = (int8_t)b[2 + j];
        break;
    }
}

/* Legacy blocks: sum_i q_w * q_a per block, scaled by d_w * d_a (+ m_w * s_a). */
static float dot_legacy_scalar(int type, int nb, const uint8_t *w, const act32 *a) {
    type_info ti;
    get_info(type, &ti);
    float sumf = 0.f;
    int q[32];
    for (int ib = 0; ib < nb; ib++, w += ti.wbytes) {
        float dw, mw;
        decode_legacy(type, w, q, &dw, &mw);
        int sumi = 0;
        for (int j = 0; j < 32; j++) sumi += q[j] * a[ib].qs[j];
        sumf += (float)sumi * (dw * a[ib].d);
        if (type == T_Q4_1 || type == T_Q5_1) sumf += mw * a[ib].s;
    }
    return sumf;
}

/* 6-bit scales and mins of Q4_K/Q5_K: 8 scales then 8 mins */
static inline void unpack_k4_scales(const uint8_t *s12, uint8_t out[16]) {
    for (int j = 0; j < 4; j++) {
        out[j] = s12[j] & 63;
        out[j + 8] = s12[j + 4] & 63;
        out[j + 4] = (s12[j + 8] & 0xf) | ((s12[j] >> 6) << 4);
        out[j + 12] = (s12[j + 8] >> 4) | ((s12[j + 4] >> 6) << 4);
    }
}

/* 16 6-bit scales of Q3_K, biased by 32 */
static inline void unpack_q3k_scales(const uint8_t *s12, int out[16]) {
    for (int j = 0; j < 16; j++) {
        const int low = (j < 8) ? (s12[j] & 0xf) : (s12[j - 8] >> 4);
        const int high = (s12[8 + (j & 3)] >> (2 * (j >> 2))) & 3;
        out[j] = (low | (high << 4)) - 32;
    }
}

/* Decode a k-quant block to ints q[256] (offsets applied), per-16 scales sc[16] and per-16
 * mins mn[16] (zero where the type has none), d and dmin. */
static void decode_kblock(int type, const uint8_t *b, int q[256], int sc[16], int mn[16],
                          float *d, float *dmin) {
    *dmin = 0.f;
    memset(mn, 0, 16 * sizeof(int));
    switch (type) {
    case T_Q2_K:
        for (int g = 0; g < 16; g++) {
            sc[g] = b[g] & 0xf;
            mn[g] = b[g] >> 4;
        }
        for (int j = 0; j < 2; j++)
            for (int l = 0; l < 4; l++)
                for (int i = 0; i < 32; i++) q[128 * j + 32 * l + i] = (b[16 + 32 * j + i] >> (2 * l)) & 3;
        *d = h2f(rd16(b + 80));
        *dmin = h2f(rd16(b + 82));
        break;
    case T_Q3_K:
        unpack_q3k_scales(b + 96, sc);
        for (int j = 0; j < 2; j++)
            for (int l = 0; l < 4; l++)
                for (int i = 0; i < 32; i++) {
                    const int low = (b[32 + 32 * j + i] >> (2 * l)) & 3;
                    const int high = (b[i] >> (4 * j + l)) & 1;
                    q[128 * j + 32 * l + i] = (low | (high << 2)) - 4;
                }
        *d = h2f(rd16(b + 108));
        break;
    case T_Q4_K:
    case T_Q5_K: {
        uint8_t sm[16];
        unpack_k4_scales(b + 4, sm);
        for (int s = 0; s < 8; s++) {
            sc[2 * s] = sc[2 * s + 1] = sm[s];
            mn[2 * s] = mn[2 * s + 1] = sm[8 + s];
        }
        const uint8_t *qs = b + (type == T_Q4_K ? 16 : 48);
        for (int j = 0; j < 4; j++)
            for (int i = 0; i < 32; i++) {
                q[64 * j + i] = qs[32 * j + i] & 0xf;
                q[64 * j + 32 + i] = qs[32 * j + i] >> 4;
            }
        if (type == T_Q5_K)
            for (int s = 0; s < 8; s++)
                for (int i = 0; i < 32; i++) q[32 * s + i] |= ((b[16 + i] >> s) & 1) << 4;
        *d = h2f(rd16(b));
        *dmin = h2f(rd16(b + 2));
        break;
    }
    default: /* T_Q6_K */
        for (int g = 0; g < 16; g++) sc[g] = (int8_t)b[192 + g];
        for (int j = 0; j < 2; j++)
            for (int l = 0; l < 4; l++)
                for (int i = 0; i < 32; i++) {
                    const uint8_t lb = b[64 * j + i + 32 * (l & 1)];
                    const int low = (l < 2) ? (lb & 0xf) : (lb >> 4);
                    const int high = (b[128 + 32 * j + i] >> (2 * l)) & 3;
                    q[128 * j + 32 * l + i] = (low | (high << 4)) - 32;
                }
        *d = h2f(rd16(b + 208));
        break;
    }
}

/* A decoded k-quant block against its activations: sum_g sc_g * (q . a)_g and sum_g mn_g *
 * bsums_g, in integers (exact in any order). */
static inline void kblock_sums(const int *q, const int *sc, const int *mn, const act256 *a, int *isum, int *msum) {
    int is = 0, ms = 0;
    for (int g = 0; g < 16; g++) {
        int s = 0;
        for (int j = 0; j < 16; j++) s += q[16 * g + j] * a->qs[16 * g + j];
        is += sc[g] * s;
        ms += mn[g] * a->bsums[g];
    }
    *isum = is;
    *msum = ms;
}

static float dot_k_scalar(int type, int nb, int wbytes, const uint8_t *w, const act256 *a) {
    int q[256], sc[16], mn[16];
    float sumf = 0.f;
    for (int i = 0; i < nb; i++, w += wbytes) {
        float d, dmin;
        decode_kblock(type, w, q, sc, mn, &d, &dmin);
        int isum, msum;
        kblock_sums(q, sc, mn, &a[i], &isum, &msum);
        sumf += (a[i].d * d) * (float)isum;
        if (type == T_Q2_K || type == T_Q4_K || type == T_Q5_K) sumf += (-a[i].d * dmin) * (float)msum;
    }
    return sumf;
}

/* Q4_K in the float order of ggml's repacked kernels (see "Repacked Q4_K" below): two
 * accumulators, acc += isum * (d_w * d_a) and accm += msum * (dmin_w * d_a), one FMA each per
 * 64 values (gemm = 1: ggml_gemm_q4_K_8x8_q8_K) or per 256 (gemm = 0: ggml_gemv_q4_K_8x8_q8_K),
 * and acc - accm at the end. isum: sum over the sub-blocks of scale * (q . q8); msum: sum of
 * min * (sum of the sub-block's q8). */
static float dot_q4k_rp_scalar(int gemm, int nb, const uint8_t *w, const act256 *a) {
    int q[256], sc[16], mn[16];
    float acc = 0.f, accm = 0.f;
    for (int i = 0; i < nb; i++, w += 144) {
        float d, dmin;
        decode_kblock(T_Q4_K, w, q, sc, mn, &d, &dmin);
        const float dd = d * a[i].d, dm = dmin * a[i].d;
        int isum = 0, msum = 0;
        for (int j = 0; j < 4; j++) { /* values 64j..64j+63: sub-blocks 2j and 2j+1 */
            int is = 0, ms = 0;
            for (int g = 4 * j; g < 4 * j + 4; g++) { /* groups of 16 (sc, mn per 16) */
                int s = 0;
                for (int l = 0; l < 16; l++) s += q[16 * g + l] * a[i].qs[16 * g + l];
                is += sc[g] * s;
                ms += mn[g] * a[i].bsums[g];
            }
            if (gemm) {
                acc = fmaf((float)is, dd, acc);
                accm = fmaf((float)ms, dm, accm);
            }
            isum += is;
            msum += ms;
        }
        if (!gemm) {
            acc = fmaf((float)isum, dd, acc);
            accm = fmaf((float)msum, dm, accm);
        }
    }
    return acc - accm;
}

/* Q4_0 in the order of ggml's repacked q4_0_8x8 kernels: acc += isum * (d_w * d_a) per block,
 * one FMA each. */
static float dot_q40_chain_scalar(int nb, const uint8_t *w, const act32 *a) {
    int q[32];
    float acc = 0.f;
    for (int ib = 0; ib < nb; ib++, w += 18) {
        float dw, mw;
        decode_legacy(T_Q4_0, w, q, &dw, &mw);
        int isum = 0;
        for (int j = 0; j < 32; j++) isum += q[j] * a[ib].qs[j];
        acc = fmaf((float)isum, dw * a[ib].d, acc);
    }
    return acc;
}

/* K-quants in the order of ggml's tiled matmul (ggml-cpu/tiled, AVX2 tiled_run_microtile_avx2),
 * which llama.cpp uses for inputs of 8 rows or more: per 256-value block res = d_w * isum,
 * for the types with mins res = res - dmin_w * msum (one FMA), then acc += res * d_a (FMA). */
static float dot_k_tiled_scalar(int type, int nb, int wbytes, const uint8_t *w, const act256 *a) {
    int q[256], sc[16], mn[16];
    const int has_min = type == T_Q2_K || type == T_Q4_K || type == T_Q5_K;
    float acc = 0.f;
    for (int i = 0; i < nb; i++, w += wbytes) {
        float d, dmin;
        decode_kblock(type, w, q, sc, mn, &d, &dmin);
        int isum, msum;
        kblock_sums(q, sc, mn, &a[i], &isum, &msum);
        float res = d * (float)isum;
        if (has_min) res = fmaf(-dmin, (float)msum, res);
        acc = fmaf(res, a[i].d, acc);
    }
    return acc;
}

/* Kernel signature: one weight row, nr activation rows (astride bytes apart), nr outputs
 * (ostride floats apart). */
typedef void (*kern_fn)(int type, int nb, const uint8_t *w, const void *a, size_t astride,
                        float *out, size_t ostride, int nr);

static void kern_scalar(int type, int nb, const uint8_t *w, const void *a, size_t astride,
                        float *out, size_t ostride, int nr) {
    type_info ti;
    get_info(type, &ti);
    for (int r = 0; r < nr; r++) {
        const void *ar = (const uint8_t *)a + r * astride;
        out[r * ostride] = ti.qk == 32 ? dot_legacy_scalar(type, nb, w, (const act32 *)ar)
                                       : dot_k_scalar(type, nb, ti.wbytes, w, (const act256 *)ar);
    }
}

/* Dequantize one weight row to float32, w = d*q + m (legacy) or d*sc*q - dmin*mn (k-quants),
 * each value with one rounding (fmaf), as the AVX2 path's fmsub. */
static void deq_row_scalar(int type, int nb, const uint8_t *w, float *o) {
    type_info ti;
    get_info(type, &ti);
    if (ti.qk == 32) {
        int q[32];
        for (int ib = 0; ib < nb; ib++, w += ti.wbytes, o += 32) {
            float d, m;
            decode_legacy(type, w, q, &d, &m);
            for (int j = 0; j < 32; j++) o[j] = fmaf(d, (float)q[j], m);
        }
        return;
    }
    int q[256], sc[16], mn[16];
    for (int ib = 0; ib < nb; ib++, w += ti.wbytes, o += 256) {
        float d, dmin;
        decode_kblock(type, w, q, sc, mn, &d, &dmin);
        for (int g = 0; g < 16; g++) {
            const float a = d * (float)sc[g], b = dmin * (float)mn[g];
            for (int j = 0; j < 16; j++) o[16 * g + j] = fmaf(a, (float)q[16 * g + j], -b);
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* AVX2 + FMA + F16C                                                                          */
/* ------------------------------------------------------------------------------------------ */
#if QK_X86

#define TGT __attribute__((target("avx2,fma,f16c")))
#define AI static inline __attribute__((always_inline))

TGT AI float h2f_c(const uint8_t *p) { return _cvtsh_ss(rd16(p)); }

TGT AI float hsum8(__m256 x) {
    __m128 r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}

/* One rounding each: c + a * b (vfmadd on scalars, as ggml's _mm256_fmadd_ps per lane). */
TGT AI float fma1(float a, float b, float c) {
    return _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(a), _mm_set_ss(b), _mm_set_ss(c)));
}

/* The float steps of one 256-value block in ggml's tiled order (dot_k_tiled_scalar) for up
 * to 4 activation rows, row r in lane r: is, ms their isum and msum, d8 their scales. */
TGT AI __m128 tiled_step4(__m128 acc, __m128i is, __m128i ms, float dw, float dminw, __m128 d8, int has_min) {
    __m128 res = _mm_mul_ps(_mm_set1_ps(dw), _mm_cvtepi32_ps(is));
    if (has_min) res = _mm_fnmadd_ps(_mm_set1_ps(dminw), _mm_cvtepi32_ps(ms), res);
    return _mm_fmadd_ps(res, d8, acc);
}

/* The 8 lanes of a, b, c, d summed: [sum a, sum b, sum c, sum d] (exact, int32). */
TGT AI __m128i hsum4_i32_8(__m256i a, __m256i b, __m256i c, __m256i d) {
    const __m256i t = _mm256_hadd_epi32(_mm256_hadd_epi32(a, b), _mm256_hadd_epi32(c, d));
    return _mm_add_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256(t, 1));
}

/* rows 0..3 of a per-row array where the kernel has NR rows (zero past them) */
#define PICK4(v, z) (v)[0], NR > 1 ? (v)[1] : (z), NR > 2 ? (v)[2] : (z), NR > 3 ? (v)[3] : (z)

/* the scales d of activation rows 0..NR-1 of block i, in lanes (zero past them) */
TGT AI __m128 act_d4(const int NR, const uint8_t *a, size_t astride, int i) {
    float d[4] = {0.f, 0.f, 0.f, 0.f};
    for (int r = 0; r < NR; r++) d[r] = ((const act256 *)(a + r * astride))[i].d;
    return _mm_loadu_ps(d);
}

/* lanes 0..NR-1 of v to out[r * ostride] */
TGT AI void store_rows(const int NR, __m128 v, float *out, size_t ostride) {
    float o[4];
    _mm_storeu_ps(o, v);
    for (int r = 0; r < NR; r++) out[r * ostride] = o[r];
}

TGT AI int hsum_i32_8(__m256i a) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
    s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

/* 32 bits -> 32 bytes, 0xFF where the bit is set, 0x00 elsewhere */
TGT AI __m256i bits32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    const __m256i shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202,
                                           0x0101010101010101, 0x0000000000000000);
    __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32((int)v), shuf);
    /* every byte gets all bits but its own one set: equal to 0xFF iff its bit was set */
    bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
    return _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1));
}

/* -- activation quantization -- */

TGT static void quant_q8_0_avx2(const float *x, act32 *y, int nb, int with_sum) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int i = 0; i < nb; i++, x += 32) {
        __m256 v0 = _mm256_loadu_ps(x), v1 = _mm256_loadu_ps(x + 8);
        __m256 v2 = _mm256_loadu_ps(x + 16), v3 = _mm256_loadu_ps(x + 24);
        __m256 m = _mm256_max_ps(_mm256_andnot_ps(sign, v0), _mm256_andnot_ps(sign, v1));
        m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v2));
        m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v3));
        __m128 m4 = _mm_max_ps(_mm256_extractf128_ps(m, 1), _mm256_castps256_ps128(m));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        const float amax = _mm_cvtss_f32(m4);
        const float d = amax / 127.f;
        const __m256 id = _mm256_set1_ps(amax != 0.f ? 127.f / amax : 0.f);
        const int rnd = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
        __m256i i0 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v0, id), rnd));
        __m256i i1 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v1, id), rnd));
        __m256i i2 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v2, id), rnd));
        __m256i i3 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v3, id), rnd));
        y[i].d = _cvtsh_ss(_cvtss_sh(d, 0));
        if (with_sum) {
            /* the sum of the saturated int8 values (|q| <= 127 except for NaN input) */
            const int s = hsum_i32_8(_mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3)));
            y[i].s = _cvtsh_ss(_cvtss_sh(d * (float)s, 0));
        } else {
            y[i].s = 0.f;
        }
        /* int32 -> int16 -> int8 with saturation; packs work per 128-bit lane, so the
         * dwords come out in the order 0,2,4,6,1,3,5,7 and the permute restores it */
        i0 = _mm256_packs_epi32(i0, i1);
        i2 = _mm256_packs_epi32(i2, i3);
        i0 = _mm256_packs_epi16(i0, i2);
        _mm256_storeu_si256((__m256i *)y[i].qs, _mm256_permutevar8x32_epi32(i0, perm));
    }
}

TGT static void quant_q8_k_avx2(const float *x, act256 *y, int nb) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    const __m256i i127 = _mm256_set1_epi32(127);
    const int rnd = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    for (int i = 0; i < nb; i++, x += 256) {
        __m256 m = _mm256_setzero_ps();
        for (int j = 0; j < 256; j += 8) m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + j)));
        __m128 m4 = _mm_max_ps(_mm256_extractf128_ps(m, 1), _mm256_castps256_ps128(m));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        const float amax = _mm_cvtss_f32(m4);
        if (!(amax > 0.f)) {
            memset(&y[i], 0, sizeof(act256));
            continue;
        }
        /* the first value of magnitude amax (8 at a time: compare, movemask, lowest bit) */
        const __m256 va = _mm256_set1_ps(amax);
        int first = 0;
        for (int j = 0; j < 256; j += 8) {
            const __m256 eq = _mm256_cmp_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + j)), va, _CMP_EQ_OQ);
            const int mask = _mm256_movemask_ps(eq);
            if (mask) {
                first = j + __builtin_ctz((unsigned)mask);
                break;
            }
        }
        const float max = x[first];
        const float iscale = -127.f / max;
        const __m256 vs = _mm256_set1_ps(iscale);
        for (int g = 0; g < 8; g++) { /* 32 values per step */
            const float *xg = x + 32 * g;
            __m256i q[4];
            for (int k = 0; k < 4; k++) {
                const __m256 v = _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(xg + 8 * k), vs), rnd);
                q[k] = _mm256_min_epi32(_mm256_cvtps_epi32(v), i127);
            }
            y[i].bsums[2 * g] = (int16_t)hsum_i32_8(_mm256_add_epi32(q[0], q[1]));
            y[i].bsums[2 * g + 1] = (int16_t)hsum_i32_8(_mm256_add_epi32(q[2], q[3]));
            const __m256i a = _mm256_packs_epi32(q[0], q[1]);
            const __m256i b = _mm256_packs_epi32(q[2], q[3]);
            _mm256_storeu_si256((__m256i *)(y[i].qs + 32 * g),
                                _mm256_permutevar8x32_epi32(_mm256_packs_epi16(a, b), perm));
        }
        y[i].d = 1.f / iscale;
    }
}

/* -- legacy (32-value block) dot products, NR activation rows at once --
 *
 * Per block: decode the 32 weight values to bytes qx, form the 8 int32 pair-sums of
 * qx*qy with maddubs (u8 x s8 -> s16 pairs) and madd (s16 pairs -> s32), convert to float
 * and accumulate d_w*d_a * that with an FMA (as ggml).  maddubs needs an unsigned operand:
 * signed weights go through the sign trick |qx| * (qy with qx's sign).  The _1 types add
 * m_w * s_a per block: [d_w, m_w] (adjacent fp16s) times [d_a, s_a] (adjacent floats) is
 * one multiply; lane 0 is broadcast for the FMA and lane 1 summed into a second
 * accumulator, in block order like ggml's scalar `summs`. */

/* 16 packed bytes -> 32 bytes, low nibbles (values 0..15) then high nibbles (16..31): the
 * 16 bytes go to both lanes, the high lane is shifted right by 4 (a 64-bit shift drags the
 * neighbouring byte's low nibble into each byte's top, which the mask drops). */
TGT AI __m256i nib32b(const uint8_t *p) {
    const __m256i b = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)p));
    return _mm256_and_si256(_mm256_srlv_epi64(b, _mm256_set_epi64x(4, 4, 0, 0)), _mm256_set1_epi8(0x0f));
}

/* Bytes of one block of a legacy type. */
AI int legacy_wb(const int T) {
    return T == T_Q4_0 ? 18 : T == T_Q4_1 ? 20 : T == T_Q5_0 ? 22 : T == T_Q5_1 ? 24 : 34;
}

/* The block's scale (and min) as floats: [d_w, m_w, ...] for the _1 types, [d_w, ...] else. */
TGT AI __m128 legacy_dm(const int T, const uint8_t *w) {
    if (T == T_Q4_1 || T == T_Q5_1) {
        uint32_t v;
        memcpy(&v, w, 4);
        return _mm_cvtph_ps(_mm_cvtsi32_si128((int)v));
    }
    return _mm_cvtph_ps(_mm_cvtsi32_si128(rd16(w)));
}

/* The block's 32 weight values as bytes (signed for the types without a min). */
TGT AI __m256i legacy_qx(const int T, const uint8_t *w) {
    if (T == T_Q4_0) return _mm256_sub_epi8(nib32b(w + 2), _mm256_set1_epi8(8));
    if (T == T_Q4_1) return nib32b(w + 4);
    if (T == T_Q5_0) {
        /* 0xF0 where the 5th bit is clear: nibble | 0xF0 == nibble - 16 as int8 */
        const __m256i hi = _mm256_andnot_si256(bits32(w + 2), _mm256_set1_epi8((char)0xF0));
        return _mm256_or_si256(nib32b(w + 6), hi);
    }
    if (T == T_Q5_1) {
        const __m256i hi = _mm256_and_si256(bits32(w + 4), _mm256_set1_epi8(0x10));
        return _mm256_or_si256(nib32b(w + 8), hi);
    }
    return _mm256_loadu_si256((const __m256i *)(w + 2));
}

TGT AI void legacy_avx2(const int T, const int NR, int nb, const uint8_t *w, const uint8_t *a,
                        size_t astride, float *out, size_t ostride) {
    const int wb = legacy_wb(T);
    const int has_min = T == T_Q4_1 || T == T_Q5_1;
    const int is_signed = !has_min;
    const __m256i ones16 = _mm256_set1_epi16(1);
    __m256 acc[4];
    __m128 accm[4];
    for (int r = 0; r < NR; r++) {
        acc[r] = _mm256_setzero_ps();
        accm[r] = _mm_setzero_ps();
    }
    for (int ib = 0; ib < nb; ib++, w += wb) {
        const __m128 dm = legacy_dm(T, w); /* [d_w, m_w, ...] */
        const __m256i qx = legacy_qx(T, w);
        const __m256i ax = is_signed ? _mm256_sign_epi8(qx, qx) : qx;
        for (int r = 0; r < NR; r++) {
            const act32 *y = (const act32 *)(a + r * astride) + ib;
            __m256i qy = _mm256_loadu_si256((const __m256i *)y->qs);
            if (is_signed) qy = _mm256_sign_epi8(qy, qx);
            const __m256 p = _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(ax, qy), ones16));
            /* [d_w*d_a, m_w*s_a]; for types without a min lane 1 is unused */
            const __m128 ds = _mm_mul_ps(dm, _mm_castpd_ps(_mm_load_sd((const double *)y)));
            acc[r] = _mm256_fmadd_ps(_mm256_broadcastss_ps(ds), p, acc[r]);
            if (has_min) accm[r] = _mm_add_ps(accm[r], ds);
        }
    }
    for (int r = 0; r < NR; r++) {
        const float summs = has_min ? _mm_cvtss_f32(_mm_shuffle_ps(accm[r], accm[r], 1)) : 0.f;
        out[r * ostride] = hsum8(acc[r]) + summs;
    }
}

/* Two weight rows (w, w + rb) against one activation row: the decode step's case, where one
 * row's FMA chain (a block per FMA, each waiting for the last) bounds the speed; two
 * independent chains overlap. Each row's operations are those of legacy_avx2 with NR = 1,
 * in the same order, so out[0] and out[1] are the same bits. */
TGT AI void legacy_avx2_w2(const int T, int nb, const uint8_t *w, size_t rb, const uint8_t *a, float *out) {
    const int wb = legacy_wb(T);
    const int has_min = T == T_Q4_1 || T == T_Q5_1;
    const int is_signed = !has_min;
    const __m256i ones16 = _mm256_set1_epi16(1);
    __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    __m128 accm[2] = {_mm_setzero_ps(), _mm_setzero_ps()};
    const uint8_t *wr[2] = {w, w + rb};
    for (int ib = 0; ib < nb; ib++) {
        const act32 *y = (const act32 *)a + ib;
        const __m256i qy0 = _mm256_loadu_si256((const __m256i *)y->qs);
        const __m128d yds = _mm_load_sd((const double *)y);
        for (int r = 0; r < 2; r++) {
            const uint8_t *wp = wr[r] + (size_t)ib * wb;
            const __m128 dm = legacy_dm(T, wp);
            const __m256i qx = legacy_qx(T, wp);
            const __m256i ax = is_signed ? _mm256_sign_epi8(qx, qx) : qx;
            const __m256i qy = is_signed ? _mm256_sign_epi8(qy0, qx) : qy0;
            const __m256 p = _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(ax, qy), ones16));
            const __m128 ds = _mm_mul_ps(dm, _mm_castpd_ps(yds));
            acc[r] = _mm256_fmadd_ps(_mm256_broadcastss_ps(ds), p, acc[r]);
            if (has_min) accm[r] = _mm_add_ps(accm[r], ds);
        }
    }
    for (int r = 0; r < 2; r++) {
        const float summs = has_min ? _mm_cvtss_f32(_mm_shuffle_ps(accm[r], accm[r], 1)) : 0.f;
        out[r] = hsum8(acc[r]) + summs;
    }
}

/* Q4_0 in the order of ggml's repacked q4_0_8x8 kernels (its gemv and gemm alike): per block
 * the whole integer sum, then one FMA, acc += isum * (d_w * d_a) (no lanes summed at the end).
 * NW = 2: two weight rows against one activation row (two independent chains, as
 * legacy_avx2_w2), each row's operations those of NW = 1. */
TGT AI void q40_chain_avx2(const int NW, const int NR, int nb, const uint8_t *w, size_t rb,
                           const uint8_t *a, size_t astride, float *out, size_t ostride) {
    const __m256i ones16 = _mm256_set1_epi16(1);
    float acc[2][4];
    for (int v = 0; v < NW; v++)
        for (int r = 0; r < NR; r++) acc[v][r] = 0.f;
    for (int ib = 0; ib < nb; ib++) {
        for (int v = 0; v < NW; v++) {
            const uint8_t *wp = w + v * rb + (size_t)ib * 18;
            const float dw = h2f_c(wp);
            const __m256i qx = legacy_qx(T_Q4_0, wp);
            const __m256i ax = _mm256_sign_epi8(qx, qx);
            for (int r = 0; r < NR; r++) {
                const act32 *y = (const act32 *)(a + r * astride) + ib;
                const __m256i qy = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)y->qs), qx);
                const int isum = hsum_i32_8(_mm256_madd_epi16(_mm256_maddubs_epi16(ax, qy), ones16));
                acc[v][r] = fma1((float)isum, dw * y->d, acc[v][r]);
            }
        }
    }
    for (int v = 0; v < NW; v++)
        for (int r = 0; r < NR; r++) out[v + r * ostride] = acc[v][r];
}

/* -- k-quant helpers -- */

/* For types with a scale per 16 values: from 8 int16 scales duplicated in both lanes (sc8),
 * the vector whose low lane holds scale 2l and high lane scale 2l+1 (the two 16-value
 * groups that one 32-byte vector of values covers). */
TGT AI __m256i scale_pair(__m256i sc8, int l) {
    static const uint8_t k_shuf[4][32] __attribute__((aligned(32))) = {
        {0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3},
        {4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7},
        {8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11},
        {12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15},
    };
    return _mm256_shuffle_epi8(sc8, _mm256_load_si256((const __m256i *)k_shuf[l]));
}

/* For Q4_K/Q5_K (a scale per 32 values): scale s (of 8 int16, duplicated in both lanes)
 * broadcast to all 16 int16 lanes. */
TGT AI __m256i scale_one(__m256i sc8, int s) {
    return _mm256_shuffle_epi8(sc8, _mm256_set1_epi16((short)(((2 * s + 1) << 8) | (2 * s))));
}

TGT AI __m256i dup_lane(__m128i v) { return _mm256_broadcastsi128_si256(v); }

/* Q2_K: sum_g sc_g * sum q*q8 (q in 0..3) per block; mins through bsums */
TGT AI void q2k_avx2(const int TL, const int NR, int nb, const uint8_t *w, const uint8_t *a,
                     size_t astride, float *out, size_t ostride) {
    const __m256i m3 = _mm256_set1_epi8(3);
    const __m128i m4 = _mm_set1_epi8(0xF);
    __m256 acc[4];
    __m128 acs = _mm_setzero_ps(); /* TL: ggml's tiled order, row r in lane r */
    for (int r = 0; r < NR; r++) acc[r] = _mm256_setzero_ps();
    for (int i = 0; i < nb; i++, w += 84) {
        const float dw = h2f_c(w + 80), dminw = h2f_c(w + 82);
        const __m128i ms = _mm_loadu_si128((const __m128i *)w);
        const __m256i sc16 = _mm256_cvtepu8_epi16(_mm_and_si128(ms, m4));
        const __m256i mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(ms, 4), m4));
        const __m256i sc8[2] = {dup_lane(_mm256_castsi256_si128(sc16)), dup_lane(_mm256_extracti128_si256(sc16, 1))};
        __m256i sumi[4];
        for (int r = 0; r < NR; r++) sumi[r] = _mm256_setzero_si256();
        for (int j = 0; j < 2; j++) {
            const __m256i bits = _mm256_loadu_si256((const __m256i *)(w + 16 + 32 * j));
            for (int l = 0; l < 4; l++) {
                const __m256i qx = _mm256_and_si256(_mm256_srli_epi16(bits, 2 * l), m3);
                const __m256i sc = scale_pair(sc8[j], l);
                for (int r = 0; r < NR; r++) {
                    const act256 *y = (const act256 *)(a + r * astride) + i;
                    const __m256i qy = _mm256_loadu_si256((const __m256i *)(y->qs + 128 * j + 32 * l));
                    sumi[r] = _mm256_add_epi32(sumi[r], _mm256_madd_epi16(sc, _mm256_maddubs_epi16(qx, qy)));
                }
            }
        }
        if (TL) {
            const __m256i z = _mm256_setzero_si256();
            __m256i pr[4];
            for (int r = 0; r < NR; r++)
                pr[r] = _mm256_madd_epi16(mins, _mm256_loadu_si256((const __m256i *)((const act256 *)(a + r * astride) + i)->bsums));
            acs = tiled_step4(acs, hsum4_i32_8(PICK4(sumi, z)), hsum4_i32_8(PICK4(pr, z)), dw, dminw,
                              act_d4(NR, a, astride, i), 1);
            continue;
        }
        for (int r = 0; r < NR; r++) {
            const act256 *y = (const act256 *)(a + r * astride) + i;
            const __m256i prod = _mm256_madd_epi16(mins, _mm256_loadu_si256((const __m256i *)y->bsums));
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(-y->d * dminw), _mm256_cvtepi32_ps(prod), acc[r]);
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(y->d * dw), _mm256_cvtepi32_ps(sumi[r]), acc[r]);
        }
    }
    if (TL) store_rows(NR, acs, out, ostride);
    else for (int r = 0; r < NR; r++) out[r * ostride] = hsum8(acc[r]);
}

/* Q3_K: q = low2 | high<<2 in 0..7 (unsigned, so maddubs applies), and the -4 offset taken
 * out per pair of values (ggml_vec_dot_q3_K_q8_K's lanes). */
TGT AI void q3k_avx2(const int TL, const int NR, int nb, const uint8_t *w, const uint8_t *a,
                     size_t astride, float *out, size_t ostride) {
    const __m256i m3 = _mm256_set1_epi8(3);
    const __m256i m4 = _mm256_set1_epi8(4);
    __m256 acc[4];
    __m128 acs = _mm_setzero_ps(); /* TL: ggml's tiled order, row r in lane r */
    for (int r = 0; r < NR; r++) acc[r] = _mm256_setzero_ps();
    for (int i = 0; i < nb; i++, w += 110) {
        const float dw = h2f_c(w + 108);
        uint32_t aux[3];
        memcpy(aux, w + 96, 12);
        const uint32_t k2 = 0x0f0f0f0f, k1 = 0x03030303;
        __m128i s128 = _mm_set_epi32((int)(((aux[1] >> 4) & k2) | (((aux[2] >> 6) & k1) << 4)),
                                     (int)(((aux[0] >> 4) & k2) | (((aux[2] >> 4) & k1) << 4)),
                                     (int)((aux[1] & k2) | (((aux[2] >> 2) & k1) << 4)),
                                     (int)((aux[0] & k2) | ((aux[2] & k1) << 4)));
        s128 = _mm_sub_epi8(s128, _mm_set1_epi8(32));
        const __m256i sc16 = _mm256_cvtepi8_epi16(s128);
        const __m256i sc8[2] = {dup_lane(_mm256_castsi256_si128(sc16)), dup_lane(_mm256_extracti128_si256(sc16, 1))};
        const __m256i hbits = _mm256_loadu_si256((const __m256i *)w);
        __m256i sumi[4];
        for (int r = 0; r < NR; r++) sumi[r] = _mm256_setzero_si256();
        for (int j = 0; j < 2; j++) {
            const __m256i bits = _mm256_loadu_si256((const __m256i *)(w + 32 + 32 * j));
            for (int l = 0; l < 4; l++) {
                const int bit = 4 * j + l;
                /* high bit moved to bit 2 of each byte */
                const __m256i hb = _mm256_and_si256(_mm256_slli_epi16(_mm256_srli_epi16(hbits, bit), 2), m4);
                const __m256i qx = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits, 2 * l), m3), hb);
                const __m256i sc = scale_pair(sc8[j], l);
                for (int r = 0; r < NR; r++) {
                    const act256 *y = (const act256 *)(a + r * astride) + i;
                    const __m256i qy = _mm256_loadu_si256((const __m256i *)(y->qs + 128 * j + 32 * l));
                    /* (q - 4) * q8 per pair of values, as ggml's maddubs(low) - maddubs(4 *
                     * (1 - high)): the -4 goes into the lane of its value, so every int32 lane
                     * (converted and scaled lane by lane) holds ggml's partial sum */
                    const __m256i p16 = _mm256_sub_epi16(_mm256_maddubs_epi16(qx, qy), _mm256_maddubs_epi16(m4, qy));
                    sumi[r] = _mm256_add_epi32(sumi[r], _mm256_madd_epi16(sc, p16));
                }
            }
        }
        if (TL) {
            const __m256i z = _mm256_setzero_si256();
            acs = tiled_step4(acs, hsum4_i32_8(PICK4(sumi, z)), _mm_setzero_si128(), dw, 0.f,
                              act_d4(NR, a, astride, i), 0);
            continue;
        }
        for (int r = 0; r < NR; r++) {
            const act256 *y = (const act256 *)(a + r * astride) + i;
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(y->d * dw), _mm256_cvtepi32_ps(sumi[r]), acc[r]);
        }
    }
    if (TL) store_rows(NR, acs, out, ostride);
    else for (int r = 0; r < NR; r++) out[r * ostride] = hsum8(acc[r]);
}

/* The 6-bit scales (bytes 0..7) and mins (8..15) of a Q4_K block as 16 int16 (ggml's utmp). */
TGT AI __m256i q4k_scales_mins(const uint8_t *w) {
    uint32_t u[4];
    memcpy(u, w + 4, 12);
    const uint32_t k1 = 0x3f3f3f3f, k2 = 0x0f0f0f0f, k3 = 0x03030303;
    u[3] = ((u[2] >> 4) & k2) | (((u[1] >> 6) & k3) << 4);
    const uint32_t uaux = u[1] & k1;
    u[1] = (u[2] & k2) | (((u[0] >> 6) & k3) << 4);
    u[2] = uaux;
    u[0] &= k1;
    return _mm256_cvtepu8_epi16(_mm_set_epi32((int)u[3], (int)u[2], (int)u[1], (int)u[0]));
}

/* Q4_K and Q5_K: 8 sub-blocks of 32 values with 6-bit scales and mins (ggml's utmp
 * shuffle gives scales in bytes 0..7 and mins in 8..15). Mins go through bsums summed per
 * 32 values (16-bit hadd: 32*127 fits). */
TGT AI void q45k_avx2(const int T, const int TL, const int NR, int nb, const uint8_t *w,
                      const uint8_t *a, size_t astride, float *out, size_t ostride) {
    const int wb = T == T_Q4_K ? 144 : 176;
    const __m256i m4 = _mm256_set1_epi8(0xF);
    const __m256i bit4 = _mm256_set1_epi8(0x10);
    __m256 acc[4];
    __m128 accm[4];
    float summs[4];                /* Q5_K: ggml's scalar `summs` */
    __m128 acs = _mm_setzero_ps(); /* TL: ggml's tiled order, row r in lane r */
    for (int r = 0; r < NR; r++) {
        acc[r] = _mm256_setzero_ps();
        accm[r] = _mm_setzero_ps();
        summs[r] = 0.f;
    }
    for (int i = 0; i < nb; i++, w += wb) {
        const float dw = h2f_c(w), dminw = h2f_c(w + 2);
        const __m256i ms = q4k_scales_mins(w);
        const __m128i mins = _mm256_extracti128_si256(ms, 1);
        const __m256i sc8 = dup_lane(_mm256_castsi256_si128(ms));
        const uint8_t *qs = w + (T == T_Q4_K ? 16 : 48);
        __m256i hbits = _mm256_setzero_si256();
        if (T == T_Q5_K) hbits = _mm256_loadu_si256((const __m256i *)(w + 16));
        __m256i sumi[4];
        for (int r = 0; r < NR; r++) sumi[r] = _mm256_setzero_si256();
        for (int j = 0; j < 4; j++) {
            const __m256i bits = _mm256_loadu_si256((const __m256i *)(qs + 32 * j));
            __m256i ql = _mm256_and_si256(bits, m4);
            __m256i qh = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
            if (T == T_Q5_K) {
                /* 5th bits: bit 2j (low half) and 2j+1 (high half) of each qh byte, to bit 4 */
                ql = _mm256_or_si256(ql, _mm256_and_si256(_mm256_slli_epi16(_mm256_srli_epi16(hbits, 2 * j), 4), bit4));
                qh = _mm256_or_si256(qh, _mm256_and_si256(_mm256_slli_epi16(_mm256_srli_epi16(hbits, 2 * j + 1), 4), bit4));
            }
            const __m256i scl = scale_one(sc8, 2 * j), sch = scale_one(sc8, 2 * j + 1);
            for (int r = 0; r < NR; r++) {
                const act256 *y = (const act256 *)(a + r * astride) + i;
                const __m256i yl = _mm256_loadu_si256((const __m256i *)(y->qs + 64 * j));
                const __m256i yh = _mm256_loadu_si256((const __m256i *)(y->qs + 64 * j + 32));
                const __m256i pl = _mm256_madd_epi16(scl, _mm256_maddubs_epi16(ql, yl));
                const __m256i ph = _mm256_madd_epi16(sch, _mm256_maddubs_epi16(qh, yh));
                sumi[r] = _mm256_add_epi32(sumi[r], _mm256_add_epi32(pl, ph));
            }
        }
        if (TL) {
            const __m256i z = _mm256_setzero_si256();
            __m128i pr[4];
            for (int r = 0; r < NR; r++) {
                const __m256i bs = _mm256_loadu_si256((const __m256i *)((const act256 *)(a + r * astride) + i)->bsums);
                pr[r] = _mm_madd_epi16(mins, _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1)));
            }
            const __m128i zs = _mm_setzero_si128();
            const __m128i ms = _mm_hadd_epi32(_mm_hadd_epi32(pr[0], NR > 1 ? pr[1] : zs),
                                              _mm_hadd_epi32(NR > 2 ? pr[2] : zs, NR > 3 ? pr[3] : zs));
            acs = tiled_step4(acs, hsum4_i32_8(PICK4(sumi, z)), ms, dw, dminw, act_d4(NR, a, astride, i), 1);
            continue;
        }
        for (int r = 0; r < NR; r++) {
            const act256 *y = (const act256 *)(a + r * astride) + i;
            const __m256i bs = _mm256_loadu_si256((const __m256i *)y->bsums);
            const __m128i s32 = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
            const __m128i prod = _mm_madd_epi16(mins, s32);
            if (T == T_Q5_K) {
                /* ggml_vec_dot_q5_K_q8_K: summs += dmin * msum per block, a scalar (an FMA
                 * once the compiler contracts it, as ggml's -mfma build does) */
                __m128i ms = _mm_hadd_epi32(prod, prod);
                ms = _mm_hadd_epi32(ms, ms);
                summs[r] = fma1(-y->d * dminw, (float)_mm_cvtsi128_si32(ms), summs[r]);
            } else {
                accm[r] = _mm_fmadd_ps(_mm_set1_ps(-y->d * dminw), _mm_cvtepi32_ps(prod), accm[r]);
            }
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(y->d * dw), _mm256_cvtepi32_ps(sumi[r]), acc[r]);
        }
    }
    if (TL) {
        store_rows(NR, acs, out, ostride);
        return;
    }
    for (int r = 0; r < NR; r++) {
        if (T == T_Q5_K) {
            out[r * ostride] = hsum8(acc[r]) + summs[r];
            continue;
        }
        __m128 m = accm[r];
        m = _mm_add_ps(m, _mm_movehl_ps(m, m));
        m = _mm_add_ss(m, _mm_movehdup_ps(m));
        out[r * ostride] = hsum8(acc[r]) + _mm_cvtss_f32(m);
    }
}

/* Q4_K in the float order of ggml's repacked kernels (dot_q4k_rp_scalar says which). The
 * integer sums are formed as in q45k_avx2; the float steps run on 4 outputs at once, one per
 * lane (the same operations per output as the scalar chain): the gemm keeps 4 activation rows
 * in the lanes, the gemv 4 weight rows. */


/* [msum_0 .. msum_3] of one activation block: the mins of sub-blocks 2j, 2j+1 times their
 * sums of 32 q8 (int16 hadd of the bsums: 32 * 127 fits). */
TGT AI __m128i q4k_msums(__m128i mins, const act256 *y) {
    const __m256i bs = _mm256_loadu_si256((const __m256i *)y->bsums);
    return _mm_madd_epi16(mins, _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1)));
}

/* ggml_gemm_q4_K_8x8_q8_K's order: one weight row, 4 activation rows (astride bytes apart),
 * an FMA per 64 values; lane r of the accumulators is output r. */
TGT AI void q4k_gemm_avx2(int nb, const uint8_t *w, const uint8_t *a, size_t astride, float *out,
                          size_t ostride) {
    const __m256i m4 = _mm256_set1_epi8(0xF);
    __m128 acc = _mm_setzero_ps(), accm = _mm_setzero_ps();
    for (int i = 0; i < nb; i++, w += 144) {
        const act256 *y[4];
        for (int r = 0; r < 4; r++) y[r] = (const act256 *)(a + r * astride) + i;
        const __m256i ms = q4k_scales_mins(w);
        const __m128i mins = _mm256_extracti128_si256(ms, 1);
        const __m256i sc8 = dup_lane(_mm256_castsi256_si128(ms));
        const __m128 d8 = _mm_set_ps(y[3]->d, y[2]->d, y[1]->d, y[0]->d);
        const __m128 dd = _mm_mul_ps(_mm_set1_ps(h2f_c(w)), d8);
        const __m128 dm = _mm_mul_ps(_mm_set1_ps(h2f_c(w + 2)), d8);
        /* msum_j of rows 0..3 transposed: mj[j] = [msum_j(r0), .., msum_j(r3)] */
        __m128i m0 = q4k_msums(mins, y[0]), m1 = q4k_msums(mins, y[1]);
        __m128i m2 = q4k_msums(mins, y[2]), m3 = q4k_msums(mins, y[3]);
        const __m128i l01 = _mm_unpacklo_epi32(m0, m1), h01 = _mm_unpackhi_epi32(m0, m1);
        const __m128i l23 = _mm_unpacklo_epi32(m2, m3), h23 = _mm_unpackhi_epi32(m2, m3);
        const __m128i mj[4] = {_mm_unpacklo_epi64(l01, l23), _mm_unpackhi_epi64(l01, l23),
                               _mm_unpacklo_epi64(h01, h23), _mm_unpackhi_epi64(h01, h23)};
        for (int j = 0; j < 4; j++) {
            const __m256i bits = _mm256_loadu_si256((const __m256i *)(w + 16 + 32 * j));
            const __m256i ql = _mm256_and_si256(bits, m4);
            const __m256i qh = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
            const __m256i scl = scale_one(sc8, 2 * j), sch = scale_one(sc8, 2 * j + 1);
            __m256i v[4];
            for (int r = 0; r < 4; r++) {
                const __m256i yl = _mm256_loadu_si256((const __m256i *)(y[r]->qs + 64 * j));
                const __m256i yh = _mm256_loadu_si256((const __m256i *)(y[r]->qs + 64 * j + 32));
                v[r] = _mm256_add_epi32(_mm256_madd_epi16(scl, _mm256_maddubs_epi16(ql, yl)),
                                        _mm256_madd_epi16(sch, _mm256_maddubs_epi16(qh, yh)));
            }
            acc = _mm_fmadd_ps(_mm_cvtepi32_ps(hsum4_i32_8(v[0], v[1], v[2], v[3])), dd, acc);
            accm = _mm_fmadd_ps(_mm_cvtepi32_ps(mj[j]), dm, accm);
        }
    }
    float o[4];
    _mm_storeu_ps(o, _mm_sub_ps(acc, accm));
    for (int r = 0; r < 4; r++) out[r * ostride] = o[r];
}

/* ggml_gemv_q4_K_8x8_q8_K's order: NW <= 4 weight rows (rb bytes apart), one activation row,
 * an FMA per 256 values; lane v of the accumulators is weight row v's output (out[v]). */
TGT AI void q4k_gemv_avx2(const int NW, int nb, const uint8_t *w, size_t rb, const uint8_t *a,
                          float *out) {
    const __m256i m4 = _mm256_set1_epi8(0xF);
    __m128 acc = _mm_setzero_ps(), accm = _mm_setzero_ps();
    for (int i = 0; i < nb; i++) {
        const act256 *y = (const act256 *)a + i;
        __m256i sumi[4];
        __m128i prod[4];
        float dw[4] = {0.f, 0.f, 0.f, 0.f}, dmw[4] = {0.f, 0.f, 0.f, 0.f};
        for (int v = 0; v < 4; v++) {
            sumi[v] = _mm256_setzero_si256();
            prod[v] = _mm_setzero_si128();
        }
        for (int v = 0; v < NW; v++) {
            const uint8_t *wb = w + v * rb + (size_t)i * 144;
            dw[v] = h2f_c(wb);
            dmw[v] = h2f_c(wb + 2);
            const __m256i ms = q4k_scales_mins(wb);
            prod[v] = q4k_msums(_mm256_extracti128_si256(ms, 1), y);
            const __m256i sc8 = dup_lane(_mm256_castsi256_si128(ms));
            for (int j = 0; j < 4; j++) {
                const __m256i bits = _mm256_loadu_si256((const __m256i *)(wb + 16 + 32 * j));
                const __m256i ql = _mm256_and_si256(bits, m4);
                const __m256i qh = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
                const __m256i yl = _mm256_loadu_si256((const __m256i *)(y->qs + 64 * j));
                const __m256i yh = _mm256_loadu_si256((const __m256i *)(y->qs + 64 * j + 32));
                const __m256i pl = _mm256_madd_epi16(scale_one(sc8, 2 * j), _mm256_maddubs_epi16(ql, yl));
                const __m256i ph = _mm256_madd_epi16(scale_one(sc8, 2 * j + 1), _mm256_maddubs_epi16(qh, yh));
                sumi[v] = _mm256_add_epi32(sumi[v], _mm256_add_epi32(pl, ph));
            }
        }
        const __m128i is = hsum4_i32_8(sumi[0], sumi[1], sumi[2], sumi[3]);
        const __m128i msum = _mm_hadd_epi32(_mm_hadd_epi32(prod[0], prod[1]), _mm_hadd_epi32(prod[2], prod[3]));
        const __m128 d8 = _mm_set1_ps(y->d);
        acc = _mm_fmadd_ps(_mm_cvtepi32_ps(is), _mm_mul_ps(_mm_loadu_ps(dw), d8), acc);
        accm = _mm_fmadd_ps(_mm_cvtepi32_ps(msum), _mm_mul_ps(_mm_loadu_ps(dmw), d8), accm);
    }
    float o[4];
    _mm_storeu_ps(o, _mm_sub_ps(acc, accm));
    for (int v = 0; v < NW; v++) out[v] = o[v];
}

/* Q6_K: q in 0..63 (unsigned for maddubs); the -32 offset through bsums as for Q3_K. */
TGT AI void q6k_avx2(const int TL, const int NR, int nb, const uint8_t *w, const uint8_t *a,
                     size_t astride, float *out, size_t ostride) {
    const __m256i m4 = _mm256_set1_epi8(0xF);
    const __m256i m2 = _mm256_set1_epi8(0x30);
    __m256 acc[4];
    __m128 acs = _mm_setzero_ps(); /* TL: ggml's tiled order, row r in lane r */
    for (int r = 0; r < NR; r++) acc[r] = _mm256_setzero_ps();
    for (int i = 0; i < nb; i++, w += 210) {
        const float dw = h2f_c(w + 208);
        const __m128i s128 = _mm_loadu_si128((const __m128i *)(w + 192));
        const __m256i sc16 = _mm256_cvtepi8_epi16(s128);
        const __m256i sc8[2] = {dup_lane(_mm256_castsi256_si128(sc16)), dup_lane(_mm256_extracti128_si256(sc16, 1))};
        __m256i sumi[4];
        for (int r = 0; r < NR; r++) {
            const act256 *y = (const act256 *)(a + r * astride) + i;
            const __m256i corr = _mm256_madd_epi16(sc16, _mm256_loadu_si256((const __m256i *)y->bsums));
            sumi[r] = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(corr, 5));
        }
        for (int j = 0; j < 2; j++) {
            const __m256i b1 = _mm256_loadu_si256((const __m256i *)(w + 64 * j));
            const __m256i b2 = _mm256_loadu_si256((const __m256i *)(w + 64 * j + 32));
            const __m256i bh = _mm256_loadu_si256((const __m256i *)(w + 128 + 32 * j));
            __m256i qx[4];
            qx[0] = _mm256_or_si256(_mm256_and_si256(b1, m4), _mm256_and_si256(_mm256_slli_epi16(bh, 4), m2));
            qx[1] = _mm256_or_si256(_mm256_and_si256(b2, m4), _mm256_and_si256(_mm256_slli_epi16(bh, 2), m2));
            qx[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(b1, 4), m4), _mm256_and_si256(bh, m2));
            qx[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(b2, 4), m4),
                                    _mm256_and_si256(_mm256_srli_epi16(bh, 2), m2));
            for (int l = 0; l < 4; l++) {
                const __m256i sc = scale_pair(sc8[j], l);
                for (int r = 0; r < NR; r++) {
                    const act256 *y = (const act256 *)(a + r * astride) + i;
                    const __m256i qy = _mm256_loadu_si256((const __m256i *)(y->qs + 128 * j + 32 * l));
                    sumi[r] = _mm256_add_epi32(sumi[r], _mm256_madd_epi16(sc, _mm256_maddubs_epi16(qx[l], qy)));
                }
            }
        }
        if (TL) {
            const __m256i z = _mm256_setzero_si256();
            acs = tiled_step4(acs, hsum4_i32_8(PICK4(sumi, z)), _mm_setzero_si128(), dw, 0.f,
                              act_d4(NR, a, astride, i), 0);
            continue;
        }
        for (int r = 0; r < NR; r++) {
            const act256 *y = (const act256 *)(a + r * astride) + i;
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(y->d * dw), _mm256_cvtepi32_ps(sumi[r]), acc[r]);
        }
    }
    if (TL) store_rows(NR, acs, out, ostride);
    else for (int r = 0; r < NR; r++) out[r * ostride] = hsum8(acc[r]);
}

/* -- dequantization to float32 -- */

/* 32 int8 values q -> o[0..32): o = a*q - b, with (a0, b0) for the first 16 values and
 * (a1, b1) for the last 16 */
TGT AI void deq_store32(float *o, __m256i q, float a0, float b0, float a1, float b1) {
    const __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
    const __m256 A0 = _mm256_set1_ps(a0), B0 = _mm256_set1_ps(b0);
    const __m256 A1 = _mm256_set1_ps(a1), B1 = _mm256_set1_ps(b1);
    _mm256_storeu_ps(o, _mm256_fmsub_ps(A0, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)), B0));
    _mm256_storeu_ps(o + 8, _mm256_fmsub_ps(A0, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8))), B0));
    _mm256_storeu_ps(o + 16, _mm256_fmsub_ps(A1, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)), B1));
    _mm256_storeu_ps(o + 24, _mm256_fmsub_ps(A1, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8))), B1));
}

TGT static void deq_row_avx2(int type, int nb, const uint8_t *w, float *o) {
    type_info ti;
    get_info(type, &ti);
    const __m256i m3 = _mm256_set1_epi8(3), m4 = _mm256_set1_epi8(0xF), b4 = _mm256_set1_epi8(0x10);
    for (int ib = 0; ib < nb; ib++, w += ti.wbytes) {
        switch (type) {
        case T_Q4_0:
            deq_store32(o, _mm256_sub_epi8(nib32b(w + 2), _mm256_set1_epi8(8)), h2f_c(w), 0.f, h2f_c(w), 0.f);
            o += 32;
            break;
        case T_Q4_1: {
            const float d = h2f_c(w), m = h2f_c(w + 2);
            deq_store32(o, nib32b(w + 4), d, -m, d, -m);
            o += 32;
            break;
        }
        case T_Q5_0: {
            const __m256i hi = _mm256_andnot_si256(bits32(w + 2), _mm256_set1_epi8((char)0xF0));
            deq_store32(o, _mm256_or_si256(nib32b(w + 6), hi), h2f_c(w), 0.f, h2f_c(w), 0.f);
            o += 32;
            break;
        }
        case T_Q5_1: {
            const float d = h2f_c(w), m = h2f_c(w + 2);
            const __m256i hi = _mm256_and_si256(bits32(w + 4), b4);
            deq_store32(o, _mm256_or_si256(nib32b(w + 8), hi), d, -m, d, -m);
            o += 32;
            break;
        }
        case T_Q8_0:
            deq_store32(o, _mm256_loadu_si256((const __m256i *)(w + 2)), h2f_c(w), 0.f, h2f_c(w), 0.f);
            o += 32;
            break;
        case T_Q2_K: {
            const float d = h2f_c(w + 80), dmin = h2f_c(w + 82);
            for (int j = 0; j < 2; j++) {
                const __m256i bits = _mm256_loadu_si256((const __m256i *)(w + 16 + 32 * j));
                for (int l = 0; l < 4; l++, o += 32) {
                    const uint8_t s0 = w[8 * j + 2 * l], s1 = w[8 * j + 2 * l + 1];
                    deq_store32(o, _mm256_and_si256(_mm256_srli_epi16(bits, 2 * l), m3), d * (float)(s0 & 0xF),
                                dmin * (float)(s0 >> 4), d * (float)(s1 & 0xF), dmin * (float)(s1 >> 4));
                }
            }
            break;
        }
        case T_Q3_K: {
            const float d = h2f_c(w + 108);
            int sc[16];
            unpack_q3k_scales(w + 96, sc);
            const __m256i hbits = _mm256_loadu_si256((const __m256i *)w);
            for (int j = 0; j < 2; j++) {
                const __m256i bits = _mm256_loadu_si256((const __m256i *)(w + 32 + 32 * j));
                for (int l = 0; l < 4; l++, o += 32) {
                    const __m256i hb = _mm256_and_si256(_mm256_slli_epi16(_mm256_srli_epi16(hbits, 4 * j + l), 2),
                                                        _mm256_set1_epi8(4));
                    const __m256i q = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits, 2 * l), m3), hb);
                    const int g = 8 * j + 2 * l;
                    deq_store32(o, _mm256_sub_epi8(q, _mm256_set1_epi8(4)), d * (float)sc[g], 0.f,
                                d * (float)sc[g + 1], 0.f);
                }
            }
            break;
        }
        case T_Q4_K:
        case T_Q5_K: {
            const float d = h2f_c(w), dmin = h2f_c(w + 2);
            uint8_t sm[16];
            unpack_k4_scales(w + 4, sm);
            const uint8_t *qs = w + (type == T_Q4_K ? 16 : 48);
            const __m256i hbits = type == T_Q5_K ? _mm256_loadu_si256((const __m256i *)(w + 16)) : _mm256_setzero_si256();
            for (int j = 0; j < 4; j++) {
                const __m256i bits = _mm256_loadu_si256((const __m256i *)(qs + 32 * j));
                __m256i ql = _mm256_and_si256(bits, m4);
                __m256i qh = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
                if (type == T_Q5_K) {
                    ql = _mm256_or_si256(ql, _mm256_and_si256(_mm256_slli_epi16(_mm256_srli_epi16(hbits, 2 * j), 4), b4));
                    qh = _mm256_or_si256(qh, _mm256_and_si256(_mm256_slli_epi16(_mm256_srli_epi16(hbits, 2 * j + 1), 4), b4));
                }
                const float a0 = d * (float)sm[2 * j], c0 = dmin * (float)sm[8 + 2 * j];
                const float a1 = d * (float)sm[2 * j + 1], c1 = dmin * (float)sm[8 + 2 * j + 1];
                deq_store32(o, ql, a0, c0, a0, c0);
                deq_store32(o + 32, qh, a1, c1, a1, c1);
                o += 64;
            }
            break;
        }
        default: { /* T_Q6_K */
            const float d = h2f_c(w + 208);
            const int8_t *sc = (const int8_t *)(w + 192);
            const __m256i m2 = _mm256_set1_epi8(0x30), m32 = _mm256_set1_epi8(32);
            for (int j = 0; j < 2; j++) {
                const __m256i b1 = _mm256_loadu_si256((const __m256i *)(w + 64 * j));
                const __m256i b2 = _mm256_loadu_si256((const __m256i *)(w + 64 * j + 32));
                const __m256i bh = _mm256_loadu_si256((const __m256i *)(w + 128 + 32 * j));
                __m256i qx[4];
                qx[0] = _mm256_or_si256(_mm256_and_si256(b1, m4), _mm256_and_si256(_mm256_slli_epi16(bh, 4), m2));
                qx[1] = _mm256_or_si256(_mm256_and_si256(b2, m4), _mm256_and_si256(_mm256_slli_epi16(bh, 2), m2));
                qx[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(b1, 4), m4), _mm256_and_si256(bh, m2));
                qx[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(b2, 4), m4),
                                        _mm256_and_si256(_mm256_srli_epi16(bh, 2), m2));
                for (int l = 0; l < 4; l++, o += 32) {
                    const int g = 8 * j + 2 * l;
                    deq_store32(o, _mm256_sub_epi8(qx[l], m32), d * (float)sc[g], 0.f, d * (float)sc[g + 1], 0.f);
                }
            }
            break;
        }
        }
    }
}

/* One kernel per type with the NR specialisations; the switch picks a compile-time NR. */
#define NR_SWITCH(call1, call2, call3, call4) \
    switch (nr) {                             \
    case 1: call1; break;                     \
    case 2: call2; break;                     \
    case 3: call3; break;                     \
    default: call4; break;                    \
    }

#define DEF_LEGACY(NAME, T)                                                                       \
    TGT static void NAME(int nb, const uint8_t *w, const uint8_t *a, size_t as, float *o,         \
                         size_t os, int nr) {                                                     \
        NR_SWITCH(legacy_avx2(T, 1, nb, w, a, as, o, os), legacy_avx2(T, 2, nb, w, a, as, o, os), \
                  legacy_avx2(T, 3, nb, w, a, as, o, os), legacy_avx2(T, 4, nb, w, a, as, o, os)) \
    }
DEF_LEGACY(k_q4_0_avx2, T_Q4_0)
DEF_LEGACY(k_q4_1_avx2, T_Q4_1)
DEF_LEGACY(k_q5_0_avx2, T_Q5_0)
DEF_LEGACY(k_q5_1_avx2, T_Q5_1)
DEF_LEGACY(k_q8_0_avx2, T_Q8_0)

#define DEF_K(NAME, FN)                                                                   \
    TGT static void NAME(int nb, const uint8_t *w, const uint8_t *a, size_t as, float *o, \
                         size_t os, int nr) {                                             \
        NR_SWITCH(FN(1, nb, w, a, as, o, os), FN(2, nb, w, a, as, o, os),                 \
                  FN(3, nb, w, a, as, o, os), FN(4, nb, w, a, as, o, os))                 \
    }
#define Q2K(NR, ...) q2k_avx2(0, NR, __VA_ARGS__)
#define Q3K(NR, ...) q3k_avx2(0, NR, __VA_ARGS__)
#define Q4K(NR, ...) q45k_avx2(T_Q4_K, 0, NR, __VA_ARGS__)
#define Q5K(NR, ...) q45k_avx2(T_Q5_K, 0, NR, __VA_ARGS__)
#define Q6K(NR, ...) q6k_avx2(0, NR, __VA_ARGS__)
DEF_K(k_q2_k_avx2, Q2K)
DEF_K(k_q3_k_avx2, Q3K)
DEF_K(k_q4_k_avx2, Q4K)
DEF_K(k_q5_k_avx2, Q5K)
DEF_K(k_q6_k_avx2, Q6K)
/* the same in ggml's tiled order (inputs of 8 rows or more) */
#define Q2KT(NR, ...) q2k_avx2(1, NR, __VA_ARGS__)
#define Q3KT(NR, ...) q3k_avx2(1, NR, __VA_ARGS__)
#define Q4KT(NR, ...) q45k_avx2(T_Q4_K, 1, NR, __VA_ARGS__)
#define Q5KT(NR, ...) q45k_avx2(T_Q5_K, 1, NR, __VA_ARGS__)
#define Q6KT(NR, ...) q6k_avx2(1, NR, __VA_ARGS__)
DEF_K(k_q2_k_tl_avx2, Q2KT)
DEF_K(k_q3_k_tl_avx2, Q3KT)
DEF_K(k_q4_k_tl_avx2, Q4KT)
DEF_K(k_q5_k_tl_avx2, Q5KT)
DEF_K(k_q6_k_tl_avx2, Q6KT)

static void kern_tiled_avx2(int type, int nb, const uint8_t *w, const void *a, size_t astride,
                            float *out, size_t ostride, int nr) {
    const uint8_t *ab = (const uint8_t *)a;
    switch (type) {
    case T_Q2_K: k_q2_k_tl_avx2(nb, w, ab, astride, out, ostride, nr); break;
    case T_Q3_K: k_q3_k_tl_avx2(nb, w, ab, astride, out, ostride, nr); break;
    case T_Q4_K: k_q4_k_tl_avx2(nb, w, ab, astride, out, ostride, nr); break;
    case T_Q5_K: k_q5_k_tl_avx2(nb, w, ab, astride, out, ostride, nr); break;
    default: k_q6_k_tl_avx2(nb, w, ab, astride, out, ostride, nr); break;
    }
}

/* Q4_0 in ggml's repacked order (q40_chain_avx2) */
TGT static void kern_q40_chain_avx2(int nb, const uint8_t *w, const void *a, size_t as, float *o,
                                    size_t os, int nr) {
    const uint8_t *ab = (const uint8_t *)a;
    NR_SWITCH(q40_chain_avx2(1, 1, nb, w, 0, ab, as, o, os), q40_chain_avx2(1, 2, nb, w, 0, ab, as, o, os),
              q40_chain_avx2(1, 3, nb, w, 0, ab, as, o, os), q40_chain_avx2(1, 4, nb, w, 0, ab, as, o, os))
}

/* two weight rows (w, w + rb), one activation row */
TGT static void kern2_q40_chain_avx2(int nb, const uint8_t *w, size_t rb, const void *a, float *out) {
    q40_chain_avx2(2, 1, nb, w, rb, (const uint8_t *)a, 0, out, 0);
}

/* Q4_K in ggml's repacked order: nr activation rows times weight rows [0, nw) of w (rb bytes
 * apart); out[r * ostride + v]. gemm (nr = 4): ggml's gemm, else its gemv for each row. */
TGT static void kern_q4k_rp_avx2(int gemm, int nb, const uint8_t *w, size_t rb, long nw, const void *a,
                                 size_t as, float *o, size_t os, int nr) {
    const uint8_t *ab = (const uint8_t *)a;
    if (gemm && nr == 4) {
        for (long v = 0; v < nw; v++) q4k_gemm_avx2(nb, w + v * rb, ab, as, o + v, os);
        return;
    }
    for (int r = 0; r < nr; r++) {
        long v = 0;
        for (; v + 4 <= nw; v += 4) q4k_gemv_avx2(4, nb, w + v * rb, rb, ab + r * as, o + r * os + v);
        switch (nw - v) {
        case 1: q4k_gemv_avx2(1, nb, w + v * rb, rb, ab + r * as, o + r * os + v); break;
        case 2: q4k_gemv_avx2(2, nb, w + v * rb, rb, ab + r * as, o + r * os + v); break;
        case 3: q4k_gemv_avx2(3, nb, w + v * rb, rb, ab + r * as, o + r * os + v); break;
        default: break;
        }
    }
}

static void kern_avx2(int type, int nb, const uint8_t *w, const void *a, size_t astride,
                      float *out, size_t ostride, int nr) {
    const uint8_t *ab = (const uint8_t *)a;
    switch (type) {
    case T_Q4_0: k_q4_0_avx2(nb, w, ab, astride, out, ostride, nr); break;
    case T_Q4_1: k_q4_1_avx2(nb, w, ab, astride, out, ostride, nr); break;
    case T_Q5_0: k_q5_0_avx2(nb, w, ab, astride, out, ostride, nr); break;
    case T_Q5_1: k_q5_1_avx2(nb, w, ab, astride, out, ostride, nr); break;
    case T_Q8_0: k_q8_0_avx2(nb, w, ab, astride, out, ostride, nr); break;
    case T_Q2_K: k_q2_k_avx2(nb, w, ab, astride, out, ostride, nr); break;
    case T_Q3_K: k_q3_k_avx2(nb, w, ab, astride, out, ostride, nr); break;
    case T_Q4_K: k_q4_k_avx2(nb, w, ab, astride, out, ostride, nr); break;
    case T_Q5_K: k_q5_k_avx2(nb, w, ab, astride, out, ostride, nr); break;
    default: k_q6_k_avx2(nb, w, ab, astride, out, ostride, nr); break;
    }
}

/* Two weight rows, one activation row (legacy_avx2_w2); 0 for a type without this kernel. */
TGT static int kern2_avx2(int type, int nb, const uint8_t *w, size_t rb, const void *a, float *out) {
    const uint8_t *ab = (const uint8_t *)a;
    switch (type) {
    case T_Q4_0: legacy_avx2_w2(T_Q4_0, nb, w, rb, ab, out); return 1;
    case T_Q4_1: legacy_avx2_w2(T_Q4_1, nb, w, rb, ab, out); return 1;
    case T_Q5_0: legacy_avx2_w2(T_Q5_0, nb, w, rb, ab, out); return 1;
    case T_Q5_1: legacy_avx2_w2(T_Q5_1, nb, w, rb, ab, out); return 1;
    case T_Q8_0: legacy_avx2_w2(T_Q8_0, nb, w, rb, ab, out); return 1;
    default: return 0;
    }
}

static int cpu_has_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("f16c");
}

#else /* not x86 */
static int cpu_has_avx2(void) { return 0; }
#endif

static int g_has_avx2 = 0;

/* ------------------------------------------------------------------------------------------ */
/* Driver                                                                                     */
/* ------------------------------------------------------------------------------------------ */

/* Quantize activation rows [m0, m1) of x [M, K] into the act buffer. */
static void quantize_rows(const type_info *ti, int use_avx2, const float *x, uint8_t *act,
                          size_t arow, long K, long m0, long m1) {
    const int nb = (int)(K / (ti->act == ACT_Q8_K ? 256 : 32));
    for (long m = m0; m < m1; m++) {
        const float *xr = x + m * K;
        uint8_t *ar = act + m * arow;
#if QK_X86
        if (use_avx2) {
            if (ti->act == ACT_Q8_K) quant_q8_k_avx2(xr, (act256 *)ar, nb);
            else quant_q8_0_avx2(xr, (act32 *)ar, nb, ti->act == ACT_Q8_1);
            continue;
        }
#endif
        (void)use_avx2;
        if (ti->act == ACT_Q8_K) quant_q8_k_scalar(xr, (act256 *)ar, nb);
        else quant_q8_0_scalar(xr, (act32 *)ar, nb, ti->act == ACT_Q8_1);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Which of llama.cpp's kernels a matmul follows                                              */
/* ------------------------------------------------------------------------------------------ */
/*
 * llama.cpp's x86 CPU backend (AVX2 builds, "extra buffer types" on: its default) does not
 * multiply every weight with ggml_vec_dot_*, and its other kernels sum in other float orders:
 *
 * 1. Repacked weights. At load it repacks each 2-D weight of N rows, N a multiple of 8, of type
 *    Q4_K (block_q4_Kx8, "q4_K_8x8") or Q4_0 (block_q4_0x8) -- on AVX2 also IQ4_NL and MXFP4,
 *    Q2_K with AVX-512; Q5_K, Q6_K, Q8_0 only on ARM (ggml-cpu/repack.cpp,
 *    ggml_repack_get_optimal_repack_type) -- and multiplies it with its own kernels
 *    (ggml-cpu/arch/x86/repack.cpp). Of an input of M rows (forward_mul_mat_one_chunk), rows
 *    [0, M - M % 4) go to the gemm kernel in groups of 4 when M > 3, the rest (every row when
 *    M < 4: each decode step) to the gemv kernel one at a time.
 *    Q4_K (ggml_gemm/gemv_q4_K_8x8_q8_K): per output two accumulators,
 *        acc  += (float)isum * (d_w * d_a)       (FMA)
 *        accm += (float)msum * (dmin_w * d_a)    (FMA)
 *    isum = sum of scale * (q . q8), msum = sum of min * (sum of the q8), over 64 values (two
 *    sub-blocks) per FMA in the gemm, over the 256-value block in the gemv; output acc - accm.
 *    The gemm rows' activations come from quantize_mat_q8_K (4 rows interleaved), which breaks
 *    a tie between +amax and -amax the other way than quantize_row_q8_K_ref (the positive
 *    wins, not the first): that negates q, bsums and d of the block, and every product above
 *    keeps its bits (isum * d_a, msum * d_a), so our one Q8_K serves both.
 *    Q4_0 (gemm and gemv alike): acc += (float)isum * (d_w * d_a) per 32-value block, one FMA
 *    chain (quantize_mat_q8_0 rounds as quantize_row_q8_0).
 * 2. Tiled K-quants. Every other (not repacked) Q2_K..Q6_K weight times an input of 8 rows or
 *    more goes through ggml-cpu/tiled (ggml_compute_forward_mul_mat_tiled; GGML_CPU_TILED_MM=0
 *    turns it off): per 256-value block res = d_w * (float)isum, res -= dmin_w * (float)msum
 *    (FMA, types with mins), acc += res * d_a (FMA).
 * 3. Everything else: ggml_vec_dot_* (the kernels above: 8 lanes of partial sums, summed at
 *    the end).
 *
 * g_order chooses: ORD_LLAMA (default) does all of this, so row m of a call depends on M;
 * ORD_ROWS computes every row as a one-row call would (repacked weights in their gemv order,
 * the rest in vec_dot order), whatever M; ORD_VECDOT uses vec_dot's order everywhere (llama.cpp
 * with extra buffer types and GGML_CPU_TILED_MM off). set_rows_alone() turns ORD_LLAMA into
 * ORD_ROWS on the calling thread (speculative decoding checks a draft with the bits of
 * one-token steps).
 */
enum { ORD_VECDOT = 0, ORD_LLAMA = 1, ORD_ROWS = 2 };
static int g_order = ORD_LLAMA;
static __thread int t_rows_alone = 0;

static int order_mode(void) { return g_order == ORD_LLAMA && t_rows_alone ? ORD_ROWS : g_order; }

/* whether llama.cpp (AVX2) repacks this weight */
static int is_repacked(int type, long N) { return (type == T_Q4_K || type == T_Q4_0) && N % 8 == 0; }

/* rows from which llama.cpp multiplies K-quants in its tiled kernels (ggml_tiled_min_batch) */
#define TILED_MIN_ROWS 8

/* how one matrix of a call is multiplied */
enum { MK_VECDOT = 0, MK_Q4K_RP, MK_Q40_RP, MK_TILED };

static int mat_kind(int order, int type, long N, long M) {
    if (order == ORD_VECDOT) return MK_VECDOT;
    if (is_repacked(type, N)) return type == T_Q4_K ? MK_Q4K_RP : MK_Q40_RP;
    if (order == ORD_LLAMA && M >= TILED_MIN_ROWS && type >= T_Q2_K && type <= T_Q6_K) return MK_TILED;
    return MK_VECDOT;
}

/* nr activation rows (astride bytes apart) times one weight row of a matrix of this kind
 * (not MK_VECDOT); gemm: MK_Q4K_RP rows in ggml's gemm order */
static void kern_kind(int kind, int use_avx2, int gemm, int type, int nb, const uint8_t *w,
                      const void *a, size_t astride, float *out, size_t ostride, int nr) {
#if QK_X86
    if (use_avx2) {
        if (kind == MK_Q4K_RP) kern_q4k_rp_avx2(gemm, nb, w, 0, 1, a, astride, out, ostride, nr);
        else if (kind == MK_TILED) kern_tiled_avx2(type, nb, w, a, astride, out, ostride, nr);
        else kern_q40_chain_avx2(nb, w, a, astride, out, ostride, nr);
        return;
    }
#endif
    (void)use_avx2;
    type_info ti;
    get_info(type, &ti);
    for (int r = 0; r < nr; r++) {
        const void *ar = (const uint8_t *)a + r * astride;
        float *o = out + r * ostride;
        if (kind == MK_Q4K_RP) *o = dot_q4k_rp_scalar(gemm, nb, w, (const act256 *)ar);
        else if (kind == MK_TILED) *o = dot_k_tiled_scalar(type, nb, ti.wbytes, w, (const act256 *)ar);
        else *o = dot_q40_chain_scalar(nb, w, (const act32 *)ar);
    }
}

/* Activation rows handled together by one kernel call (the kernels hold NR accumulators).
 * Tiles start at multiples of MT: with MT = 4 a tile of a repacked Q4_K weight lies wholly in
 * ggml's gemm rows or wholly in its gemv rows. */
#define MT 4
/* Software prefetch distance in bytes for single-pass (decode) calls. */
#define PREFETCH_AHEAD 4096

/* One weight matrix of a job: its output rows are handed out in chunks. */
typedef struct {
    int type;
    int nb;               /* weight blocks per row */
    size_t row_bytes;
    const uint8_t *w;     /* [N, row_bytes] */
    float *y;             /* [M, N] */
    long N;
    long chunk;           /* output rows per work item */
    long first;           /* index of this matrix's first work item in the job */
    int kind;             /* MK_*: which of llama.cpp's kernels it follows */
} mat_t;

/* Up to this many matrices share one quantized input per call (q/k/v, gate/up). */
#define MAX_MATS 8

typedef struct {
    int use_avx2;
    long M;
    long gemm_rows;       /* repacked Q4_K: rows [0, gemm_rows) in ggml's gemm order */
    size_t arow;          /* bytes of one quantized activation row */
    const uint8_t *act;
    int n_mats;
    mat_t mats[MAX_MATS];
    long n_items;
    long next;            /* next work item (atomic) */
} job_t;

static void run_chunks(job_t *jb) {
    kern_fn kern = kern_scalar;
#if QK_X86
    if (jb->use_avx2) kern = kern_avx2;
#endif
    const long M = jb->M;
    for (;;) {
        const long c = __atomic_fetch_add(&jb->next, 1, __ATOMIC_RELAXED);
        if (c >= jb->n_items) break;
        int i = 0;
        while (i + 1 < jb->n_mats && c >= jb->mats[i + 1].first) i++;
        const mat_t *mt = &jb->mats[i];
        const long n0 = (c - mt->first) * mt->chunk;
        const long n1 = n0 + mt->chunk < mt->N ? n0 + mt->chunk : mt->N;
        /* The chunk's weight rows stay in L1/L2 while every activation tile passes over
         * them, so each weight row is fetched from memory once for all M rows. */
        for (long m0 = 0; m0 < M; m0 += MT) {
            const int nr = (int)(M - m0 < MT ? M - m0 : MT);
            const uint8_t *a = jb->act + m0 * jb->arow;
            float *yo = mt->y + m0 * mt->N;
            long n = n0;
#if QK_X86
            /* one activation row (decode): weight rows in pairs where the type has the kernel */
            if (M == 1 && jb->use_avx2 && mt->kind == MK_VECDOT) {
                for (; n + 2 <= n1; n += 2) {
                    const size_t at = n * mt->row_bytes + PREFETCH_AHEAD, end = n1 * mt->row_bytes;
                    for (size_t o = at; o < at + 2 * mt->row_bytes && o < end; o += 64)
                        __builtin_prefetch(mt->w + o, 0, 3);
                    if (!kern2_avx2(mt->type, mt->nb, mt->w + n * mt->row_bytes, mt->row_bytes, a, yo + n)) break;
                }
            }
#endif
            if (mt->kind != MK_VECDOT) {
                const int gemm = m0 < jb->gemm_rows;
#if QK_X86
                /* repacked Q4_K: 4 weight rows a call (the gemv keeps them in its lanes) */
                if (mt->kind == MK_Q4K_RP && jb->use_avx2) {
                    for (; n < n1; n += 4) {
                        const long nw = n1 - n < 4 ? n1 - n : 4;
                        if (M <= MT) {
                            const size_t at = n * mt->row_bytes + PREFETCH_AHEAD, end = n1 * mt->row_bytes;
                            for (size_t o = at; o < at + nw * mt->row_bytes && o < end; o += 64)
                                __builtin_prefetch(mt->w + o, 0, 3);
                        }
                        kern_q4k_rp_avx2(gemm, mt->nb, mt->w + n * mt->row_bytes, mt->row_bytes, nw, a,
                                         jb->arow, yo + n, (size_t)mt->N, nr);
                    }
                    continue;
                }
                /* repacked Q4_0, one activation row: weight rows in pairs (as kern2_avx2) */
                if (M == 1 && jb->use_avx2 && mt->kind == MK_Q40_RP) {
                    for (; n + 2 <= n1; n += 2) {
                        const size_t at = n * mt->row_bytes + PREFETCH_AHEAD, end = n1 * mt->row_bytes;
                        for (size_t o = at; o < at + 2 * mt->row_bytes && o < end; o += 64)
                            __builtin_prefetch(mt->w + o, 0, 3);
                        kern2_q40_chain_avx2(mt->nb, mt->w + n * mt->row_bytes, mt->row_bytes, a, yo + n);
                    }
                }
#endif
                for (; n < n1; n++) {
                    if (M <= MT) {
                        const size_t at = n * mt->row_bytes + PREFETCH_AHEAD, end = n1 * mt->row_bytes;
                        for (size_t o = at; o < at + mt->row_bytes && o < end; o += 64)
                            __builtin_prefetch(mt->w + o, 0, 3);
                    }
                    kern_kind(mt->kind, jb->use_avx2, gemm, mt->type, mt->nb, mt->w + n * mt->row_bytes, a,
                              jb->arow, yo + n, (size_t)mt->N, nr);
                }
                continue;
            }
            for (; n < n1; n++) {
                if (M <= MT) {
                    /* one pass over the rows, each fetched from memory once: ask for the
                     * bytes PREFETCH_AHEAD ahead (tuned on SmolLM2/Gemma 3 token passes:
                     * 10-15% faster than the hardware prefetcher alone) */
                    const size_t at = n * mt->row_bytes + PREFETCH_AHEAD, end = n1 * mt->row_bytes;
                    for (size_t o = at; o < at + mt->row_bytes && o < end; o += 64)
                        __builtin_prefetch(mt->w + o, 0, 3);
                }
                kern(mt->type, mt->nb, mt->w + n * mt->row_bytes, a, jb->arow, yo + n, (size_t)mt->N, nr);
            }
        }
    }
}

/* Per-thread scratch for quantized activations (scratch.h): steady-state decoding allocates
 * nothing. */
static __thread void *t_scratch = NULL;
static __thread size_t t_scratch_cap = 0;

static uint8_t *scratch(size_t n) { return grow_scratch(&t_scratch, &t_scratch_cap, n); }

/* One weight of a call: type, raw rows [N, row_bytes], output [M, N] (capi.h: the fused
 * decode step hands its matrices over in this form). */
typedef corral_mat_spec mat_spec;

/* y_i = x @ W_i^T for n matrices that take the same activation blocks (same K and act kind):
 * x is quantized once, then all matrices' row chunks go to the threads of one parallel
 * region.  Returns -1 when the scratch buffer cannot be allocated. */
static int qmatmul_run(const mat_spec *specs, int n, const float *x, long M, long K, int nth,
                       int use_avx2) {
    job_t jb;
    memset(&jb, 0, sizeof jb);
    type_info ti;
    get_info(specs[0].type, &ti);
    jb.use_avx2 = use_avx2;
    jb.M = M;
    const int order = order_mode();
    jb.gemm_rows = order == ORD_LLAMA && M > 3 ? M - M % 4 : 0;
    const int aqk = ti.act == ACT_Q8_K ? 256 : 32;
    jb.arow = (size_t)(K / aqk) * act_block_bytes(ti.act);
    uint8_t *act = scratch(jb.arow * (size_t)M);
    if (!act) return -1;
    jb.act = act;

    long total_rows = 0;
    for (int i = 0; i < n; i++) total_rows += specs[i].N;
    jb.n_mats = n;
    for (int i = 0; i < n; i++) {
        mat_t *mt = &jb.mats[i];
        type_info wi;
        get_info(specs[i].type, &wi);
        mt->type = specs[i].type;
        mt->nb = (int)(K / wi.qk);
        mt->row_bytes = (size_t)mt->nb * wi.wbytes;
        mt->w = specs[i].w;
        mt->y = specs[i].y;
        mt->N = specs[i].N;
        mt->kind = mat_kind(order, mt->type, mt->N, M);
        /* Work split: with one activation tile, about 8 items per thread over all the
         * matrices (dynamic hand-out balances them); with many tiles, chunks of weight rows
         * small enough to stay cache-resident while the tiles pass over them. */
        long chunk;
        if (M <= MT) {
            chunk = (total_rows + (long)nth * 8 - 1) / ((long)nth * 8);
            if (chunk < 8) chunk = 8;
        } else {
            chunk = (long)(32768 / mt->row_bytes);
            const long even = (total_rows + (long)nth * 4 - 1) / ((long)nth * 4);
            if (chunk > even) chunk = even;
            if (chunk < 1) chunk = 1;
        }
        mt->chunk = chunk;
        mt->first = jb.n_items;
        jb.n_items += (mt->N + chunk - 1) / chunk;
    }
    if (jb.n_items < nth) nth = (int)(jb.n_items > 0 ? jb.n_items : 1);
    /* Small work is not worth waking threads for (~4 us of single-thread work). */
    if ((double)M * (double)total_rows * (double)K < 2.0e5) nth = 1;

    const int par_quant = nth > 1 && M >= 2L * nth;
    if (!par_quant) quantize_rows(&ti, use_avx2, x, act, jb.arow, K, 0, M);

#ifdef _OPENMP
    if (nth > 1) {
#pragma omp parallel num_threads(nth)
        {
            if (par_quant) {
                const int t = omp_get_thread_num(), T = omp_get_num_threads();
                quantize_rows(&ti, use_avx2, x, act, jb.arow, K, M * t / T, M * (t + 1) / T);
#pragma omp barrier
            }
            run_chunks(&jb);
        }
        return 0;
    }
#endif
    if (par_quant) quantize_rows(&ti, use_avx2, x, act, jb.arow, K, 0, M);
    run_chunks(&jb);
    return 0;
}

/* Rows [n0, n1) of a weight to float32 out [n1 - n0, K], over nth threads. */
static void dequantize_run(int type, const uint8_t *w, float *out, long N, long K, int nth, int use_avx2) {
    type_info ti;
    get_info(type, &ti);
    const int nb = (int)(K / ti.qk);
    const size_t rb = (size_t)nb * ti.wbytes;
    if ((double)N * (double)K < 1.0e5) nth = 1;
    (void)nth; /* unused without OpenMP */
#ifdef _OPENMP
#pragma omp parallel for num_threads(nth) schedule(static) if (nth > 1)
#endif
    for (long n = 0; n < N; n++) {
#if QK_X86
        if (use_avx2) {
            deq_row_avx2(type, nb, w + n * rb, out + n * K);
            continue;
        }
#endif
        deq_row_scalar(type, nb, w + n * rb, out + n * K);
    }
    (void)use_avx2;
}

/* o[0..n) = q * d (n a multiple of 32) */
#if QK_X86
TGT static void expand_q8_avx2(const int8_t *q, int n, float d, float *o) {
    const __m256 vd = _mm256_set1_ps(d);
    for (int j = 0; j < n; j += 8) {
        const __m128i b = _mm_loadl_epi64((const __m128i *)(q + j));
        _mm256_storeu_ps(o + j, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b)), vd));
    }
}
#endif

static void expand_q8(const int8_t *q, int n, float d, float *o, int use_avx2) {
#if QK_X86
    if (use_avx2) {
        expand_q8_avx2(q, n, d, o);
        return;
    }
#endif
    (void)use_avx2;
    for (int j = 0; j < n; j++) o[j] = (float)q[j] * d;
}

/* The activations as the kernels use them: out[M, K] = q * d per block (fp16-rounded d for
 * Q8_0/Q8_1, float32 d for Q8_K).  For Q8_1 (weights with a min) also corr[M, K/32] =
 * s - d*sum(q): the kernels add m_w*s per block where a float matmul with the dequantized
 * weight (d_w*q_w + m_w) adds m_w*d*sum(q). */
static int round_acts_run(int type, const float *x, float *out, float *corr, long M, long K, int nth,
                          int use_avx2) {
    type_info ti;
    get_info(type, &ti);
    const int aqk = ti.act == ACT_Q8_K ? 256 : 32;
    const long nb = K / aqk;
    const size_t arow = (size_t)nb * act_block_bytes(ti.act);
    if ((double)M * (double)K < 1.0e5) nth = 1;
    (void)nth; /* unused without OpenMP */
    int failed = 0;
#ifdef _OPENMP
#pragma omp parallel for num_threads(nth) schedule(static) if (nth > 1)
#endif
    for (long m = 0; m < M; m++) {
        uint8_t *act = scratch(arow); /* this thread's own buffer */
        if (!act) {
            failed = 1;
            continue;
        }
        quantize_rows(&ti, use_avx2, x + m * K, act, arow, K, 0, 1);
        float *o = out + m * K;
        for (long b = 0; b < nb; b++) {
            const int8_t *qs;
            float d;
            if (ti.act == ACT_Q8_K) {
                qs = ((const act256 *)act)[b].qs;
                d = ((const act256 *)act)[b].d;
            } else {
                qs = ((const act32 *)act)[b].qs;
                d = ((const act32 *)act)[b].d;
            }
            expand_q8(qs, aqk, d, o + aqk * b, use_avx2);
            if (ti.act == ACT_Q8_1 && corr) {
                const act32 *a = (const act32 *)act + b;
                int sum = 0;
                for (int j = 0; j < 32; j++) sum += a->qs[j];
                corr[m * nb + b] = a->s - a->d * (float)sum;
            }
        }
    }
    return failed ? -1 : 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Python interface                                                                           */
/* ------------------------------------------------------------------------------------------ */

static int check_type_k(int type, long K, type_info *ti) {
    if (!get_info(type, ti)) {
        PyErr_Format(PyExc_ValueError, "ggml type id %d has no quantized kernel", type);
        return 0;
    }
    if (K <= 0 || K % ti->qk) {
        PyErr_Format(PyExc_ValueError, "K=%ld is not a positive multiple of the %d-value block", K, ti->qk);
        return 0;
    }
    return 1;
}

PyDoc_STRVAR(qmatmul_doc,
             "qmatmul(type, x_ptr, w_ptr, y_ptr, M, N, K, n_threads, scalar) -> None\n\n"
             "y[M, N] = x[M, K] (float32) times the GGML-block weight rows w[N] (type id), "
             "as llama.cpp's CPU backend computes it. Raw addresses; no checks beyond sizes.");

/* METH_FASTCALL: this is called once per matrix per token, so the argument handling is
 * kept to plain integer conversions (PyArg_ParseTuple costs a few hundred ns more). */
static PyObject *py_qmatmul(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 9) return PyErr_Format(PyExc_TypeError, "qmatmul takes 9 arguments, got %zd", nargs);
    long long iv[9];
    for (int i = 0; i < 9; i++) {
        if (i >= 1 && i <= 3) { /* addresses */
            const unsigned long long u = PyLong_AsUnsignedLongLong(args[i]);
            if (u == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
            iv[i] = (long long)u;
        } else {
            iv[i] = PyLong_AsLongLong(args[i]);
            if (iv[i] == -1 && PyErr_Occurred()) return NULL;
        }
    }
    const int type = (int)iv[0];
    const long long M = iv[4], N = iv[5], K = iv[6];
    long long nth = iv[7];
    const int force_scalar = iv[8] != 0;
    type_info ti;
    if (!check_type_k(type, (long)K, &ti)) return NULL;
    if (M < 0 || N < 0) return PyErr_Format(PyExc_ValueError, "negative size M=%lld N=%lld", M, N);
    if (M == 0 || N == 0) Py_RETURN_NONE;
    if (!iv[1] || !iv[2] || !iv[3]) return PyErr_Format(PyExc_ValueError, "null data pointer");
    if (nth < 1) nth = 1;
    if (nth > 256) nth = 256;
    const int use_avx2 = g_has_avx2 && !force_scalar;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    const mat_spec spec = {type, (const uint8_t *)(uintptr_t)iv[2], (float *)(uintptr_t)iv[3], (long)N};
    rc = qmatmul_run(&spec, 1, (const float *)(uintptr_t)iv[1], (long)M, (long)K, (int)nth, use_avx2);
    Py_END_ALLOW_THREADS
    if (rc) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

PyDoc_STRVAR(qmatmul_many_doc,
             "qmatmul_many(x_ptr, M, K, n_threads, scalar, specs) -> None\n\n"
             "specs: a tuple of (type, w_ptr, y_ptr, N), at most 8, whose types take the same "
             "activation blocks: y_i[M, N_i] = x[M, K] times w_i, with x quantized once and "
             "all the work in one parallel region.");

static PyObject *py_qmatmul_many(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long xp;
    Py_ssize_t M, K;
    int nth, force_scalar;
    PyObject *specs_obj;
    if (!PyArg_ParseTuple(args, "KnnipO!", &xp, &M, &K, &nth, &force_scalar, &PyTuple_Type, &specs_obj))
        return NULL;
    const Py_ssize_t n = PyTuple_GET_SIZE(specs_obj);
    if (n < 1 || n > MAX_MATS)
        return PyErr_Format(PyExc_ValueError, "qmatmul_many takes 1 to %d matrices, got %zd", MAX_MATS, n);
    mat_spec specs[MAX_MATS];
    int act = -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned long long wp, yp;
        Py_ssize_t N;
        int type;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(specs_obj, i), "iKKn", &type, &wp, &yp, &N)) return NULL;
        type_info ti;
        if (!check_type_k(type, (long)K, &ti)) return NULL;
        if (act >= 0 && ti.act != act)
            return PyErr_Format(PyExc_ValueError, "matrix %zd takes other activation blocks than matrix 0", i);
        act = ti.act;
        if (N < 0) return PyErr_Format(PyExc_ValueError, "negative size N=%zd", N);
        if (!wp || !yp) return PyErr_Format(PyExc_ValueError, "null data pointer");
        specs[i] = (mat_spec){type, (const uint8_t *)(uintptr_t)wp, (float *)(uintptr_t)yp, (long)N};
    }
    if (M < 0) return PyErr_Format(PyExc_ValueError, "negative size M=%zd", M);
    /* drop empty matrices; nothing to do without rows */
    int m = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if (specs[i].N > 0) specs[m++] = specs[i];
    if (M == 0 || m == 0) Py_RETURN_NONE;
    if (!xp) return PyErr_Format(PyExc_ValueError, "null data pointer");
    if (nth < 1) nth = 1;
    if (nth > 256) nth = 256;
    const int use_avx2 = g_has_avx2 && !force_scalar;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = qmatmul_run(specs, m, (const float *)(uintptr_t)xp, (long)M, (long)K, nth, use_avx2);
    Py_END_ALLOW_THREADS
    if (rc) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

PyDoc_STRVAR(quantize_doc,
             "quantize(type, x_ptr, out_ptr, M, K, scalar, n_threads=1) -> None\n\n"
             "Quantize x[M, K] float32 to the activation blocks llama.cpp dots with weights of "
             "ggml type `type`, written in ggml's byte layout (block_q8_0: fp16 d, 32 int8; "
             "block_q8_1: fp16 d, fp16 s, 32 int8; block_q8_K: float d, 256 int8, 16 int16 bsums). "
             "Rows go to n_threads threads (each row's bytes do not depend on the split).");

/* One activation row x[K] -> its blocks in ggml's byte layout at out (tmp: our layout's
 * arow bytes of scratch). */
static void quantize_ggml_row(const type_info *ti, int use_avx2, const float *xr, uint8_t *tmp,
                              size_t arow, long K, long nb, uint8_t *out) {
    quantize_rows(ti, use_avx2, xr, tmp, arow, K, 0, 1);
    for (long b = 0; b < nb; b++) {
        if (ti->act == ACT_Q8_K) {
            const act256 *s = (const act256 *)tmp + b;
            memcpy(out, &s->d, 4);
            memcpy(out + 4, s->qs, 256);
            memcpy(out + 260, s->bsums, 32);
            out += 292;
        } else {
            const act32 *s = (const act32 *)tmp + b;
            const uint16_t d16 = f2h(s->d);
            memcpy(out, &d16, 2);
            if (ti->act == ACT_Q8_1) {
                const uint16_t s16 = f2h(s->s);
                memcpy(out + 2, &s16, 2);
                memcpy(out + 4, s->qs, 32);
                out += 36;
            } else {
                memcpy(out + 2, s->qs, 32);
                out += 34;
            }
        }
    }
}

static PyObject *py_quantize(PyObject *self, PyObject *args) {
    (void)self;
    int type, force_scalar, nth = 1;
    unsigned long long xp, op;
    Py_ssize_t M, K;
    if (!PyArg_ParseTuple(args, "iKKnnp|i", &type, &xp, &op, &M, &K, &force_scalar, &nth))
        return NULL;
    type_info ti;
    if (!check_type_k(type, (long)K, &ti)) return NULL;
    if (M < 0) return PyErr_Format(PyExc_ValueError, "negative size M=%zd", M);
    if (M == 0) Py_RETURN_NONE;
    if (!xp || !op) return PyErr_Format(PyExc_ValueError, "null data pointer");
    if (nth < 1) nth = 1;
    if (nth > M) nth = (int)M;
    const int aqk = ti.act == ACT_Q8_K ? 256 : 32;
    const long nb = (long)K / aqk;
    const size_t arow = (size_t)nb * act_block_bytes(ti.act);
    /* ggml's row bytes: block_q8_K 292, block_q8_1 36, block_q8_0 34 per block */
    const size_t orow = (size_t)nb * (ti.act == ACT_Q8_K ? 292 : ti.act == ACT_Q8_1 ? 36 : 34);
    uint8_t *tmp = malloc(arow * (size_t)nth); /* one row of scratch per thread */
    if (!tmp) return PyErr_NoMemory();
    const int use_avx2 = g_has_avx2 && !force_scalar;
    const float *x = (const float *)(uintptr_t)xp;
    uint8_t *out = (uint8_t *)(uintptr_t)op;
    Py_BEGIN_ALLOW_THREADS
#ifdef _OPENMP
    /* a prompt's rows (the AMX route quantizes every matmul input here) on all threads */
#pragma omp parallel for num_threads(nth) schedule(static) if (nth > 1)
#endif
    for (Py_ssize_t m = 0; m < M; m++) {
#ifdef _OPENMP
        uint8_t *mine = tmp + arow * (size_t)omp_get_thread_num();
#else
        uint8_t *mine = tmp;
#endif
        quantize_ggml_row(&ti, use_avx2, x + m * K, mine, arow, (long)K, nb, out + m * orow);
    }
    Py_END_ALLOW_THREADS
    free(tmp);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(dequantize_doc,
             "dequantize(type, w_ptr, out_ptr, N, K, n_threads, scalar) -> None\n\n"
             "Weight rows w[N] of `type` blocks -> float32 out[N, K].");

static PyObject *py_dequantize(PyObject *self, PyObject *args) {
    (void)self;
    int type, nth, force_scalar;
    unsigned long long wp, op;
    Py_ssize_t N, K;
    if (!PyArg_ParseTuple(args, "iKKnnip", &type, &wp, &op, &N, &K, &nth, &force_scalar)) return NULL;
    type_info ti;
    if (!check_type_k(type, (long)K, &ti)) return NULL;
    if (N < 0) return PyErr_Format(PyExc_ValueError, "negative size N=%zd", N);
    if (N == 0) Py_RETURN_NONE;
    if (!wp || !op) return PyErr_Format(PyExc_ValueError, "null data pointer");
    if (nth < 1) nth = 1;
    if (nth > 256) nth = 256;
    const int use_avx2 = g_has_avx2 && !force_scalar;
    Py_BEGIN_ALLOW_THREADS
    dequantize_run(type, (const uint8_t *)(uintptr_t)wp, (float *)(uintptr_t)op, (long)N, (long)K, nth, use_avx2);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

PyDoc_STRVAR(dequantize_rows_doc,
             "dequantize_rows(type, w_ptr, N, K, ids_ptr, n_ids, out_ptr, scalar) -> None\n\n"
             "out[i] = row ids[i] of the weight w[N] (int64 ids, negative ones from the end), "
             "float32 out[n_ids, K]. IndexError for an id out of range (nothing written).");

static PyObject *py_dequantize_rows(PyObject *self, PyObject *args) {
    (void)self;
    int type, force_scalar;
    unsigned long long wp, ip, op;
    Py_ssize_t N, K, n_ids;
    if (!PyArg_ParseTuple(args, "iKnnKnKp", &type, &wp, &N, &K, &ip, &n_ids, &op, &force_scalar)) return NULL;
    type_info ti;
    if (!check_type_k(type, (long)K, &ti)) return NULL;
    if (N < 0 || n_ids < 0) return PyErr_Format(PyExc_ValueError, "negative size");
    if (n_ids == 0) Py_RETURN_NONE;
    if (!wp || !ip || !op) return PyErr_Format(PyExc_ValueError, "null data pointer");
    const int64_t *ids = (const int64_t *)(uintptr_t)ip;
    for (Py_ssize_t i = 0; i < n_ids; i++)
        if (ids[i] < -(int64_t)N || ids[i] >= (int64_t)N)
            return PyErr_Format(PyExc_IndexError, "row %lld out of range for a weight of %zd rows",
                                (long long)ids[i], N);
    const int nb = (int)(K / ti.qk);
    const size_t rb = (size_t)nb * ti.wbytes;
    const int use_avx2 = g_has_avx2 && !force_scalar;
    const uint8_t *w = (const uint8_t *)(uintptr_t)wp;
    float *out = (float *)(uintptr_t)op;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n_ids; i++) {
        const int64_t r = ids[i] < 0 ? ids[i] + N : ids[i];
#if QK_X86
        if (use_avx2) {
            deq_row_avx2(type, nb, w + (size_t)r * rb, out + i * K);
            continue;
        }
#endif
        deq_row_scalar(type, nb, w + (size_t)r * rb, out + i * K);
    }
    (void)use_avx2;
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

PyDoc_STRVAR(round_activations_doc,
             "round_activations(type, x_ptr, out_ptr, corr_ptr, M, K, n_threads, scalar) -> None\n\n"
             "x[M, K] -> out[M, K]: the activation values the kernels dot with `type` weights "
             "(q * d per block). For the types with a min (Q4_1, Q5_1) also corr[M, K/32] = "
             "s - d*sum(q) when corr_ptr is not 0.");

static PyObject *py_round_activations(PyObject *self, PyObject *args) {
    (void)self;
    int type, nth, force_scalar;
    unsigned long long xp, op, cp;
    Py_ssize_t M, K;
    if (!PyArg_ParseTuple(args, "iKKKnnip", &type, &xp, &op, &cp, &M, &K, &nth, &force_scalar)) return NULL;
    if (nth < 1) nth = 1;
    if (nth > 256) nth = 256;
    type_info ti;
    if (!check_type_k(type, (long)K, &ti)) return NULL;
    const int aqk = ti.act == ACT_Q8_K ? 256 : 32;
    if (K % aqk) return PyErr_Format(PyExc_ValueError, "K=%zd is not a multiple of %d", K, aqk);
    if (M < 0) return PyErr_Format(PyExc_ValueError, "negative size M=%zd", M);
    if (M == 0) Py_RETURN_NONE;
    if (!xp || !op) return PyErr_Format(PyExc_ValueError, "null data pointer");
    const int use_avx2 = g_has_avx2 && !force_scalar;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = round_acts_run(type, (const float *)(uintptr_t)xp, (float *)(uintptr_t)op, (float *)(uintptr_t)cp,
                        (long)M, (long)K, nth, use_avx2);
    Py_END_ALLOW_THREADS
    if (rc) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *py_cpu_features(PyObject *self, PyObject *noargs) {
    (void)self;
    (void)noargs;
#ifdef _OPENMP
    const int omp = 1, omp_max = omp_get_max_threads();
#else
    const int omp = 0, omp_max = 1;
#endif
    return Py_BuildValue("{s:O,s:O,s:i}", "avx2", g_has_avx2 ? Py_True : Py_False, "openmp",
                         omp ? Py_True : Py_False, "omp_max_threads", omp_max);
}

PyDoc_STRVAR(set_order_doc,
             "set_order(mode) -> int: which of llama.cpp's kernels the matmuls follow, for the "
             "process: 0 ggml_vec_dot everywhere, 1 as llama.cpp's AVX2 build (repacked Q4_K/Q4_0 "
             "weights, tiled K-quants from 8 rows; the default), 2 every row as a one-row call. "
             "Returns the previous mode.");

static PyObject *py_set_order(PyObject *self, PyObject *arg) {
    (void)self;
    const long v = PyLong_AsLong(arg);
    if (v == -1 && PyErr_Occurred()) return NULL;
    if (v < ORD_VECDOT || v > ORD_ROWS) return PyErr_Format(PyExc_ValueError, "order %ld is not 0, 1 or 2", v);
    const int old = g_order;
    g_order = (int)v;
    return PyLong_FromLong(old);
}

PyDoc_STRVAR(set_rows_alone_doc,
             "set_rows_alone(flag) -> bool: on the calling thread, order 1 of set_order acts as "
             "order 2 while flag is set (each row the bits of a one-row call). Returns the previous "
             "flag.");

static PyObject *py_set_rows_alone(PyObject *self, PyObject *arg) {
    (void)self;
    const int v = PyObject_IsTrue(arg);
    if (v < 0) return NULL;
    const int old = t_rows_alone;
    t_rows_alone = v;
    return PyBool_FromLong(old);
}

static PyObject *py_order(PyObject *self, PyObject *noargs) {
    (void)self;
    (void)noargs;
    return PyLong_FromLong(order_mode());
}

static PyMethodDef methods[] = {
    {"set_order", py_set_order, METH_O, set_order_doc},
    {"set_rows_alone", py_set_rows_alone, METH_O, set_rows_alone_doc},
    {"order", py_order, METH_NOARGS, "order() -> int: the order on this thread (set_order, set_rows_alone)"},
    {"qmatmul", (PyCFunction)(void (*)(void))py_qmatmul, METH_FASTCALL, qmatmul_doc},
    {"qmatmul_many", py_qmatmul_many, METH_VARARGS, qmatmul_many_doc},
    {"quantize", py_quantize, METH_VARARGS, quantize_doc},
    {"dequantize", py_dequantize, METH_VARARGS, dequantize_doc},
    {"dequantize_rows", py_dequantize_rows, METH_VARARGS, dequantize_rows_doc},
    {"round_activations", py_round_activations, METH_VARARGS, round_activations_doc},
    {"cpu_features", py_cpu_features, METH_NOARGS, "{'avx2': bool, 'openmp': bool, 'omp_max_threads': int}"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "_qkernels",
    "Quantized GGML matmul kernels (llama.cpp CPU semantics); see corral.kernels.",
    -1,
    methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

static int act_kind(int type) {
    type_info ti;
    return get_info(type, &ti) ? ti.act : -1;
}

/* The table corral._decode calls (capi.h); has_avx2 is filled in at import. */
static corral_qkernels_api c_api = {CORRAL_QKERNELS_API_VERSION, 0, qmatmul_run, act_kind};

PyMODINIT_FUNC PyInit__qkernels(void) {
    g_has_avx2 = cpu_has_avx2();
    c_api.has_avx2 = g_has_avx2;

    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    PyObject *cap = PyCapsule_New(&c_api, "corral._qkernels._C_API", NULL);
    if (!cap || PyModule_AddObject(m, "_C_API", cap) < 0) {
        Py_XDECREF(cap);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
