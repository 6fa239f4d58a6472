/*
 * cpu-kernels.h — the CPU backend's kernel function table (internal).
 *
 * One struct of function pointers holds the inner loops the CPU ops use. The
 * scalar C reference (cpu-ref.c) fills every entry; per-ISA init functions
 * (cpu-kernels-avx2.c, cpu-kernels-avx512.c) copy that table and overwrite the
 * entries they accelerate. Tables are built once (idempotent, race-free init)
 * and are immutable afterwards; a queue holds a pointer to one of them.
 *
 * Levels, lowest first:
 *   ref        scalar; matmul dequantizes each weight row to f32 and dots it
 *              with the f32 activations (the oracle);
 *   ref_q8     scalar; matmul quantizes the activations to Q16 (default)
 *              or Q8 per 32-block and uses integer block dot products (the
 *              oracle of both fast paths: its table holds the scalar
 *              quantize_q16 / mm_q16 as well as quantize_q8 / mm_q8);
 *   avx2       AVX2 + FMA + F16C kernels on top of ref_q8 (Q16: VPMADDWD
 *              on weights widened to int16);
 *   avx512     AVX-512 F/BW/VL kernels on top of avx2 (Q16: 512-bit
 *              VPMADDWD, activations in the q16_pairs layout);
 *   avx512vnni the same with VPDPBUSD for the u8 x s8 block dot products
 *              and VPDPWSSD for the s16 x s16 ones.
 * Every level from ref_q8 up computes bit-identical results (same integer
 * sums, same float operations in the same order) for a given activation
 * precision; ref differs from them by the activation quantization only.
 * AMX is never used.
 *
 * Activation precision (chosen per queue, see cpu-queue.h; the table holds
 * all of them): q16 (int16 per 32-block, relative error ~1e-5, the
 * default), q8 (int8 per 32-block, ~1e-2, faster integer dots), f32 (the
 * ref path: dequantized weight row dotted with f32 activations).
 *
 * The Q8 and Q16 paths cover weights in Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K and
 * Q6_K. F32 and F16 weights, and every other dequantizable type (BF16,
 * Q8_1, Q2_K, Q3_K, Q5_K, ...), take the f32 path at every level: the row
 * dequantized by the reference dequantizer (F16 converted inside dot_f16)
 * and dotted with the f32 activations in the canonical order, so those
 * results are bit-identical across all levels, ref included. A Q16 or Q8
 * queue whose table has no mm_q16 / mm_q8 entry for a type also takes the
 * f32 path for it.
 *
 * Canonical orders (what "bit-identical" means; every ISA must follow them):
 *   f32 dot of n elements: 8 partial sums, element i goes to lane i % 8
 *     (acc[l] = acc[l] + a[i] * b[i], a rounded multiply then a rounded add,
 *     never a fused multiply-add), lanes starting at +0; then
 *     s_l = acc[l] + acc[l + 4] (l < 4), result = (s0 + s2) + (s1 + s3).
 *   Q8 activations: per 32-block, amax = max |x|, d = amax / 127,
 *     id = d ? 1 / d : 0, q = round-half-even(x * id), sum = sum q (int),
 *     s = d * (float)sum.
 *   Q8 block dot (weight block b, activation block b), isum exact in int32:
 *     Q8_0: t = (dw * dx) * (float)isum
 *     Q4_0: isum = sum(qw * qx) - 8 * sum(qx), qw the unsigned nibble;
 *           t = (dw * dx) * (float)isum
 *     Q4_1: t = (dw * dx) * (float)isum + mw * sx
 *     Q5_0: isum = sum(qw * qx) - 16 * sum(qx), qw the unsigned 5-bit
 *           value; t = (dw * dx) * (float)isum
 *     Q5_1: as Q4_1 with 5-bit qw
 *     Q4_K: sub-block j of a 256-element super-block is activation block b
 *           (j = b % 8), with 6-bit scale sc and min mn:
 *           ds = d * (float)sc, dm = dmin * (float)mn,
 *           t = (ds * dx) * (float)isum - dm * sx
 *     Q6_K: sub-block j of a super-block is activation block b, with
 *           int8 scales s0 (elements 0..15) and s1 (16..31) and signed
 *           q in -32..31: isum = s0 * sum_{e<16}(q * qx) + s1 * sum_{e>=16}(q * qx),
 *           t = (d * dx) * (float)isum
 *   and the per-block terms t_b are summed like the f32 dot: lane b % 8,
 *   same final reduction.
 *   Q16 activations: per 32-block, amax = max |x|, d = amax / 32767;
 *     d == 0: every q = 0; else q = round-half-even(min(max(x / d,
 *     -32767), 32767)) (a true division; the clamp only matters when d is
 *     subnormal), sum = sum q (int32, exact: |sum| <= 32 * 32767),
 *     s = d * (float)sum. Inputs must be finite.
 *   Q16 block dot (weight block b, activation block b; qx int16): exactly
 *     the Q8 formulas above with qx, dx, sx, sum taken from the Q16 row.
 *     The integer sums are exact in int32 (|isum| <= 32 * 128 * 32767 <
 *     2^28 for Q8_0; Q4_0's isum may be formed as sum((qw - 8) * qx), the
 *     same integer; likewise Q5_0 with 16). Q6_K is the one change: its
 *     scaled sum could overflow int32, so it turns to float per half:
 *       h0 = sum_{e<16}(q * qx), h1 = sum_{e>=16}(q * qx) (int32, exact,
 *       |h| <= 16 * 32 * 32767 < 2^24), p0 = s0 * h0, p1 = s1 * h1 (int32,
 *       exact: |p| <= 128 * 16 * 32 * 32767 < 2^31),
 *       f = (float)p0 + (float)p1 (two roundings of the conversions, one
 *       of the add), t = (d * dx) * f.
 *   Q16 terms accumulate like Q8 ones (lane b % 8, same final reduction),
 *   so a (row, token) result is one fixed sequence of float operations
 *   whatever the number of tokens or rows a kernel call works on.
 *
 *   exp_neg (x <= 0, Cody-Waite reduction and the Cephes expf polynomial,
 *     every step a separate rounding): n = round-half-even(x * log2(e)),
 *     r = (x - n * C1) - n * C2 with C1 = 0.693359375, C2 = -2.12194440e-4,
 *     y = P5; y = y * r + P4; ... ; y = y * r + P0 (P5 = 1.9875691500e-4,
 *     P4 = 1.3981999507e-3, P3 = 8.3334519073e-3, P2 = 4.1665795894e-2,
 *     P1 = 1.6666665459e-1, P0 = 5.0000001201e-1), y = y * (r * r),
 *     y = y + r, y = y + 1, result = y * 2^n.
 *
 * Threading: every entry is a pure function of its arguments; any number of
 * threads may call them at once.
 */
