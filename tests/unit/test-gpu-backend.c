/*
 * test-gpu-backend.c — the CUDA and HIP backends (whichever are built),
 * every op once against the CPU reference on small random shapes.
 *
 * Exits 77 (skip) when no built GPU backend has a device (CI has none, but
 * the gpusim backend, the same kernels on a CPU simulator, always has one:
 * `test-gpu-backend gpusim`, plus its out-of-memory and failed-launch cases,
 * see main).
 * On a GPU machine, for each device: buffers (round trip, bounds, an
 * impossible allocation that must fail with COPSE_ENOMEM and leave the
 * queue usable), then each op on fresh random inputs (COPSE_TEST_SEED
 * replays) against the CPU backend's scalar reference queue (level ref,
 * f32 activations):
 *   embed       bit-identical (both are the reference dequantization);
 *   matmul      |gpu - cpu| <= 1e-4 * sum_j |w_j x_j| + 1e-6 (float
 *               accumulation in two orders), for F32, F16, BF16, Q4_0,
 *               Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K weights at 1, 7
 *               and 33 tokens; and batch invariance: each token of the
 *               33-token call bit-identical to the same token alone;
 *   rms_norm, rope (norm, neox), add, swiglu: relative 1e-5;
 *   kv_store    bit-identical pools (f32 copy, fp16 round to nearest even);
 *   attention   1e-4 absolute on a ragged batch of a causal prefill chunk,
 *               a decode token and a masked tree, F16 and F32 pools, GQA;
 *   kv_commit   bit-identical pools after ordered moves;
 *   argmax      identical ids (ties to the lowest index, NaN skipped);
 *   softmax     relative 1e-5 against a double-precision computation here.
 */
#include "test.h"

#include <stdbool.h>

#include "backend-impl.h"
#include "copse.h"
#include "cpu/cpu-kernels.h"
#include "cpu/cpu-queue.h"
#include "quant.h"

static uint64_t rng;
static copse_backend_dev *cdev, *gdev;
static copse_backend_queue *cq, *gq;

static float frand(void)
{
    return (float)((double)(test_rand(&rng) >> 11) * 0x1p-53 * 2.0 - 1.0);
}

static void *xmalloc(size_t n)
{
    void *p = calloc(1, n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    return p;
}

/* The same tensor on the CPU and on the GPU. */
typedef struct pair {
    copse_backend_buffer *cb, *gb;
    copse_tensor ct, gt;
    size_t bytes;
} pair;

static pair pmake(uint32_t type, int64_t ne0, int64_t ne1, const void *init)
{
    pair p;
    uint64_t rb = 0;
    if (!copse__qtype_row_bytes(type, (uint64_t)ne0, &rb))
        abort();
    p.bytes = (size_t)rb * (size_t)ne1;
    if (cdev->iface.buffer_alloc(cdev, p.bytes, &p.cb) != COPSE_OK ||
        gdev->iface.buffer_alloc(gdev, p.bytes, &p.gb) != COPSE_OK)
        abort();
    void *z = xmalloc(p.bytes);
    const void *src = init ? init : z;
    CHECK_STATUS(p.cb->iface.upload(p.cb, 0, src, p.bytes), COPSE_OK);
    CHECK_STATUS(p.gb->iface.upload(p.gb, 0, src, p.bytes), COPSE_OK);
    free(z);
    p.ct = (copse_tensor){.buf = p.cb, .offset = 0, .type = type, .ne = {ne0, ne1}, .row_stride = (size_t)rb};
    p.gt = p.ct;
    p.gt.buf = p.gb;
    return p;
}

static void pfree(pair *p)
{
    p->cb->iface.free(p->cb);
    p->gb->iface.free(p->gb);
}

/* Both sides' bytes (caller frees). */
static void pget(const pair *p, unsigned char **c, unsigned char **g)
{
    *c = xmalloc(p->bytes);
    *g = xmalloc(p->bytes);
    CHECK_STATUS(cq->iface.synchronize(cq), COPSE_OK);
    CHECK_STATUS(gq->iface.synchronize(gq), COPSE_OK);
    CHECK_STATUS(p->cb->iface.download(p->cb, 0, *c, p->bytes), COPSE_OK);
    CHECK_STATUS(p->gb->iface.download(p->gb, 0, *g, p->bytes), COPSE_OK);
}

static float *frand_array(size_t n, float scale)
{
    float *x = xmalloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++)
        x[i] = frand() * scale;
    return x;
}

