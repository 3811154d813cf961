/*
 * corral._rowops: the small per-row operations of a decode step, one C call each.
 *
 * A one-token step of a 30-layer model runs ~60 RMS norms and ~60 rotary embeddings; in
 * torch each is 6-10 dispatched ops of a few microseconds, more time than the arithmetic.
 *
 *   rms_norm  as ggml computes it on the CPU: float32 squares summed in float64, the mean
 *             rounded to float32, scale = 1 / sqrtf(mean + eps), y = (x * scale) * w.
 *   gelu      GELU (tanh form) as ggml's CPU backend computes it: looked up in a table of
 *             65536 float16 results indexed by the float16-rounded input; 0 below -10 and
 *             the input itself above 10.
 *   rope      rotation of pairs (NORM: adjacent, NEOX: first half against second) with
 *             cos/sin given per position, as llama.cpp's FMA builds compile ggml's
 *             rotate_pairs: x0 cos - x1 sin with x1 sin rounded and the rest fused,
 *             x0 sin + x1 cos with x1 cos rounded (checked against llama.cpp's tensors).
 *   rope_table the cos/sin of those rotations as ggml_rope_cache_init makes them: the angle
 *             of pair i is float(p) times theta_scale = powf(base, -2/n_dims) i times over,
 *             each product rounded to float32, then libm's cosf/sinf.
 *   swiglu    silu(g) * u as ggml's AVX2 swiglu: g / (1 + e^-g) with ggml's vector exp
 *             (vexp.h) in runs of 8, libm's expf on a row's last n % 8 values.
 *   round_f16 float32 values rounded to float16 precision (nearest even) and back: what
 *             `x.half().float()` gives, in one pass (F16C where the CPU has it) instead of
 *             two full copies; llama.cpp's attention meets queries and softmax weights as
 *             float16.
 * Layouts are contiguous float32, described below each function. Prompt-sized calls (at least
 * PAR_MIN values) split their rows over `nth` OpenMP threads; each row is computed exactly as
 * on one thread, so results do not depend on the thread count.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define ROWOPS_X86 1
#include "vexp.h"
#endif

#define PAR_MIN 32768L

/* y = (x * scale) * w for one row of n (w NULL: no weight). */
static inline void rms_scale_row(const float *xr, const float *w, float *yr, long n, double sum, float eps) {
    const float mean = (float)(sum / (double)n);
    const float scale = 1.0f / sqrtf(mean + eps);
    if (w) {
        for (long i = 0; i < n; i++) yr[i] = (xr[i] * scale) * w[i];
    } else {
        for (long i = 0; i < n; i++) yr[i] = xr[i] * scale;
    }
}

/* x, y [rows, n]; w [n] (or NULL: no weight). y may be x. Each row's float64 sum runs in
 * order, as ggml's does (reordering it could change the last bit of the mean); four rows are
 * summed side by side so that four chains of dependent additions overlap. */
static void rms_norm_rows(const float *x, const float *w, float *y, long rows, long n, float eps, int nth) {
    const long groups = (rows + 3) / 4;
    (void)nth;
#ifdef _OPENMP
#pragma omp parallel for num_threads(nth) schedule(static) if (nth > 1 && rows * n >= PAR_MIN)
#endif
    for (long gi = 0; gi < groups; gi++) {
        const long r0 = gi * 4;
        if (rows - r0 >= 4) {
            const float *a = x + r0 * n, *b = a + n, *c = b + n, *d = c + n;
            double sa = 0.0, sb = 0.0, sc = 0.0, sd = 0.0;
            for (long i = 0; i < n; i++) {
                sa += (double)(a[i] * a[i]);
                sb += (double)(b[i] * b[i]);
                sc += (double)(c[i] * c[i]);
                sd += (double)(d[i] * d[i]);
            }
            const double sums[4] = {sa, sb, sc, sd};
            for (int k = 0; k < 4; k++) rms_scale_row(x + (r0 + k) * n, w, y + (r0 + k) * n, n, sums[k], eps);
        } else {
            for (long r = r0; r < rows; r++) {
                const float *xr = x + r * n;
                double sum = 0.0;
                for (long i = 0; i < n; i++) sum += (double)(xr[i] * xr[i]);
                rms_scale_row(xr, w, y + r * n, n, sum, eps);
            }
        }
    }
}

