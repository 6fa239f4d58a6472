/*
 * cpu-queue.c — the CPU backend's queue: the compute ops on a thread pool.
 *
 * Contract: see cpu-queue.h (threading, scratch memory, batch invariance)
 * and backend-impl.h (the ops). The inner loops come from the queue's
 * kernel table (cpu-kernels.h); this file splits the work and walks the
 * tensors; cpu-pool.c runs the pieces on the queue's threads. Shape
 * mismatches are programming errors and are asserted.
 */
#include <assert.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cpu-pool.h"
#include "cpu-queue.h"
#include "cpu-verify.h"
#include "quant.h"

/* ---------------------------------------------------------------- queue object */

typedef copse_cpu_task_fn cpu_task_fn;

typedef struct cpu_queue {
    copse_backend_queue base;
    const copse_cpu_kernels *k;
    copse_cpu_pool *pool;
    int n_threads;
    copse_cpu_act act; /* matmul's activation precision */

    /* scratch arena, 64-byte aligned; see cpu-queue.h */
    uint8_t *scratch;
    size_t scratch_size;
} cpu_queue;

static cpu_queue *cq(copse_backend_queue *q)
{
    return q->ctx;
}

static size_t align64(size_t n)
{
    return (n + 63) & ~(size_t)63;
}

static void pool_run(cpu_queue *q, cpu_task_fn fn, void *arg, int64_t n_items, int64_t grain)
{
    copse__cpu_pool_run(q->pool, fn, arg, n_items, grain);
}

/* Make the scratch arena at least `need` bytes (see cpu-queue.h). */
static copse_status scratch_reserve(cpu_queue *q, size_t need)
{
    if (need <= q->scratch_size)
        return COPSE_OK;
    size_t size = q->scratch_size * 2 > need ? q->scratch_size * 2 : align64(need);
    uint8_t *p = aligned_alloc(64, size);
    if (!p)
        return COPSE_ENOMEM;
    free(q->scratch);
    q->scratch = p;
    q->scratch_size = size;
    return COPSE_OK;
}

/* ---------------------------------------------------------------- tensor access */

static uint8_t *tdata(const copse_tensor *t)
{
    uint8_t *base = t->buf->iface.host_ptr(t->buf);
    assert(base != NULL);
    return base + t->offset;
}

static float *frow(const copse_tensor *t, int64_t r)
{
    return (float *)(void *)(tdata(t) + (size_t)r * t->row_stride);
}

/* Checks a view fits its buffer (debug builds). */
static void check_view(const copse_tensor *t)
{
    (void)t;
#ifndef NDEBUG
    uint64_t rb = 0;
    assert(t && t->buf && t->ne[0] >= 0 && t->ne[1] >= 0);
    assert(copse__qtype_row_bytes(t->type, (uint64_t)t->ne[0], &rb));
    if (t->ne[1] > 0) {
        assert(t->row_stride >= rb || t->ne[1] == 1);
        assert(t->offset + (size_t)(t->ne[1] - 1) * t->row_stride + rb <= t->buf->size);
    }
#endif
}

/* ---------------------------------------------------------------- embed */

typedef struct embed_args {
    const copse_tensor *table, *out;
    const int32_t *ids;
} embed_args;

static void embed_task(void *p, int64_t b, int64_t e, int tid)
{
    (void)tid;
    const embed_args *a = p;
    for (int64_t t = b; t < e; t++) {
        const uint8_t *row = tdata(a->table) + (size_t)a->ids[t] * a->table->row_stride;
        copse_status st = copse__dequantize_row(a->table->type, row, frow(a->out, t), a->table->ne[0]);
        assert(st == COPSE_OK);
        (void)st;
    }
}

static copse_status cpu_embed(copse_backend_queue *bq, const copse_tensor *table, const int32_t *ids, int32_t n,
                              const copse_tensor *out)
{
    check_view(table);
    check_view(out);
    assert(out->type == COPSE_Q_F32 && out->ne[0] == table->ne[0] && out->ne[1] >= n);
    for (int32_t t = 0; t < n; t++)
        assert(ids[t] >= 0 && ids[t] < table->ne[1]);
    const copse_qtype_traits *tr = copse__qtype_traits(table->type);
    if (!tr || !tr->can_dequantize)
        return COPSE_EUNSUPPORTED;
    embed_args a = {table, out, ids};
    pool_run(cq(bq), embed_task, &a, n, 4);
    return COPSE_OK;
}

/* ---------------------------------------------------------------- rms_norm */

typedef struct norm_args {
    const copse_tensor *x, *out;
    const float *w;
    float eps;
} norm_args;