/* Compare float arrays: |g - c| <= abs_tol + rel_tol * |c|; reports the worst. */
static void cmp_f32(const char *what, const float *c, const float *g, size_t n, double abs_tol, double rel_tol)
{
    size_t bad = 0, worst = 0;
    double wd = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)g[i] - (double)c[i]);
        if (!(d <= abs_tol + rel_tol * fabs((double)c[i]))) {
            if (bad == 0 || d > wd || d != d) {
                wd = d;
                worst = i;
            }
            bad++;
        }
    }
    CHECK(bad == 0);
    if (bad)
        fprintf(stderr, "  %s: %zu of %zu differ, worst [%zu] cpu %.9g gpu %.9g\n", what, bad, n, worst,
                (double)c[worst], (double)g[worst]);
}

static void put_fp16(unsigned char *p, float v)
{
    uint16_t h = copse__f32_to_fp16(v);
    p[0] = (unsigned char)h;
    p[1] = (unsigned char)(h >> 8);
}

/* Random weight bytes of a type with finite, moderate scales. */
static void fill_weights(uint32_t type, unsigned char *w, size_t bytes)
{
    for (size_t i = 0; i < bytes; i++)
        w[i] = (unsigned char)test_rand(&rng);
    const copse_qtype_traits *tr = copse__qtype_traits(type);
    const size_t bs = tr->type_size;
    for (size_t o = 0; o + bs <= bytes; o += bs) {
        unsigned char *b = w + o;
        switch (type) {
        case COPSE_Q_F32: {
            float v = frand();
            memcpy(b, &v, 4);
            break;
        }
        case COPSE_Q_F16: put_fp16(b, frand()); break;
        case COPSE_Q_BF16: {
            uint16_t h = copse__f32_to_bf16(frand());
            b[0] = (unsigned char)h;
            b[1] = (unsigned char)(h >> 8);
            break;
        }
        case COPSE_Q_Q4_0: case COPSE_Q_Q5_0: case COPSE_Q_Q8_0: put_fp16(b, frand() * 0.05f); break;
        case COPSE_Q_Q4_1: case COPSE_Q_Q5_1: put_fp16(b, frand() * 0.05f); put_fp16(b + 2, frand() * 0.1f); break;
        case COPSE_Q_Q4_K: case COPSE_Q_Q5_K: put_fp16(b, frand() * 0.01f); put_fp16(b + 2, frand() * 0.01f); break;
        case COPSE_Q_Q6_K: put_fp16(b + 208, frand() * 0.005f); break;
        default: abort();
        }
    }
}

static const uint32_t wtypes[] = {COPSE_Q_F32,  COPSE_Q_F16,  COPSE_Q_BF16, COPSE_Q_Q4_0, COPSE_Q_Q4_1, COPSE_Q_Q5_0,
                                  COPSE_Q_Q5_1, COPSE_Q_Q8_0, COPSE_Q_Q4_K, COPSE_Q_Q5_K, COPSE_Q_Q6_K};
#define N_WTYPES (sizeof wtypes / sizeof wtypes[0])

/* ---------------------------------------------------------------- ops */

static void test_embed(void)
{
    const int64_t d = 512, rows = 9;
    for (size_t ti = 0; ti < N_WTYPES; ti++) {
        uint64_t rb = 0;
        copse__qtype_row_bytes(wtypes[ti], (uint64_t)d, &rb);
        unsigned char *w = xmalloc((size_t)rb * rows);
        fill_weights(wtypes[ti], w, (size_t)rb * rows);
        pair tab = pmake(wtypes[ti], d, rows, w), out = pmake(COPSE_Q_F32, d, 5, NULL);
        int32_t ids[5] = {3, 0, 8, 3, 5};
        CHECK_STATUS(cq->iface.embed(cq, &tab.ct, ids, 5, &out.ct), COPSE_OK);
        CHECK_STATUS(gq->iface.embed(gq, &tab.gt, ids, 5, &out.gt), COPSE_OK);
        unsigned char *c, *g;
        pget(&out, &c, &g);
        CHECK(memcmp(c, g, out.bytes) == 0);
        if (memcmp(c, g, out.bytes) != 0)
            fprintf(stderr, "  embed %s differs\n", copse__qtype_name(wtypes[ti]));
        free(c), free(g), free(w);
        pfree(&tab), pfree(&out);
    }
}

