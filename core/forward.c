/*
 * forward.c — the llama-family forward pass over a ragged batch.
 *
 * Per call: embed -> for each layer { rms_norm, q/k/v matmuls, rope, kv_store,
 * paged attention, output matmul, residual add, rms_norm, gate/up matmuls,
 * swiglu, down matmul, residual add } -> gather the rows whose logits are
 * wanted -> final rms_norm -> output head. Every step is a backend op on one
 * queue; this file only plans shapes, slots and buffers.
 */
#include "forward.h"

#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "quant.h"

/* ---------------------------------------------------------------- hyperparameters */

static copse_status get_arch_u32(const copse_gguf *g, const char *arch, const char *key, bool required,
                                 uint32_t *out, char *err, size_t err_size)
{
    char name[96];
    snprintf(name, sizeof name, "%s.%s", arch, key);
    copse_status st = copse__gguf_get_u32(g, name, out);
    if (st == COPSE_ENOTFOUND && !required)
        return COPSE_OK;
    if (st != COPSE_OK)
        return copse__errorf(err, err_size, COPSE_EFORMAT, "metadata '%s': %s", name,
                             st == COPSE_ENOTFOUND ? "missing" : "not an unsigned 32-bit integer");
    return COPSE_OK;
}

static copse_status get_arch_f32(const copse_gguf *g, const char *arch, const char *key, float *out,
                                 char *err, size_t err_size)
{
    char name[96];
    snprintf(name, sizeof name, "%s.%s", arch, key);
    copse_status st = copse__gguf_get_f32(g, name, out);
    if (st == COPSE_ENOTFOUND)
        return COPSE_OK; /* keeps the default */
    if (st != COPSE_OK)
        return copse__errorf(err, err_size, COPSE_EFORMAT, "metadata '%s': not a number", name);
    return COPSE_OK;
}

copse_status copse__hparams_load(const copse_gguf *g, copse_hparams *hp, char *err, size_t err_size)
{
    memset(hp, 0, sizeof *hp);
    copse_str arch;
    if (copse__gguf_get_str(g, "general.architecture", &arch) != COPSE_OK)
        return copse__errorf(err, err_size, COPSE_EFORMAT, "metadata 'general.architecture': missing");
    if (!copse__str_eq(arch, "llama"))
        return copse__errorf(err, err_size, COPSE_EUNSUPPORTED,
                             "architecture '%.*s' is not supported (supported: llama)",
                             (int)(arch.len > 24 ? 24 : arch.len), arch.ptr);
    snprintf(hp->arch, sizeof hp->arch, "llama");

    copse_status st;
    if ((st = get_arch_u32(g, hp->arch, "block_count", true, &hp->n_layer, err, err_size)) ||
        (st = get_arch_u32(g, hp->arch, "embedding_length", true, &hp->n_embd, err, err_size)) ||
        (st = get_arch_u32(g, hp->arch, "feed_forward_length", true, &hp->n_ff, err, err_size)) ||
        (st = get_arch_u32(g, hp->arch, "attention.head_count", true, &hp->n_head, err, err_size)))
        return st;
    hp->n_head_kv = hp->n_head;
    hp->n_ctx_train = 4096;
    if ((st = get_arch_u32(g, hp->arch, "attention.head_count_kv", false, &hp->n_head_kv, err, err_size)) ||
        (st = get_arch_u32(g, hp->arch, "context_length", false, &hp->n_ctx_train, err, err_size)))
        return st;
    if (hp->n_layer == 0 || hp->n_embd == 0 || hp->n_ff == 0 || hp->n_head == 0 || hp->n_head_kv == 0 ||
        hp->n_embd % hp->n_head != 0 || hp->n_head % hp->n_head_kv != 0 || hp->n_ctx_train == 0)
        return copse__errorf(err, err_size, COPSE_EFORMAT,
                             "inconsistent hyperparameters: %u layers, width %u, ffn %u, %u heads, %u kv heads",
                             hp->n_layer, hp->n_embd, hp->n_ff, hp->n_head, hp->n_head_kv);
    hp->head_dim = hp->n_embd / hp->n_head;
    if (hp->head_dim % 2 != 0)
        return copse__errorf(err, err_size, COPSE_EFORMAT, "head dimension %u is odd", hp->head_dim);
    uint32_t n_rot = hp->head_dim;
    if ((st = get_arch_u32(g, hp->arch, "rope.dimension_count", false, &n_rot, err, err_size)))
        return st;
    if (n_rot != hp->head_dim)
        return copse__errorf(err, err_size, COPSE_EUNSUPPORTED,
                             "partial rotary embedding (%u of %u dimensions) is not supported", n_rot,
                             hp->head_dim);

    hp->rope_theta = 10000.0f;
    hp->rms_eps = 1e-5f;
    hp->rope_freq_scale = 1.0f;
    if ((st = get_arch_f32(g, hp->arch, "rope.freq_base", &hp->rope_theta, err, err_size)) ||
        (st = get_arch_f32(g, hp->arch, "attention.layer_norm_rms_epsilon", &hp->rms_eps, err, err_size)))
        return st;
    copse_str scaling;
    char key[96];
    snprintf(key, sizeof key, "%s.rope.scaling.type", hp->arch);
    if (copse__gguf_get_str(g, key, &scaling) == COPSE_OK && !copse__str_eq(scaling, "none")) {
        if (!copse__str_eq(scaling, "linear"))
            return copse__errorf(err, err_size, COPSE_EUNSUPPORTED, "rope scaling '%.*s' is not supported",
                                 (int)(scaling.len > 24 ? 24 : scaling.len), scaling.ptr);
        float factor = 1.0f;
        if ((st = get_arch_f32(g, hp->arch, "rope.scaling.factor", &factor, err, err_size)))
            return st;
        if (!(factor > 0.0f))
            return copse__errorf(err, err_size, COPSE_EFORMAT, "rope scaling factor %g is not positive",
                                 (double)factor);
        hp->rope_freq_scale = 1.0f / factor;
    }
    if (!(hp->rope_theta > 0.0f) || !(hp->rms_eps > 0.0f))
        return copse__errorf(err, err_size, COPSE_EFORMAT, "rope theta %g or rms epsilon %g not positive",
                             (double)hp->rope_theta, (double)hp->rms_eps);

    const copse_gguf_tensor *emb = copse__gguf_find_tensor(g, "token_embd.weight");
    if (!emb)
        return copse__errorf(err, err_size, COPSE_EFORMAT, "tensor 'token_embd.weight': missing");
    if (emb->ne[1] == 0 || emb->ne[1] > INT32_MAX)
        return copse__errorf(err, err_size, COPSE_EFORMAT, "tensor 'token_embd.weight': %llu rows",
                             (unsigned long long)emb->ne[1]);
    hp->n_vocab = (uint32_t)emb->ne[1];
    hp->tied_output = copse__gguf_find_tensor(g, "output.weight") == NULL;
    if (copse__gguf_find_tensor(g, "rope_freqs.weight"))
        return copse__errorf(err, err_size, COPSE_EUNSUPPORTED,
                             "per-frequency rope factors (tensor 'rope_freqs.weight') are not supported");
    return COPSE_OK;
}