/* Sum of squares in double, in element order; one rounding to float at the
 * end of the scale. */
static void norm_task(void *p, int64_t b, int64_t e, int tid)
{
    (void)tid;
    const norm_args *a = p;
    int64_t d = a->x->ne[0];
    for (int64_t t = b; t < e; t++) {
        const float *x = frow(a->x, t);
        float *y = frow(a->out, t);
        double ss = 0.0;
        for (int64_t i = 0; i < d; i++)
            ss += (double)x[i] * (double)x[i];
        float scale = (float)(1.0 / sqrt(ss / (double)d + (double)a->eps));
        for (int64_t i = 0; i < d; i++) {
            float v = x[i] * scale;
            y[i] = v * a->w[i];
        }
    }
}

static copse_status cpu_rms_norm(copse_backend_queue *bq, const copse_tensor *x, const copse_tensor *w, float eps,
                                 const copse_tensor *out)
{
    check_view(x);
    check_view(w);
    check_view(out);
    assert(x->type == COPSE_Q_F32 && w->type == COPSE_Q_F32 && out->type == COPSE_Q_F32);
    assert(w->ne[0] == x->ne[0] && out->ne[0] == x->ne[0] && out->ne[1] == x->ne[1]);
    norm_args a = {x, out, frow(w, 0), eps};
    pool_run(cq(bq), norm_task, &a, x->ne[1], 4);
    return COPSE_OK;
}

/* ---------------------------------------------------------------- rope */

typedef struct rope_args {
    const copse_tensor *x;
    const int32_t *pos;
    const copse_rope_params *p;
} rope_args;

/* Angles in double (theta_i = pos * freq_scale * base^(-2i/head_dim)), then
 * cos/sin rounded to float; the rotation itself is float. */
static void rope_task(void *p, int64_t b, int64_t e, int tid)
{
    (void)tid;
    const rope_args *a = p;
    const int hd = a->p->head_dim, half = hd / 2;
    float cs[COPSE_CPU_MAX_HEAD_DIM / 2], sn[COPSE_CPU_MAX_HEAD_DIM / 2];
    for (int64_t t = b; t < e; t++) {
        for (int i = 0; i < half; i++) {
            double th = (double)a->pos[t] * (double)a->p->freq_scale *
                        pow((double)a->p->theta_base, -2.0 * (double)i / (double)hd);
            cs[i] = (float)cos(th);
            sn[i] = (float)sin(th);
        }
        float *x = frow(a->x, t);
        for (int h = 0; h < a->p->n_heads; h++) {
            float *v = x + (size_t)h * (size_t)hd;
            for (int i = 0; i < half; i++) {
                int i0 = a->p->mode == COPSE_ROPE_NEOX ? i : 2 * i;
                int i1 = a->p->mode == COPSE_ROPE_NEOX ? i + half : 2 * i + 1;
                float x0 = v[i0], x1 = v[i1];
                float a0 = x0 * cs[i], b0 = x1 * sn[i];
                float a1 = x0 * sn[i], b1 = x1 * cs[i];
                v[i0] = a0 - b0;
                v[i1] = a1 + b1;
            }
        }
    }
}

static copse_status cpu_rope(copse_backend_queue *bq, const copse_tensor *x, const int32_t *pos,
                             const copse_rope_params *p)
{
    check_view(x);
    assert(x->type == COPSE_Q_F32 && p->head_dim > 0 && p->head_dim % 2 == 0);
    assert(p->head_dim <= COPSE_CPU_MAX_HEAD_DIM && x->ne[0] == (int64_t)p->n_heads * p->head_dim);
    assert(p->mode == COPSE_ROPE_NORM || p->mode == COPSE_ROPE_NEOX);
    rope_args a = {x, pos, p};
    pool_run(cq(bq), rope_task, &a, x->ne[1], 2);
    return COPSE_OK;
}

/* ---------------------------------------------------------------- add, swiglu */

typedef struct ew_args {
    const copse_tensor *a, *b, *out;
} ew_args;

static void add_task(void *p, int64_t b, int64_t e, int tid)
{
    (void)tid;
    const ew_args *a = p;
    for (int64_t t = b; t < e; t++) {
        const float *x = frow(a->a, t), *y = frow(a->b, t);
        float *o = frow(a->out, t);
        for (int64_t i = 0; i < a->a->ne[0]; i++)
            o[i] = x[i] + y[i];
    }
}