static void test_matmul(void)
{
    const int64_t k = 512, n_out = 67;
    static const int64_t ns[] = {1, 7, 33};
    for (size_t ti = 0; ti < N_WTYPES; ti++) {
        uint64_t rb = 0;
        copse__qtype_row_bytes(wtypes[ti], (uint64_t)k, &rb);
        unsigned char *w = xmalloc((size_t)rb * n_out);
        fill_weights(wtypes[ti], w, (size_t)rb * n_out);
        float *wf = xmalloc((size_t)(k * n_out) * sizeof(float));
        for (int64_t r = 0; r < n_out; r++)
            copse__dequantize_row(wtypes[ti], w + (size_t)r * rb, wf + r * k, k);
        pair wt = pmake(wtypes[ti], k, n_out, w);
        float *x = frand_array((size_t)(k * 33), 1.0f);
        float *alone = xmalloc((size_t)(n_out * 33) * sizeof(float));
        for (size_t ni = 0; ni < 3; ni++) {
            const int64_t n = ns[ni];
            pair xt = pmake(COPSE_Q_F32, k, n, x), ot = pmake(COPSE_Q_F32, n_out, n, NULL);
            CHECK_STATUS(cq->iface.matmul(cq, &wt.ct, &xt.ct, &ot.ct), COPSE_OK);
            CHECK_STATUS(gq->iface.matmul(gq, &wt.gt, &xt.gt, &ot.gt), COPSE_OK);
            unsigned char *c, *g;
            pget(&ot, &c, &g);
            const float *cf = (const float *)(void *)c, *gf = (const float *)(void *)g;
            int bad = 0;
            for (int64_t t = 0; t < n; t++)
                for (int64_t r = 0; r < n_out; r++) {
                    double mag = 0.0;
                    for (int64_t j = 0; j < k; j++)
                        mag += fabs((double)wf[r * k + j] * (double)x[t * k + j]);
                    double dd = fabs((double)gf[t * n_out + r] - (double)cf[t * n_out + r]);
                    if (!(dd <= 1e-4 * mag + 1e-6) && bad++ == 0)
                        fprintf(stderr, "  matmul %s n=%lld [%lld][%lld]: cpu %.9g gpu %.9g (sum|wx| %.3g)\n",
                                copse__qtype_name(wtypes[ti]), (long long)n, (long long)t, (long long)r,
                                (double)cf[t * n_out + r], (double)gf[t * n_out + r], mag);
                }
            CHECK_INT_EQ(bad, 0);
            /* batch invariance: token t of the 33-token call == token t alone */
            if (n == 1) {
                for (int64_t t = 0; t < 33; t++) {
                    pair x1 = pmake(COPSE_Q_F32, k, 1, x + t * k), o1 = pmake(COPSE_Q_F32, n_out, 1, NULL);
                    CHECK_STATUS(gq->iface.matmul(gq, &wt.gt, &x1.gt, &o1.gt), COPSE_OK);
                    CHECK_STATUS(gq->iface.synchronize(gq), COPSE_OK);
                    CHECK_STATUS(o1.gb->iface.download(o1.gb, 0, alone + t * n_out, o1.bytes), COPSE_OK);
                    pfree(&x1), pfree(&o1);
                }
            } else if (n == 33) {
                CHECK(memcmp(gf, alone, (size_t)(n_out * 33) * sizeof(float)) == 0);
            }
            free(c), free(g);
            pfree(&xt), pfree(&ot);
        }
        free(alone), free(x), free(wf), free(w);
        pfree(&wt);
    }
}

