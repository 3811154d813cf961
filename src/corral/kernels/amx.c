/*
 * corral._amx: prompt-sized y = x @ W^T on Intel AMX int8 tiles, straight from GGML blocks.
 *
 * The dense route of corral.kernels.QMatrix (prompts of many rows) used to dequantize every
 * weight to float32 and run a float32 GEMM on activations rounded the way ggml quantizes
 * them. Both sides are really small integers times a per-block scale, so the same sums can
 * be formed as ggml forms them: integer dot products per block (here 16x16 outputs at a
 * time in AMX tiles: TDPBSSD, int8 x int8 -> int32, exact) then scaled in float32 by the two
 * block scales and accumulated. On a Sapphire Rapids core that is several times the float32
 * FMA rate, and no float32 copy of the weight is made.
 *
 *   weight     activations (ggml layout, from _qkernels.quantize)   integer weight values
 *   Q4_0       block_q8_0: fp16 d, 32 int8                         q - 8
 *   Q5_0       block_q8_0                                          q - 16
 *   Q8_0       block_q8_0                                          q
 *   Q4_K/Q5_K  block_q8_K: float d, 256 int8, 16 int16 bsums        sc * q (6-bit scale per 32)
 *   Q6_K       block_q8_K                                          sc * (q - 32) (int8 per 16)
 *
 * Per activation block (32 or 256 values) the result is d_w * d_a * isum, isum the exact
 * integer dot product, as in ggml's vec_dot kernels; only the float32 order of the per-block
 * sum differs (ggml sums 8 lanes of partial sums). The k-quants' sc * q (up to 13 bits) does
 * not fit int8, so it is split into two planes, v = 64 * hi + lo with lo in [0, 63], each
 * dotted exactly and combined in int32. Q4_K/Q5_K's min term is ggml's too: per block,
 * (-d_a * dmin) * sum over the 8 sub-blocks j of m_j * bsum_j, the integer dot of the 6-bit
 * mins with the activation block's sums of 32 values (from its int16 bsums), exact in int32,
 * formed per 16 x 16 tile with AVX-512 (VPMADDWD/VPDPWSSD) from the raw weight blocks.
 * Where llama.cpp's AVX2 build does not use vec_dot (qkernels.c, "Which of llama.cpp's kernels
 * a matmul follows") the tiles follow its order exactly, as the integer kernels do: repacked
 * Q4_K weights (tile_rows_rp: ggml's gemm order for rows [0, gemm_rows), its gemv order for
 * the rest), the other K-quants when the caller asks for the tiled order (tile_rows, tiled),
 * and Q4_0 (one FMA per block, which is how repacked Q4_0 sums: tile_rows32).
 *
 * Layout: a uint8 [M, K/QA * block bytes] (ggml's activation blocks), w uint8 [N, row_bytes]
 * (the raw weight rows), y float32 [M, N] (overwritten). Threads (OpenMP) take panels of 16
 * weight rows: each panel is unpacked once into the tile layout (VNNI: 4 consecutive k of
 * one output column per 32-bit lane) and then met by every 16-row tile of activations.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "half.h"

#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && __GNUC__ >= 11
#define AMX_BUILD 1
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
/* the unpacking below runs only next to the tiles: let the compiler vectorize it for AVX-512 */
#define UNPACK_TGT __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))
#else
#define AMX_BUILD 0
#define UNPACK_TGT
#endif

enum { T_Q4_0 = 2, T_Q5_0 = 6, T_Q8_0 = 8, T_Q4_K = 12, T_Q5_K = 13, T_Q6_K = 14 };

typedef struct {
    int qk;      /* values per scale block (32, or 256 for the k-quants) */
    int wbytes;  /* bytes per weight block of qk values */
    int abytes;  /* bytes per activation block */
    int aoff;    /* offset of the int8 values in an activation block */
    int planes;  /* int8 planes of the weight (2 where sc * q needs more than 8 bits) */
    int mins;    /* 1 for Q4_K/Q5_K: a min term dmin * m per 32 values */
} amx_type;

static int amx_info(int type, amx_type *t) {
    switch (type) {
    case T_Q4_0: *t = (amx_type){32, 18, 34, 2, 1, 0}; return 1;
    case T_Q5_0: *t = (amx_type){32, 22, 34, 2, 1, 0}; return 1;
    case T_Q8_0: *t = (amx_type){32, 34, 34, 2, 1, 0}; return 1;
    case T_Q4_K: *t = (amx_type){256, 144, 292, 4, 2, 1}; return 1;
    case T_Q5_K: *t = (amx_type){256, 176, 292, 4, 2, 1}; return 1;
    case T_Q6_K: *t = (amx_type){256, 210, 292, 4, 2, 0}; return 1;
    default: return 0;
    }
}

