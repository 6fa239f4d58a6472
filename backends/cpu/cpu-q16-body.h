/*
 * cpu-q16-body.h — the Q16 block-dot kernels, included three times by
 * cpu-q16-simd.c (only there), each inside its own target region:
 * Q16_ISA 0 (AVX2: weights widened to 2 x 16 int16, VPMADDWD), 1
 * (AVX-512BW: 32 int16 per register, VPMADDWD) and 2 (AVX-512 VNNI:
 * VPDPWSSD). SFX(name) names the variant's functions. No include guard, on
 * purpose.
 *
 * Layout of the work: a tile of nr rows x nt tokens (constants after
 * inlining, nr in {1, 4}, nt in {1, 2, 4}) walks the row in groups of 8
 * blocks (tokens in chunks of 16 over a call's rows). Each weight block is
 * loaded and widened to int16 once per tile row and multiplied with the
 * tile's nt activation blocks (AVX-512: two blocks per product, activations
 * in the q16_pairs layout, so a product's lanes 0..7 are block j's and
 * 8..15 block j+1's, with no shuffles on the activation side); the exact int32
 * partials of the 8 blocks are reduced to the 8 block sums (lane j = block
 * g + j), and the float part of cpu-kernels.h's canonical Q16 term is done
 * on 8 lanes at once, lane b % 8, exactly the scalar sequence. A short last
 * group pads its sums with 0 and its terms with -0.0 (x + -0.0 == x). So a
 * (row, token) result never depends on the tile it was computed in.
 *
 * From PANEL_MIN_TOK tokens on, the AVX-512 variants take Q8_0 / Q4_0 /
 * Q4_1 rows in 16-row panels instead (rows in lanes, see "panels" below);
 * rows left over (fewer than 16) still go through the tiles.
 */

/* ---------------------------------------------------------------- helpers */

static inline float SFX(hsum8)(__m256 acc)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    __m128 u = _mm_add_ps(s, _mm_movehl_ps(s, s));
    __m128 r = _mm_add_ss(u, _mm_movehdup_ps(u));
    return _mm_cvtss_f32(r);
}

/* 8 vectors of int32 partials (p[j] for block j) -> the 8 block sums. */
static inline __m256i SFX(reduce8)(const __m256i p[8])
{
    __m256i a01 = _mm256_hadd_epi32(p[0], p[1]), a23 = _mm256_hadd_epi32(p[2], p[3]);
    __m256i a45 = _mm256_hadd_epi32(p[4], p[5]), a67 = _mm256_hadd_epi32(p[6], p[7]);
    __m256i b03 = _mm256_hadd_epi32(a01, a23), b47 = _mm256_hadd_epi32(a45, a67);
    return _mm256_add_epi32(_mm256_permute2x128_si256(b03, b47, 0x20), _mm256_permute2x128_si256(b03, b47, 0x31));
}

#if Q16_ISA != 0
/* v[k] holds the int32 partials of blocks 2k (lanes 0..7) and 2k+1 (lanes
 * 8..15); returns the 8 block sums in block order. */
static inline __m256i SFX(sum4x2)(const __m512i v[4])
{
    __m512i a01 = _mm512_add_epi32(_mm512_unpacklo_epi32(v[0], v[1]), _mm512_unpackhi_epi32(v[0], v[1]));
    __m512i a23 = _mm512_add_epi32(_mm512_unpacklo_epi32(v[2], v[3]), _mm512_unpackhi_epi32(v[2], v[3]));
    __m512i b = _mm512_add_epi32(_mm512_unpacklo_epi64(a01, a23), _mm512_unpackhi_epi64(a01, a23));
    __m512i c = _mm512_add_epi32(b, _mm512_shuffle_i32x4(b, b, _MM_SHUFFLE(2, 3, 0, 1)));
    __m128i e = _mm512_castsi512_si128(c), o = _mm512_extracti32x4_epi32(c, 2);
    return _mm256_set_m128i(_mm_unpackhi_epi32(e, o), _mm_unpacklo_epi32(e, o));
}