static void test_rowwise(void)
{
    const int64_t d = 384, n = 6;
    float *a = frand_array((size_t)(d * n), 3.0f), *b = frand_array((size_t)(d * n), 3.0f),
          *wn = frand_array((size_t)d, 1.0f);
    pair pa = pmake(COPSE_Q_F32, d, n, a), pb = pmake(COPSE_Q_F32, d, n, b), pw = pmake(COPSE_Q_F32, d, 1, wn),
         po = pmake(COPSE_Q_F32, d, n, NULL);
    unsigned char *c, *g;

    CHECK_STATUS(cq->iface.rms_norm(cq, &pa.ct, &pw.ct, 1e-5f, &po.ct), COPSE_OK);
    CHECK_STATUS(gq->iface.rms_norm(gq, &pa.gt, &pw.gt, 1e-5f, &po.gt), COPSE_OK);
    pget(&po, &c, &g);
    cmp_f32("rms_norm", (float *)(void *)c, (float *)(void *)g, (size_t)(d * n), 1e-6, 1e-5);
    free(c), free(g);

    CHECK_STATUS(cq->iface.add(cq, &pa.ct, &pb.ct, &po.ct), COPSE_OK);
    CHECK_STATUS(gq->iface.add(gq, &pa.gt, &pb.gt, &po.gt), COPSE_OK);
    pget(&po, &c, &g);
    cmp_f32("add", (float *)(void *)c, (float *)(void *)g, (size_t)(d * n), 0.0, 0.0);
    free(c), free(g);

    CHECK_STATUS(cq->iface.swiglu(cq, &pa.ct, &pb.ct, &po.ct), COPSE_OK);
    CHECK_STATUS(gq->iface.swiglu(gq, &pa.gt, &pb.gt, &po.gt), COPSE_OK);
    pget(&po, &c, &g);
    cmp_f32("swiglu", (float *)(void *)c, (float *)(void *)g, (size_t)(d * n), 1e-6, 1e-5);
    free(c), free(g);

    /* rope: 6 heads of 64, in place on a copy of a */
    const int32_t pos[6] = {0, 1, 17, 300, 4095, 7};
    for (int mode = 0; mode < 2; mode++) {
        copse_rope_params rp = {mode ? COPSE_ROPE_NEOX : COPSE_ROPE_NORM, 6, 64, 10000.0f, 1.0f};
        pair px = pmake(COPSE_Q_F32, d, n, a);
        CHECK_STATUS(cq->iface.rope(cq, &px.ct, pos, &rp), COPSE_OK);
        CHECK_STATUS(gq->iface.rope(gq, &px.gt, pos, &rp), COPSE_OK);
        pget(&px, &c, &g);
        cmp_f32(mode ? "rope neox" : "rope norm", (float *)(void *)c, (float *)(void *)g, (size_t)(d * n), 1e-6, 1e-5);
        free(c), free(g);
        pfree(&px);
    }

    /* softmax against double precision here */
    const float inv_temp = 1.3f;
    CHECK(gq->iface.softmax != NULL);
    if (gq->iface.softmax) {
        CHECK_STATUS(gq->iface.softmax(gq, &pa.gt, inv_temp, &po.gt), COPSE_OK);
        pget(&po, &c, &g);
        float *ref = xmalloc((size_t)(d * n) * sizeof(float));
        for (int64_t t = 0; t < n; t++) {
            double m = -INFINITY, s = 0.0;
            for (int64_t i = 0; i < d; i++)
                m = fmax(m, (double)(a[t * d + i] * inv_temp));
            for (int64_t i = 0; i < d; i++)
                s += exp((double)(a[t * d + i] * inv_temp) - m);
            for (int64_t i = 0; i < d; i++)
                ref[t * d + i] = (float)(exp((double)(a[t * d + i] * inv_temp) - m) / s);
        }
        cmp_f32("softmax", ref, (float *)(void *)g, (size_t)(d * n), 1e-9, 1e-5);
        free(ref), free(c), free(g);
    }

    /* argmax: ties go to the lowest index, NaN is skipped */
    float *l = frand_array((size_t)(d * n), 1.0f);
    l[0 * d + 10] = 5.0f, l[0 * d + 200] = 5.0f;
    l[1 * d + 0] = NAN, l[1 * d + 7] = 9.0f;
    for (int64_t i = 0; i < d; i++)
        l[2 * d + i] = NAN;
    l[3 * d + d - 1] = 2.0f;
    pair pl = pmake(COPSE_Q_F32, d, n, l);
    int32_t ic[6], ig[6];
    CHECK_STATUS(cq->iface.argmax(cq, &pl.ct, ic), COPSE_OK);
    CHECK_STATUS(gq->iface.argmax(gq, &pl.gt, ig), COPSE_OK);
    for (int t = 0; t < 6; t++)
        CHECK_INT_EQ(ig[t], ic[t]);
    CHECK_INT_EQ(ig[0], 10);
    free(l);
    pfree(&pl);

    free(a), free(b), free(wn);
    pfree(&pa), pfree(&pb), pfree(&pw), pfree(&po);
}

