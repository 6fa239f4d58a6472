/*
 * cpu-kernels-avx512-body.h — the AVX-512 block-dot kernels, included twice
 * by cpu-kernels-avx512.c (only there): once with CPU_VNNI 0 and once with
 * CPU_VNNI 1, each inside its own target region. SFX(name) names the
 * variant's functions. No include guard, on purpose.
 */

/* u8 x s8 products of 64 bytes summed per 4 bytes: 16 int32, exact. */
static inline __attribute__((always_inline)) __m512i SFX(dot_u8s8)(__m512i u, __m512i s)
{
#if CPU_VNNI
    return _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, s);
#else
    return _mm512_madd_epi16(_mm512_maddubs_epi16(u, s), _mm512_set1_epi16(1));
#endif
}

/* A tile of nr rows x nt tokens (nr * nt <= 4, constants after inlining),
 * groups of 8 blocks as 4 pairs. Each weight block is unpacked once per
 * tile row and each activation block loaded once per tile token; the
 * group's scales are gathered once per row. A short last group pads with
 * zero bytes (sum 0) and -0.0 terms, like the AVX2 kernel. Every (row,
 * token) result is the canonical sequence of its own, whatever the tile. */
static inline __attribute__((always_inline)) void SFX(tile)(const uint8_t *row0, size_t w_stride, const int nr,
                                                           const copse_cpu_q8_row *x, const int nt, int64_t nb,
                                                           const int kind, float *out, size_t out_stride)
{
    const size_t bsz = KIND_BSZ(kind); /* Q4_K: 144 per group */
    __m256 acc[4][4];
    for (int i = 0; i < nr; i++)
        for (int t = 0; t < nt; t++)
            acc[i][t] = _mm256_setzero_ps();
    for (int64_t g = 0; g < nb; g += 8) {
        const int n = nb - g < 8 ? (int)(nb - g) : 8;
        __m512i p[4][4][4]; /* [row][token][pair] */
        for (int j = 0; j < 8; j += 2) {
            if (j >= n) {
                for (int i = 0; i < nr; i++)
                    for (int t = 0; t < nt; t++)
                        p[i][t][j / 2] = _mm512_setzero_si512();
                continue;
            }
            const int two = j + 1 < n;
            const __mmask64 lm = two ? ~(__mmask64)0 : (__mmask64)0xffffffffu;
            __m512i xq[4];
            for (int t = 0; t < nt; t++)
                xq[t] = _mm512_maskz_loadu_epi8(lm, x[t].qs + (g + j) * COPSE_CPU_QK);
            for (int i = 0; i < nr; i++) {
                const uint8_t *blk = row0 + (size_t)i * w_stride + (size_t)(g + j) * bsz;
                __m256i w0, w1 = _mm256_setzero_si256();
                const uint8_t *sb = row0 + (size_t)i * w_stride + (size_t)(g / 8) * KIND_SUPER_BSZ(kind);
                __m512i scv = _mm512_setzero_si512(); /* Q6_K: per-16 scales, 4 lanes each */
                if (kind == K_Q4_K) { /* sub-blocks j, j+1: the two nibbles of 32 bytes */
                    __m256i q = _mm256_loadu_si256((const __m256i *)(sb + 16 + 16 * j));
                    w0 = _mm256_and_si256(q, _mm256_set1_epi8(0x0f));
                    w1 = _mm256_and_si256(_mm256_srli_epi16(q, 4), _mm256_set1_epi8(0x0f));
                } else if (kind == K_Q6_K) {
                    w0 = q6_bytes(sb, j);
                    w1 = q6_bytes(sb, j + 1);
                    __m128i s4 = _mm_cvtsi32_si128((int)((uint32_t)sb[192 + 2 * j] | (uint32_t)sb[193 + 2 * j] << 8 |
                                                        (uint32_t)sb[194 + 2 * j] << 16 |
                                                        (uint32_t)sb[195 + 2 * j] << 24));
                    scv = _mm512_cvtepi8_epi32(
                        _mm_shuffle_epi8(s4, _mm_setr_epi8(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3)));
                } else {
                    w0 = weight_bytes(blk, kind);
                    if (two)
                        w1 = weight_bytes(blk + bsz, kind);
                }
                __m512i w = _mm512_inserti64x4(_mm512_castsi256_si512(w0), w1, 1);
                /* Q8_0: |w| as u8 (|-128| = 128 fits), x negated where w < 0 */
                __mmask64 neg = 0;
                if (KIND_SIGNED(kind)) {
                    neg = _mm512_movepi8_mask(w);
                    w = _mm512_abs_epi8(w);
                }
                for (int t = 0; t < nt; t++) {
                    __m512i xs = xq[t];
                    if (KIND_SIGNED(kind))
                        xs = _mm512_mask_sub_epi8(xs, neg, _mm512_setzero_si512(), xs);
                    p[i][t][j / 2] = SFX(dot_u8s8)(w, xs);
                    if (kind == K_Q6_K) /* exact: |partial| < 2^14, |scale| <= 128 */
                        p[i][t][j / 2] = _mm512_mullo_epi32(p[i][t][j / 2], scv);
                }
            }
        }
        const __mmask8 m = (__mmask8)((1u << n) - 1u);
        __m256 dx[4], sx[4];
        __m256i xs8[4];
        for (int t = 0; t < nt; t++) {
            dx[t] = _mm256_maskz_loadu_ps(m, x[t].d + g);
            if (KIND_HAS_MIN(kind))
                sx[t] = _mm256_maskz_loadu_ps(m, x[t].s + g);
            if (KIND_OFFSET_SHIFT(kind))
                xs8[t] = _mm256_slli_epi32(_mm256_maskz_loadu_epi32(m, x[t].sum + g), KIND_OFFSET_SHIFT(kind));
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
                __m256i isum = sum4x2_epi32(p[i][t]);
                if (KIND_OFFSET_SHIFT(kind))
                    isum = _mm256_sub_epi32(isum, xs8[t]);
                __m256 dd = _mm256_mul_ps(dw, dx[t]);
                __m256 tb = _mm256_mul_ps(dd, _mm256_cvtepi32_ps(isum));
                if (kind == K_Q4_1 || kind == K_Q5_1)
                    tb = _mm256_add_ps(tb, _mm256_mul_ps(mw, sx[t]));
                if (kind == K_Q4_K)
                    tb = _mm256_sub_ps(tb, _mm256_mul_ps(mw, sx[t]));
                if (n < 8)
                    tb = _mm256_mask_blend_ps(m, _mm256_set1_ps(-0.0f), tb);
                acc[i][t] = _mm256_add_ps(acc[i][t], tb);
            }
        }
    }
    for (int i = 0; i < nr; i++)
        for (int t = 0; t < nt; t++)
            out[(size_t)t * out_stride + (size_t)i] = hsum8(acc[i][t]);
}

