/*
 * suffix.c — the suffix drafter: continuations seen in this request and in
 * recent requests' outputs, weighted by how often they were seen.
 *
 * Two sources, one candidate trie (drafters-impl.h):
 *
 *   this request   the request's own history (prompt + accepted output) in
 *                  an n-gram hash-chain index (the ngram drafter's): the
 *                  longest match of the history's tail (ngram_max_n down to
 *                  ngram_min_n) contributes the continuation of each of its
 *                  newest max_branch occurrences.
 *
 *   the pool       a suffix trie of bounded depth D (suffix_depth) over the
 *                  outputs of finished requests of this engine: every
 *                  substring of length <= D of every pooled output is a
 *                  path, and each node counts its occurrences. The longest
 *                  suffix of the history (<= suffix_max_match tokens) that is
 *                  a path with children picks the node whose subtree holds
 *                  the continuations; its nodes are taken best-first by
 *                  count (at most max_branch children per node, depth <=
 *                  D - match length).
 *
 *   Weights: each source brings a mass equal to its match length (a longer
 *   match is more specific), split over its continuations in proportion to
 *   their counts. Best-first expansion over the merged trie then proposes
 *   the most frequent continuations first.
 *
 * The pool is FIFO by request: a finished request's output (seq_end; the
 * prompt is not pooled) is appended whole (only its last
 * suffix_pool_tokens tokens if longer); the oldest outputs are evicted
 * until it fits in suffix_pool_tokens tokens and suffix_max_docs outputs.
 * Eviction walks the evicted output's substrings and decrements their
 * counts, deepest first, freeing nodes whose count reaches 0. Each pooled
 * token starts at most D paths, so the trie never holds more than
 * suffix_pool_tokens * D + 1 nodes: the node store, the (parent, token)
 * hash table and the token ring are all allocated at create and bounded.
 * Inserting an output of L tokens costs O(L * D) hash operations.
 *
 * Threading: one caller at a time per drafter (drafter.h). The pool is
 * shared by every sequence of this drafter (one engine) and changes only in
 * seq_end; running sequences see each other's outputs only once finished.
 */
#include "spec/drafters/drafters-impl.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

/* ---------------------------------------------------------------- pool trie */

typedef struct pool_node {
    int32_t parent;       /* -1 for the root (node 0) */
    int32_t token;
    int32_t count;        /* occurrences of the path root..node in the pool */
    int32_t depth;
    int32_t first_child;  /* child list, doubly linked; -1 terminated */
    int32_t next_sibling; /* also the free-list link of a free node */
    int32_t prev_sibling;
} pool_node;

typedef struct pool_doc {
    int64_t start; /* absolute position of its first token in the ring */
    int32_t len;
} pool_doc;

typedef struct suffix_pool {
    int32_t depth; /* D */

    pool_node *nodes; /* [node_cap], node 0 the root */
    int32_t node_cap;
    int32_t n_used;   /* live nodes, the root included */
    int32_t free_head;
    int32_t n_fresh;  /* nodes [0, n_fresh) were handed out at least once */

    int32_t *hash;    /* [hmask + 1] node index or -1; key (parent, token) */
    uint32_t hmask;

    int32_t *ring;    /* [ring_cap] pooled tokens */
    int32_t ring_cap;
    int64_t ring_head; /* absolute position one past the newest token */
    int64_t ring_tail; /* absolute position of the oldest token */

    pool_doc *docs;   /* [docs_cap] FIFO */
    int32_t docs_cap;
    int32_t doc_first; /* index of the oldest */
    int32_t n_docs;
} suffix_pool;

static uint32_t pool_home(const suffix_pool *pl, int32_t parent, int32_t token)
{
    uint64_t h = ((uint64_t)(uint32_t)parent << 32) | (uint32_t)token;
    h *= 0x9e3779b97f4a7c15ull;
    h ^= h >> 31;
    h *= 0xbf58476d1ce4e5b9ull;
    return (uint32_t)(h >> 32) & pl->hmask;
}