/* x, y [B, H, T, D]; cos, sin [B, T, R/2]: the first R dims of each head rotate, the rest
 * are copied. neox: pairs (i, i + R/2); else (2i, 2i + 1). y may be x. */
static void rope_rows(const float *x, const float *cs, const float *sn, float *y, long B, long H,
                      long T, long D, long R, int neox, int nth) {
    const long half = R / 2;
    (void)nth;
#ifdef _OPENMP
#pragma omp parallel for collapse(3) num_threads(nth) schedule(static) if (nth > 1 && B * H * T * D >= PAR_MIN)
#endif
    for (long b = 0; b < B; b++)
        for (long h = 0; h < H; h++)
            for (long t = 0; t < T; t++) {
                const float *xr = x + ((b * H + h) * T + t) * D;
                float *yr = y + ((b * H + h) * T + t) * D;
                const float *c = cs + (b * T + t) * half, *s = sn + (b * T + t) * half;
                for (long i = 0; i < half; i++) {
                    const long i0 = neox ? i : 2 * i, i1 = neox ? i + half : 2 * i + 1;
                    const float x0 = xr[i0], x1 = xr[i1];
                    const float a = fmaf(x0, c[i], -(x1 * s[i]));
                    const float bq = fmaf(x0, s[i], x1 * c[i]);
                    yr[i0] = a;
                    yr[i1] = bq;
                }
                for (long i = R; i < D; i++) yr[i] = xr[i];
            }
}

/* cos, sin [N, half] for positions pos [N]: pair i of position p turns by
 * freq_scale * (theta_i / ff[i]) with theta_0 = p, theta_i+1 = theta_i * powf(base, -2/n_dims)
 * in float32 (ff NULL: 1), as ggml_rope_cache_init computes it (no YaRN ramp). */
static void rope_table(const int64_t *pos, long N, long half, float base, long n_dims, float freq_scale,
                       const float *ff, float *cs, float *sn) {
    const float theta_scale = powf(base, -2.0f / (float)n_dims);
    for (long t = 0; t < N; t++) {
        float theta = (float)pos[t];
        for (long i = 0; i < half; i++) {
            const float angle = freq_scale * (theta / (ff ? ff[i] : 1.0f));
            cs[t * half + i] = cosf(angle);
            sn[t * half + i] = sinf(angle);
            theta *= theta_scale;
        }
    }
}

/* y = silu(g) * u over rows of n (y may be g): ggml's AVX2 swiglu, its scalar formula where
 * the CPU lacks AVX2/FMA (what ggml builds without them compute, up to their own vector exp). */
static int g_avx2_fma = -1;

static int has_avx2_fma(void) {
#ifdef ROWOPS_X86
    if (g_avx2_fma < 0) g_avx2_fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return g_avx2_fma;
#else
    return 0;
#endif
}

#ifdef ROWOPS_X86
VEXP_TGT static long swiglu_avx2_span(const float *g, const float *u, float *y, long n) {
    long i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, swiglu_avx2(_mm256_loadu_ps(g + i), _mm256_loadu_ps(u + i)));
    return i;
}
#endif

static void swiglu_rows(const float *g, const float *u, float *y, long rows, long n, int nth) {
    (void)nth;
#ifdef _OPENMP
#pragma omp parallel for num_threads(nth) schedule(static) if (nth > 1 && rows * n >= PAR_MIN)
#endif
    for (long r = 0; r < rows; r++) {
        const float *gr = g + r * n, *ur = u + r * n;
        float *yr = y + r * n;
        long i = 0;
#ifdef ROWOPS_X86
        if (has_avx2_fma()) i = swiglu_avx2_span(gr, ur, yr, n);
#endif
        for (; i < n; i++) yr[i] = gr[i] / (1.0f + expf(-gr[i])) * ur[i];
    }
}

#include "half.h"
#include "capi.h"

static float g_gelu[1 << 16];

static void gelu_table_init(void) {
    for (uint32_t i = 0; i < (1u << 16); i++) {
        const float x = h2f((uint16_t)i);
        /* ggml_gelu_f32 as ggml's -mfma build compiles it: 1 + c*x*x contracted to one FMA
         * (the table differs from the uncontracted formula at 0xBFFF, x = -1.999) */
        const float y = 0.5f * x * (1.0f + tanhf(0.79788456080286535587989211986876f * x * fmaf(0.044715f * x, x, 1.0f)));
        g_gelu[i] = h2f(f2h(y));
    }
}