#ifndef COPSE_CPU_KERNELS_H
#define COPSE_CPU_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "quant.h"

#define COPSE_CPU_QK 32 /* activation quantization block */

/* One token's Q8 activations, structure-of-arrays: qs[k] int8, and per
 * 32-block b < k / 32: d[b] (scale), s[b] = d[b] * sum[b], sum[b] = sum of
 * the block's quants. */
typedef struct copse_cpu_q8_row {
    const int8_t *qs;
    const float *d;
    const float *s;
    const int32_t *sum;
} copse_cpu_q8_row;

/* One token's Q16 activations, structure-of-arrays: qs[k] int16 in the
 * table's q16 layout (below), and per 32-block b: d[b], s[b] = d[b] *
 * sum[b], sum[b] = sum of the block's quants (see the canonical order
 * above). */
typedef struct copse_cpu_q16_row {
    const int16_t *qs;
    const float *d;
    const float *s;
    const int32_t *sum;
} copse_cpu_q16_row;

/* Activation precision of a queue's matmul (see cpu-queue.h). */
typedef enum copse_cpu_act {
    COPSE_CPU_ACT_Q16 = 0, /* default */
    COPSE_CPU_ACT_Q8,
    COPSE_CPU_ACT_F32,
    COPSE_CPU_ACT_COUNT
} copse_cpu_act;

