/*
 * cpu-ref.c — scalar reference kernels of the CPU backend and the kernel
 * table selection.
 *
 * Contract: see cpu-kernels.h. Everything here is plain C11 evaluated in
 * float (no fused multiply-add: baseline x86-64 has none, and the canonical
 * orders in cpu-kernels.h are written as separate roundings). These kernels
 * are the oracle the SIMD tables are tested against; they favour clarity
 * over speed.
 *
 * The tables are built once, on first use, under pthread_once; afterwards
 * they are read-only.
 */
#include <assert.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "cpu-features.h"
#include "cpu-kernels.h"

/* The canonical orders are separate roundings: never contract a * b + c
 * into a fused multiply-add, even where the build allows it (-std=gnu11
 * with -march=native, say). */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define CPU_HAVE_X86_SIMD 1
#else
#define CPU_HAVE_X86_SIMD 0
#endif

/* ---------------------------------------------------------------- f32 primitives */

static float ref_dot_f32(const float *a, const float *b, int64_t n)
{
    float acc[8] = {0};
    for (int64_t i = 0; i < n; i++) {
        float p = a[i] * b[i];
        acc[i % 8] = acc[i % 8] + p;
    }
    return copse__cpu_reduce8(acc);
}

static float ref_dot_f16(const uint16_t *w, const float *x, int64_t n)
{
    float acc[8] = {0};
    for (int64_t i = 0; i < n; i++) {
        float p = copse__fp16_to_f32(w[i]) * x[i];
        acc[i % 8] = acc[i % 8] + p;
    }
    return copse__cpu_reduce8(acc);
}

static void ref_axpy_f32(float *y, float a, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        float p = a * x[i];
        y[i] = y[i] + p;
    }
}

static void ref_axpy_f16(float *y, float a, const uint16_t *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        float p = a * copse__fp16_to_f32(x[i]);
        y[i] = y[i] + p;
    }
}

static void ref_scale_f32(float *y, float a, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = y[i] * a;
}

static void ref_dot_many_f32(const float *x, const float *const *rows, int n, int64_t len, float *out)
{
    for (int i = 0; i < n; i++)
        out[i] = ref_dot_f32(rows[i], x, len);
}

static void ref_dot_many_f16(const float *x, const uint16_t *const *rows, int n, int64_t len, float *out)
{
    for (int i = 0; i < n; i++)
        out[i] = ref_dot_f16(rows[i], x, len);
}

static void ref_axpy_many_f32(float *y, const float *a, const float *const *rows, int n, int64_t len)
{
    for (int i = 0; i < n; i++)
        ref_axpy_f32(y, a[i], rows[i], len);
}

static void ref_axpy_many_f16(float *y, const float *a, const uint16_t *const *rows, int n, int64_t len)
{
    for (int i = 0; i < n; i++)
        ref_axpy_f16(y, a[i], rows[i], len);
}

/* The canonical exp of cpu-kernels.h for x <= 0. */
static float exp_neg1(float x)
{
    if (!(x >= -87.0f))
        return 0.0f; /* NaN too */
    if (x > 0.0f)
        x = 0.0f;
    float n = nearbyintf(x * 1.44269504088896341f);
    float r = x - n * 0.693359375f; /* exact: C1 has 9 significant bits, |n| <= 126 */
    float c = n * -2.12194440e-4f;
    r = r - c;
    float y = 1.9875691500e-4f;
    y = y * r + 1.3981999507e-3f;
    y = y * r + 8.3334519073e-3f;
    y = y * r + 4.1665795894e-2f;
    y = y * r + 1.6666665459e-1f;
    y = y * r + 5.0000001201e-1f;
    float z = r * r;
    y = y * z;
    y = y + r;
    y = y + 1.0f;
    uint32_t bits = (uint32_t)((int32_t)n + 127) << 23; /* 2^n, n in [-126, 0] */
    float p2;
    memcpy(&p2, &bits, 4);
    return y * p2;
}

static void ref_exp_neg(float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = exp_neg1(x[i]);
}

static void ref_f32_to_f16(const float *x, uint16_t *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = copse__f32_to_fp16(x[i]);
}

static void ref_f16_to_f32(const uint16_t *x, float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = copse__fp16_to_f32(x[i]);
}

/* ---------------------------------------------------------------- Q8 activations */