static void swiglu_task(void *p, int64_t b, int64_t e, int tid)
{
    (void)tid;
    const ew_args *a = p;
    for (int64_t t = b; t < e; t++) {
        const float *g = frow(a->a, t), *u = frow(a->b, t);
        float *o = frow(a->out, t);
        for (int64_t i = 0; i < a->a->ne[0]; i++) {
            float gi = g[i];
            float silu = gi / (1.0f + expf(-gi));
            o[i] = silu * u[i];
        }
    }
}

static copse_status elementwise(copse_backend_queue *bq, const copse_tensor *x, const copse_tensor *y,
                                const copse_tensor *out, cpu_task_fn fn)
{
    check_view(x);
    check_view(y);
    check_view(out);
    assert(x->type == COPSE_Q_F32 && y->type == COPSE_Q_F32 && out->type == COPSE_Q_F32);
    assert(x->ne[0] == y->ne[0] && x->ne[1] == y->ne[1] && x->ne[0] == out->ne[0] && x->ne[1] == out->ne[1]);
    ew_args a = {x, y, out};
    pool_run(cq(bq), fn, &a, x->ne[1], x->ne[0] >= 4096 ? 1 : 8);
    return COPSE_OK;
}

static copse_status cpu_add(copse_backend_queue *bq, const copse_tensor *a, const copse_tensor *b,
                            const copse_tensor *out)
{
    return elementwise(bq, a, b, out, add_task);
}

static copse_status cpu_swiglu(copse_backend_queue *bq, const copse_tensor *gate, const copse_tensor *up,
                               const copse_tensor *out)
{
    return elementwise(bq, gate, up, out, swiglu_task);
}

/* ---------------------------------------------------------------- matmul */

#define MM_ROWS 16 /* output rows per chunk */

typedef struct mm_args {
    const copse_cpu_kernels *k;
    const copse_tensor *w, *x, *out;
    int64_t n_tok;
    /* Q8 / Q16 paths */
    uint8_t *act;
    size_t act_stride; /* bytes per token */
    copse_cpu_q8_row *xrows; /* [n_tok] views into act (Q8) */
    copse_cpu_q16_row *xrows16; /* [n_tok] views into act (Q16) */
    /* f32 path: per-thread dequantized row */
    uint8_t *rows;
    size_t row_bytes;
} mm_args;

/* Layout of one token's Q8 (qsize 1) or Q16 (qsize 2) activations in the
 * arena: quants, then d, s, sum per block. */
static size_t act_stride(int64_t k, size_t qsize)
{
    return align64((size_t)k * qsize) + 3 * align64((size_t)(k / COPSE_CPU_QK) * 4);
}

static copse_cpu_q8_row q8_row(uint8_t *base, int64_t k)
{
    size_t nbb = align64((size_t)(k / COPSE_CPU_QK) * 4);
    uint8_t *d = base + align64((size_t)k);
    return (copse_cpu_q8_row){
        .qs = (const int8_t *)base,
        .d = (const float *)(void *)d,
        .s = (const float *)(void *)(d + nbb),
        .sum = (const int32_t *)(void *)(d + 2 * nbb),
    };
}

static copse_cpu_q16_row q16_row(uint8_t *base, int64_t k)
{
    size_t nbb = align64((size_t)(k / COPSE_CPU_QK) * 4);
    uint8_t *d = base + align64((size_t)k * 2);
    return (copse_cpu_q16_row){
        .qs = (const int16_t *)(void *)base,
        .d = (const float *)(void *)d,
        .s = (const float *)(void *)(d + nbb),
        .sum = (const int32_t *)(void *)(d + 2 * nbb),
    };
}

/* Quantize tokens [b, e) to Q16 (a->xrows16 set) or Q8 (a->xrows). */
static void quant_task(void *p, int64_t b, int64_t e, int tid)
{
    (void)tid;
    const mm_args *a = p;
    int64_t k = a->x->ne[0];
    for (int64_t t = b; t < e; t++) {
        uint8_t *base = a->act + (size_t)t * a->act_stride;
        if (a->xrows16) {
            copse_cpu_q16_row r = q16_row(base, k);
            a->k->quantize_q16(frow(a->x, t), k, (int16_t *)(void *)base, (float *)r.d, (float *)r.s,
                               (int32_t *)r.sum);
            a->xrows16[t] = r;
        } else {
            copse_cpu_q8_row r = q8_row(base, k);
            a->k->quantize_q8(frow(a->x, t), k, (int8_t *)base, (float *)r.d, (float *)r.s, (int32_t *)r.sum);
            a->xrows[t] = r;
        }
    }
}

/* Output rows [b, e) for every token; out rows are tokens, so token t's
 * results land at out row t, columns b .. e-1. */
