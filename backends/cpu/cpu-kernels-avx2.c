/*
 * cpu-kernels-avx2.c — AVX2 + FMA + F16C kernels of the CPU backend.
 *
 * Contract: see cpu-kernels.h. Every kernel here is bit-identical to its
 * scalar counterpart in cpu-ref.c (level ref_q8): integer block sums are
 * exact whatever the order, and every float operation is the same rounded
 * multiply or add, in the canonical order, with lane l of an 8-float vector
 * holding the partial sum of blocks (or elements) b with b % 8 == l. No
 * fused multiply-add is used in a result (the file turns contraction off).
 *
 * The functions are compiled for AVX2 through a target pragma, so the rest
 * of the library stays baseline x86-64; copse__cpu_kernels_init_avx2() must
 * be called only when copse__cpu_features() reports AVX2, FMA and F16C.
 *
 * One exception to bit-identity, outside the contract's domain: fp16
 * conversion of signalling NaNs (F16C quiets them).
 */
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)

#include <stdint.h>
#include <string.h>

#include "cpu-kernels.h"

#include <immintrin.h>

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#pragma clang fp contract(off)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#pragma GCC optimize("fp-contract=off")
#endif

/* ---------------------------------------------------------------- helpers */

/* Canonical final reduction of 8 lanes: (a0+a4 + a2+a6) + (a1+a5 + a3+a7). */
static inline float hsum8(__m256 acc)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    __m128 u = _mm_add_ps(s, _mm_movehl_ps(s, s));
    __m128 r = _mm_add_ss(u, _mm_movehdup_ps(u));
    return _mm_cvtss_f32(r);
}

/* u8 x s8 products of 32 bytes, summed per 4 bytes: 8 int32 (exact: each
 * pair sum is below 2^15 for the operand ranges used here). */
static inline __m256i dot_u8s8(__m256i u, __m256i s)
{
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

/* The 32 nibbles of a Q4 block as bytes: low nibbles (elements 0..15) in
 * the low half, high nibbles (elements 16..31) in the high half. */
static inline __m256i unpack_nibbles(const uint8_t *qs)
{
    __m128i q = _mm_loadu_si128((const __m128i *)qs);
    __m128i m = _mm_set1_epi8(0x0f);
    __m128i lo = _mm_and_si128(q, m);
    __m128i hi = _mm_and_si128(_mm_srli_epi16(q, 4), m);
    return _mm256_set_m128i(hi, lo);
}

/* Lanes j < n all-ones. */
static inline __m256i lane_mask(int n)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

static inline __m256 load_f16x8(const uint16_t h[8])
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)h));
}

/* The fp16 fields at byte 0 (d) and byte 2 (m) of 8 consecutive blocks of
 * bsz bytes, as floats; lanes j >= n are 0 and their blocks are not read.
 * One 32-bit gather per group (no store-to-load round trip). */
static inline void load_block_scales(const uint8_t *blk0, size_t bsz, int n, __m256 *d, __m256 *m)
{
    const __m256i off = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32((int)bsz));
    __m256i v;
    if (n == 8)
        v = _mm256_i32gather_epi32((const int *)(const void *)blk0, off, 1);
    else
        v = _mm256_mask_i32gather_epi32(_mm256_setzero_si256(), (const int *)(const void *)blk0, off,
                                        lane_mask(n), 1);
    __m256i lo = _mm256_and_si256(v, _mm256_set1_epi32(0xffff));
    __m256i hi = _mm256_srli_epi32(v, 16);
    /* per 128-bit lane: [d0..d3, m0..m3] | [d4..d7, m4..m7] -> [d0..d7 | m0..m7] */
    __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi32(lo, hi), _MM_SHUFFLE(3, 1, 2, 0));
    *d = _mm256_cvtph_ps(_mm256_castsi256_si128(p));
    *m = _mm256_cvtph_ps(_mm256_extracti128_si256(p, 1));
}

/* ---------------------------------------------------------------- Q8 activations */

