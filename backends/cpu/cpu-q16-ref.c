/*
 * cpu-q16-ref.c — scalar reference of the Q16 activation path: quantize_q16
 * and mm_q16 for Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K and Q6_K.
 *
 * Contract and canonical orders: see cpu-kernels.h. These entries live in
 * the ref_q8 table (the scalar integer-dot oracle, next to the Q8 ones) and
 * are what every SIMD level's Q16 kernels must match bit for bit. Plain C11
 * in float, no fused multiply-add; clarity over speed. Weight layouts are
 * described at the Q8 kernels in cpu-ref.c.
 */
#include <assert.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "cpu-kernels.h"

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

/* ---------------------------------------------------------------- Q16 activations */

static void ref_quantize_q16(const float *x, int64_t k, int16_t *qs, float *d, float *s, int32_t *sum)
{
    assert(k % COPSE_CPU_QK == 0);
    for (int64_t b = 0; b < k / COPSE_CPU_QK; b++) {
        const float *xb = x + b * COPSE_CPU_QK;
        float amax = 0.0f;
        for (int j = 0; j < COPSE_CPU_QK; j++) {
            float a = fabsf(xb[j]);
            if (a > amax)
                amax = a;
        }
        float db = amax / 32767.0f;
        int32_t sb = 0;
        for (int j = 0; j < COPSE_CPU_QK; j++) {
            int q = 0;
            if (db != 0.0f) {
                float v = xb[j] / db;
                v = v < -32767.0f ? -32767.0f : v > 32767.0f ? 32767.0f : v;
                q = (int)nearbyintf(v); /* round half to even, as cvtps2dq */
            }
            qs[b * COPSE_CPU_QK + j] = (int16_t)q;
            sb += q;
        }
        d[b] = db;
        sum[b] = sb;
        s[b] = db * (float)sb;
    }
}

/* ---------------------------------------------------------------- block dot products */

enum { K_Q8_0, K_Q4_0, K_Q4_1, K_Q4_K, K_Q5_0, K_Q5_1, K_Q6_K };

/* Weight element e (0..31) of block b of a row, as the signed integer the
 * canonical isum multiplies (Q4_0 / Q5_0 with their offsets applied: the
 * same integer sum). */
