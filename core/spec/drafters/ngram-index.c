/*
 * ngram-index.c — what the model-free drafters share: the per-sequence
 * n-gram index (hash chains of the last positions of every n-gram, appended
 * in O(max_n) per token) and the candidate trie that merges and weighs
 * continuations before they become a token tree. See drafters-impl.h.
 */
#include "spec/drafters/drafters-impl.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

/* ---------------------------------------------------------------- n-gram index */

/* Hash of the n-gram ending at tokens[i], folded from the last token back;
 * level n's hash extends level n-1's, so one backward pass gives all levels. */
static uint64_t ngram_mix(uint64_t h, int32_t tok)
{
    h ^= (uint64_t)(uint32_t)tok + 0x9e3779b97f4a7c15ull;
    h *= 0xff51afd7ed558ccdull;
    return h ^ (h >> 29);
}

static uint32_t ngram_slot(const copse__ngram_index *ix, uint64_t h)
{
    return (uint32_t)(h ^ (h >> 32)) & ix->mask;
}

copse_status copse__ngram_index_init(copse__ngram_index *ix, int32_t cap, int32_t max_n)
{
    memset(ix, 0, sizeof *ix);
    assert(max_n >= 1 && max_n <= COPSE__NGRAM_MAX_N);
    if (cap < 1 || cap > COPSE__NGRAM_MAX_CAP)
        return COPSE_EINVAL;
    uint32_t size = 64;
    while (size < 2u * (uint32_t)cap)
        size <<= 1;
    size_t words = (size_t)cap + (size_t)max_n * ((size_t)size + (size_t)cap);
    int32_t *block = malloc(words * sizeof *block);
    if (!block)
        return COPSE_ENOMEM;
    ix->block = block;
    ix->tokens = block;
    ix->cap = cap;
    ix->max_n = max_n;
    ix->mask = size - 1;
    int32_t *p = block + cap;
    for (int32_t n = 1; n <= max_n; n++) {
        ix->head[n] = p;
        p += size;
        ix->prev[n] = p;
        p += cap;
        memset(ix->head[n], 0xff, (size_t)size * sizeof(int32_t)); /* -1 */
    }
    return COPSE_OK;
}

void copse__ngram_index_free(copse__ngram_index *ix)
{
    free(ix->block);
    memset(ix, 0, sizeof *ix);
}

copse_status copse__ngram_index_append(copse__ngram_index *ix, const int32_t *toks, int32_t n)
{
    if (n < 0 || n > ix->cap - ix->len)
        return COPSE_ERANGE;
    for (int32_t k = 0; k < n; k++) {
        int32_t i = ix->len++;
        ix->tokens[i] = toks[k];
        uint64_t h = 0;
        for (int32_t m = 1; m <= ix->max_n && m <= i + 1; m++) {
            h = ngram_mix(h, ix->tokens[i - m + 1]);
            uint32_t s = ngram_slot(ix, h);
            ix->prev[m][i] = ix->head[m][s];
            ix->head[m][s] = i;
        }
    }
    return COPSE_OK;
}

copse_status copse__ngram_index_sync(copse__ngram_index *ix, const int32_t *ctx, int32_t n_ctx)
{
    if (n_ctx < ix->len)
        return COPSE_EINVAL;
    if (ix->len > 0 && ctx[ix->len - 1] != ix->tokens[ix->len - 1])
        return COPSE_EINVAL;
    return copse__ngram_index_append(ix, ctx + ix->len, n_ctx - ix->len);
}

int32_t copse__ngram_index_find(const copse__ngram_index *ix, int32_t n, int32_t *out, int32_t max_out,
                                int32_t max_steps)
{
    assert(n >= 1 && n <= ix->max_n);
    int32_t len = ix->len;
    if (len < n + 1) /* the tail plus at least one earlier token */
        return 0;
    const int32_t *tail = ix->tokens + len - n;
    uint64_t h = 0;
    for (int32_t m = 1; m <= n; m++)
        h = ngram_mix(h, ix->tokens[len - m]);
    int32_t found = 0;
    int32_t p = ix->head[n][ngram_slot(ix, h)];
    for (int32_t steps = 0; p >= 0 && steps < max_steps && found < max_out; steps++) {
        /* p ends an n-gram (p >= n - 1) and is followed by a token (p + 1 < len). */
        if (p + 1 < len && p >= n - 1 && memcmp(ix->tokens + p - n + 1, tail, (size_t)n * sizeof *tail) == 0)
            out[found++] = p;
        p = ix->prev[n][p];
    }
    return found;
}