static void ref_quantize_q8(const float *x, int64_t k, int8_t *qs, float *d, float *s, int32_t *sum)
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
        float db = amax / 127.0f;
        float id = db != 0.0f ? 1.0f / db : 0.0f;
        int32_t sb = 0;
        for (int j = 0; j < COPSE_CPU_QK; j++) {
            /* round half to even, as cvtps2dq does in the default mode */
            int q = (int)nearbyintf(xb[j] * id);
            qs[b * COPSE_CPU_QK + j] = (int8_t)q;
            sb += q;
        }
        d[b] = db;
        sum[b] = sb;
        s[b] = db * (float)sb;
    }
}

/* ---------------------------------------------------------------- Q8 block dot products */

/* Q8_0 weights (34-byte blocks: fp16 d, int8 qs[32]). */
static void ref_mm_q8_0(const uint8_t *w, size_t w_stride, int64_t n_rows, const copse_cpu_q8_row *xs,
                        int64_t n_tok, int64_t nb, float *out, size_t out_stride)
{
    for (int64_t i = 0; i < n_rows * n_tok; i++) {
        const int64_t r = i / n_tok, tk = i % n_tok;
        const copse_cpu_q8_row *x = &xs[tk];
        const uint8_t *row = w + (size_t)r * w_stride;
        float acc[8] = {0};
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *blk = row + b * 34;
            const int8_t *xq = x->qs + b * COPSE_CPU_QK;
            int32_t isum = 0;
            for (int j = 0; j < 32; j++)
                isum += copse__i8_of(blk[2 + j]) * xq[j];
            float dd = copse__rd_fp16(blk) * x->d[b];
            float t = dd * (float)isum;
            acc[b % 8] = acc[b % 8] + t;
        }
        out[(size_t)tk * out_stride + (size_t)r] = copse__cpu_reduce8(acc);
    }
}

/* Q4_0 weights (18-byte blocks: fp16 d, qs[16]; element j < 16 the low
 * nibble of qs[j], j + 16 its high nibble; value d * (q - 8)). */
static void ref_mm_q4_0(const uint8_t *w, size_t w_stride, int64_t n_rows, const copse_cpu_q8_row *xs,
                        int64_t n_tok, int64_t nb, float *out, size_t out_stride)
{
    for (int64_t i = 0; i < n_rows * n_tok; i++) {
        const int64_t r = i / n_tok, tk = i % n_tok;
        const copse_cpu_q8_row *x = &xs[tk];
        const uint8_t *row = w + (size_t)r * w_stride;
        float acc[8] = {0};
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *blk = row + b * 18;
            const int8_t *xq = x->qs + b * COPSE_CPU_QK;
            int32_t isum = 0;
            for (int j = 0; j < 16; j++)
                isum += (blk[2 + j] & 0x0f) * xq[j] + (blk[2 + j] >> 4) * xq[j + 16];
            isum -= 8 * x->sum[b];
            float dd = copse__rd_fp16(blk) * x->d[b];
            float t = dd * (float)isum;
            acc[b % 8] = acc[b % 8] + t;
        }
        out[(size_t)tk * out_stride + (size_t)r] = copse__cpu_reduce8(acc);
    }
}

/* Q4_1 weights (20-byte blocks: fp16 d, fp16 m, qs[16]; value d * q + m). */
static void ref_mm_q4_1(const uint8_t *w, size_t w_stride, int64_t n_rows, const copse_cpu_q8_row *xs,
                        int64_t n_tok, int64_t nb, float *out, size_t out_stride)
{
    for (int64_t i = 0; i < n_rows * n_tok; i++) {
        const int64_t r = i / n_tok, tk = i % n_tok;
        const copse_cpu_q8_row *x = &xs[tk];
        const uint8_t *row = w + (size_t)r * w_stride;
        float acc[8] = {0};
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *blk = row + b * 20;
            const int8_t *xq = x->qs + b * COPSE_CPU_QK;
            int32_t isum = 0;
            for (int j = 0; j < 16; j++)
                isum += (blk[4 + j] & 0x0f) * xq[j] + (blk[4 + j] >> 4) * xq[j + 16];
            float dd = copse__rd_fp16(blk) * x->d[b];
            float t1 = dd * (float)isum;
            float t2 = copse__rd_fp16(blk + 2) * x->s[b];
            float t = t1 + t2;
            acc[b % 8] = acc[b % 8] + t;
        }
        out[(size_t)tk * out_stride + (size_t)r] = copse__cpu_reduce8(acc);
    }
}

