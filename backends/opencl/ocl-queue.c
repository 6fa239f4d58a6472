/*
 * ocl-queue.c — the OpenCL backend's queue: one in-order cl_command_queue,
 * the compute ops as kernel launches on it.
 *
 * Ops return once their kernels are enqueued (asynchronous); synchronize()
 * waits for them (clFinish), argmax waits because its ids come back to the
 * host. Per-call host metadata (token ids, rope angles, slots, block
 * tables, masks, moves) goes through a metadata arena: the bytes are
 * copied into a host staging area and enqueued as a non-blocking write at
 * the same offset of a device buffer; the area is reused only after the
 * queue has drained (at synchronize, or when it fills up: then the op
 * waits for the queue first), so a pending write never sees its source
 * change. The arena and matmul's Q16 activation buffers grow to the
 * largest call seen (at most a few times over a queue's life).
 *
 * Shapes are asserted as in the CPU backend; device failures (allocation,
 * launch) return a status, with the message in get_proc("dev_last_error").
 */
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ocl-impl.h"
#include "quant.h"

/* ---------------------------------------------------------------- kernels */

#define KERNELS_(X)                                                                                          \
    X(EMBED, OCL_PROG_ELEMENTWISE, "k_embed")                                                                \
    X(RMS_NORM, OCL_PROG_ELEMENTWISE, "k_rms_norm")                                                          \
    X(ROPE, OCL_PROG_ELEMENTWISE, "k_rope")                                                                  \
    X(BINARY, OCL_PROG_ELEMENTWISE, "k_binary")                                                              \
    X(ARGMAX, OCL_PROG_ELEMENTWISE, "k_argmax")                                                              \
    X(SOFTMAX, OCL_PROG_ELEMENTWISE, "k_softmax")                                                            \
    X(QUANT_Q16, OCL_PROG_MATMUL, "k_quant_q16")                                                             \
    X(MM1_Q8_0, OCL_PROG_MATMUL, "k_mm1_q8_0")                                                               \
    X(MM1_Q4_0, OCL_PROG_MATMUL, "k_mm1_q4_0")                                                               \
    X(MM1_Q4_1, OCL_PROG_MATMUL, "k_mm1_q4_1")                                                               \
    X(MM1_Q5_0, OCL_PROG_MATMUL, "k_mm1_q5_0")                                                               \
    X(MM1_Q5_1, OCL_PROG_MATMUL, "k_mm1_q5_1")                                                               \
    X(MM1_Q4_K, OCL_PROG_MATMUL, "k_mm1_q4_k")                                                               \
    X(MM1_Q6_K, OCL_PROG_MATMUL, "k_mm1_q6_k")                                                               \
    X(MMT_Q8_0, OCL_PROG_MATMUL, "k_mmt_q8_0")                                                               \
    X(MMT_Q4_0, OCL_PROG_MATMUL, "k_mmt_q4_0")                                                               \
    X(MMT_Q4_1, OCL_PROG_MATMUL, "k_mmt_q4_1")                                                               \
    X(MMT_Q5_0, OCL_PROG_MATMUL, "k_mmt_q5_0")                                                               \
    X(MMT_Q5_1, OCL_PROG_MATMUL, "k_mmt_q5_1")                                                               \
    X(MMT_Q4_K, OCL_PROG_MATMUL, "k_mmt_q4_k")                                                               \
    X(MMT_Q6_K, OCL_PROG_MATMUL, "k_mmt_q6_k")                                                               \
    X(MM_F, OCL_PROG_MATMUL, "k_mm_f")                                                                       \
    X(KV_STORE, OCL_PROG_ATTENTION, "k_kv_store")                                                            \
    X(ATTENTION, OCL_PROG_ATTENTION, "k_attention")                                                          \
    X(KV_COMMIT, OCL_PROG_ATTENTION, "k_kv_commit")

enum {
#define X(id, prog, name) K_##id,
    KERNELS_(X)
#undef X
        K_COUNT
};

static const struct {
    int prog;
    const char *name;
} kernel_defs[K_COUNT] = {
#define X(id, prog, name) {prog, name},
    KERNELS_(X)
#undef X
};

#define MM_TT 8         /* tokens per work-item of the tiled matmul (matmul.cl) */
#define RED_WG 64       /* argmax / softmax work-group (elementwise.cl) */
#define ATT_MAX_HD 256  /* attention.cl's private accumulator */
#define META_INITIAL ((size_t)1 << 20)

/* ---------------------------------------------------------------- queue object */