/* ---------------------------------------------------------------- state */

typedef struct layer_weights {
    copse_tensor attn_norm, wq, wk, wv, wo;
    copse_tensor ffn_norm, w_gate, w_up, w_down;
} layer_weights;

struct copse_forward {
    copse_hparams hp;
    copse_forward_params p;
    copse_backend_dev *dev;
    copse_backend_queue *q;

    copse_backend_buffer *wbuf; /* the model's tensor data section */
    copse_tensor tok_embd, out_norm, output;
    layer_weights *layers;      /* [n_layer] */

    copse_kvcache *kv;
    copse_backend_buffer *kvbuf;
    copse_tensor *k_pool, *v_pool;   /* [n_layer] */
    const copse_tensor **all_pools;  /* [2 * n_layer], for kv_commit */

    copse_backend_buffer *abuf; /* activations */
    size_t off_x, off_h, off_q, off_k, off_v, off_att, off_g, off_u, off_sel, off_logits;
    int32_t n_logits, n_out; /* the last run's logits rows, on the device */

    /* host scratch, sized at create */
    int32_t *slots;       /* [max_tokens] */
    int32_t *pos;         /* [max_tokens] */
    int32_t *committed;   /* [max_seqs] */
    const int32_t **tables; /* [max_seqs] */
    const uint64_t **masks; /* [max_seqs] */
    copse_kv_move *cow_moves; /* [block_size] */
};

copse_forward_params copse__forward_default_params(void)
{
    return (copse_forward_params){
        .n_threads = 0,
        .max_tokens = 256,
        .max_seqs = 8,
        .max_ctx = 0,
        .kv_mem = 0,
        .block_size = 16,
        .kv_type = COPSE_Q_F32, /* f16 pools cost ~1e-3 relative logit error */
    };
}

const copse_hparams *copse__forward_hparams(const copse_forward *f)
{
    return &f->hp;
}

copse_kvcache *copse__forward_kv(copse_forward *f)
{
    return f->kv;
}

static copse_tensor view(copse_backend_buffer *buf, size_t offset, uint32_t type, int64_t cols, int64_t rows)
{
    uint64_t row_bytes = 0;
    copse__qtype_row_bytes(type, (uint64_t)cols, &row_bytes);
    return (copse_tensor){.buf = buf, .offset = offset, .type = type, .ne = {cols, rows}, .row_stride = row_bytes};
}

/* A weight tensor of the model as a view into the weight buffer, checked for
 * shape [cols, rows] (rows == 0: a vector of cols) and a usable type. */
