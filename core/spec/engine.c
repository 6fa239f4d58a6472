/*
 * engine.c — speculative decoding of one sequence (see engine.h).
 */
#include "spec/engine.h"

#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "spec/tree.h"

struct copse_spec_engine {
    copse_forward *f;
    int32_t seq;
    copse_spec_params p;
    int32_t n_vocab;
    int32_t budget;   /* clamped to the batch and the tree */
    int32_t max_rows; /* budget + 1 */

    copse_drafter *drafter;
    int drafter_live;
    copse_tree *tree;
    copse_verify *verify;

    copse_token *history; /* committed tokens, then pending, then verify's path scratch [hist_cap] */
    size_t hist_cap;
    uint32_t n_committed;
    int has_pending;

    /* batch arrays [max_rows] */
    copse_token *tokens;
    int32_t *depth;
    uint64_t *mask; /* max_rows * words */
    int32_t *logit_rows;
    float *logits; /* [max_rows][n_vocab] */
    uint32_t *rows;
    copse_kv_move *moves;

    copse_verify_result res;
    copse_spec_stats stats;
};

copse_spec_params copse__spec_default_params(void)
{
    copse_spec_params p;
    memset(&p, 0, sizeof p);
    p.sampling = copse__sampling_default_params();
    p.budget = 16;
    p.max_depth = 8;
    p.max_len = 4096;
    return p;
}

void copse__spec_destroy(copse_spec_engine *e)
{
    if (!e)
        return;
    if (e->drafter && e->drafter_live)
        e->drafter->iface.seq_end(e->drafter, e->seq);
    copse__drafter_destroy(e->drafter);
    copse__tree_destroy(e->tree);
    copse__verify_destroy(e->verify);
    free(e->history);
    free(e->tokens);
    free(e->depth);
    free(e->mask);
    free(e->logit_rows);
    free(e->logits);
    free(e->rows);
    free(e->moves);
    free(e);
}

copse_status copse__spec_create(copse_forward *f, int32_t seq, const char *draft_spec,
                                const copse_spec_params *p, copse_spec_engine **out, char *err,
                                size_t err_size)
{
    *out = NULL;
    if (!f || !draft_spec || !p || p->max_len < 2)
        return copse__errorf(err, err_size, COPSE_EINVAL, "speculative engine: bad arguments");
    copse_spec_engine *e = calloc(1, sizeof *e);
    if (!e)
        return copse__errorf(err, err_size, COPSE_ENOMEM, "out of memory");
    e->f = f;
    e->seq = seq;
    e->p = *p;
    const copse_hparams *hp = copse__forward_hparams(f);
    e->n_vocab = (int32_t)hp->n_vocab;
    int32_t max_depth = p->max_depth < 1 ? 1 : p->max_depth;
    if (max_depth > COPSE_TREE_MAX_DEPTH)
        max_depth = COPSE_TREE_MAX_DEPTH;
    e->p.max_depth = max_depth;
    int32_t budget = p->budget < 1 ? 1 : p->budget;
    if (budget > COPSE_TREE_MAX_NODES)
        budget = COPSE_TREE_MAX_NODES;
    e->budget = budget;
    e->max_rows = budget + 1;

    copse_drafter_params dp = copse__drafter_default_params();
    dp.n_vocab = e->n_vocab;
    dp.max_seqs = (int32_t)copse__forward_params(f)->max_seqs;
    dp.max_nodes = budget;
    dp.max_depth = max_depth;
    dp.target = f;
    dp.target_gguf = p->target_gguf;
    dp.n_threads = p->n_threads;
    dp.draft_vocab = p->draft_vocab;
    if (seq < 0 || seq >= dp.max_seqs) {
        copse__spec_destroy(e);
        return copse__errorf(err, err_size, COPSE_EINVAL, "speculative engine: KV sequence %d out of range", seq);
    }
    copse_status st = copse__drafter_create(draft_spec, &dp, &e->drafter, err, err_size);
    if (st != COPSE_OK) {
        copse__spec_destroy(e);
        return st;
    }
    const int64_t q_cap = (int64_t)budget * e->drafter->q_per_node;
    if ((st = copse__tree_create(budget, dp.max_branch > 0 ? dp.max_branch : 1,
                                 (int32_t)(q_cap > (1 << 24) ? (1 << 24) : q_cap), &e->tree)) != COPSE_OK) {
        copse__spec_destroy(e);
        return copse__errorf(err, err_size, st, "speculative engine: cannot create the tree");
    }
    if ((st = copse__verify_create(e->n_vocab, budget, &e->verify, err, err_size)) != COPSE_OK) {
        copse__spec_destroy(e);
        return st;
    }
    const size_t rows = (size_t)e->max_rows;
    const size_t words = (size_t)copse__tree_mask_words(e->max_rows);
    e->hist_cap = (size_t)p->max_len + COPSE_TREE_MAX_DEPTH + 2;
    e->history = calloc(e->hist_cap, sizeof *e->history);
    e->tokens = calloc(rows, sizeof *e->tokens);
    e->depth = calloc(rows, sizeof *e->depth);
    e->mask = calloc(rows * words, sizeof *e->mask);
    e->logit_rows = calloc(rows, sizeof *e->logit_rows);
    e->logits = malloc(rows * (size_t)e->n_vocab * sizeof *e->logits);
    e->rows = calloc(rows, sizeof *e->rows);
    e->moves = calloc(rows, sizeof *e->moves);
    if (!e->history || !e->tokens || !e->depth || !e->mask || !e->logit_rows || !e->logits || !e->rows ||
        !e->moves) {
        copse__spec_destroy(e);
        return copse__errorf(err, err_size, COPSE_ENOMEM, "out of memory");
    }
    for (int32_t i = 0; i < e->max_rows; i++)
        e->logit_rows[i] = i;
    *out = e;
    return COPSE_OK;
}