typedef struct ocl_queue {
    copse_backend_queue base;
    ocl_dev *d;
    cl_command_queue cq;
    cl_kernel k[K_COUNT];
    unsigned char *meta_host; /* staging area of the metadata arena */
    cl_mem meta_dev;
    size_t meta_cap, meta_used;
    cl_mem act_q, act_d, act_s; /* Q16 activations: int16 [n][k], d and s [n][k/32] */
    size_t act_tokens_k;        /* capacity in token-elements (n * k) */
    cl_mem ids;                 /* argmax results */
    size_t ids_cap;
} ocl_queue;

static ocl_queue *oq(copse_backend_queue *q)
{
    return q->ctx;
}

static copse_status qfail(ocl_queue *q, cl_int e, const char *what)
{
    pthread_mutex_lock(&q->d->lock);
    copse_status st = copse__ocl_fail(q->d, copse__ocl_status(e), "opencl:%d: %s: %s", q->d->index, what,
                                      copse__ocl_errname(e));
    pthread_mutex_unlock(&q->d->lock);
    return st;
}

static cl_mem new_mem(ocl_queue *q, size_t n, cl_int *e)
{
    return clCreateBuffer(q->d->ctx, CL_MEM_READ_WRITE, n ? n : 64, NULL, e);
}

/* ---------------------------------------------------------------- metadata arena */

static copse_status drain(ocl_queue *q)
{
    cl_int e = clFinish(q->cq);
    q->meta_used = 0;
    return e == CL_SUCCESS ? COPSE_OK : qfail(q, e, "clFinish");
}

/* Room for `bytes` of metadata: *host to fill, *at its offset in 4-byte
 * units; then meta_send() enqueues it. */
static copse_status meta_reserve(ocl_queue *q, size_t bytes, void **host, uint32_t *at)
{
    bytes = (bytes + 15) & ~(size_t)15;
    if (bytes == 0)
        bytes = 16;
    copse_status st;
    if (q->meta_used + bytes > q->meta_cap && (st = drain(q)) != COPSE_OK)
        return st;
    if (bytes > q->meta_cap) {
        size_t cap = q->meta_cap * 2 > bytes ? q->meta_cap * 2 : bytes;
        unsigned char *h = malloc(cap);
        cl_int e;
        cl_mem m = h ? new_mem(q, cap, &e) : NULL;
        if (!m) {
            free(h);
            return h ? qfail(q, e, "metadata buffer") : COPSE_ENOMEM;
        }
        free(q->meta_host);
        clReleaseMemObject(q->meta_dev);
        q->meta_host = h;
        q->meta_dev = m;
        q->meta_cap = cap;
    }
    assert(q->meta_used % 16 == 0 && q->meta_used / 4 <= UINT32_MAX);
    *host = q->meta_host + q->meta_used;
    *at = (uint32_t)(q->meta_used / 4);
    q->meta_used += bytes;
    return COPSE_OK;
}

static copse_status meta_send(ocl_queue *q, uint32_t at, size_t bytes)
{
    cl_int e = clEnqueueWriteBuffer(q->cq, q->meta_dev, CL_FALSE, (size_t)at * 4, bytes ? bytes : 4,
                                    q->meta_host + (size_t)at * 4, 0, NULL, NULL);
    return e == CL_SUCCESS ? COPSE_OK : qfail(q, e, "metadata upload");
}

/* Copy n bytes of host metadata into the arena and enqueue them. */
static copse_status meta_push(ocl_queue *q, const void *src, size_t n, uint32_t *at)
{
    void *h;
    copse_status st = meta_reserve(q, n, &h, at);
    if (st != COPSE_OK)
        return st;
    memcpy(h, src, n);
    return meta_send(q, *at, n);
}

/* ---------------------------------------------------------------- kernel arguments and launches */

typedef struct args {
    cl_kernel k;
    cl_uint i;
    cl_int e;
} args;

static void a_raw(args *a, size_t n, const void *v)
{
    cl_int e = clSetKernelArg(a->k, a->i++, n, v);
    if (e != CL_SUCCESS && a->e == CL_SUCCESS)
        a->e = e;
}

static void a_mem(args *a, cl_mem m)
{
    a_raw(a, sizeof m, &m);
}

static void a_u64(args *a, uint64_t v)
{
    cl_ulong x = v;
    a_raw(a, sizeof x, &x);
}

static void a_i32(args *a, int64_t v)
{
    assert(v >= INT32_MIN && v <= INT32_MAX);
    cl_int x = (cl_int)v;
    a_raw(a, sizeof x, &x);
}

static void a_u32(args *a, uint32_t v)
{
    cl_uint x = v;
    a_raw(a, sizeof x, &x);
}

