/*
 * test-conformance.c — every op of a backend's queue against the CPU
 * backend's scalar reference, on fresh random inputs.
 *
 *   test-conformance BACKEND [--bench | --quick]
 *
 * BACKEND is a registered backend's name (copse__backend_find); every device
 * it has is tested. No such backend in this build, or no device: exit 77
 * (skip). The seed is printed; COPSE_TEST_SEED=N replays a run.
 *
 * The oracle is the CPU backend's scalar reference (kernel level "ref", f32
 * activations: cpu-ref.c, one thread), never the code under test; when
 * BACKEND is "cpu" its default queue (best SIMD level, Q16 activations) is
 * what is tested. Tolerances, per op (a = backend, r = reference):
 *   embed, kv_store, kv_commit, argmax   exact (dequantization, fp16
 *                                        rounding, copies and comparisons
 *                                        are exactly defined)
 *   rms_norm, add, rope                  |a - r| <= 1e-6 |r| + 1e-6
 *   swiglu                               |a - r| <= 1e-5 |r| + 1e-6
 *   matmul                               |a - r| <= sum_b amax_b / (2 * 32767) * sum_j |w_bj|
 *                                                   + 3e-5 * sum_j |w_j x_j| + 1e-6
 *                                        (the Q16 activation rounding bound of
 *                                        test-cpu-ops plus float accumulation;
 *                                        a backend that keeps f32 activations
 *                                        meets it too); and batch invariance:
 *                                        each token's row of an n-token call
 *                                        equals, bit for bit, the same token
 *                                        computed alone; for the cuda, hip
 *                                        and gpusim backends also exact: bit
 *                                        for bit the CPU's Q16 queue (level
 *                                        ref_q8, Q16 activations; the f32
 *                                        path for types without a Q16 kernel)
 *                                        COPSE_GPU_F16_MMA=1 (cuda, gpusim):
 *                                        F16 / BF16 weights with n >= 64
 *                                        tokens and k % 16 == 0 take the
 *                                        opt-in tensor-core kernel, which
 *                                        rounds activations to f16 / bf16
 *                                        (backends/cuda/matmul.cu); for
 *                                        those the bound's Q16 term becomes
 *                                        sum_j |w_j x_j| u + sum_j |w_j| 2^-25
 *                                        (u = 2^-11 f16, 2^-8 bf16: the
 *                                        relative rounding of each x_j; 2^-25
 *                                        f16's absolute rounding below 2^-14;
 *                                        the products are exact in f32), and
 *                                        the two exact checks (the CPU's Q16
 *                                        matmul, the token alone) use the
 *                                        same bound instead of equality
 *   attention                            |a - r| <= 1e-5 |r| + 1e-5; and
 *                                        batch invariance: a sequence's first
 *                                        and last new tokens computed alone
 *                                        (a decode call, earlier entries as a
 *                                        scratch base) equal their rows of the
 *                                        batch bit for bit
 *   softmax                              |a - r| <= 1e-5 |r| + 1e-9, and the
 *                                        reference itself against a double
 *                                        formula: 1e-6 |p| + 1e-12
 *   verify (optional op)                 against the host verifier
 *                                        copse__verify_run (not the CPU
 *                                        op) on random trees whose
 *                                        children are often the likely
 *                                        tokens: greedy exact; MSS exact on
 *                                        the CPU backend, and on device
 *                                        backends except draws within float
 *                                        rounding of a threshold (their
 *                                        expf and sum order differ, see
 *                                        backends/cuda/verify.cu): counted,
 *                                        at most 1 in 200 trees; with and
 *                                        without stops (eos, max_tokens),
 *                                        cut on the host
 * Shapes: odd sizes, the default model's (d 576, ff 1536, 9 heads / 3 KV
 * heads of 64, vocabulary 49152), every weight type the backend takes
 * (F32, F16, Q4_0, Q4_1, Q8_0, Q4_K and Q6_K are required; Q5_0, Q5_1
 * may answer COPSE_EUNSUPPORTED), F32 and F16 KV pools, tree masks,
 * several sequences, prefixes across attention chunks and KV blocks,
 * head_dim 6 to 256 and grouped-query groups of 1 to 32, and
 * kv_commit move lists with chained moves (core/kvcache.h's contract).
 * Also: a huge allocation fails with COPSE_ENOMEM, no crash.
 *
 * --bench: prints each op's time on the default model's shapes instead.
 * --quick: skips the large matmul shapes and repeats nothing (for the
 * sanitizer build, where the point is memory errors at the edges).
 * --only matmul: runs the matmul tests alone (conformance-gpusim-f16mma).
 */
#include "test.h"

#include <stdbool.h>
#include <time.h>

#include "backend-impl.h"
#include "copse.h"
#include "cpu/cpu-kernels.h"
#include "cpu/cpu-queue.h"
#include "quant.h"
#include "spec/tree.h"
#include "spec/verify.h"

/* ---------------------------------------------------------------- helpers */

static uint64_t rng;
static copse_backend_dev *cpu_dev, *dut_dev;
static copse_backend_queue *refq, *dutq;
static const char *dut_name;
static bool quick; /* --quick: small shapes only (sanitizer builds) */
/* The CPU's Q16 queue (scalar level ref_q8, one thread): the exact matmul
 * oracle of backends that follow cpu-kernels.h's canonical orders. */
static copse_backend_queue *q16q;
static bool exact_matmul;
/* COPSE_GPU_F16_MMA=1 on cuda / gpusim: F16 / BF16 matmuls of at least
 * HMMA_MIN_TOK tokens (k % 16 == 0) round activations to f16 / bf16 (the
 * threshold is MM_HMMA_MIN_TOK of backends/cuda/matmul.cu) */
static bool f16_mma;
#define HMMA_MIN_TOK 64

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
    void *p = calloc(1, n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    return p;
}

static size_t row_bytes(uint32_t type, int64_t ne0)
{
    uint64_t rb = 0;
    if (!copse__qtype_row_bytes(type, (uint64_t)ne0, &rb))
        abort();
    return (size_t)rb;
}

/* A tensor in a buffer of its own on a device, optionally filled. */
typedef struct dten {
    copse_backend_buffer *buf;
    copse_tensor t;
} dten;

static dten dmake(copse_backend_dev *dv, uint32_t type, int64_t ne0, int64_t ne1, const void *host)
{
    dten d;
    size_t rb = row_bytes(type, ne0), n = rb * (size_t)(ne1 > 0 ? ne1 : 1);
    if (dv->iface.buffer_alloc(dv, n, &d.buf) != COPSE_OK) {
        fprintf(stderr, "cannot allocate %zu bytes on the device\n", n);
        exit(1);
    }
    d.t = (copse_tensor){.buf = d.buf, .offset = 0, .type = type, .ne = {ne0, ne1}, .row_stride = rb};
    void *zero = host ? NULL : xmalloc(n);
    copse_status st = d.buf->iface.upload(d.buf, 0, host ? host : zero, n);
    free(zero);
    if (st != COPSE_OK) {
        fprintf(stderr, "upload failed: %s\n", copse_strerror(st));
        exit(1);
    }
    return d;
}

static void dget(const dten *d, void *host)
{
    CHECK_STATUS(d->buf->iface.download(d->buf, 0, host, d->buf->size), COPSE_OK);
}

static void dfree(dten *d)
{
    d->buf->iface.free(d->buf);
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
        case COPSE_Q_BF16: {
            float v = frand();
            uint16_t h = copse__f32_to_bf16(v);
            p[0] = (uint8_t)h;
            p[1] = (uint8_t)(h >> 8);
            break;
        }
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

/* Compare float arrays within |a - r| <= rel |r| + abs (bound[i] instead of
 * abs where given); NaN must match NaN. Prints the worst and counts one
 * check. */
static void compare(const char *what, const float *a, const float *r, size_t n, double rel, double abs_tol,
                    const double *bound)
{
    size_t bad = 0, worst = 0;
    double worst_x = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (r[i] != r[i] || a[i] != a[i]) {
            if ((r[i] != r[i]) != (a[i] != a[i]))
                bad++;
            continue;
        }
        double d = fabs((double)a[i] - (double)r[i]);
        double tol = rel * fabs((double)r[i]) + (bound ? bound[i] : abs_tol);
        double x = tol > 0 ? d / tol : (d > 0 ? INFINITY : 0);
        if (x > worst_x) {
            worst_x = x;
            worst = i;
        }
        if (!(d <= tol))
            bad++;
    }
    test_checks_++;
    if (bad) {
        test_failures_++;
        fprintf(stderr, "FAIL %s: %zu of %zu outside tolerance; worst [%zu]: %.9g vs reference %.9g\n", what, bad, n,
                worst, (double)a[worst], (double)r[worst]);
    } else {
        printf("ok   %s (worst %.3g of tolerance)\n", what, worst_x);
    }
}

static void compare_exact(const char *what, const void *a, const void *r, size_t bytes)
{
    test_checks_++;
    if (memcmp(a, r, bytes) != 0) {
        test_failures_++;
        size_t i = 0;
        while (((const uint8_t *)a)[i] == ((const uint8_t *)r)[i])
            i++;
        fprintf(stderr, "FAIL %s: differs from the reference first at byte %zu of %zu\n", what, i, bytes);
    } else {
        printf("ok   %s (exact)\n", what);
    }
}

