/*
 * initrecipe.rng.portable._portable_kernel: the CPU implementation of the "portable" random-number mode.
 *
 * Every function here computes, bit for bit, what schema/PORTABLE_RNG.md specifies and what
 * initrecipe/rng/portable/samplers.py computes with eager torch operations on any device: Philox4x32-10 words
 * turned into float32 samples by transforms that use only correctly rounded IEEE-754 binary32
 * + - * /, comparisons, selects and integer bit operations.  Nothing here may be contracted or
 * reassociated: the module is compiled with -O3 -ffp-contract=off and refuses -ffast-math.
 *
 * Speed: Philox runs on groups of 16 blocks (64 words) held structure-of-arrays in SIMD
 * registers; the transforms are plain loops over the 64 words that the compiler vectorises.  The
 * normal's superblock loop is the exception: its words come four groups per Philox call (AVX-512:
 * eight interleaved chains) and its central pass runs on 8 vectors at once with GCC vector
 * extensions (16 lanes each; the AVX2 variant: 16 vectors of 8 lanes), which keeps enough
 * independent work in flight to hide the latency of its long per-lane chain (log, division,
 * polynomial).
 * GCC 12 vectorises a 32x32->64-bit product as a full 64-bit one (three multiplies), so the x86
 * Philox variants spell vpmuludq with intrinsics.  Every driver is compiled for AVX-512F, AVX2 and
 * baseline x86-64 (function target attributes, not -march flags) and the best one the CPU runs is
 * chosen at import (manual function multiversioning; the environment variable
 * INITRECIPE_KERNEL_PATH forces one), so a built module runs on any x86-64 CPU; other
 * architectures get the portable C variant only (no NEON variant yet).
 *
 * The functions receive raw addresses (tensor.data_ptr()) as Python ints and release the GIL while
 * they compute; the Python side splits the work across threads.  Output element i of a call is
 * the sample of word number first + i, whatever the call's extent, so any split of a range into
 * calls yields the same bits.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#if defined(__FAST_MATH__)
#error "_portable_kernel must not be compiled with -ffast-math: its results are specified bit for bit"
#endif
#if defined(__FLT_EVAL_METHOD__) && (__FLT_EVAL_METHOD__ != 0)
#error "_portable_kernel needs binary32 arithmetic evaluated in binary32 (FLT_EVAL_METHOD == 0)"
#endif
/* GCC ignores this pragma (setup.py passes -ffp-contract=off); clang honours it. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

/*
 * x86-64 with GCC >= 8 or clang >= 9: every driver below is compiled three times, for AVX-512F,
 * AVX2 and baseline x86-64 (function attributes, not -march flags), and the module picks one at
 * import with __builtin_cpu_supports.  Elsewhere (or with -DIR_GENERIC_ONLY) one portable C
 * variant is compiled.
 */
#if !defined(IR_GENERIC_ONLY) && defined(__x86_64__) && defined(__GNUC__) && \
    (defined(__clang__) ? (__clang_major__ >= 9) : (__GNUC__ >= 8))
#define IR_X86_VARIANTS 1
#include <immintrin.h>
#define IR_AVX512 __attribute__((target("avx512f")))
#define IR_AVX2 __attribute__((target("avx2")))
#else
#define IR_X86_VARIANTS 0
#endif

#define IR_INLINE static inline __attribute__((always_inline))
/* Keep a short loop rolled so that the loop vectoriser, not straight-line SLP, handles it. */
#if defined(__clang__)
#define IR_NOUNROLL _Pragma("nounroll")
#else
#define IR_NOUNROLL _Pragma("GCC unroll 1")
#endif

/* ------------------------------------------------------------------------------------------ */
/* Philox4x32-10                                                                              */
/* ------------------------------------------------------------------------------------------ */

#define PHILOX_M0 UINT32_C(0xD2511F53)
#define PHILOX_M1 UINT32_C(0xCD9E8D57)
#define PHILOX_W0 UINT32_C(0x9E3779B9)
#define PHILOX_W1 UINT32_C(0xBB67AE85)

#define NBLK 16          /* Philox blocks per group */
#define GW (4 * NBLK)    /* words per group */

/* The round keys: ks[r] and ks[10 + r] are the two key words used in round r. */
IR_INLINE void round_keys(uint32_t k0, uint32_t k1, uint32_t ks[20])
{
    for (int r = 0; r < 10; r++) {
        ks[r] = k0;
        ks[10 + r] = k1;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
}

/*
 * philox_group_*(b0, ks, words): the 64 words of blocks b0 .. b0+15 in stream order, i.e.
 * words[4*j + r] is output word r of block b0 + j.
 *
 * GCC 12 vectorises a 32x32->64-bit multiply as a full 64x64 product (three vpmuludq), so the x86
 * variants spell the widening multiply (vpmuludq / pmuludq) with intrinsics inside functions
 * compiled for that instruction set.  Counter words live in 64-bit lanes whose upper halves hold
 * garbage: the multiplies read only the low halves, and the final packing drops the upper ones.
 */
IR_INLINE void philox_group_generic(uint64_t b0, const uint32_t *restrict ks, uint32_t *restrict words)
{
    for (int j = 0; j < NBLK; j++) {
        uint64_t b = b0 + (uint64_t)j;
        uint32_t c0 = (uint32_t)b, c1 = (uint32_t)(b >> 32), c2 = 0, c3 = 0;
        for (int r = 0; r < 10; r++) {
            uint64_t p0 = (uint64_t)c0 * PHILOX_M0;
            uint64_t p1 = (uint64_t)c2 * PHILOX_M1;
            c0 = (uint32_t)(p1 >> 32) ^ c1 ^ ks[r];
            c2 = (uint32_t)(p0 >> 32) ^ c3 ^ ks[10 + r];
            c1 = (uint32_t)p1;
            c3 = (uint32_t)p0;
        }
        words[4 * j + 0] = c0;
        words[4 * j + 1] = c1;
        words[4 * j + 2] = c2;
        words[4 * j + 3] = c3;
    }
}

#if IR_X86_VARIANTS
/* NG (1 to 4) consecutive groups, blocks b0 .. b0+16*NG-1: 2*NG independent 8-block chains whose
 * rounds are interleaved (one group alone leaves the multipliers waiting on latency). */
IR_AVX512 IR_INLINE void philox_groups_avx512(uint64_t b0, const uint32_t *restrict ks, uint32_t *restrict words,
                                              const int NG)
{
    const __m512i m0 = _mm512_set1_epi64((long long)PHILOX_M0);
    const __m512i m1 = _mm512_set1_epi64((long long)PHILOX_M1);
    const __m512i lane = _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0);
    __m512i c0[8], c1[8], c2[8], c3[8];
    _Pragma("GCC unroll 8")
    for (int h = 0; h < 2 * NG; h++) {
        __m512i b = _mm512_add_epi64(_mm512_set1_epi64((long long)(b0 + 8u * (unsigned)h)), lane);
        __m512i ka = _mm512_set1_epi64((long long)ks[0]);
        __m512i kb = _mm512_set1_epi64((long long)ks[10]);
        /* Round 1 has c2 = c3 = 0, so its second product is zero. */
        __m512i p0 = _mm512_mul_epu32(b, m0);
        c0[h] = _mm512_xor_si512(_mm512_srli_epi64(b, 32), ka);
        c1[h] = _mm512_setzero_si512();
        c2[h] = _mm512_xor_si512(_mm512_srli_epi64(p0, 32), kb);
        c3[h] = p0;
    }
    _Pragma("GCC unroll 9")
    for (int r = 1; r < 10; r++) {
        __m512i ka = _mm512_set1_epi64((long long)ks[r]);
        __m512i kb = _mm512_set1_epi64((long long)ks[10 + r]);
        _Pragma("GCC unroll 8")
        for (int h = 0; h < 2 * NG; h++) {
            __m512i p0 = _mm512_mul_epu32(c0[h], m0);
            __m512i p1 = _mm512_mul_epu32(c2[h], m1);
            c0[h] = _mm512_ternarylogic_epi64(_mm512_srli_epi64(p1, 32), c1[h], ka, 0x96);
            c2[h] = _mm512_ternarylogic_epi64(_mm512_srli_epi64(p0, 32), c3[h], kb, 0x96);
            c1[h] = p1;
            c3[h] = p0;
        }
    }
    const __m512i pick = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    _Pragma("GCC unroll 4")
    for (int g = 0; g < NG; g++) {
        /* Low halves of the two 8-lane halves -> one 16-lane vector per output word. */
        __m512i w0 = _mm512_permutex2var_epi32(c0[2 * g], pick, c0[2 * g + 1]);
        __m512i w1 = _mm512_permutex2var_epi32(c1[2 * g], pick, c1[2 * g + 1]);
        __m512i w2 = _mm512_permutex2var_epi32(c2[2 * g], pick, c2[2 * g + 1]);
        __m512i w3 = _mm512_permutex2var_epi32(c3[2 * g], pick, c3[2 * g + 1]);
        /* 4 x 16 transpose: within each 128-bit lane, then across lanes. */
        __m512i t0 = _mm512_unpacklo_epi32(w0, w1), t1 = _mm512_unpackhi_epi32(w0, w1);
        __m512i t2 = _mm512_unpacklo_epi32(w2, w3), t3 = _mm512_unpackhi_epi32(w2, w3);
        __m512i u0 = _mm512_unpacklo_epi64(t0, t2), u1 = _mm512_unpackhi_epi64(t0, t2);
        __m512i u2 = _mm512_unpacklo_epi64(t1, t3), u3 = _mm512_unpackhi_epi64(t1, t3);
        __m512i v0 = _mm512_shuffle_i32x4(u0, u1, 0x44), v1 = _mm512_shuffle_i32x4(u2, u3, 0x44);
        __m512i v2 = _mm512_shuffle_i32x4(u0, u1, 0xee), v3 = _mm512_shuffle_i32x4(u2, u3, 0xee);
        uint32_t *o = words + GW * g;
        _mm512_storeu_si512((void *)(o + 0), _mm512_shuffle_i32x4(v0, v1, 0x88));
        _mm512_storeu_si512((void *)(o + 16), _mm512_shuffle_i32x4(v0, v1, 0xdd));
        _mm512_storeu_si512((void *)(o + 32), _mm512_shuffle_i32x4(v2, v3, 0x88));
        _mm512_storeu_si512((void *)(o + 48), _mm512_shuffle_i32x4(v2, v3, 0xdd));
    }
}