/* kv_store, attention (ragged: prefill chunk, decode token, masked tree), kv_commit */
static void test_kv(uint32_t pool_type)
{
    const int32_t H = 4, KVH = 2, HD = 64, BS = 16, NBLK = 8, n_slots = BS * NBLK;
    const int64_t kvd = (int64_t)KVH * HD, qd = (int64_t)H * HD;
    uint64_t rb = 0;
    copse__qtype_row_bytes(pool_type, (uint64_t)kvd, &rb);
    unsigned char *init = xmalloc((size_t)rb * n_slots);
    fill_weights(pool_type, init, (size_t)rb * n_slots);
    pair kp = pmake(pool_type, kvd, n_slots, init), vp = pmake(pool_type, kvd, n_slots, init);

    /* three sequences: committed 20 + 3 causal, committed 9 + 1, committed 5 + 4 tree */
    const int32_t S = 3, first[3] = {0, 3, 4}, n_new[3] = {3, 1, 4}, committed[3] = {20, 9, 5};
    static const int32_t t0[] = {5, 2}, t1[] = {7}, t2[] = {0};
    const int32_t *tables[3] = {t0, t1, t2};
    /* tree: node 0 root, 1 and 2 children of 0, 3 child of 2 */
    static const uint64_t tree[4] = {0x1, 0x3, 0x5, 0xd};
    const uint64_t *masks[3] = {NULL, NULL, tree};
    const int32_t T = 8;
    int32_t slots[8];
    for (int32_t s = 0; s < S; s++)
        for (int32_t j = 0; j < n_new[s]; j++) {
            int32_t p = committed[s] + j;
            slots[first[s] + j] = tables[s][p / BS] * BS + p % BS;
        }
    float *k = frand_array((size_t)(kvd * T), 1.0f), *v = frand_array((size_t)(kvd * T), 1.0f),
          *qv = frand_array((size_t)(qd * T), 1.0f);
    pair pk = pmake(COPSE_Q_F32, kvd, T, k), pv = pmake(COPSE_Q_F32, kvd, T, v), pq = pmake(COPSE_Q_F32, qd, T, qv),
         po = pmake(COPSE_Q_F32, qd, T, NULL);
    CHECK_STATUS(cq->iface.kv_store(cq, &pk.ct, &pv.ct, slots, T, &kp.ct, &vp.ct), COPSE_OK);
    CHECK_STATUS(gq->iface.kv_store(gq, &pk.gt, &pv.gt, slots, T, &kp.gt, &vp.gt), COPSE_OK);
    unsigned char *c, *g;
    pget(&kp, &c, &g);
    CHECK(memcmp(c, g, kp.bytes) == 0);
    free(c), free(g);

    const copse_attn_batch ab = {.n_seqs = S, .n_tokens = T, .block_size = BS, .first = first, .n_new = n_new,
                                 .committed = committed, .tables = tables, .mask = masks, .n_heads = H,
                                 .n_kv_heads = KVH, .head_dim = HD, .scale = 0.125f};
    CHECK_STATUS(cq->iface.attention(cq, &pq.ct, &kp.ct, &vp.ct, &ab, &po.ct), COPSE_OK);
    CHECK_STATUS(gq->iface.attention(gq, &pq.gt, &kp.gt, &vp.gt, &ab, &po.gt), COPSE_OK);
    pget(&po, &c, &g);
    cmp_f32(pool_type == COPSE_Q_F16 ? "attention f16" : "attention f32", (float *)(void *)c, (float *)(void *)g,
            (size_t)(qd * T), 1e-4, 0.0);
    free(c), free(g);

    /* commit the tree path 0, 2, 3 of sequence 2: moves 2 -> 1, 3 -> 2 (slots) */
    const copse_slot_move mv[2] = {{slots[4 + 2], slots[4 + 1]}, {slots[4 + 3], slots[4 + 2]}};
    const copse_tensor *cpools[2] = {&kp.ct, &vp.ct}, *gpools[2] = {&kp.gt, &vp.gt};
    CHECK_STATUS(cq->iface.kv_commit(cq, cpools, 2, mv, 2), COPSE_OK);
    CHECK_STATUS(gq->iface.kv_commit(gq, gpools, 2, mv, 2), COPSE_OK);
    pget(&vp, &c, &g);
    CHECK(memcmp(c, g, vp.bytes) == 0);
    free(c), free(g);

    free(k), free(v), free(qv), free(init);
    pfree(&kp), pfree(&vp), pfree(&pk), pfree(&pv), pfree(&pq), pfree(&po);
}

