/*
 * draft-model.c — "model:FILE": a separate small GGUF model with the
 * target's vocabulary drafts the tree, on its own forward state and KV cache
 * (drafter.h, "Model drafters"). Trees come from the shared builder
 * (model-draft.c).
 *
 * Per sequence it keeps the committed history (prompt + observed tokens)
 * and one KV sequence of its own. A propose first prefills, batched over the
 * call's sequences, the committed tokens its cache has not seen (tokens
 * committed while another drafter was selected, or the accepted ones of the
 * last step), drafts in its scratch, then keeps the root row (the pending
 * token, committed next in any case) and drops the rest: after a propose its
 * cache holds exactly ctx[0, n_ctx).
 */
#include "spec/drafters/drafters-impl.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "backend-impl.h"
#include "error.h"

typedef struct dm_seq {
    bool live;
    int32_t kvseq;     /* its sequence in the draft's KV cache */
    copse_token *hist; /* [max_len] committed history */
    int32_t len, max_len;
    int32_t cached;    /* hist[0, cached) are in the draft's KV cache */
} dm_seq;

typedef struct dm_ctx {
    copse_drafter base;
    copse_drafter_params p;
    copse_gguf *g;        /* the draft model (owned) */
    copse_forward *f;     /* its forward state (owned) */
    copse_fwd_head *head; /* reduced head or NULL */
    copse__mdraft *md;
    dm_seq *seqs;         /* [max_seqs] */
    int32_t *kvseqs;      /* [max_seqs] one call's KV sequences */
    /* catch-up prefill batch */
    copse_token *tokens;  /* [max_tokens] */
    int32_t *b_seq, *b_first, *b_new, *b_ent; /* [max_seqs] */
    int32_t max_tokens;
    char err[256];        /* the last propose error, for debugging */
} dm_ctx;

copse_forward *copse__draft_model_forward(const copse_drafter *d)
{
    return ((const dm_ctx *)d->ctx)->f;
}

int32_t copse__draft_model_kvseq(const copse_drafter *d, int32_t seq)
{
    const dm_ctx *c = d->ctx;
    return seq >= 0 && seq < c->p.max_seqs && c->seqs[seq].live ? c->seqs[seq].kvseq : -1;
}

static void dm_seq_end(copse_drafter *d, int32_t seq)
{
    dm_ctx *c = d->ctx;
    assert(seq >= 0 && seq < c->p.max_seqs && c->seqs[seq].live);
    dm_seq *s = &c->seqs[seq];
    copse__kvcache_seq_free(copse__forward_kv(c->f), s->kvseq);
    free(s->hist);
    memset(s, 0, sizeof *s);
}

static void dm_destroy(copse_drafter *d)
{
    dm_ctx *c = d->ctx;
    if (c->seqs)
        for (int32_t i = 0; i < c->p.max_seqs; i++)
            if (c->seqs[i].live)
                dm_seq_end(d, i);
    copse__mdraft_destroy(c->md);
    copse__forward_head_destroy(c->head);
    copse__forward_destroy(c->f);
    copse__gguf_close(c->g);
    free(c->seqs);
    free(c->kvseqs);
    free(c->tokens);
    free(c->b_seq);
    free(c->b_first);
    free(c->b_new);
    free(c->b_ent);
    free(c);
}

static copse_status dm_seq_begin(copse_drafter *d, int32_t seq, const copse_token *prompt, int32_t n_prompt,
                                 int32_t max_len)
{
    dm_ctx *c = d->ctx;
    assert(seq >= 0 && seq < c->p.max_seqs && !c->seqs[seq].live);
    if (max_len < 1 || max_len > (1 << 28) || n_prompt < 0 || n_prompt > max_len ||
        !copse__drafter_tokens_ok(&c->p, prompt, n_prompt))
        return COPSE_EINVAL;
    dm_seq *s = &c->seqs[seq];
    s->hist = malloc(sizeof *s->hist * (size_t)max_len);
    if (!s->hist)
        return COPSE_ENOMEM;
    copse_status st = copse__kvcache_seq_add(copse__forward_kv(c->f), &s->kvseq);
    if (st != COPSE_OK) {
        free(s->hist);
        s->hist = NULL;
        return st;
    }
    if (n_prompt > 0)
        memcpy(s->hist, prompt, sizeof *prompt * (size_t)n_prompt);
    s->len = n_prompt;
    s->max_len = max_len;
    s->cached = 0;
    s->live = true;
    copse__mdraft_seq_reset(c->md, seq);
    return COPSE_OK;
}