IR_AVX512 IR_INLINE void philox_group_avx512(uint64_t b0, const uint32_t *restrict ks, uint32_t *restrict words)
{
    philox_groups_avx512(b0, ks, words, 1);
}

IR_AVX512 IR_INLINE void philox_quad_avx512(uint64_t b0, const uint32_t *restrict ks, uint32_t *restrict words)
{
    philox_groups_avx512(b0, ks, words, 4);
}

/* Chains of 4 blocks (one 64-bit lane per block); CH chains in flight at once, their rounds
 * interleaved and fully unrolled.  Upper lane halves hold garbage throughout (vpmuludq reads the
 * low halves; the packing drops the upper ones), so the round keys are plain 32-bit broadcasts (a
 * load, no shuffle).  AVX2 has 16 vector registers: two chains (8 state vectors and two products)
 * fit, four spill some state, yet four measured faster (Zen 5: 1.53e9 against 1.35e9 uniform
 * samples/s on one core). */
IR_AVX2 IR_INLINE void philox_chains_avx2(uint64_t b0, const uint32_t *restrict ks, __m256i *restrict c, const int CH)
{
    const __m256i m0 = _mm256_set1_epi64x((long long)PHILOX_M0);
    const __m256i m1 = _mm256_set1_epi64x((long long)PHILOX_M1);
    const __m256i lane = _mm256_set_epi64x(3, 2, 1, 0);
    __m256i c0[4], c1[4], c2[4], c3[4];
    _Pragma("GCC unroll 4")
    for (int h = 0; h < CH; h++) {
        __m256i b = _mm256_add_epi64(_mm256_set1_epi64x((long long)(b0 + 4u * (unsigned)h)), lane);
        __m256i p0 = _mm256_mul_epu32(b, m0);
        c0[h] = _mm256_xor_si256(_mm256_srli_epi64(b, 32), _mm256_set1_epi32((int)ks[0]));
        c1[h] = _mm256_setzero_si256();
        c2[h] = _mm256_xor_si256(_mm256_srli_epi64(p0, 32), _mm256_set1_epi32((int)ks[10]));
        c3[h] = p0;
    }
    _Pragma("GCC unroll 9")
    for (int r = 1; r < 10; r++) {
        _Pragma("GCC unroll 4")
        for (int h = 0; h < CH; h++) {
            __m256i p0 = _mm256_mul_epu32(c0[h], m0);
            __m256i p1 = _mm256_mul_epu32(c2[h], m1);
            __m256i x1 = _mm256_xor_si256(c1[h], _mm256_set1_epi32((int)ks[r]));
            __m256i x3 = _mm256_xor_si256(c3[h], _mm256_set1_epi32((int)ks[10 + r]));
            c0[h] = _mm256_xor_si256(_mm256_srli_epi64(p1, 32), x1);
            c2[h] = _mm256_xor_si256(_mm256_srli_epi64(p0, 32), x3);
            c1[h] = p1;
            c3[h] = p0;
        }
    }
    _Pragma("GCC unroll 4")
    for (int h = 0; h < CH; h++) {
        c[4 * h + 0] = c0[h];
        c[4 * h + 1] = c1[h];
        c[4 * h + 2] = c2[h];
        c[4 * h + 3] = c3[h];
    }
}

IR_AVX2 IR_INLINE __m256i pack_lo32_avx2(__m256i a, __m256i b)
{
    /* Low halves of the 64-bit lanes of a (lanes 0-3) and b (lanes 4-7), in order. */
    __m256 s = _mm256_shuffle_ps(_mm256_castsi256_ps(a), _mm256_castsi256_ps(b), 0x88);
    return _mm256_permute4x64_epi64(_mm256_castps_si256(s), 0xd8);
}

/* Two chains (8 blocks, 32 words) from their state to stream order at o. */
IR_AVX2 IR_INLINE void philox_store8_avx2(const __m256i *restrict c, uint32_t *restrict o)
{
    __m256i w0 = pack_lo32_avx2(c[0], c[4]);
    __m256i w1 = pack_lo32_avx2(c[1], c[5]);
    __m256i w2 = pack_lo32_avx2(c[2], c[6]);
    __m256i w3 = pack_lo32_avx2(c[3], c[7]);
    __m256i t0 = _mm256_unpacklo_epi32(w0, w1), t1 = _mm256_unpackhi_epi32(w0, w1);
    __m256i t2 = _mm256_unpacklo_epi32(w2, w3), t3 = _mm256_unpackhi_epi32(w2, w3);
    __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2);
    __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3);
    _mm256_storeu_si256((__m256i *)(o + 0), _mm256_permute2x128_si256(u0, u1, 0x20));
    _mm256_storeu_si256((__m256i *)(o + 8), _mm256_permute2x128_si256(u2, u3, 0x20));
    _mm256_storeu_si256((__m256i *)(o + 16), _mm256_permute2x128_si256(u0, u1, 0x31));
    _mm256_storeu_si256((__m256i *)(o + 24), _mm256_permute2x128_si256(u2, u3, 0x31));
}

#define IR_AVX2_CHAINS 4 /* chains per philox_chains_avx2 call (1, 2 or 4); see there */
IR_AVX2 IR_INLINE void philox_group_avx2(uint64_t b0, const uint32_t *restrict ks, uint32_t *restrict words)
{
    __m256i c[16];
    _Pragma("GCC unroll 4")
    for (int h = 0; h < 4; h += IR_AVX2_CHAINS)
        philox_chains_avx2(b0 + 4u * (unsigned)h, ks, c + 4 * h, IR_AVX2_CHAINS);
    philox_store8_avx2(c, words);
    philox_store8_avx2(c + 8, words + 32);
}
#endif

/* philox_quad_*(b0, ks, words): four consecutive groups (256 words), as four philox_group_* calls. */
IR_INLINE void philox_quad_generic(uint64_t b0, const uint32_t *restrict ks, uint32_t *restrict words)
{
    for (int j = 0; j < 4; j++)
        philox_group_generic(b0 + (uint64_t)j * NBLK, ks, words + j * GW);
}

#if IR_X86_VARIANTS
IR_AVX2 IR_INLINE void philox_quad_avx2(uint64_t b0, const uint32_t *restrict ks, uint32_t *restrict words)
{
    for (int j = 0; j < 4; j++)
        philox_group_avx2(b0 + (uint64_t)j * NBLK, ks, words + j * GW);
}
#endif

/* ------------------------------------------------------------------------------------------ */
/* Portable float32 log and erfinv (constants: schema/PORTABLE_RNG.md)                          */
/* ------------------------------------------------------------------------------------------ */

IR_INLINE uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, sizeof u); return u; }
IR_INLINE float u2f(uint32_t u) { float f; memcpy(&f, &u, sizeof f); return f; }

#define LOG_C1 0x1.55555cp-1f
#define LOG_C2 0x1.997c26p-2f
#define LOG_C3 0x1.2ee78ap-2f
#define LN2_F 0x1.62e430p-1f

