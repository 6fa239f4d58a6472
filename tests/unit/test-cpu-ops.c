/*
 * test-cpu-ops.c — the CPU backend's compute ops and kernel tables.
 *
 * Conformance style: fresh random inputs each run (COPSE_TEST_SEED replays
 * one). Oracles, never the code under test:
 *   - every op's reference (kernel level "ref") against a naive computation
 *     written here, in double where it matters, with the tolerance stated at
 *     each check;
 *   - every SIMD level the CPU has against the scalar tables: bit-exact
 *     (SIMD vs ref_q8 for the quantized matmul, Q16 and Q8 activations
 *     alike, SIMD vs ref for everything else; see the canonical orders in
 *     cpu-kernels.h); Q16 quantization also on crafted blocks (outlier,
 *     zeros, negative zeros, ties, subnormal scale) and Q6_K at the int32
 *     edge;
 *   - the quantized-activation matmul (ref_q8 and up) against the f32
 *     reference within a bound derived from the activation quantization:
 *       |y_q - y_ref| <= sum_b (amax_b / (2 qmax)) * sum_j |w_bj|
 *                        + 3e-5 * sum_j |w_j x_j|
 *     with qmax = 32767 for Q16 and 127 for Q8 (each activation rounds by
 *     at most half a step, d/2 = amax / (2 qmax); the second term covers
 *     float accumulation in both paths); observed: Q16 ~4e-6 and Q8 ~1e-3
 *     of sum |w x|;
 *     (weights: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q6_K on the Q8 path;
 *     F32, F16 on the f32 path; shapes include the default model's
 *     576x576, 1536x576, 576x1536 for 1, 7 and 32 tokens and its
 *     49152x576 head, and odd row counts);
 *   - batch invariance: a token's matmul (Q16 and Q8) and attention
 *     outputs are bit-identical alone, in batches of 1..33 tokens, and
 *     with 1 vs N threads (and prefill chunks vs one-token decode for attention).
 * Levels the CPU lacks are skipped (reported); the test exits 0 if the rest
 * passes.
 *
 * `test-cpu-ops --bench` prints per-op timings and matmul GB/s for the
 * default model's shapes (f32 / q8 / q16 activations, 1 / 4 / 16 / 32
 * tokens, 1 and 2 threads) instead of testing.
 */
#include "test.h"

#include <stdbool.h>
#include <time.h>

#include "backend-impl.h"
#include "copse.h"
#include "cpu/cpu-kernels.h"
#include "cpu/cpu-queue.h"
#include "kvcache.h"
#include "quant.h"

/* ---------------------------------------------------------------- helpers */

static uint64_t rng;
static copse_backend_dev *dev;

static float frand(void) /* uniform in [-1, 1) */
{
    return (float)((double)(test_rand(&rng) >> 11) * 0x1p-53 * 2.0 - 1.0);
}

static uint32_t rnd(uint32_t n)
{
    return (uint32_t)(test_rand(&rng) % n);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    return p;
}

/* A host array wrapped as a buffer, with a tensor over it. */
typedef struct htensor {
    copse_backend_buffer *buf;
    copse_tensor t;
    void *data;
} htensor;

static htensor hmake(uint32_t type, int64_t ne0, int64_t ne1)
{
    htensor h;
    uint64_t rb = 0;
    if (!copse__qtype_row_bytes(type, (uint64_t)ne0, &rb))
        abort();
    size_t n = (size_t)rb * (size_t)(ne1 > 0 ? ne1 : 1);
    h.data = xmalloc(n);
    memset(h.data, 0, n);
    h.buf = NULL;
    if (dev->iface.buffer_from_host(dev, h.data, n, &h.buf) != COPSE_OK)
        abort();
    h.t = (copse_tensor){.buf = h.buf, .offset = 0, .type = type, .ne = {ne0, ne1}, .row_stride = (size_t)rb};
    return h;
}

static void hfree(htensor *h)
{
    h->buf->iface.free(h->buf);
    free(h->data);
}

static float *hrow(const htensor *h, int64_t r)
{
    return (float *)(void *)((char *)h->data + (size_t)r * h->t.row_stride);
}

static void fill_f32(float *x, size_t n, float scale)
{
    for (size_t i = 0; i < n; i++)
        x[i] = frand() * scale;
}

static void put_fp16(uint8_t *p, float v)
{
    uint16_t h = copse__f32_to_fp16(v);
    p[0] = (uint8_t)h;
    p[1] = (uint8_t)(h >> 8);
}

/* Random weights of a type: random quant bytes, sane fp16 scales. */
static void fill_weights(uint32_t type, uint8_t *w, int64_t k, int64_t rows)
{
    const copse_qtype_traits *tr = copse__qtype_traits(type);
    size_t bs = tr->type_size;
    int64_t nblk = k / tr->block_size * rows;
    for (int64_t b = 0; b < nblk; b++) {
        uint8_t *p = w + (size_t)b * bs;
        for (size_t i = 0; i < bs; i++)
            p[i] = (uint8_t)test_rand(&rng);
        switch (type) {
        case COPSE_Q_F32: {
            float v = frand();
            memcpy(p, &v, 4);
            break;
        }
        case COPSE_Q_F16: put_fp16(p, frand()); break;
        case COPSE_Q_Q4_0:
        case COPSE_Q_Q5_0:
        case COPSE_Q_Q8_0: put_fp16(p, 0.002f + 0.02f * (frand() + 1.0f)); break;
        case COPSE_Q_Q4_1:
        case COPSE_Q_Q5_1:
            put_fp16(p, 0.002f + 0.02f * (frand() + 1.0f));
            put_fp16(p + 2, -0.15f * (frand() + 1.0f));
            break;
        case COPSE_Q_Q4_K:
            put_fp16(p, 0.001f * (frand() + 1.5f));
            put_fp16(p + 2, 0.001f * (frand() + 1.5f));
            break;
        case COPSE_Q_Q6_K: put_fp16(p + 208, 0.001f * (frand() + 1.5f)); break;
        default: abort();
        }
    }
}

/* A queue with the given activation precision (matmul's q16 / q8 / f32). */
static copse_backend_queue *make_queue_act(const copse_cpu_kernels *k, int n_threads, copse_cpu_act act)
{
    copse_backend_queue *q = NULL;
    copse_status st = copse__cpu_queue_create_act(dev, n_threads, k, act, &q);
    CHECK_STATUS(st, COPSE_OK);
    if (st != COPSE_OK)
        exit(1);
    return q;
}

static copse_backend_queue *make_queue(const copse_cpu_kernels *k, int n_threads)
{
    return make_queue_act(k, n_threads, COPSE_CPU_ACT_Q16);
}

static const char *const act_names[COPSE_CPU_ACT_COUNT] = {"q16", "q8", "f32"};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Count of float mismatches (bitwise), reported once per call site. */
static int bits_differ(const float *a, const float *b, size_t n, const char *what)
{
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        if (memcmp(&a[i], &b[i], 4) != 0) {
            if (!bad)
                fprintf(stderr, "  %s: first difference at %zu: %.9g vs %.9g\n", what, i, (double)a[i],
                        (double)b[i]);
            bad++;
        }
    }
    return bad;
}

static const copse_cpu_kernels *levels[COPSE_CPU_LEVEL_COUNT];

/* ---------------------------------------------------------------- kernel tables */

/* Every level's primitive kernels against the scalar table they must match
 * bit for bit: f32 primitives against ref, Q8 kernels against ref_q8. */