/* Run one op on the device under test; report EUNSUPPORTED (returns false). */
static bool op_ok(const char *what, copse_status st, bool required)
{
    if (st == COPSE_OK)
        return true;
    if (st == COPSE_EUNSUPPORTED && !required) {
        printf("skip %s: not supported by %s\n", what, dut_name);
        return false;
    }
    test_checks_++;
    test_failures_++;
    fprintf(stderr, "FAIL %s: %s\n", what, copse_err_name(st));
    return false;
}

static void sync_both(void)
{
    CHECK_STATUS(refq->iface.synchronize(refq), COPSE_OK);
    CHECK_STATUS(dutq->iface.synchronize(dutq), COPSE_OK);
}

/* ---------------------------------------------------------------- embed */

static const uint32_t all_types[] = {COPSE_Q_F32,  COPSE_Q_F16,  COPSE_Q_Q4_0, COPSE_Q_Q4_1, COPSE_Q_Q8_0,
                                     COPSE_Q_Q4_K, COPSE_Q_Q6_K, COPSE_Q_Q5_0, COPSE_Q_Q5_1};
#define N_TYPES (sizeof all_types / sizeof all_types[0])
#define N_REQUIRED 7 /* the first N_REQUIRED of all_types */

static bool is_k(uint32_t t)
{
    return t == COPSE_Q_Q4_K || t == COPSE_Q_Q6_K;
}

static void test_embed(void)
{
    for (size_t ti = 0; ti < N_TYPES; ti++) {
        const uint32_t type = all_types[ti];
        const int64_t dims[] = {576, 1536, 96};
        for (int di = 0; di < 3; di++) {
            int64_t d = is_k(type) ? (di == 0 ? 512 : di == 1 ? 1536 : 256) : dims[di];
            int64_t rows = 1 + rnd(300);
            int32_t n = 1 + (int32_t)rnd(40);
            size_t rb = row_bytes(type, d);
            uint8_t *w = xmalloc(rb * (size_t)rows);
            fill_weights(type, w, d, rows);
            int32_t *ids = xmalloc(sizeof *ids * (size_t)n);
            for (int32_t t = 0; t < n; t++)
                ids[t] = (int32_t)rnd((uint32_t)rows);
            dten rw = dmake(cpu_dev, type, d, rows, w), dw = dmake(dut_dev, type, d, rows, w);
            dten ro = dmake(cpu_dev, COPSE_Q_F32, d, n, NULL), dox = dmake(dut_dev, COPSE_Q_F32, d, n, NULL);
            char what[128];
            snprintf(what, sizeof what, "embed %s d=%lld rows=%lld n=%d", copse__qtype_name(type), (long long)d,
                     (long long)rows, n);
            CHECK_STATUS(refq->iface.embed(refq, &rw.t, ids, n, &ro.t), COPSE_OK);
            if (op_ok(what, dutq->iface.embed(dutq, &dw.t, ids, n, &dox.t), ti < N_REQUIRED)) {
                sync_both();
                float *a = xmalloc(sizeof(float) * (size_t)(d * n)), *r = xmalloc(sizeof(float) * (size_t)(d * n));
                dget(&ro, r);
                dget(&dox, a);
                compare_exact(what, a, r, sizeof(float) * (size_t)(d * n));
                free(a);
                free(r);
            }
            dfree(&rw);
            dfree(&dw);
            dfree(&ro);
            dfree(&dox);
            free(w);
            free(ids);
        }
    }
}

/* ---------------------------------------------------------------- rms_norm, add, swiglu, rope */

static void test_small_ops(void)
{
    const int64_t dims[] = {576, 1536, 1, 7, 1000};
    for (int di = 0; di < 5; di++) {
        const int64_t d = dims[di];
        const int64_t n = 1 + rnd(33);
        const size_t cnt = (size_t)(d * n);
        float *x = xmalloc(4 * cnt), *y = xmalloc(4 * cnt), *w = xmalloc(4 * (size_t)d);
        float *a = xmalloc(4 * cnt), *r = xmalloc(4 * cnt);
        fill_f32(x, cnt, 3.0f);
        fill_f32(y, cnt, 3.0f);
        fill_f32(w, (size_t)d, 1.5f);
        dten rx = dmake(cpu_dev, COPSE_Q_F32, d, n, x), dx = dmake(dut_dev, COPSE_Q_F32, d, n, x);
        dten ry = dmake(cpu_dev, COPSE_Q_F32, d, n, y), dy = dmake(dut_dev, COPSE_Q_F32, d, n, y);
        dten rw = dmake(cpu_dev, COPSE_Q_F32, d, 1, w), dw = dmake(dut_dev, COPSE_Q_F32, d, 1, w);
        dten ro = dmake(cpu_dev, COPSE_Q_F32, d, n, NULL), dox = dmake(dut_dev, COPSE_Q_F32, d, n, NULL);
        char what[128];

        snprintf(what, sizeof what, "rms_norm d=%lld n=%lld", (long long)d, (long long)n);
        CHECK_STATUS(refq->iface.rms_norm(refq, &rx.t, &rw.t, 1e-5f, &ro.t), COPSE_OK);
        if (op_ok(what, dutq->iface.rms_norm(dutq, &dx.t, &dw.t, 1e-5f, &dox.t), true)) {
            sync_both();
            dget(&ro, r);
            dget(&dox, a);
            compare(what, a, r, cnt, 1e-6, 1e-6, NULL);
        }
        snprintf(what, sizeof what, "add d=%lld n=%lld", (long long)d, (long long)n);
        CHECK_STATUS(refq->iface.add(refq, &rx.t, &ry.t, &ro.t), COPSE_OK);
        if (op_ok(what, dutq->iface.add(dutq, &dx.t, &dy.t, &dox.t), true)) {
            sync_both();
            dget(&ro, r);
            dget(&dox, a);
            compare(what, a, r, cnt, 1e-6, 1e-6, NULL);
        }
        snprintf(what, sizeof what, "swiglu d=%lld n=%lld", (long long)d, (long long)n);
        CHECK_STATUS(refq->iface.swiglu(refq, &rx.t, &ry.t, &ro.t), COPSE_OK);
        if (op_ok(what, dutq->iface.swiglu(dutq, &dx.t, &dy.t, &dox.t), true)) {
            sync_both();
            dget(&ro, r);
            dget(&dox, a);
            compare(what, a, r, cnt, 1e-5, 1e-6, NULL);
        }
        /* in place, as the forward pass uses them: out aliases an input */
        snprintf(what, sizeof what, "add in place d=%lld n=%lld", (long long)d, (long long)n);
        CHECK_STATUS(refq->iface.add(refq, &rx.t, &ry.t, &rx.t), COPSE_OK);
        if (op_ok(what, dutq->iface.add(dutq, &dx.t, &dy.t, &dx.t), true)) {
            sync_both();
            dget(&rx, r);
            dget(&dx, a);
            compare(what, a, r, cnt, 1e-6, 1e-6, NULL);
        }
        dfree(&rx);
        dfree(&dx);
        dfree(&ry);
        dfree(&dy);
        dfree(&rw);
        dfree(&dw);
        dfree(&ro);
        dfree(&dox);
        free(x);
        free(y);
        free(w);
        free(a);
        free(r);
    }

    /* rope: (heads, head_dim, mode) */
    const int shapes[][3] = {{9, 64, COPSE_ROPE_NORM}, {3, 64, COPSE_ROPE_NORM}, {2, 6, COPSE_ROPE_NEOX},
                             {1, 128, COPSE_ROPE_NEOX}, {5, 2, COPSE_ROPE_NORM}};
    for (int si = 0; si < 5; si++) {
        copse_rope_params p = {.mode = (copse_rope_mode)shapes[si][2], .n_heads = shapes[si][0],
                               .head_dim = shapes[si][1], .theta_base = si % 2 ? 100000.0f : 10000.0f,
                               .freq_scale = si == 3 ? 0.25f : 1.0f};
        const int64_t d = (int64_t)p.n_heads * p.head_dim, n = 1 + rnd(40);
        const size_t cnt = (size_t)(d * n);
        float *x = xmalloc(4 * cnt), *a = xmalloc(4 * cnt), *r = xmalloc(4 * cnt);
        int32_t *pos = xmalloc(sizeof *pos * (size_t)n);
        fill_f32(x, cnt, 2.0f);
        for (int64_t t = 0; t < n; t++)
            pos[t] = (int32_t)rnd(t % 3 == 0 ? 8192 : 64);
        dten rx = dmake(cpu_dev, COPSE_Q_F32, d, n, x), dx = dmake(dut_dev, COPSE_Q_F32, d, n, x);
        char what[128];
        snprintf(what, sizeof what, "rope %s heads=%d head_dim=%d n=%lld", p.mode == COPSE_ROPE_NEOX ? "neox" : "norm",
                 p.n_heads, p.head_dim, (long long)n);
        CHECK_STATUS(refq->iface.rope(refq, &rx.t, pos, &p), COPSE_OK);
        if (op_ok(what, dutq->iface.rope(dutq, &dx.t, pos, &p), true)) {
            sync_both();
            dget(&rx, r);
            dget(&dx, a);
            compare(what, a, r, cnt, 1e-6, 1e-6, NULL);
        }
        dfree(&rx);
        dfree(&dx);
        free(x);
        free(a);
        free(r);
        free(pos);
    }
}