static copse_status dm_observe(copse_drafter *d, int32_t seq, const copse_token *toks, int32_t n)
{
    dm_ctx *c = d->ctx;
    assert(seq >= 0 && seq < c->p.max_seqs && c->seqs[seq].live);
    dm_seq *s = &c->seqs[seq];
    if (n < 0 || !copse__drafter_tokens_ok(&c->p, toks, n))
        return COPSE_EINVAL;
    if ((int64_t)s->len + n > s->max_len)
        return COPSE_ERANGE;
    if (n > 0)
        memcpy(s->hist + s->len, toks, sizeof *toks * (size_t)n);
    s->len += n;
    return COPSE_OK;
}

static copse_status dm_seq_sampling(copse_drafter *d, int32_t seq, const copse_sampling_params *sp)
{
    dm_ctx *c = d->ctx;
    assert(seq >= 0 && seq < c->p.max_seqs && c->seqs[seq].live);
    return copse__mdraft_seq_sampling(c->md, seq, sp);
}

/* Prefill hist[cached, upto[i]) of every entry, batched; commits them. */
static copse_status catch_up(dm_ctx *c, int32_t n, const int32_t *seqs, const int32_t *upto)
{
    copse_kvcache *kv = copse__forward_kv(c->f);
    const int32_t max_seqs = (int32_t)copse__forward_params(c->f)->max_seqs;
    for (;;) {
        int32_t rows = 0, ns = 0;
        for (int32_t i = 0; i < n && rows < c->max_tokens && ns < max_seqs; i++) {
            dm_seq *s = &c->seqs[seqs[i]];
            int32_t m = upto[i] - s->cached;
            if (m <= 0)
                continue;
            if (m > c->max_tokens - rows)
                m = c->max_tokens - rows;
            memcpy(c->tokens + rows, s->hist + s->cached, sizeof *c->tokens * (size_t)m);
            c->b_seq[ns] = s->kvseq;
            c->b_first[ns] = rows;
            c->b_new[ns] = m;
            c->b_ent[ns] = seqs[i];
            rows += m;
            ns++;
        }
        if (ns == 0)
            return COPSE_OK;
        copse_fwd_batch b = {.n_tokens = rows,
                             .tokens = c->tokens,
                             .n_seqs = ns,
                             .seq = c->b_seq,
                             .first = c->b_first,
                             .n_new = c->b_new,
                             .n_logits = 0};
        char ferr[200];
        copse_status st = copse__forward_run(c->f, &b, NULL, ferr, sizeof ferr);
        if (st != COPSE_OK)
            return copse__errorf(c->err, sizeof c->err, st, "draft model: catch-up prefill: %s", ferr);
        for (int32_t k = 0; k < ns; k++) {
            copse__kvcache_commit(kv, c->b_seq[k], (uint32_t)c->b_new[k]);
            c->seqs[c->b_ent[k]].cached += c->b_new[k];
        }
    }
}