/* The 6-bit scale and min of sub-block j of a Q4_K/Q5_K block (ggml's get_scale_min_k4). */
UNPACK_TGT static inline void scale_min_k4(int j, const uint8_t *q, int *sc, int *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

/* Integer weight value x as its planes: x itself (PUT1), or x = 64 * hi + lo with lo in
 * [0, 63] (PUT2: hi the floor of x / 64, within int8 for |x| <= 4096). */
#define PUT1(k, x) (hi[k] = (int8_t)(x))
#define PUT2(k, x)                     \
    do {                               \
        const int x_ = (x);            \
        hi[k] = (int8_t)(x_ >> 6);     \
        lo[k] = (int8_t)(x_ & 63);     \
    } while (0)

#if AMX_BUILD
/* 32 values q (int8) times scale s0 (the first 16) and s1 (the last 16), as PUT2 stores them:
 * 64 * hi + lo, lo in [0, 63] (the product fits int16: |sc * q| <= 4096). */
UNPACK_TGT static inline void put2_32(int8_t *hi, int8_t *lo, __m256i q, int s0, int s1) {
    const __m512i sc =
        _mm512_inserti64x4(_mm512_set1_epi16((short)s0), _mm256_set1_epi16((short)s1), 1);
    const __m512i v = _mm512_mullo_epi16(_mm512_cvtepi8_epi16(q), sc);
    const __m512i l6 = _mm512_and_si512(v, _mm512_set1_epi16(63));
    _mm256_storeu_si256((__m256i *)hi, _mm512_cvtepi16_epi8(_mm512_srai_epi16(v, 6)));
    _mm256_storeu_si256((__m256i *)lo, _mm512_cvtepi16_epi8(l6));
}
#endif

/* One weight row -> its integer values (int8 planes hi[K], and lo[K] for the k-quants), the
 * float scale of each qk-block and, for Q4_K/Q5_K, each block's dmin and its 8 6-bit mins
 * (mn[8 * b + j], sub-block j). */
UNPACK_TGT static void unpack_row(int type, const uint8_t *row, long K, int8_t *hi, int8_t *lo,
                                  float *scale, float *dmin, int16_t *mn) {
    switch (type) {
    case T_Q4_0:
        for (long b = 0; b < K / 32; b++, row += 18, hi += 32) {
            scale[b] = h2f(rd16(row));
            for (int j = 0; j < 16; j++) {
                PUT1(j, (row[2 + j] & 0xF) - 8);
                PUT1(j + 16, (row[2 + j] >> 4) - 8);
            }
        }
        break;
    case T_Q5_0:
        for (long b = 0; b < K / 32; b++, row += 22, hi += 32) {
            scale[b] = h2f(rd16(row));
            uint32_t qh;
            memcpy(&qh, row + 2, 4);
            for (int j = 0; j < 16; j++) {
                PUT1(j, ((row[6 + j] & 0xF) | (((qh >> j) & 1) << 4)) - 16);
                PUT1(j + 16, ((row[6 + j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) - 16);
            }
        }
        break;
    case T_Q8_0:
        for (long b = 0; b < K / 32; b++, row += 34, hi += 32) {
            scale[b] = h2f(rd16(row));
            memcpy(hi, row + 2, 32);
        }
        break;
    case T_Q4_K:
    case T_Q5_K: {
        const int five = type == T_Q5_K;
        const int bytes = five ? 176 : 144;
        for (long b = 0; b < K / 256; b++, row += bytes, hi += 256, lo += 256, mn += 8) {
            scale[b] = h2f(rd16(row));
            dmin[b] = h2f(rd16(row + 2));
            const uint8_t *sc = row + 4, *qh = row + 16, *qs = row + (five ? 48 : 16);
            for (int j = 0; j < 4; j++) {  /* 64 values: low nibbles, then high nibbles */
                int s0, m0, s1, m1;
                scale_min_k4(2 * j, sc, &s0, &m0);
                scale_min_k4(2 * j + 1, sc, &s1, &m1);
                mn[2 * j] = (int16_t)m0;
                mn[2 * j + 1] = (int16_t)m1;
#if AMX_BUILD
                const __m256i m4 = _mm256_set1_epi8(0xF), one = _mm256_set1_epi8(1);
                const __m256i v = _mm256_loadu_si256((const __m256i *)(qs + 32 * j));
                __m256i q0 = _mm256_and_si256(v, m4);
                __m256i q1 = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                if (five) { /* bits 2j and 2j + 1 of qh[i], as bit 4 (no carry between bytes) */
                    const __m256i h = _mm256_loadu_si256((const __m256i *)qh);
                    const __m256i b0 = _mm256_srl_epi16(h, _mm_cvtsi32_si128(2 * j));
                    const __m256i b1 = _mm256_srli_epi16(b0, 1);
                    q0 = _mm256_or_si256(q0, _mm256_slli_epi16(_mm256_and_si256(b0, one), 4));
                    q1 = _mm256_or_si256(q1, _mm256_slli_epi16(_mm256_and_si256(b1, one), 4));
                }
                put2_32(hi + 64 * j, lo + 64 * j, q0, s0, s0);
                put2_32(hi + 64 * j + 32, lo + 64 * j + 32, q1, s1, s1);
#else
                for (int i = 0; i < 32; i++) {
                    int q0 = qs[32 * j + i] & 0xF, q1 = qs[32 * j + i] >> 4;
                    if (five) {
                        q0 |= ((qh[i] >> (2 * j)) & 1) << 4;
                        q1 |= ((qh[i] >> (2 * j + 1)) & 1) << 4;
                    }
                    PUT2(64 * j + i, s0 * q0);
                    PUT2(64 * j + 32 + i, s1 * q1);
                }
#endif
            }
        }
        break;
    }
    case T_Q6_K:
        for (long b = 0; b < K / 256; b++, row += 210, hi += 256, lo += 256) {
            const uint8_t *ql = row, *qh = row + 128;
            const int8_t *sc = (const int8_t *)(row + 192);
            scale[b] = h2f(rd16(row + 208));
            for (int h = 0; h < 2; h++) {  /* two halves of 128 values */
#if AMX_BUILD
                const __m256i m4 = _mm256_set1_epi8(0xF), m3 = _mm256_set1_epi8(3);
                const __m256i off = _mm256_set1_epi8(32);
                const __m256i a = _mm256_loadu_si256((const __m256i *)ql);
                const __m256i c = _mm256_loadu_si256((const __m256i *)(ql + 32));
                const __m256i e = _mm256_loadu_si256((const __m256i *)qh);
                /* q1..q4 as the scalar code: 4 low bits from ql, 2 high from qh, minus 32 */
#define Q6(lo4, sh)                                                                       \
    _mm256_sub_epi8(                                                                      \
        _mm256_or_si256(                                                                  \
            lo4, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(e, sh), m3), 4)), \
        off)
                const __m256i q1 = Q6(_mm256_and_si256(a, m4), 0);
                const __m256i q2 = Q6(_mm256_and_si256(c, m4), 2);
                const __m256i q3 = Q6(_mm256_and_si256(_mm256_srli_epi16(a, 4), m4), 4);
                const __m256i q4 = Q6(_mm256_and_si256(_mm256_srli_epi16(c, 4), m4), 6);
#undef Q6
                put2_32(hi + 128 * h, lo + 128 * h, q1, sc[0], sc[1]);
                put2_32(hi + 128 * h + 32, lo + 128 * h + 32, q2, sc[2], sc[3]);
                put2_32(hi + 128 * h + 64, lo + 128 * h + 64, q3, sc[4], sc[5]);
                put2_32(hi + 128 * h + 96, lo + 128 * h + 96, q4, sc[6], sc[7]);
#else
                for (int l = 0; l < 32; l++) {
                    const int is = l / 16;
                    const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                    const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                    const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                    const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                    PUT2(128 * h + l, sc[is] * q1);
                    PUT2(128 * h + l + 32, sc[is + 2] * q2);
                    PUT2(128 * h + l + 64, sc[is + 4] * q3);
                    PUT2(128 * h + l + 96, sc[is + 6] * q4);
                }
#endif
                ql += 64;
                qh += 32;
                sc += 8;
            }
        }
        break;
    }
}
#undef PUT1
#undef PUT2

#if AMX_BUILD

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

/* 1 when the CPU has AMX-INT8 and AVX-512 (F, BW, VNNI) and the kernel granted this process
 * the tile state; 0 otherwise (then corral keeps its float32 dense route). */
static int amx_probe(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    const int tile = (d >> 24) & 1, int8 = (d >> 25) & 1;
    const int avx512f = (b >> 16) & 1, avx512bw = (b >> 30) & 1, vnni = (c >> 11) & 1;
    if (!(tile && int8 && avx512f && avx512bw && vnni)) return 0;
    if (!__builtin_cpu_supports("avx512f")) return 0; /* also checks that the OS saves zmm */
    return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
}

typedef struct __attribute__((packed, aligned(64))) {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tilecfg;

/* Tiles: 0 and 3 accumulate int32 [16 activation rows x 16 weight rows] (planes hi and lo),
 * 1 holds activations [16 rows x KC bytes] read in place from ggml's blocks, 2 and 4 the
 * weight planes in the VNNI layout [KC/4 rows x 16 weight rows x 4 bytes]; KC = 32 for the
 * 32-value types (one scale block per dot), 64 for the k-quants (4 dots per block). */
#define AMX_TGT __attribute__((target("amx-tile,amx-int8,avx512f,avx512bw,avx512vl,avx512vnni")))

AMX_TGT static void amx_config(int kc) {
    tilecfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    cfg.rows[0] = 16; cfg.colsb[0] = 64;
    cfg.rows[1] = 16; cfg.colsb[1] = (uint16_t)kc;
    cfg.rows[2] = (uint8_t)(kc / 4); cfg.colsb[2] = 64;
    cfg.rows[3] = 16; cfg.colsb[3] = 64;
    cfg.rows[4] = (uint8_t)(kc / 4); cfg.colsb[4] = 64;
    cfg.rows[5] = 16; cfg.colsb[5] = (uint16_t)kc; /* a second A tile: tile_rows32 */
    _tile_loadconfig(&cfg);
}

/* Rows [n0, n0 + 16) of the weight, unpacked row-major into rm (planes [16][K] each), then
 * into the tile layout: plane byte (k/4)*64 + i*4 + k%4 holds value k of row n0 + i (rows
 * past N are zero); scales [nb][16]. Q4_K/Q5_K also: dmins [nb][16], and the mins as int16
 * pairs minsv [nb][4][16][2] (pair p of row i: the mins of sub-blocks 2p and 2p + 1), the
 * layout _mm512_madd_epi16 meets with one activation row's broadcast pair of bsums. */
UNPACK_TGT static void unpack_panel(const amx_type *t, int type, const uint8_t *w, long N, long K,
                                    long n0, int8_t *rm, float *rowsc, float *rowdm,
                                    int16_t *rowmn, int8_t *hi, int8_t *lo, float *scales,
                                    float *dmins, int16_t *minsv) {
    const long nb = K / t->qk;
    const size_t rb = (size_t)nb * t->wbytes;
    int8_t *rm_lo = rm + 16 * K;
    for (int i = 0; i < 16; i++) {
        const long n = n0 + i;
        if (n < N) {
            unpack_row(type, w + (size_t)n * rb, K, rm + i * K, rm_lo + i * K, rowsc, rowdm, rowmn);
        } else {
            memset(rm + i * K, 0, (size_t)K);
            memset(rm_lo + i * K, 0, (size_t)K);
            for (long b = 0; b < nb; b++) rowsc[b] = 0.0f;
            if (t->mins) {
                for (long b = 0; b < nb; b++) rowdm[b] = 0.0f;
                memset(rowmn, 0, (size_t)nb * 8 * sizeof *rowmn);
            }
        }
        for (long b = 0; b < nb; b++) scales[b * 16 + i] = rowsc[b];
        if (t->mins)
            for (long b = 0; b < nb; b++) {
                dmins[b * 16 + i] = rowdm[b];
                for (int p = 0; p < 4; p++) {
                    minsv[((b * 4 + p) * 16 + i) * 2] = rowmn[b * 8 + 2 * p];
                    minsv[((b * 4 + p) * 16 + i) * 2 + 1] = rowmn[b * 8 + 2 * p + 1];
                }
            }
    }
    /* the VNNI regrouping is a transpose of 16 rows x K/4 32-bit groups: one gather of the
     * 16 rows' group g per 64-byte store (the scalar double loop was this panel's largest
     * cost); K/4 < 2^29 keeps the gather's int32 indices in range */
    for (int p = 0; p < t->planes; p++) {
        const uint32_t *src = (const uint32_t *)(p ? rm_lo : rm);
        uint32_t *dst = (uint32_t *)(p ? lo : hi);
        long g = 0;
#if AMX_BUILD
        const __m512i rows = _mm512_mullo_epi32(
            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
            _mm512_set1_epi32((int)(K / 4)));
        for (; g < K / 4; g++)
            _mm512_store_si512((__m512i *)(dst + g * 16),
                               _mm512_i32gather_epi32(rows, (const void *)(src + g), 4));
#endif
        for (; g < K / 4; g++)
            for (int i = 0; i < 16; i++) dst[g * 16 + i] = src[i * (K / 4) + g];
    }
}

/* One 16 x 16 output tile over all of K: acc[r] += (d_a[r] * d_w) * isum per block, and for
 * Q4_K/Q5_K then acc[r] += (-d_a[r] * dmin) * msum, msum = sum over the 8 sub-blocks j of
 * m_j * bsum_j (exact in int32), as ggml's vec_dot_q4_K_q8_K. bs: the activation rows' bsums
 * of 32 values as int16 pairs [16][nb][4]. */
/* tile_rows for the 32-value types (one int8 plane, no mins): the same sums in the same
 * float order, with two blocks in flight. Block b's dot waits on the tile unit's latency
 * before its 16 scaled adds can start; here the dot of block b + 1 (tiles 3, 5, 4) is
 * issued before block b's adds, so the two units overlap instead of taking turns. */
#define DOT32(C, A, B, blk)                                                  \
    do {                                                                     \
        _tile_zero(C);                                                       \
        _tile_loadd(A, a + (blk) * t->abytes + t->aoff, arow);               \
        _tile_loadd(B, hi + (blk) * 8 * 64, 64);                             \
        _tile_dpbssd(C, A, B);                                               \
    } while (0)
#define SCALE32(buf, blk)                                                            \
    do {                                                                             \
        const __m512 dw = _mm512_loadu_ps(scales + (blk) * 16);                      \
        _Pragma("GCC unroll 16") for (int r = 0; r < 16; r++) {                      \
            const __m512i s = _mm512_load_si512((buf) + 16 * r);                     \
            const __m512 d = _mm512_mul_ps(_mm512_set1_ps(da[r * nb + (blk)]), dw);  \
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), d, acc[r]);              \
        }                                                                            \
    } while (0)