static void a_f32(args *a, float v)
{
    a_raw(a, sizeof v, &v);
}

/* A tensor as (buffer, byte offset, row stride). */
static void a_tensor(args *a, const copse_tensor *t)
{
    a_mem(a, ocl_mem_of(t->buf));
    a_u64(a, t->offset);
    a_u64(a, t->row_stride);
}

static args kargs(ocl_queue *q, int which)
{
    return (args){.k = q->k[which], .i = 0, .e = CL_SUCCESS};
}

/* Launch with global sizes g0 x g1 (rounded up to the local size, if any;
 * kernels bounds-check). */
static copse_status launch(ocl_queue *q, const args *a, int which, size_t g0, size_t g1, size_t l0)
{
    if (a->e != CL_SUCCESS)
        return qfail(q, a->e, kernel_defs[which].name);
    if (g0 == 0 || g1 == 0)
        return COPSE_OK;
    size_t gs[2] = {l0 ? (g0 + l0 - 1) / l0 * l0 : g0, g1}, ls[2] = {l0, 1};
    cl_int e = clEnqueueNDRangeKernel(q->cq, q->k[which], 2, NULL, gs, l0 ? ls : NULL, 0, NULL, NULL);
    return e == CL_SUCCESS ? COPSE_OK : qfail(q, e, kernel_defs[which].name);
}

/* ---------------------------------------------------------------- checks */

static void check_view(ocl_queue *q, const copse_tensor *t)
{
    (void)q;
    (void)t;
#ifndef NDEBUG
    uint64_t rb = 0;
    assert(t && t->buf && t->buf->dev == &q->d->base && t->ne[0] >= 0 && t->ne[1] >= 0);
    assert(copse__qtype_row_bytes(t->type, (uint64_t)t->ne[0], &rb));
    if (t->ne[1] > 0) {
        assert(t->row_stride >= rb || t->ne[1] == 1);
        assert(t->offset + (size_t)(t->ne[1] - 1) * t->row_stride + rb <= t->buf->size);
    }
#endif
}

static bool embed_type_ok(uint32_t t)
{
    switch (t) {
    case COPSE_Q_F32:
    case COPSE_Q_F16:
    case COPSE_Q_BF16:
    case COPSE_Q_Q4_0:
    case COPSE_Q_Q4_1:
    case COPSE_Q_Q5_0:
    case COPSE_Q_Q5_1:
    case COPSE_Q_Q8_0:
    case COPSE_Q_Q4_K:
    case COPSE_Q_Q6_K: return true;
    default: return false;
    }
}

/* ---------------------------------------------------------------- ops */

static copse_status ocl_embed(copse_backend_queue *bq, const copse_tensor *table, const int32_t *ids, int32_t n,
                              const copse_tensor *out)
{
    ocl_queue *q = oq(bq);
    check_view(q, table);
    check_view(q, out);
    assert(out->type == COPSE_Q_F32 && out->ne[0] == table->ne[0] && out->ne[1] >= n);
    for (int32_t t = 0; t < n; t++)
        assert(ids[t] >= 0 && ids[t] < table->ne[1]);
    if (!embed_type_ok(table->type))
        return COPSE_EUNSUPPORTED;
    if (n <= 0)
        return COPSE_OK;
    uint32_t at;
    copse_status st = meta_push(q, ids, sizeof *ids * (size_t)n, &at);
    if (st != COPSE_OK)
        return st;
    args a = kargs(q, K_EMBED);
    a_tensor(&a, table);
    a_u32(&a, table->type);
    a_mem(&a, q->meta_dev);
    a_u32(&a, at);
    a_tensor(&a, out);
    a_i32(&a, table->ne[0]);
    a_i32(&a, n);
    return launch(q, &a, K_EMBED, (size_t)table->ne[0], (size_t)n, 0);
}

static copse_status ocl_rms_norm(copse_backend_queue *bq, const copse_tensor *x, const copse_tensor *w, float eps,
                                 const copse_tensor *out)
{
    ocl_queue *q = oq(bq);
    check_view(q, x);
    check_view(q, w);
    check_view(q, out);
    assert(x->type == COPSE_Q_F32 && w->type == COPSE_Q_F32 && out->type == COPSE_Q_F32);
    assert(w->ne[0] == x->ne[0] && out->ne[0] == x->ne[0] && out->ne[1] == x->ne[1]);
    args a = kargs(q, K_RMS_NORM);
    a_tensor(&a, x);
    a_mem(&a, ocl_mem_of(w->buf));
    a_u64(&a, w->offset);
    a_f32(&a, eps);
    a_tensor(&a, out);
    a_i32(&a, x->ne[0]);
    a_i32(&a, x->ne[1]);
    return launch(q, &a, K_RMS_NORM, (size_t)x->ne[1], 1, 0);
}

