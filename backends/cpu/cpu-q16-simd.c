/*
 * cpu-q16-simd.c — AVX2, AVX-512BW and AVX-512 VNNI kernels of the Q16
 * activation path (quantize_q16, mm_q16).
 *
 * Contract: see cpu-kernels.h. Bit-identical to the scalar Q16 reference
 * (cpu-q16-ref.c): the integer block sums are exact (int16 x int16 pairs
 * summed by VPMADDWD / VPDPWSSD; bounds in cpu-kernels.h), and every float
 * operation is the canonical one, lane b % 8. No fused multiply-add (the
 * target regions turn contraction off). The block-dot body is written once
 * in cpu-q16-body.h and included once per target region, so each level's
 * functions contain only its own instructions.
 *
 * Call the init functions only when copse__cpu_features() reports what the
 * matching copse__cpu_kernels_init_* function needs (cpu-kernels.h).
 */
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)

#include <stdint.h>
#include <string.h>

#include "cpu-kernels.h"

#include <immintrin.h>

enum { K_Q8_0, K_Q4_0, K_Q4_1, K_Q4_K, K_Q5_0, K_Q5_1, K_Q6_K };

/* Bytes per block (Q4_K / Q6_K: per 256-element super-block, unused) and
 * whether the term has the s (min) part. */
#define KIND_BSZ(kind) \
    ((kind) == K_Q8_0 ? 34 : (kind) == K_Q4_0 ? 18 : (kind) == K_Q4_1 ? 20 : (kind) == K_Q5_0 ? 22 : 24)
#define KIND_HAS_MIN(kind) ((kind) == K_Q4_1 || (kind) == K_Q5_1 || (kind) == K_Q4_K)

/* Token count from which the AVX-512 levels use 16-row panels (rows in
 * lanes) instead of the row-major tiles for Q8_0 / Q4_0 / Q4_1: below it the
 * panel's weight transpose costs more than it saves. */
#ifndef PANEL_MIN_TOK
#define PANEL_MIN_TOK 2
#endif

/* ---------------------------------------------------------------- AVX2 */

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#pragma clang fp contract(off)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#pragma GCC optimize("fp-contract=off")
#endif

/* Q16 activations (canonical order in cpu-kernels.h): a true division,
 * clamped, rounded half to even by VCVTPS2DQ in the default mode. */
static void avx2_quantize_q16(const float *x, int64_t k, int16_t *qs, float *d, float *s, int32_t *sum)
{
    const __m256 sign = _mm256_set1_ps(-0.0f), lim = _mm256_set1_ps(32767.0f), nlim = _mm256_set1_ps(-32767.0f);
    for (int64_t b = 0; b < k / COPSE_CPU_QK; b++) {
        const float *xb = x + b * COPSE_CPU_QK;
        __m256 v[4];
        __m256 m = _mm256_setzero_ps();
        for (int i = 0; i < 4; i++) {
            v[i] = _mm256_loadu_ps(xb + 8 * i);
            m = _mm256_max_ps(_mm256_andnot_ps(sign, v[i]), m);
        }
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_movehdup_ps(h));
        float db = _mm_cvtss_f32(h) / 32767.0f;
        int16_t *qb = qs + b * COPSE_CPU_QK;
        d[b] = db;
        if (db == 0.0f) {
            memset(qb, 0, COPSE_CPU_QK * sizeof *qb);
            sum[b] = 0;
            s[b] = db * 0.0f;
            continue;
        }
        __m256 vd = _mm256_set1_ps(db);
        __m256i q[4];
        for (int i = 0; i < 4; i++)
            q[i] = _mm256_cvtps_epi32(_mm256_max_ps(_mm256_min_ps(_mm256_div_ps(v[i], vd), lim), nlim));
        __m256i tot = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        __m128i t4 = _mm_add_epi32(_mm256_castsi256_si128(tot), _mm256_extracti128_si256(tot, 1));
        t4 = _mm_add_epi32(t4, _mm_shuffle_epi32(t4, _MM_SHUFFLE(1, 0, 3, 2)));
        t4 = _mm_add_epi32(t4, _mm_shuffle_epi32(t4, _MM_SHUFFLE(2, 3, 0, 1)));
        int32_t sb = _mm_cvtsi128_si32(t4);
        /* int32 -> int16 in element order (packs interleave 128-bit lanes) */
        __m256i p01 = _mm256_permute4x64_epi64(_mm256_packs_epi32(q[0], q[1]), _MM_SHUFFLE(3, 1, 2, 0));
        __m256i p23 = _mm256_permute4x64_epi64(_mm256_packs_epi32(q[2], q[3]), _MM_SHUFFLE(3, 1, 2, 0));
        _mm256_storeu_si256((__m256i *)qb, p01);
        _mm256_storeu_si256((__m256i *)(qb + 16), p23);
        sum[b] = sb;
        s[b] = db * (float)sb;
    }
}

