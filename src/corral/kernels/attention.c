/*
 * corral._attn: attention for one new token per sequence (the decode step), reading the
 * float16 KV cache in place.
 *
 * The torch route converts every layer's whole cache to float32 before two small matmuls
 * and a softmax, a dozen dispatches and a full copy of the cache per layer per token; at a
 * 1,000-token context that copy is most of a SmolLM2 decode step.  Here one pass per
 * (sequence, head) reads the keys, one the values, converting 8 halves at a time (F16C).
 *
 * Arithmetic follows llama.cpp's CPU graph (mul_mat(k, q) -> soft_max -> mul_mat(v, kq)):
 * the query is rounded to float16 before it meets the float16 keys, the softmax runs in
 * float32, and its weights are rounded to float16 before they meet the values; sums are
 * float32 in the orders of an AVX2 build of llama.cpp (head_avx2): for a batch of several
 * tokens its tinyBLAS GEMM (one 8-lane accumulator per output, then a horizontal sum), for a
 * one-token batch ggml_vec_dot_f16 (four 8-lane accumulators over runs of 32, their own
 * reduction, a float64 tail), `one_token` choosing.  The order decides where outputs part: a
 * last-bit change in a score flips a float16 rounding now and then, and the 8-bit
 * activations downstream carry the flip on.  `exact` skips both roundings (CORRAL_EXACT
 * comparisons with reference implementations).
 *
 * Layout (element strides, so any [slot, head, pos, dim] buffer with unit dim stride works):
 *   q    float32 [B, H, D] contiguous        the new token's queries
 *   k, v float16 [slots, Hkv, L, D]          the cache buffers of one layer
 *   slot int64   [B]                         which buffer row holds sequence b
 *   len  int64   [B]                         positions of sequence b, the new one included
 *   out  float32 [B, H, D] contiguous
 * Head h reads kv head h / (H / Hkv) (grouped-query attention).  With window > 0 only the
 * last `window` positions are visible (sliding-window layers).
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
#define AT_X86 1
#include <immintrin.h>
#else
#define AT_X86 0
#endif

#include "half.h"
#include "scratch.h"
#include "capi.h"
#include "vexp.h"

/* capi.h has the fields (the fused decode step fills one in directly) */
typedef corral_attn_job attn_job;

/* Per-thread scores buffer (scratch.h), grown as contexts grow: n floats. */
static __thread void *t_buf = NULL;
static __thread size_t t_cap = 0;

static float *scores_buf(size_t n) { return grow_scratch(&t_buf, &t_cap, n * sizeof(float)); }

/* Visible positions [start, end) of sequence b. */
static inline void span(const attn_job *jb, long b, long *start, long *end) {
    const long n = (long)jb->len[b];
    *end = n;
    *start = (jb->window > 0 && n > jb->window) ? n - jb->window : 0;
}

/* Scaled softmax of s[0:n] in place; weights rounded to float16 unless exact. */
static void softmax_scalar(float *s, long n, int exact) {
    float mx = -INFINITY;
    for (long i = 0; i < n; i++) mx = s[i] > mx ? s[i] : mx;
    float sum = 0.0f;
    for (long i = 0; i < n; i++) {
        s[i] = expf(s[i] - mx);
        sum += s[i];
    }
    const float inv = 1.0f / sum;
    for (long i = 0; i < n; i++) s[i] = exact ? s[i] * inv : round_f16(s[i] * inv);
}

static void head_scalar(const attn_job *jb, long b, long h, float *s) {
    const long D = jb->D, g = h / (jb->H / jb->Hkv);
    const float *q = jb->q + (b * jb->H + h) * D;
    const long base = (long)jb->slot[b] * jb->s_slot + g * jb->s_head;
    long start, end;
    span(jb, b, &start, &end);
    float qr[512];
    for (long d = 0; d < D; d++) qr[d] = jb->exact ? q[d] : round_f16(q[d]);
    const long n = end - start;
    for (long i = 0; i < n; i++) {
        const uint16_t *kr = jb->k + base + (start + i) * jb->s_pos;
        float acc = 0.0f;
        for (long d = 0; d < D; d++) acc += qr[d] * h2f(kr[d]);
        s[i] = acc * jb->scale;
    }
    softmax_scalar(s, n, jb->exact);
    float *o = jb->out + (b * jb->H + h) * D;
    for (long d = 0; d < D; d++) o[d] = 0.0f;
    for (long i = 0; i < n; i++) {
        const uint16_t *vr = jb->v + base + (start + i) * jb->s_pos;
        const float p = s[i];
        for (long d = 0; d < D; d++) o[d] += p * h2f(vr[d]);
    }
}