/* cos/sin per (token, pair) in double then rounded, as the CPU backend. */
static copse_status ocl_rope(copse_backend_queue *bq, const copse_tensor *x, const int32_t *pos,
                             const copse_rope_params *p)
{
    ocl_queue *q = oq(bq);
    check_view(q, x);
    assert(x->type == COPSE_Q_F32 && p->head_dim > 0 && p->head_dim % 2 == 0);
    assert(x->ne[0] == (int64_t)p->n_heads * p->head_dim);
    assert(p->mode == COPSE_ROPE_NORM || p->mode == COPSE_ROPE_NEOX);
    const int64_t n = x->ne[1], half = p->head_dim / 2;
    if (n == 0)
        return COPSE_OK;
    const size_t bytes = sizeof(float) * 2 * (size_t)(n * half);
    void *h;
    uint32_t at;
    copse_status st = meta_reserve(q, bytes, &h, &at);
    if (st != COPSE_OK)
        return st;
    float *cs = h, *sn = cs + n * half;
    for (int64_t t = 0; t < n; t++)
        for (int64_t i = 0; i < half; i++) {
            double th = (double)pos[t] * (double)p->freq_scale *
                        pow((double)p->theta_base, -2.0 * (double)i / (double)p->head_dim);
            cs[t * half + i] = (float)cos(th);
            sn[t * half + i] = (float)sin(th);
        }
    if ((st = meta_send(q, at, bytes)) != COPSE_OK)
        return st;
    args a = kargs(q, K_ROPE);
    a_tensor(&a, x);
    a_mem(&a, q->meta_dev);
    a_u32(&a, at);
    a_i32(&a, p->n_heads);
    a_i32(&a, p->head_dim);
    a_i32(&a, p->mode == COPSE_ROPE_NEOX);
    a_i32(&a, n);
    return launch(q, &a, K_ROPE, (size_t)(p->n_heads * half), (size_t)n, 0);
}

static copse_status binary(ocl_queue *q, const copse_tensor *x, const copse_tensor *y, const copse_tensor *out, int op)
{
    check_view(q, x);
    check_view(q, y);
    check_view(q, out);
    assert(x->type == COPSE_Q_F32 && y->type == COPSE_Q_F32 && out->type == COPSE_Q_F32);
    assert(x->ne[0] == y->ne[0] && x->ne[1] == y->ne[1] && x->ne[0] == out->ne[0] && x->ne[1] == out->ne[1]);
    args a = kargs(q, K_BINARY);
    a_tensor(&a, x);
    a_tensor(&a, y);
    a_tensor(&a, out);
    a_i32(&a, x->ne[0]);
    a_i32(&a, x->ne[1]);
    a_i32(&a, op);
    return launch(q, &a, K_BINARY, (size_t)x->ne[0], (size_t)x->ne[1], 0);
}

static copse_status ocl_add(copse_backend_queue *bq, const copse_tensor *a, const copse_tensor *b,
                            const copse_tensor *out)
{
    return binary(oq(bq), a, b, out, 0);
}

static copse_status ocl_swiglu(copse_backend_queue *bq, const copse_tensor *gate, const copse_tensor *up,
                               const copse_tensor *out)
{
    return binary(oq(bq), gate, up, out, 1);
}

/* ---------------------------------------------------------------- matmul */

static int mm_kernel(uint32_t type, bool tiled)
{
    switch (type) {
    case COPSE_Q_Q8_0: return tiled ? K_MMT_Q8_0 : K_MM1_Q8_0;
    case COPSE_Q_Q4_0: return tiled ? K_MMT_Q4_0 : K_MM1_Q4_0;
    case COPSE_Q_Q4_1: return tiled ? K_MMT_Q4_1 : K_MM1_Q4_1;
    case COPSE_Q_Q5_0: return tiled ? K_MMT_Q5_0 : K_MM1_Q5_0;
    case COPSE_Q_Q5_1: return tiled ? K_MMT_Q5_1 : K_MM1_Q5_1;
    case COPSE_Q_Q4_K: return tiled ? K_MMT_Q4_K : K_MM1_Q4_K;
    case COPSE_Q_Q6_K: return tiled ? K_MMT_Q6_K : K_MM1_Q6_K;
    default: return -1;
    }
}