/* Hash slot holding the child (parent, token), or the empty slot where it
 * would go. */
static uint32_t pool_slot(const suffix_pool *pl, int32_t parent, int32_t token)
{
    uint32_t i = pool_home(pl, parent, token);
    for (;;) {
        int32_t e = pl->hash[i];
        if (e < 0 || (pl->nodes[e].parent == parent && pl->nodes[e].token == token))
            return i;
        i = (i + 1) & pl->hmask;
    }
}

static int32_t pool_child(const suffix_pool *pl, int32_t parent, int32_t token)
{
    return pl->hash[pool_slot(pl, parent, token)];
}

/* Remove hash slot i, shifting later entries of its probe run back
 * (linear-probing deletion without tombstones). */
static void pool_hash_remove(suffix_pool *pl, uint32_t i)
{
    uint32_t j = i;
    for (;;) {
        j = (j + 1) & pl->hmask;
        int32_t e = pl->hash[j];
        if (e < 0)
            break;
        uint32_t k = pool_home(pl, pl->nodes[e].parent, pl->nodes[e].token);
        /* e may move to i iff its home k is not cyclically in (i, j]. */
        bool in_range = i <= j ? (k > i && k <= j) : (k > i || k <= j);
        if (!in_range) {
            pl->hash[i] = e;
            i = j;
        }
    }
    pl->hash[i] = -1;
}

/* The child (parent, token), created with count 0 if missing; -1 if the
 * node store is exhausted (cannot happen within the bound, see the header
 * comment; checked anyway). */
static int32_t pool_get_child(suffix_pool *pl, int32_t parent, int32_t token)
{
    uint32_t s = pool_slot(pl, parent, token);
    if (pl->hash[s] >= 0)
        return pl->hash[s];
    int32_t k;
    if (pl->free_head >= 0) {
        k = pl->free_head;
        pl->free_head = pl->nodes[k].next_sibling;
    } else if (pl->n_fresh < pl->node_cap) {
        k = pl->n_fresh++;
    } else {
        return -1;
    }
    pool_node *pn = &pl->nodes[parent];
    pl->nodes[k] = (pool_node){.parent = parent,
                               .token = token,
                               .count = 0,
                               .depth = pn->depth + 1,
                               .first_child = -1,
                               .next_sibling = pn->first_child,
                               .prev_sibling = -1};
    if (pn->first_child >= 0)
        pl->nodes[pn->first_child].prev_sibling = k;
    pn->first_child = k;
    pl->hash[s] = k;
    pl->n_used++;
    return k;
}

static void pool_free_node(suffix_pool *pl, int32_t k)
{
    pool_node *n = &pl->nodes[k];
    assert(k > 0 && n->count == 0 && n->first_child < 0);
    pool_hash_remove(pl, pool_slot(pl, n->parent, n->token));
    if (n->prev_sibling >= 0)
        pl->nodes[n->prev_sibling].next_sibling = n->next_sibling;
    else
        pl->nodes[n->parent].first_child = n->next_sibling;
    if (n->next_sibling >= 0)
        pl->nodes[n->next_sibling].prev_sibling = n->prev_sibling;
    n->parent = -1;
    n->count = 0;
    n->next_sibling = pl->free_head;
    pl->free_head = k;
    pl->n_used--;
}

static int32_t ring_at(const suffix_pool *pl, int64_t pos)
{
    return pl->ring[pos % pl->ring_cap];
}

/* Remove the oldest output: decrement the counts of every path it started,
 * deepest node first, freeing nodes that drop to 0. */