/*
 * The portable log of y * 2^-eoff, for a positive normal float y: exponent/mantissa split with
 * the mantissa m in [sqrt(1/2), sqrt(2)), f = m - 1, s = f/(2+f), log(1+f) = f - s*(f - R(s*s)),
 * plus e*ln2.  Error below 1.1 ulp.  (eoff lets a caller pass y already scaled by a power of two: the
 * result is the log of the unscaled value, bit for bit.)
 */
IR_INLINE float log_core_e(float y, int32_t eoff)
{
    uint32_t ix = f2u(y) + (UINT32_C(0x3f800000) - UINT32_C(0x3f3504f3));
    int32_t e = (int32_t)(ix >> 23) - 127 - eoff;
    float m = u2f((ix & UINT32_C(0x007fffff)) + UINT32_C(0x3f3504f3));
    float f = m - 1.0f;
    float d = 2.0f + f;
    float s = f / d;
    float z = s * s;
    float r = LOG_C3;
    r = r * z;
    r = r + LOG_C2;
    r = r * z;
    r = r + LOG_C1;
    r = r * z;
    float t = f - r;
    t = s * t;
    float l1p = f - t;
    float ef = (float)e;
    float el = ef * LN2_F;
    return l1p + el;
}

/* The full portable log: subnormals, zero, negatives, infinity and NaN as well. */
IR_INLINE float log_full(float y)
{
    int tiny = y < 0x1p-126f;
    float ys = tiny ? y * 0x1p23f : y;
    float res = log_core_e(ys, tiny ? 23 : 0);
    float special = (y == 0.0f) ? -__builtin_inff() : ((y == __builtin_inff()) ? __builtin_inff() : u2f(0x7fc00000u));
    return (y > 0.0f && y < __builtin_inff()) ? res : special;
}

/*
 * The portable square root: torch's CPU sqrt is not correctly rounded (it differs from IEEE sqrt
 * in about 15% of float32 inputs), so the specification defines its own from + / * only: a
 * first guess from halving the bit pattern, then three Heron steps y = (y + w/y) * 0.5.  Within
 * 1 ulp for the positive normal w it is used on; other inputs give unspecified values.
 */
IR_INLINE float psqrt(float w)
{
    float y = u2f((f2u(w) >> 1) + UINT32_C(0x1fc00000));
    y = (y + w / y) * 0.5f;
    y = (y + w / y) * 0.5f;
    y = (y + w / y) * 0.5f;
    return y;
}

/* Horner's rule, c[0] + t*(c[1] + ...), one rounding per operation. */
IR_INLINE float horner(const float *c, int n, float t)
{
    float p = c[n - 1];
    for (int i = n - 2; i >= 0; i--) {
        p = p * t;
        p = p + c[i];
    }
    return p;
}

/* erfinv(x)/x: in t = w - 5/2 where w < 5, else in q = psqrt(w) - 7/2. */
#define ERF_SPLIT 5.0f
static const float ERF_C[10] = {
    0x1.805c5ep+0f, 0x1.f91e8ap-3f, -0x1.11c4ecp-8f, -0x1.486616p-10f, 0x1.c9e6c8p-13f,
    -0x1.4d15a4p-18f, -0x1.d0c1a0p-19f, 0x1.f48beap-22f, 0x1.8f2230p-26f, -0x1.2e0eb6p-27f,
};
static const float ERF_T[11] = {
    0x1.aaf132p+1f, 0x1.01e2f2p+0f, 0x1.ad60eep-9f, -0x1.0f326ap-9f, 0x1.2033b8p-10f,
    -0x1.57d9a0p-11f, 0x1.b5a60ap-12f, -0x1.1685f0p-12f, 0x1.83f3c0p-14f, 0x1.abb418p-16f,
    -0x1.6623f2p-16f,
};
IR_INLINE float erf_central(float w) { return horner(ERF_C, 10, w - 2.5f); }
IR_INLINE float erf_tail(float w) { return horner(ERF_T, 11, psqrt(w) - 3.5f); }

/* sqrt(2)*erfinv(x)/x for the normal: in t = w - 3 where w < 6, else in q = psqrt(w) - 7/2. */
#define NRM_SPLIT 6.0f
static const float NRM_C[8] = {
    0x1.25e47ep+1f, 0x1.5deb84p-2f, -0x1.09f950p-7f, -0x1.36b13ap-10f,
    0x1.22989ep-12f, -0x1.1ba22cp-16f, -0x1.757b26p-19f, 0x1.ff5cf0p-22f,
};
static const float NRM_T[9] = {
    0x1.2de4c8p+2f, 0x1.6cb4c0p+0f, 0x1.302362p-8f, -0x1.7c0998p-9f, 0x1.8bc6bcp-10f,
    -0x1.08ea90p-10f, 0x1.67e03cp-11f, -0x1.265ddep-12f, 0x1.5e165ap-15f,
};
IR_INLINE float nrm_central(float w) { return horner(NRM_C, 8, w - 3.0f); }
IR_INLINE float nrm_tail(float w) { return horner(NRM_T, 9, psqrt(w) - 3.5f); }

/* where ? a : b, with integer masks (a store the vectoriser never turns into a conditional one). */
IR_INLINE float select_f32(int where, float a, float b)
{
    uint32_t mask = (uint32_t)0 - (uint32_t)(where != 0);
    return u2f((f2u(a) & mask) | (f2u(b) & ~mask));
}

/* ------------------------------------------------------------------------------------------ */
/* Samplers: GW words -> GW float32 values                                                     */
/* ------------------------------------------------------------------------------------------ */

enum { K_UNIFORM = 0, K_NORMAL = 1, K_BERNOULLI = 2, K_EXPONENTIAL = 3 };

IR_INLINE float unit24(uint32_t w) { return (float)(int32_t)(w >> 8) * 0x1p-24f; }

IR_INLINE void tf_uniform(const uint32_t *restrict w, float *restrict dst, float low, float range)
{
    for (int i = 0; i < GW; i++) {
        float u = unit24(w[i]);
        float v = u * range;
        dst[i] = v + low;
    }
}

IR_INLINE void tf_bernoulli(const uint32_t *restrict w, float *restrict dst, float p)
{
    for (int i = 0; i < GW; i++)
        dst[i] = (unit24(w[i]) < p) ? 1.0f : 0.0f;
}

IR_INLINE void tf_exponential(const uint32_t *restrict w, float *restrict dst, float beta)
{
    for (int i = 0; i < GW; i++) {
        float v = 1.0f - unit24(w[i]);
        float l = 0.0f - log_core_e(v, 0);
        dst[i] = l * beta;
    }
}

/*
 * The normal transform.  With m2 = 2*(word & 0x7fffffff): 1-x = (m2+1)*2^-32 and
 * x = (2^32-1-m2)*2^-32, w = -log((1-x)*(1+x)), t = x*P(w) (central polynomial for w < 6, tail
 * polynomial otherwise), z = t with the word's top bit as sign, out = z*std + mean.
 * Every lane first gets the central polynomial's value; afterwards the 16-lane blocks that may
 * hold a tail lane (about 2% of them, found by an integer screen on the words) are recomputed and
 * only their lanes with w >= 6 replaced -- per lane the same value as a select between the two.
 */
IR_INLINE float normal_x(uint32_t word)
{
    uint32_t m2 = (word & UINT32_C(0x7fffffff)) << 1;
    return (float)(UINT32_C(0xffffffff) - m2) * 0x1p-32f;
}

IR_INLINE float normal_finish(float p, float x, uint32_t word, float mean, float std)
{
    float t = p * x;
    /* t > 0: flipping the sign bit is the negation -t. */
    float z = u2f(f2u(t) ^ (word & UINT32_C(0x80000000)));
    z = z * std;
    return z + mean;
}

IR_INLINE float normal_w(uint32_t word, float x)
{
    uint32_t m2 = (word & UINT32_C(0x7fffffff)) << 1;
    float op = 1.0f + x;
    /* (m2+1) * (1+x) is (1-x)*(1+x) scaled by 2^32 exactly; log_core_e undoes the scaling. */
    float y = (float)(m2 + 1u) * op;
    return 0.0f - log_core_e(y, 32);
}

/* Central pass: every lane as if w < 6.  Written as short passes over the 64 lanes, which keeps
 * several independent vectors in flight (one long fused chain per vector runs latency-bound). */
IR_INLINE void normal_central(const uint32_t *restrict w, float *restrict dst, float mean, float std)
{
    float xv[GW], wv[GW], pv[GW];
    for (int i = 0; i < GW; i++) {
        xv[i] = normal_x(w[i]);
        wv[i] = normal_w(w[i], xv[i]);
    }
    for (int i = 0; i < GW; i++)
        pv[i] = nrm_central(wv[i]);
    for (int i = 0; i < GW; i++)
        dst[i] = normal_finish(pv[i], xv[i], w[i], mean, std);
}