#define Q16_ISA 0
#define SFX(name) name##_avx2
#include "cpu-q16-body.h"
#undef SFX
#undef Q16_ISA

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

/* ---------------------------------------------------------------- AVX-512BW */

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl"))), apply_to = function)
#pragma clang fp contract(off)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl")
#pragma GCC optimize("fp-contract=off")
#endif

/* Q16 activations as avx2_quantize_q16 computes them, written in the
 * q16_pairs layout (cpu-kernels.h): each 16-element half of a block is
 * contiguous in both layouts. */
static void avx512_quantize_q16(const float *x, int64_t k, int16_t *qs, float *d, float *s, int32_t *sum)
{
    const int64_t nb = k / COPSE_CPU_QK;
    const __m512 lim = _mm512_set1_ps(32767.0f), nlim = _mm512_set1_ps(-32767.0f);
    for (int64_t b = 0; b < nb; b++) {
        const float *xb = x + b * COPSE_CPU_QK;
        __m512 v0 = _mm512_loadu_ps(xb), v1 = _mm512_loadu_ps(xb + 16);
        float db = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1))) / 32767.0f;
        int16_t *q0 = qs + copse__cpu_q16_pos(1, nb, b, 0), *q1 = qs + copse__cpu_q16_pos(1, nb, b, 16);
        d[b] = db;
        if (db == 0.0f) {
            memset(q0, 0, 16 * sizeof *q0);
            memset(q1, 0, 16 * sizeof *q1);
            sum[b] = 0;
            s[b] = db * 0.0f;
            continue;
        }
        __m512 vd = _mm512_set1_ps(db);
        __m512i i0 = _mm512_cvtps_epi32(_mm512_max_ps(_mm512_min_ps(_mm512_div_ps(v0, vd), lim), nlim));
        __m512i i1 = _mm512_cvtps_epi32(_mm512_max_ps(_mm512_min_ps(_mm512_div_ps(v1, vd), lim), nlim));
        int32_t sb = _mm512_reduce_add_epi32(_mm512_add_epi32(i0, i1));
        _mm256_storeu_si256((__m256i *)(void *)q0, _mm512_cvtepi32_epi16(i0));
        _mm256_storeu_si256((__m256i *)(void *)q1, _mm512_cvtepi32_epi16(i1));
        sum[b] = sb;
        s[b] = db * (float)sb;
    }
}

#define Q16_ISA 1
#define SFX(name) name##_avx512
#include "cpu-q16-body.h"
#undef SFX
#undef Q16_ISA

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

#define Q16_ISA 2
#define SFX(name) name##_vnni
#include "cpu-q16-body.h"
#undef SFX
#undef Q16_ISA

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

/* ---------------------------------------------------------------- tables */

void copse__cpu_q16_init_avx2(copse_cpu_kernels *k)
{
    k->quantize_q16 = avx2_quantize_q16;
    install_avx2(k);
}

void copse__cpu_q16_init_avx512(copse_cpu_kernels *k)
{
    k->q16_pairs = 1;
    k->quantize_q16 = avx512_quantize_q16;
    install_avx512(k);
}

void copse__cpu_q16_init_avx512vnni(copse_cpu_kernels *k)
{
    k->q16_pairs = 1;
    k->quantize_q16 = avx512_quantize_q16;
    install_vnni(k);
}

#else
/* Not x86: nothing to build (ISO C wants a declaration in every file). */
typedef int copse_cpu_no_x86_q16_;
#endif /* x86 */