static inline float gelu_one(float v) { return v <= -10.0f ? 0.0f : v >= 10.0f ? v : g_gelu[f2h(v)]; }

/* the gated form, ggml_vec_geglu_f32: +0 below -10 whatever the sign of g (not 0 * g) */
static inline float geglu_one(float v, float g) { return v <= -10.0f ? 0.0f : gelu_one(v) * g; }

#ifdef ROWOPS_X86
/* 8 at a time: F16C rounds to the table index (the same bits as f2h), a gather looks up. */
__attribute__((target("avx2,f16c"))) static void gelu_span_avx2(const float *x, const float *g, float *y, long n) {
    const __m256 lo = _mm256_set1_ps(-10.0f), hi = _mm256_set1_ps(10.0f), zero = _mm256_setzero_ps();
    long i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        const __m256i idx = _mm256_cvtepu16_epi32(_mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
        __m256 a = _mm256_i32gather_ps(g_gelu, idx, 4);
        a = _mm256_blendv_ps(a, v, _mm256_cmp_ps(v, hi, _CMP_GE_OQ));
        if (g) a = _mm256_mul_ps(a, _mm256_loadu_ps(g + i));
        a = _mm256_blendv_ps(a, zero, _mm256_cmp_ps(v, lo, _CMP_LE_OQ));
        _mm256_storeu_ps(y + i, a);
    }
    for (; i < n; i++) y[i] = g ? geglu_one(x[i], g[i]) : gelu_one(x[i]);
}
#endif

static int g_avx2_f16c = -1;

static int has_avx2_f16c(void) {
#ifdef ROWOPS_X86
    if (g_avx2_f16c < 0) g_avx2_f16c = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
    return g_avx2_f16c;
#else
    return 0;
#endif
}

static void gelu_span(const float *x, const float *g, float *y, long n) {
#ifdef ROWOPS_X86
    if (has_avx2_f16c()) {
        gelu_span_avx2(x, g, y, n);
        return;
    }
#endif
    for (long i = 0; i < n; i++) y[i] = g ? geglu_one(x[i], g[i]) : gelu_one(x[i]);
}

#define SPAN 4096L /* values per parallel work item of the element-wise ops */

/* y[i] = gelu(x[i]) (times g[i] when g is given: the gated form) */
static void gelu_rows(const float *x, const float *g, float *y, long n, int nth) {
    const long spans = (n + SPAN - 1) / SPAN;
    (void)nth;
#ifdef _OPENMP
#pragma omp parallel for num_threads(nth) schedule(static) if (nth > 1 && n >= PAR_MIN)
#endif
    for (long sp = 0; sp < spans; sp++) {
        const long i0 = sp * SPAN, m = n - i0 < SPAN ? n - i0 : SPAN;
        gelu_span(x + i0, g ? g + i0 : NULL, y + i0, m);
    }
}

/* The thread count argument: at least 1; -1 with an exception set on a bad value. */
static int get_nth(PyObject *arg) {
    const long v = PyLong_AsLong(arg);
    if (v == -1 && PyErr_Occurred()) return -1;
    return v < 1 ? 1 : v > 1024 ? 1024 : (int)v;
}

static int get_ptrs(PyObject *const *args, int n, unsigned long long *out, int nullable_mask) {
    for (int i = 0; i < n; i++) {
        out[i] = PyLong_AsUnsignedLongLong(args[i]);
        if (out[i] == (unsigned long long)-1 && PyErr_Occurred()) return 0;
        if (!out[i] && !(nullable_mask & (1 << i))) {
            PyErr_Format(PyExc_ValueError, "null data pointer (argument %d)", i);
            return 0;
        }
    }
    return 1;
}