static void pool_evict_oldest(suffix_pool *pl)
{
    enum { MAXD = 64 };
    int32_t path[MAXD];
    assert(pl->n_docs > 0);
    pool_doc doc = pl->docs[pl->doc_first];
    for (int32_t j = 0; j < doc.len; j++) {
        int32_t n = 0, at = 0;
        for (int32_t d = 0; d < pl->depth && j + d < doc.len; d++) {
            at = pool_child(pl, at, ring_at(pl, doc.start + j + d));
            assert(at > 0);
            if (at < 0)
                break;
            path[n++] = at;
        }
        for (int32_t i = n - 1; i >= 0; i--)
            if (--pl->nodes[path[i]].count == 0)
                pool_free_node(pl, path[i]);
    }
    pl->nodes[0].count -= doc.len;
    pl->ring_tail = doc.start + doc.len;
    pl->doc_first = (pl->doc_first + 1) % pl->docs_cap;
    pl->n_docs--;
}

/* Append one output (the last ring_cap tokens if longer), evicting the
 * oldest outputs first until it fits. */
static void pool_add(suffix_pool *pl, const int32_t *toks, int32_t len)
{
    if (len <= 0)
        return;
    if (len > pl->ring_cap) {
        toks += len - pl->ring_cap;
        len = pl->ring_cap;
    }
    while (pl->n_docs > 0 && (pl->n_docs == pl->docs_cap || pl->ring_head - pl->ring_tail + len > pl->ring_cap))
        pool_evict_oldest(pl);
    if (pl->n_docs == 0)
        pl->ring_tail = pl->ring_head;
    pool_doc doc = {.start = pl->ring_head, .len = len};
    for (int32_t i = 0; i < len; i++)
        pl->ring[(doc.start + i) % pl->ring_cap] = toks[i];
    pl->ring_head += len;
    pl->docs[(pl->doc_first + pl->n_docs) % pl->docs_cap] = doc;
    pl->n_docs++;
    for (int32_t j = 0; j < len; j++) {
        int32_t at = 0;
        for (int32_t d = 0; d < pl->depth && j + d < len; d++) {
            at = pool_get_child(pl, at, toks[j + d]);
            assert(at > 0);
            if (at < 0)
                break;
            pl->nodes[at].count++;
        }
    }
    pl->nodes[0].count += len;
}

static void pool_free(suffix_pool *pl)
{
    free(pl->nodes);
    free(pl->hash);
    free(pl->ring);
    free(pl->docs);
    memset(pl, 0, sizeof *pl);
}

static copse_status pool_init(suffix_pool *pl, const copse_drafter_params *p)
{
    memset(pl, 0, sizeof *pl);
    pl->depth = p->suffix_depth;
    pl->node_cap = p->suffix_pool_tokens * p->suffix_depth + 1;
    uint32_t hsize = 64;
    while (hsize < 2u * (uint32_t)pl->node_cap)
        hsize <<= 1;
    pl->hmask = hsize - 1;
    pl->ring_cap = p->suffix_pool_tokens;
    pl->docs_cap = p->suffix_max_docs;
    pl->nodes = malloc((size_t)pl->node_cap * sizeof *pl->nodes);
    pl->hash = malloc((size_t)hsize * sizeof *pl->hash);
    pl->ring = malloc((size_t)pl->ring_cap * sizeof *pl->ring);
    pl->docs = malloc((size_t)pl->docs_cap * sizeof *pl->docs);
    if (!pl->nodes || !pl->hash || !pl->ring || !pl->docs) {
        pool_free(pl);
        return COPSE_ENOMEM;
    }
    memset(pl->hash, 0xff, (size_t)hsize * sizeof *pl->hash);
    pl->nodes[0] = (pool_node){
        .parent = -1, .token = -1, .first_child = -1, .next_sibling = -1, .prev_sibling = -1};
    pl->n_used = 1;
    pl->n_fresh = 1;
    pl->free_head = -1;
    return COPSE_OK;
}

/* ---------------------------------------------------------------- the drafter */

typedef struct suffix_seq {
    bool live;
    int32_t n_prompt; /* the output starts here in the history */
    copse__ngram_index ix;
} suffix_seq;

/* A frontier entry of the best-first walk over the pool's subtree. */
typedef struct heap_item {
    int32_t count;
    int32_t node;   /* pool node */
    int32_t cand;   /* candidate parent */
    int32_t order;  /* push order: earlier first on equal counts */
} heap_item;