#if Q16_ISA == 2
#define Q16_DOT(acc, a, b) _mm512_dpwssd_epi32((acc), (a), (b))
#else
#define Q16_DOT(acc, a, b) _mm512_add_epi32((acc), _mm512_madd_epi16((a), (b)))
#endif
#endif

/* The 32 nibbles of a Q4 block as bytes in element order. */
static inline __m256i SFX(nibbles)(const uint8_t *qs)
{
    __m128i q = _mm_loadu_si128((const __m128i *)qs);
    __m128i m = _mm_set1_epi8(0x0f);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), m), _mm_and_si128(q, m));
}

/* The 5th bits of a Q5 block (qh, bit i for element i) as bytes 0x10 / 0. */
static inline __m256i SFX(q5_high)(const uint8_t *qhp)
{
    uint32_t qh;
    memcpy(&qh, qhp, 4);
    __m256i v = _mm256_set1_epi32((int)qh);
    const __m256i sel = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                         2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    v = _mm256_cmpeq_epi8(_mm256_and_si256(_mm256_shuffle_epi8(v, sel), bit), bit);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x10));
}

/* Sub-block j of a Q6_K super-block as 32 signed bytes q - 32. */
static inline __m256i SFX(q6_bytes)(const uint8_t *sb, int j)
{
    const __m256i m4 = _mm256_set1_epi8(0x0f), m2 = _mm256_set1_epi8(0x03);
    __m256i ql = _mm256_loadu_si256((const __m256i *)(sb + 64 * (j / 4) + 32 * (j % 2)));
    __m256i qh = _mm256_loadu_si256((const __m256i *)(sb + 128 + 32 * (j / 4)));
    __m256i lo = (j % 4) >= 2 ? _mm256_and_si256(_mm256_srli_epi16(ql, 4), m4) : _mm256_and_si256(ql, m4);
    __m256i hi = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * (j % 4))), m2);
    return _mm256_sub_epi8(_mm256_or_si256(lo, _mm256_slli_epi16(hi, 4)), _mm256_set1_epi8(32));
}

/* Block b of a row as the 32 signed integers the canonical isum multiplies
 * (Q4_0 / Q5_0 offsets applied: the same integer sums). */
static inline __attribute__((always_inline)) __m256i SFX(wbytes)(const uint8_t *row, int64_t b, const int kind)
{
    if (kind == K_Q8_0)
        return _mm256_loadu_si256((const __m256i *)(row + b * 34 + 2));
    if (kind == K_Q4_0)
        return _mm256_sub_epi8(SFX(nibbles)(row + b * 18 + 2), _mm256_set1_epi8(8));
    if (kind == K_Q4_1)
        return SFX(nibbles)(row + b * 20 + 4);
    if (kind == K_Q5_0)
        return _mm256_sub_epi8(_mm256_or_si256(SFX(nibbles)(row + b * 22 + 6), SFX(q5_high)(row + b * 22 + 2)),
                               _mm256_set1_epi8(16));
    if (kind == K_Q5_1)
        return _mm256_or_si256(SFX(nibbles)(row + b * 24 + 8), SFX(q5_high)(row + b * 24 + 4));
    const int j = (int)(b % 8);
    if (kind == K_Q4_K) {
        __m256i q = _mm256_loadu_si256((const __m256i *)(row + (b / 8) * 144 + 16 + 32 * (j / 2)));
        if (j % 2)
            q = _mm256_srli_epi16(q, 4);
        return _mm256_and_si256(q, _mm256_set1_epi8(0x0f));
    }
    return SFX(q6_bytes)(row + (b / 8) * 210, j); /* K_Q6_K */
}

#if Q16_ISA != 0
/* Blocks b and b + 1 (b even; `two` = whether b + 1 exists) as the bytes
 * of the pair layout: *a = elements 0..15 of both, *c = elements 16..31.
 * The 4-bit formats take their nibbles straight into place. */