static copse_status weight(copse_forward *f, const copse_gguf *g, const char *name, uint64_t cols,
                           uint64_t rows, bool matrix, copse_tensor *out, char *err, size_t err_size)
{
    const copse_gguf_tensor *t = copse__gguf_find_tensor(g, name);
    if (!t)
        return copse__errorf(err, err_size, COPSE_EFORMAT, "tensor '%s': missing", name);
    uint64_t want_rows = rows ? rows : 1;
    if (t->ne[0] != cols || t->ne[1] != want_rows || t->ne[2] != 1 || t->ne[3] != 1)
        return copse__errorf(err, err_size, COPSE_EFORMAT,
                             "tensor '%s': shape [%llu, %llu, %llu, %llu], want [%llu, %llu]", name,
                             (unsigned long long)t->ne[0], (unsigned long long)t->ne[1],
                             (unsigned long long)t->ne[2], (unsigned long long)t->ne[3],
                             (unsigned long long)cols, (unsigned long long)want_rows);
    const copse_qtype_traits *tr = copse__qtype_traits(t->type);
    if (!tr || !tr->can_dequantize || (!matrix && t->type != COPSE_Q_F32))
        return copse__errorf(err, err_size, COPSE_EUNSUPPORTED, "tensor '%s': type %s not supported here",
                             name, copse__qtype_name(t->type));
    *out = view(f->wbuf, t->offset, t->type, (int64_t)cols, (int64_t)want_rows);
    return COPSE_OK;
}

static copse_status load_weights(copse_forward *f, const copse_gguf *g, char *err, size_t err_size)
{
    const copse_hparams *hp = &f->hp;
    const uint64_t d = hp->n_embd, hd = hp->head_dim;
    copse_status st;
    if ((st = weight(f, g, "token_embd.weight", d, hp->n_vocab, true, &f->tok_embd, err, err_size)) ||
        (st = weight(f, g, "output_norm.weight", d, 0, false, &f->out_norm, err, err_size)))
        return st;
    if (hp->tied_output)
        f->output = f->tok_embd;
    else if ((st = weight(f, g, "output.weight", d, hp->n_vocab, true, &f->output, err, err_size)))
        return st;
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        layer_weights *w = &f->layers[l];
        char name[64];
#define W_(field, suffix, cols, rows, matrix)                                               \
    snprintf(name, sizeof name, "blk.%u." suffix ".weight", l);                             \
    if ((st = weight(f, g, name, cols, rows, matrix, &w->field, err, err_size)) != COPSE_OK) \
        return st;
        W_(attn_norm, "attn_norm", d, 0, false)
        W_(wq, "attn_q", d, hp->n_head * hd, true)
        W_(wk, "attn_k", d, hp->n_head_kv * hd, true)
        W_(wv, "attn_v", d, hp->n_head_kv * hd, true)
        W_(wo, "attn_output", hp->n_head * hd, d, true)
        W_(ffn_norm, "ffn_norm", d, 0, false)
        W_(w_gate, "ffn_gate", d, hp->n_ff, true)
        W_(w_up, "ffn_up", d, hp->n_ff, true)
        W_(w_down, "ffn_down", hp->n_ff, d, true)
#undef W_
    }
    return COPSE_OK;
}

/* The tensor data section of the file as one buffer: borrowed where the
 * device reads host memory, else uploaded. */
static copse_status map_weights(copse_forward *f, const copse_gguf *g, char *err, size_t err_size)
{
    if (copse__gguf_n_tensors(g) == 0)
        return copse__errorf(err, err_size, COPSE_EFORMAT, "the model has no tensors");
    const copse_gguf_tensor *t0 = copse__gguf_tensor_at(g, 0);
    char *base = (char *)t0->data - t0->offset; /* start of the data section */
    size_t size = (size_t)(copse__gguf_file_size(g) - copse__gguf_data_offset(g));
    copse_status st;
    if (f->dev->iface.buffer_from_host) {
        /* The mapping is read-only; no op writes to weight buffers. */
        st = f->dev->iface.buffer_from_host(f->dev, base, size, &f->wbuf);
    } else {
        st = f->dev->iface.buffer_alloc(f->dev, size, &f->wbuf);
        if (st == COPSE_OK)
            st = f->wbuf->iface.upload(f->wbuf, 0, base, size);
    }
    if (st != COPSE_OK)
        return copse__errorf(err, err_size, st, "cannot place %zu bytes of weights on the device: %s", size,
                             copse_strerror(st));
    return COPSE_OK;
}