copse_status copse__spec_begin(copse_spec_engine *e, const copse_token *committed, uint32_t n,
                               copse_token pending, char *err, size_t err_size)
{
    if ((size_t)n + 1 > e->p.max_len)
        return copse__errorf(err, err_size, COPSE_ERANGE, "speculative engine: %u tokens exceed max_len %u",
                             n + 1, e->p.max_len);
    if (e->drafter_live) {
        e->drafter->iface.seq_end(e->drafter, e->seq);
        e->drafter_live = 0;
    }
    copse_status st = e->drafter->iface.seq_begin(e->drafter, e->seq, committed, (int32_t)n, (int32_t)e->p.max_len);
    if (st != COPSE_OK)
        return copse__errorf(err, err_size, st, "drafter %s: cannot begin the sequence: %s", e->drafter->name,
                             copse_strerror(st));
    e->drafter_live = 1;
    if (e->drafter->iface.seq_sampling &&
        (st = e->drafter->iface.seq_sampling(e->drafter, e->seq, &e->p.sampling)) != COPSE_OK)
        return copse__errorf(err, err_size, st, "drafter %s: bad sampling parameters", e->drafter->name);
    if (n)
        memcpy(e->history, committed, sizeof *committed * n);
    e->n_committed = n;
    e->history[n] = pending;
    e->has_pending = 1;
    return COPSE_OK;
}

