/*
 * The C-level entry points corral's kernel modules lend each other, so that the fused decode
 * step (corral._decode, decode.c) runs the very code the per-op Python calls run, with the same
 * arithmetic bit for bit, instead of a second copy that could drift.
 *
 * Each module puts a pointer to its table in a PyCapsule named "corral.<module>._C_API"
 * (attribute _C_API); a user gets it with PyCapsule_Import. Bump a table's version when its
 * layout changes: the user checks it and refuses a table it does not know.
 */
#ifndef CORRAL_CAPI_H
#define CORRAL_CAPI_H

#include <stdint.h>

/* ---- corral._qkernels -------------------------------------------------------------------- */

/* One weight of a quantized matmul: ggml type id, raw rows [N, row_bytes], output [M, N]. */
typedef struct {
    int type;
    const uint8_t *w;
    float *y;
    long N;
} corral_mat_spec;

#define CORRAL_QKERNELS_API_VERSION 1

typedef struct {
    int version;
    int has_avx2; /* the AVX2 kernels may run (the CPU has AVX2, FMA and F16C) */
    /* y_i = x[M, K] @ W_i^T for n <= 8 matrices taking the same activation blocks (same
     * act_kind); x is quantized once, one parallel region of up to nth threads. Returns -1
     * when scratch memory cannot be allocated. */
    int (*qmatmul)(const corral_mat_spec *specs, int n, const float *x, long M, long K, int nth,
                   int use_avx2);
    /* the activation blocks weights of this type dot with (matrices of one qmatmul call must
     * agree); -1 for a type without kernels */
    int (*act_kind)(int type);
} corral_qkernels_api;

/* ---- corral._attn ------------------------------------------------------------------------ */

/* One decode-attention call; layout in attention.c. */
typedef struct {
    const float *q;
    const uint16_t *k, *v;
    const int64_t *slot, *len;
    float *out;
    long B, H, Hkv, D;
    long s_slot, s_head, s_pos; /* element strides of the k/v buffers */
    long window;
    float scale;
    int exact;
    /* sum in the order llama.cpp uses for a one-token batch (ggml_vec_dot_f16) instead of
     * its prompt-batch order (tinyBLAS); see attention.c */
    int one_token;
} corral_attn_job;

#define CORRAL_ATTN_API_VERSION 2

typedef struct {
    int version;
    int simd; /* the AVX2/F16C path may run */
    /* Returns -1 when a scores buffer cannot be allocated. simd needs D % 8 == 0. */
    int (*decode)(const corral_attn_job *jb, int nth, int simd);
} corral_attn_api;

/* ---- corral._rowops ---------------------------------------------------------------------- */

#define CORRAL_ROWOPS_API_VERSION 3

typedef struct {
    int version;
    /* x, y [rows, n]; w [n] or NULL; y may be x */
    void (*rms_norm)(const float *x, const float *w, float *y, long rows, long n, float eps, int nth);
    /* x, y [B, H, T, D]; cos, sin [B, T, R/2]; y may be x */
    void (*rope)(const float *x, const float *cs, const float *sn, float *y, long B, long H, long T,
                 long D, long R, int neox, int nth);
    /* y = gelu(x) (tanh form, ggml's float16 table) times g when g is not NULL, over n values;
     * y may be x (version 2) */
    void (*gelu)(const float *x, const float *g, float *y, long n, int nth);
    /* y = silu(g) * u over rows of n values as ggml's swiglu computes it; y may be g */
    void (*swiglu)(const float *g, const float *u, float *y, long rows, long n, int nth);
} corral_rowops_api;

#endif /* CORRAL_CAPI_H */
