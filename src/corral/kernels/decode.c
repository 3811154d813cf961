/*
 * corral._decode: every block of a decode step (a few new tokens) in one C call, instead of ~25
 * dispatched torch ops and C calls per block; llama-family blocks and Gemma 3's.
 *
 * A one-token step of a small model is mostly dispatch: on SmolLM2-135M (30 blocks) the C
 * kernels take about half of a step, Python and torch the rest, a few microseconds per view,
 * add and call. Here the whole stack of blocks runs without returning to Python, calling the
 * same kernels the eager path calls (through the tables of capi.h: corral._qkernels for the
 * quantized matmuls, corral._attn for attention over the float16 cache, corral._rowops for the
 * RMS norm, rope, ggml's table GELU and swiglu), so the results are the eager path's bit for bit. What
 * the eager path leaves to torch is redone here with torch's arithmetic:
 *   - bias and residual adds: one float32 addition per value;
 *   - the new keys/values stored in the float16 cache: round to nearest even (half.h's f2h,
 *     the bits of torch's float -> half copy);
 *
 * One block, M rows (x [M, E] float32, updated in place); [...] is present in some blocks only
 * (a NULL pointer in the plan where absent):
 *   h = rms_norm(x) * attn_norm; q, k, v = h Wq^T [+bq], h Wk^T [+bk], h Wv^T [+bv]
 *   [q = rms_norm(q) * q_norm, k = rms_norm(k) * k_norm, per head of D values]
 *   rope(q), rope(k) with the layer's cos/sin set; k, v -> cache[slot, :, len - 1]
 *   a = attention(q, cache, len, the layer's window); o = a Wo^T
 *   [o = rms_norm(o) * attn_post_norm]; x += o
 *   h = rms_norm(x) * ffn_norm; o = (act(h Wg^T) * h Wu^T) Wd^T
 *   [o = rms_norm(o) * ffn_post_norm]; x += o
 * act is silu (llama, qwen2: rowops.c's swiglu, as layers.swiglu) or ggml's table GELU (Gemma 3:
 * layers.gelu_tanh on the CPU, the gated form of rowops.c).
 * Shapes: E width, H / Hkv heads, D head dim, R rotated dims, F feed-forward width. Row m of a
 * call gets the bits a call with that row alone would (every kernel keeps rows apart) in the
 * quantized kernels' "rows" order (corral.kernels.order; in the default "llama" order their
 * repacked Q4_K weights and K-quants from 8 rows follow llama.cpp's batch kernels). Rows
 * may share a slot (a step of a few new tokens of one sequence): every row's keys and values
 * are stored before any row attends, and row m sees its slot's first len[m] positions.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "capi.h"
#include "half.h"
#include "scratch.h"

static const corral_qkernels_api *g_qk = NULL;
static const corral_attn_api *g_at = NULL;
static const corral_rowops_api *g_ro = NULL;

/* One block's weights (outputs are filled in per call: the scratch is per thread). */
typedef struct {
    const float *attn_norm, *ffn_norm;     /* [E] */
    const float *bq, *bk, *bv;             /* [H*D], [Hkv*D], [Hkv*D] or NULL */
    const float *q_norm, *k_norm;          /* [D] or NULL: per-head norms of q and k (Gemma 3) */
    const float *attn_post, *ffn_post;     /* [E] or NULL: norms of each half's output (Gemma 3) */
    corral_mat_spec wq, wk, wv, wo, gate, up, down;
    long window;                           /* > 0: only the last `window` positions are visible */
    long rope;                             /* which cos/sin set of the step rotates q and k */
} layer_t;

enum { ACT_SILU = 0, ACT_GELU = 1 }; /* the feed-forward gate's activation */

typedef struct {
    long L, E, H, Hkv, D, R, F;
    int neox;        /* rope pairs (i, i + R/2) instead of (2i, 2i + 1) */
    float eps, scale;
    int act;         /* ACT_SILU or ACT_GELU */
    long n_rope;     /* cos/sin sets a step passes (Gemma 3: local and global bases) */
    int use_avx2;    /* quantized kernels' AVX2 path (as corral.kernels chooses it) */
    int attn_simd;   /* attention's AVX2/F16C path (as corral.kernels.attention chooses it) */
    layer_t layers[];
} plan_t;