copse_status copse__spec_step(copse_spec_engine *e, copse_verify_stop_cb stop_cb, void *stop_ud,
                              int32_t max_tokens, const copse_token **tokens, int32_t *n_tokens,
                              copse_verify_stop *stop, char *err, size_t err_size)
{
    *n_tokens = 0;
    *tokens = NULL;
    *stop = COPSE_VERIFY_CONTINUE;
    if (!e->has_pending)
        return copse__errorf(err, err_size, COPSE_EINVAL, "speculative engine: no pending token");
    copse_kvcache *kv = copse__forward_kv(e->f);
    const uint32_t n_ctx = e->n_committed + 1; /* committed + pending */

    /* room: the sequence may not pass max_len (kept one short for the next token) */
    int32_t budget = e->budget;
    int32_t room = (int32_t)e->p.max_len - (int32_t)n_ctx - 1;
    if (budget > room)
        budget = room < 0 ? 0 : room;
    int32_t max_depth = e->p.max_depth;
    if (max_depth > max_tokens)
        max_depth = max_tokens; /* deeper nodes could never be emitted */

    copse_status st = e->drafter->iface.propose(e->drafter, e->seq, e->history, (int32_t)n_ctx, budget, max_depth,
                                                 e->tree);
    if (st != COPSE_OK) {
        copse__kvcache_truncate(kv, e->seq, e->n_committed); /* a model drafter may have left scratch */
        return copse__errorf(err, err_size, st, "drafter %s: propose failed: %s", e->drafter->name,
                             copse_strerror(st));
    }
    const int32_t n_rows = copse__tree_flat_rows(e->tree);
    const int32_t n_nodes = n_rows - 1;
    copse__tree_flatten(e->tree, e->tokens, e->depth, e->mask, NULL);

    const uint64_t *masks[1] = {e->mask};
    int32_t first = 0, n_new = n_rows;
    copse_fwd_batch b = {.n_tokens = n_rows,
                         .tokens = e->tokens,
                         .depth = e->depth,
                         .n_seqs = 1,
                         .seq = &e->seq,
                         .first = &first,
                         .n_new = &n_new,
                         .mask = masks,
                         .n_logits = n_rows,
                         .logit_rows = e->logit_rows};
    if ((st = copse__forward_run(e->f, &b, e->logits, err, err_size)) != COPSE_OK)
        return st;

    copse_verify_params vp = copse__verify_default_params();
    vp.sampling = e->p.sampling;
    vp.sequence = 0;
    vp.step = n_ctx;
    vp.history = e->history;
    vp.n_history = n_ctx;
    vp.history_cap = e->hist_cap;
    vp.stop_cb = stop_cb;
    vp.stop_ud = stop_ud;
    vp.max_tokens = max_tokens < 1 ? 1 : max_tokens;
    st = copse__verify_run(e->verify, e->tree, e->logits, (size_t)e->n_vocab, &vp, &e->res, err, err_size);
    if (st != COPSE_OK) {
        copse__kvcache_truncate(kv, e->seq, e->n_committed);
        return st;
    }
    const copse_verify_result *r = &e->res;

    /* KV: the pending row and the accepted rows, except the last emitted
     * token when it is an accepted node (a cut inside the path): it stays
     * pending, out of the cache. */
    int32_t n_rows_commit = copse__verify_commit_rows(r, e->rows);
    if (!r->has_next)
        n_rows_commit--;
    uint32_t n_moves = 0;
    st = copse__kvcache_commit_path(kv, e->seq, (uint32_t)n_rows, e->rows, (uint32_t)n_rows_commit, e->moves,
                                    &n_moves);
    if (st != COPSE_OK) {
        copse__kvcache_truncate(kv, e->seq, e->n_committed);
        return copse__errorf(err, err_size, st, "speculative engine: commit failed");
    }
    if ((st = copse__forward_kv_moves(e->f, e->moves, (int32_t)n_moves)) != COPSE_OK)
        return copse__errorf(err, err_size, st, "speculative engine: KV moves failed: %s", copse_strerror(st));
    const uint32_t new_len = e->n_committed + (uint32_t)n_rows_commit;
    copse__kvcache_truncate(kv, e->seq, new_len); /* gives the scratch back */

    /* history: committed (pending included) then the emitted tokens; the last
     * emitted token is the new pending one */
    memcpy(e->history + n_ctx, r->tokens, sizeof *r->tokens * (size_t)r->n_tokens);
    e->n_committed = new_len;
    e->has_pending = r->n_tokens > 0;

    if ((st = e->drafter->iface.observe(e->drafter, e->seq, r->tokens, r->n_tokens)) != COPSE_OK)
        return copse__errorf(err, err_size, st, "drafter %s: observe failed: %s", e->drafter->name,
                             copse_strerror(st));

    e->stats.steps++;
    e->stats.proposed += (uint64_t)n_nodes;
    e->stats.accepted += (uint64_t)r->n_accepted;
    e->stats.emitted += (uint64_t)r->n_tokens;
    *tokens = r->tokens;
    *n_tokens = r->n_tokens;
    *stop = r->stop;
    return COPSE_OK;
}

const copse_token *copse__spec_committed(const copse_spec_engine *e, uint32_t *n)
{
    *n = e->n_committed;
    return e->history;
}

copse_token copse__spec_pending(const copse_spec_engine *e)
{
    return e->history[e->n_committed];
}

copse_spec_stats copse__spec_stats(const copse_spec_engine *e)
{
    return e->stats;
}

const char *copse__spec_drafter_name(const copse_spec_engine *e)
{
    return e->drafter->name;
}

copse_drafter *copse__spec_drafter(const copse_spec_engine *e)
{
    return e->drafter;
}