AMX_TGT static void tile_rows32(const amx_type *t, const uint8_t *a, long arow, const float *da,
                                long nb, const int8_t *hi, const float *scales, int32_t *cbuf,
                                float *out, long ldy, int rows, int cols) {
    __m512 acc[16];
    for (int r = 0; r < 16; r++) acc[r] = _mm512_setzero_ps();
    DOT32(0, 1, 2, 0);
    for (long b = 0; b < nb; b += 2) {
        _tile_stored(0, cbuf, 64);
        if (b + 1 < nb) DOT32(3, 5, 4, b + 1);
        SCALE32(cbuf, b);
        if (b + 1 < nb) {
            _tile_stored(3, cbuf + 256, 64);
            if (b + 2 < nb) DOT32(0, 1, 2, b + 2);
            SCALE32(cbuf + 256, b + 1);
        }
    }
    const __mmask16 mask = (__mmask16)((1u << cols) - 1u);
    for (int r = 0; r < rows; r++) _mm512_mask_storeu_ps(out + r * ldy, mask, acc[r]);
}
#undef DOT32
#undef SCALE32

AMX_TGT static void tile_rows(const amx_type *t, const uint8_t *a, long arow, const float *da,
                              const uint32_t *bs, long nb, const int8_t *hi, const int8_t *lo,
                              const float *scales, const float *dmins, const int16_t *minsv,
                              int32_t *cbuf, float *out, long ldy, int rows, int cols, int tiled) {
    __m512 acc[16];
    for (int r = 0; r < 16; r++) acc[r] = _mm512_setzero_ps();
    for (long b = 0; b < nb; b++) {
        const uint8_t *ab = a + b * t->abytes + t->aoff;
        if (t->planes == 1) {
            _tile_zero(0);
            _tile_loadd(1, ab, arow);
            _tile_loadd(2, hi + b * 8 * 64, 64);
            _tile_dpbssd(0, 1, 2);
            _tile_stored(0, cbuf, 64);
        } else {
            _tile_zero(0);
            _tile_zero(3);
            for (int c = 0; c < 4; c++) {
                _tile_loadd(1, ab + 64 * c, arow);
                _tile_loadd(2, hi + (b * 64 + c * 16) * 64, 64);
                _tile_dpbssd(0, 1, 2);
                _tile_loadd(4, lo + (b * 64 + c * 16) * 64, 64);
                _tile_dpbssd(3, 1, 4);
            }
            _tile_stored(0, cbuf, 64);
            _tile_stored(3, cbuf + 256, 64);
        }
        const __m512 dw = _mm512_loadu_ps(scales + b * 16);
        if (tiled) { /* llama.cpp's tiled K-quant order (qkernels.c dot_k_tiled_scalar) */
            const __m512 dm = t->mins ? _mm512_loadu_ps(dmins + b * 16) : _mm512_setzero_ps();
            const __m512i *mv = (const __m512i *)(minsv + b * 128);
            for (int r = 0; r < 16; r++) {
                __m512i s = _mm512_load_si512(cbuf + 16 * r);
                if (t->planes == 2)
                    s = _mm512_add_epi32(_mm512_slli_epi32(s, 6), _mm512_load_si512(cbuf + 256 + 16 * r));
                __m512 res = _mm512_mul_ps(dw, _mm512_cvtepi32_ps(s));
                if (t->mins) {
                    const uint32_t *p = bs + (r * nb + b) * 4;
                    __m512i m = _mm512_madd_epi16(_mm512_set1_epi32((int)p[0]), _mm512_load_si512(mv));
                    m = _mm512_dpwssd_epi32(m, _mm512_set1_epi32((int)p[1]), _mm512_load_si512(mv + 1));
                    m = _mm512_dpwssd_epi32(m, _mm512_set1_epi32((int)p[2]), _mm512_load_si512(mv + 2));
                    m = _mm512_dpwssd_epi32(m, _mm512_set1_epi32((int)p[3]), _mm512_load_si512(mv + 3));
                    res = _mm512_fnmadd_ps(dm, _mm512_cvtepi32_ps(m), res);
                }
                acc[r] = _mm512_fmadd_ps(res, _mm512_set1_ps(da[r * nb + b]), acc[r]);
            }
            continue;
        }
#pragma GCC unroll 16
        for (int r = 0; r < 16; r++) {
            __m512i s = _mm512_load_si512(cbuf + 16 * r);
            if (t->planes == 2)
                s = _mm512_add_epi32(_mm512_slli_epi32(s, 6), _mm512_load_si512(cbuf + 256 + 16 * r));
            const __m512 d = _mm512_mul_ps(_mm512_set1_ps(da[r * nb + b]), dw);
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), d, acc[r]);
        }
        if (t->mins) {
            const __m512 dm = _mm512_loadu_ps(dmins + b * 16);
            const __m512i *mv = (const __m512i *)(minsv + b * 128);
            const __m512i m0 = _mm512_load_si512(mv), m1 = _mm512_load_si512(mv + 1);
            const __m512i m2 = _mm512_load_si512(mv + 2), m3 = _mm512_load_si512(mv + 3);
#pragma GCC unroll 16
            for (int r = 0; r < 16; r++) {
                const uint32_t *p = bs + (r * nb + b) * 4;
                __m512i s = _mm512_madd_epi16(_mm512_set1_epi32((int)p[0]), m0);
                s = _mm512_dpwssd_epi32(s, _mm512_set1_epi32((int)p[1]), m1);
                s = _mm512_dpwssd_epi32(s, _mm512_set1_epi32((int)p[2]), m2);
                s = _mm512_dpwssd_epi32(s, _mm512_set1_epi32((int)p[3]), m3);
                const __m512 d = _mm512_mul_ps(_mm512_set1_ps(da[r * nb + b]), dm);
                acc[r] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(s), d, acc[r]);
            }
        }
    }
    const __mmask16 mask = (__mmask16)((1u << cols) - 1u);
    for (int r = 0; r < rows; r++) _mm512_mask_storeu_ps(out + r * ldy, mask, acc[r]);
}

