/*
 * layerskip.c — the layer-skip self-draft "layerskip:N": the target's first
 * N layers, its final norm and its output head (optionally reduced to the K
 * most frequent tokens) draft the tree. It has no KV cache of its own: its
 * KV entries for layers < N are the target's, so the committed prefix needs
 * no catch-up, and its draft rows go into the target's scratch (drafter.h,
 * "Model drafters"). Trees come from the shared builder (model-draft.c).
 *
 * History: it keeps only each sequence's length (its draft needs nothing
 * else); the committed tokens it relies on are the target's KV entries,
 * checked against the context's length at every propose.
 */
#include "spec/drafters/drafters-impl.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

typedef struct ls_seq {
    bool live;
    int32_t len;     /* history length seen (prompt + observed, or the last ctx) */
    int32_t max_len;
} ls_seq;

typedef struct ls_ctx {
    copse_drafter base;
    copse_drafter_params p;
    copse_forward *f;
    copse_fwd_head *head; /* reduced head or NULL */
    copse__mdraft *md;
    ls_seq *seqs;         /* [max_seqs] */
    char err[256];        /* the last propose error, for debugging */
} ls_ctx;

static void ls_destroy(copse_drafter *d)
{
    ls_ctx *c = d->ctx;
    copse__mdraft_destroy(c->md);
    copse__forward_head_destroy(c->head);
    free(c->seqs);
    free(c);
}

static copse_status ls_seq_begin(copse_drafter *d, int32_t seq, const copse_token *prompt, int32_t n_prompt,
                                 int32_t max_len)
{
    ls_ctx *c = d->ctx;
    assert(seq >= 0 && seq < c->p.max_seqs && !c->seqs[seq].live);
    if (max_len < 1 || max_len > (1 << 28) || n_prompt < 0 || n_prompt > max_len ||
        !copse__drafter_tokens_ok(&c->p, prompt, n_prompt))
        return COPSE_EINVAL;
    c->seqs[seq] = (ls_seq){.live = true, .len = n_prompt, .max_len = max_len};
    copse__mdraft_seq_reset(c->md, seq);
    return COPSE_OK;
}

static void ls_seq_end(copse_drafter *d, int32_t seq)
{
    ls_ctx *c = d->ctx;
    assert(seq >= 0 && seq < c->p.max_seqs && c->seqs[seq].live);
    c->seqs[seq].live = false;
}

static copse_status ls_observe(copse_drafter *d, int32_t seq, const copse_token *toks, int32_t n)
{
    ls_ctx *c = d->ctx;
    assert(seq >= 0 && seq < c->p.max_seqs && c->seqs[seq].live);
    ls_seq *s = &c->seqs[seq];
    if (n < 0 || !copse__drafter_tokens_ok(&c->p, toks, n))
        return COPSE_EINVAL;
    if ((int64_t)s->len + n > s->max_len)
        return COPSE_ERANGE;
    s->len += n;
    return COPSE_OK;
}

static copse_status ls_seq_sampling(copse_drafter *d, int32_t seq, const copse_sampling_params *sp)
{
    ls_ctx *c = d->ctx;
    assert(seq >= 0 && seq < c->p.max_seqs && c->seqs[seq].live);
    return copse__mdraft_seq_sampling(c->md, seq, sp);
}

static copse_status ls_propose_batch(copse_drafter *d, int32_t n, const int32_t *seqs, const copse_token *const *ctx,
                                     const int32_t *n_ctx, const int32_t *budget, const int32_t *max_depth,
                                     copse_tree *const *trees)
{
    ls_ctx *c = d->ctx;
    copse_kvcache *kv = copse__forward_kv(c->f);
    assert(n >= 0 && n <= c->p.max_seqs);
    for (int32_t i = 0; i < n; i++) {
        const int32_t seq = seqs[i];
        assert(seq >= 0 && seq < c->p.max_seqs && c->seqs[seq].live);
        const ls_seq *s = &c->seqs[seq];
        if (n_ctx[i] < 1 || n_ctx[i] < s->len ||
            !copse__drafter_tokens_ok(&c->p, ctx[i] + s->len - (s->len > 0), n_ctx[i] - s->len + (s->len > 0)))
            return copse__errorf(c->err, sizeof c->err, COPSE_EINVAL,
                                 "layerskip: sequence %d: context of %d tokens after a history of %d, or a bad token",
                                 seq, n_ctx[i], s->len);
        if (n_ctx[i] > s->max_len)
            return copse__errorf(c->err, sizeof c->err, COPSE_ERANGE,
                                 "layerskip: sequence %d: context of %d tokens passes max_len %d", seq, n_ctx[i],
                                 s->max_len);
        if (!copse__kvcache_seq_live(kv, seq) || copse__kvcache_seq_len(kv, seq) != (uint32_t)(n_ctx[i] - 1))
            return copse__errorf(c->err, sizeof c->err, COPSE_EINVAL,
                                 "layerskip: the target's KV sequence %d does not hold the %d committed tokens", seq,
                                 n_ctx[i] - 1);
        for (int32_t k = 0; k < i; k++)
            if (seqs[k] == seq)
                return copse__errorf(c->err, sizeof c->err, COPSE_EINVAL, "layerskip: sequence %d twice", seq);
    }
    for (int32_t i = 0; i < n; i++)
        c->seqs[seqs[i]].len = n_ctx[i];
    return copse__mdraft_run(c->md, n, seqs, seqs, ctx, n_ctx, budget, max_depth, trees, c->err, sizeof c->err);
}