static copse_status dm_propose_batch(copse_drafter *d, int32_t n, const int32_t *seqs, const copse_token *const *ctx,
                                     const int32_t *n_ctx, const int32_t *budget, const int32_t *max_depth,
                                     copse_tree *const *trees)
{
    dm_ctx *c = d->ctx;
    copse_kvcache *kv = copse__forward_kv(c->f);
    assert(n >= 0 && n <= c->p.max_seqs);
    /* check every context before changing anything */
    for (int32_t i = 0; i < n; i++) {
        const int32_t seq = seqs[i];
        assert(seq >= 0 && seq < c->p.max_seqs && c->seqs[seq].live);
        const dm_seq *s = &c->seqs[seq];
        for (int32_t k = 0; k < i; k++)
            if (seqs[k] == seq)
                return copse__errorf(c->err, sizeof c->err, COPSE_EINVAL, "draft model: sequence %d twice", seq);
        if (n_ctx[i] < 1 || n_ctx[i] < s->len || (s->len > 0 && ctx[i][s->len - 1] != s->hist[s->len - 1]) ||
            !copse__drafter_tokens_ok(&c->p, ctx[i] + s->len, n_ctx[i] - s->len))
            return copse__errorf(c->err, sizeof c->err, COPSE_EINVAL,
                                 "draft model: sequence %d: context of %d tokens does not extend its history of %d",
                                 seq, n_ctx[i], s->len);
        if (n_ctx[i] > s->max_len)
            return copse__errorf(c->err, sizeof c->err, COPSE_ERANGE,
                                 "draft model: sequence %d: context of %d tokens passes max_len %d", seq, n_ctx[i],
                                 s->max_len);
    }
    for (int32_t i = 0; i < n; i++) {
        dm_seq *s = &c->seqs[seqs[i]];
        if (n_ctx[i] > s->len)
            memcpy(s->hist + s->len, ctx[i] + s->len, sizeof *s->hist * (size_t)(n_ctx[i] - s->len));
        s->len = n_ctx[i];
        if (s->cached > n_ctx[i] - 1) { /* the pending token is drafted from scratch */
            s->cached = n_ctx[i] - 1;
            copse__kvcache_truncate(kv, s->kvseq, (uint32_t)s->cached);
        }
        c->kvseqs[i] = s->kvseq;
    }
    /* committed tokens not seen yet, all sequences in as few calls as fit */
    int32_t *limits = c->kvseqs + c->p.max_seqs; /* the second half of kvseqs */
    for (int32_t i = 0; i < n; i++)
        limits[i] = n_ctx[i] - 1;
    copse_status st;
    st = catch_up(c, n, seqs, limits);
    if (st == COPSE_OK)
        st = copse__mdraft_run(c->md, n, seqs, c->kvseqs, ctx, n_ctx, budget, max_depth, trees, c->err,
                               sizeof c->err);
    /* keep the root row (position n_ctx - 1: the pending token) when it was
     * computed, drop the rest of the scratch */
    for (int32_t i = 0; i < n; i++) {
        dm_seq *s = &c->seqs[seqs[i]];
        if (st == COPSE_OK && s->cached == n_ctx[i] - 1 && copse__mdraft_rows_written(c->md, i) > 0) {
            copse__kvcache_commit(kv, s->kvseq, 1);
            s->cached++;
        }
        copse__kvcache_truncate(kv, s->kvseq, (uint32_t)s->cached);
    }
    return st;
}

static copse_status dm_propose(copse_drafter *d, int32_t seq, const copse_token *ctx, int32_t n_ctx, int32_t budget,
                               int32_t max_depth, copse_tree *tree)
{
    return dm_propose_batch(d, 1, &seq, &ctx, &n_ctx, &budget, &max_depth, &tree);
}

/* ---------------------------------------------------------------- create */

static int print_len(copse_str s)
{
    return (int)(s.len > 48 ? 48 : s.len);
}

/* The draft's vocabulary must be the target's, token for token. */
static copse_status check_vocab(const char *file, const copse_gguf *draft, const copse_gguf *target, char *err,
                                size_t err_size)
{
    const copse_gguf_array *a = NULL, *b = NULL;
    if (copse__gguf_get_arr(draft, "tokenizer.ggml.tokens", COPSE_GGUF_STRING, &a) != COPSE_OK)
        return copse__errorf(err, err_size, COPSE_EFORMAT,
                             "draft model '%s' has no vocabulary (metadata 'tokenizer.ggml.tokens')", file);
    if (copse__gguf_get_arr(target, "tokenizer.ggml.tokens", COPSE_GGUF_STRING, &b) != COPSE_OK)
        return copse__errorf(err, err_size, COPSE_EFORMAT,
                             "the target model has no vocabulary (metadata 'tokenizer.ggml.tokens')");
    if (a->n != b->n)
        return copse__errorf(err, err_size, COPSE_EINVAL,
                             "draft model '%s' has a vocabulary of %llu tokens, the target %llu: vocabularies must match",
                             file, (unsigned long long)a->n, (unsigned long long)b->n);
    for (uint64_t i = 0; i < a->n; i++) {
        const copse_str x = a->strs[i], y = b->strs[i];
        if (x.len != y.len || memcmp(x.ptr, y.ptr, (size_t)x.len) != 0)
            return copse__errorf(err, err_size, COPSE_EINVAL,
                                 "draft model '%s': vocabulary differs from the target's at token %llu: '%.*s' (draft) "
                                 "vs '%.*s' (target)",
                                 file, (unsigned long long)i, print_len(x), x.ptr, print_len(y), y.ptr);
    }
    return COPSE_OK;
}