static copse_status alloc_kv(copse_forward *f, char *err, size_t err_size)
{
    const copse_hparams *hp = &f->hp;
    const copse_forward_params *p = &f->p;
    uint32_t bpe = p->kv_type == COPSE_Q_F16 ? 2 : 4;
    uint64_t per_token = 2ull * hp->n_layer * hp->n_head_kv * hp->head_dim * bpe;
    uint64_t budget = p->kv_mem ? p->kv_mem : per_token * p->max_seqs * p->max_ctx;
    copse_kv_plan plan;
    copse_status st = copse__kv_plan(hp->n_layer, hp->n_head_kv, hp->head_dim, bpe, p->block_size, budget,
                                     &plan, err, err_size);
    if (st != COPSE_OK)
        return st;
    uint32_t blocks_per_seq = (p->max_ctx + p->block_size - 1) / p->block_size;
    if ((st = copse__kvcache_create(&plan, p->max_seqs, blocks_per_seq, &f->kv, err, err_size)))
        return st;

    const int64_t kv_dim = (int64_t)hp->n_head_kv * hp->head_dim;
    const int64_t n_slots = (int64_t)plan.n_blocks * plan.block_size;
    const size_t pool_bytes = (size_t)n_slots * (size_t)kv_dim * bpe;
    st = f->dev->iface.buffer_alloc(f->dev, pool_bytes * 2 * hp->n_layer, &f->kvbuf);
    if (st != COPSE_OK)
        return copse__errorf(err, err_size, st, "cannot allocate %zu bytes of KV cache: %s",
                             pool_bytes * 2 * hp->n_layer, copse_strerror(st));
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        f->k_pool[l] = view(f->kvbuf, (2 * (size_t)l) * pool_bytes, p->kv_type, kv_dim, n_slots);
        f->v_pool[l] = view(f->kvbuf, (2 * (size_t)l + 1) * pool_bytes, p->kv_type, kv_dim, n_slots);
        f->all_pools[2 * l] = &f->k_pool[l];
        f->all_pools[2 * l + 1] = &f->v_pool[l];
    }
    return COPSE_OK;
}

static copse_status alloc_activations(copse_forward *f, char *err, size_t err_size)
{
    const copse_hparams *hp = &f->hp;
    const size_t T = f->p.max_tokens, d = hp->n_embd, qd = (size_t)hp->n_head * hp->head_dim,
                 kvd = (size_t)hp->n_head_kv * hp->head_dim, ff = hp->n_ff;
    size_t off = 0;
#define PLACE_(field, floats) \
    f->field = off;           \
    off += ((T * (floats) * sizeof(float)) + 63) / 64 * 64;
    PLACE_(off_x, d)
    PLACE_(off_h, d)
    PLACE_(off_q, qd)
    PLACE_(off_k, kvd)
    PLACE_(off_v, kvd)
    PLACE_(off_att, qd)
    PLACE_(off_g, ff)
    PLACE_(off_u, ff)
    PLACE_(off_sel, d)
    PLACE_(off_logits, hp->n_vocab)
#undef PLACE_
    copse_status st = f->dev->iface.buffer_alloc(f->dev, off, &f->abuf);
    if (st != COPSE_OK)
        return copse__errorf(err, err_size, st, "cannot allocate %zu bytes of activations: %s", off,
                             copse_strerror(st));
    return COPSE_OK;
}

copse_status copse__forward_create(const copse_gguf *g, copse_backend_dev *dev, const copse_forward_params *params,
                                   copse_forward **out, char *err, size_t err_size)
{
    *out = NULL;
    copse_forward *f = calloc(1, sizeof *f);
    if (!f)
        return copse__errorf(err, err_size, COPSE_ENOMEM, "out of memory");
    f->dev = dev;
    f->p = params ? *params : copse__forward_default_params();
    copse_status st = copse__hparams_load(g, &f->hp, err, err_size);
    if (st != COPSE_OK)
        goto fail;
    copse_forward_params *p = &f->p;
    if (p->max_ctx == 0)
        p->max_ctx = f->hp.n_ctx_train;
    if (p->max_tokens == 0 || p->max_tokens > (1u << 20) || p->max_seqs == 0 || p->block_size == 0 ||
        (p->kv_type != COPSE_Q_F16 && p->kv_type != COPSE_Q_F32)) {
        st = copse__errorf(err, err_size, COPSE_EINVAL,
                           "bad forward parameters: max_tokens %u, max_seqs %u, block_size %u, kv type %s",
                           p->max_tokens, p->max_seqs, p->block_size, copse__qtype_name(p->kv_type));
        goto fail;
    }
    const uint32_t L = f->hp.n_layer;
    f->layers = calloc(L, sizeof *f->layers);
    f->k_pool = calloc(L, sizeof *f->k_pool);
    f->v_pool = calloc(L, sizeof *f->v_pool);
    f->all_pools = calloc(2 * (size_t)L, sizeof *f->all_pools);
    f->slots = calloc(p->max_tokens, sizeof *f->slots);
    f->pos = calloc(p->max_tokens, sizeof *f->pos);
    f->committed = calloc(p->max_seqs, sizeof *f->committed);
    f->tables = calloc(p->max_seqs, sizeof *f->tables);
    f->masks = calloc(p->max_seqs, sizeof *f->masks);
    f->cow_moves = calloc(p->block_size, sizeof *f->cow_moves);
    if (!f->layers || !f->k_pool || !f->v_pool || !f->all_pools || !f->slots || !f->pos || !f->committed ||
        !f->tables || !f->masks || !f->cow_moves) {
        st = copse__errorf(err, err_size, COPSE_ENOMEM, "out of memory");
        goto fail;
    }
    if ((st = map_weights(f, g, err, err_size)) || (st = load_weights(f, g, err, err_size)) ||
        (st = alloc_kv(f, err, err_size)) || (st = alloc_activations(f, err, err_size)))
        goto fail;
    if (!dev->iface.queue_create) {
        st = copse__errorf(err, err_size, COPSE_EUNSUPPORTED, "the device has no compute queue");
        goto fail;
    }
    if ((st = dev->iface.queue_create(dev, p->n_threads, &f->q)) != COPSE_OK) {
        st = copse__errorf(err, err_size, st, "cannot create a compute queue: %s", copse_strerror(st));
        goto fail;
    }
    *out = f;
    return COPSE_OK;
fail:
    copse__forward_destroy(f);
    return st;
}