/* ---------------------------------------------------------------- matmul */

static void test_matmul_one(uint32_t type, int64_t k, int64_t n_out, int64_t n, bool required)
{
    if (quick && k * n_out * n > 2000000)
        return; /* the default model's shapes: what they add is speed, not edges */
    const size_t rb = row_bytes(type, k);
    uint8_t *w = xmalloc(rb * (size_t)n_out);
    fill_weights(type, w, k, n_out);
    float *x = xmalloc(sizeof(float) * (size_t)(k * n));
    fill_f32(x, (size_t)(k * n), 2.0f);
    if (n > 1)
        x[rnd((uint32_t)(k * n))] = 40.0f; /* an outlier inside one block */
    const size_t cnt = (size_t)(n_out * n);
    float *a = xmalloc(4 * cnt), *r = xmalloc(4 * cnt), *one = xmalloc(4 * (size_t)n_out);
    dten rw = dmake(cpu_dev, type, k, n_out, w), dw = dmake(dut_dev, type, k, n_out, w);
    dten rx = dmake(cpu_dev, COPSE_Q_F32, k, n, x), dx = dmake(dut_dev, COPSE_Q_F32, k, n, x);
    dten ro = dmake(cpu_dev, COPSE_Q_F32, n_out, n, NULL), dox = dmake(dut_dev, COPSE_Q_F32, n_out, n, NULL);
    char what[160];
    snprintf(what, sizeof what, "matmul %s k=%lld rows=%lld n=%lld", copse__qtype_name(type), (long long)k,
             (long long)n_out, (long long)n);
    CHECK_STATUS(refq->iface.matmul(refq, &rw.t, &rx.t, &ro.t), COPSE_OK);
    if (op_ok(what, dutq->iface.matmul(dutq, &dw.t, &dx.t, &dox.t), required)) {
        sync_both();
        dget(&ro, r);
        dget(&dox, a);
        /* the bound: Q16 rounding of each activation block plus accumulation;
         * on the opt-in tensor-core path f16 / bf16 rounding of each activation */
        const bool hmma = f16_mma && (type == COPSE_Q_F16 || type == COPSE_Q_BF16) && n >= HMMA_MIN_TOK && k % 16 == 0;
        const double u = type == COPSE_Q_BF16 ? 0x1p-8 : 0x1p-11;
        double *bound = xmalloc(sizeof(double) * cnt);
        float *wrow = xmalloc(sizeof(float) * (size_t)k);
        for (int64_t o = 0; o < n_out; o++) {
            CHECK_STATUS(copse__dequantize_row(type, w + (size_t)o * rb, wrow, k), COPSE_OK);
            for (int64_t t = 0; t < n; t++) {
                const float *xt = x + (size_t)(t * k);
                double q = 0.0, mag = 0.0, wall = 0.0;
                for (int64_t b0 = 0; b0 < k; b0 += 32) {
                    double amax = 0.0, wsum = 0.0;
                    for (int64_t j = b0; j < b0 + 32 && j < k; j++) {
                        amax = fmax(amax, fabs((double)xt[j]));
                        wsum += fabs((double)wrow[j]);
                    }
                    q += amax / (2.0 * 32767.0) * wsum;
                    wall += wsum;
                }
                for (int64_t j = 0; j < k; j++)
                    mag += fabs((double)wrow[j] * (double)xt[j]);
                if (hmma)
                    q = mag * u + wall * 0x1p-25;
                bound[(size_t)(t * n_out + o)] = q + 3e-5 * mag + 1e-6;
            }
        }
        compare(what, a, r, cnt, 0.0, 0.0, bound);
        free(wrow);
        if (exact_matmul) {
            float *e = xmalloc(4 * cnt);
            dten eo = dmake(cpu_dev, COPSE_Q_F32, n_out, n, NULL);
            CHECK_STATUS(q16q->iface.matmul(q16q, &rw.t, &rx.t, &eo.t), COPSE_OK);
            CHECK_STATUS(q16q->iface.synchronize(q16q), COPSE_OK);
            dget(&eo, e);
            char w2[200];
            if (hmma) {
                snprintf(w2, sizeof w2, "%s: near the CPU's Q16 matmul (f16 mma)", what);
                compare(w2, a, e, cnt, 0.0, 0.0, bound);
            } else {
                snprintf(w2, sizeof w2, "%s: equals the CPU's Q16 matmul", what);
                compare_exact(w2, a, e, 4 * cnt);
            }
            dfree(&eo);
            free(e);
        }
        /* batch invariance: the first and last tokens alone */
        if (n > 1) {
            for (int pick = 0; pick < 2; pick++) {
                const int64_t t = pick ? n - 1 : 0;
                dten x1 = dmake(dut_dev, COPSE_Q_F32, k, 1, x + (size_t)(t * k));
                dten o1 = dmake(dut_dev, COPSE_Q_F32, n_out, 1, NULL);
                CHECK_STATUS(dutq->iface.matmul(dutq, &dw.t, &x1.t, &o1.t), COPSE_OK);
                CHECK_STATUS(dutq->iface.synchronize(dutq), COPSE_OK);
                dget(&o1, one);
                char w2[320];
                if (hmma) { /* alone: k_mm_f32, canonical; in the batch: k_mm_hmma */
                    snprintf(w2, sizeof w2, "%s: token %lld alone near it in the batch (f16 mma)", what, (long long)t);
                    compare(w2, one, a + (size_t)(t * n_out), (size_t)n_out, 0.0, 0.0, bound + (size_t)(t * n_out));
                } else {
                    snprintf(w2, sizeof w2, "%s: token %lld alone equals it in the batch", what, (long long)t);
                    compare_exact(w2, one, a + (size_t)(t * n_out), 4 * (size_t)n_out);
                }
                dfree(&x1);
                dfree(&o1);
            }
        }
        free(bound);
    }
    dfree(&rw);
    dfree(&dw);
    dfree(&rx);
    dfree(&dx);
    dfree(&ro);
    dfree(&dox);
    free(w);
    free(x);
    free(a);
    free(r);
    free(one);
}

static void test_matmul(void)
{
    for (size_t ti = 0; ti < N_TYPES; ti++) {
        const uint32_t type = all_types[ti];
        const bool req = ti < N_REQUIRED;
        if (is_k(type)) {
            test_matmul_one(type, 512, 576, 1, req);
            test_matmul_one(type, 1536, 576, 7, req);
            test_matmul_one(type, 256, 13, 33, req);
            test_matmul_one(type, 768, 1536, 9, req);
        } else {
            test_matmul_one(type, 576, 576, 1, req);
            test_matmul_one(type, 576, 1536, 7, req);
            test_matmul_one(type, 1536, 576, 17, req);
            test_matmul_one(type, 64, 13, 9, req);
            test_matmul_one(type, 96, 3, 33, req);
        }
    }
    /* bit-exact backends: token counts on both sides of the CUDA kernels'
     * threshold and inside / across tensor-core tiles, odd row counts,
     * block counts that are no multiple of 8 or of 32 */
    if (exact_matmul) {
        static const int64_t toks[] = {1, 3, 8, 17, 64};
        for (size_t ti = 0; ti < N_TYPES; ti++) {
            const uint32_t type = all_types[ti];
            for (size_t j = 0; j < sizeof toks / sizeof toks[0]; j++) {
                if (is_k(type)) {
                    test_matmul_one(type, 256, 37, toks[j], ti < N_REQUIRED);
                    test_matmul_one(type, 1280, 19, toks[j], ti < N_REQUIRED);
                } else {
                    test_matmul_one(type, 320, 37, toks[j], ti < N_REQUIRED);
                    test_matmul_one(type, 1344, 19, toks[j], ti < N_REQUIRED);
                }
            }
        }
    }
    /* F16 / BF16 across the opt-in tensor-core kernel's threshold (64
     * tokens) and tiles (64 rows x 64 tokens, 32 columns a chunk): rows
     * that are no multiple of the tile, token counts that are and are not,
     * k = 336 ending in half a chunk; exact by default, within the f16 /
     * bf16 bound with COPSE_GPU_F16_MMA=1 */
    if (exact_matmul) {
        static const uint32_t htypes[] = {COPSE_Q_F16, COPSE_Q_BF16};
        static const int64_t hk[][2] = {{576, 37}, {1536, 200}, {336, 200}};
        for (size_t ti = 0; ti < 2; ti++)
            for (size_t si = 0; si < sizeof hk / sizeof hk[0]; si++) {
                test_matmul_one(htypes[ti], hk[si][0], hk[si][1], 64, true);
                test_matmul_one(htypes[ti], hk[si][0], hk[si][1], 100, true);
            }
        test_matmul_one(COPSE_Q_F16, 584, 37, 64, true); /* k % 16 != 0: k_mm_f32 even when enabled */
    }
    /* the default model's output head (Q4_1 shares the tied embedding's type) */
    test_matmul_one(COPSE_Q_Q4_1, 576, 49152, 1, true);
    /* odd k on the f32 path */
    test_matmul_one(COPSE_Q_F32, 7, 5, 3, true);
    test_matmul_one(COPSE_Q_F16, 33, 17, 2, true);
}

/* ---------------------------------------------------------------- kv_store */