#if AT_X86
#define TGT __attribute__((target("avx2,fma,f16c")))

/* lanes 0..7 summed as ((0+4)+(2+6)) + ((1+5)+(3+7)): ggml's and tinyBLAS's order */
TGT static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* ggml's GGML_F32x8_REDUCE of four 8-lane accumulators: (a0 + a2) + (a1 + a3), the halves
 * added, then two horizontal adds: ((t0 + t1) + (t2 + t3)) */
TGT static inline float reduce4(__m256 a0, __m256 a1, __m256 a2, __m256 a3) {
    const __m256 x = _mm256_add_ps(_mm256_add_ps(a0, a2), _mm256_add_ps(a1, a3));
    const __m128 t0 = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    const __m128 t1 = _mm_hadd_ps(t0, t0);
    return _mm_cvtss_f32(_mm_hadd_ps(t1, t1));
}

TGT static inline __m256 ld_h(const uint16_t *p) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

TGT static inline __m256 round_h(__m256 x) {
    return _mm256_cvtph_ps(_mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT));
}

/* The sums are ordered as llama.cpp's CPU backend orders them for these two products
 * (its tinyBLAS GEMM: one 8-lane FMA accumulator per output, k ascending, then hsum) and
 * for its softmax (8-lane exps, each chunk's hsum added in double), with positions counted
 * from 0 so that lanes line up with llama.cpp's cells; masked positions weigh exactly 0.
 * `s` holds scores for positions [start & ~7, end rounded up to 8).
 * D % 8 == 0 and D <= 512 (checked by the caller). */
TGT static void head_avx2(const attn_job *jb, long b, long h, float *s, float *part) {
    const long D = jb->D, g = h / (jb->H / jb->Hkv), nd = D / 8;
    const float *q = jb->q + (b * jb->H + h) * D;
    const long base = (long)jb->slot[b] * jb->s_slot + g * jb->s_head;
    long start, end;
    span(jb, b, &start, &end);
    const long a0 = start & ~7L, a1 = (end + 7) & ~7L;
    __m256 qv[64];
    for (long j = 0; j < nd; j++) {
        const __m256 x = _mm256_loadu_ps(q + 8 * j);
        qv[j] = jb->exact ? x : round_h(x);
    }
    float mx = -INFINITY;
    for (long i = a0; i < start; i++) s[i - a0] = -INFINITY;
    long i = start;
    if (jb->one_token) {
        /* ggml_vec_dot_f16: dims in runs of 32 over four 8-lane accumulators, reduce4, then
         * the D % 32 last products added one by one in float64 */
        const long nv = (D / 32) * 4;
        for (; i < end; i++) {
            const uint16_t *kr = jb->k + base + i * jb->s_pos;
            __m256 c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0, c3 = c0;
            for (long j = 0; j < nv; j += 4) {
                c0 = _mm256_fmadd_ps(ld_h(kr + 8 * j), qv[j], c0);
                c1 = _mm256_fmadd_ps(ld_h(kr + 8 * j + 8), qv[j + 1], c1);
                c2 = _mm256_fmadd_ps(ld_h(kr + 8 * j + 16), qv[j + 2], c2);
                c3 = _mm256_fmadd_ps(ld_h(kr + 8 * j + 24), qv[j + 3], c3);
            }
            double acc = (double)reduce4(c0, c1, c2, c3);
            if (nv < nd) {
                _Alignas(32) float qt[32];
                for (long j = nv; j < nd; j++) _mm256_store_ps(qt + 8 * (j - nv), qv[j]);
                for (long d = 8 * nv; d < D; d++) acc += (double)(h2f(kr[d]) * qt[d - 8 * nv]);
            }
            const float sc = (float)acc * jb->scale;
            s[i - a0] = sc;
            mx = sc > mx ? sc : mx;
        }
    }
    /* four positions at a time: four independent FMA chains instead of one (a position's
     * chain is D/8 dependent FMAs); each position's operations and their order are those of
     * the one-at-a-time loop below, so the scores are the same bits */
    for (; i + 4 <= end; i += 4) {
        const uint16_t *k0 = jb->k + base + i * jb->s_pos, *k1 = k0 + jb->s_pos;
        const uint16_t *k2 = k1 + jb->s_pos, *k3 = k2 + jb->s_pos;
        __m256 c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0, c3 = c0;
        for (long j = 0; j < nd; j++) {
            c0 = _mm256_fmadd_ps(ld_h(k0 + 8 * j), qv[j], c0);
            c1 = _mm256_fmadd_ps(ld_h(k1 + 8 * j), qv[j], c1);
            c2 = _mm256_fmadd_ps(ld_h(k2 + 8 * j), qv[j], c2);
            c3 = _mm256_fmadd_ps(ld_h(k3 + 8 * j), qv[j], c3);
        }
        const float sc[4] = {hsum(c0) * jb->scale, hsum(c1) * jb->scale, hsum(c2) * jb->scale,
                             hsum(c3) * jb->scale};
        for (int r = 0; r < 4; r++) {
            s[i + r - a0] = sc[r];
            mx = sc[r] > mx ? sc[r] : mx;
        }
    }
    for (; i < end; i++) {
        const uint16_t *kr = jb->k + base + i * jb->s_pos;
        __m256 acc = _mm256_setzero_ps();
        for (long j = 0; j < nd; j++) acc = _mm256_fmadd_ps(ld_h(kr + 8 * j), qv[j], acc);
        const float sc = hsum(acc) * jb->scale;
        s[i - a0] = sc;
        mx = sc > mx ? sc : mx;
    }
    for (i = end; i < a1; i++) s[i - a0] = -INFINITY;
    const long n = a1 - a0;
    const __m256 mv = _mm256_set1_ps(mx);
    double sum = 0.0;
    for (long i = 0; i < n; i += 8) {
        const __m256 e = exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(s + i), mv));
        _mm256_storeu_ps(s + i, e);
        sum += (double)hsum(e);
    }
    const __m256 inv = _mm256_set1_ps((float)(1.0 / sum));
    for (long i = 0; i < n; i += 8) {
        const __m256 p = _mm256_mul_ps(_mm256_loadu_ps(s + i), inv);
        _mm256_storeu_ps(s + i, jb->exact ? p : round_h(p));
    }
    /* out[d] = sum_i p_i v_i[d]: partial sums per d, one per lane (part[lane][d]): i % 8 for
     * tinyBLAS, i % 32 for vec_dot_f16 (its accumulator (i / 8) % 4, lane i % 8) */
    const long lanes = jb->one_token ? 32 : 8;
    for (long x = 0; x < lanes * D; x += 8) _mm256_storeu_ps(part + x, _mm256_setzero_ps());
    for (long i = start; i < end; i++) {
        const uint16_t *vr = jb->v + base + i * jb->s_pos;
        const __m256 p = _mm256_set1_ps(s[i - a0]);
        float *pl = part + (i & (lanes - 1)) * D;
        for (long j = 0; j < nd; j++)
            _mm256_storeu_ps(pl + 8 * j, _mm256_fmadd_ps(ld_h(vr + 8 * j), p, _mm256_loadu_ps(pl + 8 * j)));
    }
    float *o = jb->out + (b * jb->H + h) * D;