/* Q5_0 / Q5_1 weights (22 bytes: fp16 d, qh u32 LE, qs[16]; 24 bytes: fp16
 * d, fp16 m, qh, qs[16]). q = nibble | (bit i of qh) << 4, 0..31; Q5_0's
 * value d * (q - 16), Q5_1's d * q + m. */
static void ref_mm_q5(const uint8_t *w, size_t w_stride, int64_t n_rows, const copse_cpu_q8_row *xs,
                      int64_t n_tok, int64_t nb, float *out, size_t out_stride, bool q5_1)
{
    const size_t bsz = q5_1 ? 24 : 22, qh_at = q5_1 ? 4 : 2, qs_at = q5_1 ? 8 : 6;
    for (int64_t i = 0; i < n_rows * n_tok; i++) {
        const int64_t r = i / n_tok, tk = i % n_tok;
        const copse_cpu_q8_row *x = &xs[tk];
        const uint8_t *row = w + (size_t)r * w_stride;
        float acc[8] = {0};
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *blk = row + b * bsz;
            const int8_t *xq = x->qs + b * COPSE_CPU_QK;
            uint32_t qh = (uint32_t)blk[qh_at] | (uint32_t)blk[qh_at + 1] << 8 | (uint32_t)blk[qh_at + 2] << 16 |
                          (uint32_t)blk[qh_at + 3] << 24;
            int32_t isum = 0;
            for (int j = 0; j < 16; j++) {
                int lo = (blk[qs_at + j] & 0x0f) | (int)((qh >> j) & 1u) << 4;
                int hi = (blk[qs_at + j] >> 4) | (int)((qh >> (j + 16)) & 1u) << 4;
                isum += lo * xq[j] + hi * xq[j + 16];
            }
            float dd = copse__rd_fp16(blk) * x->d[b];
            float t;
            if (q5_1) {
                float t1 = dd * (float)isum;
                float t2 = copse__rd_fp16(blk + 2) * x->s[b];
                t = t1 + t2;
            } else {
                isum -= 16 * x->sum[b];
                t = dd * (float)isum;
            }
            acc[b % 8] = acc[b % 8] + t;
        }
        out[(size_t)tk * out_stride + (size_t)r] = copse__cpu_reduce8(acc);
    }
}

static void ref_mm_q5_0(const uint8_t *w, size_t w_stride, int64_t n_rows, const copse_cpu_q8_row *xs,
                        int64_t n_tok, int64_t nb, float *out, size_t out_stride)
{
    ref_mm_q5(w, w_stride, n_rows, xs, n_tok, nb, out, out_stride, false);
}

static void ref_mm_q5_1(const uint8_t *w, size_t w_stride, int64_t n_rows, const copse_cpu_q8_row *xs,
                        int64_t n_tok, int64_t nb, float *out, size_t out_stride)
{
    ref_mm_q5(w, w_stride, n_rows, xs, n_tok, nb, out, out_stride, true);
}

/* Q4_K weights (144-byte super-blocks of 256: fp16 d @0, fp16 dmin @2,
 * scales[12] @4 (8 x 6-bit scale and min), qs[128] @16; sub-block j's
 * element l is nibble (j % 2) of qs[32 * (j / 2) + l]; value
 * (d * sc_j) * q - (dmin * mn_j)). nb is a multiple of 8. */
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

static void ref_mm_q4_k(const uint8_t *w, size_t w_stride, int64_t n_rows, const copse_cpu_q8_row *xs,
                        int64_t n_tok, int64_t nb, float *out, size_t out_stride)
{
    assert(nb % 8 == 0);
    for (int64_t i = 0; i < n_rows * n_tok; i++) {
        const int64_t r = i / n_tok, tk = i % n_tok;
        const copse_cpu_q8_row *x = &xs[tk];
        const uint8_t *row = w + (size_t)r * w_stride;
        float acc[8] = {0};
        for (int64_t sb = 0; sb < nb / 8; sb++) {
            const uint8_t *blk = row + sb * 144;
            float d = copse__rd_fp16(blk), dmin = copse__rd_fp16(blk + 2);
            for (int j = 0; j < 8; j++) {
                int sc, mn;
                k4_scale_min(blk + 4, j, &sc, &mn);
                const int64_t b = sb * 8 + j;
                const int8_t *xq = x->qs + b * COPSE_CPU_QK;
                const uint8_t *q = blk + 16 + 32 * (j / 2);
                int32_t isum = 0;
                for (int l = 0; l < 32; l++)
                    isum += ((q[l] >> (4 * (j % 2))) & 15) * xq[l];
                float ds = d * (float)sc, dm = dmin * (float)mn;
                float t1 = (ds * x->d[b]) * (float)isum;
                float t2 = dm * x->s[b];
                float t = t1 - t2;
                acc[j] = acc[j] + t;
            }
        }
        out[(size_t)tk * out_stride + (size_t)r] = copse__cpu_reduce8(acc);
    }
}