static void mm_quant_task(void *p, int64_t b, int64_t e, int tid)
{
    (void)tid;
    const mm_args *a = p;
    int64_t nb = a->x->ne[0] / COPSE_CPU_QK;
    const uint8_t *w = tdata(a->w) + (size_t)b * a->w->row_stride;
    float *out = frow(a->out, 0) + b;
    const size_t os = a->out->row_stride / sizeof(float);
    assert(a->out->row_stride % sizeof(float) == 0);
    if (a->xrows16)
        a->k->mm_q16[a->w->type](w, a->w->row_stride, e - b, a->xrows16, a->n_tok, nb, out, os);
    else
        a->k->mm_q8[a->w->type](w, a->w->row_stride, e - b, a->xrows, a->n_tok, nb, out, os);
}

/* Reference path: each weight row as f32 (F32 as is, F16 converted exactly
 * inside dot_f16, anything else dequantized), dotted with each token's f32
 * activations in the canonical order. */
static void mm_f32_task(void *p, int64_t b, int64_t e, int tid)
{
    const mm_args *a = p;
    int64_t k = a->x->ne[0];
    float *tmp = (float *)(void *)(a->rows + (size_t)tid * a->row_bytes);
    for (int64_t r = b; r < e; r++) {
        const uint8_t *wr = tdata(a->w) + (size_t)r * a->w->row_stride;
        if (a->w->type == COPSE_Q_F16) {
            for (int64_t t = 0; t < a->n_tok; t++)
                frow(a->out, t)[r] = a->k->dot_f16((const uint16_t *)(const void *)wr, frow(a->x, t), k);
            continue;
        }
        const float *wf = (const float *)(const void *)wr;
        if (a->w->type != COPSE_Q_F32) {
            copse_status st = copse__dequantize_row(a->w->type, wr, tmp, k);
            assert(st == COPSE_OK);
            (void)st;
            wf = tmp;
        }
        for (int64_t t = 0; t < a->n_tok; t++)
            frow(a->out, t)[r] = a->k->dot_f32(wf, frow(a->x, t), k);
    }
}

static copse_status cpu_matmul(copse_backend_queue *bq, const copse_tensor *w, const copse_tensor *x,
                               const copse_tensor *out)
{
    cpu_queue *q = cq(bq);
    check_view(w);
    check_view(x);
    check_view(out);
    int64_t k = w->ne[0], n_out = w->ne[1], n = x->ne[1];
    assert(x->type == COPSE_Q_F32 && out->type == COPSE_Q_F32);
    assert(x->ne[0] == k && out->ne[0] == n_out && out->ne[1] == n);
    const copse_qtype_traits *tr = copse__qtype_traits(w->type);
    if (!tr || !tr->can_dequantize)
        return COPSE_EUNSUPPORTED;
    if (n == 0 || n_out == 0)
        return COPSE_OK;

    mm_args a = {.k = q->k, .w = w, .x = x, .out = out, .n_tok = n};
    const bool q16 = q->act == COPSE_CPU_ACT_Q16 && q->k->mm_q16[w->type];
    const bool q8 = q->act == COPSE_CPU_ACT_Q8 && q->k->mm_q8[w->type];
    if ((q16 || q8) && k % COPSE_CPU_QK == 0) {
        a.act_stride = act_stride(k, q16 ? 2 : 1);
        size_t rows_off = a.act_stride * (size_t)n;
        size_t row_sz = q16 ? sizeof(copse_cpu_q16_row) : sizeof(copse_cpu_q8_row);
        copse_status st = scratch_reserve(q, rows_off + (size_t)n * row_sz);
        if (st != COPSE_OK)
            return st;
        a.act = q->scratch;
        if (q16)
            a.xrows16 = (copse_cpu_q16_row *)(void *)(q->scratch + rows_off);
        else
            a.xrows = (copse_cpu_q8_row *)(void *)(q->scratch + rows_off);
        pool_run(q, quant_task, &a, n, 4);
        pool_run(q, mm_quant_task, &a, n_out, MM_ROWS);
    } else {
        a.row_bytes = align64((size_t)k * sizeof(float));
        copse_status st = scratch_reserve(q, a.row_bytes * (size_t)q->n_threads);
        if (st != COPSE_OK)
            return st;
        a.rows = q->scratch;
        pool_run(q, mm_f32_task, &a, n_out, MM_ROWS);
    }
    return COPSE_OK;
}

/* ---------------------------------------------------------------- kv_store */