/*
 * Conservative screen for the tail: a lane can have w >= 6 only if (word & 0x7fffffff) < 2750000
 * (otherwise 1-x >= 2*2750000/2^32, so (1-x)(1+x) >= 0.00256 and w <= 5.97: the margin dwarfs
 * any rounding).  Tested per 16 lanes, about 2% of which have a candidate.
 */
#define NRM_SCREEN UINT32_C(2750000)
IR_INLINE int normal_may_need_tail(const uint32_t *restrict w, int n)
{
    uint32_t lowest = UINT32_C(0xffffffff);
    for (int i = 0; i < n; i++) {
        uint32_t m = w[i] & UINT32_C(0x7fffffff);
        lowest = m < lowest ? m : lowest;
    }
    return lowest < NRM_SCREEN;
}

/* Tail pass over 16 lanes: lanes with w >= 6 get the tail polynomial's value; the others keep
 * theirs (the same per-lane result as selecting between the two polynomials). */
IR_INLINE void normal_fix_tail16(const uint32_t *restrict w, float *restrict dst, float mean, float std)
{
    IR_NOUNROLL
    for (int i = 0; i < 16; i++) {
        float x = normal_x(w[i]);
        float wi = normal_w(w[i], x);
        float v = normal_finish(nrm_tail(wi), x, w[i], mean, std);
        dst[i] = select_f32(wi < NRM_SPLIT, dst[i], v);
    }
}

IR_INLINE void normal_fix_tails(const uint32_t *restrict w, float *restrict dst, float mean, float std)
{
    for (int s = 0; s < GW; s += 16) {
        if (normal_may_need_tail(w + s, 16))
            normal_fix_tail16(w + s, dst + s, mean, std);
    }
}

IR_INLINE void tf_normal(const uint32_t *restrict w, float *restrict dst, float mean, float std)
{
    normal_central(w, dst, mean, std);
    if (normal_may_need_tail(w, GW))
        normal_fix_tails(w, dst, mean, std);
}

/*
 * normal_central over L*K lanes with L-lane GCC vectors: 16 lanes (normal_central_wide, for AVX-512
 * and baseline x86-64; K a multiple of 4, at most 16) and 8 lanes (normal_central_v8, for AVX2,
 * which has 16 vector registers, and in which the 16-lane form, two registers per vector there,
 * spills most of its state).  Written step-major (each step for all K vectors before the next).
 * Per lane these are the same IEEE binary32 operations as normal_x / normal_w / log_core_e /
 * nrm_central / normal_finish, in the same order and with the same constants, with one exact
 * shortcut: t = w - 3 = (0 - l) - 3 is computed as (-3) - l (0 - l is exact, so both round
 * -l - 3 once).  Only the interleaving of independent lanes differs, so that the out-of-order core
 * has K independent chains in flight instead of waiting on the latency of a few long ones.  (GCC 12
 * re-sorts much of it into per-vector chains; forcing the step order with empty asm barriers
 * measured no faster on Zen 5, and neither did K = 4, 6, 12 or 16 for the 16-lane form.)
 */
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 9)   /* __builtin_convertvector */
#define IR_WIDE_NORMAL 1
typedef float v16f __attribute__((vector_size(64)));
typedef uint32_t v16u __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));
typedef float v8f __attribute__((vector_size(32)));
typedef uint32_t v8u __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

#define IR_EACH(K) _Pragma("GCC unroll 16") for (int k = 0; k < (K); k++)
#define IR_NRM_STEP(i) IR_EACH(K) a[k] = a[k] * r[k]; IR_EACH(K) a[k] = a[k] + NRM_C[i];

#define DEFINE_NORMAL_CENTRAL(NAME, L, VF, VU, VI)                                                        \
IR_INLINE void NAME(const uint32_t *restrict w, float *restrict dst, float mean, float std, const int K) \
{                                                                                                        \
    VU m2[16];                                                                                           \
    VF x[16], a[16], b[16], c[16], e[16], r[16];                                                         \
    /* x = (2^32-1-m2) * 2^-32, y = (m2+1) * (1+x) */                                                    \
    IR_EACH(K) {                                                                                         \
        VU wk;                                                                                           \
        memcpy(&wk, w + L * k, sizeof wk);                                                               \
        m2[k] = wk << 1;                                                                                 \
    }                                                                                                    \
    IR_EACH(K) x[k] = __builtin_convertvector(~m2[k], VF) * 0x1p-32f;                                    \
    IR_EACH(K) a[k] = x[k] + 1.0f;                                                                       \
    IR_EACH(K) a[k] = __builtin_convertvector(m2[k] + 1u, VF) * a[k];   /* a = y */                      \
    /* log_core_e(y, 32): e in b, f in a */                                                              \
    IR_EACH(K) {                                                                                         \
        VU ix = (VU)a[k] + (UINT32_C(0x3f800000) - UINT32_C(0x3f3504f3));                                \
        VI ei = (VI)(ix >> 23) - (127 + 32);                                                             \
        b[k] = __builtin_convertvector(ei, VF);                                                          \
        a[k] = (VF)((ix & UINT32_C(0x007fffff)) + UINT32_C(0x3f3504f3));                                 \
    }                                                                                                    \
    IR_EACH(K) a[k] = a[k] - 1.0f;                        /* f */                                        \
    IR_EACH(K) c[k] = 2.0f + a[k];                        /* d */                                        \
    IR_EACH(K) c[k] = a[k] / c[k];                        /* s */                                        \
    IR_EACH(K) e[k] = c[k] * c[k];                        /* z */                                        \
    IR_EACH(K) b[k] = b[k] * LN2_F;                       /* el */                                       \
    IR_EACH(K) r[k] = LOG_C3 * e[k];                                                                     \
    IR_EACH(K) r[k] = r[k] + LOG_C2;                                                                     \
    IR_EACH(K) r[k] = r[k] * e[k];                                                                       \
    IR_EACH(K) r[k] = r[k] + LOG_C1;                                                                     \
    IR_EACH(K) r[k] = r[k] * e[k];                                                                       \
    IR_EACH(K) r[k] = a[k] - r[k];                        /* t = f - r */                                \
    IR_EACH(K) r[k] = c[k] * r[k];                        /* t = s * t */                                \
    IR_EACH(K) r[k] = a[k] - r[k];                        /* l1p */                                      \
    IR_EACH(K) r[k] = r[k] + b[k];                        /* log */                                      \
    IR_EACH(K) r[k] = -3.0f - r[k];                       /* t = w - 3 */                                \
    IR_EACH(K) a[k] = r[k] * NRM_C[7];                                                                   \
    IR_EACH(K) a[k] = a[k] + NRM_C[6];                                                                   \
    IR_NRM_STEP(5) IR_NRM_STEP(4) IR_NRM_STEP(3) IR_NRM_STEP(2) IR_NRM_STEP(1) IR_NRM_STEP(0)            \
    /* finish */                                                                                         \
    IR_EACH(K) a[k] = a[k] * x[k];                                                                       \
    IR_EACH(K) {                                                                                         \
        VU wk;                                                                                           \
        memcpy(&wk, w + L * k, sizeof wk);                                                               \
        a[k] = (VF)((VU)a[k] ^ (wk & UINT32_C(0x80000000)));                                             \
    }                                                                                                    \
    IR_EACH(K) a[k] = a[k] * std;                                                                        \
    IR_EACH(K) {                                                                                         \
        VF o = a[k] + mean;                                                                              \
        memcpy(dst + L * k, &o, sizeof o);                                                               \
    }                                                                                                    \
}

DEFINE_NORMAL_CENTRAL(normal_central_wide, 16, v16f, v16u, v16i)
DEFINE_NORMAL_CENTRAL(normal_central_v8, 8, v8f, v8u, v8i)
#else
#define IR_WIDE_NORMAL 0
IR_INLINE void normal_central_wide(const uint32_t *restrict w, float *restrict dst, float mean, float std, const int K)
{
    for (int k = 0; k < K; k += 4)
        normal_central(w + 16 * k, dst + 16 * k, mean, std);
}
#endif

/* The central pass over n lanes (a multiple of 64): the 16-lane form for AVX-512 and baseline
 * x86-64 (128 lanes at a time), the 8-lane form for AVX2 (96 lanes at a time, then 32: 12 vectors
 * in flight measured 5% faster on Zen 5 than 8 or 16, although most of them live on the stack). */
IR_INLINE void normal_central_n_wide(const uint32_t *restrict w, float *restrict dst, float mean, float std, int n)
{
    int i = 0;
    for (; i + 128 <= n; i += 128)
        normal_central_wide(w + i, dst + i, mean, std, 8);
    if (i < n)
        normal_central_wide(w + i, dst + i, mean, std, 4);
}