#define PLAN_NAME "corral._decode.plan"

/* ------------------------------------------------------------------------------------------ */
/* The step                                                                                   */
/* ------------------------------------------------------------------------------------------ */

/* y_i = x W_i^T for n matrices on one input: those taking the same activation blocks share
 * a call (x quantized once), as corral.kernels.qmatmul_many groups them. */
static int matmuls(const corral_mat_spec *specs, int n, const float *x, long M, long K, int nth, int avx2) {
    int done[8] = {0};
    for (int i = 0; i < n; i++) {
        if (done[i]) continue;
        corral_mat_spec group[8];
        int m = 0;
        const int kind = g_qk->act_kind(specs[i].type);
        for (int j = i; j < n; j++)
            if (!done[j] && g_qk->act_kind(specs[j].type) == kind) {
                group[m++] = specs[j];
                done[j] = 1;
            }
        if (g_qk->qmatmul(group, m, x, M, K, nth, avx2)) return -1;
    }
    return 0;
}

static void add_rows(float *x, const float *b, long M, long n, int bias) {
    /* bias: b [n] added to each of M rows; else b [M, n] element-wise */
    for (long m = 0; m < M; m++) {
        float *xr = x + m * n;
        const float *br = bias ? b : b + m * n;
        for (long i = 0; i < n; i++) xr[i] = xr[i] + br[i];
    }
}

/* Per-thread scratch (scratch.h): n floats. */
static __thread void *t_buf = NULL;
static __thread size_t t_cap = 0;

static float *scratch(size_t n) { return grow_scratch(&t_buf, &t_cap, n * sizeof(float)); }

/* kv: int64 [L, 5] per layer: k buffer, v buffer (float16 [slots, Hkv, len, D] addresses),
 * and their element strides of slot, head and position (unit stride on D). cs/sn:
 * [n_rope, M, R/2], the layer's set at cs + rope * M * R/2. */