static inline __attribute__((always_inline)) void SFX(wpair)(const uint8_t *row, int64_t b, int two, const int kind,
                                                            __m256i *a, __m256i *c)
{
    const __m256i m = _mm256_set1_epi8(0x0f);
    if (kind == K_Q4_K) { /* b, b + 1: low / high nibbles of the same 32 bytes */
        __m256i q = _mm256_loadu_si256((const __m256i *)(row + (b / 8) * 144 + 16 + 16 * (b % 8)));
        __m256i lo = _mm256_and_si256(q, m), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m);
        *a = _mm256_permute2x128_si256(lo, hi, 0x20);
        *c = _mm256_permute2x128_si256(lo, hi, 0x31);
        return;
    }
    if ((kind == K_Q4_0 || kind == K_Q4_1) && two) {
        const size_t bsz = KIND_BSZ(kind), at = kind == K_Q4_0 ? 2 : 4;
        __m256i q = _mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(row + (size_t)b * bsz + at))),
            _mm_loadu_si128((const __m128i *)(row + (size_t)(b + 1) * bsz + at)), 1);
        *a = _mm256_and_si256(q, m);
        *c = _mm256_and_si256(_mm256_srli_epi16(q, 4), m);
        if (kind == K_Q4_0) {
            *a = _mm256_sub_epi8(*a, _mm256_set1_epi8(8));
            *c = _mm256_sub_epi8(*c, _mm256_set1_epi8(8));
        }
        return;
    }
    __m256i w0 = SFX(wbytes)(row, b, kind);
    __m256i w1 = two ? SFX(wbytes)(row, b + 1, kind) : _mm256_setzero_si256();
    *a = _mm256_inserti128_si256(w0, _mm256_castsi256_si128(w1), 1);
    *c = _mm256_permute2x128_si256(w0, w1, 0x31);
}
#endif

/* The fp16 fields at byte 0 (d) and byte 2 (m) of 8 consecutive blocks of
 * bsz bytes, as floats; lanes j >= n are 0 and their blocks are not read. */
static inline void SFX(block_scales)(const uint8_t *blk0, size_t bsz, int n, __m256 *d, __m256 *m)
{
    const __m256i off = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32((int)bsz));
    const __m256i lm = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    __m256i v = _mm256_mask_i32gather_epi32(_mm256_setzero_si256(), (const int *)(const void *)blk0, off, lm, 1);
    __m256i lo = _mm256_and_si256(v, _mm256_set1_epi32(0xffff));
    __m256i hi = _mm256_srli_epi32(v, 16);
    __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi32(lo, hi), _MM_SHUFFLE(3, 1, 2, 0));
    *d = _mm256_cvtph_ps(_mm256_castsi256_si128(p));
    *m = _mm256_cvtph_ps(_mm256_extracti128_si256(p, 1));
}

/* d * sc_j and dmin * mn_j of a Q4_K super-block, j = 0..7 in lanes. */
static inline void SFX(k4_scales)(const uint8_t *blk, __m256 *dw, __m256 *mw)
{
    uint32_t u0, u1, u2;
    uint16_t h[2];
    memcpy(h, blk, 4);
    memcpy(&u0, blk + 4, 4);
    memcpy(&u1, blk + 8, 4);
    memcpy(&u2, blk + 12, 4);
    uint64_t vs = (uint64_t)(u0 & 0x3f3f3f3fu) | (uint64_t)((u2 & 0x0f0f0f0fu) | ((u0 >> 2) & 0x30303030u)) << 32;
    uint64_t vm = (uint64_t)(u1 & 0x3f3f3f3fu) | (uint64_t)(((u2 >> 4) & 0x0f0f0f0fu) | ((u1 >> 2) & 0x30303030u)) << 32;
    __m256 sc = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)vs)));
    __m256 mn = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)vm)));
    *dw = _mm256_mul_ps(_mm256_set1_ps(_cvtsh_ss(h[0])), sc);
    *mw = _mm256_mul_ps(_mm256_set1_ps(_cvtsh_ss(h[1])), mn);
}

/* ---------------------------------------------------------------- tile */