#define PL(l) _mm256_loadu_ps(part + (l) * D + 8 * j)
    if (jb->one_token) { /* reduce4 on every d at once */
        for (long j = 0; j < nd; j++) {
            __m256 x[8];
            for (int l = 0; l < 8; l++) x[l] = _mm256_add_ps(_mm256_add_ps(PL(l), PL(16 + l)), _mm256_add_ps(PL(8 + l), PL(24 + l)));
            __m256 t[4];
            for (int l = 0; l < 4; l++) t[l] = _mm256_add_ps(x[l], x[l + 4]);
            _mm256_storeu_ps(o + 8 * j, _mm256_add_ps(_mm256_add_ps(t[0], t[1]), _mm256_add_ps(t[2], t[3])));
        }
        return;
    }
    for (long j = 0; j < nd; j++) {
        const __m256 even = _mm256_add_ps(_mm256_add_ps(PL(0), PL(4)), _mm256_add_ps(PL(2), PL(6)));
        const __m256 odd = _mm256_add_ps(_mm256_add_ps(PL(1), PL(5)), _mm256_add_ps(PL(3), PL(7)));
        _mm256_storeu_ps(o + 8 * j, _mm256_add_ps(even, odd));
    }
#undef PL
}

static int cpu_has_f16c_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("f16c");
}
#else
static int cpu_has_f16c_avx2(void) { return 0; }
#endif

static int g_simd = 0;