static void test_kernels(void)
{
    const copse_cpu_kernels *ref = levels[COPSE_CPU_LEVEL_REF], *q8 = levels[COPSE_CPU_LEVEL_REF_Q8];
    enum { N = 1100 };
    float *a = xmalloc(N * 4), *b = xmalloc(N * 4), *y0 = xmalloc(N * 4), *y1 = xmalloc(N * 4);
    uint16_t *h = xmalloc(N * 2), *h0 = xmalloc(N * 2), *h1 = xmalloc(N * 2);
    /* the canonical exp against exp() in double: <= 2 ulp (relative 2.4e-7)
     * where the result is normal, 0 below -87 */
    {
        double worst = 0;
        int bad = 0;
        for (int i = 0; i < N; i++)
            a[i] = i == 0 ? 0.0f : -87.0f * (float)(test_rand(&rng) >> 40) * 0x1p-24f;
        memcpy(y0, a, N * 4);
        ref->exp_neg(y0, N);
        for (int i = 0; i < N; i++) {
            double want = exp((double)a[i]);
            double rel = fabs(y0[i] - want) / want;
            worst = fmax(worst, rel);
            bad += !(rel <= 2.4e-7);
        }
        float edge[4] = {-87.5f, NAN, 3.0f, -0.0f};
        ref->exp_neg(edge, 4);
        CHECK(edge[0] == 0.0f && edge[1] == 0.0f && edge[2] == 1.0f && edge[3] == 1.0f);
        fprintf(stderr, "exp_neg vs exp: max relative error %.2e\n", worst);
        CHECK_INT_EQ(bad, 0);
    }
    for (int l = COPSE_CPU_LEVEL_AVX2; l < COPSE_CPU_LEVEL_COUNT; l++) {
        const copse_cpu_kernels *k = levels[l];
        if (!k) {
            fprintf(stderr, "skip: level %d (CPU lacks it)\n", l);
            continue;
        }
        int bad = 0;
        for (int n = 0; n <= 140; n++) {
            fill_f32(a, (size_t)n, 3.0f);
            fill_f32(b, (size_t)n, 3.0f);
            for (int i = 0; i < n; i++)
                h[i] = copse__f32_to_fp16(a[i]);
            float r0 = ref->dot_f32(a, b, n), r1 = k->dot_f32(a, b, n);
            bad += bits_differ(&r0, &r1, 1, "dot_f32");
            r0 = ref->dot_f16(h, b, n);
            r1 = k->dot_f16(h, b, n);
            bad += bits_differ(&r0, &r1, 1, "dot_f16");
            float s = frand();
            memcpy(y0, b, (size_t)n * 4);
            memcpy(y1, b, (size_t)n * 4);
            ref->axpy_f32(y0, s, a, n);
            k->axpy_f32(y1, s, a, n);
            ref->axpy_f16(y0, s, h, n);
            k->axpy_f16(y1, s, h, n);
            ref->scale_f32(y0, s, n);
            k->scale_f32(y1, s, n);
            bad += bits_differ(y0, y1, (size_t)n, "axpy/scale");
            /* the many-row attention loops, on rows of the same buffers */
            if (n > 0) {
                const float *fr[9];
                const uint16_t *hr[9];
                float av[9], o0[9], o1[9];
                int len = n / 2 + 1, nr = 1 + (int)rnd(9);
                for (int i = 0; i < nr; i++) {
                    int off = (int)rnd((uint32_t)(n - len + 1));
                    fr[i] = a + off;
                    hr[i] = h + off;
                    av[i] = frand();
                }
                ref->dot_many_f32(b, fr, nr, len, o0);
                k->dot_many_f32(b, fr, nr, len, o1);
                bad += bits_differ(o0, o1, (size_t)nr, "dot_many_f32");
                ref->dot_many_f16(b, hr, nr, len, o0);
                k->dot_many_f16(b, hr, nr, len, o1);
                bad += bits_differ(o0, o1, (size_t)nr, "dot_many_f16");
                memcpy(y0, b, (size_t)len * 4);
                memcpy(y1, b, (size_t)len * 4);
                ref->axpy_many_f32(y0, av, fr, nr, len);
                k->axpy_many_f32(y1, av, fr, nr, len);
                ref->axpy_many_f16(y0, av, hr, nr, len);
                k->axpy_many_f16(y1, av, hr, nr, len);
                bad += bits_differ(y0, y1, (size_t)len, "axpy_many");
            }
            ref->f32_to_f16(a, h0, n);
            k->f32_to_f16(a, h1, n);
            bad += memcmp(h0, h1, (size_t)n * 2) != 0;
            ref->f16_to_f32(h0, y0, n);
            k->f16_to_f32(h0, y1, n);
            bad += bits_differ(y0, y1, (size_t)n, "f16_to_f32");
        }
        /* exp_neg: bit-exact with the scalar one on random, edge and tail inputs */
        for (int rep = 0; rep < 40; rep++) {
            int n = 1 + (int)rnd(70);
            for (int i = 0; i < n; i++)
                a[i] = -(float)rnd(100) * (frand() + 1.0f) * 0.5f;
            a[0] = 0.0f;
            if (n > 3) {
                a[1] = -87.0f;
                a[2] = -87.5f;
                a[3] = 1.5f;
            }
            memcpy(y0, a, (size_t)n * 4);
            memcpy(y1, a, (size_t)n * 4);
            ref->exp_neg(y0, n);
            k->exp_neg(y1, n);
            bad += bits_differ(y0, y1, (size_t)n, "exp_neg");
        }
        /* Q8 activations: random rows with a zero block and very uneven scales */
        int8_t qs0[N + 64], qs1[N + 64];
        float d0[N / 32], d1[N / 32], s0[N / 32], s1[N / 32];
        int32_t u0[N / 32], u1[N / 32];
        for (int rep = 0; rep < 50; rep++) {
            int nb = 1 + (int)rnd(N / 32);
            for (int i = 0; i < nb * 32; i++)
                a[i] = frand() * (float)(1 << rnd(12)) * 1e-3f;
            if (nb > 1)
                memset(a + 32, 0, 32 * 4);
            q8->quantize_q8(a, nb * 32, qs0, d0, s0, u0);
            k->quantize_q8(a, nb * 32, qs1, d1, s1, u1);
            bad += memcmp(qs0, qs1, (size_t)nb * 32) != 0;
            bad += bits_differ(d0, d1, (size_t)nb, "q8 d") + bits_differ(s0, s1, (size_t)nb, "q8 s");
            bad += memcmp(u0, u1, (size_t)nb * 4) != 0;
        }
        /* Q8 block dots on every block count 1..20 (tails of 8-block groups) */
        static const uint32_t types[] = {COPSE_Q_Q8_0, COPSE_Q_Q4_0, COPSE_Q_Q4_1, COPSE_Q_Q4_K,
                                         COPSE_Q_Q5_0, COPSE_Q_Q5_1, COPSE_Q_Q6_K};
        for (size_t ti = 0; ti < 7; ti++) {
            for (int nb = 1; nb <= 20; nb++) {
                if ((types[ti] == COPSE_Q_Q4_K || types[ti] == COPSE_Q_Q6_K) && nb % 8 != 0)
                    continue; /* 256-element super-blocks */
                int rows = 1 + (int)rnd(5);
                const copse_qtype_traits *tr = copse__qtype_traits(types[ti]);
                size_t stride = (size_t)(nb * 32) / tr->block_size * tr->type_size;
                uint8_t *w = xmalloc(stride * (size_t)rows);
                fill_weights(types[ti], w, nb * 32, rows);
                fill_f32(a, (size_t)nb * 32, 2.0f);
                q8->quantize_q8(a, nb * 32, qs0, d0, s0, u0);
                copse_cpu_q8_row xr = {qs0, d0, s0, u0};
                float o0[8], o1[8];
                q8->mm_q8[types[ti]](w, stride, rows, &xr, 1, nb, o0, 0);
                k->mm_q8[types[ti]](w, stride, rows, &xr, 1, nb, o1, 0);
                bad += bits_differ(o0, o1, (size_t)rows, copse__qtype_name(types[ti]));
                free(w);
            }
        }
        fprintf(stderr, "kernels %s vs scalar: %d mismatches\n", k->name, bad);
        CHECK_INT_EQ(bad, 0);
    }
    free(a);
    free(b);
    free(y0);
    free(y1);
    free(h);
    free(h0);
    free(h1);
}

/* ---------------------------------------------------------------- Q16 kernels */

/* A Q16 activation matrix of n tokens x k (owning its arrays). */
typedef struct q16_mat {
    int16_t *qs;
    float *d, *s;
    int32_t *sum;
    copse_cpu_q16_row *rows;
} q16_mat;

static q16_mat q16_make(const copse_cpu_kernels *kt, const float *x, int64_t k, int n)
{
    const size_t nb = (size_t)(k / 32);
    q16_mat m = {xmalloc((size_t)(k * n) * 2), xmalloc(nb * (size_t)n * 4), xmalloc(nb * (size_t)n * 4),
                 xmalloc(nb * (size_t)n * 4), xmalloc((size_t)n * sizeof(copse_cpu_q16_row))};
    for (int t = 0; t < n; t++) {
        kt->quantize_q16(x + (size_t)t * (size_t)k, k, m.qs + (size_t)t * (size_t)k, m.d + (size_t)t * nb,
                         m.s + (size_t)t * nb, m.sum + (size_t)t * nb);
        m.rows[t] = (copse_cpu_q16_row){m.qs + (size_t)t * (size_t)k, m.d + (size_t)t * nb, m.s + (size_t)t * nb,
                                        m.sum + (size_t)t * nb};
    }
    return m;
}

/* Quants of two Q16 rows of nb blocks differing (each in its table's layout). */
static int q16_qs_differ(const int16_t *a, int pa, const int16_t *b, int pb, int64_t nb)
{
    int bad = 0;
    for (int64_t blk = 0; blk < nb; blk++)
        for (int e = 0; e < 32; e++)
            bad += a[copse__cpu_q16_pos(pa, nb, blk, e)] != b[copse__cpu_q16_pos(pb, nb, blk, e)];
    return bad;
}

static void q16_free(q16_mat *m)
{
    free(m->qs);
    free(m->d);
    free(m->s);
    free(m->sum);
    free(m->rows);
}

/* Q16 quantization: the exact expected quants on crafted blocks (outlier,
 * zeros, negative zeros, ties, subnormals), and every level's quantize_q16
 * and mm_q16 bit-identical to the scalar ones (block counts 1..20, 1..6
 * tokens, 1..9 rows: every tile shape and group tail). */
static void test_kernels_q16(void)
{
    const copse_cpu_kernels *q8 = levels[COPSE_CPU_LEVEL_REF_Q8];
    enum { NB = 6, K = NB * 32 };
    float x[K];
    fill_f32(x, K, 3.0f);
    x[5] = 1e30f;                         /* block 0: one huge outlier */
    memset(x + 32, 0, 32 * sizeof(float)); /* block 1: all zero */
    for (int j = 0; j < 32; j++)
        x[64 + j] = -0.0f;                /* block 2: negative zeros */
    x[96] = -0.0f;                        /* block 3: a negative zero among values */
    x[97] = 1.0f;
    for (int j = 0; j < 32; j++)          /* block 4: subnormal (d is a few ulp: clamp) */
        x[128 + j] = frand() * 1e-40f;
    x[128] = 1e-40f;
    for (int j = 0; j < 32; j++)          /* block 5: d = 1, ties to even */
        x[160 + j] = (float)(j - 16) + 0.5f;
    x[191] = 32767.0f;
    q16_mat m = q16_make(q8, x, K, 1);
    CHECK(m.qs[5] == 32767 && m.d[0] == 1e30f / 32767.0f);
    int zeros = 0;
    for (int j = 0; j < 32; j++)
        zeros += (j != 5 && m.qs[j] == 0) + (m.qs[32 + j] == 0) + (m.qs[64 + j] == 0);
    CHECK_INT_EQ(zeros, 31 + 64);
    CHECK(m.d[1] == 0.0f && m.s[1] == 0.0f && m.sum[1] == 0 && m.d[2] == 0.0f && m.sum[2] == 0);
    CHECK(m.qs[96] == 0 && m.qs[97] == (int16_t)nearbyint(1.0 / (double)m.d[3]));
    int in_range = 1;
    for (int j = 0; j < 32; j++)
        in_range &= m.qs[128 + j] != INT16_MIN; /* |q| <= 32767 */
    CHECK(in_range && m.qs[128] == 32767);
    CHECK(m.d[5] == 1.0f);
    int ties = 1;
    for (int j = 0; j < 31; j++) { /* (j - 16) + 0.5 rounds to the even neighbour */
        int lo = j - 16, want = lo % 2 == 0 ? lo : lo + 1;
        ties &= m.qs[160 + j] == want;
    }
    CHECK(ties && m.qs[191] == 32767);
    int32_t sum5 = 0;
    for (int j = 0; j < 32; j++)
        sum5 += m.qs[160 + j];
    CHECK_INT_EQ(m.sum[5], sum5);
    CHECK(m.s[5] == 1.0f * (float)sum5);

    for (int l = COPSE_CPU_LEVEL_AVX2; l < COPSE_CPU_LEVEL_COUNT; l++) {
        const copse_cpu_kernels *k = levels[l];
        if (!k)
            continue;
        int bad = 0;
        /* quantize_q16: the crafted row and random rows of uneven scales */
        q16_mat m1 = q16_make(k, x, K, 1);
        bad += q16_qs_differ(m.qs, 0, m1.qs, k->q16_pairs, NB) + (memcmp(m.sum, m1.sum, NB * 4) != 0);
        bad += bits_differ(m.d, m1.d, NB, "q16 d") + bits_differ(m.s, m1.s, NB, "q16 s");
        q16_free(&m1);
        for (int rep = 0; rep < 50; rep++) {
            float y[20 * 32];
            int nb = 1 + (int)rnd(20);
            for (int i = 0; i < nb * 32; i++)
                y[i] = frand() * (float)(1 << rnd(12)) * 1e-3f;
            q16_mat a = q16_make(q8, y, nb * 32, 1), b = q16_make(k, y, nb * 32, 1);
            bad += q16_qs_differ(a.qs, 0, b.qs, k->q16_pairs, nb) + (memcmp(a.sum, b.sum, (size_t)nb * 4) != 0);
            bad += bits_differ(a.d, b.d, (size_t)nb, "q16 d") + bits_differ(a.s, b.s, (size_t)nb, "q16 s");
            q16_free(&a);
            q16_free(&b);
        }
        /* mm_q16 on every block count, token count and row count */
        static const uint32_t types[] = {COPSE_Q_Q8_0, COPSE_Q_Q4_0, COPSE_Q_Q4_1, COPSE_Q_Q4_K,
                                         COPSE_Q_Q5_0, COPSE_Q_Q5_1, COPSE_Q_Q6_K};
        for (size_t ti = 0; ti < 7; ti++) {
            for (int nb = 1; nb <= 20; nb++) {
                if ((types[ti] == COPSE_Q_Q4_K || types[ti] == COPSE_Q_Q6_K) && nb % 8 != 0)
                    continue;
                int rows = 1 + (int)rnd(9), nt = 1 + (int)rnd(6);
                const copse_qtype_traits *tr = copse__qtype_traits(types[ti]);
                size_t stride = (size_t)(nb * 32) / tr->block_size * tr->type_size;
                uint8_t *w = xmalloc(stride * (size_t)rows);
                fill_weights(types[ti], w, nb * 32, rows);
                float *y = xmalloc((size_t)(nb * 32 * nt) * 4);
                fill_f32(y, (size_t)(nb * 32 * nt), 2.0f);
                if (nb >= 2)
                    y[33] = -1e6f; /* an outlier block */
                q16_mat a = q16_make(q8, y, nb * 32, nt), b = q16_make(k, y, nb * 32, nt);
                float o0[9 * 6], o1[9 * 6];
                q8->mm_q16[types[ti]](w, stride, rows, a.rows, nt, nb, o0, (size_t)rows);
                k->mm_q16[types[ti]](w, stride, rows, b.rows, nt, nb, o1, (size_t)rows);
                bad += bits_differ(o0, o1, (size_t)(rows * nt), copse__qtype_name(types[ti]));
                q16_free(&a);
                q16_free(&b);
                free(y);
                free(w);
            }
        }
        fprintf(stderr, "q16 kernels %s vs scalar: %d mismatches\n", k->name, bad);
        CHECK_INT_EQ(bad, 0);
    }
    q16_free(&m);
}