/* Q16 activation buffers for n tokens of k elements. */
static copse_status act_reserve(ocl_queue *q, size_t tokens_k)
{
    if (tokens_k <= q->act_tokens_k)
        return COPSE_OK;
    size_t cap = q->act_tokens_k * 2 > tokens_k ? q->act_tokens_k * 2 : tokens_k;
    cap = (cap + 31) / 32 * 32;
    copse_status st = drain(q); /* pending kernels may still read the old ones */
    if (st != COPSE_OK)
        return st;
    cl_int e = CL_SUCCESS;
    cl_mem mq = new_mem(q, cap * 2, &e), md = mq ? new_mem(q, cap / 32 * 4, &e) : NULL,
           ms = md ? new_mem(q, cap / 32 * 4, &e) : NULL;
    if (!ms) {
        if (mq)
            clReleaseMemObject(mq);
        if (md)
            clReleaseMemObject(md);
        return qfail(q, e, "matmul activation buffers");
    }
    if (q->act_q) {
        clReleaseMemObject(q->act_q);
        clReleaseMemObject(q->act_d);
        clReleaseMemObject(q->act_s);
    }
    q->act_q = mq;
    q->act_d = md;
    q->act_s = ms;
    q->act_tokens_k = cap;
    return COPSE_OK;
}

static copse_status ocl_matmul(copse_backend_queue *bq, const copse_tensor *w, const copse_tensor *x,
                               const copse_tensor *out)
{
    ocl_queue *q = oq(bq);
    check_view(q, w);
    check_view(q, x);
    check_view(q, out);
    const int64_t k = w->ne[0], n_out = w->ne[1], n = x->ne[1];
    assert(x->type == COPSE_Q_F32 && out->type == COPSE_Q_F32);
    assert(x->ne[0] == k && out->ne[0] == n_out && out->ne[1] == n);
    const int kq = mm_kernel(w->type, n > 1);
    if (kq < 0 && w->type != COPSE_Q_F32 && w->type != COPSE_Q_F16)
        return COPSE_EUNSUPPORTED;
    if (n == 0 || n_out == 0)
        return COPSE_OK;
    copse_status st;
    if (kq < 0) {
        args a = kargs(q, K_MM_F);
        a_tensor(&a, w);
        a_i32(&a, n_out);
        a_i32(&a, k);
        a_i32(&a, n);
        a_i32(&a, w->type == COPSE_Q_F16);
        a_tensor(&a, x);
        a_tensor(&a, out);
        return launch(q, &a, K_MM_F, (size_t)n_out, (size_t)n, 0);
    }
    assert(k % 32 == 0);
    if ((st = act_reserve(q, (size_t)(n * k))) != COPSE_OK)
        return st;
    args a = kargs(q, K_QUANT_Q16);
    a_tensor(&a, x);
    a_i32(&a, k);
    a_i32(&a, n);
    a_mem(&a, q->act_q);
    a_mem(&a, q->act_d);
    a_mem(&a, q->act_s);
    if ((st = launch(q, &a, K_QUANT_Q16, (size_t)(k / 32), (size_t)n, 0)) != COPSE_OK)
        return st;
    a = kargs(q, kq);
    a_tensor(&a, w);
    a_i32(&a, n_out);
    a_i32(&a, k / 32);
    if (n > 1)
        a_i32(&a, n);
    a_mem(&a, q->act_q);
    a_mem(&a, q->act_d);
    a_mem(&a, q->act_s);
    a_mem(&a, ocl_mem_of(out->buf));
    a_u64(&a, out->offset);
    if (n > 1)
        a_u64(&a, out->row_stride);
    return launch(q, &a, kq, (size_t)n_out, n > 1 ? (size_t)((n + MM_TT - 1) / MM_TT) : 1, 0);
}

/* ---------------------------------------------------------------- KV cache */

static copse_status ocl_kv_store(copse_backend_queue *bq, const copse_tensor *k, const copse_tensor *v,
                                 const int32_t *slots, int32_t n, const copse_tensor *k_pool,
                                 const copse_tensor *v_pool)
{
    ocl_queue *q = oq(bq);
    check_view(q, k);
    check_view(q, v);
    check_view(q, k_pool);
    check_view(q, v_pool);
    assert(k->type == COPSE_Q_F32 && v->type == COPSE_Q_F32 && k->ne[1] >= n && v->ne[1] >= n);
    assert(k->ne[0] == k_pool->ne[0] && v->ne[0] == v_pool->ne[0]);
    for (int i = 0; i < 2; i++) {
        const copse_tensor *pl = i ? v_pool : k_pool;
        if (pl->type != COPSE_Q_F32 && pl->type != COPSE_Q_F16)
            return COPSE_EUNSUPPORTED;
    }
    for (int32_t t = 0; t < n; t++)
        assert(slots[t] >= 0 && slots[t] < k_pool->ne[1] && slots[t] < v_pool->ne[1]);
    if (n <= 0)
        return COPSE_OK;
    uint32_t at;
    copse_status st = meta_push(q, slots, sizeof *slots * (size_t)n, &at);
    for (int i = 0; i < 2 && st == COPSE_OK; i++) {
        const copse_tensor *src = i ? v : k, *pl = i ? v_pool : k_pool;
        args a = kargs(q, K_KV_STORE);
        a_tensor(&a, src);
        a_tensor(&a, pl);
        a_i32(&a, pl->type == COPSE_Q_F16);
        a_mem(&a, q->meta_dev);
        a_u32(&a, at);
        a_i32(&a, src->ne[0]);
        a_i32(&a, n);
        st = launch(q, &a, K_KV_STORE, (size_t)src->ne[0], (size_t)n, 0);
    }
    return st;
}