static PyObject *py_rms_norm(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 7) return PyErr_Format(PyExc_TypeError, "rms_norm takes 7 arguments, got %zd", nargs);
    const int nth = get_nth(args[6]);
    if (nth < 0) return NULL;
    unsigned long long p[3];
    if (!get_ptrs(args, 3, p, 1 << 1)) return NULL;
    const long long rows = PyLong_AsLongLong(args[3]), n = PyLong_AsLongLong(args[4]);
    const double eps = PyFloat_AsDouble(args[5]);
    if (PyErr_Occurred()) return NULL;
    if (rows < 0 || n < 1) return PyErr_Format(PyExc_ValueError, "bad shape rows=%lld n=%lld", rows, n);
    rms_norm_rows((const float *)(uintptr_t)p[0], (const float *)(uintptr_t)p[1], (float *)(uintptr_t)p[2],
                  (long)rows, (long)n, (float)eps, nth);
    Py_RETURN_NONE;
}

static PyObject *py_rope(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 11) return PyErr_Format(PyExc_TypeError, "rope takes 11 arguments, got %zd", nargs);
    const int nth = get_nth(args[10]);
    if (nth < 0) return NULL;
    unsigned long long p[4];
    if (!get_ptrs(args, 4, p, 0)) return NULL;
    long long v[6];
    for (int i = 0; i < 6; i++) {
        v[i] = PyLong_AsLongLong(args[4 + i]);
        if (v[i] == -1 && PyErr_Occurred()) return NULL;
    }
    const long long B = v[0], H = v[1], T = v[2], D = v[3], R = v[4];
    if (B < 0 || H < 1 || T < 0 || D < 1 || R < 0 || R > D || R % 2)
        return PyErr_Format(PyExc_ValueError, "bad shape B=%lld H=%lld T=%lld D=%lld R=%lld", B, H, T, D, R);
    rope_rows((const float *)(uintptr_t)p[0], (const float *)(uintptr_t)p[1], (const float *)(uintptr_t)p[2],
              (float *)(uintptr_t)p[3], (long)B, (long)H, (long)T, (long)D, (long)R, v[5] != 0, nth);
    Py_RETURN_NONE;
}

static PyObject *py_rope_table(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 9) return PyErr_Format(PyExc_TypeError, "rope_table takes 9 arguments, got %zd", nargs);
    unsigned long long p[4];
    PyObject *const ptr_args[4] = {args[0], args[6], args[7], args[8]};
    if (!get_ptrs(ptr_args, 4, p, 1 << 1)) return NULL;
    const long long N = PyLong_AsLongLong(args[1]), half = PyLong_AsLongLong(args[2]);
    const double base = PyFloat_AsDouble(args[3]);
    const long long n_dims = PyLong_AsLongLong(args[4]);
    const double freq_scale = PyFloat_AsDouble(args[5]);
    if (PyErr_Occurred()) return NULL;
    if (N < 0 || half < 0 || n_dims < 1) return PyErr_Format(PyExc_ValueError, "bad size N=%lld half=%lld", N, half);
    rope_table((const int64_t *)(uintptr_t)p[0], (long)N, (long)half, (float)base, (long)n_dims, (float)freq_scale,
               (const float *)(uintptr_t)p[1], (float *)(uintptr_t)p[2], (float *)(uintptr_t)p[3]);
    Py_RETURN_NONE;
}

static PyObject *py_swiglu(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 6) return PyErr_Format(PyExc_TypeError, "swiglu takes 6 arguments, got %zd", nargs);
    const int nth = get_nth(args[5]);
    if (nth < 0) return NULL;
    unsigned long long p[3];
    if (!get_ptrs(args, 3, p, 0)) return NULL;
    const long long rows = PyLong_AsLongLong(args[3]), n = PyLong_AsLongLong(args[4]);
    if (PyErr_Occurred()) return NULL;
    if (rows < 0 || n < 0) return PyErr_Format(PyExc_ValueError, "bad shape rows=%lld n=%lld", rows, n);
    swiglu_rows((const float *)(uintptr_t)p[0], (const float *)(uintptr_t)p[1], (float *)(uintptr_t)p[2],
                (long)rows, (long)n, nth);
    Py_RETURN_NONE;
}

static PyObject *py_gelu(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 5) return PyErr_Format(PyExc_TypeError, "gelu takes 5 arguments, got %zd", nargs);
    const int nth = get_nth(args[4]);
    if (nth < 0) return NULL;
    unsigned long long p[3];
    if (!get_ptrs(args, 3, p, 1 << 1)) return NULL;
    const long long n = PyLong_AsLongLong(args[3]);
    if (PyErr_Occurred()) return NULL;
    if (n < 0) return PyErr_Format(PyExc_ValueError, "bad size n=%lld", n);
    gelu_rows((const float *)(uintptr_t)p[0], (const float *)(uintptr_t)p[1], (float *)(uintptr_t)p[2], (long)n, nth);
    Py_RETURN_NONE;
}