static void avx2_quantize_q8(const float *x, int64_t k, int8_t *qs, float *d, float *s, int32_t *sum)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int64_t b = 0; b < k / COPSE_CPU_QK; b++) {
        const float *xb = x + b * COPSE_CPU_QK;
        __m256 v0 = _mm256_loadu_ps(xb), v1 = _mm256_loadu_ps(xb + 8);
        __m256 v2 = _mm256_loadu_ps(xb + 16), v3 = _mm256_loadu_ps(xb + 24);
        __m256 m = _mm256_max_ps(_mm256_andnot_ps(sign, v0), _mm256_setzero_ps());
        m = _mm256_max_ps(_mm256_andnot_ps(sign, v1), m);
        m = _mm256_max_ps(_mm256_andnot_ps(sign, v2), m);
        m = _mm256_max_ps(_mm256_andnot_ps(sign, v3), m);
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_movehdup_ps(h));
        float amax = _mm_cvtss_f32(h);
        float db = amax / 127.0f;
        float id = db != 0.0f ? 1.0f / db : 0.0f;
        __m256 vid = _mm256_set1_ps(id);
        __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(v0, vid));
        __m256i i1 = _mm256_cvtps_epi32(_mm256_mul_ps(v1, vid));
        __m256i i2 = _mm256_cvtps_epi32(_mm256_mul_ps(v2, vid));
        __m256i i3 = _mm256_cvtps_epi32(_mm256_mul_ps(v3, vid));
        __m256i tot = _mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3));
        __m128i t4 = _mm_add_epi32(_mm256_castsi256_si128(tot), _mm256_extracti128_si256(tot, 1));
        t4 = _mm_add_epi32(t4, _mm_shuffle_epi32(t4, _MM_SHUFFLE(1, 0, 3, 2)));
        t4 = _mm_add_epi32(t4, _mm_shuffle_epi32(t4, _MM_SHUFFLE(2, 3, 0, 1)));
        int32_t sb = _mm_cvtsi128_si32(t4);
        /* int32 -> int8 keeping element order (packs interleave 128-bit lanes) */
        __m256i p01 = _mm256_packs_epi32(i0, i1);
        __m256i p23 = _mm256_packs_epi32(i2, i3);
        __m256i p = _mm256_packs_epi16(p01, p23);
        p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)(qs + b * COPSE_CPU_QK), p);
        d[b] = db;
        sum[b] = sb;
        s[b] = db * (float)sb;
    }
}

/* ---------------------------------------------------------------- Q8 block dot products */

/* A tile of nr rows x nt tokens (nr * nt <= 2, constants after inlining);
 * `kind` selects the weight format. The block loop works on groups of 8
 * blocks, unpacking each weight block and the group's scales once per tile
 * row and loading each activation block once per tile token; the integer
 * partials are folded into the 8 block sums as they come (pairs, then
 * quads), which keeps register pressure low. A short last
 * group pads its integer sums with zeros and its terms with -0.0
 * (x + -0.0 == x exactly). Each token's result is its own canonical
 * sequence. */
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

static inline __attribute__((always_inline)) __m256i weight_bytes(const uint8_t *blk, int kind)
{
    if (kind == K_Q8_0)
        return _mm256_loadu_si256((const __m256i *)(blk + 2));
    if (kind == K_Q5_0)
        return _mm256_or_si256(unpack_nibbles(blk + 6), q5_high_bits(blk + 2));
    if (kind == K_Q5_1)
        return _mm256_or_si256(unpack_nibbles(blk + 8), q5_high_bits(blk + 4));
    return unpack_nibbles(blk + (kind == K_Q4_0 ? 2 : 4));
}

static inline __attribute__((always_inline)) __m256i block_dot(__m256i w, const int8_t *xq, int kind)
{
    __m256i x = _mm256_loadu_si256((const __m256i *)xq);
    if (KIND_SIGNED(kind)) /* |w| as u8 (|-128| = 128 fits), x takes w's sign */
        return dot_u8s8(_mm256_abs_epi8(w), _mm256_sign_epi8(x, w));
    return dot_u8s8(w, x);
}