typedef struct kvs_args {
    const copse_cpu_kernels *k;
    const copse_tensor *src[2], *pool[2];
    const int32_t *slots;
} kvs_args;

static void kvs_task(void *p, int64_t b, int64_t e, int tid)
{
    (void)tid;
    const kvs_args *a = p;
    for (int64_t t = b; t < e; t++) {
        for (int i = 0; i < 2; i++) {
            const float *x = frow(a->src[i], t);
            uint8_t *dst = tdata(a->pool[i]) + (size_t)a->slots[t] * a->pool[i]->row_stride;
            int64_t n = a->src[i]->ne[0];
            if (a->pool[i]->type == COPSE_Q_F32)
                memcpy(dst, x, (size_t)n * sizeof(float));
            else
                a->k->f32_to_f16(x, (uint16_t *)(void *)dst, n);
        }
    }
}

static copse_status cpu_kv_store(copse_backend_queue *bq, const copse_tensor *k, const copse_tensor *v,
                                 const int32_t *slots, int32_t n, const copse_tensor *k_pool,
                                 const copse_tensor *v_pool)
{
    check_view(k);
    check_view(v);
    check_view(k_pool);
    check_view(v_pool);
    assert(k->type == COPSE_Q_F32 && v->type == COPSE_Q_F32 && k->ne[1] >= n && v->ne[1] >= n);
    assert(k->ne[0] == k_pool->ne[0] && v->ne[0] == v_pool->ne[0]);
    for (int i = 0; i < 2; i++) {
        const copse_tensor *pl = i ? v_pool : k_pool;
        if (pl->type != COPSE_Q_F32 && pl->type != COPSE_Q_F16)
            return COPSE_EUNSUPPORTED;
    }
    for (int32_t t = 0; t < n; t++)
        assert(slots[t] >= 0 && slots[t] < k_pool->ne[1] && slots[t] < v_pool->ne[1]);
    kvs_args a = {cq(bq)->k, {k, v}, {k_pool, v_pool}, slots};
    pool_run(cq(bq), kvs_task, &a, n, 8);
    return COPSE_OK;
}

/* ---------------------------------------------------------------- attention */

#define ATTN_CHUNK 64 /* keys scored at once */

typedef struct attn_args {
    const copse_cpu_kernels *k;
    const copse_tensor *q, *kp, *vp, *out;
    const copse_attn_batch *b;
    const uint8_t *kbase, *vbase; /* pool data */
} attn_args;

typedef struct attn_state {
    float m, l;  /* running max and normalizer */
    float *acc;  /* [head_dim] */
} attn_state;

/* Fold `n` keys (cache slots) into the running softmax: scores in slot
 * order, the chunk's max, rescale when the max grows, then accumulate the
 * values in slot order. */
static void attn_fold(const attn_args *a, const float *qv, int kvh, const int32_t *slots, int n,
                      attn_state *s)
{
    const int hd = a->b->head_dim;
    const void *kr[ATTN_CHUNK], *vr[ATTN_CHUNK];
    const size_t kes = a->kp->type == COPSE_Q_F16 ? 2 : 4, ves = a->vp->type == COPSE_Q_F16 ? 2 : 4;
    for (int i = 0; i < n; i++) {
        kr[i] = a->kbase + (size_t)slots[i] * a->kp->row_stride + (size_t)kvh * hd * kes;
        vr[i] = a->vbase + (size_t)slots[i] * a->vp->row_stride + (size_t)kvh * hd * ves;
    }
    float sc[ATTN_CHUNK];
    if (kes == 2)
        a->k->dot_many_f16(qv, (const uint16_t *const *)kr, n, hd, sc);
    else
        a->k->dot_many_f32(qv, (const float *const *)kr, n, hd, sc);
    float cm = -INFINITY;
    for (int i = 0; i < n; i++) {
        sc[i] = sc[i] * a->b->scale;
        if (sc[i] > cm)
            cm = sc[i];
    }
    if (cm > s->m) {
        if (s->l > 0.0f) {
            float alpha = expf(s->m - cm);
            a->k->scale_f32(s->acc, alpha, hd);
            s->l = s->l * alpha;
        }
        s->m = cm;
    }
    for (int i = 0; i < n; i++)
        sc[i] = sc[i] - s->m;
    a->k->exp_neg(sc, n);
    for (int i = 0; i < n; i++)
        s->l = s->l + sc[i];
    if (ves == 2)
        a->k->axpy_many_f16(s->acc, sc, (const uint16_t *const *)vr, n, hd);
    else
        a->k->axpy_many_f32(s->acc, sc, (const float *const *)vr, n, hd);
}