static void test_kv_store(void)
{
    const uint32_t pools[] = {COPSE_Q_F32, COPSE_Q_F16};
    const int64_t dims[] = {192, 7};
    for (int pi = 0; pi < 2; pi++)
        for (int di = 0; di < 2; di++) {
            const int64_t dim = dims[di], n_slots = 100, n = 1 + rnd(40);
            float *k = xmalloc(4 * (size_t)(dim * n)), *v = xmalloc(4 * (size_t)(dim * n));
            fill_f32(k, (size_t)(dim * n), 4.0f);
            fill_f32(v, (size_t)(dim * n), 4.0f);
            int32_t *slots = xmalloc(sizeof *slots * (size_t)n);
            int32_t perm[100];
            for (int i = 0; i < 100; i++)
                perm[i] = i;
            for (int i = 99; i > 0; i--) {
                int j = (int)rnd((uint32_t)i + 1);
                int32_t tmp = perm[i];
                perm[i] = perm[j];
                perm[j] = tmp;
            }
            for (int64_t t = 0; t < n; t++)
                slots[t] = perm[t];
            dten rk = dmake(cpu_dev, COPSE_Q_F32, dim, n, k), dk = dmake(dut_dev, COPSE_Q_F32, dim, n, k);
            dten rv = dmake(cpu_dev, COPSE_Q_F32, dim, n, v), dv = dmake(dut_dev, COPSE_Q_F32, dim, n, v);
            dten rkp = dmake(cpu_dev, pools[pi], dim, n_slots, NULL), dkp = dmake(dut_dev, pools[pi], dim, n_slots, NULL);
            dten rvp = dmake(cpu_dev, pools[pi], dim, n_slots, NULL), dvp = dmake(dut_dev, pools[pi], dim, n_slots, NULL);
            char what[128];
            snprintf(what, sizeof what, "kv_store %s pool dim=%lld n=%lld", copse__qtype_name(pools[pi]),
                     (long long)dim, (long long)n);
            CHECK_STATUS(refq->iface.kv_store(refq, &rk.t, &rv.t, slots, (int32_t)n, &rkp.t, &rvp.t), COPSE_OK);
            if (op_ok(what, dutq->iface.kv_store(dutq, &dk.t, &dv.t, slots, (int32_t)n, &dkp.t, &dvp.t), true)) {
                sync_both();
                size_t bytes = rkp.buf->size;
                uint8_t *a = xmalloc(bytes), *r = xmalloc(bytes);
                dget(&rkp, r);
                dget(&dkp, a);
                compare_exact(what, a, r, bytes);
                dget(&rvp, r);
                dget(&dvp, a);
                compare_exact(what, a, r, bytes);
                free(a);
                free(r);
            }
            dfree(&rk);
            dfree(&dk);
            dfree(&rv);
            dfree(&dv);
            dfree(&rkp);
            dfree(&dkp);
            dfree(&rvp);
            dfree(&dvp);
            free(k);
            free(v);
            free(slots);
        }
}

/* ---------------------------------------------------------------- attention */

#define MAX_SEQS 3

/* with_base: each sequence also has 0..40 earlier scratch entries
 * (copse_attn_batch.base), which its tokens see like new entries. */
static void test_attention_one(int n_seqs, int n_heads, int n_kv_heads, int hd, int block_size, uint32_t pool_type,
                               bool trees, bool with_base)
{
    int32_t first[MAX_SEQS], n_new[MAX_SEQS], committed[MAX_SEQS], base[MAX_SEQS];
    int32_t *tables[MAX_SEQS];
    uint64_t *masks[MAX_SEQS];
    int32_t n_tokens = 0, next_block = 0;
    /* block tables: a random permutation of blocks across sequences */
    int32_t n_blocks_total = 0;
    for (int s = 0; s < n_seqs; s++) {
        static const int32_t lens[] = {0, 1, 63, 64, 65, 100, 130, 200};
        committed[s] = lens[rnd(8)];
        n_new[s] = 1 + (int32_t)rnd(s == 0 ? 70 : 20);
        base[s] = with_base ? (int32_t)rnd(41) : 0;
        first[s] = n_tokens;
        n_tokens += n_new[s];
        n_blocks_total += (committed[s] + base[s] + n_new[s] + block_size - 1) / block_size;
    }
    int32_t *perm = xmalloc(sizeof *perm * (size_t)n_blocks_total);
    for (int32_t i = 0; i < n_blocks_total; i++)
        perm[i] = i;
    for (int32_t i = n_blocks_total - 1; i > 0; i--) {
        int32_t j = (int32_t)rnd((uint32_t)i + 1), tmp = perm[i];
        perm[i] = perm[j];
        perm[j] = tmp;
    }
    for (int s = 0; s < n_seqs; s++) {
        int32_t nb = (committed[s] + base[s] + n_new[s] + block_size - 1) / block_size;
        tables[s] = xmalloc(sizeof(int32_t) * (size_t)nb);
        for (int32_t i = 0; i < nb; i++)
            tables[s][i] = perm[next_block++];
        masks[s] = NULL;
        if (trees && s != 1) {
            /* a random tree over the base + n_new entries: parent[j] < j; bit
             * k of new token j's row: k is entry base + j or an ancestor */
            const int32_t all = base[s] + n_new[s], words = (all + 63) / 64;
            masks[s] = xmalloc(sizeof(uint64_t) * (size_t)(n_new[s] * words));
            int32_t *parent = xmalloc(sizeof(int32_t) * (size_t)all);
            for (int32_t j = 0; j < all; j++)
                parent[j] = j == 0 ? -1 : (int32_t)rnd((uint32_t)j);
            for (int32_t j = 0; j < n_new[s]; j++)
                for (int32_t u = base[s] + j; u >= 0; u = parent[u])
                    masks[s][(size_t)j * words + u / 64] |= 1ull << (u % 64);
            free(parent);
        }
    }
    free(perm);
    const int64_t n_slots = (int64_t)n_blocks_total * block_size, kvd = (int64_t)n_kv_heads * hd,
                  qd = (int64_t)n_heads * hd;
    /* pools: random contents (the reference and the device get the same bytes) */
    const size_t pbytes = row_bytes(pool_type, kvd) * (size_t)n_slots;
    uint8_t *kp = xmalloc(pbytes), *vp = xmalloc(pbytes);
    float *tmp = xmalloc(sizeof(float) * (size_t)kvd);
    for (int64_t sl = 0; sl < n_slots; sl++)
        for (int pv = 0; pv < 2; pv++) {
            fill_f32(tmp, (size_t)kvd, pv ? 1.0f : 2.0f);
            uint8_t *dst = (pv ? vp : kp) + row_bytes(pool_type, kvd) * (size_t)sl;
            if (pool_type == COPSE_Q_F32)
                memcpy(dst, tmp, 4 * (size_t)kvd);
            else
                for (int64_t e = 0; e < kvd; e++)
                    put_fp16(dst + 2 * e, tmp[e]);
        }
    free(tmp);
    float *qv = xmalloc(4 * (size_t)(qd * n_tokens));
    fill_f32(qv, (size_t)(qd * n_tokens), 2.0f);
    dten rq = dmake(cpu_dev, COPSE_Q_F32, qd, n_tokens, qv), dq = dmake(dut_dev, COPSE_Q_F32, qd, n_tokens, qv);
    dten rk = dmake(cpu_dev, pool_type, kvd, n_slots, kp), dk = dmake(dut_dev, pool_type, kvd, n_slots, kp);
    dten rv = dmake(cpu_dev, pool_type, kvd, n_slots, vp), dv = dmake(dut_dev, pool_type, kvd, n_slots, vp);
    dten ro = dmake(cpu_dev, COPSE_Q_F32, qd, n_tokens, NULL), dox = dmake(dut_dev, COPSE_Q_F32, qd, n_tokens, NULL);
    const int32_t *ctables[MAX_SEQS];
    const uint64_t *cmasks[MAX_SEQS];
    for (int s = 0; s < n_seqs; s++) {
        ctables[s] = tables[s];
        cmasks[s] = masks[s];
    }
    copse_attn_batch b = {.n_seqs = n_seqs, .n_tokens = n_tokens, .block_size = block_size, .first = first,
                          .n_new = n_new, .committed = committed, .tables = ctables, .mask = cmasks,
                          .base = with_base ? base : NULL, .n_heads = n_heads, .n_kv_heads = n_kv_heads, .head_dim = hd,
                          .scale = 1.0f / sqrtf((float)hd)};
    char what[200];
    int off = snprintf(what, sizeof what, "attention %s pool %d/%d heads x %d, block %d, %s, seqs",
                       copse__qtype_name(pool_type), n_heads, n_kv_heads, hd, block_size, trees ? "trees" : "causal");
    for (int s = 0; s < n_seqs && off < (int)sizeof what; s++)
        off += with_base ? snprintf(what + off, sizeof what - (size_t)off, " %d+%d+%d", committed[s], base[s], n_new[s])
                         : snprintf(what + off, sizeof what - (size_t)off, " %d+%d", committed[s], n_new[s]);
    CHECK_STATUS(refq->iface.attention(refq, &rq.t, &rk.t, &rv.t, &b, &ro.t), COPSE_OK);
    if (op_ok(what, dutq->iface.attention(dutq, &dq.t, &dk.t, &dv.t, &b, &dox.t), true)) {
        sync_both();
        const size_t cnt = (size_t)(qd * n_tokens);
        float *a = xmalloc(4 * cnt), *r = xmalloc(4 * cnt);
        dget(&ro, r);
        dget(&dox, a);
        compare(what, a, r, cnt, 1e-5, 1e-5, NULL);
        /* batch invariance: the first and last new tokens of each sequence
         * alone (a decode-shaped call: its earlier new entries become a
         * scratch base, so tokens past the first need one) equal, bit for
         * bit, their rows of the batch */
        for (int s = 0; s < n_seqs; s++)
            for (int pick = 0; pick < 2; pick++) {
                const int32_t j = pick ? n_new[s] - 1 : 0, b1 = (with_base ? base[s] : 0) + j;
                if ((pick && j == 0) || (b1 > 0 && !dutq->iface.attention_scratch_base))
                    continue;
                const int32_t f1 = 0, n1 = 1, w1 = (b1 + 1 + 63) / 64;
                uint64_t *m1 = NULL;
                if (masks[s]) {
                    const int32_t wall = ((with_base ? base[s] : 0) + n_new[s] + 63) / 64;
                    m1 = xmalloc(sizeof(uint64_t) * (size_t)w1);
                    memcpy(m1, masks[s] + (size_t)j * (size_t)wall, sizeof(uint64_t) * (size_t)w1);
                }
                const int32_t *t1[1] = {tables[s]};
                const uint64_t *mm1[1] = {m1};
                copse_attn_batch b1s = {.n_seqs = 1, .n_tokens = 1, .block_size = block_size, .first = &f1,
                                        .n_new = &n1, .committed = &committed[s], .tables = t1, .mask = mm1,
                                        .base = b1 > 0 ? &b1 : NULL, .n_heads = n_heads, .n_kv_heads = n_kv_heads,
                                        .head_dim = hd, .scale = b.scale};
                const size_t row = (size_t)(first[s] + j);
                dten q1 = dmake(dut_dev, COPSE_Q_F32, qd, 1, qv + row * (size_t)qd);
                dten o1 = dmake(dut_dev, COPSE_Q_F32, qd, 1, NULL);
                CHECK_STATUS(dutq->iface.attention(dutq, &q1.t, &dk.t, &dv.t, &b1s, &o1.t), COPSE_OK);
                CHECK_STATUS(dutq->iface.synchronize(dutq), COPSE_OK);
                float *one = xmalloc(4 * (size_t)qd);
                dget(&o1, one);
                char w2[260];
                snprintf(w2, sizeof w2, "%s: seq %d token %d alone equals it in the batch", what, s, (int)j);
                compare_exact(w2, one, a + row * (size_t)qd, 4 * (size_t)qd);
                free(one);
                free(m1);
                dfree(&q1);
                dfree(&o1);
            }
        free(a);
        free(r);
    }
    dfree(&rq);
    dfree(&dq);
    dfree(&rk);
    dfree(&dk);
    dfree(&rv);
    dfree(&dv);
    dfree(&ro);
    dfree(&dox);
    for (int s = 0; s < n_seqs; s++) {
        free(tables[s]);
        free(masks[s]);
    }
    free(kp);
    free(vp);
    free(qv);
}