static int run_step(const plan_t *p, float *x, long M, const float *cs, const float *sn, const int64_t *kv,
                    const int64_t *slot, const int64_t *len, int nth, int one_token, long last_of) {
    const long E = p->E, H = p->H, Hkv = p->Hkv, D = p->D, F = p->F;
    const long nq = H * D, nk = Hkv * D;
    float *buf = scratch((size_t)M * (size_t)(2 * E + 2 * nq + 2 * nk + 2 * F));
    if (!buf) return -1;
    float *h = buf, *q = h + M * E, *k = q + M * nq, *v = k + M * nk, *att = v + M * nk;
    float *o = att + M * nq, *g = o + M * E, *u = g + M * F;
    for (long l = 0; l < p->L; l++) {
        const layer_t *ly = &p->layers[l];
        const int64_t *kvl = kv + 5 * l;
        uint16_t *kb = (uint16_t *)(uintptr_t)kvl[0], *vb = (uint16_t *)(uintptr_t)kvl[1];
        const long s_slot = (long)kvl[2], s_head = (long)kvl[3], s_pos = (long)kvl[4];

        /* attention half */
        g_ro->rms_norm(x, ly->attn_norm, h, M, E, p->eps, nth);
        corral_mat_spec qkv[3] = {ly->wq, ly->wk, ly->wv};
        qkv[0].y = q;
        qkv[1].y = k;
        qkv[2].y = v;
        if (matmuls(qkv, 3, h, M, E, nth, p->use_avx2)) return -1;
        if (ly->bq) add_rows(q, ly->bq, M, nq, 1);
        if (ly->bk) add_rows(k, ly->bk, M, nk, 1);
        if (ly->bv) add_rows(v, ly->bv, M, nk, 1);
        /* each head's D values a row of its own, as the eager norm of q [B, H, T, D] sees them */
        if (ly->q_norm) g_ro->rms_norm(q, ly->q_norm, q, M * H, D, p->eps, nth);
        if (ly->k_norm) g_ro->rms_norm(k, ly->k_norm, k, M * Hkv, D, p->eps, nth);
        /* q [M, H, 1, D], k [M, Hkv, 1, D]: one position per row */
        const long roff = ly->rope * M * (p->R / 2);
        g_ro->rope(q, cs + roff, sn + roff, q, M, H, 1, D, p->R, p->neox, nth);
        g_ro->rope(k, cs + roff, sn + roff, k, M, Hkv, 1, D, p->R, p->neox, nth);
        for (long m = 0; m < M; m++) {
            const long base = (long)slot[m] * s_slot + ((long)len[m] - 1) * s_pos;
            for (long hh = 0; hh < Hkv; hh++) {
                uint16_t *kd = kb + base + hh * s_head, *vd = vb + base + hh * s_head;
                const float *ks = k + m * nk + hh * D, *vs = v + m * nk + hh * D;
                for (long d = 0; d < D; d++) {
                    kd[d] = f2h(ks[d]);
                    vd[d] = f2h(vs[d]);
                }
            }
        }
        const corral_attn_job jb = {q, kb, vb, slot, len, att, M, H, Hkv, D,
                                    s_slot, s_head, s_pos, ly->window, p->scale, 0, one_token};
        if (g_at->decode(&jb, nth, p->attn_simd)) return -1;
        corral_mat_spec wo = ly->wo;
        wo.y = o;
        if (g_qk->qmatmul(&wo, 1, att, M, nq, nth, p->use_avx2)) return -1;
        if (ly->attn_post) g_ro->rms_norm(o, ly->attn_post, o, M, E, p->eps, nth);
        add_rows(x, o, M, E, 0);

        /* feed-forward half. With last_of, the last layer's runs on every last_of-th row only
         * (each sequence's last), as llama.cpp computes it when only the last logits are
         * wanted (its inp_out_ids): its matmuls see that many rows, which picks their kernel
         * and summation order. The rows are moved to the front and back. */
        const int prune = last_of > 1 && l == p->L - 1;
        const long Mf = prune ? M / last_of : M;
        if (prune)
            for (long i = 0; i < Mf; i++) memmove(x + i * E, x + ((i + 1) * last_of - 1) * E, (size_t)E * sizeof(float));
        g_ro->rms_norm(x, ly->ffn_norm, h, Mf, E, p->eps, nth);
        corral_mat_spec gu[2] = {ly->gate, ly->up};
        gu[0].y = g;
        gu[1].y = u;
        if (matmuls(gu, 2, h, Mf, E, nth, p->use_avx2)) return -1;
        if (p->act == ACT_GELU)
            g_ro->gelu(g, u, g, Mf * F, nth);
        else
            g_ro->swiglu(g, u, g, Mf, F, nth);
        corral_mat_spec down = ly->down;
        down.y = o;
        if (g_qk->qmatmul(&down, 1, g, Mf, F, nth, p->use_avx2)) return -1;
        if (ly->ffn_post) g_ro->rms_norm(o, ly->ffn_post, o, Mf, E, p->eps, nth);
        add_rows(x, o, Mf, E, 0);
        if (prune)
            for (long i = Mf - 1; i >= 0; i--) memmove(x + ((i + 1) * last_of - 1) * E, x + i * E, (size_t)E * sizeof(float));
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Python interface                                                                           */
/* ------------------------------------------------------------------------------------------ */

static void plan_free(PyObject *cap) { free(PyCapsule_GetPointer(cap, PLAN_NAME)); }

static int get_ptr(PyObject *o, const void **out, int nullable) {
    const unsigned long long v = PyLong_AsUnsignedLongLong(o);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) return 0;
    if (!v && !nullable) {
        PyErr_SetString(PyExc_ValueError, "null data pointer");
        return 0;
    }
    *out = (const void *)(uintptr_t)v;
    return 1;
}

/* (type, address) of a weight with N rows of K values -> spec */
static int get_mat(PyObject *o, long N, corral_mat_spec *out) {
    int type;
    unsigned long long w;
    if (!PyArg_ParseTuple(o, "iK", &type, &w)) return 0;
    if (g_qk->act_kind(type) < 0) {
        PyErr_Format(PyExc_ValueError, "ggml type id %d has no quantized kernel", type);
        return 0;
    }
    if (!w) {
        PyErr_SetString(PyExc_ValueError, "null weight pointer");
        return 0;
    }
    *out = (corral_mat_spec){type, (const uint8_t *)(uintptr_t)w, NULL, N};
    return 1;
}

PyDoc_STRVAR(plan_doc,
             "plan(dims, layers) -> capsule\n\n"
             "dims: (L, E, H, Hkv, D, R, F, neox, eps, scale, gelu, n_rope, qk_scalar, "
             "attn_scalar);\n"
             "layers: L tuples (attn_norm, ffn_norm, bq, bk, bv, q_norm, k_norm, attn_post_norm, "
             "ffn_post_norm, wq, wk, wv, wo, gate, up, down, window, rope) of raw addresses (all "
             "but the two norms 0 when absent), each weight a (ggml type, address) pair of "
             "contiguous rows, window 0 for none, rope the layer's cos/sin set (< n_rope). The "
             "caller keeps every tensor alive for as long as the plan.");

static PyObject *py_plan(PyObject *self, PyObject *args) {
    (void)self;
    long L, E, H, Hkv, D, R, F, n_rope;
    int neox, gelu, qk_scalar, attn_scalar;
    double eps, scale;
    PyObject *layers;
    if (!PyArg_ParseTuple(args, "(lllllllpddplpp)O!", &L, &E, &H, &Hkv, &D, &R, &F, &neox, &eps, &scale,
                          &gelu, &n_rope, &qk_scalar, &attn_scalar, &PyTuple_Type, &layers))
        return NULL;
    if (L < 1 || E < 1 || H < 1 || Hkv < 1 || H % Hkv || D < 1 || D > 512 || R < 0 || R > D || R % 2 ||
        F < 1 || n_rope < 1 || PyTuple_GET_SIZE(layers) != L)
        return PyErr_Format(PyExc_ValueError, "bad dims L=%ld E=%ld H=%ld Hkv=%ld D=%ld R=%ld F=%ld", L, E, H,
                            Hkv, D, R, F);
    plan_t *p = calloc(1, sizeof(plan_t) + (size_t)L * sizeof(layer_t));
    if (!p) return PyErr_NoMemory();
    p->L = L, p->E = E, p->H = H, p->Hkv = Hkv, p->D = D, p->R = R, p->F = F;
    p->neox = neox, p->eps = (float)eps, p->scale = (float)scale;
    p->act = gelu ? ACT_GELU : ACT_SILU, p->n_rope = n_rope;
    /* the choices corral.kernels and corral.kernels.attention make for their own calls */
    p->use_avx2 = g_qk->has_avx2 && !qk_scalar;
    p->attn_simd = g_at->simd && !attn_scalar && D % 8 == 0;
    for (long l = 0; l < L; l++) {
        PyObject *t = PyTuple_GET_ITEM(layers, l);
        layer_t *ly = &p->layers[l];
        if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 18) {
            PyErr_SetString(PyExc_ValueError, "a layer is a tuple of 18");
            goto fail;
        }
        const void **vecs[9] = {(const void **)&ly->attn_norm, (const void **)&ly->ffn_norm,
                                (const void **)&ly->bq,        (const void **)&ly->bk,
                                (const void **)&ly->bv,        (const void **)&ly->q_norm,
                                (const void **)&ly->k_norm,    (const void **)&ly->attn_post,
                                (const void **)&ly->ffn_post};
        for (int i = 0; i < 9; i++)
            if (!get_ptr(PyTuple_GET_ITEM(t, i), vecs[i], i >= 2)) goto fail;
        /* the seven projections (items 9 to 15) and their row counts */
        corral_mat_spec *mats[7] = {&ly->wq, &ly->wk, &ly->wv, &ly->wo, &ly->gate, &ly->up, &ly->down};
        const long rows[7] = {H * D, Hkv * D, Hkv * D, E, F, F, E};
        for (int i = 0; i < 7; i++)
            if (!get_mat(PyTuple_GET_ITEM(t, 9 + i), rows[i], mats[i])) goto fail;
        ly->window = PyLong_AsLong(PyTuple_GET_ITEM(t, 16));
        ly->rope = PyLong_AsLong(PyTuple_GET_ITEM(t, 17));
        if (PyErr_Occurred()) goto fail;
        if (ly->window < 0 || ly->rope < 0 || ly->rope >= n_rope) {
            PyErr_Format(PyExc_ValueError, "layer %ld: bad window %ld or rope set %ld", l, ly->window,
                         ly->rope);
            goto fail;
        }
    }
    PyObject *cap = PyCapsule_New(p, PLAN_NAME, plan_free);
    if (!cap) goto fail;
    return cap;
fail:
    free(p);
    return NULL;
}

