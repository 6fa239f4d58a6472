/*
 * cpu-kernels-avx512.c — AVX-512 (F/BW/VL, and VNNI where present) kernels
 * of the CPU backend.
 *
 * Contract: see cpu-kernels.h. Bit-identical to the scalar ref_q8 kernels:
 * integer block sums are exact, and the float part of each block term and
 * the accumulation are the same rounded operations in the canonical order as
 * cpu-ref.c (8 lanes, lane = block % 8; see cpu-kernels-avx2.c). What changes
 * from AVX2 is the integer work: two 32-byte blocks per 512-bit register,
 * u8 x s8 products by VPMADDUBSW + VPMADDWD (level avx512) or by one VPDPBUSD
 * (level avx512vnni).
 *
 * The block-dot body is written once in cpu-kernels-avx512-body.h and
 * included twice, once per target region, so the non-VNNI functions never
 * contain a VNNI instruction. f32 primitives come from the AVX2 table (the
 * canonical 8-lane order gains nothing from 16 lanes).
 *
 * Call the init functions only when copse__cpu_features() reports
 * AVX2+FMA+F16C+AVX512F+AVX512BW+AVX512VL (and AVX512VNNI for the second).
 */
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)

#include <stdint.h>
#include <string.h>

#include "cpu-kernels.h"

#include <immintrin.h>

enum { K_Q8_0, K_Q4_0, K_Q4_1, K_Q4_K, K_Q5_0, K_Q5_1, K_Q6_K };

/* Super-block formats: one canonical group of 8 blocks is one super-block. */
#define KIND_SUPER(kind) ((kind) == K_Q4_K || (kind) == K_Q6_K)
#define KIND_SUPER_BSZ(kind) ((kind) == K_Q4_K ? 144 : 210)
/* Formats whose weight bytes are signed (dot by |w| and sign-adjusted x). */
#define KIND_SIGNED(kind) ((kind) == K_Q8_0 || (kind) == K_Q6_K)

/* Bytes per block; whether the block term has the s (min) part; the shift
 * of the -2^shift * sum(qx) offset of the signed formats stored unsigned. */
#define KIND_BSZ(kind) \
    ((kind) == K_Q8_0 ? 34 : (kind) == K_Q4_0 ? 18 : (kind) == K_Q4_1 ? 20 : (kind) == K_Q5_0 ? 22 : 24)
#define KIND_HAS_MIN(kind) ((kind) == K_Q4_1 || (kind) == K_Q5_1 || (kind) == K_Q4_K)
#define KIND_OFFSET_SHIFT(kind) ((kind) == K_Q4_0 ? 3 : (kind) == K_Q5_0 ? 4 : 0)

/* ---------------------------------------------------------------- AVX-512 F/BW/VL */

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl"))), apply_to = function)
#pragma clang fp contract(off)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl")
#pragma GCC optimize("fp-contract=off")
#endif

/* Canonical final reduction of 8 lanes: (a0+a4 + a2+a6) + (a1+a5 + a3+a7). */
static inline float hsum8(__m256 acc)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    __m128 u = _mm_add_ps(s, _mm_movehl_ps(s, s));
    __m128 r = _mm_add_ss(u, _mm_movehdup_ps(u));
    return _mm_cvtss_f32(r);
}

/* v[k] holds blocks 2k (lanes 0..7) and 2k+1 (lanes 8..15) as int32
 * partials; returns the 8 block sums in block order. */
static inline __m256i sum4x2_epi32(const __m512i v[4])
{
    __m512i a01 = _mm512_add_epi32(_mm512_unpacklo_epi32(v[0], v[1]), _mm512_unpackhi_epi32(v[0], v[1]));
    __m512i a23 = _mm512_add_epi32(_mm512_unpacklo_epi32(v[2], v[3]), _mm512_unpackhi_epi32(v[2], v[3]));
    /* 128-bit lane L of b: [v0, v1, v2, v3] summed over their lane L */
    __m512i b = _mm512_add_epi32(_mm512_unpacklo_epi64(a01, a23), _mm512_unpackhi_epi64(a01, a23));
    /* lane 0: blocks 0, 2, 4, 6; lane 2: blocks 1, 3, 5, 7 */
    __m512i c = _mm512_add_epi32(b, _mm512_shuffle_i32x4(b, b, _MM_SHUFFLE(2, 3, 0, 1)));
    __m128i e = _mm512_castsi512_si128(c), o = _mm512_extracti32x4_epi32(c, 2);
    return _mm256_set_m128i(_mm_unpackhi_epi32(e, o), _mm_unpacklo_epi32(e, o));
}