/* Q6_K weights (210-byte super-blocks of 256: ql[128] @0, qh[64] @128,
 * int8 scales[16] @192 (one per 16 elements), fp16 d @208; element e of
 * sub-block j: h = j / 4, r = 32 * (j % 4) + e,
 * q = ((ql[64h + r % 64] >> 4 * (r / 64)) & 15 | ((qh[32h + e] >> 2 * (j % 4)) & 3) << 4) - 32;
 * value (d * scale) * q). Per activation block the integer sum is
 * isum = scale[2j] * sum_{e<16} q*qx + scale[2j+1] * sum_{e>=16} q*qx and
 * t = (d * dx) * (float)isum. nb is a multiple of 8. */
static void ref_mm_q6_k(const uint8_t *w, size_t w_stride, int64_t n_rows, const copse_cpu_q8_row *xs,
                        int64_t n_tok, int64_t nb, float *out, size_t out_stride)
{
    assert(nb % 8 == 0);
    for (int64_t i = 0; i < n_rows * n_tok; i++) {
        const int64_t r = i / n_tok, tk = i % n_tok;
        const copse_cpu_q8_row *x = &xs[tk];
        const uint8_t *row = w + (size_t)r * w_stride;
        float acc[8] = {0};
        for (int64_t sb = 0; sb < nb / 8; sb++) {
            const uint8_t *blk = row + sb * 210;
            float d = copse__rd_fp16(blk + 208);
            for (int j = 0; j < 8; j++) {
                const int64_t b = sb * 8 + j;
                const int8_t *xq = x->qs + b * COPSE_CPU_QK;
                const int h = j / 4;
                int32_t half[2] = {0, 0};
                for (int e = 0; e < 32; e++) {
                    int rr = 32 * (j % 4) + e;
                    int low4 = (blk[64 * h + rr % 64] >> (4 * (rr / 64))) & 15;
                    int high2 = (blk[128 + 32 * h + e] >> (2 * (j % 4))) & 3;
                    half[e / 16] += ((low4 | high2 << 4) - 32) * xq[e];
                }
                int32_t isum = copse__i8_of(blk[192 + 2 * j]) * half[0] + copse__i8_of(blk[193 + 2 * j]) * half[1];
                float dd = d * x->d[b];
                float t = dd * (float)isum;
                acc[j] = acc[j] + t;
            }
        }
        out[(size_t)tk * out_stride + (size_t)r] = copse__cpu_reduce8(acc);
    }
}

/* ---------------------------------------------------------------- softmax */

void copse__cpu_softmax_ref(const float *x, int64_t n, float inv_temp, float *out)
{
    float m = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        float y = x[i] * inv_temp;
        if (y > m)
            m = y;
    }
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) {
        float y = x[i] * inv_temp;
        float e = expf(y - m);
        out[i] = e;
        sum += (double)e;
    }
    for (int64_t i = 0; i < n; i++)
        out[i] = (float)((double)out[i] / sum);
}

/* ---------------------------------------------------------------- tables */

static copse_cpu_kernels tables[COPSE_CPU_LEVEL_COUNT];
static bool table_ok[COPSE_CPU_LEVEL_COUNT];
static const copse_cpu_kernels *best_table;
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;

static const char *const level_names[COPSE_CPU_LEVEL_COUNT] = {
    "ref", "ref_q8", "avx2", "avx512", "avx512vnni",
};

static void init_ref(copse_cpu_kernels *k)
{
    memset(k, 0, sizeof *k);
    k->quantize_q8 = ref_quantize_q8;
    k->dot_f32 = ref_dot_f32;
    k->dot_f16 = ref_dot_f16;
    k->axpy_f32 = ref_axpy_f32;
    k->axpy_f16 = ref_axpy_f16;
    k->scale_f32 = ref_scale_f32;
    k->exp_neg = ref_exp_neg;
    k->dot_many_f32 = ref_dot_many_f32;
    k->dot_many_f16 = ref_dot_many_f16;
    k->axpy_many_f32 = ref_axpy_many_f32;
    k->axpy_many_f16 = ref_axpy_many_f16;
    k->f32_to_f16 = ref_f32_to_f16;
    k->f16_to_f32 = ref_f16_to_f32;
}