static inline __attribute__((always_inline)) void SFX(tile)(const uint8_t *row0, size_t w_stride, const int nr,
                                                           const copse_cpu_q16_row *x, const int nt, int64_t nb,
                                                           const int kind, float *out, size_t out_stride)
{
    const int q6 = kind == K_Q6_K;
    __m256 acc[4][4];
    for (int i = 0; i < nr; i++)
        for (int t = 0; t < nt; t++)
            acc[i][t] = _mm256_setzero_ps();
    for (int64_t g = 0; g < nb; g += 8) {
        const int n = nb - g < 8 ? (int)(nb - g) : 8;
#if Q16_ISA == 0
        /* int32 partials per [row][token][block]; P1: Q6_K's second half */
        __m256i P0[4][4][8], P1[4][4][8];
        for (int j = 0; j < 8; j++) {
            if (j >= n) {
                for (int i = 0; i < nr; i++)
                    for (int t = 0; t < nt; t++)
                        P0[i][t][j] = P1[i][t][j] = _mm256_setzero_si256();
                continue;
            }
            for (int i = 0; i < nr; i++) {
                __m256i wb = SFX(wbytes)(row0 + (size_t)i * w_stride, g + j, kind);
                __m256i w0 = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(wb));
                __m256i w1 = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(wb, 1));
                for (int t = 0; t < nt; t++) {
                    const int16_t *xq = x[t].qs + (g + j) * COPSE_CPU_QK;
                    __m256i lo = _mm256_madd_epi16(w0, _mm256_loadu_si256((const __m256i *)xq));
                    __m256i hi = _mm256_madd_epi16(w1, _mm256_loadu_si256((const __m256i *)(xq + 16)));
                    if (q6) {
                        P0[i][t][j] = lo;
                        P1[i][t][j] = hi;
                    } else
                        P0[i][t][j] = _mm256_add_epi32(lo, hi);
                }
            }
        }
#else
        /* Blocks in pairs (the q16_pairs layout): A = elements 0..15 of
         * blocks j and j+1, B = elements 16..31; lanes 0..7 of a product
         * belong to block j, lanes 8..15 to block j+1. Q1: Q6_K's B half. */
        __m512i Q0[4][4][4], Q1[4][4][4];
        for (int j = 0; j < 8; j += 2) {
            if (j >= n) {
                for (int i = 0; i < nr; i++)
                    for (int t = 0; t < nt; t++)
                        Q0[i][t][j / 2] = Q1[i][t][j / 2] = _mm512_setzero_si512();
                continue;
            }
            const int two = j + 1 < n;
            for (int i = 0; i < nr; i++) {
                const uint8_t *row = row0 + (size_t)i * w_stride;
                __m256i ba, bc;
                SFX(wpair)(row, g + j, two, kind, &ba, &bc);
                __m512i wa = _mm512_cvtepi8_epi16(ba), wc = _mm512_cvtepi8_epi16(bc);
                for (int t = 0; t < nt; t++) {
                    const int16_t *xq = x[t].qs + (g + j) * COPSE_CPU_QK;
                    __m512i xa, xc;
                    if (two) {
                        xa = _mm512_loadu_si512(xq);
                        xc = _mm512_loadu_si512(xq + 32);
                    } else { /* a lone last block, element order */
                        xa = _mm512_maskz_loadu_epi16(0xffff, xq);
                        xc = _mm512_maskz_loadu_epi16(0xffff, xq + 16);
                    }
                    if (q6) {
                        Q0[i][t][j / 2] = Q16_DOT(_mm512_setzero_si512(), wa, xa);
                        Q1[i][t][j / 2] = Q16_DOT(_mm512_setzero_si512(), wc, xc);
                    } else
                        Q0[i][t][j / 2] = Q16_DOT(Q16_DOT(_mm512_setzero_si512(), wa, xa), wc, xc);
                }
            }
        }