/* The 32 nibbles of a Q4 block as bytes (elements in order). */
static inline __m256i unpack_nibbles(const uint8_t *qs)
{
    __m128i q = _mm_loadu_si128((const __m128i *)qs);
    __m128i m = _mm_set1_epi8(0x0f);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), m), _mm_and_si128(q, m));
}

/* Sub-block j (0..7) of a Q6_K super-block as 32 signed bytes q - 32:
 * low 4 bits from ql[64 * (j / 4) + 32 * (j % 2)] (high nibble when
 * j % 4 >= 2), 2 high bits from qh[32 * (j / 4)] >> 2 * (j % 4). */
static inline __m256i q6_bytes(const uint8_t *sb, int j)
{
    const __m256i m4 = _mm256_set1_epi8(0x0f), m2 = _mm256_set1_epi8(0x03);
    __m256i ql = _mm256_loadu_si256((const __m256i *)(sb + 64 * (j / 4) + 32 * (j % 2)));
    __m256i qh = _mm256_loadu_si256((const __m256i *)(sb + 128 + 32 * (j / 4)));
    __m256i lo = (j % 4) >= 2 ? _mm256_and_si256(_mm256_srli_epi16(ql, 4), m4) : _mm256_and_si256(ql, m4);
    __m256i hi = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * (j % 4))), m2);
    return _mm256_sub_epi8(_mm256_or_si256(lo, _mm256_slli_epi16(hi, 4)), _mm256_set1_epi8(32));
}

/* The 5th bits of a Q5 block (qh, bit i for element i) as bytes 0x10 / 0. */
static inline __m256i q5_high_bits(const uint8_t *qhp)
{
    uint32_t qh;
    memcpy(&qh, qhp, 4);
    __m256i v = _mm256_set1_epi32((int)qh);
    /* byte i takes qh byte i / 8 (shuffle works per 128-bit lane; both hold qh) */
    const __m256i sel = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                         2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    v = _mm256_cmpeq_epi8(_mm256_and_si256(_mm256_shuffle_epi8(v, sel), bit), bit);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x10));
}

/* The 32 weight bytes of block `blk` as the u8 operand, and for Q8_0 the
 * sign to give the activations (set where the weight is negative). */
static inline __m256i weight_bytes(const uint8_t *blk, int kind)
{
    if (kind == K_Q8_0)
        return _mm256_loadu_si256((const __m256i *)(blk + 2));
    if (kind == K_Q5_0)
        return _mm256_or_si256(unpack_nibbles(blk + 6), q5_high_bits(blk + 2));
    if (kind == K_Q5_1)
        return _mm256_or_si256(unpack_nibbles(blk + 8), q5_high_bits(blk + 4));
    return unpack_nibbles(blk + (kind == K_Q4_0 ? 2 : 4));
}

/* The fp16 fields at byte 0 (d) and byte 2 (m) of 8 consecutive blocks of
 * bsz bytes, as floats; lanes j >= n are 0 and their blocks are not read. */
static inline void load_block_scales(const uint8_t *blk0, size_t bsz, int n, __m256 *d, __m256 *m)
{
    const __m256i off = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32((int)bsz));
    __m256i v = _mm256_mmask_i32gather_epi32(_mm256_setzero_si256(), (__mmask8)((1u << n) - 1u), off,
                                             (const void *)blk0, 1);
    __m256i lo = _mm256_and_si256(v, _mm256_set1_epi32(0xffff));
    __m256i hi = _mm256_srli_epi32(v, 16);
    __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi32(lo, hi), _MM_SHUFFLE(3, 1, 2, 0));
    *d = _mm256_cvtph_ps(_mm256_castsi256_si128(p));
    *m = _mm256_cvtph_ps(_mm256_extracti128_si256(p, 1));
}

/* Q4_K's 8 six-bit scales and mins (12 packed bytes at s) as floats, in
 * sub-block order, without a trip through memory: with the bytes read as
 * three little-endian words u0, u1, u2, sub-blocks 0..3 take
 * sc = u0 & 63 and mn = u1 & 63 per byte, sub-blocks 4..7 take
 * sc = (u2 & 15) | (u0 >> 6) << 4 and mn = (u2 >> 4) | (u1 >> 6) << 4. */