static void init_tables(void)
{
    init_ref(&tables[COPSE_CPU_LEVEL_REF]);
    table_ok[COPSE_CPU_LEVEL_REF] = true;

    copse_cpu_kernels *q8 = &tables[COPSE_CPU_LEVEL_REF_Q8];
    init_ref(q8);
    q8->mm_q8[COPSE_Q_Q8_0] = ref_mm_q8_0;
    q8->mm_q8[COPSE_Q_Q4_0] = ref_mm_q4_0;
    q8->mm_q8[COPSE_Q_Q4_1] = ref_mm_q4_1;
    q8->mm_q8[COPSE_Q_Q4_K] = ref_mm_q4_k;
    q8->mm_q8[COPSE_Q_Q6_K] = ref_mm_q6_k;
    q8->mm_q8[COPSE_Q_Q5_0] = ref_mm_q5_0;
    q8->mm_q8[COPSE_Q_Q5_1] = ref_mm_q5_1;
    copse__cpu_q16_init_ref(q8); /* the scalar Q16 oracle lives here too */
    table_ok[COPSE_CPU_LEVEL_REF_Q8] = true;

#if CPU_HAVE_X86_SIMD
    uint32_t f = copse__cpu_features();
    const uint32_t avx2 = COPSE_CPU_AVX2 | COPSE_CPU_FMA | COPSE_CPU_F16C;
    const uint32_t avx512 = avx2 | COPSE_CPU_AVX512F | COPSE_CPU_AVX512BW | COPSE_CPU_AVX512VL;
    if ((f & avx2) == avx2) {
        copse__cpu_kernels_init_avx2(&tables[COPSE_CPU_LEVEL_AVX2], q8);
        copse__cpu_q16_init_avx2(&tables[COPSE_CPU_LEVEL_AVX2]);
        table_ok[COPSE_CPU_LEVEL_AVX2] = true;
    }
    if ((f & avx512) == avx512) {
        copse__cpu_kernels_init_avx512(&tables[COPSE_CPU_LEVEL_AVX512], &tables[COPSE_CPU_LEVEL_AVX2]);
        copse__cpu_q16_init_avx512(&tables[COPSE_CPU_LEVEL_AVX512]);
        table_ok[COPSE_CPU_LEVEL_AVX512] = true;
        if (f & COPSE_CPU_AVX512VNNI) {
            copse__cpu_kernels_init_avx512vnni(&tables[COPSE_CPU_LEVEL_AVX512VNNI],
                                               &tables[COPSE_CPU_LEVEL_AVX512]);
            copse__cpu_q16_init_avx512vnni(&tables[COPSE_CPU_LEVEL_AVX512VNNI]);
            table_ok[COPSE_CPU_LEVEL_AVX512VNNI] = true;
        }
    }
#endif
    for (int l = 0; l < COPSE_CPU_LEVEL_COUNT; l++) {
        tables[l].name = level_names[l];
        tables[l].level = (copse_cpu_level)l;
    }

    /* The best level, or the one COPSE_CPU_ISA asks for (clamped to what exists). */
    int want = COPSE_CPU_LEVEL_COUNT - 1;
    const char *e = getenv("COPSE_CPU_ISA");
    if (e && *e) {
        for (int l = 0; l < COPSE_CPU_LEVEL_COUNT; l++)
            if (strcmp(e, level_names[l]) == 0)
                want = l;
        if (strcmp(e, "avx512") == 0)
            want = COPSE_CPU_LEVEL_AVX512VNNI;
    }
    while (!table_ok[want])
        want--;
    best_table = &tables[want];
}

const copse_cpu_kernels *copse__cpu_kernels_level(copse_cpu_level level)
{
    pthread_once(&tables_once, init_tables);
    if ((int)level < 0 || level >= COPSE_CPU_LEVEL_COUNT || !table_ok[level])
        return NULL;
    return &tables[level];
}

const copse_cpu_kernels *copse__cpu_kernels_ref(void)
{
    return copse__cpu_kernels_level(COPSE_CPU_LEVEL_REF);
}

const copse_cpu_kernels *copse__cpu_kernels_best(void)
{
    pthread_once(&tables_once, init_tables);
    return best_table;
}