IR_INLINE void normal_central_n_v8(const uint32_t *restrict w, float *restrict dst, float mean, float std, int n)
{
#if IR_WIDE_NORMAL
    int i = 0;
    for (; i + 96 <= n; i += 96)
        normal_central_v8(w + i, dst + i, mean, std, 12);
    for (; i < n; i += 32)
        normal_central_v8(w + i, dst + i, mean, std, 4);
#else
    normal_central_n_wide(w, dst, mean, std, n);
#endif
}

IR_INLINE void tf_randint(const uint32_t *restrict w, int64_t *restrict dst, int64_t low, uint64_t range)
{
    for (int i = 0; i < GW; i++)
        dst[i] = low + (int64_t)(((uint64_t)w[i] * range) >> 32);
}

/* ------------------------------------------------------------------------------------------ */
/* Output conversions (IEEE round-to-nearest-even, as torch's copy_)                           */
/* ------------------------------------------------------------------------------------------ */

enum { D_F32 = 0, D_F64 = 1, D_BF16 = 2, D_F16 = 3 };

/* Both conversions are branch-free (selects only) so that the store loops vectorise. */
IR_INLINE uint16_t to_bf16(float f)
{
    uint32_t u = f2u(f);
    uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    return (uint16_t)(((u & 0x7fffffffu) > 0x7f800000u) ? 0x7fc0u : r);   /* NaN: torch's 0x7fc0 */
}

IR_INLINE uint16_t to_f16(float f)
{
    uint32_t u = f2u(f);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t a = u & 0x7fffffffu;
    /* Normal halves (a >= 2^-14): round the mantissa to 10 bits, rebias the exponent by 112. */
    uint32_t normal = (a + 0xfffu + ((a >> 13) & 1u) - 0x38000000u) >> 13;
    /* Subnormal halves and zero (a < 2^-14): adding 0.5 rounds to units of 2^-24 (ties to even). */
    uint32_t subnormal = f2u(u2f(a) + 0.5f) - 0x3f000000u;
    uint32_t h = a < 0x38800000u ? subnormal : normal;
    h = a >= 0x477ff000u ? 0x7c00u : h;                          /* rounds to or is infinity */
    h = a > 0x7f800000u ? (0x7e00u | ((a >> 13) & 0x3ffu)) : h;   /* NaN stays NaN (quiet) */
    return (uint16_t)(sign | h);
}