/* The multi-token paths of mm_q16 (16-row panels from a few tokens up, on
 * the AVX-512 levels): every level bit-identical to the scalar kernel and
 * to itself one token at a time, for 1..33 tokens, row counts around the
 * panel size, odd and even block counts, and an output stride wider than
 * the rows. */
static void test_q16_multi_token(void)
{
    const copse_cpu_kernels *q8 = levels[COPSE_CPU_LEVEL_REF_Q8];
    static const uint32_t types[] = {COPSE_Q_Q8_0, COPSE_Q_Q4_0, COPSE_Q_Q4_1, COPSE_Q_Q5_1};
    static const int row_counts[] = {16, 17, 31, 32, 35, 48};
    for (int l = COPSE_CPU_LEVEL_AVX2; l < COPSE_CPU_LEVEL_COUNT; l++) {
        const copse_cpu_kernels *k = levels[l];
        if (!k)
            continue;
        int bad = 0;
        for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
            for (int nt = 1; nt <= 33; nt++) {
                int nb = 1 + (int)rnd(20), rows = row_counts[rnd(6)];
                if (nt <= 3)
                    nb = nt; /* 1..3 blocks: lone last block, one pair */
                const copse_qtype_traits *tr = copse__qtype_traits(types[ti]);
                size_t stride = (size_t)(nb * 32) / tr->block_size * tr->type_size;
                size_t os = (size_t)rows + 3;
                uint8_t *w = xmalloc(stride * (size_t)rows);
                fill_weights(types[ti], w, nb * 32, rows);
                float *y = xmalloc((size_t)(nb * 32 * nt) * 4);
                fill_f32(y, (size_t)(nb * 32 * nt), 2.0f);
                if (nb >= 2)
                    y[33] = -1e6f; /* an outlier block */
                memset(y, 0, 32 * sizeof(float)); /* a zero block (d = 0) */
                q16_mat a = q16_make(q8, y, nb * 32, nt), b = q16_make(k, y, nb * 32, nt);
                float *o0 = xmalloc(os * (size_t)nt * 4), *o1 = xmalloc(os * (size_t)nt * 4);
                float *o2 = xmalloc(os * (size_t)nt * 4);
                q8->mm_q16[types[ti]](w, stride, rows, a.rows, nt, nb, o0, os);
                k->mm_q16[types[ti]](w, stride, rows, b.rows, nt, nb, o1, os);
                for (int t = 0; t < nt; t++)
                    k->mm_q16[types[ti]](w, stride, rows, b.rows + t, 1, nb, o2 + (size_t)t * os, os);
                for (int t = 0; t < nt; t++) {
                    bad += bits_differ(o0 + (size_t)t * os, o1 + (size_t)t * os, (size_t)rows,
                                       copse__qtype_name(types[ti]));
                    bad += bits_differ(o0 + (size_t)t * os, o2 + (size_t)t * os, (size_t)rows, "one token");
                }
                q16_free(&a);
                q16_free(&b);
                free(o0);
                free(o1);
                free(o2);
                free(y);
                free(w);
            }
        }
        fprintf(stderr, "q16 multi-token %s vs scalar: %d mismatches\n", k->name, bad);
        CHECK_INT_EQ(bad, 0);
    }
}

/* Q6_K at the int32 edge: every weight -32 with scales -128 and the
 * activations at -32767 make each half's scaled sum 128 * 16 * 32 * 32767
 * (just below 2^31), which the canonical order keeps exact; all levels agree
 * and match the value computed in double. */
static void test_q16_q6k_edge(void)
{
    const copse_cpu_kernels *q8 = levels[COPSE_CPU_LEVEL_REF_Q8];
    uint8_t w[210];
    memset(w, 0, sizeof w); /* ql = 0, qh = 0: every q = -32 */
    memset(w + 192, 0x80, 16); /* scales -128 */
    put_fp16(w + 208, 1.0f);
    float x[256];
    for (int i = 0; i < 256; i++)
        x[i] = -1.0f;
    q16_mat a = q16_make(q8, x, 256, 1);
    float want = 0, got = 0;
    q8->mm_q16[COPSE_Q_Q6_K](w, 210, 1, a.rows, 1, 8, &want, 1);
    /* per block: d * dx * 2 * (-128 * 16 * (-32) * (-32767)) with dx = 1 / 32767 */
    double exact = 8.0 * 2.0 * (-128.0 * 16.0 * 32.0 * 32767.0) * (double)a.d[0];
    CHECK(fabs((double)want - exact) <= 1e-6 * fabs(exact));
    for (int l = COPSE_CPU_LEVEL_AVX2; l < COPSE_CPU_LEVEL_COUNT; l++) {
        if (!levels[l])
            continue;
        q16_mat b = q16_make(levels[l], x, 256, 1);
        levels[l]->mm_q16[COPSE_Q_Q6_K](w, 210, 1, b.rows, 1, 8, &got, 1);
        CHECK_INT_EQ(bits_differ(&want, &got, 1, levels[l]->name), 0);
        q16_free(&b);
    }
    q16_free(&a);
}

/* ---------------------------------------------------------------- matmul */

typedef struct mm_case {
    uint32_t type;
    int64_t rows, k, n;
} mm_case;

/* Runs matmul on a fresh queue and returns the output (caller frees). */
static float *run_mm(const copse_cpu_kernels *k, copse_cpu_act act, int threads, const htensor *w, const htensor *x,
                     int64_t n)
{
    copse_backend_queue *q = make_queue_act(k, threads, act);
    htensor o = hmake(COPSE_Q_F32, w->t.ne[1], n);
    copse_tensor xv = x->t;
    xv.ne[1] = n;
    CHECK_STATUS(q->iface.matmul(q, &w->t, &xv, &o.t), COPSE_OK);
    q->iface.destroy(q);
    float *r = xmalloc((size_t)(w->t.ne[1] * n) * 4);
    memcpy(r, o.data, (size_t)(w->t.ne[1] * n) * 4);
    hfree(&o);
    return r;
}

/* Per (row, token) of a matmul case: yd = the exact dot in double, mag =
 * sum_j |w_j x_j| and qstep = sum_b amax_b * sum_j |w_bj| (computed once,
 * shared by the checks). */
typedef struct mm_stats {
    double *yd, *mag, *qstep;
} mm_stats;

static mm_stats mm_stats_make(const htensor *w, const htensor *x, int64_t rows, int64_t k, int64_t n)
{
    const size_t cnt = (size_t)(rows * n), nbk = (size_t)(k / 32);
    mm_stats st = {xmalloc(cnt * sizeof(double)), xmalloc(cnt * sizeof(double)), xmalloc(cnt * sizeof(double))};
    float *wrow = xmalloc((size_t)k * 4);
    double *sw = xmalloc(nbk * sizeof(double)), *amax = xmalloc(nbk * (size_t)n * sizeof(double));
    for (int64_t t = 0; t < n; t++)
        for (size_t b = 0; b < nbk; b++) {
            double m = 0;
            for (int j = 0; j < 32; j++)
                m = fmax(m, fabs(hrow(x, t)[b * 32 + (size_t)j]));
            amax[(size_t)t * nbk + b] = m;
        }
    for (int64_t r = 0; r < rows; r++) {
        copse__dequantize_row(w->t.type, (uint8_t *)w->data + (size_t)r * w->t.row_stride, wrow, k);
        for (size_t b = 0; b < nbk; b++) {
            sw[b] = 0;
            for (int j = 0; j < 32; j++)
                sw[b] += fabs(wrow[b * 32 + (size_t)j]);
        }
        for (int64_t t = 0; t < n; t++) {
            const float *xt = hrow(x, t);
            double yd = 0, mag = 0, qs = 0;
            for (int64_t i = 0; i < k; i++) {
                double p = (double)wrow[i] * xt[i];
                yd += p;
                mag += fabs(p);
            }
            for (size_t b = 0; b < nbk; b++)
                qs += amax[(size_t)t * nbk + b] * sw[b];
            st.yd[t * rows + r] = yd;
            st.mag[t * rows + r] = mag;
            st.qstep[t * rows + r] = qs;
        }
    }
    free(wrow);
    free(sw);
    free(amax);
    return st;
}

/* Accuracy of one quantized path (output yq) against the f32 reference y:
 * per (row, token), |yq - y| <= sum_b (amax_b / (2 * qmax)) * sum_j |w_bj|
 * + 3e-5 * sum_j |w_j x_j| (each activation rounds by at most half a step,
 * d / 2 = amax / (2 * qmax); the second term covers float accumulation in
 * both paths). Returns the count of violations; *worst gets the largest
 * |yq - y| / sum |w x|. */