static void test_attention(void)
{
    for (int rep = 0; rep < (quick ? 1 : 2); rep++) {
        test_attention_one(1, 9, 3, 64, 16, COPSE_Q_F32, false, false);
        test_attention_one(3, 9, 3, 64, 16, COPSE_Q_F32, true, false);
        test_attention_one(2, 9, 3, 64, 16, COPSE_Q_F16, true, false);
        test_attention_one(2, 4, 4, 32, 5, COPSE_Q_F32, true, false);
        test_attention_one(3, 2, 1, 96, 7, COPSE_Q_F16, false, false);
        test_attention_one(1, 2, 2, 6, 3, COPSE_Q_F32, true, false);
        /* wide heads and large groups: a device kernel's column slabs,
         * head chunks and unaligned rows */
        test_attention_one(2, 32, 1, 256, 16, COPSE_Q_F16, true, false);
        test_attention_one(1, 3, 1, 160, 5, COPSE_Q_F32, false, false);
        test_attention_one(2, 4, 2, 100, 7, COPSE_Q_F16, true, false);
    }
    /* appending to scratch (model drafters), where the device supports it */
    if (dutq->iface.attention_scratch_base) {
        for (int rep = 0; rep < (quick ? 1 : 2); rep++) {
            test_attention_one(3, 9, 3, 64, 16, COPSE_Q_F16, true, true);
            test_attention_one(2, 4, 2, 32, 5, COPSE_Q_F32, false, true);
        }
    } else {
        printf("attention with a scratch base: not supported by %s, skipped\n", dut_name);
    }
}

/* ---------------------------------------------------------------- kv_commit */

/* Pools of several layers in one buffer (as the forward pass lays them
 * out) plus one pool in a buffer of its own; moves of an accepted path
 * (strictly increasing node indices) through a random block table, so
 * moves chain (a destination is an earlier move's source). */
static void test_kv_commit(void)
{
    const uint32_t types[] = {COPSE_Q_F32, COPSE_Q_F16};
    for (int ti = 0; ti < 2; ti++)
        for (int rep = 0; rep < 3; rep++) {
            const uint32_t type = types[ti];
            const int64_t kvd = rep == 2 ? 5 : 192, block = 16, n_blocks = 12, n_slots = block * n_blocks;
            const int n_layers = 4;
            const size_t pb = row_bytes(type, kvd) * (size_t)n_slots;
            uint8_t *big = xmalloc(pb * (size_t)n_layers), *lone = xmalloc(pb);
            for (size_t i = 0; i < pb * (size_t)n_layers; i++)
                big[i] = (uint8_t)test_rand(&rng);
            for (size_t i = 0; i < pb; i++)
                lone[i] = (uint8_t)test_rand(&rng);
            int32_t table[12];
            for (int i = 0; i < 12; i++)
                table[i] = i;
            for (int i = 11; i > 0; i--) {
                int j = (int)rnd((uint32_t)i + 1), t = table[i];
                table[i] = table[j];
                table[j] = t;
            }
            const int32_t len = (int32_t)rnd(100), n_nodes = 1 + (int32_t)rnd(60);
            copse_slot_move moves[64];
            int32_t n_moves = 0, acc = 0;
            for (int32_t node = 0; node < n_nodes; node++) {
                if (rnd(3) == 0)
                    continue; /* not accepted */
                int32_t src_pos = len + node, dst_pos = len + acc;
                acc++;
                if (src_pos == dst_pos)
                    continue;
                moves[n_moves++] = (copse_slot_move){
                    .src = table[src_pos / block] * (int32_t)block + src_pos % (int32_t)block,
                    .dst = table[dst_pos / block] * (int32_t)block + dst_pos % (int32_t)block};
            }
            dten rbig = dmake(cpu_dev, type, kvd, n_slots * n_layers, big),
                 dbig = dmake(dut_dev, type, kvd, n_slots * n_layers, big);
            dten rl = dmake(cpu_dev, type, kvd, n_slots, lone), dl = dmake(dut_dev, type, kvd, n_slots, lone);
            copse_tensor rp[5], dp[5];
            const copse_tensor *rpp[5], *dpp[5];
            for (int l = 0; l < n_layers; l++) {
                rp[l] = rbig.t;
                dp[l] = dbig.t;
                rp[l].ne[1] = dp[l].ne[1] = n_slots;
                rp[l].offset = dp[l].offset = pb * (size_t)l;
            }
            rp[4] = rl.t;
            dp[4] = dl.t;
            for (int l = 0; l < 5; l++) {
                rpp[l] = &rp[l];
                dpp[l] = &dp[l];
            }
            char what[128];
            snprintf(what, sizeof what, "kv_commit %s dim=%lld, %d moves over 5 pools", copse__qtype_name(type),
                     (long long)kvd, n_moves);
            CHECK_STATUS(refq->iface.kv_commit(refq, rpp, 5, moves, n_moves), COPSE_OK);
            if (op_ok(what, dutq->iface.kv_commit(dutq, dpp, 5, moves, n_moves), true)) {
                sync_both();
                uint8_t *a = xmalloc(pb * (size_t)n_layers), *r = xmalloc(pb * (size_t)n_layers);
                dget(&rbig, r);
                dget(&dbig, a);
                compare_exact(what, a, r, pb * (size_t)n_layers);
                dget(&rl, r);
                dget(&dl, a);
                compare_exact(what, a, r, pb);
                free(a);
                free(r);
            }
            dfree(&rbig);
            dfree(&dbig);
            dfree(&rl);
            dfree(&dl);
            free(big);
            free(lone);
        }
}

/* ---------------------------------------------------------------- argmax, softmax */