static copse_status ocl_attention(copse_backend_queue *bq, const copse_tensor *qry, const copse_tensor *k_pool,
                                  const copse_tensor *v_pool, const copse_attn_batch *b, const copse_tensor *out)
{
    ocl_queue *q = oq(bq);
    check_view(q, qry);
    check_view(q, k_pool);
    check_view(q, v_pool);
    check_view(q, out);
    assert(b->n_heads > 0 && b->n_kv_heads > 0 && b->n_heads % b->n_kv_heads == 0);
    assert(b->head_dim > 0 && b->block_size > 0);
    assert(qry->type == COPSE_Q_F32 && out->type == COPSE_Q_F32);
    assert(qry->ne[0] == (int64_t)b->n_heads * b->head_dim && out->ne[0] == qry->ne[0]);
    assert(qry->ne[1] >= b->n_tokens && out->ne[1] >= b->n_tokens);
    assert(k_pool->ne[0] == (int64_t)b->n_kv_heads * b->head_dim && v_pool->ne[0] == k_pool->ne[0]);
    if ((k_pool->type != COPSE_Q_F32 && k_pool->type != COPSE_Q_F16) ||
        (v_pool->type != COPSE_Q_F32 && v_pool->type != COPSE_Q_F16) || b->head_dim > ATT_MAX_HD)
        return COPSE_EUNSUPPORTED;
    if (b->n_tokens <= 0)
        return COPSE_OK;

    /* metadata: token -> sequence, per-sequence info, tables, masks */
    size_t ints = (size_t)b->n_tokens + 6 * (size_t)b->n_seqs;
    for (int32_t s = 0; s < b->n_seqs; s++) {
        const int64_t len = (int64_t)b->committed[s] + b->n_new[s];
        ints += (size_t)((len + b->block_size - 1) / b->block_size);
        if (b->mask[s])
            ints += 2 * (size_t)b->n_new[s] * (size_t)((b->n_new[s] + 63) / 64);
    }
    void *h;
    uint32_t at;
    copse_status st = meta_reserve(q, ints * 4, &h, &at);
    if (st != COPSE_OK)
        return st;
    int32_t *m = h;
    const uint32_t tok_at = at, seq_at = at + (uint32_t)b->n_tokens;
    uint32_t next = seq_at + 6 * (uint32_t)b->n_seqs;
    for (int32_t s = 0; s < b->n_seqs; s++) {
        assert(b->first[s] >= 0 && b->n_new[s] >= 0 && b->first[s] + b->n_new[s] <= b->n_tokens);
        for (int32_t j = 0; j < b->n_new[s]; j++)
            m[b->first[s] + j] = s;
        int32_t *info = m + (seq_at - at) + 6 * (size_t)s;
        const int64_t len = (int64_t)b->committed[s] + b->n_new[s];
        const int32_t n_blocks = (int32_t)((len + b->block_size - 1) / b->block_size);
        const int32_t words = (b->n_new[s] + 63) / 64;
        info[0] = b->first[s];
        info[1] = b->n_new[s];
        info[2] = b->committed[s];
        info[3] = (int32_t)next;
        memcpy(m + (next - at), b->tables[s], sizeof(int32_t) * (size_t)n_blocks);
        next += (uint32_t)n_blocks;
        if (b->mask[s]) {
            info[4] = (int32_t)next;
            for (size_t w = 0; w < (size_t)b->n_new[s] * (size_t)words; w++) {
                m[next - at + 2 * w] = (int32_t)(uint32_t)b->mask[s][w];
                m[next - at + 2 * w + 1] = (int32_t)(uint32_t)(b->mask[s][w] >> 32);
            }
            next += 2 * (uint32_t)b->n_new[s] * (uint32_t)words;
        } else {
            info[4] = -1;
        }
        info[5] = words;
    }
    assert((size_t)(next - at) == ints);
    if ((st = meta_send(q, at, ints * 4)) != COPSE_OK)
        return st;
    args a = kargs(q, K_ATTENTION);
    a_tensor(&a, qry);
    a_tensor(&a, k_pool);
    a_i32(&a, k_pool->type == COPSE_Q_F16);
    a_tensor(&a, v_pool);
    a_i32(&a, v_pool->type == COPSE_Q_F16);
    a_tensor(&a, out);
    a_mem(&a, q->meta_dev);
    a_u32(&a, tok_at);
    a_u32(&a, seq_at);
    a_i32(&a, b->n_heads);
    a_i32(&a, b->n_kv_heads);
    a_i32(&a, b->head_dim);
    a_i32(&a, b->block_size);
    a_f32(&a, b->scale);
    a_i32(&a, b->n_tokens);
    return launch(q, &a, K_ATTENTION, (size_t)b->n_heads, (size_t)b->n_tokens, 0);
}