static int weight_q(const uint8_t *row, int64_t b, int e, int kind)
{
    switch (kind) {
    case K_Q8_0: return copse__i8_of(row[b * 34 + 2 + e]);
    case K_Q4_0: {
        const uint8_t *q = row + b * 18 + 2;
        return (e < 16 ? q[e] & 15 : q[e - 16] >> 4) - 8;
    }
    case K_Q4_1: {
        const uint8_t *q = row + b * 20 + 4;
        return e < 16 ? q[e] & 15 : q[e - 16] >> 4;
    }
    case K_Q5_0:
    case K_Q5_1: {
        const uint8_t *blk = row + b * (kind == K_Q5_1 ? 24 : 22);
        const uint8_t *qh = blk + (kind == K_Q5_1 ? 4 : 2), *qs = qh + 4;
        uint32_t h = (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24;
        int v = (e < 16 ? qs[e] & 15 : qs[e - 16] >> 4) | (int)((h >> e) & 1u) << 4;
        return kind == K_Q5_0 ? v - 16 : v;
    }
    case K_Q4_K: {
        const int j = (int)(b % 8);
        const uint8_t *q = row + (b / 8) * 144 + 16 + 32 * (j / 2);
        return (q[e] >> (4 * (j % 2))) & 15;
    }
    default: { /* K_Q6_K */
        const int j = (int)(b % 8), h = j / 4, rr = 32 * (j % 4) + e;
        const uint8_t *sb = row + (b / 8) * 210;
        int low4 = (sb[64 * h + rr % 64] >> (4 * (rr / 64))) & 15;
        int high2 = (sb[128 + 32 * h + e] >> (2 * (j % 4))) & 3;
        return (low4 | high2 << 4) - 32;
    }
    }
}

/* Q4_K's 6-bit scale and min of sub-block j. */
static void k4_scale_min(const uint8_t s[12], int j, int *sc, int *mn)
{
    if (j < 4) {
        *sc = s[j] & 63;
        *mn = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
        *mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

/* The canonical term t_b of cpu-kernels.h for one weight block, unpacked
 * to wq[32], and one Q16 activation block. */
static float block_term(const uint8_t *row, int64_t b, const int wq[32], const copse_cpu_q16_row *x, int kind)
{
    const int16_t *xq = x->qs + b * COPSE_CPU_QK;
    int32_t h[2] = {0, 0};
    for (int e = 0; e < 32; e++)
        h[e / 16] += wq[e] * xq[e];
    switch (kind) {
    case K_Q8_0:
    case K_Q4_0:
    case K_Q5_0: {
        const uint8_t *blk = row + b * (kind == K_Q8_0 ? 34 : kind == K_Q4_0 ? 18 : 22);
        float dd = copse__rd_fp16(blk) * x->d[b];
        return dd * (float)(h[0] + h[1]);
    }
    case K_Q4_1:
    case K_Q5_1: {
        const uint8_t *blk = row + b * (kind == K_Q4_1 ? 20 : 24);
        float dd = copse__rd_fp16(blk) * x->d[b];
        float t1 = dd * (float)(h[0] + h[1]);
        float t2 = copse__rd_fp16(blk + 2) * x->s[b];
        return t1 + t2;
    }
    case K_Q4_K: {
        const uint8_t *sb = row + (b / 8) * 144;
        int sc, mn;
        k4_scale_min(sb + 4, (int)(b % 8), &sc, &mn);
        float ds = copse__rd_fp16(sb) * (float)sc, dm = copse__rd_fp16(sb + 2) * (float)mn;
        float t1 = (ds * x->d[b]) * (float)(h[0] + h[1]);
        float t2 = dm * x->s[b];
        return t1 - t2;
    }
    default: { /* K_Q6_K */
        const uint8_t *sb = row + (b / 8) * 210;
        const int j = (int)(b % 8);
        int32_t p0 = copse__i8_of(sb[192 + 2 * j]) * h[0], p1 = copse__i8_of(sb[193 + 2 * j]) * h[1];
        float f = (float)p0 + (float)p1;
        float dd = copse__rd_fp16(sb + 208) * x->d[b];
        return dd * f;
    }
    }
}

/* Row by row; each weight block is unpacked once and used for a chunk of
 * up to TOK_CHUNK tokens, each with its own 8 canonical lanes. */
#define TOK_CHUNK 64

static void ref_mm(const uint8_t *w, size_t w_stride, int64_t n_rows, const copse_cpu_q16_row *xs, int64_t n_tok,
                   int64_t nb, float *out, size_t out_stride, int kind)
{
    assert(!(kind == K_Q4_K || kind == K_Q6_K) || nb % 8 == 0);
    float acc[TOK_CHUNK][8];
    int wq[32];
    for (int64_t r = 0; r < n_rows; r++) {
        const uint8_t *row = w + (size_t)r * w_stride;
        for (int64_t t0 = 0; t0 < n_tok; t0 += TOK_CHUNK) {
            const int64_t nt = n_tok - t0 < TOK_CHUNK ? n_tok - t0 : TOK_CHUNK;
            memset(acc, 0, sizeof acc);
            for (int64_t b = 0; b < nb; b++) {
                for (int e = 0; e < 32; e++)
                    wq[e] = weight_q(row, b, e, kind);
                for (int64_t t = 0; t < nt; t++) {
                    float tb = block_term(row, b, wq, &xs[t0 + t], kind);
                    acc[t][b % 8] = acc[t][b % 8] + tb;
                }
            }
            for (int64_t t = 0; t < nt; t++)
                out[(size_t)(t0 + t) * out_stride + (size_t)r] = copse__cpu_reduce8(acc[t]);
        }
    }
}

#define REF_MM(name, kind)                                                                                    \
    static void name(const uint8_t *w, size_t w_stride, int64_t n_rows, const copse_cpu_q16_row *x,          \
                     int64_t n_tok, int64_t nb, float *out, size_t out_stride)                                \
    {                                                                                                         \
        ref_mm(w, w_stride, n_rows, x, n_tok, nb, out, out_stride, kind);                                     \
    }

REF_MM(ref_mm_q8_0, K_Q8_0)
REF_MM(ref_mm_q4_0, K_Q4_0)
REF_MM(ref_mm_q4_1, K_Q4_1)
REF_MM(ref_mm_q4_k, K_Q4_K)
REF_MM(ref_mm_q5_0, K_Q5_0)
REF_MM(ref_mm_q5_1, K_Q5_1)
REF_MM(ref_mm_q6_k, K_Q6_K)

/* ---------------------------------------------------------------- table */

void copse__cpu_q16_init_ref(copse_cpu_kernels *k)
{
    k->quantize_q16 = ref_quantize_q16;
    k->mm_q16[COPSE_Q_Q8_0] = ref_mm_q8_0;
    k->mm_q16[COPSE_Q_Q4_0] = ref_mm_q4_0;
    k->mm_q16[COPSE_Q_Q4_1] = ref_mm_q4_1;
    k->mm_q16[COPSE_Q_Q4_K] = ref_mm_q4_k;
    k->mm_q16[COPSE_Q_Q6_K] = ref_mm_q6_k;
    k->mm_q16[COPSE_Q_Q5_0] = ref_mm_q5_0;
    k->mm_q16[COPSE_Q_Q5_1] = ref_mm_q5_1;
}