/* Q4_K in the float order of llama.cpp's repacked kernels (qkernels.c, "Repacked Q4_K"): per
 * output two accumulators, acc += isum * (d_a * d_w) and accm += msum * (d_a * dmin), and
 * acc - accm at the end; rows [0, gemm) of the tile with one FMA per 64 values (ggml's gemm,
 * one tile dot per 64 values here), the others with one per 256 (its gemv: the four 64-value
 * sums added in int32 first). msum of 64 values: the mins of its two sub-blocks times their
 * activation sums, one _mm512_madd_epi16. */
AMX_TGT static void tile_rows_rp(const amx_type *t, const uint8_t *a, long arow, const float *da,
                                 const uint32_t *bs, long nb, const int8_t *hi, const int8_t *lo,
                                 const float *scales, const float *dmins, const int16_t *minsv,
                                 int32_t *cbuf, float *out, long ldy, int rows, int cols, int gemm) {
    __m512 acc[16], accm[16];
    for (int r = 0; r < 16; r++) acc[r] = accm[r] = _mm512_setzero_ps();
    for (long b = 0; b < nb; b++) {
        const uint8_t *ab = a + b * t->abytes + t->aoff;
        const __m512 dw = _mm512_loadu_ps(scales + b * 16);
        const __m512 dm = _mm512_loadu_ps(dmins + b * 16);
        const __m512i *mv = (const __m512i *)(minsv + b * 128);
        __m512i sb[16], mb[16]; /* gemv rows: the block's sums so far */
        for (int c = 0; c < 4; c++) {
            _tile_zero(0);
            _tile_zero(3);
            _tile_loadd(1, ab + 64 * c, arow);
            _tile_loadd(2, hi + (b * 64 + c * 16) * 64, 64);
            _tile_dpbssd(0, 1, 2);
            _tile_loadd(4, lo + (b * 64 + c * 16) * 64, 64);
            _tile_dpbssd(3, 1, 4);
            _tile_stored(0, cbuf, 64);
            _tile_stored(3, cbuf + 256, 64);
            const __m512i mc = _mm512_load_si512(mv + c);
            for (int r = 0; r < 16; r++) {
                const __m512i s = _mm512_add_epi32(_mm512_slli_epi32(_mm512_load_si512(cbuf + 16 * r), 6),
                                                   _mm512_load_si512(cbuf + 256 + 16 * r));
                const __m512i m = _mm512_madd_epi16(_mm512_set1_epi32((int)bs[(r * nb + b) * 4 + c]), mc);
                if (r < gemm) {
                    const __m512 ar = _mm512_set1_ps(da[r * nb + b]);
                    acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(ar, dw), acc[r]);
                    accm[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(m), _mm512_mul_ps(ar, dm), accm[r]);
                } else if (c == 0) {
                    sb[r] = s;
                    mb[r] = m;
                } else {
                    sb[r] = _mm512_add_epi32(sb[r], s);
                    mb[r] = _mm512_add_epi32(mb[r], m);
                }
            }
        }
        for (int r = gemm; r < 16; r++) {
            const __m512 ar = _mm512_set1_ps(da[r * nb + b]);
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sb[r]), _mm512_mul_ps(ar, dw), acc[r]);
            accm[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(mb[r]), _mm512_mul_ps(ar, dm), accm[r]);
        }
    }
    const __mmask16 mask = (__mmask16)((1u << cols) - 1u);
    for (int r = 0; r < rows; r++) _mm512_mask_storeu_ps(out + r * ldy, mask, _mm512_sub_ps(acc[r], accm[r]));
}