void copse__forward_destroy(copse_forward *f)
{
    if (!f)
        return;
    if (f->q)
        f->q->iface.destroy(f->q);
    if (f->abuf)
        f->abuf->iface.free(f->abuf);
    if (f->kvbuf)
        f->kvbuf->iface.free(f->kvbuf);
    if (f->wbuf)
        f->wbuf->iface.free(f->wbuf);
    copse__kvcache_destroy(f->kv);
    free(f->layers);
    free(f->k_pool);
    free(f->v_pool);
    free(f->all_pools);
    free(f->slots);
    free(f->pos);
    free(f->committed);
    free(f->tables);
    free(f->masks);
    free(f->cow_moves);
    free(f);
}

/* ---------------------------------------------------------------- one call */

static copse_status check_batch(const copse_forward *f, const copse_fwd_batch *b, char *err, size_t err_size)
{
    if (b->n_tokens <= 0 || (uint32_t)b->n_tokens > f->p.max_tokens)
        return copse__errorf(err, err_size, COPSE_EINVAL, "batch of %d tokens (limit %u)", b->n_tokens,
                             f->p.max_tokens);
    if (b->n_seqs <= 0 || (uint32_t)b->n_seqs > f->p.max_seqs)
        return copse__errorf(err, err_size, COPSE_EINVAL, "batch of %d sequences (limit %u)", b->n_seqs,
                             f->p.max_seqs);
    if (b->n_logits < 0 || b->n_logits > b->n_tokens)
        return copse__errorf(err, err_size, COPSE_EINVAL, "%d logit rows for %d tokens", b->n_logits,
                             b->n_tokens);
    int32_t next = 0;
    for (int32_t s = 0; s < b->n_seqs; s++) {
        if (b->first[s] != next || b->n_new[s] <= 0)
            return copse__errorf(err, err_size, COPSE_EINVAL, "sequence %d: tokens [%d, +%d) do not follow %d", s,
                                 b->first[s], b->n_new[s], next);
        if (!copse__kvcache_seq_live(f->kv, b->seq[s]))
            return copse__errorf(err, err_size, COPSE_EINVAL, "sequence %d: KV sequence %d is not live", s,
                                 b->seq[s]);
        for (int32_t t = 0; t < s; t++)
            if (b->seq[t] == b->seq[s])
                return copse__errorf(err, err_size, COPSE_EINVAL, "KV sequence %d appears twice", b->seq[s]);
        next += b->n_new[s];
    }
    if (next != b->n_tokens)
        return copse__errorf(err, err_size, COPSE_EINVAL, "sequences cover %d of %d tokens", next, b->n_tokens);
    for (int32_t t = 0; t < b->n_tokens; t++)
        if (b->tokens[t] < 0 || (uint32_t)b->tokens[t] >= f->hp.n_vocab)
            return copse__errorf(err, err_size, COPSE_EINVAL, "token %d: id %d outside the vocabulary (%u)", t,
                                 b->tokens[t], f->hp.n_vocab);
    for (int32_t i = 0; i < b->n_logits; i++)
        if (b->logit_rows[i] < 0 || b->logit_rows[i] >= b->n_tokens)
            return copse__errorf(err, err_size, COPSE_EINVAL, "logit row %d outside the batch", b->logit_rows[i]);
    if (b->n_layers > f->hp.n_layer)
        return copse__errorf(err, err_size, COPSE_EINVAL, "%u layers asked of a model of %u", b->n_layers,
                             f->hp.n_layer);
    if (b->head && b->head->f != f)
        return copse__errorf(err, err_size, COPSE_EINVAL, "the reduced head belongs to another forward");
    if (b->scratch_base) {
        for (int32_t s = 0; s < b->n_seqs; s++) {
            if (b->scratch_base[s] < 0 || b->scratch_base[s] > (1 << 24))
                return copse__errorf(err, err_size, COPSE_EINVAL, "sequence %d: scratch base %d", s,
                                     b->scratch_base[s]);
            if (b->scratch_base[s] > 0 && !f->q->iface.attention_scratch_base)
                return copse__errorf(err, err_size, COPSE_EUNSUPPORTED,
                                     "the backend's attention cannot append to scratch (drafting)");
        }
    }
    return COPSE_OK;
}

