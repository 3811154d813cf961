/*
 * ggml's AVX2 exponential (ggml_v_expf), shared by the kernels that must give llama.cpp's bits:
 * the attention softmax (attention.c) and the SwiGLU activation (rowops.c). Header-only: each
 * extension module includes its own copy; x86 only (callers guard with their own x86 test).
 */
#ifndef CORRAL_VEXP_H
#define CORRAL_VEXP_H
#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>

#define VEXP_TGT __attribute__((target("avx2,fma,f16c")))

/* e^x, 8 lanes, by the algorithm ggml's AVX2 softmax uses (Arm's optimized-routines expf:
 * x = n ln2 + b, a degree-5 polynomial in b, scaled by 2^n with care near over/underflow),
 * so that the softmax weights get llama.cpp's bits. */
VEXP_TGT static inline __m256 exp_avx2(__m256 x) {
    const __m256 shift = _mm256_set1_ps(0x1.8p23f);
    const __m256 z = _mm256_fmadd_ps(x, _mm256_set1_ps(0x1.715476p+0f), shift);
    const __m256 n = _mm256_sub_ps(z, shift);
    const __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.7f7d1cp-20f),
                                      _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.62e4p-1f), x));
    const __m256i e = _mm256_slli_epi32(_mm256_castps_si256(z), 23);
    const __m256 k = _mm256_castsi256_ps(_mm256_add_epi32(e, _mm256_castps_si256(_mm256_set1_ps(1))));
    const __m256 absn = _mm256_andnot_ps(_mm256_set1_ps(-0.f), n);
    const __m256 big = _mm256_cmp_ps(absn, _mm256_set1_ps(126), _CMP_GT_OQ);
    const __m256 r2 = _mm256_mul_ps(r, r);
    const __m256 hi = _mm256_fmadd_ps(_mm256_set1_ps(0x1.0e4020p-7f), r, _mm256_set1_ps(0x1.573e2ep-5f));
    const __m256 lo = _mm256_fmadd_ps(_mm256_set1_ps(0x1.555e66p-3f), r, _mm256_set1_ps(0x1.fffdb6p-2f));
    const __m256 poly = _mm256_fmadd_ps(_mm256_fmadd_ps(hi, r2, lo), r2,
                                        _mm256_mul_ps(_mm256_set1_ps(0x1.ffffecp-1f), r));
    if (!_mm256_movemask_ps(big)) return _mm256_fmadd_ps(poly, k, k);
    /* |n| > 126: 2^n split in two factors; |n| > 192: plain overflow/underflow */
    const __m256i sg = _mm256_and_si256(_mm256_castps_si256(_mm256_cmp_ps(n, _mm256_setzero_ps(), _CMP_LE_OQ)),
                                        _mm256_set1_epi32((int)0x82000000u));
    const __m256 s1 = _mm256_castsi256_ps(_mm256_add_epi32(sg, _mm256_set1_epi32(0x7f000000)));
    const __m256 s2 = _mm256_castsi256_ps(_mm256_sub_epi32(e, sg));
    const __m256 huge = _mm256_cmp_ps(absn, _mm256_set1_ps(192), _CMP_GT_OQ);
    const __m256 mid = _mm256_blendv_ps(_mm256_fmadd_ps(k, poly, k),
                                        _mm256_mul_ps(_mm256_fmadd_ps(s2, poly, s2), s1), big);
    return _mm256_blendv_ps(mid, _mm256_mul_ps(s1, s1), huge);
}

/* silu(x) * g on 8 lanes as ggml's AVX2 swiglu: x / (1 + e^-x) (e^-x by exp_avx2), times g */
VEXP_TGT static inline __m256 swiglu_avx2(__m256 x, __m256 g) {
    const __m256 e = exp_avx2(_mm256_sub_ps(_mm256_setzero_ps(), x));
    return _mm256_mul_ps(_mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e)), g);
}

#endif
#endif