typedef struct suffix_ctx {
    copse_drafter base; /* base.ctx == this */
    copse_drafter_params p;
    suffix_seq *seqs;   /* [p.max_seqs] */
    suffix_pool pool;
    copse__drafter_cands cands;
    heap_item *heap;    /* [heap_cap] */
    int32_t heap_cap;
} suffix_ctx;

static bool heap_less(const heap_item *a, const heap_item *b) /* a ranks below b */
{
    return a->count != b->count ? a->count < b->count : a->order > b->order;
}

static void heap_push(heap_item *h, int32_t *n, heap_item it)
{
    int32_t i = (*n)++;
    while (i > 0 && heap_less(&h[(i - 1) / 2], &it)) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = it;
}

static heap_item heap_pop(heap_item *h, int32_t *n)
{
    heap_item top = h[0], last = h[--(*n)];
    int32_t i = 0;
    for (;;) {
        int32_t c = 2 * i + 1;
        if (c >= *n)
            break;
        if (c + 1 < *n && heap_less(&h[c], &h[c + 1]))
            c++;
        if (!heap_less(&last, &h[c]))
            break;
        h[i] = h[c];
        i = c;
    }
    if (*n > 0)
        h[i] = last;
    return top;
}

/* Push the (at most k) most frequent children of pool node `node`. */
static void push_children(suffix_ctx *g, int32_t node, int32_t cand, int32_t k, heap_item *h, int32_t *n,
                          int32_t *order)
{
    enum { MAXK = 256 };
    int32_t best[MAXK];
    int32_t nb = 0;
    const pool_node *nodes = g->pool.nodes;
    if (k > MAXK)
        k = MAXK;
    for (int32_t c = nodes[node].first_child; c >= 0; c = nodes[c].next_sibling) {
        if (nb == k && nodes[c].count <= nodes[best[k - 1]].count)
            continue;
        int32_t j = nb < k ? nb++ : k - 1;
        while (j > 0 && nodes[best[j - 1]].count < nodes[c].count) {
            best[j] = best[j - 1];
            j--;
        }
        best[j] = c;
    }
    for (int32_t i = 0; i < nb && *n < g->heap_cap; i++)
        heap_push(h, n, (heap_item){.count = nodes[best[i]].count, .node = best[i], .cand = cand, .order = (*order)++});
}

/* Add the pool's continuations of the history's tail to the candidates. */
static void propose_from_pool(suffix_ctx *g, const copse__ngram_index *ix, int32_t budget, int32_t max_depth)
{
    const suffix_pool *pl = &g->pool;
    int32_t len = ix->len, m = g->p.suffix_max_match < len ? g->p.suffix_max_match : len;
    int32_t at = -1;
    for (; m >= 1; m--) {
        at = 0;
        for (int32_t i = len - m; i < len && at >= 0; i++)
            at = pool_child(pl, at, ix->tokens[i]);
        if (at > 0 && pl->nodes[at].first_child >= 0)
            break;
        at = -1;
    }
    if (at < 0)
        return;
    int32_t depth_left = pl->depth - m < max_depth ? pl->depth - m : max_depth;
    /* Mass m over the matched node's occurrences. */
    float scale = (float)m / (float)pl->nodes[at].count;
    g->cands.nodes[0].weight += (float)m;
    int32_t n = 0, order = 0;
    push_children(g, at, 0, g->p.max_branch, g->heap, &n, &order);
    for (int32_t taken = 0; taken < budget && n > 0; taken++) {
        heap_item it = heap_pop(g->heap, &n);
        const pool_node *pn = &pl->nodes[it.node];
        int32_t c = copse__drafter_cands_add(&g->cands, it.cand, pn->token, (float)pn->count * scale);
        if (c < 0)
            break;
        if (pn->depth - pl->nodes[at].depth < depth_left)
            push_children(g, it.node, c, g->p.max_branch, g->heap, &n, &order);
    }
}