/* Pools sharing a buffer, stride and row size move in one launch. */
static copse_status ocl_kv_commit(copse_backend_queue *bq, const copse_tensor *const *pools, int32_t n_pools,
                                  const copse_slot_move *moves, int32_t n_moves)
{
    ocl_queue *q = oq(bq);
    for (int32_t i = 0; i < n_pools; i++) {
        check_view(q, pools[i]);
        for (int32_t m = 0; m < n_moves; m++)
            assert(moves[m].src >= 0 && moves[m].src < pools[i]->ne[1] && moves[m].dst >= 0 &&
                   moves[m].dst < pools[i]->ne[1]);
    }
    if (n_moves <= 0 || n_pools <= 0)
        return COPSE_OK;
    /* one reservation: the moves, then every pool's offset (two reservations
     * could straddle a drain and the second overwrite the first) */
    const size_t mb = sizeof *moves * (size_t)n_moves, pb = 8 * (size_t)n_pools;
    void *h;
    uint32_t at;
    copse_status st = meta_reserve(q, mb + pb, &h, &at);
    if (st != COPSE_OK)
        return st;
    memcpy(h, moves, mb);
    uint32_t *po = (uint32_t *)((unsigned char *)h + mb);
    for (int32_t u = 0; u < n_pools; u++) {
        po[2 * u] = (uint32_t)pools[u]->offset;
        po[2 * u + 1] = (uint32_t)((uint64_t)pools[u]->offset >> 32);
    }
    if ((st = meta_send(q, at, mb + pb)) != COPSE_OK)
        return st;
    const uint32_t moves_at = at, pools_at = at + (uint32_t)(mb / 4);
    for (int32_t i = 0; i < n_pools && st == COPSE_OK;) {
        const copse_tensor *p0 = pools[i];
        uint64_t rb = 0;
        copse__qtype_row_bytes(p0->type, (uint64_t)p0->ne[0], &rb);
        int32_t j = i + 1;
        while (j < n_pools && pools[j]->buf == p0->buf && pools[j]->row_stride == p0->row_stride) {
            uint64_t rj = 0;
            copse__qtype_row_bytes(pools[j]->type, (uint64_t)pools[j]->ne[0], &rj);
            if (rj != rb)
                break;
            j++;
        }
        args a = kargs(q, K_KV_COMMIT);
        a_mem(&a, ocl_mem_of(p0->buf));
        a_u64(&a, p0->row_stride);
        a_i32(&a, (int64_t)rb);
        a_mem(&a, q->meta_dev);
        a_u32(&a, pools_at + 2 * (uint32_t)i);
        a_i32(&a, j - i);
        a_u32(&a, moves_at);
        a_i32(&a, n_moves);
        st = launch(q, &a, K_KV_COMMIT, (size_t)rb, (size_t)(j - i), 0);
        i = j;
    }
    return st;
}

/* ---------------------------------------------------------------- verification */