static int check_quant_bound(const mm_stats *st, int64_t rows, int64_t n, const float *y, const float *yq,
                             double qmax, double *worst)
{
    int bad = 0;
    *worst = 0;
    for (int64_t i = 0; i < rows * n; i++) {
        double e = fabs((double)yq[i] - (double)y[i]), lim = st->qstep[i] / (2.0 * qmax) + 3e-5 * st->mag[i];
        if (!(e <= lim + 1e-30)) {
            if (!bad)
                fprintf(stderr, "  row %lld token %lld: |%.9g - %.9g| > %.3g\n", (long long)(i % rows),
                        (long long)(i / rows), (double)yq[i], (double)y[i], lim);
            bad++;
        }
        if (st->mag[i] > 0)
            *worst = fmax(*worst, e / st->mag[i]);
    }
    return bad;
}

static void test_matmul_case(mm_case c)
{
    htensor w = hmake(c.type, c.k, c.rows);
    htensor x = hmake(COPSE_Q_F32, c.k, c.n);
    fill_weights(c.type, w.data, c.k, c.rows);
    for (int64_t t = 0; t < c.n; t++)
        fill_f32(hrow(&x, t), (size_t)c.k, t % 3 == 0 ? 4.0f : 1.0f);

    const copse_cpu_kernels *kq = levels[COPSE_CPU_LEVEL_REF_Q8];
    float *ref = run_mm(levels[COPSE_CPU_LEVEL_REF], COPSE_CPU_ACT_Q16, 2, &w, &x, c.n);
    float *rq[2] = {run_mm(kq, COPSE_CPU_ACT_Q16, 2, &w, &x, c.n), run_mm(kq, COPSE_CPU_ACT_Q8, 2, &w, &x, c.n)};
    bool qpath[2] = {kq->mm_q16[c.type] != NULL, kq->mm_q8[c.type] != NULL};

    /* ref vs naive double: |y - y_d| <= 2e-5 * sum |w x| (float accumulation of
     * at most k/8 + 3 additions per lane, each off by <= 2^-24 relative) */
    mm_stats st = mm_stats_make(&w, &x, c.rows, c.k, c.n);
    double worst_ref = 0;
    int bad_ref = 0;
    const copse_qtype_traits *tr = copse__qtype_traits(c.type);
    for (int64_t i = 0; i < c.rows * c.n; i++) {
        double e1 = fabs(ref[i] - st.yd[i]);
        if (e1 > 2e-5 * st.mag[i] + 1e-30)
            bad_ref++;
        if (st.mag[i] > 0)
            worst_ref = fmax(worst_ref, e1 / st.mag[i]);
    }
    CHECK_INT_EQ(bad_ref, 0);
    /* q16 (qmax 32767) and q8 (127) against the f32 reference */
    double worst[2] = {0, 0};
    for (int a = 0; a < 2; a++) {
        int bad_q = check_quant_bound(&st, c.rows, c.n, ref, rq[a], a == 0 ? 32767.0 : 127.0, &worst[a]);
        CHECK_INT_EQ(bad_q, 0);
        if (!qpath[a]) /* the f32 path: the reference itself */
            CHECK_INT_EQ(bits_differ(rq[a], ref, (size_t)(c.rows * c.n), "f32 path"), 0);
    }
    free(st.yd);
    free(st.mag);
    free(st.qstep);

    /* every level vs its scalar oracle, bit-exact, 2 and 3 threads, both precisions */
    int bad = 0;
    for (int l = COPSE_CPU_LEVEL_AVX2; l < COPSE_CPU_LEVEL_COUNT; l++) {
        if (!levels[l])
            continue;
        for (int a = 0; a < 2; a++) {
            float *y = run_mm(levels[l], a ? COPSE_CPU_ACT_Q8 : COPSE_CPU_ACT_Q16, 2 + (l & 1), &w, &x, c.n);
            bad += bits_differ(y, rq[a], (size_t)(c.rows * c.n), levels[l]->name);
            free(y);
        }
    }
    CHECK_INT_EQ(bad, 0);
    fprintf(stderr,
            "matmul %-4s %6lldx%-5lld n=%-3lld  ref-vs-double %.2e  q16-vs-ref %.2e  q8-vs-ref %.2e (max, of sum|wx|)  simd-vs-%s %s\n",
            tr->name, (long long)c.rows, (long long)c.k, (long long)c.n, worst_ref, worst[0], worst[1],
            qpath[0] ? "ref_q8" : "ref", bad ? "DIFFER" : "bit-exact");
    free(ref);
    free(rq[0]);
    free(rq[1]);
    hfree(&w);
    hfree(&x);
}

/* Unoptimized (debug, sanitizer) builds run the scalar oracles ~20x
 * slower: there the 49152-row head shape is tested at 1 token and a
 * 6151-row slice of it at 7 and 32 tokens, and the invariance test uses 72
 * rows instead of 200, to stay well within the test timeout. */
#if defined(__OPTIMIZE__)
#define HEAD_ROWS_BATCH 49152
#else
#define HEAD_ROWS_BATCH 6151
#endif