static void suffix_seq_end(copse_drafter *d, int32_t seq)
{
    suffix_ctx *g = d->ctx;
    assert(seq >= 0 && seq < g->p.max_seqs && g->seqs[seq].live);
    suffix_seq *s = &g->seqs[seq];
    pool_add(&g->pool, s->ix.tokens + s->n_prompt, s->ix.len - s->n_prompt);
    copse__ngram_index_free(&s->ix);
    s->live = false;
}

static void suffix_free(suffix_ctx *g)
{
    free(g->seqs);
    free(g->heap);
    pool_free(&g->pool);
    copse__drafter_cands_free(&g->cands);
    free(g);
}

static void suffix_destroy(copse_drafter *d)
{
    suffix_ctx *g = d->ctx;
    for (int32_t s = 0; s < g->p.max_seqs; s++)
        if (g->seqs[s].live)
            copse__ngram_index_free(&g->seqs[s].ix);
    suffix_free(g);
}

static copse_status suffix_seq_begin(copse_drafter *d, int32_t seq, const int32_t *prompt, int32_t n_prompt,
                                     int32_t max_len)
{
    suffix_ctx *g = d->ctx;
    assert(seq >= 0 && seq < g->p.max_seqs && !g->seqs[seq].live);
    suffix_seq *s = &g->seqs[seq];
    copse_status st = copse__ngram_index_begin(&s->ix, &g->p, prompt, n_prompt, max_len);
    if (st != COPSE_OK)
        return st;
    s->n_prompt = n_prompt;
    s->live = true;
    return COPSE_OK;
}

static copse_status suffix_observe(copse_drafter *d, int32_t seq, const int32_t *toks, int32_t n)
{
    suffix_ctx *g = d->ctx;
    assert(seq >= 0 && seq < g->p.max_seqs && g->seqs[seq].live);
    return copse__ngram_index_observe(&g->seqs[seq].ix, &g->p, toks, n);
}

static copse_status suffix_propose(copse_drafter *d, int32_t seq, const int32_t *ctx, int32_t n_ctx,
                                   int32_t budget, int32_t max_depth, copse_tree *tree)
{
    suffix_ctx *g = d->ctx;
    assert(seq >= 0 && seq < g->p.max_seqs && g->seqs[seq].live);
    copse__ngram_index *ix = &g->seqs[seq].ix;
    copse_status st = copse__ngram_index_catch_up(ix, &g->p, ctx, n_ctx);
    if (st != COPSE_OK)
        return st;
    copse__drafter_clamp(&g->p, tree, &budget, &max_depth);
    copse__drafter_cands_reset(&g->cands, ctx[n_ctx - 1]);
    if (budget > 0 && max_depth > 0) {
        /* This request: mass n (the match length), split over occurrences. */
        enum { PROBE = 256 };
        int32_t occ[PROBE];
        int32_t k = 0, n = g->p.ngram_max_n;
        for (; n >= g->p.ngram_min_n; n--)
            if ((k = copse__ngram_index_find(ix, n, occ, g->p.max_branch, 4 * g->p.max_branch)) > 0)
                break;
        if (k > 0)
            copse__ngram_index_propose(ix, n, n, g->p.max_branch, max_depth, (float)n / (float)k, &g->cands);
        propose_from_pool(g, ix, budget, max_depth);
    }
    return copse__drafter_cands_emit(&g->cands, budget, max_depth, g->p.max_branch, g->p.bit, tree);
}