static inline __attribute__((always_inline)) void tile(const uint8_t *row0, size_t w_stride, const int nr,
                                                       const copse_cpu_q8_row *x, const int nt, int64_t nb,
                                                       const int kind, float *out, size_t out_stride)
{
    const size_t bsz = KIND_BSZ(kind); /* Q4_K: 144 per group */
    __m256 acc[2][2];
    for (int i = 0; i < nr; i++)
        for (int t = 0; t < nt; t++)
            acc[i][t] = _mm256_setzero_ps();
    for (int64_t g = 0; g < nb; g += 8) {
        const int n = nb - g < 8 ? (int)(nb - g) : 8;
        __m256i a[2][2][4]; /* [row][token][pair]: per 128-bit lane, partial sums of the pair */
        for (int j = 0; j < 8; j += 2) {
            for (int i = 0; i < nr; i++) {
                const uint8_t *blk = row0 + (size_t)i * w_stride + (size_t)(g + j) * bsz;
                __m256i w0, w1;
                const uint8_t *sb = row0 + (size_t)i * w_stride + (size_t)(g / 8) * KIND_SUPER_BSZ(kind);
                __m256i sc0 = _mm256_setzero_si256(), sc1 = sc0; /* Q6_K: per-16 scales of j, j+1 */
                if (kind == K_Q4_K) { /* sub-blocks j, j+1: the two nibbles of 32 bytes */
                    __m256i q = _mm256_loadu_si256((const __m256i *)(sb + 16 + 16 * j));
                    w0 = _mm256_and_si256(q, _mm256_set1_epi8(0x0f));
                    w1 = _mm256_and_si256(_mm256_srli_epi16(q, 4), _mm256_set1_epi8(0x0f));
                } else if (kind == K_Q6_K) {
                    w0 = q6_bytes(sb, j);
                    w1 = q6_bytes(sb, j + 1);
                    /* lanes 0-3 cover elements 0-15 (scale 2j), lanes 4-7 elements 16-31 */
                    __m128i s4 = _mm_cvtsi32_si128((int)((uint32_t)sb[192 + 2 * j] | (uint32_t)sb[193 + 2 * j] << 8 |
                                                        (uint32_t)sb[194 + 2 * j] << 16 |
                                                        (uint32_t)sb[195 + 2 * j] << 24));
                    sc0 = _mm256_cvtepi8_epi32(_mm_shuffle_epi8(s4, _mm_setr_epi8(0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0)));
                    sc1 = _mm256_cvtepi8_epi32(_mm_shuffle_epi8(s4, _mm_setr_epi8(2, 2, 2, 2, 3, 3, 3, 3, 0, 0, 0, 0, 0, 0, 0, 0)));
                } else {
                    w0 = j < n ? weight_bytes(blk, kind) : _mm256_setzero_si256();
                    w1 = j + 1 < n ? weight_bytes(blk + bsz, kind) : _mm256_setzero_si256();
                }
                for (int t = 0; t < nt; t++) {
                    const int8_t *xq = x[t].qs + (g + j) * COPSE_CPU_QK;
                    __m256i p0 = j < n ? block_dot(w0, xq, kind) : _mm256_setzero_si256();
                    __m256i p1 = j + 1 < n ? block_dot(w1, xq + COPSE_CPU_QK, kind) : _mm256_setzero_si256();
                    if (kind == K_Q6_K) { /* exact: |partial| < 2^14, |scale| <= 128 */
                        p0 = _mm256_mullo_epi32(p0, sc0);
                        p1 = _mm256_mullo_epi32(p1, sc1);
                    }
                    a[i][t][j / 2] = _mm256_add_epi32(_mm256_unpacklo_epi32(p0, p1), _mm256_unpackhi_epi32(p0, p1));
                }
            }
        }
        __m256i mask = lane_mask(n);
        __m256 dx[2], sx[2];
        __m256i xs8[2];
        for (int t = 0; t < nt; t++) {
            sx[t] = _mm256_setzero_ps();
            xs8[t] = _mm256_setzero_si256();
            if (n == 8) {
                dx[t] = _mm256_loadu_ps(x[t].d + g);
                if (KIND_HAS_MIN(kind))
                    sx[t] = _mm256_loadu_ps(x[t].s + g);
                if (KIND_OFFSET_SHIFT(kind))
                    xs8[t] = _mm256_slli_epi32(_mm256_loadu_si256((const __m256i *)(x[t].sum + g)),
                                               KIND_OFFSET_SHIFT(kind));
            } else {
                dx[t] = _mm256_maskload_ps(x[t].d + g, mask);
                if (KIND_HAS_MIN(kind))
                    sx[t] = _mm256_maskload_ps(x[t].s + g, mask);
                if (KIND_OFFSET_SHIFT(kind))
                    xs8[t] = _mm256_slli_epi32(_mm256_maskload_epi32((const int *)(x[t].sum + g), mask),
                                               KIND_OFFSET_SHIFT(kind));
            }
        }
        for (int i = 0; i < nr; i++) {
            __m256 dw, mw;
            if (kind == K_Q4_K) {
                k4_group_scales(row0 + (size_t)i * w_stride + (size_t)(g / 8) * 144, &dw, &mw);
            } else if (kind == K_Q6_K) {
                uint16_t h;
                memcpy(&h, row0 + (size_t)i * w_stride + (size_t)(g / 8) * 210 + 208, 2);
                dw = _mm256_set1_ps(_cvtsh_ss(h));
                mw = _mm256_setzero_ps();
            } else
                load_block_scales(row0 + (size_t)i * w_stride + (size_t)g * bsz, bsz, n, &dw, &mw);
            for (int t = 0; t < nt; t++) {
                __m256i b03 = _mm256_add_epi32(_mm256_unpacklo_epi64(a[i][t][0], a[i][t][1]),
                                               _mm256_unpackhi_epi64(a[i][t][0], a[i][t][1]));
                __m256i b47 = _mm256_add_epi32(_mm256_unpacklo_epi64(a[i][t][2], a[i][t][3]),
                                               _mm256_unpackhi_epi64(a[i][t][2], a[i][t][3]));
                __m256i isum = _mm256_add_epi32(_mm256_permute2x128_si256(b03, b47, 0x20),
                                                _mm256_permute2x128_si256(b03, b47, 0x31));
                if (KIND_OFFSET_SHIFT(kind))
                    isum = _mm256_sub_epi32(isum, xs8[t]);
                __m256 dd = _mm256_mul_ps(dw, dx[t]);
                __m256 tb = _mm256_mul_ps(dd, _mm256_cvtepi32_ps(isum));
                if (kind == K_Q4_1 || kind == K_Q5_1)
                    tb = _mm256_add_ps(tb, _mm256_mul_ps(mw, sx[t]));
                if (kind == K_Q4_K)
                    tb = _mm256_sub_ps(tb, _mm256_mul_ps(mw, sx[t]));
                if (n < 8)
                    tb = _mm256_blendv_ps(_mm256_set1_ps(-0.0f), tb, _mm256_castsi256_ps(mask));
                acc[i][t] = _mm256_add_ps(acc[i][t], tb);
            }
        }
    }
    for (int i = 0; i < nr; i++)
        for (int t = 0; t < nt; t++)
            out[(size_t)t * out_stride + (size_t)i] = hsum8(acc[i][t]);
}