AMX_TGT static int amx_run(int type, const uint8_t *a, const uint8_t *w, float *y, long M, long N,
                           long K, int nth, int rp, long gemm_rows, int tiled) {
    amx_type t;
    if (!amx_info(type, &t)) return -1;
    const long nb = K / t.qk;
    const long arow = nb * t.abytes;
    const long panels = (N + 15) / 16;
    const long mtiles = (M + 15) / 16;
    if (nth > panels) nth = (int)panels;
    if (nth < 1) nth = 1;
    /* activation block scales as float [M][nb] (fp16 for block_q8_0, float for block_q8_K);
     * the last, partial tile of activation rows padded with zeros; for Q4_K/Q5_K the bsums
     * of each 32 activation values as int16 pairs [mtiles * 16][nb][4] (zero past row M);
     * per thread: the panel's planes (tile layout, then row-major), the int32 tiles, its
     * mins (Q4_K/Q5_K), scales and dmins, one row's scales, dmins and mins */
    const long mb = t.mins ? nb : 0; /* blocks with a min term */
    float *da = malloc((size_t)M * nb * sizeof *da);
    uint8_t *pad = calloc(16, (size_t)arow);
    float *dpad = calloc(16 * (size_t)nb, sizeof *dpad);
    uint32_t *bs = calloc((size_t)mtiles * 16 * mb * 4 + 1, sizeof *bs);
    const size_t plane = (size_t)K * 16;
    const size_t per = (4 * plane + 2048 + 256 * (size_t)mb + 64 * (size_t)nb + 4 * (size_t)nb +
                        (64 + 4 + 16) * (size_t)mb + 63) / 64 * 64;
    uint8_t *buf = aligned_alloc(64, per * nth);
    if (!da || !pad || !dpad || !bs || !buf) {
        free(da);
        free(pad);
        free(dpad);
        free(bs);
        free(buf);
        return -1;
    }
    for (long m = 0; m < M; m++)
        for (long b = 0; b < nb; b++) {
            const uint8_t *blk = a + m * arow + b * t.abytes;
            if (t.qk == 32) {
                da[m * nb + b] = h2f(rd16(blk));
            } else {
                memcpy(da + m * nb + b, blk, 4);
            }
            if (t.mins) {
                int16_t g[16], s[8];
                memcpy(g, blk + 260, sizeof g);
                for (int j = 0; j < 8; j++) s[j] = (int16_t)(g[2 * j] + g[2 * j + 1]);
                memcpy(bs + (m * nb + b) * 4, s, sizeof s);
            }
        }
    const long tail = M % 16;
    if (tail) {
        memcpy(pad, a + (M - tail) * arow, (size_t)(tail * arow));
        memcpy(dpad, da + (M - tail) * nb, (size_t)(tail * nb) * sizeof *dpad);
    }
#ifdef _OPENMP
#pragma omp parallel num_threads(nth)
#endif
    {
#ifdef _OPENMP
        uint8_t *mine = buf + per * (size_t)omp_get_thread_num();
#else
        uint8_t *mine = buf;
#endif
        /* per, plane and 2048 are multiples of 64: the tiles' buffers are aligned */
        int8_t *hi = (int8_t *)mine, *lo = hi + plane, *rm = lo + plane;
        int32_t *cbuf = (int32_t *)(mine + 4 * plane);
        int16_t *minsv = (int16_t *)(mine + 4 * plane + 2048); /* 256 bytes a block */
        float *scales = (float *)(mine + 4 * plane + 2048 + 256 * (size_t)mb);
        float *dmins = scales + 16 * nb;
        float *rowsc = dmins + 16 * mb;
        float *rowdm = rowsc + nb;
        int16_t *rowmn = (int16_t *)(rowdm + mb);
        amx_config(t.qk == 32 ? 32 : 64);
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
        for (long p = 0; p < panels; p++) {
            const long n0 = p * 16;
            const int cols = (int)(N - n0 < 16 ? N - n0 : 16);
            unpack_panel(&t, type, w, N, K, n0, rm, rowsc, rowdm, rowmn, hi, lo, scales, dmins,
                         minsv);
            for (long mt = 0; mt < mtiles; mt++) {
                const long m0 = mt * 16;
                const int rows = (int)(M - m0 < 16 ? M - m0 : 16);
                const int part = rows < 16;
                if (t.planes == 1 && !t.mins)
                    tile_rows32(&t, part ? pad : a + m0 * arow, arow, part ? dpad : da + m0 * nb,
                                nb, hi, scales, cbuf, y + m0 * N + n0, N, rows, cols);
                else if (rp && t.mins)
                    tile_rows_rp(&t, part ? pad : a + m0 * arow, arow, part ? dpad : da + m0 * nb,
                                 bs + m0 * mb * 4, nb, hi, lo, scales, dmins, minsv, cbuf,
                                 y + m0 * N + n0, N, rows, cols,
                                 (int)(gemm_rows - m0 < 0 ? 0 : gemm_rows - m0 > 16 ? 16 : gemm_rows - m0));
                else
                    tile_rows(&t, part ? pad : a + m0 * arow, arow, part ? dpad : da + m0 * nb,
                              bs + m0 * mb * 4, nb, hi, lo, scales, dmins, minsv, cbuf,
                              y + m0 * N + n0, N, rows, cols, tiled && t.qk == 256);
            }
        }
        _tile_release();
    }
    free(da);
    free(pad);
    free(dpad);
    free(bs);
    free(buf);
    return 0;
}
#endif /* AMX_BUILD */