/* Rows x tokens in tiles: 4 rows x 1 token for a single token (decode),
 * 1 row x 4 tokens otherwise; remainders in smaller tiles. */
static inline __attribute__((always_inline)) void SFX(mm)(const uint8_t *w, size_t w_stride, int64_t n_rows,
                                                         const copse_cpu_q8_row *x, int64_t n_tok, int64_t nb,
                                                         float *out, size_t out_stride, const int kind)
{
    if (n_tok == 1) {
        int64_t r = 0;
        for (; r + 4 <= n_rows; r += 4)
            SFX(tile)(w + (size_t)r * w_stride, w_stride, 4, x, 1, nb, kind, out + r, out_stride);
        for (; r < n_rows; r++)
            SFX(tile)(w + (size_t)r * w_stride, w_stride, 1, x, 1, nb, kind, out + r, out_stride);
        return;
    }
    for (int64_t r = 0; r < n_rows; r++) {
        const uint8_t *row = w + (size_t)r * w_stride;
        float *o = out + r;
        int64_t t = 0;
        for (; t + 4 <= n_tok; t += 4)
            SFX(tile)(row, w_stride, 1, x + t, 4, nb, kind, o + (size_t)t * out_stride, out_stride);
        switch (n_tok - t) {
        case 3: SFX(tile)(row, w_stride, 1, x + t, 3, nb, kind, o + (size_t)t * out_stride, out_stride); break;
        case 2: SFX(tile)(row, w_stride, 1, x + t, 2, nb, kind, o + (size_t)t * out_stride, out_stride); break;
        case 1: SFX(tile)(row, w_stride, 1, x + t, 1, nb, kind, o + (size_t)t * out_stride, out_stride); break;
        default: break;
        }
    }
}

static void SFX(mm_q4_k)(const uint8_t *w, size_t w_stride, int64_t n_rows, const copse_cpu_q8_row *x,
                         int64_t n_tok, int64_t nb, float *out, size_t out_stride)
{
    SFX(mm)(w, w_stride, n_rows, x, n_tok, nb, out, out_stride, K_Q4_K);
}

static void SFX(mm_q5_0)(const uint8_t *w, size_t w_stride, int64_t n_rows, const copse_cpu_q8_row *x,
                         int64_t n_tok, int64_t nb, float *out, size_t out_stride)
{
    SFX(mm)(w, w_stride, n_rows, x, n_tok, nb, out, out_stride, K_Q5_0);
}

static void SFX(mm_q5_1)(const uint8_t *w, size_t w_stride, int64_t n_rows, const copse_cpu_q8_row *x,
                         int64_t n_tok, int64_t nb, float *out, size_t out_stride)
{
    SFX(mm)(w, w_stride, n_rows, x, n_tok, nb, out, out_stride, K_Q5_1);
}

static void SFX(mm_q6_k)(const uint8_t *w, size_t w_stride, int64_t n_rows, const copse_cpu_q8_row *x,
                         int64_t n_tok, int64_t nb, float *out, size_t out_stride)
{
    SFX(mm)(w, w_stride, n_rows, x, n_tok, nb, out, out_stride, K_Q6_K);
}

static void SFX(mm_q8_0)(const uint8_t *w, size_t w_stride, int64_t n_rows, const copse_cpu_q8_row *x,
                         int64_t n_tok, int64_t nb, float *out, size_t out_stride)
{
    SFX(mm)(w, w_stride, n_rows, x, n_tok, nb, out, out_stride, K_Q8_0);
}

static void SFX(mm_q4_0)(const uint8_t *w, size_t w_stride, int64_t n_rows, const copse_cpu_q8_row *x,
                         int64_t n_tok, int64_t nb, float *out, size_t out_stride)
{
    SFX(mm)(w, w_stride, n_rows, x, n_tok, nb, out, out_stride, K_Q4_0);
}

static void SFX(mm_q4_1)(const uint8_t *w, size_t w_stride, int64_t n_rows, const copse_cpu_q8_row *x,
                         int64_t n_tok, int64_t nb, float *out, size_t out_stride)
{
    SFX(mm)(w, w_stride, n_rows, x, n_tok, nb, out, out_stride, K_Q4_1);
}