/* Rows x tokens in tiles: 2 rows x 1 token for a single token (decode),
 * 1 row x 2 tokens otherwise; remainders 1 x 1. */
static inline __attribute__((always_inline)) void mm_kind(const uint8_t *w, size_t w_stride, int64_t n_rows,
                                                          const copse_cpu_q8_row *x, int64_t n_tok, int64_t nb,
                                                          float *out, size_t out_stride, const int kind)
{
    if (n_tok == 1) {
        int64_t r = 0;
        for (; r + 2 <= n_rows; r += 2)
            tile(w + (size_t)r * w_stride, w_stride, 2, x, 1, nb, kind, out + r, out_stride);
        if (r < n_rows)
            tile(w + (size_t)r * w_stride, w_stride, 1, x, 1, nb, kind, out + r, out_stride);
        return;
    }
    for (int64_t r = 0; r < n_rows; r++) {
        const uint8_t *row = w + (size_t)r * w_stride;
        int64_t t = 0;
        for (; t + 2 <= n_tok; t += 2)
            tile(row, w_stride, 1, x + t, 2, nb, kind, out + (size_t)t * out_stride + (size_t)r, out_stride);
        if (t < n_tok)
            tile(row, w_stride, 1, x + t, 1, nb, kind, out + (size_t)t * out_stride + (size_t)r, out_stride);
    }
}

