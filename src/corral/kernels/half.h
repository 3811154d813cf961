/*
 * Float16 <-> float32 conversions shared by corral's C kernels (portable C; the AVX2 paths use
 * F16C, which gives the same bits). Header-only: each extension module includes its own copy.
 */
#ifndef CORRAL_HALF_H
#define CORRAL_HALF_H

#include <stdint.h>
#include <string.h>

static inline uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint16_t rd16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }

static inline float h2f(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
    if (exp == 0) {
        /* zero or subnormal: mant * 2^-24 is exact in float32 */
        return u2f(f2u((float)mant * 0x1p-24f) | sign);
    }
    if (exp == 31) return u2f(sign | 0x7f800000u | (mant << 13));
    return u2f(sign | ((exp + 112u) << 23) | (mant << 13));
}

/* float32 -> fp16 with round-to-nearest-even (what F16C's vcvtps2ph with imm 0 and ggml's
 * portable GGML_FP32_TO_FP16 do), including subnormals, overflow to inf and NaN. */
static inline uint16_t f2h(float f) {
    uint32_t u = f2u(f);
    const uint32_t sign = u & 0x80000000u;
    u ^= sign;
    uint16_t o;
    if (u >= 0x47800000u) {                   /* >= 65536 (or inf/NaN): inf, or a quiet NaN */
        o = u > 0x7f800000u ? 0x7e00 : 0x7c00;
    } else if (u < 0x38800000u) {             /* below 2^-14: fp16 subnormal or zero */
        /* adding 0.5 (2^-1) puts the fp16 subnormal's bits at the bottom of the mantissa,
         * and the float addition does the round-to-nearest-even for us */
        const float magic = u2f(126u << 23);
        o = (uint16_t)(f2u(u2f(u) + magic) - f2u(magic));
    } else {
        const uint32_t odd = (u >> 13) & 1u;  /* ties go to the even result */
        u += 0xc8000fffu;                     /* rebias exponent (-112 << 23) and add half-ulp-1 */
        u += odd;
        o = (uint16_t)(u >> 13);              /* a mantissa carry rounds up into the exponent */
    }
    return o | (uint16_t)(sign >> 16);
}

static inline float round_f16(float f) { return h2f(f2h(f)); }

#endif /* CORRAL_HALF_H */