static inline void k4_scales(const uint8_t *s, __m256 *sc, __m256 *mn)
{
    uint32_t u0, u1, u2;
    memcpy(&u0, s, 4);
    memcpy(&u1, s + 4, 4);
    memcpy(&u2, s + 8, 4);
    uint64_t vs = (uint64_t)(u0 & 0x3f3f3f3fu) | (uint64_t)((u2 & 0x0f0f0f0fu) | ((u0 >> 2) & 0x30303030u)) << 32;
    uint64_t vm = (uint64_t)(u1 & 0x3f3f3f3fu) | (uint64_t)(((u2 >> 4) & 0x0f0f0f0fu) | ((u1 >> 2) & 0x30303030u)) << 32;
    *sc = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)vs)));
    *mn = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)vm)));
}

/* d and dmin times the scales and mins of a Q4_K super-block. */
static inline void k4_group_scales(const uint8_t *blk, __m256 *dw, __m256 *mw)
{
    uint16_t h[2];
    memcpy(h, blk, 4);
    __m256 sc, mn;
    k4_scales(blk + 4, &sc, &mn);
    *dw = _mm256_mul_ps(_mm256_set1_ps(_cvtsh_ss(h[0])), sc);
    *mw = _mm256_mul_ps(_mm256_set1_ps(_cvtsh_ss(h[1])), mn);
}

static void avx512_quantize_q8(const float *x, int64_t k, int8_t *qs, float *d, float *s, int32_t *sum)
{
    for (int64_t b = 0; b < k / COPSE_CPU_QK; b++) {
        const float *xb = x + b * COPSE_CPU_QK;
        __m512 v0 = _mm512_loadu_ps(xb), v1 = _mm512_loadu_ps(xb + 16);
        __m512 m = _mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1));
        float amax = _mm512_reduce_max_ps(m);
        float db = amax / 127.0f;
        float id = db != 0.0f ? 1.0f / db : 0.0f;
        __m512 vid = _mm512_set1_ps(id);
        __m512i i0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, vid));
        __m512i i1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, vid));
        int32_t sb = _mm512_reduce_add_epi32(_mm512_add_epi32(i0, i1));
        _mm_storeu_si128((__m128i *)(qs + b * COPSE_CPU_QK), _mm512_cvtepi32_epi8(i0));
        _mm_storeu_si128((__m128i *)(qs + b * COPSE_CPU_QK + 16), _mm512_cvtepi32_epi8(i1));
        d[b] = db;
        sum[b] = sb;
        s[b] = db * (float)sb;
    }
}

#define CPU_VNNI 0
#define SFX(name) name##_avx512
#include "cpu-kernels-avx512-body.h"
#undef SFX
#undef CPU_VNNI

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

/* ---------------------------------------------------------------- AVX-512 VNNI */

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni"))), apply_to = function)
#pragma clang fp contract(off)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")
#pragma GCC optimize("fp-contract=off")
#endif

#define CPU_VNNI 1
#define SFX(name) name##_vnni
#include "cpu-kernels-avx512-body.h"
#undef SFX
#undef CPU_VNNI

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

/* ---------------------------------------------------------------- tables */

void copse__cpu_kernels_init_avx512(copse_cpu_kernels *k, const copse_cpu_kernels *base)
{
    *k = *base;
    k->quantize_q8 = avx512_quantize_q8;
    k->mm_q8[COPSE_Q_Q8_0] = mm_q8_0_avx512;
    k->mm_q8[COPSE_Q_Q4_0] = mm_q4_0_avx512;
    k->mm_q8[COPSE_Q_Q4_1] = mm_q4_1_avx512;
    k->mm_q8[COPSE_Q_Q4_K] = mm_q4_k_avx512;
    k->mm_q8[COPSE_Q_Q6_K] = mm_q6_k_avx512;
    k->mm_q8[COPSE_Q_Q5_0] = mm_q5_0_avx512;
    k->mm_q8[COPSE_Q_Q5_1] = mm_q5_1_avx512;
}

void copse__cpu_kernels_init_avx512vnni(copse_cpu_kernels *k, const copse_cpu_kernels *base)
{
    *k = *base;
    k->mm_q8[COPSE_Q_Q8_0] = mm_q8_0_vnni;
    k->mm_q8[COPSE_Q_Q4_0] = mm_q4_0_vnni;
    k->mm_q8[COPSE_Q_Q4_1] = mm_q4_1_vnni;
    k->mm_q8[COPSE_Q_Q4_K] = mm_q4_k_vnni;
    k->mm_q8[COPSE_Q_Q6_K] = mm_q6_k_vnni;
    k->mm_q8[COPSE_Q_Q5_0] = mm_q5_0_vnni;
    k->mm_q8[COPSE_Q_Q5_1] = mm_q5_1_vnni;
}

#else
/* Not x86: nothing to build (ISO C wants a declaration in every file). */
typedef int copse_cpu_no_x86_simd_;
#endif /* x86 */