/* y[i] = float(half(x[i])); y may be x. */
#ifdef ROWOPS_X86
__attribute__((target("avx2,f16c"))) static void round_f16_f16c(const float *x, float *y, long n) {
    long i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT);
        _mm256_storeu_ps(y + i, _mm256_cvtph_ps(h));
    }
    for (; i < n; i++) y[i] = round_f16(x[i]);
}
#endif

static void round_f16_span(const float *x, float *y, long n) {
#ifdef ROWOPS_X86
    if (has_avx2_f16c()) {
        round_f16_f16c(x, y, n);
        return;
    }
#endif
    for (long i = 0; i < n; i++) y[i] = round_f16(x[i]);
}

static void round_f16_rows(const float *x, float *y, long n, int nth) {
    const long spans = (n + SPAN - 1) / SPAN;
    (void)nth;
#ifdef _OPENMP
#pragma omp parallel for num_threads(nth) schedule(static) if (nth > 1 && n >= PAR_MIN)
#endif
    for (long sp = 0; sp < spans; sp++) {
        const long i0 = sp * SPAN;
        round_f16_span(x + i0, y + i0, n - i0 < SPAN ? n - i0 : SPAN);
    }
}

static PyObject *py_round_f16(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 4) return PyErr_Format(PyExc_TypeError, "round_f16 takes 4 arguments, got %zd", nargs);
    const int nth = get_nth(args[3]);
    if (nth < 0) return NULL;
    unsigned long long p[2];
    if (!get_ptrs(args, 2, p, 0)) return NULL;
    const long long n = PyLong_AsLongLong(args[2]);
    if (PyErr_Occurred()) return NULL;
    if (n < 0) return PyErr_Format(PyExc_ValueError, "bad size n=%lld", n);
    round_f16_rows((const float *)(uintptr_t)p[0], (float *)(uintptr_t)p[1], (long)n, nth);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"gelu", (PyCFunction)(void (*)(void))py_gelu, METH_FASTCALL,
     "gelu(x, g_or_0, y, n, nth): ggml's table GELU of x (times g) into y (raw addresses)."},
    {"rms_norm", (PyCFunction)(void (*)(void))py_rms_norm, METH_FASTCALL,
     "rms_norm(x, w_or_0, y, rows, n, eps, nth): ggml's RMS norm of rows of x into y (raw addresses)."},
    {"round_f16", (PyCFunction)(void (*)(void))py_round_f16, METH_FASTCALL,
     "round_f16(x, y, n, nth): y = x rounded to float16 precision (raw addresses; y may be x)."},
    {"rope", (PyCFunction)(void (*)(void))py_rope, METH_FASTCALL,
     "rope(x, cos, sin, y, B, H, T, D, R, neox, nth): rotary embedding of x [B,H,T,D] into y."},
    {"rope_table", (PyCFunction)(void (*)(void))py_rope_table, METH_FASTCALL,
     "rope_table(pos, N, half, base, n_dims, freq_scale, ff_or_0, cos, sin): ggml's rope cos/sin "
     "[N, half] for int64 positions [N] (raw addresses)."},
    {"swiglu", (PyCFunction)(void (*)(void))py_swiglu, METH_FASTCALL,
     "swiglu(g, u, y, rows, n, nth): y = silu(g) * u as ggml computes it (raw addresses; y may be g)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_rowops", "Per-row RMS norm and rotary embedding; see corral.kernels.rowops.",
    -1, methods, NULL, NULL, NULL, NULL,
};

/* The table corral._decode calls (capi.h). */
static corral_rowops_api c_api = {CORRAL_ROWOPS_API_VERSION, rms_norm_rows, rope_rows, gelu_rows, swiglu_rows};

PyMODINIT_FUNC PyInit__rowops(void) {
    gelu_table_init();
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    PyObject *cap = PyCapsule_New(&c_api, "corral._rowops._C_API", NULL);
    if (!cap || PyModule_AddObject(m, "_C_API", cap) < 0) {
        Py_XDECREF(cap);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