copse_status copse__draft_model_create(const copse_drafter_params *p, const char *file, copse_drafter **out,
                                       char *err, size_t err_size)
{
    *out = NULL;
    if (!p->target_gguf)
        return copse__errorf(err, err_size, COPSE_EINVAL,
                             "model:%s needs the target model for the vocabulary check (drafter params: target_gguf)",
                             file);
    dm_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return copse__errorf(err, err_size, COPSE_ENOMEM, "draft model: out of memory");
    c->p = *p;
    char sub[256];
    copse_status st = copse__gguf_open(file, &c->g, sub, sizeof sub);
    if (st != COPSE_OK) {
        st = copse__errorf(err, err_size, st, "draft model '%s': %s", file, sub);
        goto fail;
    }
    if ((st = check_vocab(file, c->g, p->target_gguf, err, err_size)) != COPSE_OK)
        goto fail;
    copse_hparams hp;
    if ((st = copse__hparams_load(c->g, &hp, sub, sizeof sub)) != COPSE_OK) {
        st = copse__errorf(err, err_size, st, "draft model '%s': %s", file, sub);
        goto fail;
    }
    if ((int64_t)hp.n_vocab != p->n_vocab) {
        st = copse__errorf(err, err_size, COPSE_EINVAL, "draft model '%s': output head of %u rows, the target's %d",
                           file, hp.n_vocab, p->n_vocab);
        goto fail;
    }
    copse_backend_dev *dev = p->dev;
    if (!dev && p->target)
        dev = copse__forward_dev(p->target);
    if (!dev) {
        copse_backend_reg *cpu = copse__backend_find("cpu");
        dev = cpu ? cpu->iface.dev_get(cpu, 0) : NULL;
    }
    if (!dev) {
        st = copse__errorf(err, err_size, COPSE_EUNSUPPORTED, "draft model '%s': no device", file);
        goto fail;
    }
    copse_forward_params fp = copse__forward_default_params();
    fp.n_threads = p->n_threads;
    fp.max_seqs = (uint32_t)p->max_seqs;
    fp.max_tokens = p->draft_max_tokens;
    fp.max_ctx = p->draft_max_ctx ? p->draft_max_ctx : p->target ? copse__forward_params(p->target)->max_ctx : 4096;
    fp.kv_mem = p->draft_kv_mem;
    if ((st = copse__forward_create(c->g, dev, &fp, &c->f, sub, sizeof sub)) != COPSE_OK) {
        st = copse__errorf(err, err_size, st, "draft model '%s': %s", file, sub);
        goto fail;
    }
    c->max_tokens = (int32_t)p->draft_max_tokens;
    c->seqs = calloc((size_t)p->max_seqs, sizeof *c->seqs);
    c->kvseqs = calloc(2 * (size_t)p->max_seqs, sizeof *c->kvseqs);
    c->tokens = calloc((size_t)c->max_tokens, sizeof *c->tokens);
    c->b_seq = calloc((size_t)p->max_seqs, sizeof *c->b_seq);
    c->b_first = calloc((size_t)p->max_seqs, sizeof *c->b_first);
    c->b_new = calloc((size_t)p->max_seqs, sizeof *c->b_new);
    c->b_ent = calloc((size_t)p->max_seqs, sizeof *c->b_ent);
    if (!c->seqs || !c->kvseqs || !c->tokens || !c->b_seq || !c->b_first || !c->b_new || !c->b_ent) {
        st = copse__errorf(err, err_size, COPSE_ENOMEM, "draft model: out of memory");
        goto fail;
    }
    if (p->draft_vocab > 0 && p->draft_vocab < p->n_vocab) {
        int32_t *ids = malloc(sizeof *ids * (size_t)p->draft_vocab);
        if (!ids) {
            st = copse__errorf(err, err_size, COPSE_ENOMEM, "draft model: out of memory");
            goto fail;
        }
        st = copse__draft_vocab_ids(c->g, p->n_vocab, p->draft_vocab, ids);
        if (st == COPSE_OK)
            st = copse__forward_head_create(c->f, c->g, ids, p->draft_vocab, &c->head, err, err_size);
        else
            copse__errorf(err, err_size, st, "draft model: cannot rank the vocabulary");
        free(ids);
        if (st != COPSE_OK)
            goto fail;
    }
    if ((st = copse__mdraft_create(p, c->f, 0, c->head, &c->md, err, err_size)) != COPSE_OK)
        goto fail;
    const int32_t n_out = c->head ? c->head->n : p->n_vocab;
    c->base = (copse_drafter){
        .iface =
            {
                .destroy = dm_destroy,
                .seq_begin = dm_seq_begin,
                .propose = dm_propose,
                .observe = dm_observe,
                .seq_end = dm_seq_end,
                .seq_sampling = dm_seq_sampling,
                .propose_batch = dm_propose_batch,
            },
        .name = "model",
        .has_q = true,
        .ctx = c,
        .q_per_node = p->draft_q_top < n_out ? p->draft_q_top : n_out,
    };
    *out = &c->base;
    return COPSE_OK;
fail:
    c->base.ctx = c;
    dm_destroy(&c->base);
    return st;
}