static void test_verify_ops(void)
{
    const int64_t vocabs[] = {49152, 1, 7, 1000};
    for (int vi = 0; vi < 4; vi++) {
        const int64_t nv = vocabs[vi], n = 1 + rnd(9);
        const size_t cnt = (size_t)(nv * n);
        float *l = xmalloc(4 * cnt);
        fill_f32(l, cnt, 8.0f);
        for (int64_t t = 0; t < n; t++) {
            float *row = l + (size_t)(t * nv);
            if (t % 3 == 1 && nv > 2) { /* a tie for the maximum */
                int64_t i = rnd((uint32_t)nv), j = rnd((uint32_t)nv);
                row[i] = row[j] = 9.5f;
            }
            if (t % 3 == 2 && nv > 2) /* NaNs are skipped */
                row[rnd((uint32_t)nv)] = NAN;
        }
        dten rl = dmake(cpu_dev, COPSE_Q_F32, nv, n, l), dl = dmake(dut_dev, COPSE_Q_F32, nv, n, l);
        int32_t *ia = xmalloc(sizeof(int32_t) * (size_t)n), *ir = xmalloc(sizeof(int32_t) * (size_t)n);
        char what[128];
        snprintf(what, sizeof what, "argmax vocab=%lld n=%lld", (long long)nv, (long long)n);
        CHECK_STATUS(refq->iface.argmax(refq, &rl.t, ir), COPSE_OK);
        if (op_ok(what, dutq->iface.argmax(dutq, &dl.t, ia), true))
            compare_exact(what, ia, ir, sizeof(int32_t) * (size_t)n);
        free(ia);
        free(ir);
        dfree(&rl);
        dfree(&dl);

        /* softmax: no NaNs, some -inf (masked tokens) */
        for (size_t i = 0; i < cnt; i++)
            if (l[i] != l[i] || (nv > 1 && rnd(50) == 0 && i % (size_t)nv != 0))
                l[i] = -INFINITY;
        const float temps[] = {1.0f, 0.7f, 2.5f};
        const float inv_temp = 1.0f / temps[vi % 3];
        rl = dmake(cpu_dev, COPSE_Q_F32, nv, n, l);
        dl = dmake(dut_dev, COPSE_Q_F32, nv, n, l);
        dten ro = dmake(cpu_dev, COPSE_Q_F32, nv, n, NULL), dox = dmake(dut_dev, COPSE_Q_F32, nv, n, NULL);
        float *a = xmalloc(4 * cnt), *r = xmalloc(4 * cnt);
        CHECK_STATUS(refq->iface.softmax(refq, &rl.t, inv_temp, &ro.t), COPSE_OK);
        sync_both();
        dget(&ro, r);
        /* the reference against the formula in double */
        float *p = xmalloc(4 * cnt);
        for (int64_t t = 0; t < n; t++) {
            const float *row = l + (size_t)(t * nv);
            double m = -INFINITY, s = 0.0;
            for (int64_t i = 0; i < nv; i++)
                m = fmax(m, (double)row[i] * inv_temp);
            for (int64_t i = 0; i < nv; i++)
                s += exp((double)row[i] * inv_temp - m);
            for (int64_t i = 0; i < nv; i++)
                p[t * nv + i] = (float)(exp((double)row[i] * inv_temp - m) / s);
        }
        snprintf(what, sizeof what, "softmax reference vs double formula vocab=%lld n=%lld", (long long)nv,
                 (long long)n);
        compare(what, r, p, cnt, 1e-6, 1e-12, NULL);
        snprintf(what, sizeof what, "softmax vocab=%lld n=%lld 1/T=%.3g", (long long)nv, (long long)n,
                 (double)inv_temp);
        if (dutq->iface.softmax && op_ok(what, dutq->iface.softmax(dutq, &dl.t, inv_temp, &dox.t), true)) {
            CHECK_STATUS(dutq->iface.synchronize(dutq), COPSE_OK);
            dget(&dox, a);
            compare(what, a, r, cnt, 1e-5, 1e-9, NULL);
            /* in place (out aliases logits) */
            CHECK_STATUS(dutq->iface.softmax(dutq, &dl.t, inv_temp, &dl.t), COPSE_OK);
            CHECK_STATUS(dutq->iface.synchronize(dutq), COPSE_OK);
            dget(&dl, a);
            snprintf(what, sizeof what, "softmax in place vocab=%lld n=%lld", (long long)nv, (long long)n);
            compare(what, a, r, cnt, 1e-5, 1e-9, NULL);
        } else if (!dutq->iface.softmax) {
            printf("skip softmax: %s leaves it to the host (optional op)\n", dut_name);
        }
        free(a);
        free(r);
        free(p);
        free(l);
        dfree(&rl);
        dfree(&dl);
        dfree(&ro);
        dfree(&dox);
    }
}

/* ---------------------------------------------------------------- verify */

/* A random tree of up to max_nodes nodes (random parents, some deep
 * chains) over vocabulary nv, and its rows of logits: each row's children
 * get high logits (so they are often accepted), plus one hot token that is
 * no child (so rejections and residual draws happen), -inf entries, and
 * sometimes a tie for the maximum or a NaN (an error if the walk gets
 * there). Returns the rows (1 + nodes). */
static int32_t verify_case(copse_tree *t, int32_t nv, int32_t max_nodes, float *rows)
{
    copse__tree_reset(t, (copse_token)rnd((uint32_t)nv));
    const int32_t want = (int32_t)rnd((uint32_t)max_nodes + 1);
    for (int32_t i = 0; i < want; i++) {
        int32_t parent = COPSE_TREE_ROOT;
        if (copse__tree_size(t) > 0 && rnd(4) != 0)
            parent = rnd(2) ? copse__tree_size(t) - 1 : (int32_t)rnd((uint32_t)copse__tree_size(t));
        if (parent >= 0 && copse__tree_node(t, parent)->depth >= COPSE_TREE_MAX_DEPTH)
            parent = COPSE_TREE_ROOT;
        copse_token tok = (copse_token)rnd((uint32_t)(nv < 12 ? nv : 12)); /* siblings often collide: merged */
        if (rnd(3) == 0)
            tok = (copse_token)rnd((uint32_t)nv);
        CHECK_STATUS(copse__tree_add(t, parent, tok, 0.5f, 1u, COPSE_TREE_NO_Q, NULL), COPSE_OK);
    }
    const int32_t n = copse__tree_flat_rows(t);
    for (int32_t r = 0; r < n; r++) {
        float *row = rows + (size_t)r * (size_t)nv;
        for (int32_t i = 0; i < nv; i++)
            row[i] = frand() * 4.0f;
        for (int32_t c = copse__tree_first_child(t, r - 1); c >= 0; c = copse__tree_node(t, c)->next_sibling)
            row[copse__tree_node(t, c)->token] = 9.0f + frand() * 3.0f;
        row[rnd((uint32_t)nv)] = 10.0f + frand();
        if (nv > 2 && rnd(4) == 0)
            row[rnd((uint32_t)nv)] = -INFINITY;
        if (nv > 2 && rnd(6) == 0) { /* a tie for the maximum */
            float m = -INFINITY;
            for (int32_t i = 0; i < nv; i++)
                m = row[i] > m ? row[i] : m;
            row[rnd((uint32_t)nv)] = m;
            row[rnd((uint32_t)nv)] = m;
        }
        if (rnd(40) == 0)
            row[rnd((uint32_t)nv)] = rnd(2) ? NAN : INFINITY;
        if (rnd(80) == 0)
            for (int32_t i = 0; i < nv; i++)
                row[i] = -INFINITY;
    }
    return n;
}