/* Buffers: round trip, bounds, out of memory leaves the queue usable. */
static void test_buffers(void)
{
    copse_backend_buffer *b = NULL;
    CHECK_STATUS(gdev->iface.buffer_alloc(gdev, 3000, &b), COPSE_OK);
    unsigned char src[3000], dst[3000];
    for (int i = 0; i < 3000; i++)
        src[i] = (unsigned char)(i * 13);
    CHECK_STATUS(b->iface.upload(b, 0, src, 3000), COPSE_OK);
    CHECK_STATUS(b->iface.download(b, 0, dst, 3000), COPSE_OK);
    CHECK(memcmp(src, dst, 3000) == 0);
    CHECK_STATUS(b->iface.upload(b, 2999, src, 2), COPSE_ERANGE);
    CHECK_STATUS(b->iface.download(b, 3001, dst, 0), COPSE_ERANGE);
    b->iface.free(b);

    copse_backend_buffer *huge = NULL;
    CHECK_STATUS(gdev->iface.buffer_alloc(gdev, (size_t)1 << 50, &huge), COPSE_ENOMEM);
    CHECK(huge == NULL);
}

/* Out of memory against the simulator's limit (COPSE_GPUSIM_MEM_LIMIT, set
 * by the test to 256 MiB): a clear COPSE_ENOMEM, and the device and queue
 * stay usable. */
static void test_mem_limit(void)
{
    const size_t big = (size_t)160 << 20;
    copse_backend_buffer *a = NULL, *b = NULL;
    CHECK_STATUS(gdev->iface.buffer_alloc(gdev, big, &a), COPSE_OK);
    CHECK_STATUS(gdev->iface.buffer_alloc(gdev, big, &b), COPSE_ENOMEM);
    CHECK(b == NULL);
    if (a)
        a->iface.free(a);
    CHECK_STATUS(gdev->iface.buffer_alloc(gdev, big, &b), COPSE_OK);
    if (b)
        b->iface.free(b);
    test_rowwise(); /* the queue still works */
}

/* A failed launch (COPSE_GPUSIM_FAIL_LAUNCH=3, set by the test: the third
 * kernel): that op returns COPSE_EIO, the device is marked broken and every
 * later call on it fails with COPSE_EIO; the CPU backend is unaffected. */
static void test_failed_launch(void)
{
    const int64_t d = 64, n = 2;
    float *a = frand_array((size_t)(d * n), 1.0f);
    pair pa = pmake(COPSE_Q_F32, d, n, a), po = pmake(COPSE_Q_F32, d, n, NULL);
    CHECK_STATUS(gq->iface.add(gq, &pa.gt, &pa.gt, &po.gt), COPSE_OK);
    CHECK_STATUS(gq->iface.add(gq, &pa.gt, &pa.gt, &po.gt), COPSE_OK);
    CHECK_STATUS(gq->iface.add(gq, &pa.gt, &pa.gt, &po.gt), COPSE_EIO); /* launch 3 fails */
    CHECK_STATUS(gq->iface.add(gq, &pa.gt, &pa.gt, &po.gt), COPSE_EIO);
    CHECK_STATUS(gq->iface.synchronize(gq), COPSE_EIO);
    float back[128];
    CHECK_STATUS(po.gb->iface.download(po.gb, 0, back, sizeof back), COPSE_EIO);
    copse_backend_buffer *b = NULL;
    CHECK_STATUS(gdev->iface.buffer_alloc(gdev, 4096, &b), COPSE_EIO);
    CHECK(b == NULL);
    copse_backend_queue *q2 = NULL;
    CHECK(gdev->iface.queue_create(gdev, 0, &q2) != COPSE_OK);
    /* the CPU backend still computes */
    CHECK_STATUS(cq->iface.add(cq, &pa.ct, &pa.ct, &po.ct), COPSE_OK);
    CHECK_STATUS(cq->iface.synchronize(cq), COPSE_OK);
    CHECK_STATUS(po.cb->iface.download(po.cb, 0, back, sizeof back), COPSE_OK);
    CHECK(back[5] == a[5] + a[5]);
    free(a);
    pfree(&pa), pfree(&po);
}