typedef enum copse_cpu_level {
    COPSE_CPU_LEVEL_REF = 0,
    COPSE_CPU_LEVEL_REF_Q8,
    COPSE_CPU_LEVEL_AVX2,
    COPSE_CPU_LEVEL_AVX512,
    COPSE_CPU_LEVEL_AVX512VNNI,
    COPSE_CPU_LEVEL_COUNT
} copse_cpu_level;

typedef struct copse_cpu_kernels {
    const char *name; /* "ref", "ref_q8", "avx2", "avx512", "avx512vnni" */
    copse_cpu_level level;

    /* Quantize k (multiple of 32) floats into the Q8 row whose arrays start
     * at qs, d, s, sum (writable). */
    void (*quantize_q8)(const float *x, int64_t k, int8_t *qs, float *d, float *s, int32_t *sum);

    /* Q8 fast path of matmul, per weight type (NULL: use the f32 path).
     * out[t * out_stride + r] = dot(weight row r, x[t]) for r < n_rows and
     * t < n_tok, weight row r starting at w + r * w_stride, nb = k / 32
     * blocks per row. Kernels may work on several tokens at once (sharing
     * the weight unpacking), but each (row, token) result follows the
     * canonical order alone. */
    void (*mm_q8[COPSE_Q_TYPE_LIMIT])(const uint8_t *w, size_t w_stride, int64_t n_rows,
                                      const copse_cpu_q8_row *x, int64_t n_tok, int64_t nb, float *out,
                                      size_t out_stride);

    /* Layout of Q16 quants in a row: 0 = element order; 1 = blocks in
     * pairs (2p, 2p + 1), each pair's 64 quants stored as [block 2p
     * elements 0..15, block 2p+1 elements 0..15, block 2p elements 16..31,
     * block 2p+1 elements 16..31], a lone last block (odd k / 32) in
     * element order (copse__cpu_q16_pos). A table's quantize_q16 writes
     * and its mm_q16 reads its own layout; the quant values are the same
     * at every level. */
    int q16_pairs;

    /* Quantize k (multiple of 32) floats into the Q16 row whose arrays
     * start at qs, d, s, sum (writable); NULL at level ref. */
    void (*quantize_q16)(const float *x, int64_t k, int16_t *qs, float *d, float *s, int32_t *sum);

    /* Q16 fast path of matmul, per weight type (NULL: use the f32 path);
     * the same contract as mm_q8 with Q16 activation rows. */
    void (*mm_q16[COPSE_Q_TYPE_LIMIT])(const uint8_t *w, size_t w_stride, int64_t n_rows,
                                       const copse_cpu_q16_row *x, int64_t n_tok, int64_t nb, float *out,
                                       size_t out_stride);

    /* f32 dot in the canonical order; w may be f32 or (dot_f16) fp16 bits,
     * converted exactly. */
    float (*dot_f32)(const float *a, const float *b, int64_t n);
    float (*dot_f16)(const uint16_t *w, const float *x, int64_t n);

    /* y[i] = y[i] + a * x[i] (rounded multiply, rounded add), x f32 or fp16. */
    void (*axpy_f32)(float *y, float a, const float *x, int64_t n);
    void (*axpy_f16)(float *y, float a, const uint16_t *x, int64_t n);
    /* y[i] = y[i] * a */
    void (*scale_f32)(float *y, float a, int64_t n);

    /* x[i] = e^x[i] for the softmax's x[i] <= 0, by the canonical
     * polynomial below (within 2 ulp of e^x; positive inputs are taken as
     * 0, inputs below -87 or NaN give 0). */
    void (*exp_neg)(float *x, int64_t n);

    /* Attention inner loops over a chunk of n keys/values at arbitrary rows:
     * out[i] = dot(rows[i], x) (each the canonical f32 dot, as dot_f32 /
     * dot_f16 compute it), and y[e] = y[e] + a[i] * rows[i][e] for i = 0 ..
     * n-1 in order (each step as axpy_f32 / axpy_f16). */
    void (*dot_many_f32)(const float *x, const float *const *rows, int n, int64_t len, float *out);
    void (*dot_many_f16)(const float *x, const uint16_t *const *rows, int n, int64_t len, float *out);
    void (*axpy_many_f32)(float *y, const float *a, const float *const *rows, int n, int64_t len);
    void (*axpy_many_f16)(float *y, const float *a, const uint16_t *const *rows, int n, int64_t len);

    /* Row conversions (round-to-nearest-even to fp16; exact from fp16). */
    void (*f32_to_f16)(const float *x, uint16_t *y, int64_t n);
    void (*f16_to_f32)(const uint16_t *x, float *y, int64_t n);
} copse_cpu_kernels;