static void test_matmul(void)
{
    static const mm_case cases[] = {
        {COPSE_Q_Q4_1, 576, 576, 1},   {COPSE_Q_Q4_1, 576, 576, 7},   {COPSE_Q_Q4_1, 576, 576, 32},
        {COPSE_Q_Q4_1, 1536, 576, 1},  {COPSE_Q_Q4_1, 1536, 576, 7},  {COPSE_Q_Q4_1, 1536, 576, 32},
        {COPSE_Q_Q4_1, 576, 1536, 1},  {COPSE_Q_Q4_1, 576, 1536, 7},  {COPSE_Q_Q4_1, 576, 1536, 32},
        {COPSE_Q_Q8_0, 49152, 576, 1}, {COPSE_Q_Q8_0, HEAD_ROWS_BATCH, 576, 7}, {COPSE_Q_Q8_0, HEAD_ROWS_BATCH, 576, 32},
        {COPSE_Q_Q8_0, 4099, 576, 7},  {COPSE_Q_Q8_0, 576, 576, 32},
        {COPSE_Q_Q8_0, 37, 96, 3},     {COPSE_Q_Q4_0, 576, 576, 7},   {COPSE_Q_Q4_0, 33, 160, 5},
        {COPSE_Q_Q4_1, 1, 32, 1},      {COPSE_Q_Q4_1, 17, 288, 9},    {COPSE_Q_F16, 67, 200, 3},
        {COPSE_Q_F32, 29, 130, 4},     {COPSE_Q_Q4_K, 45, 512, 3},    {COPSE_Q_Q6_K, 31, 256, 2},
        {COPSE_Q_Q4_K, 64, 768, 1},    {COPSE_Q_Q4_K, 67, 1536, 7},   {COPSE_Q_Q4_K, 129, 1536, 32},
        {COPSE_Q_Q5_0, 640, 640, 1},   {COPSE_Q_Q5_0, 37, 160, 7},    {COPSE_Q_Q5_1, 43, 608, 9},
        {COPSE_Q_Q6_K, 640, 2048, 1},  {COPSE_Q_Q6_K, 33, 768, 7},    {COPSE_Q_Q6_K, 64, 512, 32},
        {COPSE_Q_Q4_K, 576, 1536, 1},  {COPSE_Q_Q4_K, 576, 1536, 7},  {COPSE_Q_Q4_K, 576, 1536, 32},
        {COPSE_Q_Q6_K, 1536, 768, 1},  {COPSE_Q_Q6_K, 1536, 768, 7},  {COPSE_Q_Q6_K, 1536, 768, 32},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        test_matmul_case(cases[i]);
}

/* A token's row is the same alone, in batches of 1..33 and on 1 vs N threads. */
static void test_matmul_invariance(void)
{
    static const uint32_t types[] = {COPSE_Q_Q4_1, COPSE_Q_Q8_0, COPSE_Q_F16, COPSE_Q_Q6_K};
#if defined(__OPTIMIZE__)
    const int64_t rows = 200, nmax = 33;
#else
    const int64_t rows = 72, nmax = 33; /* unoptimized builds: see HEAD_ROWS_BATCH */
#endif
    for (int ai = 0; ai < 2 * COPSE_CPU_LEVEL_COUNT; ai++) {
        const int l = ai / 2;
        const copse_cpu_act act = ai % 2 ? COPSE_CPU_ACT_Q8 : COPSE_CPU_ACT_Q16;
        if (!levels[l] || (l == COPSE_CPU_LEVEL_REF && act == COPSE_CPU_ACT_Q8))
            continue; /* level ref is the f32 path whatever the precision */
        for (size_t ti = 0; ti < 4; ti++) {
            if (types[ti] == COPSE_Q_Q6_K && act == COPSE_CPU_ACT_Q8)
                continue;
            const int64_t k = types[ti] == COPSE_Q_Q6_K ? 768 : 576;
            htensor w = hmake(types[ti], k, rows);
            htensor x = hmake(COPSE_Q_F32, k, nmax);
            fill_weights(types[ti], w.data, k, rows);
            fill_f32(x.data, (size_t)(k * nmax), 2.0f);
            float *full = run_mm(levels[l], act, 1, &w, &x, nmax);
            int bad = 0;
            copse_backend_queue *q = make_queue_act(levels[l], 3, act);
            htensor o = hmake(COPSE_Q_F32, rows, nmax);
            for (int64_t n = 1; n <= nmax; n++) {
                /* tokens [nmax - n, nmax): a window that moves each token's batch position */
                copse_tensor xv = x.t, ov = o.t;
                xv.offset = (size_t)(nmax - n) * x.t.row_stride;
                xv.ne[1] = n;
                ov.ne[1] = n;
                CHECK_STATUS(q->iface.matmul(q, &w.t, &xv, &ov), COPSE_OK);
                bad += bits_differ(o.data, full + (nmax - n) * rows, (size_t)(n * rows), "batch");
            }
            for (int64_t t = 0; t < nmax; t++) { /* every token alone */
                copse_tensor xv = x.t, ov = o.t;
                xv.offset = (size_t)t * x.t.row_stride;
                xv.ne[1] = 1;
                ov.ne[1] = 1;
                CHECK_STATUS(q->iface.matmul(q, &w.t, &xv, &ov), COPSE_OK);
                bad += bits_differ(o.data, full + t * rows, (size_t)rows, "alone");
            }
            q->iface.destroy(q);
            hfree(&o);
            fprintf(stderr, "matmul invariance %s %s %s: %d differences\n", levels[l]->name, act_names[act],
                    copse__qtype_name(types[ti]), bad);
            CHECK_INT_EQ(bad, 0);
            free(full);
            hfree(&w);
            hfree(&x);
        }
    }
}

/* ---------------------------------------------------------------- attention */

typedef struct attn_setup {
    int n_seqs, n_tokens, block_size, n_heads, n_kv, hd;
    uint32_t pool_type;
    int first[4], n_new[4], committed[4];
    int32_t *tables[4];
    int parent[4][40];       /* tree parents (-1: root), NULL mask if chain */
    uint64_t *mask[4];
    htensor q, kp, vp;
} attn_setup;

static void attn_make(attn_setup *s, int n_seqs, uint32_t pool_type, int n_heads, int n_kv, int hd, bool causal_only,
                      int max_new)
{
    memset(s, 0, sizeof *s);
    s->n_seqs = n_seqs;
    s->block_size = 4 + (int)rnd(13);
    s->n_heads = n_heads;
    s->n_kv = n_kv;
    s->hd = hd;
    s->pool_type = pool_type;
    int total_blocks = 0, need[4];
    for (int i = 0; i < n_seqs; i++) {
        s->committed[i] = (int)rnd(90);
        s->n_new[i] = 1 + (int)rnd((uint32_t)max_new);
        s->first[i] = s->n_tokens;
        s->n_tokens += s->n_new[i];
        need[i] = (s->committed[i] + s->n_new[i] + s->block_size - 1) / s->block_size;
        total_blocks += need[i];
    }
    total_blocks += 3; /* some unused blocks */
    /* random permutation of blocks over the sequences */
    int32_t *perm = xmalloc((size_t)total_blocks * 4);
    for (int i = 0; i < total_blocks; i++)
        perm[i] = i;
    for (int i = total_blocks - 1; i > 0; i--) {
        int j = (int)rnd((uint32_t)i + 1);
        int32_t tmp = perm[i];
        perm[i] = perm[j];
        perm[j] = tmp;
    }
    int used = 0;
    for (int i = 0; i < n_seqs; i++) {
        s->tables[i] = xmalloc((size_t)need[i] * 4);
        memcpy(s->tables[i], perm + used, (size_t)need[i] * 4);
        used += need[i];
        bool tree = !causal_only && (i % 2 == 1);
        int words = (s->n_new[i] + 63) / 64;
        for (int j = 0; j < s->n_new[i]; j++)
            s->parent[i][j] = tree ? (j == 0 ? -1 : (int)rnd((uint32_t)j)) : j - 1;
        if (tree) {
            s->mask[i] = xmalloc((size_t)(s->n_new[i] * words) * 8);
            memset(s->mask[i], 0, (size_t)(s->n_new[i] * words) * 8);
            for (int j = 0; j < s->n_new[i]; j++)
                for (int a = j; a >= 0; a = s->parent[i][a])
                    s->mask[i][j * words + a / 64] |= 1ull << (a % 64);
        }
    }
    free(perm);
    int64_t n_slots = (int64_t)total_blocks * s->block_size;
    s->q = hmake(COPSE_Q_F32, (int64_t)n_heads * hd, s->n_tokens);
    s->kp = hmake(pool_type, (int64_t)n_kv * hd, n_slots);
    s->vp = hmake(pool_type, (int64_t)n_kv * hd, n_slots);
    fill_f32(s->q.data, (size_t)(s->n_tokens * n_heads * hd), 1.5f);
    for (int64_t i = 0; i < n_slots * n_kv * hd; i++) {
        float kv = frand() * 1.5f, vv = frand();
        if (pool_type == COPSE_Q_F32) {
            ((float *)s->kp.data)[i] = kv;
            ((float *)s->vp.data)[i] = vv;
        } else {
            ((uint16_t *)s->kp.data)[i] = copse__f32_to_fp16(kv);
            ((uint16_t *)s->vp.data)[i] = copse__f32_to_fp16(vv);
        }
    }
}

static void attn_free(attn_setup *s)
{
    for (int i = 0; i < s->n_seqs; i++) {
        free(s->tables[i]);
        free(s->mask[i]);
    }
    hfree(&s->q);
    hfree(&s->kp);
    hfree(&s->vp);
}

static copse_attn_batch attn_batch(const attn_setup *s)
{
    return (copse_attn_batch){
        .n_seqs = s->n_seqs,
        .n_tokens = s->n_tokens,
        .block_size = s->block_size,
        .first = s->first,
        .n_new = s->n_new,
        .committed = s->committed,
        .tables = (const int32_t *const *)s->tables,
        .mask = (const uint64_t *const *)s->mask,
        .n_heads = s->n_heads,
        .n_kv_heads = s->n_kv,
        .head_dim = s->hd,
        .scale = 1.0f / sqrtf((float)s->hd),
    };
}

static float *run_attn(const attn_setup *s, const copse_cpu_kernels *k, int threads)
{
    copse_backend_queue *q = make_queue(k, threads);
    htensor o = hmake(COPSE_Q_F32, (int64_t)s->n_heads * s->hd, s->n_tokens);
    copse_attn_batch b = attn_batch(s);
    CHECK_STATUS(q->iface.attention(q, &s->q.t, &s->kp.t, &s->vp.t, &b, &o.t), COPSE_OK);
    q->iface.destroy(q);
    size_t n = (size_t)(s->n_tokens * s->n_heads * s->hd);
    float *r = xmalloc(n * 4);
    memcpy(r, o.data, n * 4);
    hfree(&o);
    return r;
}

static double pool_val(const attn_setup *s, const htensor *p, int32_t slot, int i)
{
    size_t idx = (size_t)slot * (size_t)(s->n_kv * s->hd) + (size_t)i;
    if (s->pool_type == COPSE_Q_F32)
        return ((const float *)p->data)[idx];
    return copse__fp16_to_f32(((const uint16_t *)p->data)[idx]);
}

/* Naive oracle: gather the visible keys explicitly (prefix, then tree
 * ancestors found by walking parents), full softmax in double. Returns the
 * largest absolute error against `got`. */
static double attn_naive_err(const attn_setup *s, const float *got)
{
    double worst = 0;
    int32_t *vis = xmalloc(200 * 4);
    double *sc = xmalloc(200 * sizeof(double));
    for (int si = 0; si < s->n_seqs; si++) {
        for (int j = 0; j < s->n_new[si]; j++) {
            int nv = 0;
            for (int p = 0; p < s->committed[si]; p++)
                vis[nv++] = p;
            bool anc[64] = {0};
            for (int a = j; a >= 0; a = s->parent[si][a])
                anc[a] = true;
            for (int kk = 0; kk < s->n_new[si]; kk++)
                if (anc[kk])
                    vis[nv++] = s->committed[si] + kk;
            for (int h = 0; h < s->n_heads; h++) {
                int kvh = h / (s->n_heads / s->n_kv);
                const float *qv = hrow(&s->q, s->first[si] + j) + h * s->hd;
                double m = -INFINITY;
                for (int v = 0; v < nv; v++) {
                    int32_t slot = s->tables[si][vis[v] / s->block_size] * s->block_size + vis[v] % s->block_size;
                    double d = 0;
                    for (int i = 0; i < s->hd; i++)
                        d += (double)qv[i] * pool_val(s, &s->kp, slot, kvh * s->hd + i);
                    sc[v] = d / sqrt((double)s->hd);
                    m = fmax(m, sc[v]);
                }
                double z = 0;
                for (int v = 0; v < nv; v++)
                    z += exp(sc[v] - m);
                for (int i = 0; i < s->hd; i++) {
                    double o = 0;
                    for (int v = 0; v < nv; v++) {
                        int32_t slot = s->tables[si][vis[v] / s->block_size] * s->block_size + vis[v] % s->block_size;
                        o += exp(sc[v] - m) / z * pool_val(s, &s->vp, slot, kvh * s->hd + i);
                    }
                    double g = got[((size_t)(s->first[si] + j) * s->n_heads + h) * s->hd + i];
                    worst = fmax(worst, fabs(g - o));
                }
            }
        }
    }
    free(vis);
    free(sc);
    return worst;
}

static void test_attention(void)
{
    static const struct {
        uint32_t pool;
        int n_seqs, heads, kv, hd, max_new;
    } cfg[] = {
        {COPSE_Q_F32, 3, 6, 2, 64, 9}, {COPSE_Q_F16, 4, 9, 3, 64, 12}, {COPSE_Q_F32, 2, 4, 4, 32, 40},
        {COPSE_Q_F16, 1, 2, 1, 128, 5},
    };
    for (size_t c = 0; c < sizeof cfg / sizeof cfg[0]; c++) {
        attn_setup s;
        attn_make(&s, cfg[c].n_seqs, cfg[c].pool, cfg[c].heads, cfg[c].kv, cfg[c].hd, false, cfg[c].max_new);
        float *ref = run_attn(&s, levels[COPSE_CPU_LEVEL_REF], 2);
        /* tolerance: float scores/softmax/accumulation over <= 130 keys of
         * |v| <= 1: 2e-5 absolute (observed errors are ~1e-7) */
        double err = attn_naive_err(&s, ref);
        CHECK(err <= 2e-5);
        int bad = 0;
        for (int l = COPSE_CPU_LEVEL_REF_Q8; l < COPSE_CPU_LEVEL_COUNT; l++) {
            if (!levels[l])
                continue;
            for (int th = 1; th <= 3; th += 2) {
                float *y = run_attn(&s, levels[l], th);
                bad += bits_differ(y, ref, (size_t)(s.n_tokens * s.n_heads * s.hd), levels[l]->name);
                free(y);
            }
        }
        CHECK_INT_EQ(bad, 0);
        /* each sequence alone in its own batch: bit-identical */
        for (int si = 0; si < s.n_seqs; si++) {
            copse_attn_batch b = attn_batch(&s);
            int32_t first0 = 0;
            b.n_seqs = 1;
            b.n_tokens = s.n_new[si];
            b.first = &first0;
            b.n_new = &s.n_new[si];
            b.committed = &s.committed[si];
            b.tables = (const int32_t *const *)&s.tables[si];
            b.mask = (const uint64_t *const *)&s.mask[si];
            copse_tensor qv = s.q.t;
            qv.offset = (size_t)s.first[si] * s.q.t.row_stride;
            qv.ne[1] = s.n_new[si];
            htensor o = hmake(COPSE_Q_F32, (int64_t)s.n_heads * s.hd, s.n_new[si]);
            copse_backend_queue *q = make_queue(copse__cpu_kernels_best(), 2);
            CHECK_STATUS(q->iface.attention(q, &qv, &s.kp.t, &s.vp.t, &b, &o.t), COPSE_OK);
            q->iface.destroy(q);
            bad += bits_differ(o.data, ref + (size_t)s.first[si] * s.n_heads * s.hd,
                               (size_t)(s.n_new[si] * s.n_heads * s.hd), "seq alone");
            hfree(&o);
        }
        CHECK_INT_EQ(bad, 0);
        fprintf(stderr, "attention %s pool, %d seqs, %d tokens, heads %d/%d x %d: max err vs double %.2e, levels/threads/alone %s\n",
                copse__qtype_name(cfg[c].pool), s.n_seqs, s.n_tokens, s.n_heads, s.n_kv, s.hd, err,
                bad ? "DIFFER" : "bit-exact");
        free(ref);
        attn_free(&s);
    }

    /* A 33-token causal chunk: token t's output is the same in the chunk of
     * its first B tokens (B = t+1 .. 33) and decoded alone after t
     * committed tokens — prefill, chunked prefill and decode agree bit for bit. */
    for (int pt = 0; pt < 2; pt++) {
        attn_setup s;
        memset(&s, 0, sizeof s);
        s.n_seqs = 1;
        s.block_size = 16;
        s.n_heads = 9;
        s.n_kv = 3;
        s.hd = 64;
        s.pool_type = pt ? COPSE_Q_F16 : COPSE_Q_F32;
        s.committed[0] = 50;
        s.n_new[0] = 33;
        s.n_tokens = 33;
        int nblk = (83 + 15) / 16;
        s.tables[0] = xmalloc((size_t)nblk * 4);
        for (int i = 0; i < nblk; i++)
            s.tables[0][i] = nblk - 1 - i;
        s.q = hmake(COPSE_Q_F32, 9 * 64, 33);
        s.kp = hmake(s.pool_type, 3 * 64, nblk * 16);
        s.vp = hmake(s.pool_type, 3 * 64, nblk * 16);
        fill_f32(s.q.data, 33 * 9 * 64, 1.5f);
        for (int64_t i = 0; i < (int64_t)nblk * 16 * 3 * 64; i++) {
            if (pt) {
                ((uint16_t *)s.kp.data)[i] = copse__f32_to_fp16(frand());
                ((uint16_t *)s.vp.data)[i] = copse__f32_to_fp16(frand());
            } else {
                ((float *)s.kp.data)[i] = frand();
                ((float *)s.vp.data)[i] = frand();
            }
        }
        for (int j = 0; j < 33; j++)
            s.parent[0][j] = j - 1;
        const copse_cpu_kernels *k = copse__cpu_kernels_best();
        float *full = run_attn(&s, k, 2);
        CHECK(attn_naive_err(&s, full) <= 2e-5);
        int bad = 0;
        copse_backend_queue *q = make_queue(k, 3);
        htensor o = hmake(COPSE_Q_F32, 9 * 64, 33);
        const size_t row = 9 * 64;
        for (int n = 1; n <= 33; n++) {
            copse_attn_batch b = attn_batch(&s);
            b.n_new = &n;
            b.n_tokens = n;
            CHECK_STATUS(q->iface.attention(q, &s.q.t, &s.kp.t, &s.vp.t, &b, &o.t), COPSE_OK);
            bad += bits_differ(o.data, full, (size_t)n * row, "chunk");
        }
        for (int t = 0; t < 33; t++) {
            copse_attn_batch b = attn_batch(&s);
            int one = 1, comm = 50 + t;
            b.n_new = &one;
            b.n_tokens = 1;
            b.committed = &comm;
            copse_tensor qv = s.q.t;
            qv.offset = (size_t)t * s.q.t.row_stride;
            qv.ne[1] = 1;
            CHECK_STATUS(q->iface.attention(q, &qv, &s.kp.t, &s.vp.t, &b, &o.t), COPSE_OK);
            bad += bits_differ(o.data, full + t * row, row, "decode");
        }
        q->iface.destroy(q);
        hfree(&o);
        fprintf(stderr, "attention invariance (%s, %s pool): chunk 1..33 and decode-alone %s\n", k->name,
                pt ? "f16" : "f32", bad ? "DIFFER" : "bit-exact");
        CHECK_INT_EQ(bad, 0);
        free(full);
        attn_free(&s);
    }
}

/* Appending to scratch (copse_attn_batch.base, drafting level by level):
 * every sequence's new tokens split in two calls, the second with base =
 * the first call's count and masks over all scratch entries, give outputs
 * bit-identical to one call over all tokens (trees and causal chains). */
static void test_attention_scratch_base(void)
{
    for (int rep = 0; rep < 6; rep++) {
        attn_setup s;
        attn_make(&s, 4, rep % 2 ? COPSE_Q_F16 : COPSE_Q_F32, 6, 2, 64, false, 30);
        const copse_cpu_kernels *k = copse__cpu_kernels_best();
        float *full = run_attn(&s, k, 2);
        const int row = s.n_heads * s.hd;
        int split[4], nA[4], nB[4], fA[4], fB[4], base[4], zero[4] = {0};
        uint64_t *mA[4], *mB[4];
        int totA = 0, totB = 0;
        for (int i = 0; i < s.n_seqs; i++) {
            split[i] = s.n_new[i] < 2 ? s.n_new[i] : 1 + (int)rnd((uint32_t)s.n_new[i] - 1);
            nA[i] = split[i];
            nB[i] = s.n_new[i] - split[i];
            fA[i] = totA;
            fB[i] = totB;
            totA += nA[i];
            totB += nB[i];
            base[i] = split[i];
            mA[i] = mB[i] = NULL;
            if (s.mask[i]) {
                const int wf = (s.n_new[i] + 63) / 64, wa = (nA[i] + 63) / 64;
                mA[i] = xmalloc((size_t)(nA[i] * wa + 1) * 8);
                mB[i] = xmalloc((size_t)(nB[i] * wf + 1) * 8);
                for (int j = 0; j < nA[i]; j++)
                    memcpy(mA[i] + j * wa, s.mask[i] + j * wf, (size_t)wa * 8);
                for (int j = 0; j < nB[i]; j++)
                    memcpy(mB[i] + j * wf, s.mask[i] + (split[i] + j) * wf, (size_t)wf * 8);
            }
        }
        /* sequences whose part is empty are left out of that call */
        int bad = 0;
        for (int part = 0; part < 2; part++) {
            int ns = 0, first[4], n_new[4], comm[4], bs[4], tot = part ? totB : totA;
            const int32_t *tabs[4];
            const uint64_t *masks[4];
            int src_first[4];
            for (int i = 0; i < s.n_seqs; i++) {
                int m = part ? nB[i] : nA[i];
                if (m == 0)
                    continue;
                first[ns] = part ? fB[i] : fA[i];
                n_new[ns] = m;
                comm[ns] = s.committed[i];
                bs[ns] = part ? base[i] : 0;
                tabs[ns] = s.tables[i];
                masks[ns] = part ? mB[i] : mA[i];
                src_first[ns] = s.first[i] + (part ? split[i] : 0);
                ns++;
            }
            if (tot == 0)
                continue;
            /* compact the first positions (parts of skipped sequences take no rows) */
            int at = 0;
            for (int j = 0; j < ns; j++) {
                first[j] = at;
                at += n_new[j];
            }
            htensor qq = hmake(COPSE_Q_F32, row, tot), o = hmake(COPSE_Q_F32, row, tot);
            for (int j = 0; j < ns; j++)
                for (int t = 0; t < n_new[j]; t++)
                    memcpy(hrow(&qq, first[j] + t), hrow(&s.q, src_first[j] + t), (size_t)row * 4);
            copse_attn_batch b = attn_batch(&s);
            b.n_seqs = ns;
            b.n_tokens = tot;
            b.first = first;
            b.n_new = n_new;
            b.committed = comm;
            b.tables = tabs;
            b.mask = masks;
            b.base = part ? bs : zero;
            copse_backend_queue *q = make_queue(k, 2);
            CHECK(q->iface.attention_scratch_base);
            CHECK_STATUS(q->iface.attention(q, &qq.t, &s.kp.t, &s.vp.t, &b, &o.t), COPSE_OK);
            q->iface.destroy(q);
            for (int j = 0; j < ns; j++)
                bad += bits_differ(hrow(&o, first[j]), full + (size_t)src_first[j] * row, (size_t)n_new[j] * row,
                                   part ? "appended part" : "first part");
            hfree(&qq);
            hfree(&o);
        }
        fprintf(stderr, "attention appending to scratch (%s pool): %s\n", rep % 2 ? "f16" : "f32",
                bad ? "DIFFER" : "bit-exact");
        CHECK_INT_EQ(bad, 0);
        for (int i = 0; i < s.n_seqs; i++) {
            free(mA[i]);
            free(mB[i]);
        }
        free(full);
        attn_free(&s);
    }
}

/* ---------------------------------------------------------------- small ops */

static void test_small_ops(void)
{
    for (int l = COPSE_CPU_LEVEL_REF; l < COPSE_CPU_LEVEL_COUNT; l++) {
        const copse_cpu_kernels *k = levels[l];
        if (!k)
            continue;
        copse_backend_queue *q = make_queue(k, 1 + l % 3);
        const int d = 576, n = 11;

        /* embed: bit-exact with the reference dequantizer, every table type */
        static const uint32_t et[] = {COPSE_Q_Q8_0, COPSE_Q_Q4_1, COPSE_Q_F16, COPSE_Q_F32, COPSE_Q_Q6_K};
        for (size_t i = 0; i < 5; i++) {
            int d2 = et[i] == COPSE_Q_Q6_K ? 512 : d;
            htensor tab = hmake(et[i], d2, 100);
            fill_weights(et[i], tab.data, d2, 100);
            htensor o = hmake(COPSE_Q_F32, d2, n);
            int32_t ids[11];
            for (int t = 0; t < n; t++)
                ids[t] = (int32_t)rnd(100);
            ids[3] = ids[2];
            CHECK_STATUS(q->iface.embed(q, &tab.t, ids, n, &o.t), COPSE_OK);
            float *want = xmalloc((size_t)d2 * 4);
            int bad = 0;
            for (int t = 0; t < n; t++) {
                copse__dequantize_row(et[i], (uint8_t *)tab.data + (size_t)ids[t] * tab.t.row_stride, want, d2);
                bad += bits_differ(hrow(&o, t), want, (size_t)d2, "embed");
            }
            CHECK_INT_EQ(bad, 0);
            free(want);
            hfree(&tab);
            hfree(&o);
        }

        /* rms_norm (in place and not), add, swiglu vs double */
        htensor x = hmake(COPSE_Q_F32, d, n), y = hmake(COPSE_Q_F32, d, n), o = hmake(COPSE_Q_F32, d, n);
        htensor w = hmake(COPSE_Q_F32, d, 1);
        fill_f32(x.data, (size_t)(d * n), 3.0f);
        fill_f32(y.data, (size_t)(d * n), 3.0f);
        fill_f32(w.data, (size_t)d, 2.0f);
        CHECK_STATUS(q->iface.rms_norm(q, &x.t, &w.t, 1e-5f, &o.t), COPSE_OK);
        double worst = 0;
        for (int t = 0; t < n; t++) {
            double ss = 0;
            for (int i = 0; i < d; i++)
                ss += (double)hrow(&x, t)[i] * hrow(&x, t)[i];
            double sc = 1.0 / sqrt(ss / d + 1e-5);
            for (int i = 0; i < d; i++) {
                double want = hrow(&x, t)[i] * sc * ((float *)w.data)[i];
                worst = fmax(worst, fabs(hrow(&o, t)[i] - want) / (fabs(want) + 1e-30));
            }
        }
        CHECK(worst <= 4e-7); /* three float roundings */
        float *keep = xmalloc((size_t)(d * n) * 4);
        memcpy(keep, o.data, (size_t)(d * n) * 4);
        CHECK_STATUS(q->iface.rms_norm(q, &x.t, &w.t, 1e-5f, &x.t), COPSE_OK);
        CHECK_INT_EQ(bits_differ(x.data, keep, (size_t)(d * n), "rms in place"), 0);
        fill_f32(x.data, (size_t)(d * n), 3.0f);

        CHECK_STATUS(q->iface.add(q, &x.t, &y.t, &o.t), COPSE_OK);
        int bad = 0;
        for (int i = 0; i < d * n; i++)
            bad += ((float *)o.data)[i] != ((float *)x.data)[i] + ((float *)y.data)[i];
        CHECK_INT_EQ(bad, 0);
        CHECK_STATUS(q->iface.swiglu(q, &x.t, &y.t, &o.t), COPSE_OK);
        worst = 0;
        for (int i = 0; i < d * n; i++) {
            double g = ((float *)x.data)[i], u = ((float *)y.data)[i];
            double want = g / (1.0 + exp(-g)) * u;
            worst = fmax(worst, fabs(((float *)o.data)[i] - want) / (fabs(want) + 1e-6));
        }
        CHECK(worst <= 1e-6); /* expf (<= 1 ulp) and three roundings */
        CHECK_STATUS(q->iface.swiglu(q, &x.t, &y.t, &x.t), COPSE_OK); /* out aliases gate */
        CHECK_INT_EQ(bits_differ(x.data, o.data, (size_t)(d * n), "swiglu alias"), 0);
        free(keep);
        hfree(&x);
        hfree(&y);
        hfree(&o);
        hfree(&w);

        /* rope, NORM and NEOX, vs the formula in double */
        for (int mode = 0; mode <= 2; mode += 2) {
            copse_rope_params rp = {.mode = (copse_rope_mode)mode, .n_heads = 9, .head_dim = 64,
                                    .theta_base = 10000.0f + 90000.0f * (float)rnd(2), .freq_scale = 1.0f};
            if (rnd(2))
                rp.freq_scale = 0.25f;
            htensor r = hmake(COPSE_Q_F32, 9 * 64, n);
            fill_f32(r.data, (size_t)(9 * 64 * n), 2.0f);
            float *orig = xmalloc((size_t)(9 * 64 * n) * 4);
            memcpy(orig, r.data, (size_t)(9 * 64 * n) * 4);
            int32_t pos[11];
            for (int t = 0; t < n; t++)
                pos[t] = (int32_t)rnd(t < 5 ? 20 : 8192);
            CHECK_STATUS(q->iface.rope(q, &r.t, pos, &rp), COPSE_OK);
            worst = 0;
            for (int t = 0; t < n; t++)
                for (int h = 0; h < 9; h++)
                    for (int i = 0; i < 32; i++) {
                        int i0 = mode ? i : 2 * i, i1 = mode ? i + 32 : 2 * i + 1;
                        double th = pos[t] * (double)rp.freq_scale * pow(rp.theta_base, -2.0 * i / 64.0);
                        const float *a = orig + (size_t)(t * 9 * 64 + h * 64);
                        const float *b = hrow(&r, t) + h * 64;
                        double w0 = a[i0] * cos(th) - a[i1] * sin(th);
                        double w1 = a[i0] * sin(th) + a[i1] * cos(th);
                        double mag = fabs(a[i0]) + fabs(a[i1]);
                        worst = fmax(worst, fmax(fabs(b[i0] - w0), fabs(b[i1] - w1)) / (mag + 1e-30));
                    }
            CHECK(worst <= 3e-7); /* cos/sin rounded to float, then 3 roundings */
            free(orig);
            hfree(&r);
        }

        /* kv_store: F32 bit-exact, F16 equal to the reference conversion */
        for (int pt = 0; pt < 2; pt++) {
            uint32_t ty = pt ? COPSE_Q_F16 : COPSE_Q_F32;
            htensor kk = hmake(COPSE_Q_F32, 192, n), vv = hmake(COPSE_Q_F32, 192, n);
            htensor kp = hmake(ty, 192, 64), vp = hmake(ty, 192, 64);
            fill_f32(kk.data, 192 * (size_t)n, 4.0f);
            fill_f32(vv.data, 192 * (size_t)n, 4.0f);
            int32_t slots[11];
            for (int t = 0; t < n; t++)
                slots[t] = (int32_t)(t * 5 + 3);
            CHECK_STATUS(q->iface.kv_store(q, &kk.t, &vv.t, slots, n, &kp.t, &vp.t), COPSE_OK);
            bad = 0;
            for (int t = 0; t < n; t++)
                for (int i = 0; i < 192; i++)
                    for (int z = 0; z < 2; z++) {
                        float src = hrow(z ? &vv : &kk, t)[i];
                        const htensor *p = z ? &vp : &kp;
                        if (pt)
                            bad += ((uint16_t *)p->data)[slots[t] * 192 + i] != copse__f32_to_fp16(src);
                        else
                            bad += memcmp(&((float *)p->data)[slots[t] * 192 + i], &src, 4) != 0;
                    }
            CHECK_INT_EQ(bad, 0);
            hfree(&kk);
            hfree(&vv);
            hfree(&kp);
            hfree(&vp);
        }

        /* argmax: ties go to the lowest index; NaN skipped */
        htensor lg = hmake(COPSE_Q_F32, 1000, 6);
        fill_f32(lg.data, 6000, 5.0f);
        int32_t want[6], got[6];
        for (int t = 0; t < 6; t++) {
            float *row = hrow(&lg, t);
            int a = (int)rnd(1000), b2 = (int)rnd(1000);
            row[a] = 9.0f;
            row[b2] = 9.0f;
            want[t] = a < b2 ? a : b2;
        }
        for (int i = 0; i < 1000; i++) {
            hrow(&lg, 4)[i] = -1.0f; /* all equal: 0 */
            hrow(&lg, 5)[i] = frand();
        }
        want[4] = 0;
        hrow(&lg, 5)[0] = NAN; /* a NaN is never the answer */
        hrow(&lg, 5)[3] = 9.0f;
        hrow(&lg, 5)[8] = 9.0f;
        want[5] = 3;
        CHECK_STATUS(q->iface.argmax(q, &lg.t, got), COPSE_OK);
        for (int t = 0; t < 6; t++)
            CHECK_INT_EQ(got[t], want[t]);
        hfree(&lg);
        CHECK_STATUS(q->iface.synchronize(q), COPSE_OK);
        q->iface.destroy(q);
    }
}

/* ---------------------------------------------------------------- kv_commit */

/* Moves from core/kvcache.h's commit_path, applied to 2 layers x (K, V)
 * pools (F32 and F16): afterwards position len + j holds what accepted node
 * j held, in every pool. */
static void test_kv_commit(void)
{
    copse_kv_plan plan;
    CHECK_STATUS(copse__kv_plan(2, 2, 8, 4, 4, 2 * 2 * 16 * 64 * 4, &plan, NULL, 0), COPSE_OK);
    copse_kvcache *kv = NULL;
    CHECK_STATUS(copse__kvcache_create(&plan, 4, 16, &kv, NULL, 0), COPSE_OK);
    int32_t seq;
    copse_kv_copy cow;
    CHECK_STATUS(copse__kvcache_seq_add(kv, &seq), COPSE_OK);
    CHECK_STATUS(copse__kvcache_reserve(kv, seq, 7, &cow), COPSE_OK);
    copse__kvcache_commit(kv, seq, 7);
    const uint32_t n_nodes = 12;
    CHECK_STATUS(copse__kvcache_reserve(kv, seq, n_nodes, &cow), COPSE_OK);
    int64_t n_slots = (int64_t)plan.n_blocks * plan.block_size;
    htensor pools[4];
    const copse_tensor *pv[4];
    for (int i = 0; i < 4; i++) {
        pools[i] = hmake(i % 2 ? COPSE_Q_F16 : COPSE_Q_F32, 16, n_slots);
        pv[i] = &pools[i].t;
        for (int64_t s = 0; s < n_slots * 16; s++) {
            if (i % 2)
                ((uint16_t *)pools[i].data)[s] = (uint16_t)test_rand(&rng);
            else
                ((float *)pools[i].data)[s] = frand();
        }
    }
    /* node slots and their contents before the commit */
    uint32_t len = copse__kvcache_seq_len(kv, seq);
    uint32_t accepted[] = {1, 2, 5, 9, 10};
    uint8_t before[4][5][64];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 5; j++) {
            int32_t sl = copse__kvcache_slot(kv, seq, len + accepted[j]);
            memcpy(before[i][j], (uint8_t *)pools[i].data + (size_t)sl * pools[i].t.row_stride, pools[i].t.row_stride);
        }
    copse_kv_move mv[5];
    uint32_t n_mv = 0;
    CHECK_STATUS(copse__kvcache_commit_path(kv, seq, n_nodes, accepted, 5, mv, &n_mv), COPSE_OK);
    copse_slot_move sm[5];
    for (uint32_t m = 0; m < n_mv; m++)
        sm[m] = (copse_slot_move){mv[m].src, mv[m].dst};
    copse_backend_queue *q = make_queue(copse__cpu_kernels_best(), 2);
    CHECK_STATUS(q->iface.kv_commit(q, pv, 4, sm, (int32_t)n_mv), COPSE_OK);
    q->iface.destroy(q);
    int bad = 0;
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 5; j++) {
            int32_t sl = copse__kvcache_slot(kv, seq, len + (uint32_t)j);
            bad += memcmp(before[i][j], (uint8_t *)pools[i].data + (size_t)sl * pools[i].t.row_stride,
                          pools[i].t.row_stride) != 0;
        }
    fprintf(stderr, "kv_commit: %u moves, %d wrong entries\n", n_mv, bad);
    CHECK_INT_EQ(bad, 0);
    CHECK(n_mv >= 3);
    for (int i = 0; i < 4; i++)
        hfree(&pools[i]);
    copse__kvcache_destroy(kv);
}