/* One (token, head): the visible keys are the sequence's committed prefix
 * in position order, then its new entries in node order (mask / causal). */
static void attn_one(const attn_args *a, int64_t t, int h)
{
    const copse_attn_batch *b = a->b;
    int s = 0;
    while (s < b->n_seqs && !(t >= b->first[s] && t < b->first[s] + b->n_new[s]))
        s++;
    assert(s < b->n_seqs);
    const int32_t j = (int32_t)(t - b->first[s]);
    const int hd = b->head_dim;
    const int kvh = h / (b->n_heads / b->n_kv_heads);
    const int32_t *table = b->tables[s];
    const uint64_t *mask = b->mask[s];
    const int32_t sbase = b->base ? b->base[s] : 0; /* scratch entries before the new ones */
    const int32_t n_vis = sbase + b->n_new[s];
    const int32_t words = (n_vis + 63) / 64;
    const float *qv = frow(a->q, t) + (size_t)h * hd;

    float acc[COPSE_CPU_MAX_HEAD_DIM];
    memset(acc, 0, (size_t)hd * sizeof acc[0]);
    attn_state st = {.m = -INFINITY, .l = 0.0f, .acc = acc};
    int32_t slots[ATTN_CHUNK];
    int n = 0;
    const int32_t bs = b->block_size, committed = b->committed[s];
    /* the committed prefix, block by block (consecutive slots within one) */
    for (int32_t base = 0; base < committed; base += bs) {
        const int32_t s0 = table[base / bs] * bs;
        const int32_t cnt = committed - base < bs ? committed - base : bs;
        for (int32_t i = 0; i < cnt; i++) {
            slots[n++] = s0 + i;
            if (n == ATTN_CHUNK) {
                attn_fold(a, qv, kvh, slots, n, &st);
                n = 0;
            }
        }
    }
    /* the scratch entries this token sees, in node order */
    for (int32_t kk = 0; kk < n_vis; kk++) {
        bool vis = mask ? (mask[(size_t)j * words + kk / 64] >> (kk % 64)) & 1u : kk <= sbase + j;
        if (!vis)
            continue;
        const int32_t pos = committed + kk;
        slots[n++] = table[pos / bs] * bs + pos % bs;
        if (n == ATTN_CHUNK) {
            attn_fold(a, qv, kvh, slots, n, &st);
            n = 0;
        }
    }
    if (n)
        attn_fold(a, qv, kvh, slots, n, &st);

    float *o = frow(a->out, t) + (size_t)h * hd;
    float inv = st.l > 0.0f ? 1.0f / st.l : 0.0f;
    for (int i = 0; i < hd; i++)
        o[i] = acc[i] * inv;
}

static void attn_task(void *p, int64_t b, int64_t e, int tid)
{
    (void)tid;
    const attn_args *a = p;
    for (int64_t i = b; i < e; i++)
        attn_one(a, i / a->b->n_heads, (int)(i % a->b->n_heads));
}

static copse_status cpu_attention(copse_backend_queue *bq, const copse_tensor *qry, const copse_tensor *k_pool,
                                  const copse_tensor *v_pool, const copse_attn_batch *b,
                                  const copse_tensor *out)
{
    check_view(qry);
    check_view(k_pool);
    check_view(v_pool);
    check_view(out);
    assert(b->n_heads > 0 && b->n_kv_heads > 0 && b->n_heads % b->n_kv_heads == 0);
    assert(b->head_dim > 0 && b->head_dim <= COPSE_CPU_MAX_HEAD_DIM && b->block_size > 0);
    assert(qry->type == COPSE_Q_F32 && out->type == COPSE_Q_F32);
    assert(qry->ne[0] == (int64_t)b->n_heads * b->head_dim && out->ne[0] == qry->ne[0]);
    assert(qry->ne[1] >= b->n_tokens && out->ne[1] >= b->n_tokens);
    assert(k_pool->ne[0] == (int64_t)b->n_kv_heads * b->head_dim && v_pool->ne[0] == k_pool->ne[0]);
    if ((k_pool->type != COPSE_Q_F32 && k_pool->type != COPSE_Q_F16) ||
        (v_pool->type != COPSE_Q_F32 && v_pool->type != COPSE_Q_F16))
        return COPSE_EUNSUPPORTED;
    attn_args a = {cq(bq)->k, qry, k_pool, v_pool, out, b, tdata(k_pool), tdata(v_pool)};
    pool_run(cq(bq), attn_task, &a, (int64_t)b->n_tokens * b->n_heads, 2);
    return COPSE_OK;
}

/* ---------------------------------------------------------------- kv_commit */