/* Reserve scratch for every sequence's new tokens (copying shared partial
 * blocks first) and plan each token's store slot and rope position. */
static copse_status plan_positions(copse_forward *f, const copse_fwd_batch *b, char *err, size_t err_size)
{
    for (int32_t s = 0; s < b->n_seqs; s++) {
        const int32_t seq = b->seq[s];
        copse_kv_copy cow;
        const int32_t base = b->scratch_base ? b->scratch_base[s] : 0;
        copse_status st = copse__kvcache_reserve(f->kv, seq, (uint32_t)(base + b->n_new[s]), &cow);
        if (st != COPSE_OK)
            return copse__errorf(err, err_size, st, "KV sequence %d: cannot reserve %d more tokens: %s", seq,
                                 b->n_new[s], st == COPSE_ENOSPACE ? "the KV cache is full" : "context limit reached");
        if (cow.n > 0) {
            for (int32_t i = 0; i < cow.n; i++)
                f->cow_moves[i] = (copse_kv_move){.src = cow.src + i, .dst = cow.dst + i};
            if ((st = copse__forward_kv_moves(f, f->cow_moves, cow.n)))
                return copse__errorf(err, err_size, st, "KV copy-on-write failed: %s", copse_strerror(st));
        }
        const uint32_t committed = copse__kvcache_seq_len(f->kv, seq);
        uint32_t n_blocks;
        f->committed[s] = (int32_t)committed;
        f->tables[s] = copse__kvcache_seq_table(f->kv, seq, &n_blocks);
        f->masks[s] = b->mask ? b->mask[s] : NULL;
        for (int32_t j = 0; j < b->n_new[s]; j++) {
            const int32_t t = b->first[s] + j;
            const int32_t depth = b->depth ? b->depth[t] : base + j;
            if (depth < 0 || depth > base + j)
                return copse__errorf(err, err_size, COPSE_EINVAL, "token %d: depth %d outside [0, %d]", t, depth,
                                     base + j);
            f->slots[t] = copse__kvcache_slot(f->kv, seq, committed + (uint32_t)(base + j));
            f->pos[t] = (int32_t)committed + depth;
        }
    }
    return COPSE_OK;
}

/* The end of a step's ops (backend-impl.h, step_begin/step_end). */
static copse_status step_end(copse_backend_queue *q, bool ok)
{
    return q->iface.step_end ? q->iface.step_end(q, ok) : COPSE_OK;
}