/* ---------------------------------------------------------------- queue, buffers */

static void test_queue_misc(const char *argv0)
{
    copse_backend_queue *q = NULL;
    CHECK_STATUS(dev->iface.queue_create(dev, 0, &q), COPSE_OK);
    CHECK(q && q->dev == dev && copse__cpu_queue_threads(q) >= 1);
    CHECK(copse__cpu_queue_kernels(q) == copse__cpu_kernels_best());
    q->iface.destroy(q);
    /* buffer_from_host borrows: writes show through, free leaves the memory */
    float mem[8] = {0};
    copse_backend_buffer *b = NULL;
    CHECK_STATUS(dev->iface.buffer_from_host(dev, mem, sizeof mem, &b), COPSE_OK);
    CHECK(b->iface.host_ptr(b) == (void *)mem && b->size == sizeof mem);
    float v = 2.5f;
    CHECK_STATUS(b->iface.upload(b, 4, &v, 4), COPSE_OK);
    CHECK(mem[1] == 2.5f);
    CHECK_STATUS(b->iface.upload(b, 30, &v, 4), COPSE_ERANGE);
    b->iface.free(b);
    mem[2] = 1.0f;
    /* COPSE_CPU_ISA forces a level (checked in a child process, since the
     * choice is made once per process) */
    static const char *const names[] = {"ref", "ref_q8", "avx2", "avx512"};
    for (int i = 0; i < 4; i++) {
        char cmd[4200], line[64] = "";
        snprintf(cmd, sizeof cmd, "COPSE_CPU_ISA=%s '%s' --print-best", names[i], argv0);
        FILE *p = popen(cmd, "r");
        if (!p || !fgets(line, sizeof line, p)) {
            CHECK(0);
            if (p)
                pclose(p);
            continue;
        }
        pclose(p);
        line[strcspn(line, "\n")] = 0;
        /* the forced level, or the best one below it the CPU has */
        int want = i == 3 ? COPSE_CPU_LEVEL_AVX512VNNI : i;
        while (!levels[want])
            want--;
        CHECK_STR_EQ(line, levels[want]->name);
    }
    /* COPSE_CPU_ACT picks the queue's activation precision (default q16) */
    static const char *const acts[][2] = {{"q8", "q8"}, {"f32", "f32"}, {"q16", "q16"}, {"bogus", "q16"}, {"", "q16"}};
    for (int i = 0; i < 5; i++) {
        char cmd[4200], line[64] = "";
        snprintf(cmd, sizeof cmd, "COPSE_CPU_ACT=%s '%s' --print-act", acts[i][0], argv0);
        FILE *p = popen(cmd, "r");
        if (!p || !fgets(line, sizeof line, p)) {
            CHECK(0);
            if (p)
                pclose(p);
            continue;
        }
        pclose(p);
        line[strcspn(line, "\n")] = 0;
        CHECK_STR_EQ(line, acts[i][1]);
    }
}