static void avx2_mm_q4_k(const uint8_t *w, size_t w_stride, int64_t n_rows, const copse_cpu_q8_row *x,
                         int64_t n_tok, int64_t nb, float *out, size_t out_stride)
{
    mm_kind(w, w_stride, n_rows, x, n_tok, nb, out, out_stride, K_Q4_K);
}

static void avx2_mm_q5_0(const uint8_t *w, size_t w_stride, int64_t n_rows, const copse_cpu_q8_row *x,
                         int64_t n_tok, int64_t nb, float *out, size_t out_stride)
{
    mm_kind(w, w_stride, n_rows, x, n_tok, nb, out, out_stride, K_Q5_0);
}

static void avx2_mm_q5_1(const uint8_t *w, size_t w_stride, int64_t n_rows, const copse_cpu_q8_row *x,
                         int64_t n_tok, int64_t nb, float *out, size_t out_stride)
{
    mm_kind(w, w_stride, n_rows, x, n_tok, nb, out, out_stride, K_Q5_1);
}

static void avx2_mm_q6_k(const uint8_t *w, size_t w_stride, int64_t n_rows, const copse_cpu_q8_row *x,
                         int64_t n_tok, int64_t nb, float *out, size_t out_stride)
{
    mm_kind(w, w_stride, n_rows, x, n_tok, nb, out, out_stride, K_Q6_K);
}

static void avx2_mm_q8_0(const uint8_t *w, size_t w_stride, int64_t n_rows, const copse_cpu_q8_row *x,
                         int64_t n_tok, int64_t nb, float *out, size_t out_stride)
{
    mm_kind(w, w_stride, n_rows, x, n_tok, nb, out, out_stride, K_Q8_0);
}

static void avx2_mm_q4_0(const uint8_t *w, size_t w_stride, int64_t n_rows, const copse_cpu_q8_row *x,
                         int64_t n_tok, int64_t nb, float *out, size_t out_stride)
{
    mm_kind(w, w_stride, n_rows, x, n_tok, nb, out, out_stride, K_Q4_0);
}

static void avx2_mm_q4_1(const uint8_t *w, size_t w_stride, int64_t n_rows, const copse_cpu_q8_row *x,
                         int64_t n_tok, int64_t nb, float *out, size_t out_stride)
{
    mm_kind(w, w_stride, n_rows, x, n_tok, nb, out, out_stride, K_Q4_1);
}

/* ---------------------------------------------------------------- f32 primitives */

/* Tails (n % 8 elements) finish in scalar code on the stored lanes, exactly
 * as the reference adds them. */
static float avx2_dot_f32(const float *a, const float *b, int64_t n)
{
    __m256 acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
    if (i == n)
        return hsum8(acc);
    float l[8];
    _mm256_storeu_ps(l, acc);
    for (; i < n; i++) {
        float p = a[i] * b[i];
        l[i % 8] = l[i % 8] + p;
    }
    return copse__cpu_reduce8(l);
}

static float avx2_dot_f16(const uint16_t *w, const float *x, int64_t n)
{
    __m256 acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        acc = _mm256_add_ps(acc, _mm256_mul_ps(load_f16x8(w + i), _mm256_loadu_ps(x + i)));
    if (i == n)
        return hsum8(acc);
    float l[8];
    _mm256_storeu_ps(l, acc);
    for (; i < n; i++) {
        float p = _cvtsh_ss(w[i]) * x[i];
        l[i % 8] = l[i % 8] + p;
    }
    return copse__cpu_reduce8(l);
}

static void avx2_axpy_f32(float *y, float a, const float *x, int64_t n)
{
    __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(y + i), _mm256_mul_ps(va, _mm256_loadu_ps(x + i))));
    for (; i < n; i++) {
        float p = a * x[i];
        y[i] = y[i] + p;
    }
}

static void avx2_axpy_f16(float *y, float a, const uint16_t *x, int64_t n)
{
    __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(y + i), _mm256_mul_ps(va, load_f16x8(x + i))));
    for (; i < n; i++) {
        float p = a * _cvtsh_ss(x[i]);
        y[i] = y[i] + p;
    }
}