static int g_amx = 0;

PyDoc_STRVAR(available_doc, "available() -> bool: AMX-INT8 usable in this process.");

static PyObject *py_available(PyObject *self, PyObject *noargs) {
    (void)self;
    (void)noargs;
    return PyBool_FromLong(g_amx);
}

PyDoc_STRVAR(supports_doc, "supports(type) -> bool: whether `type` (a ggml type id) has a kernel.");

static PyObject *py_supports(PyObject *self, PyObject *args) {
    (void)self;
    int type;
    if (!PyArg_ParseTuple(args, "i", &type)) return NULL;
    amx_type t;
    return PyBool_FromLong(amx_info(type, &t));
}

PyDoc_STRVAR(matmul_doc,
             "matmul(type, a_ptr, w_ptr, y_ptr, M, N, K, n_threads, gemm_rows=0, repacked=0, "
             "tiled=0) -> None\n\n"
             "y[M, N] float32 = activations a (ggml blocks from _qkernels.quantize for this "
             "weight type, M rows of K values) times the raw weight rows w[N] of `type`. "
             "repacked (Q4_K only): the float order of llama.cpp's repacked Q4_K kernels, its "
             "gemm for rows [0, gemm_rows), its gemv for the others. tiled (the K-quants): the "
             "float order of llama.cpp's tiled K-quant kernels (inputs of 8 rows or more).");