copse_status copse__suffix_create(const copse_drafter_params *p, copse_drafter **out, char *err, size_t err_size)
{
    *out = NULL;
    suffix_ctx *g = calloc(1, sizeof *g);
    if (!g)
        goto fail;
    g->p = *p;
    g->seqs = calloc((size_t)p->max_seqs, sizeof *g->seqs);
    if (!g->seqs)
        goto fail;
    if (pool_init(&g->pool, p) != COPSE_OK)
        goto fail;
    /* own continuations (max_branch paths of max_depth) + pool nodes (max_nodes) */
    if (copse__drafter_cands_init(&g->cands, p->max_branch * p->max_depth + p->max_nodes + 1, p->max_nodes) !=
        COPSE_OK)
        goto fail;
    g->heap_cap = (p->max_nodes + 1) * p->max_branch;
    g->heap = malloc((size_t)g->heap_cap * sizeof *g->heap);
    if (!g->heap)
        goto fail;
    g->base = (copse_drafter){
        .iface =
            {
                .destroy = suffix_destroy,
                .seq_begin = suffix_seq_begin,
                .propose = suffix_propose,
                .observe = suffix_observe,
                .seq_end = suffix_seq_end,
            },
        .name = "suffix",
        .has_q = false,
        .ctx = g,
    };
    *out = &g->base;
    return COPSE_OK;
fail:
    if (g)
        suffix_free(g);
    return copse__errorf(err, err_size, COPSE_ENOMEM, "suffix drafter: out of memory");
}

/* ---------------------------------------------------------------- introspection (tests) */

void copse__suffix_get_stats(const copse_drafter *d, copse__suffix_stats *out)
{
    const suffix_ctx *g = d->ctx;
    const suffix_pool *pl = &g->pool;
    *out = (copse__suffix_stats){
        .nodes = pl->n_used,
        .node_cap = pl->node_cap,
        .tokens = (int32_t)(pl->ring_head - pl->ring_tail),
        .token_cap = pl->ring_cap,
        .docs = pl->n_docs,
    };
}

copse_status copse__suffix_validate(const copse_drafter *d, char *err, size_t err_size)
{
    const suffix_ctx *g = d->ctx;
    const suffix_pool *pl = &g->pool;
    if (pl->n_docs == 0 && pl->n_used != 1)
        return copse__errorf(err, err_size, COPSE_EINVAL, "empty pool holds %d nodes", pl->n_used);
    int64_t sum_docs = 0;
    for (int32_t i = 0; i < pl->n_docs; i++)
        sum_docs += pl->docs[(pl->doc_first + i) % pl->docs_cap].len;
    if (sum_docs != pl->ring_head - pl->ring_tail || sum_docs > pl->ring_cap)
        return copse__errorf(err, err_size, COPSE_EINVAL, "docs hold %lld tokens, ring %lld (cap %d)",
                             (long long)sum_docs, (long long)(pl->ring_head - pl->ring_tail), pl->ring_cap);
    if (pl->nodes[0].count != sum_docs)
        return copse__errorf(err, err_size, COPSE_EINVAL, "root count %d != %lld tokens", pl->nodes[0].count,
                             (long long)sum_docs);
    /* Walk the live trie from the root: counts positive, a child's count at
     * most its parent's, children's sum at most the parent's, hash finds
     * every node. */
    int32_t seen = 0;
    for (int32_t k = 0; k < pl->n_fresh; k++) {
        const pool_node *n = &pl->nodes[k];
        if (k > 0 && n->parent < 0)
            continue; /* free */
        seen++;
        if (k > 0 && (n->count <= 0 || pool_child(pl, n->parent, n->token) != k))
            return copse__errorf(err, err_size, COPSE_EINVAL, "node %d: count %d or hash lookup wrong", k, n->count);
        int64_t sum = 0;
        for (int32_t c = n->first_child; c >= 0; c = pl->nodes[c].next_sibling) {
            if (pl->nodes[c].parent != k || pl->nodes[c].depth != n->depth + 1)
                return copse__errorf(err, err_size, COPSE_EINVAL, "node %d: bad child %d", k, c);
            sum += pl->nodes[c].count;
        }
        if (sum > n->count)
            return copse__errorf(err, err_size, COPSE_EINVAL, "node %d: children count %lld > %d", k,
                                 (long long)sum, n->count);
    }
    if (seen != pl->n_used || pl->n_used > pl->node_cap)
        return copse__errorf(err, err_size, COPSE_EINVAL, "%d live nodes, counter says %d (cap %d)", seen,
                             pl->n_used, pl->node_cap);
    return COPSE_OK;
}