#endif
        const __m256i lm = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        __m256 dx[4], sx[4];
        for (int t = 0; t < nt; t++) {
            dx[t] = _mm256_maskload_ps(x[t].d + g, lm);
            sx[t] = KIND_HAS_MIN(kind) ? _mm256_maskload_ps(x[t].s + g, lm) : _mm256_setzero_ps();
        }
        for (int i = 0; i < nr; i++) {
            const uint8_t *row = row0 + (size_t)i * w_stride;
            __m256 dw, mw = _mm256_setzero_ps();
            __m256i s0 = _mm256_setzero_si256(), s1 = s0;
            if (kind == K_Q4_K) {
                SFX(k4_scales)(row + (size_t)(g / 8) * 144, &dw, &mw);
            } else if (q6) {
                const uint8_t *sb = row + (size_t)(g / 8) * 210;
                uint16_t h;
                memcpy(&h, sb + 208, 2);
                dw = _mm256_set1_ps(_cvtsh_ss(h));
                __m128i sc = _mm_loadu_si128((const __m128i *)(sb + 192));
                s0 = _mm256_cvtepi8_epi32(_mm_shuffle_epi8(sc, _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 0, 0, 0, 0, 0, 0, 0, 0)));
                s1 = _mm256_cvtepi8_epi32(_mm_shuffle_epi8(sc, _mm_setr_epi8(1, 3, 5, 7, 9, 11, 13, 15, 0, 0, 0, 0, 0, 0, 0, 0)));
            } else
                SFX(block_scales)(row + (size_t)g * KIND_BSZ(kind), KIND_BSZ(kind), n, &dw, &mw);
            for (int t = 0; t < nt; t++) {
#if Q16_ISA == 0
                __m256i h0 = SFX(reduce8)(P0[i][t]);
#else
                __m256i h0 = SFX(sum4x2)(Q0[i][t]);
#endif
                __m256 f;
                if (q6) { /* exact int32 products, then two conversions and one add */
#if Q16_ISA == 0
                    __m256i h1 = SFX(reduce8)(P1[i][t]);
#else
                    __m256i h1 = SFX(sum4x2)(Q1[i][t]);
#endif
                    f = _mm256_add_ps(_mm256_cvtepi32_ps(_mm256_mullo_epi32(h0, s0)),
                                      _mm256_cvtepi32_ps(_mm256_mullo_epi32(h1, s1)));
                } else
                    f = _mm256_cvtepi32_ps(h0);
                __m256 tb = _mm256_mul_ps(_mm256_mul_ps(dw, dx[t]), f);
                if (kind == K_Q4_1 || kind == K_Q5_1)
                    tb = _mm256_add_ps(tb, _mm256_mul_ps(mw, sx[t]));
                if (kind == K_Q4_K)
                    tb = _mm256_sub_ps(tb, _mm256_mul_ps(mw, sx[t]));
                if (n < 8)
                    tb = _mm256_blendv_ps(_mm256_set1_ps(-0.0f), tb, _mm256_castsi256_ps(lm));
                acc[i][t] = _mm256_add_ps(acc[i][t], tb);
            }
        }
    }
    for (int i = 0; i < nr; i++)
        for (int t = 0; t < nt; t++)
            out[(size_t)t * out_stride + (size_t)i] = SFX(hsum8)(acc[i][t]);
}

/* ---------------------------------------------------------------- panels */

#if Q16_ISA != 0
/* Rows in lanes, for several tokens (AVX-512 levels; Q8_0, Q4_0, Q4_1):
 * a panel of 16 rows is walked block by block; the block's weights are
 * transposed so that lane r of W[p] holds row r's elements 2p and 2p + 1 as
 * two int16, and each token's pair p is broadcast against it, so a block's
 * 16 exact int32 sums (one per row) come out of 16 multiply-adds with no
 * horizontal reduction. The float part is cpu-kernels.h's canonical term
 * for 16 rows at once; term b goes to the token's accumulator b % 8 (16
 * rows each), and the final reduction is the canonical one, lane-wise. So
 * every (row, token) result is the same sequence of float operations as in
 * the tiles above and the scalar reference. */

/* 16-byte chunks at p + r * stride (r = 0..15) transposed to dwords:
 * lane r of o[q] = dword q of row r's chunk. */