static void avx2_scale_f32(float *y, float a, int64_t n)
{
    __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_loadu_ps(y + i), va));
    for (; i < n; i++)
        y[i] = y[i] * a;
}

/* Four rows at a time, one 8-lane accumulator each (the canonical dot per
 * row, interleaved for instruction-level parallelism). len % 8 tails and
 * leftover rows go through the single-row kernels. */
static inline __attribute__((always_inline)) __m256 ld8(const void *p, int f16)
{
    return f16 ? load_f16x8(p) : _mm256_loadu_ps(p);
}

static inline __attribute__((always_inline)) void dot_many(const float *x, const void *const *rows, int n,
                                                           int64_t len, float *out, int f16)
{
    int i = 0;
    if (len % 8 == 0) {
        for (; i + 4 <= n; i += 4) {
            const char *r0 = rows[i], *r1 = rows[i + 1], *r2 = rows[i + 2], *r3 = rows[i + 3];
            const size_t es = f16 ? 2 : 4;
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (int64_t e = 0; e < len; e += 8) {
                __m256 xv = _mm256_loadu_ps(x + e);
                a0 = _mm256_add_ps(a0, _mm256_mul_ps(ld8(r0 + e * es, f16), xv));
                a1 = _mm256_add_ps(a1, _mm256_mul_ps(ld8(r1 + e * es, f16), xv));
                a2 = _mm256_add_ps(a2, _mm256_mul_ps(ld8(r2 + e * es, f16), xv));
                a3 = _mm256_add_ps(a3, _mm256_mul_ps(ld8(r3 + e * es, f16), xv));
            }
            out[i] = hsum8(a0);
            out[i + 1] = hsum8(a1);
            out[i + 2] = hsum8(a2);
            out[i + 3] = hsum8(a3);
        }
    }
    for (; i < n; i++)
        out[i] = f16 ? avx2_dot_f16(rows[i], x, len) : avx2_dot_f32(rows[i], x, len);
}

static void avx2_dot_many_f32(const float *x, const float *const *rows, int n, int64_t len, float *out)
{
    dot_many(x, (const void *const *)rows, n, len, out, 0);
}

static void avx2_dot_many_f16(const float *x, const uint16_t *const *rows, int n, int64_t len, float *out)
{
    dot_many(x, (const void *const *)rows, n, len, out, 1);
}

/* y stays in registers for 32 columns at a time while the rows stream by;
 * per element the same sequence of rounded multiply-adds as axpy. */
static inline __attribute__((always_inline)) void axpy_many(float *y, const float *a, const void *const *rows,
                                                            int n, int64_t len, int f16)
{
    const size_t es = f16 ? 2 : 4;
    int64_t e = 0;
    for (; e + 32 <= len; e += 32) {
        __m256 y0 = _mm256_loadu_ps(y + e), y1 = _mm256_loadu_ps(y + e + 8);
        __m256 y2 = _mm256_loadu_ps(y + e + 16), y3 = _mm256_loadu_ps(y + e + 24);
        for (int i = 0; i < n; i++) {
            const char *r = (const char *)rows[i] + e * es;
            __m256 av = _mm256_set1_ps(a[i]);
            y0 = _mm256_add_ps(y0, _mm256_mul_ps(av, ld8(r, f16)));
            y1 = _mm256_add_ps(y1, _mm256_mul_ps(av, ld8(r + 8 * es, f16)));
            y2 = _mm256_add_ps(y2, _mm256_mul_ps(av, ld8(r + 16 * es, f16)));
            y3 = _mm256_add_ps(y3, _mm256_mul_ps(av, ld8(r + 24 * es, f16)));
        }
        _mm256_storeu_ps(y + e, y0);
        _mm256_storeu_ps(y + e + 8, y1);
        _mm256_storeu_ps(y + e + 16, y2);
        _mm256_storeu_ps(y + e + 24, y3);
    }
    if (e < len) {
        for (int i = 0; i < n; i++) {
            if (f16)
                avx2_axpy_f16(y + e, a[i], (const uint16_t *)rows[i] + e, len - e);
            else
                avx2_axpy_f32(y + e, a[i], (const float *)rows[i] + e, len - e);
        }
    }
}