static void test_verify_op(void)
{
    if (!dutq->iface.verify) {
        printf("skip verify: %s verifies on the host (optional op)\n", dut_name);
        return;
    }
    const bool exact = strcmp(dut_name, "cpu") == 0;
    enum { TREES = 8 };
    static const struct {
        int32_t nv, max_nodes, batches;
    } cases[] = {{49152, 12, 6}, {1000, 40, 40}, {7, 20, 30}, {1, 4, 4}};
    static const float temps[] = {0.0f, 0.6f, 1.0f, 1.7f};
    copse_tree *trees[TREES];
    for (int k = 0; k < TREES; k++)
        CHECK_STATUS(copse__tree_create(64, 8, 0, &trees[k]), COPSE_OK);
    int n_greedy = 0, n_mss = 0, n_err = 0, bad_greedy = 0, bad_mss = 0, accepted = 0;
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const int32_t nv = cases[ci].nv;
        copse_verify *v = NULL;
        char err[256];
        CHECK_STATUS(copse__verify_create(nv, 64, &v, err, sizeof err), COPSE_OK);
        const size_t cap_rows = (size_t)TREES * (size_t)(cases[ci].max_nodes + 1);
        float *l = xmalloc(cap_rows * (size_t)nv * sizeof(float));
        int32_t *parent = xmalloc(cap_rows * sizeof(int32_t));
        copse_token *token = xmalloc(cap_rows * sizeof(copse_token));
        for (int bi = 0; bi < cases[ci].batches; bi++) {
            copse_verify_seq seqs[TREES];
            copse_verify_params vp[TREES];
            copse_token eos[TREES][2];
            int32_t rows = 0;
            for (int k = 0; k < TREES; k++) {
                const int32_t n = verify_case(trees[k], nv, cases[ci].max_nodes, l + (size_t)rows * (size_t)nv);
                vp[k] = copse__verify_default_params();
                vp[k].sampling.temperature = temps[rnd(4)];
                vp[k].sampling.seed = test_rand(&rng);
                vp[k].sequence = rnd(3);
                vp[k].step = rnd(1u << 20);
                /* stop conditions half the time: the host cuts the op's
                 * path (copse__verify_from_path) as copse__verify_run cuts
                 * its walk, bad rows below a cut included */
                if (rnd(2)) {
                    eos[k][0] = (copse_token)rnd((uint32_t)(nv < 12 ? nv : 12));
                    eos[k][1] = (copse_token)rnd((uint32_t)nv);
                    vp[k].eos = eos[k];
                    vp[k].n_eos = 2;
                    vp[k].max_tokens = 1 + (int32_t)rnd(6);
                }
                CHECK(copse__verify_op_eligible(trees[k], &vp[k], nv));
                copse__verify_op_tree(trees[k], &vp[k], rows, &seqs[k], parent + rows, token + rows);
                rows += n;
            }
            dten dl = dmake(dut_dev, COPSE_Q_F32, nv, rows, l);
            copse_verify_path path[TREES];
            const copse_verify_batch b = {.n_seqs = TREES, .seqs = seqs, .parent = parent, .token = token};
            if (!op_ok("verify", dutq->iface.verify(dutq, &dl.t, &b, path), true)) {
                dfree(&dl);
                continue;
            }
            for (int k = 0; k < TREES; k++) {
                const bool greedy = vp[k].sampling.temperature == 0.0f;
                copse_verify_result want, got;
                copse_status sw = copse__verify_run(v, trees[k], l + (size_t)seqs[k].row0 * (size_t)nv, (size_t)nv,
                                                    &vp[k], &want, err, sizeof err);
                copse_status sg = copse__verify_from_path(trees[k], &path[k], &vp[k], &got, err, sizeof err);
                n_greedy += greedy;
                n_mss += !greedy;
                n_err += sw != COPSE_OK;
                accepted += want.n_accepted;
                bool same = sw == sg && want.n_tokens == got.n_tokens &&
                            memcmp(want.tokens, got.tokens, sizeof want.tokens[0] * (size_t)want.n_tokens) == 0 &&
                            memcmp(want.accepted, got.accepted, sizeof want.accepted[0] * (size_t)want.n_accepted) ==
                                0 &&
                            want.stop == got.stop &&
                            (want.stop != COPSE_VERIFY_CONTINUE || want.n_tries == got.n_tries);
                if (!same) {
                    if (greedy)
                        bad_greedy++;
                    else
                        bad_mss++;
                    printf("%s verify vocab=%d T=%g tree of %d: status %s/%s, %d tokens (%d accepted) vs host %d (%d)\n",
                           exact || greedy ? "FAIL" : "note", (int)nv, (double)vp[k].sampling.temperature,
                           copse__tree_size(trees[k]), copse_err_name(sg), copse_err_name(sw), got.n_tokens,
                           got.n_accepted, want.n_tokens, want.n_accepted);
                }
            }
            dfree(&dl);
        }
        free(l);
        free(parent);
        free(token);
        copse__verify_destroy(v);
    }
    for (int k = 0; k < TREES; k++)
        copse__tree_destroy(trees[k]);
    printf("verify: %d greedy and %d MSS trees (%d with a bad row on the walk, %d nodes accepted); "
           "differ from the host: %d greedy, %d MSS\n",
           n_greedy, n_mss, n_err, accepted, bad_greedy, bad_mss);
    CHECK(accepted > 0);
    CHECK_INT_EQ(bad_greedy, 0);
    if (exact)
        CHECK_INT_EQ(bad_mss, 0);
    else
        CHECK(bad_mss * 200 <= n_mss);
}

/* ---------------------------------------------------------------- failures */

static void test_failures(void)
{
    copse_backend_buffer *b = NULL;
    copse_status st = dut_dev->iface.buffer_alloc(dut_dev, (size_t)1 << 62, &b);
    test_checks_++;
    if (st != COPSE_ENOMEM || b != NULL) {
        test_failures_++;
        fprintf(stderr, "FAIL a 4 EiB buffer: got %s, want COPSE_ENOMEM and no buffer\n", copse_err_name(st));
        if (b)
            b->iface.free(b);
    } else {
        printf("ok   a 4 EiB buffer: COPSE_ENOMEM\n");
    }
}

/* ---------------------------------------------------------------- bench */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Time `reps` calls of an op (enqueued back to back, then one synchronize). */
#define TIME_OP(label, reps, call)                                                                       \
    do {                                                                                                 \
        CHECK_STATUS((call), COPSE_OK);                                                                  \
        CHECK_STATUS(dutq->iface.synchronize(dutq), COPSE_OK);                                           \
        double t0_ = now_s();                                                                            \
        for (int r_ = 0; r_ < (reps); r_++)                                                              \
            (void)(call);                                                                                \
        CHECK_STATUS(dutq->iface.synchronize(dutq), COPSE_OK);                                           \
        printf("%-48s %10.1f us\n", (label), (now_s() - t0_) / (reps) * 1e6);                            \
    } while (0)

/* Attention on the 8B llama shape (32 heads, 8 KV heads of 128, F16
 * pools) at depth 512: one decode token, and a 32-token tree (a binary
 * tree over the new entries) whose cost the project wants within 1.5x. */
static void bench_attention_llama(void)
{
    const int32_t committed = 512, block = 16, nh = 32, nkv = 8, hd = 128, kvd = nkv * hd;
    const int32_t nb = (committed + 32 + block - 1) / block;
    int32_t *table = xmalloc(sizeof(int32_t) * (size_t)nb);
    for (int32_t i = 0; i < nb; i++)
        table[i] = nb - 1 - i;
    const size_t pbytes = row_bytes(COPSE_Q_F16, kvd) * (size_t)nb * block;
    uint8_t *pool = xmalloc(pbytes);
    float *x = xmalloc(sizeof(float) * (size_t)nh * hd * 32);
    fill_f32(x, (size_t)nh * hd * 32, 1.0f);
    for (size_t i = 0; i < pbytes / 2; i++)
        put_fp16(pool + 2 * i, x[i % ((size_t)nh * hd * 32)]);
    dten kp = dmake(dut_dev, COPSE_Q_F16, kvd, (int64_t)nb * block, pool);
    dten vp = dmake(dut_dev, COPSE_Q_F16, kvd, (int64_t)nb * block, pool);
    dten qd = dmake(dut_dev, COPSE_Q_F32, (int64_t)nh * hd, 32, x);
    dten od = dmake(dut_dev, COPSE_Q_F32, (int64_t)nh * hd, 32, NULL);
    uint64_t mask[32] = {0};
    for (int32_t j = 0; j < 32; j++)
        for (int32_t u = j; u >= 0; u = u == 0 ? -1 : (u - 1) / 2)
            mask[j] |= 1ull << u;
    for (int pick = 0; pick < 2; pick++) {
        int32_t first = 0, nn = pick ? 32 : 1;
        const int32_t *tabs[1] = {table};
        const uint64_t *masks[1] = {pick ? mask : NULL};
        copse_attn_batch ab = {.n_seqs = 1, .n_tokens = nn, .block_size = block, .first = &first, .n_new = &nn,
                               .committed = &committed, .tables = tabs, .mask = masks, .n_heads = nh,
                               .n_kv_heads = nkv, .head_dim = hd, .scale = 1.0f / sqrtf((float)hd)};
        char label[96];
        snprintf(label, sizeof label, "attention 32/8x128 F16 depth 512, %s", pick ? "tree n=32" : "n=1");
        TIME_OP(label, pick ? 20 : 50, dutq->iface.attention(dutq, &qd.t, &kp.t, &vp.t, &ab, &od.t));
    }
    dfree(&kp);
    dfree(&vp);
    dfree(&qd);
    dfree(&od);
    free(table);
    free(pool);
    free(x);
}