/* Returns -1 when a scores buffer cannot be allocated. */
static int attn_run(const attn_job *jb, int nth, int simd) {
    long max_n = 0;
    for (long b = 0; b < jb->B; b++) max_n = jb->len[b] > max_n ? (long)jb->len[b] : max_n;
    const long pairs = jb->B * jb->H;
    if (nth > pairs) nth = (int)pairs;
    int failed = 0;
#ifdef _OPENMP
#pragma omp parallel for num_threads(nth) schedule(static) reduction(| : failed)
#endif
    for (long pi = 0; pi < pairs; pi++) {
        /* scores (aligned to 8 positions) then 8 x D partial sums */
        float *s = scores_buf((size_t)max_n + 16 + 32 * (size_t)jb->D);
        if (!s) {
            failed |= 1;
            continue;
        }
        const long b = pi / jb->H, h = pi % jb->H;
#if AT_X86
        if (simd) {
            head_avx2(jb, b, h, s, s + max_n + 16);
            continue;
        }
#endif
        (void)simd;
        head_scalar(jb, b, h, s);
    }
    return failed ? -1 : 0;
}

PyDoc_STRVAR(decode_doc,
             "decode(q, k, v, out, slot, len, B, H, Hkv, D, s_slot, s_head, s_pos, window, scale, "
             "exact, n_threads, scalar, one_token) -> None\n\n"
             "Attention of one new query per sequence over a float16 KV cache, written to out "
             "[B, H, D] float32. q, k, v, out, slot, len are raw addresses (see attention.c).");

static PyObject *py_decode(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 19) return PyErr_Format(PyExc_TypeError, "decode takes 19 arguments, got %zd", nargs);
    unsigned long long ptr[6];
    for (int i = 0; i < 6; i++) {
        ptr[i] = PyLong_AsUnsignedLongLong(args[i]);
        if (ptr[i] == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
        if (!ptr[i]) return PyErr_Format(PyExc_ValueError, "null data pointer (argument %d)", i);
    }
    long long iv[8];
    for (int i = 0; i < 8; i++) {
        iv[i] = PyLong_AsLongLong(args[6 + i]);
        if (iv[i] == -1 && PyErr_Occurred()) return NULL;
    }
    const double scale = PyFloat_AsDouble(args[14]);
    if (scale == -1.0 && PyErr_Occurred()) return NULL;
    const long long exact = PyLong_AsLongLong(args[15]);
    long long nth = PyLong_AsLongLong(args[16]);
    const long long scalar = PyLong_AsLongLong(args[17]);
    const long long one_token = PyLong_AsLongLong(args[18]);
    if (PyErr_Occurred()) return NULL;
    attn_job jb = {
        (const float *)(uintptr_t)ptr[0], (const uint16_t *)(uintptr_t)ptr[1],
        (const uint16_t *)(uintptr_t)ptr[2], (const int64_t *)(uintptr_t)ptr[4],
        (const int64_t *)(uintptr_t)ptr[5], (float *)(uintptr_t)ptr[3],
        (long)iv[0], (long)iv[1], (long)iv[2], (long)iv[3],
        (long)iv[4], (long)iv[5], (long)iv[6], (long)iv[7], (float)scale, exact != 0, one_token != 0,
    };
    if (jb.B < 0 || jb.H < 1 || jb.Hkv < 1 || jb.H % jb.Hkv || jb.D < 1 || jb.D > 512)
        return PyErr_Format(PyExc_ValueError, "bad shape B=%ld H=%ld Hkv=%ld D=%ld", jb.B, jb.H, jb.Hkv, jb.D);
    for (long b = 0; b < jb.B; b++)
        if (jb.len[b] < 1) return PyErr_Format(PyExc_ValueError, "sequence %ld has no positions", b);
    if (jb.B == 0) Py_RETURN_NONE;
    if (nth < 1) nth = 1;
    if (nth > 256) nth = 256;
    const int simd = g_simd && !scalar && jb.D % 8 == 0;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = attn_run(&jb, (int)nth, simd);
    Py_END_ALLOW_THREADS
    if (rc) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"decode", (PyCFunction)(void (*)(void))py_decode, METH_FASTCALL, decode_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_attn",
    "Decode-step attention over a float16 KV cache (llama.cpp CPU roundings); see corral.kernels.attention.",
    -1, methods, NULL, NULL, NULL, NULL,
};

/* The table corral._decode calls (capi.h); simd is filled in at import. */
static corral_attn_api c_api = {CORRAL_ATTN_API_VERSION, 0, attn_run};

PyMODINIT_FUNC PyInit__attn(void) {
    g_simd = cpu_has_f16c_avx2();
    c_api.simd = g_simd;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    PyObject *cap = PyCapsule_New(&c_api, "corral._attn._C_API", NULL);
    if (!cap || PyModule_AddObject(m, "_C_API", cap) < 0) {
        Py_XDECREF(cap);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