static inline __attribute__((always_inline)) void SFX(t16x4)(const uint8_t *p, size_t stride, __m512i o[4])
{
    __m512i z[4];
    for (int k = 0; k < 4; k++) {
        __m512i v = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(p + (size_t)k * stride)));
        v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(p + (size_t)(k + 4) * stride)), 1);
        v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(p + (size_t)(k + 8) * stride)), 2);
        z[k] = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(p + (size_t)(k + 12) * stride)), 3);
    }
    __m512i t0 = _mm512_unpacklo_epi32(z[0], z[1]), t1 = _mm512_unpackhi_epi32(z[0], z[1]);
    __m512i t2 = _mm512_unpacklo_epi32(z[2], z[3]), t3 = _mm512_unpackhi_epi32(z[2], z[3]);
    o[0] = _mm512_unpacklo_epi64(t0, t2);
    o[1] = _mm512_unpackhi_epi64(t0, t2);
    o[2] = _mm512_unpacklo_epi64(t1, t3);
    o[3] = _mm512_unpackhi_epi64(t1, t3);
}

/* Block b of 16 rows: W[p] (pairs of int16, see above), dw = the rows'
 * scales, mw = their mins (Q4_1; else unused). */
static inline __attribute__((always_inline)) void SFX(pwblock)(const uint8_t *row0, size_t stride, int64_t b,
                                                              const int kind, __m512i W[16], __m512 *dw,
                                                              __m512 *mw)
{
    const size_t bsz = KIND_BSZ(kind);
    const uint8_t *blk = row0 + (size_t)b * bsz;
    __m512i h[4], q[8];
    SFX(t16x4)(blk, stride, h); /* d (and m) in the first dword */
    *dw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(h[0]));
    *mw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(h[0], 16)));
    if (kind == K_Q8_0) {
        /* bytes 4j, 4j + 1 (and 4j + 2, 4j + 3) of each dword, sign-extended */
        const __m512i sa = _mm512_broadcast_i32x4(
            _mm_setr_epi8(-128, 0, -128, 1, -128, 4, -128, 5, -128, 8, -128, 9, -128, 12, -128, 13));
        const __m512i sb = _mm512_broadcast_i32x4(
            _mm_setr_epi8(-128, 2, -128, 3, -128, 6, -128, 7, -128, 10, -128, 11, -128, 14, -128, 15));
        SFX(t16x4)(blk + 2, stride, q);
        SFX(t16x4)(blk + 18, stride, q + 4);
        for (int j = 0; j < 8; j++) {
            W[2 * j] = _mm512_srai_epi16(_mm512_shuffle_epi8(q[j], sa), 8);
            W[2 * j + 1] = _mm512_srai_epi16(_mm512_shuffle_epi8(q[j], sb), 8);
        }
        return;
    }
    /* Q4: byte i holds element i (low nibble) and i + 16 (high nibble) */
    const __m512i sa = _mm512_broadcast_i32x4(
        _mm_setr_epi8(0, -128, 1, -128, 4, -128, 5, -128, 8, -128, 9, -128, 12, -128, 13, -128));
    const __m512i sb = _mm512_broadcast_i32x4(
        _mm_setr_epi8(2, -128, 3, -128, 6, -128, 7, -128, 10, -128, 11, -128, 14, -128, 15, -128));
    const __m512i m = _mm512_set1_epi16(0x0f), off = _mm512_set1_epi16(kind == K_Q4_0 ? 8 : 0);
    SFX(t16x4)(blk + (kind == K_Q4_0 ? 2 : 4), stride, q);
    for (int j = 0; j < 4; j++) {
        __m512i a = _mm512_shuffle_epi8(q[j], sa), c = _mm512_shuffle_epi8(q[j], sb);
        W[2 * j] = _mm512_and_si512(a, m);
        W[2 * j + 1] = _mm512_and_si512(c, m);
        W[8 + 2 * j] = _mm512_srli_epi16(a, 4);
        W[8 + 2 * j + 1] = _mm512_srli_epi16(c, 4);
        if (kind == K_Q4_0)
            for (int u = 0; u < 4; u++)
                W[(u / 2) * 8 + 2 * j + u % 2] = _mm512_sub_epi16(W[(u / 2) * 8 + 2 * j + u % 2], off);
    }
}