static copse_status ls_propose(copse_drafter *d, int32_t seq, const copse_token *ctx, int32_t n_ctx, int32_t budget,
                               int32_t max_depth, copse_tree *tree)
{
    return ls_propose_batch(d, 1, &seq, &ctx, &n_ctx, &budget, &max_depth, &tree);
}

copse_status copse__layerskip_create(const copse_drafter_params *p, int32_t n_layers, copse_drafter **out,
                                     char *err, size_t err_size)
{
    *out = NULL;
    if (!p->target)
        return copse__errorf(err, err_size, COPSE_EINVAL,
                             "layerskip:%d needs the target model's forward state (drafter params: target)", n_layers);
    const copse_hparams *hp = copse__forward_hparams(p->target);
    if (n_layers < 1 || (uint32_t)n_layers >= hp->n_layer)
        return copse__errorf(err, err_size, COPSE_EINVAL,
                             "layerskip:%d: the target has %u layers; N must be 1..%u", n_layers, hp->n_layer,
                             hp->n_layer - 1);
    if ((uint32_t)p->n_vocab != hp->n_vocab)
        return copse__errorf(err, err_size, COPSE_EINVAL, "layerskip:%d: drafter n_vocab %d, the target's %u",
                             n_layers, p->n_vocab, hp->n_vocab);
    const uint32_t fseqs = copse__forward_params(p->target)->max_seqs;
    if ((uint32_t)p->max_seqs < fseqs)
        return copse__errorf(err, err_size, COPSE_EINVAL,
                             "layerskip:%d: max_seqs %d below the target's %u KV sequences", n_layers, p->max_seqs,
                             fseqs);
    if (p->draft_vocab > 0 && p->draft_vocab < p->n_vocab && !p->target_gguf)
        return copse__errorf(err, err_size, COPSE_EINVAL,
                             "layerskip:%d: a reduced vocabulary needs the target model (drafter params: target_gguf)",
                             n_layers);
    ls_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return copse__errorf(err, err_size, COPSE_ENOMEM, "layerskip: out of memory");
    c->p = *p;
    c->f = p->target;
    copse_status st = COPSE_OK;
    c->seqs = calloc((size_t)p->max_seqs, sizeof *c->seqs);
    if (!c->seqs) {
        st = copse__errorf(err, err_size, COPSE_ENOMEM, "layerskip: out of memory");
        goto fail;
    }
    if (p->draft_vocab > 0 && p->draft_vocab < p->n_vocab) {
        int32_t *ids = malloc(sizeof *ids * (size_t)p->draft_vocab);
        if (!ids) {
            st = copse__errorf(err, err_size, COPSE_ENOMEM, "layerskip: out of memory");
            goto fail;
        }
        st = copse__draft_vocab_ids(p->target_gguf, p->n_vocab, p->draft_vocab, ids);
        if (st == COPSE_OK)
            st = copse__forward_head_create(c->f, p->target_gguf, ids, p->draft_vocab, &c->head, err, err_size);
        else
            copse__errorf(err, err_size, st, "layerskip: cannot rank the vocabulary");
        free(ids);
        if (st != COPSE_OK)
            goto fail;
    }
    if ((st = copse__mdraft_create(p, c->f, (uint32_t)n_layers, c->head, &c->md, err, err_size)) != COPSE_OK)
        goto fail;
    c->base = (copse_drafter){
        .iface =
            {
                .destroy = ls_destroy,
                .seq_begin = ls_seq_begin,
                .propose = ls_propose,
                .observe = ls_observe,
                .seq_end = ls_seq_end,
                .seq_sampling = ls_seq_sampling,
                .propose_batch = ls_propose_batch,
            },
        .name = "layerskip",
        .has_q = true,
        .ctx = c,
        .q_per_node = p->draft_q_top < (c->head ? c->head->n : p->n_vocab) ? p->draft_q_top
                                                                            : (c->head ? c->head->n : p->n_vocab),
    };
    *out = &c->base;
    return COPSE_OK;
fail:
    copse__mdraft_destroy(c->md);
    copse__forward_head_destroy(c->head);
    free(c->seqs);
    free(c);
    return st;
}