int32_t copse__ngram_index_propose(const copse__ngram_index *ix, int32_t min_n, int32_t max_n,
                                   int32_t max_occ, int32_t max_depth, float occ_weight,
                                   copse__drafter_cands *cands)
{
    enum { MAX_OCC = 256 };
    int32_t occ[MAX_OCC];
    int32_t path[COPSE_TREE_MAX_DEPTH];
    if (max_depth > COPSE_TREE_MAX_DEPTH)
        max_depth = COPSE_TREE_MAX_DEPTH;
    if (max_occ > MAX_OCC)
        max_occ = MAX_OCC;
    if (max_n > ix->max_n)
        max_n = ix->max_n;
    if (max_depth <= 0 || max_occ <= 0)
        return 0;
    for (int32_t n = max_n; n >= min_n && n >= 1; n--) {
        int32_t k = copse__ngram_index_find(ix, n, occ, max_occ, 4 * max_occ);
        if (k == 0)
            continue;
        for (int32_t j = 0; j < k; j++) {
            /* The continuation of the occurrence ending at occ[j]. Where it
             * runs into the tail itself, it goes on with period
             * d = (len - 1) - occ[j], copying the proposed tokens (an
             * overlapping copy, as in LZ77): "7 7 7 7" continues "7 7 ...". */
            int32_t d = ix->len - 1 - occ[j];
            for (int32_t i = 0; i < max_depth; i++) {
                int32_t src = occ[j] + 1 + i;
                path[i] = src < ix->len ? ix->tokens[src] : path[i - d];
            }
            copse__drafter_cands_add_path(cands, path, max_depth, occ_weight);
        }
        return n;
    }
    return 0;
}

/* ---------------------------------------------------------------- candidate trie */

copse_status copse__drafter_cands_init(copse__drafter_cands *c, int32_t cap, int32_t max_tree_nodes)
{
    memset(c, 0, sizeof *c);
    assert(cap >= 1 && max_tree_nodes >= 1);
    c->nodes = malloc((size_t)cap * sizeof *c->nodes);
    c->map = malloc((size_t)max_tree_nodes * sizeof *c->map);
    if (!c->nodes || !c->map) {
        copse__drafter_cands_free(c);
        return COPSE_ENOMEM;
    }
    c->cap = cap;
    c->map_cap = max_tree_nodes;
    copse__drafter_cands_reset(c, 0);
    return COPSE_OK;
}

void copse__drafter_cands_free(copse__drafter_cands *c)
{
    free(c->nodes);
    free(c->map);
    memset(c, 0, sizeof *c);
}

void copse__drafter_cands_reset(copse__drafter_cands *c, int32_t root_token)
{
    c->nodes[0] = (copse__drafter_cand){
        .token = root_token, .parent = -1, .first_child = -1, .next_sibling = -1, .depth = 0, .weight = 0.0f};
    c->n = 1;
}

int32_t copse__drafter_cands_add(copse__drafter_cands *c, int32_t parent, int32_t token, float weight)
{
    assert(parent >= 0 && parent < c->n);
    int32_t k = c->nodes[parent].first_child, last = -1;
    while (k >= 0 && c->nodes[k].token != token) {
        last = k;
        k = c->nodes[k].next_sibling;
    }
    if (k < 0) {
        if (c->n == c->cap)
            return -1;
        /* Appended at the end of the sibling list: children keep the order
         * in which they were first proposed (newest occurrence first), which
         * is the tie-break of the expansion. */
        k = c->n++;
        c->nodes[k] = (copse__drafter_cand){.token = token,
                                            .parent = parent,
                                            .first_child = -1,
                                            .next_sibling = -1,
                                            .depth = c->nodes[parent].depth + 1,
                                            .weight = 0.0f};
        if (last < 0)
            c->nodes[parent].first_child = k;
        else
            c->nodes[last].next_sibling = k;
    }
    c->nodes[k].weight += weight;
    return k;
}

void copse__drafter_cands_add_path(copse__drafter_cands *c, const int32_t *toks, int32_t n, float w)
{
    int32_t at = 0;
    c->nodes[0].weight += w;
    for (int32_t i = 0; i < n && at >= 0; i++)
        at = copse__drafter_cands_add(c, at, toks[i], w);
}

/* Expansion callback: the children of tree node `node` are the children of
 * its candidate, found through the map (filled lazily: a node's candidate
 * is its parent's candidate's child with the node's token). The heaviest
 * `cap` children are written, heaviest first (ties: list order). */