/* Pair p of block b of a Q16 row (pairs layout) as a broadcast dword. */
static inline __m512i SFX(xpair)(const int16_t *qs, int64_t base, int64_t half, int p)
{
    int32_t v;
    memcpy(&v, qs + base + (p >= 8 ? half : 0) + 2 * (p % 8), 4);
    return _mm512_set1_epi32(v);
}

#define PANEL_TOK 16 /* tokens per pass over a panel's weights */

/* 16 rows x nt (<= PANEL_TOK) tokens. */
static inline __attribute__((always_inline)) void SFX(panel)(const uint8_t *row0, size_t w_stride,
                                                            const copse_cpu_q16_row *x, int nt, int64_t nb,
                                                            const int kind, float *out, size_t out_stride)
{
    __m512 acc[PANEL_TOK][8];
    for (int t = 0; t < nt; t++)
        for (int l = 0; l < 8; l++)
            acc[t][l] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        __m512i W[16];
        __m512 dw, mw;
        SFX(pwblock)(row0, w_stride, b, kind, W, &dw, &mw);
        const int lone = nb % 2 == 1 && b == nb - 1;
        const int64_t base = lone ? b * COPSE_CPU_QK : (b / 2) * 64 + (b % 2) * 16, half = lone ? 16 : 32;
        int t = 0;
        for (; t + 4 <= nt; t += 4) {
            __m512i s[4];
            for (int u = 0; u < 4; u++)
                s[u] = _mm512_setzero_si512();
            for (int p = 0; p < 16; p++)
                for (int u = 0; u < 4; u++)
                    s[u] = Q16_DOT(s[u], W[p], SFX(xpair)(x[t + u].qs, base, half, p));
            for (int u = 0; u < 4; u++) {
                __m512 tb = _mm512_mul_ps(_mm512_mul_ps(dw, _mm512_set1_ps(x[t + u].d[b])), _mm512_cvtepi32_ps(s[u]));
                if (kind == K_Q4_1)
                    tb = _mm512_add_ps(tb, _mm512_mul_ps(mw, _mm512_set1_ps(x[t + u].s[b])));
                acc[t + u][b % 8] = _mm512_add_ps(acc[t + u][b % 8], tb);
            }
        }
        for (; t < nt; t++) {
            __m512i s0 = _mm512_setzero_si512(), s1 = s0;
            for (int p = 0; p < 16; p += 2) {
                s0 = Q16_DOT(s0, W[p], SFX(xpair)(x[t].qs, base, half, p));
                s1 = Q16_DOT(s1, W[p + 1], SFX(xpair)(x[t].qs, base, half, p + 1));
            }
            __m512 tb = _mm512_mul_ps(_mm512_mul_ps(dw, _mm512_set1_ps(x[t].d[b])),
                                      _mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1)));
            if (kind == K_Q4_1)
                tb = _mm512_add_ps(tb, _mm512_mul_ps(mw, _mm512_set1_ps(x[t].s[b])));
            acc[t][b % 8] = _mm512_add_ps(acc[t][b % 8], tb);
        }
    }
    for (int t = 0; t < nt; t++) {
        __m512 s0 = _mm512_add_ps(acc[t][0], acc[t][4]), s1 = _mm512_add_ps(acc[t][1], acc[t][5]);
        __m512 s2 = _mm512_add_ps(acc[t][2], acc[t][6]), s3 = _mm512_add_ps(acc[t][3], acc[t][7]);
        _mm512_storeu_ps(out + (size_t)t * out_stride, _mm512_add_ps(_mm512_add_ps(s0, s2), _mm512_add_ps(s1, s3)));
    }
}
#endif

/* ---------------------------------------------------------------- drivers */