/* ---------------------------------------------------------------- benchmark */

static double time_op(copse_backend_queue *q, const htensor *w, const htensor *x, const htensor *o, int reps)
{
    q->iface.matmul(q, &w->t, &x->t, &o->t); /* warm-up */
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = now_s();
        q->iface.matmul(q, &w->t, &x->t, &o->t);
        double dt = now_s() - t0;
        best = dt < best ? dt : best;
    }
    return best;
}

static int bench(void)
{
    static const struct {
        const char *name;
        uint32_t type;
        int64_t rows, k;
    } shapes[] = {
        {"attn q/o   576x576  q4_1", COPSE_Q_Q4_1, 576, 576},
        {"ffn up    1536x576  q4_1", COPSE_Q_Q4_1, 1536, 576},
        {"ffn down   576x1536 q4_1", COPSE_Q_Q4_1, 576, 1536},
        {"head     49152x576  q8_0", COPSE_Q_Q8_0, 49152, 576},
    };
    const copse_cpu_kernels *best = copse__cpu_kernels_best();
    static const copse_cpu_act acts[] = {COPSE_CPU_ACT_F32, COPSE_CPU_ACT_Q8, COPSE_CPU_ACT_Q16};
    static const int toks[] = {1, 4, 16, 32};
    printf("matmul at level %s, best of N runs; GB/s = weight bytes / time; Gop/s = 2 * rows * k * tokens / time\n",
           best->name);
    printf("%-26s %4s %4s %-5s %10s %8s %8s\n", "shape", "tok", "thr", "act", "us", "GB/s", "Gop/s");
    for (size_t s = 0; s < 4; s++) {
        htensor w = hmake(shapes[s].type, shapes[s].k, shapes[s].rows);
        fill_weights(shapes[s].type, w.data, shapes[s].k, shapes[s].rows);
        double bytes = (double)w.t.row_stride * (double)shapes[s].rows;
        for (int ti = 0; ti < 4; ti++) {
            const int ntok = toks[ti];
            htensor x = hmake(COPSE_Q_F32, shapes[s].k, ntok), o = hmake(COPSE_Q_F32, shapes[s].rows, ntok);
            fill_f32(x.data, (size_t)(shapes[s].k * ntok), 1.0f);
            for (int th = 1; th <= 2; th++) {
                for (int ai = 0; ai < 3; ai++) {
                    copse_backend_queue *q = make_queue_act(best, th, acts[ai]);
                    int reps = acts[ai] == COPSE_CPU_ACT_F32 ? 5 : 20;
                    double dt = time_op(q, &w, &x, &o, reps);
                    printf("%-26s %4d %4d %-5s %10.1f %8.2f %8.2f\n", shapes[s].name, ntok, th, act_names[acts[ai]],
                           dt * 1e6, bytes / dt * 1e-9,
                           2.0 * (double)shapes[s].rows * (double)shapes[s].k * ntok / dt * 1e-9);
                    q->iface.destroy(q);
                }
            }
            hfree(&x);
            hfree(&o);
        }
        hfree(&w);
    }

    /* other ops at the default model's sizes, best level, 1 thread */
    copse_backend_queue *q = make_queue(best, 1);
    const int d = 576, n = 32;
    htensor x = hmake(COPSE_Q_F32, d, n), y = hmake(COPSE_Q_F32, d, n), w = hmake(COPSE_Q_F32, d, 1);
    fill_f32(x.data, (size_t)(d * n), 1.0f);
    fill_f32(y.data, (size_t)(d * n), 1.0f);
    fill_f32(w.data, (size_t)d, 1.0f);
    int32_t pos[32];
    for (int i = 0; i < n; i++)
        pos[i] = 100 + i;
    copse_rope_params rp = {COPSE_ROPE_NORM, 9, 64, 100000.0f, 1.0f};
    double t0 = now_s();
    for (int r = 0; r < 100; r++)
        q->iface.rms_norm(q, &x.t, &w.t, 1e-5f, &y.t);
    double t_norm = (now_s() - t0) / 100;
    t0 = now_s();
    for (int r = 0; r < 100; r++)
        q->iface.rope(q, &x.t, pos, &rp);
    double t_rope = (now_s() - t0) / 100;
    t0 = now_s();
    for (int r = 0; r < 100; r++)
        q->iface.swiglu(q, &x.t, &y.t, &y.t);
    double t_swiglu = (now_s() - t0) / 100;
    printf("\nbest level %s, 1 thread, 32 tokens x 576: rms_norm %.1f us, rope %.1f us, swiglu %.1f us\n", best->name,
           t_norm * 1e6, t_rope * 1e6, t_swiglu * 1e6);
    hfree(&x);
    hfree(&y);
    hfree(&w);
    q->iface.destroy(q);

    /* attention: decode (1 token) and a 32-node chain over 1024 committed tokens */
    for (int nt = 1; nt <= 32; nt *= 32) {
        attn_setup s;
        memset(&s, 0, sizeof s);
        s.n_seqs = 1;
        s.block_size = 16;
        s.n_heads = 9;
        s.n_kv = 3;
        s.hd = 64;
        s.pool_type = COPSE_Q_F16;
        s.committed[0] = 1024;
        s.n_new[0] = nt;
        s.n_tokens = nt;
        int nblk = (1024 + nt + 15) / 16;
        s.tables[0] = xmalloc((size_t)nblk * 4);
        for (int i = 0; i < nblk; i++)
            s.tables[0][i] = i;
        s.q = hmake(COPSE_Q_F32, 9 * 64, nt);
        s.kp = hmake(COPSE_Q_F16, 3 * 64, nblk * 16);
        s.vp = hmake(COPSE_Q_F16, 3 * 64, nblk * 16);
        fill_f32(s.q.data, (size_t)(9 * 64 * nt), 1.0f);
        htensor o = hmake(COPSE_Q_F32, 9 * 64, nt);
        copse_attn_batch b = attn_batch(&s);
        for (int th = 1; th <= 2; th++) {
            copse_backend_queue *aq = make_queue(best, th);
            aq->iface.attention(aq, &s.q.t, &s.kp.t, &s.vp.t, &b, &o.t);
            t0 = now_s();
            for (int r = 0; r < 20; r++)
                aq->iface.attention(aq, &s.q.t, &s.kp.t, &s.vp.t, &b, &o.t);
            printf("attention f16 pool, 1024 ctx, %2d tokens, 9/3 heads x 64, %d thr: %.1f us\n", nt, th,
                   (now_s() - t0) / 20 * 1e6);
            aq->iface.destroy(aq);
        }
        hfree(&o);
        attn_free(&s);
    }
    return 0;
}