typedef struct commit_args {
    const copse_tensor *const *pools;
    const copse_slot_move *moves;
    int32_t n_moves;
} commit_args;

/* Pools are independent; within a pool the moves run in list order. */
static void commit_task(void *p, int64_t b, int64_t e, int tid)
{
    (void)tid;
    const commit_args *a = p;
    for (int64_t i = b; i < e; i++) {
        const copse_tensor *pl = a->pools[i];
        uint64_t rb = 0;
        copse__qtype_row_bytes(pl->type, (uint64_t)pl->ne[0], &rb);
        uint8_t *base = tdata(pl);
        for (int32_t m = 0; m < a->n_moves; m++)
            memmove(base + (size_t)a->moves[m].dst * pl->row_stride, base + (size_t)a->moves[m].src * pl->row_stride,
                    (size_t)rb);
    }
}

static copse_status cpu_kv_commit(copse_backend_queue *bq, const copse_tensor *const *pools, int32_t n_pools,
                                  const copse_slot_move *moves, int32_t n_moves)
{
    for (int32_t i = 0; i < n_pools; i++) {
        check_view(pools[i]);
        for (int32_t m = 0; m < n_moves; m++)
            assert(moves[m].src >= 0 && moves[m].src < pools[i]->ne[1] && moves[m].dst >= 0 &&
                   moves[m].dst < pools[i]->ne[1]);
    }
    commit_args a = {pools, moves, n_moves};
    if (n_moves > 0)
        pool_run(cq(bq), commit_task, &a, n_pools, 4);
    return COPSE_OK;
}

/* ---------------------------------------------------------------- argmax */

typedef struct argmax_args {
    const copse_tensor *logits;
    int32_t *out;
} argmax_args;

/* Lowest index of the largest value; NaNs are skipped (all NaN: 0). */
static void argmax_task(void *p, int64_t b, int64_t e, int tid)
{
    (void)tid;
    const argmax_args *a = p;
    for (int64_t t = b; t < e; t++) {
        const float *x = frow(a->logits, t);
        int64_t best = -1;
        float bv = 0.0f;
        for (int64_t i = 0; i < a->logits->ne[0]; i++) {
            if (x[i] != x[i])
                continue;
            if (best < 0 || x[i] > bv) {
                best = i;
                bv = x[i];
            }
        }
        a->out[t] = best < 0 ? 0 : (int32_t)best;
    }
}

static copse_status cpu_argmax(copse_backend_queue *bq, const copse_tensor *logits, int32_t *argmax)
{
    check_view(logits);
    assert(logits->type == COPSE_Q_F32 && logits->ne[0] > 0);
    argmax_args a = {logits, argmax};
    pool_run(cq(bq), argmax_task, &a, logits->ne[1], 1);
    return COPSE_OK;
}

/* ---------------------------------------------------------------- softmax */

typedef struct softmax_args {
    const copse_tensor *logits, *out;
    float inv_temp;
} softmax_args;

static void softmax_task(void *p, int64_t b, int64_t e, int tid)
{
    (void)tid;
    const softmax_args *a = p;
    for (int64_t t = b; t < e; t++)
        copse__cpu_softmax_ref(frow(a->logits, t), a->logits->ne[0], a->inv_temp, frow(a->out, t));
}

static copse_status cpu_softmax(copse_backend_queue *bq, const copse_tensor *logits, float inv_temp,
                                const copse_tensor *out)
{
    check_view(logits);
    check_view(out);
    assert(logits->type == COPSE_Q_F32 && out->type == COPSE_Q_F32 && logits->ne[0] > 0);
    assert(out->ne[0] == logits->ne[0] && out->ne[1] == logits->ne[1]);
    softmax_args a = {logits, out, inv_temp};
    pool_run(cq(bq), softmax_task, &a, logits->ne[1], 1);
    return COPSE_OK;
}

/* ---------------------------------------------------------------- verify */

typedef struct verify_args {
    const copse_tensor *logits;
    const copse_verify_batch *b;
    copse_verify_path *out;
    float *scratch; /* [threads][2 * n_vocab] */
} verify_args;

static void verify_task(void *p, int64_t b, int64_t e, int tid)
{
    const verify_args *a = p;
    const int32_t nv = (int32_t)a->logits->ne[0];
    for (int64_t s = b; s < e; s++)
        copse__cpu_verify_tree(frow(a->logits, 0), a->logits->row_stride / sizeof(float), nv, a->b, (int32_t)s,
                               a->scratch + (size_t)tid * 2 * (size_t)nv, &a->out[s]);
}