/* All tokens for nr rows: tiles of 4 tokens, then 2, then 1. */
static inline __attribute__((always_inline)) void SFX(rows)(const uint8_t *w, size_t w_stride, const int nr,
                                                           const copse_cpu_q16_row *x, int64_t n_tok, int64_t nb,
                                                           float *out, size_t out_stride, const int kind)
{
    int64_t t = 0;
    for (; t + 4 <= n_tok; t += 4)
        SFX(tile)(w, w_stride, nr, x + t, 4, nb, kind, out + (size_t)t * out_stride, out_stride);
    if (t + 2 <= n_tok) {
        SFX(tile)(w, w_stride, nr, x + t, 2, nb, kind, out + (size_t)t * out_stride, out_stride);
        t += 2;
    }
    if (t < n_tok)
        SFX(tile)(w, w_stride, nr, x + t, 1, nb, kind, out + (size_t)t * out_stride, out_stride);
}

static inline __attribute__((always_inline)) void SFX(mm)(const uint8_t *w, size_t w_stride, int64_t n_rows,
                                                         const copse_cpu_q16_row *x, int64_t n_tok, int64_t nb,
                                                         float *out, size_t out_stride, const int kind)
{
#if Q16_ISA != 0
    /* several tokens: 16-row panels, the rest in tiles */
    if ((kind == K_Q8_0 || kind == K_Q4_0 || kind == K_Q4_1) && n_tok >= PANEL_MIN_TOK && n_rows >= 16) {
        const int64_t np = n_rows / 16 * 16;
        for (int64_t r = 0; r < np; r += 16)
            for (int64_t t0 = 0; t0 < n_tok; t0 += PANEL_TOK) {
                const int nt = n_tok - t0 < PANEL_TOK ? (int)(n_tok - t0) : PANEL_TOK;
                SFX(panel)(w + (size_t)r * w_stride, w_stride, x + t0, nt, nb, kind,
                           out + (size_t)t0 * out_stride + (size_t)r, out_stride);
            }
        w += (size_t)np * w_stride;
        out += np;
        n_rows -= np;
    }
#endif
    /* tokens in chunks of 16 (their activations stay in L1 while the
     * rows, a task's few KB of weights, are walked again per chunk) */
    for (int64_t t0 = 0; t0 < n_tok; t0 += 16) {
        const int64_t nt = n_tok - t0 < 16 ? n_tok - t0 : 16;
        float *o = out + (size_t)t0 * out_stride;
        int64_t r = 0;
        for (; r + 4 <= n_rows; r += 4)
            SFX(rows)(w + (size_t)r * w_stride, w_stride, 4, x + t0, nt, nb, o + r, out_stride, kind);
        for (; r < n_rows; r++)
            SFX(rows)(w + (size_t)r * w_stride, w_stride, 1, x + t0, nt, nb, o + r, out_stride, kind);
    }
}

#define Q16_MM(name, kind)                                                                                    \
    static void SFX(name)(const uint8_t *w, size_t w_stride, int64_t n_rows, const copse_cpu_q16_row *x,     \
                          int64_t n_tok, int64_t nb, float *out, size_t out_stride)                           \
    {                                                                                                         \
        SFX(mm)(w, w_stride, n_rows, x, n_tok, nb, out, out_stride, kind);                                    \
    }

Q16_MM(mm_q8_0, K_Q8_0)
Q16_MM(mm_q4_0, K_Q4_0)
Q16_MM(mm_q4_1, K_Q4_1)
Q16_MM(mm_q4_k, K_Q4_K)
Q16_MM(mm_q5_0, K_Q5_0)
Q16_MM(mm_q5_1, K_Q5_1)
Q16_MM(mm_q6_k, K_Q6_K)

#undef Q16_MM
#ifdef Q16_DOT
#undef Q16_DOT
#endif

static void SFX(install)(copse_cpu_kernels *k)
{
    k->mm_q16[COPSE_Q_Q8_0] = SFX(mm_q8_0);
    k->mm_q16[COPSE_Q_Q4_0] = SFX(mm_q4_0);
    k->mm_q16[COPSE_Q_Q4_1] = SFX(mm_q4_1);
    k->mm_q16[COPSE_Q_Q4_K] = SFX(mm_q4_k);
    k->mm_q16[COPSE_Q_Q5_0] = SFX(mm_q5_0);
    k->mm_q16[COPSE_Q_Q5_1] = SFX(mm_q5_1);
    k->mm_q16[COPSE_Q_Q6_K] = SFX(mm_q6_k);
}