static void avx2_axpy_many_f32(float *y, const float *a, const float *const *rows, int n, int64_t len)
{
    axpy_many(y, a, (const void *const *)rows, n, len, 0);
}

static void avx2_axpy_many_f16(float *y, const float *a, const uint16_t *const *rows, int n, int64_t len)
{
    axpy_many(y, a, (const void *const *)rows, n, len, 1);
}

/* The canonical exp (cpu-kernels.h), 8 lanes at a time, same operations. */
static inline __m256 exp_neg8(__m256 x)
{
    __m256 ok = _mm256_cmp_ps(x, _mm256_set1_ps(-87.0f), _CMP_GE_OQ); /* false for NaN */
    x = _mm256_min_ps(x, _mm256_setzero_ps());
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_sub_ps(x, _mm256_mul_ps(n, _mm256_set1_ps(0.693359375f)));
    r = _mm256_sub_ps(r, _mm256_mul_ps(n, _mm256_set1_ps(-2.12194440e-4f)));
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_add_ps(_mm256_mul_ps(y, r), _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_add_ps(_mm256_mul_ps(y, r), _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_add_ps(_mm256_mul_ps(y, r), _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_add_ps(_mm256_mul_ps(y, r), _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_add_ps(_mm256_mul_ps(y, r), _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_mul_ps(y, _mm256_mul_ps(r, r));
    y = _mm256_add_ps(y, r);
    y = _mm256_add_ps(y, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_and_ps(_mm256_mul_ps(y, _mm256_castsi256_ps(e)), ok);
}

static void avx2_exp_neg(float *x, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, exp_neg8(_mm256_loadu_ps(x + i)));
    if (i < n) {
        float t[8] = {0};
        memcpy(t, x + i, (size_t)(n - i) * sizeof(float));
        _mm256_storeu_ps(t, exp_neg8(_mm256_loadu_ps(t)));
        memcpy(x + i, t, (size_t)(n - i) * sizeof(float));
    }
}

static void avx2_f32_to_f16(const float *x, uint16_t *y, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(y + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    for (; i < n; i++)
        y[i] = copse__f32_to_fp16(x[i]);
}

static void avx2_f16_to_f32(const uint16_t *x, float *y, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, load_f16x8(x + i));
    for (; i < n; i++)
        y[i] = _cvtsh_ss(x[i]);
}

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

/* ---------------------------------------------------------------- table */

void copse__cpu_kernels_init_avx2(copse_cpu_kernels *k, const copse_cpu_kernels *base)
{
    *k = *base;
    k->quantize_q8 = avx2_quantize_q8;
    k->mm_q8[COPSE_Q_Q8_0] = avx2_mm_q8_0;
    k->mm_q8[COPSE_Q_Q4_0] = avx2_mm_q4_0;
    k->mm_q8[COPSE_Q_Q4_1] = avx2_mm_q4_1;
    k->mm_q8[COPSE_Q_Q4_K] = avx2_mm_q4_k;
    k->mm_q8[COPSE_Q_Q6_K] = avx2_mm_q6_k;
    k->mm_q8[COPSE_Q_Q5_0] = avx2_mm_q5_0;
    k->mm_q8[COPSE_Q_Q5_1] = avx2_mm_q5_1;
    k->dot_f32 = avx2_dot_f32;
    k->dot_f16 = avx2_dot_f16;
    k->axpy_f32 = avx2_axpy_f32;
    k->axpy_f16 = avx2_axpy_f16;
    k->scale_f32 = avx2_scale_f32;
    k->exp_neg = avx2_exp_neg;
    k->dot_many_f32 = avx2_dot_many_f32;
    k->dot_many_f16 = avx2_dot_many_f16;
    k->axpy_many_f32 = avx2_axpy_many_f32;
    k->axpy_many_f16 = avx2_axpy_many_f16;
    k->f32_to_f16 = avx2_f32_to_f16;
    k->f16_to_f32 = avx2_f16_to_f32;
}

#else
/* Not x86: nothing to build (ISO C wants a declaration in every file). */
typedef int copse_cpu_no_x86_simd_;
#endif /* x86 */