PyDoc_STRVAR(step_doc,
             "step(plan, x, M, cos, sin, kv, slot, len, n_threads, one_token, last_of) -> None\n\n"
             "Runs every block of `plan` on x [M, E] float32 in place (raw addresses): cos/sin "
             "[n_rope, M, R/2] float32, kv int64 [L, 5] (k and v buffer addresses, slot/head/position "
             "strides), slot and len int64 [M] (the new token goes to position len - 1 of its "
             "slot, already checked against the buffers); one_token: attention sums as llama.cpp's "
             "one-token batches (see attention.c); last_of > 1: the last layer's feed-forward half "
             "on every last_of-th row only (the other rows' x is then left unfinished).");

static PyObject *py_step(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 11) return PyErr_Format(PyExc_TypeError, "step takes 11 arguments, got %zd", nargs);
    const plan_t *p = PyCapsule_GetPointer(args[0], PLAN_NAME);
    if (!p) return NULL;
    const void *ptr[6]; /* x, cos, sin, kv, slot, len */
    const int at[6] = {1, 3, 4, 5, 6, 7};
    for (int i = 0; i < 6; i++)
        if (!get_ptr(args[at[i]], &ptr[i], 0)) return NULL;
    const long M = PyLong_AsLong(args[2]);
    long nth = PyLong_AsLong(args[8]);
    const int one_token = PyObject_IsTrue(args[9]);
    const long last_of = PyLong_AsLong(args[10]);
    if (PyErr_Occurred() || one_token < 0) return NULL;
    if (M < 1) return PyErr_Format(PyExc_ValueError, "bad row count M=%ld", M);
    if (last_of < 0 || (last_of > 1 && M % last_of)) return PyErr_Format(PyExc_ValueError, "bad last_of=%ld for M=%ld", last_of, M);
    const int64_t *len = ptr[5];
    for (long m = 0; m < M; m++)
        if (len[m] < 1) return PyErr_Format(PyExc_ValueError, "row %ld has no positions", m);
    if (nth < 1) nth = 1;
    if (nth > 256) nth = 256;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = run_step(p, (float *)ptr[0], M, ptr[1], ptr[2], ptr[3], ptr[4], len, (int)nth, one_token, last_of);
    Py_END_ALLOW_THREADS
    if (rc) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"plan", py_plan, METH_VARARGS, plan_doc},
    {"step", (PyCFunction)(void (*)(void))py_step, METH_FASTCALL, step_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_decode",
    "The blocks of a decode step (llama family, Gemma 3) in one C call; see corral.kernels.decode.",
    -1, methods, NULL, NULL, NULL, NULL,
};