copse_status copse__forward_run(copse_forward *f, const copse_fwd_batch *b, float *logits, char *err,
                                size_t err_size)
{
    copse_status st = check_batch(f, b, err, err_size);
    if (st != COPSE_OK)
        return st;
    if ((st = plan_positions(f, b, err, err_size)))
        return st;

    const copse_hparams *hp = &f->hp;
    const int64_t n = b->n_tokens, d = hp->n_embd, qd = (int64_t)hp->n_head * hp->head_dim,
                  kvd = (int64_t)hp->n_head_kv * hp->head_dim, ff = hp->n_ff;
    copse_backend_queue *q = f->q;
    const copse_backend_queue_i *op = &q->iface;
    copse_backend_buffer *a = f->abuf;
    const copse_tensor x = view(a, f->off_x, COPSE_Q_F32, d, n), h = view(a, f->off_h, COPSE_Q_F32, d, n),
                       tq = view(a, f->off_q, COPSE_Q_F32, qd, n), tk = view(a, f->off_k, COPSE_Q_F32, kvd, n),
                       tv = view(a, f->off_v, COPSE_Q_F32, kvd, n),
                       att = view(a, f->off_att, COPSE_Q_F32, qd, n), g = view(a, f->off_g, COPSE_Q_F32, ff, n),
                       u = view(a, f->off_u, COPSE_Q_F32, ff, n);
    const copse_rope_params rope = {
        .mode = COPSE_ROPE_NORM,
        .n_heads = 0, /* set per use */
        .head_dim = (int32_t)hp->head_dim,
        .theta_base = hp->rope_theta,
        .freq_scale = hp->rope_freq_scale,
    };
    copse_rope_params rope_q = rope, rope_k = rope;
    rope_q.n_heads = (int32_t)hp->n_head;
    rope_k.n_heads = (int32_t)hp->n_head_kv;
    const copse_attn_batch ab = {
        .n_seqs = b->n_seqs,
        .n_tokens = b->n_tokens,
        .block_size = (int32_t)f->p.block_size,
        .first = b->first,
        .n_new = b->n_new,
        .committed = f->committed,
        .tables = f->tables,
        .mask = f->masks,
        .base = b->scratch_base,
        .n_heads = (int32_t)hp->n_head,
        .n_kv_heads = (int32_t)hp->n_head_kv,
        .head_dim = (int32_t)hp->head_dim,
        .scale = 1.0f / sqrtf((float)hp->head_dim),
    };

#define OP_(call)                  \
    do {                           \
        if ((st = (call)) != COPSE_OK) \
            goto device_error;     \
    } while (0)

    if (op->step_begin && (st = op->step_begin(q, b->n_tokens)) != COPSE_OK)
        goto device_error;
    OP_(op->embed(q, &f->tok_embd, b->tokens, b->n_tokens, &x));
    const uint32_t n_layers = b->n_layers ? b->n_layers : hp->n_layer;
    for (uint32_t l = 0; l < n_layers; l++) {
        const layer_weights *w = &f->layers[l];
        /* attention block */
        OP_(op->rms_norm(q, &x, &w->attn_norm, hp->rms_eps, &h));
        OP_(op->matmul(q, &w->wq, &h, &tq));
        OP_(op->matmul(q, &w->wk, &h, &tk));
        OP_(op->matmul(q, &w->wv, &h, &tv));
        OP_(op->rope(q, &tq, f->pos, &rope_q));
        OP_(op->rope(q, &tk, f->pos, &rope_k));
        OP_(op->kv_store(q, &tk, &tv, f->slots, b->n_tokens, &f->k_pool[l], &f->v_pool[l]));
        OP_(op->attention(q, &tq, &f->k_pool[l], &f->v_pool[l], &ab, &att));
        OP_(op->matmul(q, &w->wo, &att, &h));
        OP_(op->add(q, &x, &h, &x));
        /* feed-forward block */
        OP_(op->rms_norm(q, &x, &w->ffn_norm, hp->rms_eps, &h));
        OP_(op->matmul(q, &w->w_gate, &h, &g));
        OP_(op->matmul(q, &w->w_up, &h, &u));
        OP_(op->swiglu(q, &g, &u, &g));
        OP_(op->matmul(q, &w->w_down, &g, &h));
        OP_(op->add(q, &x, &h, &x));
    }
    f->n_logits = 0;
    if (b->n_logits > 0) {
        const int64_t n_out = b->head ? b->head->n : (int64_t)hp->n_vocab;
        f->n_logits = b->n_logits;
        f->n_out = (int32_t)n_out;
        const copse_tensor sel = view(a, f->off_sel, COPSE_Q_F32, d, b->n_logits),
                           lg = view(a, f->off_logits, COPSE_Q_F32, n_out, b->n_logits);
        OP_(op->embed(q, &x, b->logit_rows, b->n_logits, &sel)); /* gather the wanted rows */
        OP_(op->rms_norm(q, &sel, &f->out_norm, hp->rms_eps, &sel));
        OP_(op->matmul(q, b->head ? &b->head->w : &f->output, &sel, &lg));
        OP_(step_end(q, true));
        OP_(op->synchronize(q));
        if (logits)
            OP_(a->iface.download(a, f->off_logits, logits, (size_t)b->n_logits * (size_t)n_out * sizeof(float)));
    } else {
        OP_(step_end(q, true));
        OP_(op->synchronize(q));
    }
#undef OP_
    return COPSE_OK;

device_error:
    (void)step_end(q, false);
    return copse__errorf(err, err_size, st, "device error during the forward pass: %s", copse_strerror(st));
}

copse_status copse__forward_kv_moves(copse_forward *f, const copse_kv_move *moves, int32_t n)
{
    if (n <= 0)
        return COPSE_OK;
    copse_status st = f->q->iface.kv_commit(f->q, f->all_pools, 2 * (int32_t)f->hp.n_layer, moves, n);
    if (st != COPSE_OK)
        return st;
    return f->q->iface.synchronize(f->q);
}

/* ---------------------------------------------------------------- logits on the device */

copse_tensor copse__forward_logits(const copse_forward *f)
{
    return view(f->abuf, f->off_logits, COPSE_Q_F32, f->n_logits ? f->n_out : (int64_t)f->hp.n_vocab, f->n_logits);
}

copse_status copse__forward_download_logits(copse_forward *f, int32_t row0, int32_t n, float *host)
{
    assert(row0 >= 0 && n >= 0 && row0 + n <= f->n_logits);
    const size_t row = (size_t)f->n_out * sizeof(float);
    return f->abuf->iface.download(f->abuf, f->off_logits + (size_t)row0 * row, host, (size_t)n * row);
}

const float *copse__forward_logits_rows(copse_forward *f, int32_t row0, int32_t n, float *scratch,
                                        copse_status *st)
{
    assert(row0 >= 0 && n >= 0 && row0 + n <= f->n_logits);
    *st = COPSE_OK;
    void *base = f->abuf->iface.host_ptr ? f->abuf->iface.host_ptr(f->abuf) : NULL;
    if (base)
        return (const float *)(const void *)((const char *)base + f->off_logits) + (size_t)row0 * (size_t)f->n_out;
    *st = copse__forward_download_logits(f, row0, n, scratch);
    return *st == COPSE_OK ? scratch : NULL;
}

bool copse__forward_has_verify(const copse_forward *f)
{
    return f->q->iface.verify != NULL;
}