static int bench(void)
{
    const int64_t d = 576, ff = 1536, nv = 49152, kvd = 192;
    printf("%s: per-op time on the default model's shapes (SmolLM2-135M, Q4_1), mean of repeated calls\n",
           dut_name);
    for (int ni = 0; ni < 3; ni++) {
        const int64_t n = ni == 0 ? 1 : ni == 1 ? 16 : 64;
        float *x = xmalloc(4 * (size_t)(ff * n));
        fill_f32(x, (size_t)(ff * n), 1.0f);
        uint8_t *w1 = xmalloc(row_bytes(COPSE_Q_Q4_1, d) * (size_t)nv), *w2 = xmalloc(row_bytes(COPSE_Q_Q4_1, ff) * (size_t)d);
        fill_weights(COPSE_Q_Q4_1, w1, d, nv);
        fill_weights(COPSE_Q_Q4_1, w2, ff, d);
        dten xd = dmake(dut_dev, COPSE_Q_F32, d, n, x), xf = dmake(dut_dev, COPSE_Q_F32, ff, n, x);
        dten wv = dmake(dut_dev, COPSE_Q_Q4_1, d, nv, w1), wd = dmake(dut_dev, COPSE_Q_Q4_1, ff, d, w2);
        dten w = dmake(dut_dev, COPSE_Q_F32, d, 1, x), od = dmake(dut_dev, COPSE_Q_F32, d, n, NULL);
        dten of = dmake(dut_dev, COPSE_Q_F32, ff, n, NULL), ov = dmake(dut_dev, COPSE_Q_F32, nv, n, NULL);
        copse_tensor wgate = wv.t, wsq = wv.t;
        wgate.ne[1] = ff;
        wsq.ne[1] = d;
        int32_t *ids = xmalloc(sizeof(int32_t) * (size_t)n), *pos = xmalloc(sizeof(int32_t) * (size_t)n);
        for (int64_t t = 0; t < n; t++) {
            ids[t] = (int32_t)rnd((uint32_t)nv);
            pos[t] = 500 + (int32_t)t;
        }
        char label[96];
        const int reps = n == 1 ? 50 : 10;
        snprintf(label, sizeof label, "embed Q4_1 d=576, n=%lld", (long long)n);
        TIME_OP(label, reps, dutq->iface.embed(dutq, &wv.t, ids, (int32_t)n, &od.t));
        snprintf(label, sizeof label, "rms_norm d=576, n=%lld", (long long)n);
        TIME_OP(label, reps, dutq->iface.rms_norm(dutq, &xd.t, &w.t, 1e-5f, &od.t));
        copse_rope_params rp = {COPSE_ROPE_NORM, 9, 64, 10000.0f, 1.0f};
        snprintf(label, sizeof label, "rope 9x64, n=%lld", (long long)n);
        TIME_OP(label, reps, dutq->iface.rope(dutq, &od.t, pos, &rp));
        snprintf(label, sizeof label, "add d=576, n=%lld", (long long)n);
        TIME_OP(label, reps, dutq->iface.add(dutq, &xd.t, &od.t, &od.t));
        snprintf(label, sizeof label, "swiglu ff=1536, n=%lld", (long long)n);
        TIME_OP(label, reps, dutq->iface.swiglu(dutq, &xf.t, &of.t, &of.t));
        snprintf(label, sizeof label, "matmul Q4_1 576x576, n=%lld", (long long)n);
        TIME_OP(label, reps, dutq->iface.matmul(dutq, &wsq, &xd.t, &od.t));
        snprintf(label, sizeof label, "matmul Q4_1 576->1536, n=%lld", (long long)n);
        TIME_OP(label, reps, dutq->iface.matmul(dutq, &wgate, &xd.t, &of.t));
        snprintf(label, sizeof label, "matmul Q4_1 1536->576, n=%lld", (long long)n);
        TIME_OP(label, reps, dutq->iface.matmul(dutq, &wd.t, &xf.t, &od.t));
        snprintf(label, sizeof label, "matmul Q4_1 head 576->49152, n=%lld", (long long)n);
        TIME_OP(label, n == 1 ? 10 : 3, dutq->iface.matmul(dutq, &wv.t, &xd.t, &ov.t));
        /* attention at depth 512 over one sequence */
        const int32_t committed = 512, block = 16, nb = (int32_t)((committed + n + block - 1) / block);
        int32_t *table = xmalloc(sizeof(int32_t) * (size_t)nb);
        for (int32_t i = 0; i < nb; i++)
            table[i] = i;
        dten kp = dmake(dut_dev, COPSE_Q_F32, kvd, (int64_t)nb * block, NULL);
        dten vp = dmake(dut_dev, COPSE_Q_F32, kvd, (int64_t)nb * block, NULL);
        int32_t first = 0, nn = (int32_t)n;
        const int32_t *tabs[1] = {table};
        const uint64_t *masks[1] = {NULL};
        copse_attn_batch ab = {.n_seqs = 1, .n_tokens = (int32_t)n, .block_size = block, .first = &first, .n_new = &nn,
                               .committed = &committed, .tables = tabs, .mask = masks, .n_heads = 9, .n_kv_heads = 3,
                               .head_dim = 64, .scale = 0.125f};
        int32_t *slots = xmalloc(sizeof(int32_t) * (size_t)n);
        for (int64_t t = 0; t < n; t++)
            slots[t] = committed + (int32_t)t;
        dten kq = dmake(dut_dev, COPSE_Q_F32, kvd, n, x);
        snprintf(label, sizeof label, "kv_store dim=192, n=%lld", (long long)n);
        TIME_OP(label, reps, dutq->iface.kv_store(dutq, &kq.t, &kq.t, slots, (int32_t)n, &kp.t, &vp.t));
        snprintf(label, sizeof label, "attention 9/3x64 depth 512, n=%lld", (long long)n);
        TIME_OP(label, reps, dutq->iface.attention(dutq, &od.t, &kp.t, &vp.t, &ab, &od.t));
        int32_t *am = xmalloc(sizeof(int32_t) * (size_t)n);
        snprintf(label, sizeof label, "argmax vocab=49152, n=%lld", (long long)n);
        TIME_OP(label, reps, dutq->iface.argmax(dutq, &ov.t, am));
        if (dutq->iface.softmax) {
            snprintf(label, sizeof label, "softmax vocab=49152, n=%lld", (long long)n);
            TIME_OP(label, reps, dutq->iface.softmax(dutq, &ov.t, 1.0f, &ov.t));
        }
        free(am);
        free(slots);
        free(table);
        dfree(&kq);
        dfree(&kp);
        dfree(&vp);
        free(ids);
        free(pos);
        free(x);
        free(w1);
        free(w2);
        dfree(&xd);
        dfree(&xf);
        dfree(&wv);
        dfree(&wd);
        dfree(&w);
        dfree(&od);
        dfree(&of);
        dfree(&ov);
    }
    bench_attention_llama();
    return test_exit();
}

/* ---------------------------------------------------------------- main */

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s BACKEND [--bench | --quick | --only matmul]\n", argv[0]);
        return 2;
    }
    const bool do_bench = argc > 2 && strcmp(argv[2], "--bench") == 0;
    quick = argc > 2 && strcmp(argv[2], "--quick") == 0;
    const bool only_matmul = argc > 3 && strcmp(argv[2], "--only") == 0 && strcmp(argv[3], "matmul") == 0;
    if (argc > 2 && !do_bench && !quick && !only_matmul) {
        fprintf(stderr, "usage: %s BACKEND [--bench | --quick | --only matmul]\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0); /* lines interleave with stderr in logs */
    dut_name = argv[1];
    copse_backend_reg *reg = copse__backend_find(dut_name);
    if (!reg) {
        printf("skip: no backend '%s' in this build\n", dut_name);
        return TEST_SKIP;
    }
    size_t n_dev = reg->iface.dev_count(reg);
    if (n_dev == 0) {
        copse_backend_status_text_fn why =
            reg->iface.get_proc ? (copse_backend_status_text_fn)(uintptr_t)reg->iface.get_proc(reg, "status_text")
                                : NULL;
        printf("skip: backend '%s' has no device%s%s\n", dut_name, why ? ": " : "", why ? why(reg) : "");
        return TEST_SKIP;
    }
    rng = test_seed();
    copse_backend_reg *cpu = copse__backend_find("cpu");
    cpu_dev = cpu->iface.dev_get(cpu, 0);
    if (copse__cpu_queue_create_act(cpu_dev, 1, copse__cpu_kernels_ref(), COPSE_CPU_ACT_F32, &refq) != COPSE_OK) {
        fprintf(stderr, "cannot create the reference queue\n");
        return 1;
    }
    exact_matmul = strcmp(dut_name, "cuda") == 0 || strcmp(dut_name, "hip") == 0 || strcmp(dut_name, "gpusim") == 0;
    const char *fm = getenv("COPSE_GPU_F16_MMA");
    f16_mma = fm && strcmp(fm, "1") == 0 && (strcmp(dut_name, "cuda") == 0 || strcmp(dut_name, "gpusim") == 0);
    if (f16_mma)
        printf("COPSE_GPU_F16_MMA=1: F16/BF16 matmuls of >= %d tokens checked against the f16/bf16 bound\n",
               HMMA_MIN_TOK);
    if (exact_matmul && copse__cpu_queue_create_act(cpu_dev, 1, copse__cpu_kernels_level(COPSE_CPU_LEVEL_REF_Q8),
                                                    COPSE_CPU_ACT_Q16, &q16q) != COPSE_OK) {
        fprintf(stderr, "cannot create the CPU Q16 queue\n");
        refq->iface.destroy(refq);
        return 1;
    }
    for (size_t di = 0; di < n_dev; di++) {
        dut_dev = reg->iface.dev_get(reg, di);
        copse_dev_props p;
        dut_dev->iface.get_props(dut_dev, &p);
        printf("== %s:%zu %s\n", dut_name, di, p.name);
        copse_status st = dut_dev->iface.queue_create(dut_dev, 0, &dutq);
        if (st != COPSE_OK) {
            copse_backend_dev_last_error_fn le =
                reg->iface.get_proc ? (copse_backend_dev_last_error_fn)(uintptr_t)reg->iface.get_proc(reg, "dev_last_error")
                                    : NULL;
            fprintf(stderr, "FAIL %s:%zu: cannot create a queue: %s%s%s\n", dut_name, di, copse_err_name(st),
                    le ? "\n" : "", le ? le(dut_dev) : "");
            refq->iface.destroy(refq);
            if (q16q)
                q16q->iface.destroy(q16q);
            return 1;
        }
        if (do_bench) {
            int rc = bench();
            dutq->iface.destroy(dutq);
            refq->iface.destroy(refq);
            if (q16q)
                q16q->iface.destroy(q16q);
            return rc;
        }
        if (only_matmul) {
            test_matmul();
            dutq->iface.destroy(dutq);
            continue;
        }
        test_embed();
        test_small_ops();
        test_matmul();
        test_kv_store();
        test_attention();
        test_kv_commit();
        test_verify_ops();
        test_verify_op();
        test_failures();
        dutq->iface.destroy(dutq);
    }
    refq->iface.destroy(refq);
    if (q16q)
        q16q->iface.destroy(q16q);
    return test_exit();
}
