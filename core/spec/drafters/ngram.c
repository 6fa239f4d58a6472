/*
 * ngram.c — the n-gram (prompt lookup) drafter. Its index and candidate trie
 * (shared with the suffix drafter) are in ngram-index.c.
 *
 * The ngram drafter
 *   For a sequence whose history ends in ... x1 x2 x3, it looks for earlier
 *   occurrences of the last n tokens (n from ngram_max_n down to
 *   ngram_min_n; the first n with any occurrence wins, so longer matches are
 *   preferred), takes up to max_branch of them, newest first, and adds the
 *   tokens that followed each occurrence (up to max_depth of them) as one
 *   path of weight 1 to a candidate trie. A continuation that runs into the
 *   history's end goes on periodically (an overlapping copy: "a b a b a"
 *   continues "b a b ..."). Equal continuations merge and add
 *   up, so distinct continuations become siblings ranked by how often they
 *   were seen, and each continues as a chain. The heaviest `budget` nodes
 *   become the tree. Proposals are deterministic (one-hot q); the weights
 *   only rank nodes.
 *
 * Costs: appending a token is O(max_n) (one backward hash pass gives every
 * level); a proposal walks at most 4 * max_branch chain links per level
 * and touches at most max_branch * max_depth candidate nodes. Memory per
 * sequence: about 4 + 16 * max_n bytes per token of max_len (the head
 * tables are a power of two >= 2 * max_len). Nothing allocates after
 * seq_begin.
 *
 * Threading: see drafter.h — one caller at a time per drafter.
 */
#include "spec/drafters/drafters-impl.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

/* ---------------------------------------------------------------- the ngram drafter */

typedef struct ngram_seq {
    bool live;
    copse__ngram_index ix;
} ngram_seq;

typedef struct ngram_ctx {
    copse_drafter base; /* base.ctx == this */
    copse_drafter_params p;
    ngram_seq *seqs;    /* [p.max_seqs] */
    copse__drafter_cands cands;
} ngram_ctx;

static void ngram_seq_end(copse_drafter *d, int32_t seq)
{
    ngram_ctx *g = d->ctx;
    assert(seq >= 0 && seq < g->p.max_seqs && g->seqs[seq].live);
    copse__ngram_index_free(&g->seqs[seq].ix);
    g->seqs[seq].live = false;
}

static void ngram_destroy(copse_drafter *d)
{
    ngram_ctx *g = d->ctx;
    if (g->seqs)
        for (int32_t s = 0; s < g->p.max_seqs; s++)
            if (g->seqs[s].live)
                ngram_seq_end(d, s);
    free(g->seqs);
    copse__drafter_cands_free(&g->cands);
    free(g);
}

static copse_status ngram_seq_begin(copse_drafter *d, int32_t seq, const int32_t *prompt, int32_t n_prompt,
                                    int32_t max_len)
{
    ngram_ctx *g = d->ctx;
    assert(seq >= 0 && seq < g->p.max_seqs && !g->seqs[seq].live);
    ngram_seq *s = &g->seqs[seq];
    copse_status st = copse__ngram_index_begin(&s->ix, &g->p, prompt, n_prompt, max_len);
    if (st != COPSE_OK)
        return st;
    s->live = true;
    return COPSE_OK;
}

static copse_status ngram_observe(copse_drafter *d, int32_t seq, const int32_t *toks, int32_t n)
{
    ngram_ctx *g = d->ctx;
    assert(seq >= 0 && seq < g->p.max_seqs && g->seqs[seq].live);
    return copse__ngram_index_observe(&g->seqs[seq].ix, &g->p, toks, n);
}

static copse_status ngram_propose(copse_drafter *d, int32_t seq, const int32_t *ctx, int32_t n_ctx,
                                  int32_t budget, int32_t max_depth, copse_tree *tree)
{
    ngram_ctx *g = d->ctx;
    assert(seq >= 0 && seq < g->p.max_seqs && g->seqs[seq].live);
    copse__ngram_index *ix = &g->seqs[seq].ix;
    copse_status st = copse__ngram_index_catch_up(ix, &g->p, ctx, n_ctx);
    if (st != COPSE_OK)
        return st;
    copse__drafter_clamp(&g->p, tree, &budget, &max_depth);
    copse__drafter_cands_reset(&g->cands, ctx[n_ctx - 1]);
    if (budget > 0 && max_depth > 0)
        copse__ngram_index_propose(ix, g->p.ngram_min_n, g->p.ngram_max_n, g->p.max_branch, max_depth, 1.0f,
                                   &g->cands);
    return copse__drafter_cands_emit(&g->cands, budget, max_depth, g->p.max_branch, g->p.bit, tree);
}

copse_status copse__ngram_create(const copse_drafter_params *p, copse_drafter **out, char *err, size_t err_size)
{
    *out = NULL;
    ngram_ctx *g = calloc(1, sizeof *g);
    if (!g)
        goto fail;
    g->p = *p;
    g->seqs = calloc((size_t)p->max_seqs, sizeof *g->seqs);
    if (!g->seqs)
        goto fail;
    if (copse__drafter_cands_init(&g->cands, p->max_branch * p->max_depth + 1, p->max_nodes) != COPSE_OK)
        goto fail;
    g->base = (copse_drafter){
        .iface =
            {
                .destroy = ngram_destroy,
                .seq_begin = ngram_seq_begin,
                .propose = ngram_propose,
                .observe = ngram_observe,
                .seq_end = ngram_seq_end,
            },
        .name = "ngram",
        .has_q = false,
        .ctx = g,
    };
    *out = &g->base;
    return COPSE_OK;
fail:
    if (g) {
        free(g->seqs);
        copse__drafter_cands_free(&g->cands);
        free(g);
    }
    return copse__errorf(err, err_size, COPSE_ENOMEM, "ngram drafter: out of memory");
}