copse_status copse__forward_verify(copse_forward *f, const copse_verify_batch *b, copse_verify_path *out)
{
    if (!f->q->iface.verify)
        return COPSE_EUNSUPPORTED;
    const copse_tensor lg = copse__forward_logits(f);
    assert(f->n_out == (int32_t)f->hp.n_vocab); /* the full head: verification needs every token */
    return f->q->iface.verify(f->q, &lg, b, out);
}

/* ---------------------------------------------------------------- drafting helpers */

copse_backend_dev *copse__forward_dev(const copse_forward *f)
{
    return f->dev;
}

const copse_forward_params *copse__forward_params(const copse_forward *f)
{
    return &f->p;
}

copse_status copse__forward_head_create(copse_forward *f, const copse_gguf *g, const int32_t *ids, int32_t n,
                                        copse_fwd_head **out, char *err, size_t err_size)
{
    *out = NULL;
    const copse_hparams *hp = &f->hp;
    if (n < 1 || (uint32_t)n > hp->n_vocab)
        return copse__errorf(err, err_size, COPSE_EINVAL, "reduced head of %d rows (vocabulary %u)", n,
                             hp->n_vocab);
    const char *name = hp->tied_output ? "token_embd.weight" : "output.weight";
    const copse_gguf_tensor *t = copse__gguf_find_tensor(g, name);
    if (!t || t->ne[0] != hp->n_embd || t->ne[1] != hp->n_vocab)
        return copse__errorf(err, err_size, COPSE_EINVAL, "reduced head: tensor '%s' does not match the forward's model",
                             name);
    uint64_t row_bytes = 0;
    copse__qtype_row_bytes(t->type, t->ne[0], &row_bytes);
    copse_fwd_head *h = calloc(1, sizeof *h);
    int32_t *own = malloc(sizeof *own * (size_t)n);
    uint8_t *rows = malloc((size_t)row_bytes * (size_t)n);
    uint8_t *seen = calloc(hp->n_vocab, 1);
    copse_status st = COPSE_OK;
    if (!h || !own || !rows || !seen) {
        st = copse__errorf(err, err_size, COPSE_ENOMEM, "reduced head: out of memory");
        goto fail;
    }
    for (int32_t i = 0; i < n; i++) {
        if (ids[i] < 0 || (uint32_t)ids[i] >= hp->n_vocab || seen[ids[i]]) {
            st = copse__errorf(err, err_size, COPSE_EINVAL, "reduced head: id %d (entry %d) repeated or outside the vocabulary",
                               ids[i], i);
            goto fail;
        }
        seen[ids[i]] = 1;
        own[i] = ids[i];
        memcpy(rows + (size_t)i * row_bytes, (const uint8_t *)t->data + (size_t)ids[i] * row_bytes, (size_t)row_bytes);
    }
    if ((st = f->dev->iface.buffer_alloc(f->dev, (size_t)row_bytes * (size_t)n, &h->buf)) != COPSE_OK ||
        (st = h->buf->iface.upload(h->buf, 0, rows, (size_t)row_bytes * (size_t)n)) != COPSE_OK) {
        st = copse__errorf(err, err_size, st, "reduced head: cannot place %d rows on the device: %s", n,
                           copse_strerror(st));
        goto fail;
    }
    h->n = n;
    h->ids = own;
    h->f = f;
    h->w = view(h->buf, 0, t->type, (int64_t)hp->n_embd, n);
    free(rows);
    free(seen);
    *out = h;
    return COPSE_OK;
fail:
    if (h && h->buf)
        h->buf->iface.free(h->buf);
    free(h);
    free(own);
    free(rows);
    free(seen);
    return st;
}

void copse__forward_head_destroy(copse_fwd_head *h)
{
    if (!h)
        return;
    if (h->buf)
        h->buf->iface.free(h->buf);
    free((void *)h->ids);
    free(h);
}

copse_status copse__forward_kv_read(copse_forward *f, uint32_t layer, int32_t slot, float *k, float *v)
{
    if (layer >= f->hp.n_layer || slot < 0 || slot >= f->k_pool[0].ne[1])
        return COPSE_EINVAL;
    const size_t kvd = (size_t)f->hp.n_head_kv * f->hp.head_dim;
    for (int kv = 0; kv < 2; kv++) {
        const copse_tensor *pool = kv ? &f->v_pool[layer] : &f->k_pool[layer];
        float *dst = kv ? v : k;
        copse_status st;
        if (pool->type == COPSE_Q_F32) {
            st = pool->buf->iface.download(pool->buf, pool->offset + (size_t)slot * pool->row_stride, dst,
                                           kvd * sizeof(float));
        } else {
            /* f16: read the halves into the tail of dst, widen front to back */
            uint16_t *half = (uint16_t *)(void *)(dst + kvd / 2);
            st = pool->buf->iface.download(pool->buf, pool->offset + (size_t)slot * pool->row_stride, half,
                                           kvd * sizeof(uint16_t));
            for (size_t i = 0; st == COPSE_OK && i < kvd; i++)
                dst[i] = copse__fp16_to_f32(half[i]);
        }
        if (st != COPSE_OK)
            return st;
    }
    return COPSE_OK;
}