static copse_status ocl_argmax(copse_backend_queue *bq, const copse_tensor *logits, int32_t *argmax)
{
    ocl_queue *q = oq(bq);
    check_view(q, logits);
    assert(logits->type == COPSE_Q_F32 && logits->ne[0] > 0);
    const int64_t n = logits->ne[1];
    if (n == 0)
        return COPSE_OK;
    if ((size_t)n > q->ids_cap) {
        copse_status st = drain(q);
        if (st != COPSE_OK)
            return st;
        cl_int e;
        cl_mem m = new_mem(q, sizeof(int32_t) * (size_t)n, &e);
        if (!m)
            return qfail(q, e, "argmax buffer");
        if (q->ids)
            clReleaseMemObject(q->ids);
        q->ids = m;
        q->ids_cap = (size_t)n;
    }
    args a = kargs(q, K_ARGMAX);
    a_tensor(&a, logits);
    a_i32(&a, logits->ne[0]);
    a_mem(&a, q->ids);
    copse_status st = launch(q, &a, K_ARGMAX, (size_t)n * RED_WG, 1, RED_WG);
    if (st != COPSE_OK)
        return st;
    cl_int e = clEnqueueReadBuffer(q->cq, q->ids, CL_TRUE, 0, sizeof(int32_t) * (size_t)n, argmax, 0, NULL, NULL);
    return e == CL_SUCCESS ? COPSE_OK : qfail(q, e, "argmax download");
}

static copse_status ocl_softmax(copse_backend_queue *bq, const copse_tensor *logits, float inv_temp,
                                const copse_tensor *out)
{
    ocl_queue *q = oq(bq);
    check_view(q, logits);
    check_view(q, out);
    assert(logits->type == COPSE_Q_F32 && out->type == COPSE_Q_F32 && logits->ne[0] > 0);
    assert(out->ne[0] == logits->ne[0] && out->ne[1] == logits->ne[1]);
    args a = kargs(q, K_SOFTMAX);
    a_tensor(&a, logits);
    a_f32(&a, inv_temp);
    a_tensor(&a, out);
    a_i32(&a, logits->ne[0]);
    return launch(q, &a, K_SOFTMAX, (size_t)logits->ne[1] * RED_WG, 1, RED_WG);
}

/* ---------------------------------------------------------------- lifecycle */

static copse_status ocl_synchronize(copse_backend_queue *bq)
{
    return drain(oq(bq));
}

static void ocl_queue_destroy(copse_backend_queue *bq)
{
    if (!bq)
        return;
    ocl_queue *q = oq(bq);
    if (q->cq)
        clFinish(q->cq);
    for (int i = 0; i < K_COUNT; i++)
        if (q->k[i])
            clReleaseKernel(q->k[i]);
    cl_mem mems[] = {q->meta_dev, q->act_q, q->act_d, q->act_s, q->ids};
    for (size_t i = 0; i < sizeof mems / sizeof mems[0]; i++)
        if (mems[i])
            clReleaseMemObject(mems[i]);
    if (q->cq)
        clReleaseCommandQueue(q->cq);
    free(q->meta_host);
    free(q);
}

static const copse_backend_queue_i ocl_queue_i = {
    .destroy = ocl_queue_destroy,
    .synchronize = ocl_synchronize,
    .embed = ocl_embed,
    .rms_norm = ocl_rms_norm,
    .rope = ocl_rope,
    .add = ocl_add,
    .swiglu = ocl_swiglu,
    .matmul = ocl_matmul,
    .kv_store = ocl_kv_store,
    .attention = ocl_attention,
    .kv_commit = ocl_kv_commit,
    .argmax = ocl_argmax,
    .softmax = ocl_softmax,
};

copse_status copse__ocl_queue_create(copse_backend_dev *dev, int n_threads, copse_backend_queue **out)
{
    (void)n_threads; /* the OpenCL runtime schedules the device */
    *out = NULL;
    ocl_dev *d = ocl_dev_of(dev);
    copse_status st = copse__ocl_dev_open(d);
    if (st != COPSE_OK)
        return st;
    ocl_queue *q = calloc(1, sizeof *q);
    if (!q)
        return COPSE_ENOMEM;
    q->base.iface = ocl_queue_i;
    q->base.dev = dev;
    q->base.ctx = q;
    q->d = d;
    cl_int e;
    q->cq = clCreateCommandQueue(d->ctx, d->id, 0, &e);
    if (!q->cq) {
        st = qfail(q, e, "clCreateCommandQueue");
        goto fail;
    }
    for (int i = 0; i < K_COUNT; i++) {
        q->k[i] = clCreateKernel(d->prog[kernel_defs[i].prog], kernel_defs[i].name, &e);
        if (!q->k[i]) {
            st = qfail(q, e, kernel_defs[i].name);
            goto fail;
        }
    }
    q->meta_cap = META_INITIAL;
    q->meta_host = malloc(q->meta_cap);
    if (!q->meta_host) {
        st = COPSE_ENOMEM;
        goto fail;
    }
    if (!(q->meta_dev = new_mem(q, q->meta_cap, &e))) {
        st = qfail(q, e, "metadata buffer");
        goto fail;
    }
    *out = &q->base;
    return COPSE_OK;
fail:
    ocl_queue_destroy(&q->base);
    return st;
}