static copse_status cands_expand_cb(void *ud, const copse_tree *t, int32_t node, copse_token *ids, float *probs,
                                    int32_t cap, int32_t *n_out)
{
    copse__drafter_cands *c = ud;
    int32_t at = 0;
    *n_out = 0;
    if (node != COPSE_TREE_ROOT) {
        if (node >= c->map_cap)
            return COPSE_OK; /* cannot happen: budget <= map_cap */
        const copse_tree_node *tn = copse__tree_node(t, node);
        int32_t pc = tn->parent == COPSE_TREE_ROOT ? 0 : c->map[tn->parent];
        at = -1;
        for (int32_t k = pc >= 0 ? c->nodes[pc].first_child : -1; k >= 0; k = c->nodes[k].next_sibling)
            if (c->nodes[k].token == tn->token)
                at = k;
        c->map[node] = at;
        if (at < 0)
            return COPSE_OK;
    }
    float pw = c->nodes[at].weight;
    if (!(pw > 0.0f))
        return COPSE_OK;
    int32_t n = 0;
    for (int32_t k = c->nodes[at].first_child; k >= 0; k = c->nodes[k].next_sibling) {
        float w = c->nodes[k].weight;
        if (!(w > 0.0f))
            continue;
        float p = w / pw > 1.0f ? 1.0f : w / pw;
        if (n == cap && !(p > probs[cap - 1]))
            continue; /* not better than the worst kept (ties: the earlier stays) */
        int32_t j = n < cap ? n++ : cap - 1;
        while (j > 0 && probs[j - 1] < p) {
            ids[j] = ids[j - 1];
            probs[j] = probs[j - 1];
            j--;
        }
        ids[j] = c->nodes[k].token;
        probs[j] = p;
    }
    *n_out = n;
    return COPSE_OK;
}

copse_status copse__drafter_cands_emit(copse__drafter_cands *c, int32_t budget, int32_t max_depth,
                                       int32_t max_children, uint32_t drafter_bits, copse_tree *tree)
{
    assert(budget <= c->map_cap);
    if (budget <= 0 || max_depth <= 0 || c->nodes[0].first_child < 0) {
        copse__tree_reset(tree, c->nodes[0].token);
        return COPSE_OK;
    }
    copse_tree_expand_params ep = {
        .budget = budget,
        .max_depth = max_depth,
        .max_children = max_children,
        .min_p = 0.0f,
        .drafter_bits = drafter_bits,
    };
    return copse__tree_expand_best(tree, c->nodes[0].token, &ep, cands_expand_cb, c);
}

/* ---------------------------------------------------------------- a drafter's sequence */

bool copse__drafter_tokens_ok(const copse_drafter_params *p, const int32_t *toks, int32_t n)
{
    for (int32_t i = 0; i < n; i++)
        if (toks[i] < 0 || toks[i] >= p->n_vocab)
            return false;
    return true;
}

copse_status copse__ngram_index_begin(copse__ngram_index *ix, const copse_drafter_params *p, const int32_t *prompt,
                                      int32_t n_prompt, int32_t max_len)
{
    if (n_prompt < 0 || max_len < 1 || max_len < n_prompt || !copse__drafter_tokens_ok(p, prompt, n_prompt))
        return COPSE_EINVAL;
    copse_status st = copse__ngram_index_init(ix, max_len, p->ngram_max_n);
    if (st != COPSE_OK)
        return st;
    st = copse__ngram_index_append(ix, prompt, n_prompt);
    assert(st == COPSE_OK); /* max_len >= n_prompt */
    return COPSE_OK;
}

copse_status copse__ngram_index_observe(copse__ngram_index *ix, const copse_drafter_params *p, const int32_t *toks,
                                        int32_t n)
{
    if (n < 0 || !copse__drafter_tokens_ok(p, toks, n))
        return COPSE_EINVAL;
    return copse__ngram_index_append(ix, toks, n);
}

copse_status copse__ngram_index_catch_up(copse__ngram_index *ix, const copse_drafter_params *p, const int32_t *ctx,
                                         int32_t n_ctx)
{
    int32_t seen = ix->len < n_ctx ? ix->len : n_ctx; /* only the unseen tail is checked */
    if (n_ctx < 1 || !copse__drafter_tokens_ok(p, ctx + seen, n_ctx - seen))
        return COPSE_EINVAL;
    return copse__ngram_index_sync(ix, ctx, n_ctx);
}