/* the table of `module` ("corral._x._C_API"), checked against the version we were built with */
static const void *import_api(const char *module_name, const char *name, int version) {
    /* PyCapsule_Import walks attributes from the package down: the submodule must be loaded */
    PyObject *mod = PyImport_ImportModule(module_name);
    if (!mod) return NULL;
    Py_DECREF(mod);
    const int *api = PyCapsule_Import(name, 0);
    if (!api) { /* a module built before it had the table: an ImportError, so Python falls back */
        PyErr_Clear();
        PyErr_Format(PyExc_ImportError, "%s is missing: rebuild corral's extensions", name);
        return NULL;
    }
    if (*api != version) {
        PyErr_Format(PyExc_ImportError, "%s has version %d, corral._decode needs %d", name, *api, version);
        return NULL;
    }
    return api;
}

PyMODINIT_FUNC PyInit__decode(void) {
    g_qk = import_api("corral._qkernels", "corral._qkernels._C_API", CORRAL_QKERNELS_API_VERSION);
    if (!g_qk) return NULL;
    g_at = import_api("corral._attn", "corral._attn._C_API", CORRAL_ATTN_API_VERSION);
    if (!g_at) return NULL;
    g_ro = import_api("corral._rowops", "corral._rowops._C_API", CORRAL_ROWOPS_API_VERSION);
    if (!g_ro) return NULL;
    return PyModule_Create(&module);
}