/* The table of a level, or NULL if the CPU lacks that level (or it was not
 * built). ref and ref_q8 always exist. */
const copse_cpu_kernels *copse__cpu_kernels_level(copse_cpu_level level);
/* The scalar reference (level ref). */
const copse_cpu_kernels *copse__cpu_kernels_ref(void);
/* The best level the CPU supports, or the one COPSE_CPU_ISA names
 * (ref | ref_q8 | avx2 | avx512 | avx512vnni; avx512 means the best AVX-512
 * level). A level the CPU lacks falls back to the best one below it. */
const copse_cpu_kernels *copse__cpu_kernels_best(void);

/* Per-ISA initialisers: copy `base` into *k and overwrite what they
 * accelerate. Defined only when the ISA's sources are built
 * (COPSE_CPU_HAVE_X86_SIMD). */
void copse__cpu_kernels_init_avx2(copse_cpu_kernels *k, const copse_cpu_kernels *base);
void copse__cpu_kernels_init_avx512(copse_cpu_kernels *k, const copse_cpu_kernels *base);
void copse__cpu_kernels_init_avx512vnni(copse_cpu_kernels *k, const copse_cpu_kernels *base);

/* Q16 entries (cpu-q16-ref.c, cpu-q16-simd.c): overwrite k's quantize_q16
 * and mm_q16 entries for the scalar reference (ref_q8 and up) and, with the
 * same CPU requirements as the init functions above, the SIMD levels. */
void copse__cpu_q16_init_ref(copse_cpu_kernels *k);
void copse__cpu_q16_init_avx2(copse_cpu_kernels *k);
void copse__cpu_q16_init_avx512(copse_cpu_kernels *k);
void copse__cpu_q16_init_avx512vnni(copse_cpu_kernels *k);

/* Where element e (0..31) of block b (of nb) sits in a Q16 row's qs. */
static inline int64_t copse__cpu_q16_pos(int pairs, int64_t nb, int64_t b, int e)
{
    if (!pairs || (nb % 2 == 1 && b == nb - 1))
        return b * COPSE_CPU_QK + e;
    return (b / 2) * 64 + (e / 16) * 32 + (b % 2) * 16 + e % 16;
}

/* The scalar reference of the softmax op (backend-impl.h): y[i] = x[i] *
 * inv_temp (float), m = max y (NaNs ignored), e[i] = expf(y[i] - m), the
 * sum of e in double in index order, out[i] = (float)(e[i] / sum). A row
 * whose y are all -inf or NaN gives NaN. out may alias x. (cpu-ref.c) */
void copse__cpu_softmax_ref(const float *x, int64_t n, float inv_temp, float *out);

/* The canonical 8-lane final reduction (see the header comment). */
static inline float copse__cpu_reduce8(const float a[8])
{
    float s0 = a[0] + a[4], s1 = a[1] + a[5], s2 = a[2] + a[6], s3 = a[3] + a[7];
    float u0 = s0 + s2, u1 = s1 + s3;
    return u0 + u1;
}

#endif /* COPSE_CPU_KERNELS_H */