IR_INLINE void store_f32(const float *restrict v, void *dst, int dtype, Py_ssize_t i0, int n)
{
    switch (dtype) {
    case D_F32: memcpy((float *)dst + i0, v, (size_t)n * sizeof(float)); break;
    case D_F64: { double *d = (double *)dst + i0; for (int i = 0; i < n; i++) d[i] = (double)v[i]; } break;
    case D_BF16: { uint16_t *d = (uint16_t *)dst + i0; for (int i = 0; i < n; i++) d[i] = to_bf16(v[i]); } break;
    default: { uint16_t *d = (uint16_t *)dst + i0; for (int i = 0; i < n; i++) d[i] = to_f16(v[i]); } break;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Drivers                                                                                     */
/* ------------------------------------------------------------------------------------------ */

typedef void (*philox_fn)(uint64_t, const uint32_t *restrict, uint32_t *restrict);

IR_INLINE void transform_group(int kind, const uint32_t *w, float *dst, float a, float b)
{
    switch (kind) {
    case K_UNIFORM: tf_uniform(w, dst, a, b); break;
    case K_NORMAL: tf_normal(w, dst, a, b); break;
    case K_BERNOULLI: tf_bernoulli(w, dst, a); break;
    default: tf_exponential(w, dst, a); break;
    }
}

/* Visit the groups covering words first .. first+n-1: for each, the group's words and the part of
 * it (offset off, cnt words) that lands at output index i. */
#define FOR_EACH_GROUP(PHILOX, KS, FIRST, N, WORDS, BODY)                     \
    do {                                                                      \
        Py_ssize_t i = 0;                                                     \
        while (i < (N)) {                                                     \
            uint64_t word_ = (FIRST) + (uint64_t)i;                           \
            int off = (int)(word_ % GW);                                      \
            int cnt = GW - off;                                               \
            if ((Py_ssize_t)cnt > (N) - i)                                    \
                cnt = (int)((N) - i);                                         \
            PHILOX((word_ / GW) * NBLK, (KS), (WORDS));                       \
            BODY                                                              \
            i += cnt;                                                         \
        }                                                                     \
    } while (0)

#define SBG 16 /* groups per superblock: 1024 words (4 KiB) */

/*
 * Superblock loops: ng (<= SBG) whole groups from block b0 on, float32 values to d.  Each kind's
 * loop is instantiated as its own (non-inlined) function per instruction-set variant, so that its
 * registers and loop invariants are not shared with unrelated code.  The normal's rare tail
 * fix-ups run after the whole superblock, through fix (also out of line).
 */
typedef void (*fix_fn)(const uint32_t *restrict, float *restrict, float, float);

typedef void (*central_fn)(const uint32_t *restrict, float *restrict, float, float, int);

IR_INLINE void sb_normal(philox_fn philox, philox_fn philox4, central_fn central, fix_fn fix, uint64_t b0,
                         const uint32_t *ks, uint32_t *restrict words, float *restrict d, int ng, float a, float b)
{
    /* All the superblock's words first (four groups per call where possible), then the central
     * pass two groups (8 vectors) at a time: wide independent work for the out-of-order core. */
    int g = 0;
    for (; g + 4 <= ng; g += 4)
        philox4(b0 + (uint64_t)g * NBLK, ks, words + g * GW);
    for (; g < ng; g++)
        philox(b0 + (uint64_t)g * NBLK, ks, words + g * GW);
    central(words, d, a, b, ng * GW);
    for (int g = 0; g < ng; g++) {
        if (normal_may_need_tail(words + g * GW, GW))
            fix(words + g * GW, d + g * GW, a, b);
    }
}

IR_INLINE void sb_uniform(philox_fn philox, uint64_t b0, const uint32_t *ks, uint32_t *restrict words,
                          float *restrict d, int ng, float a, float b)
{
    for (int g = 0; g < ng; g++) {
        philox(b0 + (uint64_t)g * NBLK, ks, words);
        tf_uniform(words, d + g * GW, a, b);
    }
}

IR_INLINE void sb_bernoulli(philox_fn philox, uint64_t b0, const uint32_t *ks, uint32_t *restrict words,
                            float *restrict d, int ng, float a)
{
    for (int g = 0; g < ng; g++) {
        philox(b0 + (uint64_t)g * NBLK, ks, words);
        tf_bernoulli(words, d + g * GW, a);
    }
}

IR_INLINE void sb_exponential(philox_fn philox, uint64_t b0, const uint32_t *ks, uint32_t *restrict words,
                              float *restrict d, int ng, float a)
{
    for (int g = 0; g < ng; g++) {
        philox(b0 + (uint64_t)g * NBLK, ks, words);
        tf_exponential(words, d + g * GW, a);
    }
}

/* One partial group: words first+i .. first+i+cnt-1 (all in one group) to out[i ..]. */
IR_INLINE void edge_impl(philox_fn philox, int kind, void *out, int dtype, Py_ssize_t i, int cnt, const uint32_t *ks,
                         uint64_t word, float a, float b)
{
    uint32_t words[GW];
    float vals[GW];
    philox((word / GW) * NBLK, ks, words);
    transform_group(kind, words, vals, a, b);
    store_f32(vals + (int)(word % GW), out, dtype, i, cnt);
}

typedef struct {
    void (*normal)(uint64_t, const uint32_t *, uint32_t *restrict, float *restrict, int, float, float);
    void (*uniform)(uint64_t, const uint32_t *, uint32_t *restrict, float *restrict, int, float, float);
    void (*bernoulli)(uint64_t, const uint32_t *, uint32_t *restrict, float *restrict, int, float, float);
    void (*exponential)(uint64_t, const uint32_t *, uint32_t *restrict, float *restrict, int, float, float);
    void (*edge)(int, void *, int, Py_ssize_t, int, const uint32_t *, uint64_t, float, float);
    void (*store)(const float *restrict, void *, int, Py_ssize_t, int);
} fill_parts_t;

/* out[i] = sample of word first+i for 0 <= i < n, stored as dtype: group-aligned runs by
 * superblocks (float32 output in place, other dtypes through a buffer), partial groups at
 * either end one at a time. */
IR_INLINE void fill_impl(const fill_parts_t *parts, int kind, void *out, int dtype, Py_ssize_t n,
                         const uint32_t *ks, uint64_t first, float a, float b)
{
    uint32_t words[SBG * GW];
    float tmp[SBG * GW];
    Py_ssize_t i = 0;
    while (i < n) {
        uint64_t word = first + (uint64_t)i;
        int off = (int)(word % GW);
        if (off != 0 || n - i < GW) {
            int cnt = GW - off;
            if ((Py_ssize_t)cnt > n - i)
                cnt = (int)(n - i);
            parts->edge(kind, out, dtype, i, cnt, ks, word, a, b);
            i += cnt;
            continue;
        }
        Py_ssize_t ng = (n - i) / GW;
        if (ng > SBG)
            ng = SBG;
        uint64_t b0 = (word / GW) * NBLK;
        float *d = dtype == D_F32 ? (float *)out + i : tmp;
        switch (kind) {
        case K_NORMAL: parts->normal(b0, ks, words, d, (int)ng, a, b); break;
        case K_UNIFORM: parts->uniform(b0, ks, words, d, (int)ng, a, b); break;
        case K_BERNOULLI: parts->bernoulli(b0, ks, words, d, (int)ng, a, b); break;
        default: parts->exponential(b0, ks, words, d, (int)ng, a, b); break;
        }
        if (dtype != D_F32)
            parts->store(tmp, out, dtype, i, (int)(ng * GW));
        i += ng * GW;
    }
}

/* Randint: int64 output (as_float == 0) or float32 output (as_float == 1). */
IR_INLINE void randint_impl(philox_fn philox, void *out, int as_float, Py_ssize_t n, const uint32_t *ks,
                            uint64_t first, int64_t low, uint64_t range)
{
    uint32_t words[GW];
    int64_t vals[GW];
    FOR_EACH_GROUP(philox, ks, first, n, words, {
        tf_randint(words, vals, low, range);
        if (as_float) {
            float *d = (float *)out + i;
            for (int j = 0; j < cnt; j++)
                d[j] = (float)vals[off + j];
        } else {
            memcpy((int64_t *)out + i, vals + off, (size_t)cnt * sizeof(int64_t));
        }
    });
}

/* Raw generator words first .. first+n-1. */
IR_INLINE void words_impl(philox_fn philox, uint32_t *out, Py_ssize_t n, const uint32_t *ks, uint64_t first)
{
    uint32_t words[GW];
    FOR_EACH_GROUP(philox, ks, first, n, words, {
        memcpy(out + i, words + off, (size_t)cnt * sizeof(uint32_t));
    });
}

IR_INLINE float erfinv_finish(float p, float x)
{
    float r = p * x;
    float ax = __builtin_fabsf(x);
    float special = (ax == 1.0f) ? x * __builtin_inff() : u2f(0x7fc00000u);
    return (ax < 1.0f) ? r : special;
}

IR_INLINE void erfinv_block(const float *restrict src, float *restrict dst)
{
    float wv[GW];
    int tail = 0;
    for (int i = 0; i < GW; i++) {
        float x = src[i];
        float om = 1.0f - x;
        float op = 1.0f + x;
        float wi = 0.0f - log_core_e(om * op, 0);
        wv[i] = wi;
        tail |= !(wi < ERF_SPLIT);
        dst[i] = erfinv_finish(erf_central(wi), x);
    }
    if (tail) {
        for (int i = 0; i < GW; i++) {
            float v = erfinv_finish(erf_tail(wv[i]), src[i]);
            dst[i] = select_f32(wv[i] < ERF_SPLIT, dst[i], v);
        }
    }
}

/* dst[i] = erfinv(src[i]) (float32; dst may equal src). */
IR_INLINE void erfinv_impl(const float *src, float *dst, Py_ssize_t n)
{
    float in[GW], res[GW];
    Py_ssize_t i = 0;
    for (; i + GW <= n; i += GW) {
        memcpy(in, src + i, sizeof in);
        erfinv_block(in, res);
        memcpy(dst + i, res, sizeof res);
    }
    if (i < n) {
        int rest = (int)(n - i);
        memset(in, 0, sizeof in);
        memcpy(in, src + i, (size_t)rest * sizeof(float));
        erfinv_block(in, res);
        memcpy(dst + i, res, (size_t)rest * sizeof(float));
    }
}

/* dst[i] = log(src[i]) (float32; dst may equal src). */
IR_INLINE void log_impl(const float *src, float *dst, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        dst[i] = log_full(src[i]);
}

/* One instantiation of every driver per instruction-set variant. */
typedef struct {
    const char *name;
    void (*fill)(int, void *, int, Py_ssize_t, const uint32_t *, uint64_t, float, float);
    void (*randint)(void *, int, Py_ssize_t, const uint32_t *, uint64_t, int64_t, uint64_t);
    void (*words)(uint32_t *, Py_ssize_t, const uint32_t *, uint64_t);
    void (*erfinv)(const float *, float *, Py_ssize_t);
    void (*log)(const float *, float *, Py_ssize_t);
} variant_t;

#define IR_NOINLINE __attribute__((noinline))
#define DEFINE_VARIANT(SUFFIX, ATTR, PHILOX, PHILOX4, CENTRAL)                                                           \
    ATTR IR_NOINLINE static void fixn_##SUFFIX(const uint32_t *restrict w, float *restrict d, float a, float b) \
    { normal_fix_tails(w, d, a, b); }                                                                      \
    ATTR IR_NOINLINE static void sbn_##SUFFIX(uint64_t b0, const uint32_t *ks, uint32_t *restrict w,       \
                                              float *restrict d, int ng, float a, float b)                 \
    { sb_normal(PHILOX, PHILOX4, CENTRAL, fixn_##SUFFIX, b0, ks, w, d, ng, a, b); }                                 \
    ATTR IR_NOINLINE static void sbu_##SUFFIX(uint64_t b0, const uint32_t *ks, uint32_t *restrict w,       \
                                              float *restrict d, int ng, float a, float b)                 \
    { sb_uniform(PHILOX, b0, ks, w, d, ng, a, b); }                                                        \
    ATTR IR_NOINLINE static void sbb_##SUFFIX(uint64_t b0, const uint32_t *ks, uint32_t *restrict w,       \
                                              float *restrict d, int ng, float a, float b)                 \
    { (void)b; sb_bernoulli(PHILOX, b0, ks, w, d, ng, a); }                                                \
    ATTR IR_NOINLINE static void sbe_##SUFFIX(uint64_t b0, const uint32_t *ks, uint32_t *restrict w,       \
                                              float *restrict d, int ng, float a, float b)                 \
    { (void)b; sb_exponential(PHILOX, b0, ks, w, d, ng, a); }                                              \
    ATTR IR_NOINLINE static void edge_##SUFFIX(int kind, void *out, int dtype, Py_ssize_t i, int cnt,     \
                                               const uint32_t *ks, uint64_t word, float a, float b)        \
    { edge_impl(PHILOX, kind, out, dtype, i, cnt, ks, word, a, b); }                                       \
    ATTR IR_NOINLINE static void store_##SUFFIX(const float *restrict v, void *out, int dtype,            \
                                                Py_ssize_t i0, int n)                                      \
    { store_f32(v, out, dtype, i0, n); }                                                                   \
    static const fill_parts_t parts_##SUFFIX = {sbn_##SUFFIX, sbu_##SUFFIX, sbb_##SUFFIX, sbe_##SUFFIX,    \
                                                edge_##SUFFIX, store_##SUFFIX};                            \
    ATTR static void fill_##SUFFIX(int kind, void *out, int dtype, Py_ssize_t n, const uint32_t *ks,        \
                                   uint64_t first, float a, float b)                                      \
    { fill_impl(&parts_##SUFFIX, kind, out, dtype, n, ks, first, a, b); }                                  \
    ATTR static void randint_##SUFFIX(void *out, int as_float, Py_ssize_t n, const uint32_t *ks,            \
                                      uint64_t first, int64_t low, uint64_t range)                        \
    { randint_impl(PHILOX, out, as_float, n, ks, first, low, range); }                                     \
    ATTR static void words_##SUFFIX(uint32_t *out, Py_ssize_t n, const uint32_t *ks, uint64_t first)        \
    { words_impl(PHILOX, out, n, ks, first); }                                                             \
    ATTR static void erfinv_##SUFFIX(const float *src, float *dst, Py_ssize_t n)                            \
    { erfinv_impl(src, dst, n); }                                                                          \
    ATTR static void log_##SUFFIX(const float *src, float *dst, Py_ssize_t n) { log_impl(src, dst, n); }    \
    static const variant_t variant_##SUFFIX = {#SUFFIX, fill_##SUFFIX, randint_##SUFFIX, words_##SUFFIX,   \
                                               erfinv_##SUFFIX, log_##SUFFIX};

#define IR_NO_ATTR
DEFINE_VARIANT(generic, IR_NO_ATTR, philox_group_generic, philox_quad_generic, normal_central_n_wide)
#if IR_X86_VARIANTS
DEFINE_VARIANT(avx2, IR_AVX2, philox_group_avx2, philox_quad_avx2, normal_central_n_v8)
DEFINE_VARIANT(avx512f, IR_AVX512, philox_group_avx512, philox_quad_avx512, normal_central_n_wide)
#endif

static const variant_t *active = &variant_generic;

static const variant_t *variant_by_name(const char *name)
{
    if (strcmp(name, "generic") == 0)
        return &variant_generic;
#if IR_X86_VARIANTS
    __builtin_cpu_init();
    if (strcmp(name, "avx2") == 0 && __builtin_cpu_supports("avx2"))
        return &variant_avx2;
    if (strcmp(name, "avx512f") == 0 && __builtin_cpu_supports("avx512f"))
        return &variant_avx512f;
#endif
    return NULL;
}

static const variant_t *best_variant(void)
{
#if IR_X86_VARIANTS
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f"))
        return &variant_avx512f;
    if (__builtin_cpu_supports("avx2"))
        return &variant_avx2;
#endif
    return &variant_generic;
}

/* ------------------------------------------------------------------------------------------ */
/* Python bindings                                                                             */
/* ------------------------------------------------------------------------------------------ */

static int parse_key(unsigned long long k0, unsigned long long k1, uint32_t ks[20])
{
    if (k0 > 0xffffffffULL || k1 > 0xffffffffULL) {
        PyErr_SetString(PyExc_ValueError, "key words must be 32-bit unsigned integers");
        return -1;
    }
    round_keys((uint32_t)k0, (uint32_t)k1, ks);
    return 0;
}

static int check_extent(Py_ssize_t n, unsigned long long first)
{
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "negative length");
        return -1;
    }
    if (n > 0 && (unsigned long long)(n - 1) > ~0ULL - first) {
        PyErr_SetString(PyExc_ValueError, "word index range exceeds 2**64");
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(fill_doc,
"fill(kind, out_ptr, dtype, n, key0, key1, first, a, b)\n--\n\n"
"Write the samples of words first .. first+n-1 to the contiguous buffer at out_ptr.\n"
"kind: 0 uniform (a=low32, b=range32), 1 normal (a=mean32, b=std32), 2 bernoulli (a=p32),\n"
"3 exponential (a=1/lambda as float32); a and b must be float32 values.\n"
"dtype: 0 float32, 1 float64, 2 bfloat16, 3 float16.");

static PyObject *py_fill(PyObject *self, PyObject *args)
{
    int kind, dtype;
    unsigned long long ptr, k0, k1, first;
    Py_ssize_t n;
    double a, b;
    uint32_t ks[20];
    const variant_t *v = active;
    (void)self;
    if (!PyArg_ParseTuple(args, "iKinKKKdd", &kind, &ptr, &dtype, &n, &k0, &k1, &first, &a, &b))
        return NULL;
    if (parse_key(k0, k1, ks) < 0 || check_extent(n, first) < 0)
        return NULL;
    if (kind < K_UNIFORM || kind > K_EXPONENTIAL || dtype < D_F32 || dtype > D_F16) {
        PyErr_SetString(PyExc_ValueError, "unknown kind or dtype code");
        return NULL;
    }
    if ((double)(float)a != a || (double)(float)b != b) {
        PyErr_SetString(PyExc_ValueError, "parameters must be exactly representable as float32");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    v->fill(kind, (void *)(uintptr_t)ptr, dtype, n, ks, (uint64_t)first, (float)a, (float)b);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

PyDoc_STRVAR(randint_doc,
"randint(out_ptr, as_float, n, key0, key1, first, low, range)\n--\n\n"
"Write low + ((word * range) >> 32) for words first .. first+n-1, as int64 (as_float false) or as\n"
"float32 (as_float true, round-to-nearest-even). 1 <= range <= 2**32; low + range <= 2**63.");

static PyObject *py_randint(PyObject *self, PyObject *args)
{
    unsigned long long ptr, k0, k1, first, range;
    int as_float;
    Py_ssize_t n;
    long long low;
    uint32_t ks[20];
    const variant_t *v = active;
    (void)self;
    if (!PyArg_ParseTuple(args, "KpnKKKLK", &ptr, &as_float, &n, &k0, &k1, &first, &low, &range))
        return NULL;
    if (parse_key(k0, k1, ks) < 0 || check_extent(n, first) < 0)
        return NULL;
    if (range < 1 || range > (1ULL << 32) || (low > 0 && range > (unsigned long long)(INT64_MAX - low) + 1ULL)) {
        PyErr_SetString(PyExc_ValueError, "range must be in [1, 2**32] and low + range <= 2**63");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    v->randint((void *)(uintptr_t)ptr, as_float, n, ks, (uint64_t)first, (int64_t)low, (uint64_t)range);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

PyDoc_STRVAR(words_doc,
"words(out_ptr, n, key0, key1, first)\n--\n\n"
"Write the raw 32-bit generator words first .. first+n-1 to the uint32 buffer at out_ptr.");

static PyObject *py_words(PyObject *self, PyObject *args)
{
    unsigned long long ptr, k0, k1, first;
    Py_ssize_t n;
    uint32_t ks[20];
    const variant_t *v = active;
    (void)self;
    if (!PyArg_ParseTuple(args, "KnKKK", &ptr, &n, &k0, &k1, &first))
        return NULL;
    if (parse_key(k0, k1, ks) < 0 || check_extent(n, first) < 0)
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    v->words((uint32_t *)(uintptr_t)ptr, n, ks, (uint64_t)first);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *unary(PyObject *args, int which)
{
    unsigned long long src, dst;
    Py_ssize_t n;
    const variant_t *v = active;
    if (!PyArg_ParseTuple(args, "KKn", &src, &dst, &n))
        return NULL;
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "negative length");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    (which ? v->log : v->erfinv)((const float *)(uintptr_t)src, (float *)(uintptr_t)dst, n);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

PyDoc_STRVAR(erfinv_doc, "erfinv(src_ptr, dst_ptr, n)\n--\n\nPortable float32 erfinv of n contiguous floats.");
static PyObject *py_erfinv(PyObject *self, PyObject *args) { (void)self; return unary(args, 0); }

PyDoc_STRVAR(log_doc, "log(src_ptr, dst_ptr, n)\n--\n\nPortable float32 natural log of n contiguous floats.");
static PyObject *py_log(PyObject *self, PyObject *args) { (void)self; return unary(args, 1); }

PyDoc_STRVAR(variant_doc,
"variant()\n--\n\nThe instruction-set variant in use: 'avx512f', 'avx2' or 'generic' (at import: the best\n"
"one the CPU runs, or the one the environment variable INITRECIPE_KERNEL_PATH names).");
static PyObject *py_variant(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    return PyUnicode_FromString(active->name);
}

PyDoc_STRVAR(set_variant_doc,
"set_variant(name)\n--\n\n"
"Use another instruction-set variant ('avx512f', 'avx2', 'generic' or 'best'); returns the\n"
"previous one's name. All variants compute the same bits; this exists for tests and benchmarks.\n"
"Not thread-safe with respect to calls in flight.");
static PyObject *py_set_variant(PyObject *self, PyObject *args)
{
    const char *name;
    (void)self;
    if (!PyArg_ParseTuple(args, "s", &name))
        return NULL;
    const variant_t *v = strcmp(name, "best") == 0 ? best_variant() : variant_by_name(name);
    if (v == NULL) {
        PyErr_Format(PyExc_ValueError, "variant %R is unknown or not supported by this CPU", PyTuple_GET_ITEM(args, 0));
        return NULL;
    }
    const char *previous = active->name;
    active = v;
    return PyUnicode_FromString(previous);
}

PyDoc_STRVAR(variants_doc, "variants()\n--\n\nThe variants this CPU can run, best first.");
static PyObject *py_variants(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    PyObject *list = PyList_New(0);
    if (list == NULL)
        return NULL;
    static const char *const names[] = {"avx512f", "avx2", "generic"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (variant_by_name(names[i]) == NULL)
            continue;
        PyObject *s = PyUnicode_FromString(names[i]);
        if (s == NULL || PyList_Append(list, s) < 0) {
            Py_XDECREF(s);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(s);
    }
    return list;
}

/* ------------------------------------------------------------------------------------------ */
/* Format 1.2 samplers (schema/PORTABLE_RNG.md §5.6, §6.6-6.9): scalar transforms over words    */
/* from the active variant's word generator.  Float32 output only; the caller casts.            */
/* ------------------------------------------------------------------------------------------ */

enum { KX_CAUCHY = 0, KX_LOG_NORMAL = 1, KX_GEOMETRIC = 2, KX_BERNOULLI_T = 3, KX_NORMAL_T = 4 };

static const float TAN_PI_C[7] = {
    0x1.921fb6p+1f, 0x1.4abb28p+3f, 0x1.4694e0p+5f, 0x1.424292p+7f, 0x1.6eaa36p+9f,
    0x1.a9f8e0p+9f, 0x1.aeefd6p+14f,
};
static const float EXP_C[8] = {
    0x1p+0f, 0x1p+0f, 0x1p-1f, 0x1.555556p-3f, 0x1.555556p-5f, 0x1.111112p-7f, 0x1.6c16c2p-10f, 0x1.a01a02p-13f,
};

static inline float x_pexp(float y)
{
    y = y < -0x1.ap+6f ? -0x1.ap+6f : y;
    float k = y * 0x1.715476p+0f;
    k = k + 0.5f;
    k = __builtin_floorf(k);
    float r = y - k * 0x1.62ep-1f;
    r = r - k * 0x1.0bfbe8p-15f;
    float p = horner(EXP_C, 8, r);
    int32_t n = (int32_t)k;
    int32_t n1 = n >> 1; /* arithmetic shift: floor(n / 2) */
    int32_t n2 = n - n1;
    p = p * u2f((uint32_t)(n1 + 127) << 23);
    return p * u2f((uint32_t)(n2 + 127) << 23);
}

static inline float x_cauchy(uint32_t word)
{
    uint32_t q = (word & UINT32_C(0x7fffffff)) >> 8;
    float s = (float)(int32_t)(2u * q + 1u) * 0x1p-25f;
    int near = s <= 0x1p-2f;
    float r = near ? s : 0x1p-1f - s;
    float z = r * r;
    float t = r * horner(TAN_PI_C, 7, z);
    float c = near ? 1.0f / t : t;
    return u2f(f2u(c) ^ (word & UINT32_C(0x80000000)));
}

static inline float x_saturate(float v, float limit)
{
    v = v < -limit ? -limit : v;
    return v > limit ? limit : v;
}

static void fill_ext_impl(const variant_t *v, int kind, float *out, Py_ssize_t n, const uint32_t *ks, uint64_t first,
                          float a, float b, float c, const float *src1, const float *src2)
{
    uint32_t words[SBG * GW];
    Py_ssize_t done = 0;
    while (done < n) {
        int m = (n - done) < (Py_ssize_t)(SBG * GW) ? (int)(n - done) : SBG * GW;
        float *d = out + done;
        if (kind == KX_LOG_NORMAL || kind == KX_NORMAL_T) {
            /* z from the normal sampler's own loops: z * 1 + 0 is z exactly (z is never 0). */
            v->fill(K_NORMAL, d, D_F32, m, ks, first + (uint64_t)done, 0.0f, 1.0f);
            if (kind == KX_LOG_NORMAL) {
                for (int i = 0; i < m; i++) {
                    float y = d[i] * b;
                    d[i] = x_saturate(x_pexp(y + a), c);
                }
            } else {
                for (int i = 0; i < m; i++) {
                    float y = d[i] * src2[done + i];
                    d[i] = x_saturate(y + src1[done + i], c);
                }
            }
            done += m;
            continue;
        }
        v->words(words, m, ks, first + (uint64_t)done);
        switch (kind) {
        case KX_CAUCHY:
            for (int i = 0; i < m; i++) {
                float x = x_cauchy(words[i]) * b;
                d[i] = x_saturate(x + a, c);
            }
            break;
        case KX_GEOMETRIC:
            for (int i = 0; i < m; i++) {
                float u = (float)(int32_t)(2u * (words[i] >> 9) + 1u) * 0x1p-24f;
                float q = log_core_e(u, 0) / a;
                d[i] = x_saturate(__builtin_ceilf(q), c);
            }
            break;
        default: /* KX_BERNOULLI_T */
            for (int i = 0; i < m; i++)
                d[i] = (unit24(words[i]) < src1[done + i]) ? 1.0f : 0.0f;
            break;
        }
        done += m;
    }
}

PyDoc_STRVAR(fill_ext_doc,
"fill_ext(kind, out_ptr, n, key0, key1, first, a, b, c, src1_ptr, src2_ptr)\n--\n\n"
"Write the float32 samples of words first .. first+n-1 to the float32 buffer at out_ptr.\n"
"kind: 0 cauchy (a=median32, b=sigma32), 1 log_normal (a=mean32, b=std32), 2 geometric\n"
"(a=log(1-p) as float32), 3 bernoulli with per-element p (src1: n float32), 4 normal with\n"
"per-element mean (src1) and std (src2); c: the largest finite value of the output dtype\n"
"(values are clamped to [-c, c]). a, b and c must be float32 values.");

static PyObject *py_fill_ext(PyObject *self, PyObject *args)
{
    int kind;
    unsigned long long ptr, k0, k1, first, src1, src2;
    Py_ssize_t n;
    double a, b, c;
    uint32_t ks[20];
    const variant_t *v = active;
    (void)self;
    if (!PyArg_ParseTuple(args, "iKnKKKdddKK", &kind, &ptr, &n, &k0, &k1, &first, &a, &b, &c, &src1, &src2))
        return NULL;
    if (parse_key(k0, k1, ks) < 0 || check_extent(n, first) < 0)
        return NULL;
    if (kind < KX_CAUCHY || kind > KX_NORMAL_T) {
        PyErr_SetString(PyExc_ValueError, "unknown kind code");
        return NULL;
    }
    if ((kind == KX_BERNOULLI_T && src1 == 0) || (kind == KX_NORMAL_T && (src1 == 0 || src2 == 0))) {
        PyErr_SetString(PyExc_ValueError, "this kind needs its parameter buffers");
        return NULL;
    }
    if ((double)(float)a != a || (double)(float)b != b || (double)(float)c != c) {
        PyErr_SetString(PyExc_ValueError, "parameters must be exactly representable as float32");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    fill_ext_impl(v, kind, (float *)(uintptr_t)ptr, n, ks, (uint64_t)first, (float)a, (float)b, (float)c,
                  (const float *)(uintptr_t)src1, (const float *)(uintptr_t)src2);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"fill", py_fill, METH_VARARGS, fill_doc},
    {"fill_ext", py_fill_ext, METH_VARARGS, fill_ext_doc},
    {"randint", py_randint, METH_VARARGS, randint_doc},
    {"words", py_words, METH_VARARGS, words_doc},
    {"erfinv", py_erfinv, METH_VARARGS, erfinv_doc},
    {"log", py_log, METH_VARARGS, log_doc},
    {"variant", py_variant, METH_NOARGS, variant_doc},
    {"set_variant", py_set_variant, METH_VARARGS, set_variant_doc},
    {"variants", py_variants, METH_NOARGS, variants_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "initrecipe.rng.portable._portable_kernel",
    "CPU kernels of initrecipe's portable random-number mode (see schema/PORTABLE_RNG.md).", -1, methods,
    NULL, NULL, NULL, NULL,
};

/*
 * INITRECIPE_KERNEL_PATH, read once at import: unset, empty or "best" picks the best variant the
 * CPU runs; "avx512f", "avx2" or "generic" forces that one.  A name that is not a variant, or one
 * this CPU cannot run, fails the import with a ValueError (initrecipe.rng.portable.samplers turns it into a
 * RecipeError): a forced path that silently ran another would mislabel every measurement.
 */
#define IR_PATH_ENV "INITRECIPE_KERNEL_PATH"
static int choose_variant_from_env(void)
{
    const char *forced = getenv(IR_PATH_ENV);
    active = best_variant();
    if (forced == NULL || forced[0] == '\0' || strcmp(forced, "best") == 0)
        return 0;
    const variant_t *v = variant_by_name(forced);
    if (v != NULL) {
        active = v;
        return 0;
    }
    int known = strcmp(forced, "avx512f") == 0 || strcmp(forced, "avx2") == 0;
    PyErr_Format(PyExc_ValueError,
                 "%s=%s: %s; set it to one of the paths this CPU runs (%s), to 'best', or unset it",
                 IR_PATH_ENV, forced, known ? "this CPU (or this build) cannot run that kernel path"
                                            : "not a kernel path (avx512f, avx2, generic or best)",
#if IR_X86_VARIANTS
                 __builtin_cpu_supports("avx512f") ? "avx512f, avx2, generic"
                 : __builtin_cpu_supports("avx2") ? "avx2, generic" : "generic"
#else
                 "generic"
#endif
    );
    return -1;
}

PyMODINIT_FUNC PyInit__portable_kernel(void)
{
    if (choose_variant_from_env() < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "ABI_VERSION", 1) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