/* One tree per task; each thread has its own two dense rows of scratch. */
static copse_status cpu_verify(copse_backend_queue *bq, const copse_tensor *logits, const copse_verify_batch *b,
                               copse_verify_path *out)
{
    check_view(logits);
    assert(logits->type == COPSE_Q_F32 && logits->ne[0] > 0);
    for (int32_t s = 0; s < b->n_seqs; s++)
        assert(b->seqs[s].n_rows >= 1 && b->seqs[s].row0 >= 0 &&
               b->seqs[s].row0 + b->seqs[s].n_rows <= logits->ne[1]);
    cpu_queue *q = cq(bq);
    copse_status st = scratch_reserve(q, (size_t)q->n_threads * 2 * (size_t)logits->ne[0] * sizeof(float));
    if (st != COPSE_OK)
        return st;
    verify_args a = {logits, b, out, (float *)(void *)q->scratch};
    pool_run(q, verify_task, &a, b->n_seqs, 1);
    return COPSE_OK;
}

/* ---------------------------------------------------------------- lifecycle */

/* COPSE_CPU_ACT = q16 | q8 | f32; unset, empty or unknown: q16. */
static copse_cpu_act act_from_env(void)
{
    const char *e = getenv("COPSE_CPU_ACT");
    if (e && strcmp(e, "q8") == 0)
        return COPSE_CPU_ACT_Q8;
    if (e && strcmp(e, "f32") == 0)
        return COPSE_CPU_ACT_F32;
    return COPSE_CPU_ACT_Q16;
}

static copse_status cpu_synchronize(copse_backend_queue *bq)
{
    (void)bq; /* every op has finished when it returns */
    return COPSE_OK;
}

static void cpu_queue_destroy(copse_backend_queue *bq)
{
    if (!bq)
        return;
    cpu_queue *q = cq(bq);
    copse__cpu_pool_destroy(q->pool);
    free(q->scratch);
    free(q);
}

static const copse_backend_queue_i cpu_queue_i = {
    .destroy = cpu_queue_destroy,
    .synchronize = cpu_synchronize,
    .embed = cpu_embed,
    .rms_norm = cpu_rms_norm,
    .rope = cpu_rope,
    .add = cpu_add,
    .swiglu = cpu_swiglu,
    .matmul = cpu_matmul,
    .kv_store = cpu_kv_store,
    .attention = cpu_attention,
    .attention_scratch_base = true,
    .kv_commit = cpu_kv_commit,
    .argmax = cpu_argmax,
    .softmax = cpu_softmax,
    .verify = cpu_verify,
};

copse_status copse__cpu_queue_create(copse_backend_dev *dev, int n_threads, const copse_cpu_kernels *k,
                                     copse_backend_queue **out)
{
    return copse__cpu_queue_create_act(dev, n_threads, k, act_from_env(), out);
}

copse_status copse__cpu_queue_create_act(copse_backend_dev *dev, int n_threads, const copse_cpu_kernels *k,
                                         copse_cpu_act act, copse_backend_queue **out)
{
    *out = NULL;
    assert((int)act >= 0 && act < COPSE_CPU_ACT_COUNT);
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (int)n : 1;
    }
    if (n_threads > COPSE_CPU_MAX_THREADS)
        n_threads = COPSE_CPU_MAX_THREADS;

    cpu_queue *q = calloc(1, sizeof *q);
    if (!q)
        return COPSE_ENOMEM;
    q->base.iface = cpu_queue_i;
    q->base.dev = dev;
    q->base.ctx = q;
    q->k = k ? k : copse__cpu_kernels_best();
    q->n_threads = n_threads;
    q->act = act;
    q->scratch_size = COPSE_CPU_SCRATCH_INITIAL;
    q->scratch = aligned_alloc(64, q->scratch_size);
    if (!q->scratch)
        goto fail;
    if (copse__cpu_pool_create(n_threads, &q->pool) != COPSE_OK)
        goto fail;
    *out = &q->base;
    return COPSE_OK;

fail:
    cpu_queue_destroy(&q->base);
    return COPSE_ENOMEM;
}

const copse_cpu_kernels *copse__cpu_queue_kernels(const copse_backend_queue *bq)
{
    return ((const cpu_queue *)bq->ctx)->k;
}

int copse__cpu_queue_threads(const copse_backend_queue *bq)
{
    return ((const cpu_queue *)bq->ctx)->n_threads;
}

copse_cpu_act copse__cpu_queue_act(const copse_backend_queue *bq)
{
    return ((const cpu_queue *)bq->ctx)->act;
}