static PyObject *py_matmul(PyObject *self, PyObject *args) {
    (void)self;
    int type, nth, rp = 0, tiled = 0;
    unsigned long long ap, wp, yp;
    Py_ssize_t M, N, K, gemm_rows = 0;
    if (!PyArg_ParseTuple(args, "iKKKnnni|npp", &type, &ap, &wp, &yp, &M, &N, &K, &nth, &gemm_rows, &rp,
                          &tiled))
        return NULL;
    amx_type t;
    if (!amx_info(type, &t)) return PyErr_Format(PyExc_ValueError, "no AMX kernel for ggml type %d", type);
    if (!g_amx) return PyErr_Format(PyExc_RuntimeError, "AMX is not available");
    if (M < 0 || N < 0 || K <= 0 || K % t.qk || K > (1L << 20))
        return PyErr_Format(PyExc_ValueError, "bad sizes M=%zd N=%zd K=%zd", M, N, K);
    if (!ap || !wp || !yp) return PyErr_Format(PyExc_ValueError, "null data pointer");
    if (M == 0 || N == 0) Py_RETURN_NONE;
    int rc = 0;
#if AMX_BUILD
    Py_BEGIN_ALLOW_THREADS
    rc = amx_run(type, (const uint8_t *)(uintptr_t)ap, (const uint8_t *)(uintptr_t)wp,
                 (float *)(uintptr_t)yp, (long)M, (long)N, (long)K, nth, rp && type == T_Q4_K,
                 (long)gemm_rows, tiled);
    Py_END_ALLOW_THREADS
#endif
    if (rc) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"available", py_available, METH_NOARGS, available_doc},
    {"supports", py_supports, METH_VARARGS, supports_doc},
    {"matmul", py_matmul, METH_VARARGS, matmul_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_amx", "Prompt-sized quantized matmul on AMX tiles; see corral.kernels.",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__amx(void) {
#if AMX_BUILD
    g_amx = amx_probe();
#endif
    return PyModule_Create(&module);
}