/* ---------------------------------------------------------------- main */

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--print-best") == 0) {
        printf("%s\n", copse__cpu_kernels_best()->name);
        return 0;
    }
    rng = test_seed();
    copse_backend_reg *cpu = copse__backend_find("cpu");
    dev = cpu->iface.dev_get(cpu, 0);
    if (argc > 1 && strcmp(argv[1], "--print-act") == 0) {
        copse_backend_queue *q = NULL;
        if (dev->iface.queue_create(dev, 1, &q) != COPSE_OK)
            return 1;
        printf("%s\n", act_names[copse__cpu_queue_act(q)]);
        q->iface.destroy(q);
        return 0;
    }
    for (int l = 0; l < COPSE_CPU_LEVEL_COUNT; l++)
        levels[l] = copse__cpu_kernels_level((copse_cpu_level)l);
    fprintf(stderr, "levels:");
    for (int l = 0; l < COPSE_CPU_LEVEL_COUNT; l++)
        if (levels[l])
            fprintf(stderr, " %s", levels[l]->name);
    fprintf(stderr, "; best: %s\n", copse__cpu_kernels_best()->name);

    if (argc > 1 && strcmp(argv[1], "--bench") == 0)
        return bench();

    test_queue_misc(argv[0]);
    test_kernels();
    test_kernels_q16();
    test_q16_q6k_edge();
    test_q16_multi_token();
    test_small_ops();
    test_kv_commit();
    test_attention();
    test_attention_scratch_base();
    test_matmul_invariance();
    test_matmul();
    return test_exit();
}