/*   test-gpu-backend [BACKEND] [--mem-limit | --fail-launch]
 * BACKEND: one backend to test (default: cuda and hip, whichever are
 * built); --mem-limit and --fail-launch run only that case (the simulator,
 * with its environment variable set). */
int main(int argc, char **argv)
{
    static const char *names[] = {"cuda", "hip"};
    size_t n_names = 2;
    const char *mode = argc > 2 ? argv[2] : "";
    if (argc > 1) {
        names[0] = argv[1];
        n_names = 1;
    }
    int n_built = 0, n_dev = 0;
    for (size_t i = 0; i < n_names; i++) {
        copse_backend_reg *r = copse__backend_find(names[i]);
        if (!r)
            continue;
        n_built++;
        CHECK_INT_EQ(r->api_version, COPSE_BACKEND_API_VERSION);
        size_t nd = r->iface.dev_count(r);
        CHECK(r->iface.dev_get(r, nd) == NULL);
        fprintf(stderr, "backend %s: %zu device(s)\n", names[i], nd);
        n_dev += (int)nd;
    }
    /* CPU stays last, after the device backends */
    CHECK_STR_EQ(copse__backend_get(copse__backend_count() - 1)->name, "cpu");
    if (n_built == 0 || n_dev == 0) {
        fprintf(stderr, "skip: %s\n", n_built ? "no GPU device" : "no GPU backend built");
        return test_failures_ ? 1 : TEST_SKIP;
    }

    rng = test_seed();
    copse_backend_reg *cpu = copse__backend_find("cpu");
    cdev = cpu->iface.dev_get(cpu, 0);
    if (copse__cpu_queue_create_act(cdev, 1, copse__cpu_kernels_ref(), COPSE_CPU_ACT_F32, &cq) != COPSE_OK)
        return 1;
    for (size_t i = 0; i < n_names; i++) {
        copse_backend_reg *r = copse__backend_find(names[i]);
        for (size_t d = 0; r && d < r->iface.dev_count(r); d++) {
            gdev = r->iface.dev_get(r, d);
            copse_dev_props p;
            gdev->iface.get_props(gdev, &p);
            fprintf(stderr, "device %s [%s], %d units, %.1f GiB\n", p.name, p.features, p.compute_units,
                    (double)p.memory_total / (1 << 30));
            CHECK(p.kind == COPSE_DEV_GPU && p.memory_total > 0);
            CHECK_STATUS(gdev->iface.queue_create(gdev, 0, &gq), COPSE_OK);
            if (!gq)
                continue;
            if (!strcmp(mode, "--fail-launch")) {
                test_failed_launch();
                gq->iface.destroy(gq);
                gq = NULL;
                continue;
            }
            if (!strcmp(mode, "--mem-limit")) {
                test_mem_limit();
                CHECK_STATUS(gq->iface.synchronize(gq), COPSE_OK);
                gq->iface.destroy(gq);
                gq = NULL;
                continue;
            }
            test_buffers();
            test_embed();
            test_matmul();
            test_rowwise();
            test_kv(COPSE_Q_F16);
            test_kv(COPSE_Q_F32);
            CHECK_STATUS(gq->iface.synchronize(gq), COPSE_OK);
            gq->iface.destroy(gq);
            gq = NULL;
        }
    }
    cq->iface.destroy(cq);
    return test_exit();
}
