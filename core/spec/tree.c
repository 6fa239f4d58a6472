/*
 * tree.c — token trees: building, best-first and static expansion, trie
 * merge under a budget, and flattening for the forward pass.
 *
 * Contract in tree.h. Everything is allocated by copse__tree_create; the
 * other functions work in the tree's own arrays and scratch.
 */
#include "spec/tree.h"

#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

/* A candidate child during expansion: a pending node. */
typedef struct cand {
    float logp;       /* parent's logp + log p */
    float p;
    int32_t parent;   /* node index or COPSE_TREE_ROOT */
    copse_token token;
    uint32_t seq;     /* push order: the tie-break (earlier first) */
} cand;

struct copse_tree {
    int32_t cap;          /* node capacity, root excluded */
    int32_t max_children; /* expansion candidates per node */
    int32_t q_cap;        /* (id, p) entries in the q arena */
    int32_t n;            /* nodes */
    int32_t depth;        /* deepest node depth */
    copse_token root;
    int32_t root_first, root_last; /* the root's child list */
    copse_tree_node *nodes;        /* [cap] */

    /* q arena: record r is q_ids/q_p[q_off[r] .. q_off[r] + q_n[r]) */
    int32_t nq, q_used;
    int32_t *q_off, *q_n; /* [cap] */
    copse_token *q_ids;   /* [q_cap] */
    float *q_p;           /* [q_cap] */

    /* scratch */
    cand *cands;          /* [(cap + 1) * max_children]: heap or level list */
    int32_t n_cands_cap;
    copse_token *cb_ids;  /* [max_children] callback output */
    float *cb_p;          /* [max_children] */
    int32_t *map;         /* [cap] merge: input node -> out node; prune: old -> new */
    int32_t *qmap;        /* [cap] merge: input q -> out q */
    uint8_t *keep;        /* [cap] prune */
};

/* ---------------------------------------------------------------- lifecycle */

copse_status copse__tree_create(int32_t max_nodes, int32_t max_children, int32_t q_cap,
                                copse_tree **out)
{
    *out = NULL;
    if (max_nodes < 1 || max_nodes > COPSE_TREE_MAX_NODES || max_children < 1 ||
        max_children > COPSE_TREE_MAX_NODES || q_cap < 0)
        return COPSE_EINVAL;
    copse_tree *t = calloc(1, sizeof *t);
    if (!t)
        return COPSE_ENOMEM;
    t->cap = max_nodes;
    t->max_children = max_children;
    t->q_cap = q_cap;
    t->n_cands_cap = (max_nodes + 1) * max_children;
    size_t cap = (size_t)max_nodes;
    t->nodes = calloc(cap, sizeof *t->nodes);
    t->q_off = calloc(cap, sizeof *t->q_off);
    t->q_n = calloc(cap, sizeof *t->q_n);
    t->q_ids = calloc((size_t)q_cap + 1, sizeof *t->q_ids);
    t->q_p = calloc((size_t)q_cap + 1, sizeof *t->q_p);
    t->cands = calloc((size_t)t->n_cands_cap, sizeof *t->cands);
    t->cb_ids = calloc((size_t)max_children, sizeof *t->cb_ids);
    t->cb_p = calloc((size_t)max_children, sizeof *t->cb_p);
    t->map = calloc(cap, sizeof *t->map);
    t->qmap = calloc(cap, sizeof *t->qmap);
    t->keep = calloc(cap, sizeof *t->keep);
    if (!t->nodes || !t->q_off || !t->q_n || !t->q_ids || !t->q_p || !t->cands || !t->cb_ids ||
        !t->cb_p || !t->map || !t->qmap || !t->keep)
        goto fail;
    copse__tree_reset(t, 0);
    *out = t;
    return COPSE_OK;
fail:
    copse__tree_destroy(t);
    return COPSE_ENOMEM;
}

void copse__tree_destroy(copse_tree *t)
{
    if (!t)
        return;
    free(t->nodes);
    free(t->q_off);
    free(t->q_n);
    free(t->q_ids);
    free(t->q_p);
    free(t->cands);
    free(t->cb_ids);
    free(t->cb_p);
    free(t->map);
    free(t->qmap);
    free(t->keep);
    free(t);
}

void copse__tree_reset(copse_tree *t, copse_token root_token)
{
    t->n = 0;
    t->depth = 0;
    t->root = root_token;
    t->root_first = t->root_last = -1;
    t->nq = 0;
    t->q_used = 0;
}

/* ---------------------------------------------------------------- reading */

int32_t copse__tree_size(const copse_tree *t) { return t->n; }
int32_t copse__tree_capacity(const copse_tree *t) { return t->cap; }
int32_t copse__tree_max_children(const copse_tree *t) { return t->max_children; }
copse_token copse__tree_root_token(const copse_tree *t) { return t->root; }
int32_t copse__tree_depth(const copse_tree *t) { return t->depth; }

const copse_tree_node *copse__tree_node(const copse_tree *t, int32_t i)
{
    assert(i >= 0 && i < t->n);
    return &t->nodes[i];
}

int32_t copse__tree_first_child(const copse_tree *t, int32_t i)
{
    if (i == COPSE_TREE_ROOT)
        return t->root_first;
    assert(i >= 0 && i < t->n);
    return t->nodes[i].first_child;
}

int32_t copse__tree_find_child(const copse_tree *t, int32_t parent, copse_token token)
{
    for (int32_t c = copse__tree_first_child(t, parent); c >= 0; c = t->nodes[c].next_sibling)
        if (t->nodes[c].token == token)
            return c;
    return -1;
}

int32_t copse__tree_path(const copse_tree *t, int32_t i, copse_token *out)
{
    if (i == COPSE_TREE_ROOT)
        return 0;
    assert(i >= 0 && i < t->n);
    int32_t d = t->nodes[i].depth;
    for (int32_t k = d - 1; k >= 0; k--, i = t->nodes[i].parent)
        out[k] = t->nodes[i].token;
    return d;
}

copse_tree_q copse__tree_get_q(const copse_tree *t, int32_t q)
{
    assert(q >= 0 && q < t->nq);
    return (copse_tree_q){.n = t->q_n[q], .ids = t->q_ids + t->q_off[q], .p = t->q_p + t->q_off[q]};
}

/* ---------------------------------------------------------------- validation */

copse_status copse__tree_validate(const copse_tree *t, char *err, size_t err_size)
{
    int32_t depth = 0;
    for (int32_t i = 0; i < t->n; i++) {
        const copse_tree_node *nd = &t->nodes[i];
        if (nd->parent != COPSE_TREE_ROOT && (nd->parent < 0 || nd->parent >= i))
            return copse__errorf(err, err_size, COPSE_EINVAL,
                                 "node %d: parent %d not before it", (int)i, (int)nd->parent);
        int32_t pd = nd->parent == COPSE_TREE_ROOT ? 0 : t->nodes[nd->parent].depth;
        float plp = nd->parent == COPSE_TREE_ROOT ? 0.0f : t->nodes[nd->parent].logp;
        if (nd->depth != pd + 1 || nd->depth > COPSE_TREE_MAX_DEPTH)
            return copse__errorf(err, err_size, COPSE_EINVAL, "node %d: depth %d, parent depth %d",
                                 (int)i, (int)nd->depth, (int)pd);
        if (!(nd->p > 0.0f && nd->p <= 1.0f))
            return copse__errorf(err, err_size, COPSE_EINVAL, "node %d: p %g outside (0, 1]",
                                 (int)i, (double)nd->p);
        if (nd->logp != plp + logf(nd->p))
            return copse__errorf(err, err_size, COPSE_EINVAL, "node %d: logp %g != %g + log %g",
                                 (int)i, (double)nd->logp, (double)plp, (double)nd->p);
        if (nd->n_q < 0 || nd->n_q > COPSE_TREE_MAX_Q)
            return copse__errorf(err, err_size, COPSE_EINVAL, "node %d: n_q %d", (int)i,
                                 (int)nd->n_q);
        uint32_t bits = nd->onehot;
        for (int32_t k = 0; k < nd->n_q; k++) {
            uint32_t b = nd->q_bit[k];
            if (b == 0 || (b & (b - 1)) != 0 || (bits & b & ~nd->onehot) != 0)
                return copse__errorf(err, err_size, COPSE_EINVAL,
                                     "node %d: q entry %d has bit %#x (not one new bit)", (int)i,
                                     (int)k, (unsigned)b);
            if (nd->q[k] < 0 || nd->q[k] >= t->nq)
                return copse__errorf(err, err_size, COPSE_EINVAL, "node %d: q id %d unknown",
                                     (int)i, (int)nd->q[k]);
            bits |= b;
        }
        if (bits != nd->drafters || bits == 0)
            return copse__errorf(err, err_size, COPSE_EINVAL,
                                 "node %d: drafters %#x != onehot | q bits %#x", (int)i,
                                 (unsigned)nd->drafters, (unsigned)bits);
        if (nd->depth > depth)
            depth = nd->depth;
    }
    if (depth != t->depth)
        return copse__errorf(err, err_size, COPSE_EINVAL, "depth %d, deepest node %d",
                             (int)t->depth, (int)depth);
    /* Child lists: every node exactly once, in its parent's list, in order,
     * siblings with distinct tokens. */
    int32_t seen = 0;
    for (int32_t par = COPSE_TREE_ROOT; par < t->n; par++) {
        int32_t prev = -1;
        for (int32_t c = copse__tree_first_child(t, par); c >= 0; c = t->nodes[c].next_sibling) {
            if (c >= t->n || t->nodes[c].parent != par || c <= prev)
                return copse__errorf(err, err_size, COPSE_EINVAL,
                                     "child list of %d: bad entry %d", (int)par, (int)c);
            for (int32_t s = copse__tree_first_child(t, par); s != c; s = t->nodes[s].next_sibling)
                if (t->nodes[s].token == t->nodes[c].token)
                    return copse__errorf(err, err_size, COPSE_EINVAL,
                                         "siblings %d and %d share token %d", (int)s, (int)c,
                                         (int)t->nodes[c].token);
            prev = c;
            seen++;
        }
        int32_t last = par == COPSE_TREE_ROOT ? t->root_last : t->nodes[par].last_child;
        if (last != prev)
            return copse__errorf(err, err_size, COPSE_EINVAL, "node %d: last child %d, list ends at %d",
                                 (int)par, (int)last, (int)prev);
    }
    if (seen != t->n)
        return copse__errorf(err, err_size, COPSE_EINVAL, "child lists hold %d of %d nodes",
                             (int)seen, (int)t->n);
    return COPSE_OK;
}

/* ---------------------------------------------------------------- building */

copse_status copse__tree_add_q(copse_tree *t, const copse_token *ids, const float *p, int32_t n,
                               int32_t *out_q)
{
    if (n < 1)
        return COPSE_EINVAL;
    for (int32_t i = 0; i < n; i++)
        if (!(p[i] >= 0.0f) || isinf(p[i]) || ids[i] < 0)
            return COPSE_EINVAL;
    if (t->nq >= t->cap || n > t->q_cap - t->q_used)
        return COPSE_ENOSPACE;
    int32_t q = t->nq++;
    t->q_off[q] = t->q_used;
    t->q_n[q] = n;
    memcpy(t->q_ids + t->q_used, ids, (size_t)n * sizeof *ids);
    memcpy(t->q_p + t->q_used, p, (size_t)n * sizeof *p);
    t->q_used += n;
    *out_q = q;
    return COPSE_OK;
}

static float clamp_p(float p)
{
    if (!(p > 0.0f))
        return 0x1p-126f; /* smallest normal: ranks last but stays a probability */
    return p > 1.0f ? 1.0f : p;
}

/* logp of every node from `from` on, recomputed from its parent (parents
 * come first, so one pass in order suffices). */
static void refresh_logp(copse_tree *t, int32_t from)
{
    for (int32_t i = from; i < t->n; i++) {
        copse_tree_node *nd = &t->nodes[i];
        float plp = nd->parent == COPSE_TREE_ROOT ? 0.0f : t->nodes[nd->parent].logp;
        nd->logp = plp + logf(nd->p);
    }
}

/* Append node i to its parent's child list. */
static void link_child(copse_tree *t, int32_t i)
{
    copse_tree_node *nd = &t->nodes[i];
    int32_t *first = nd->parent == COPSE_TREE_ROOT ? &t->root_first : &t->nodes[nd->parent].first_child;
    int32_t *last = nd->parent == COPSE_TREE_ROOT ? &t->root_last : &t->nodes[nd->parent].last_child;
    nd->next_sibling = -1;
    if (*last >= 0)
        t->nodes[*last].next_sibling = i;
    else
        *first = i;
    *last = i;
}

/* Rebuild every child list and the depth from the parent fields. */
static void relink(copse_tree *t)
{
    t->root_first = t->root_last = -1;
    t->depth = 0;
    for (int32_t i = 0; i < t->n; i++)
        t->nodes[i].first_child = t->nodes[i].last_child = -1;
    for (int32_t i = 0; i < t->n; i++) {
        link_child(t, i);
        if (t->nodes[i].depth > t->depth)
            t->depth = t->nodes[i].depth;
    }
}

/* Give node nd the proposal (bits, q): a q entry per stochastic proposer,
 * one-hot beyond COPSE_TREE_MAX_Q entries. */
static void add_proposal(copse_tree_node *nd, uint32_t bits, int32_t q)
{
    nd->drafters |= bits;
    if (q == COPSE_TREE_NO_Q) {
        nd->onehot |= bits;
        return;
    }
    for (int32_t k = 0; k < nd->n_q; k++)
        if (nd->q_bit[k] == bits)
            return; /* this proposer's first q stays */
    if (nd->n_q < COPSE_TREE_MAX_Q) {
        nd->q_bit[nd->n_q] = bits;
        nd->q[nd->n_q] = q;
        nd->n_q++;
    } else {
        nd->onehot |= bits;
    }
}

/* The trie insert behind add and merge, no argument checks. *grew tells a
 * new node from a merge. logp of a merged node's subtree is refreshed only
 * when `refresh`. */
static copse_status insert(copse_tree *t, int32_t parent, copse_token token, float p, uint32_t bits,
                           int32_t q, bool refresh, int32_t *out_node, bool *grew)
{
    p = clamp_p(p);
    *grew = false;
    int32_t c = copse__tree_find_child(t, parent, token);
    if (c >= 0) {
        copse_tree_node *nd = &t->nodes[c];
        add_proposal(nd, bits, q);
        if (p > nd->p) {
            nd->p = p;
            if (refresh)
                refresh_logp(t, c);
        }
        *out_node = c;
        return COPSE_OK;
    }
    int32_t depth = parent == COPSE_TREE_ROOT ? 1 : t->nodes[parent].depth + 1;
    if (depth > COPSE_TREE_MAX_DEPTH)
        return COPSE_ERANGE;
    if (t->n >= t->cap)
        return COPSE_ENOSPACE;
    int32_t i = t->n++;
    copse_tree_node *nd = &t->nodes[i];
    *nd = (copse_tree_node){
        .token = token,
        .parent = parent,
        .depth = depth,
        .p = p,
        .logp = (parent == COPSE_TREE_ROOT ? 0.0f : t->nodes[parent].logp) + logf(p),
        .first_child = -1,
        .next_sibling = -1,
        .last_child = -1,
    };
    add_proposal(nd, bits, q);
    link_child(t, i);
    if (depth > t->depth)
        t->depth = depth;
    *out_node = i;
    *grew = true;
    return COPSE_OK;
}

copse_status copse__tree_add(copse_tree *t, int32_t parent, copse_token token, float p,
                             uint32_t drafter_bits, int32_t q, int32_t *out_node)
{
    if ((parent != COPSE_TREE_ROOT && (parent < 0 || parent >= t->n)) || drafter_bits == 0 ||
        isnan(p))
        return COPSE_EINVAL;
    if (q != COPSE_TREE_NO_Q &&
        (q < 0 || q >= t->nq || (drafter_bits & (drafter_bits - 1)) != 0))
        return COPSE_EINVAL;
    int32_t node;
    bool grew;
    copse_status st = insert(t, parent, token, p, drafter_bits, q, true, &node, &grew);
    if (st == COPSE_OK && out_node)
        *out_node = node;
    return st;
}

/* ---------------------------------------------------------------- expansion */

/* Heap order: a before b when it has the higher logp, or the same and was
 * pushed earlier. */
static bool cand_before(const cand *a, const cand *b)
{
    return a->logp > b->logp || (a->logp == b->logp && a->seq < b->seq);
}

static void heap_push(cand *h, int32_t *n, cand c)
{
    int32_t i = (*n)++;
    while (i > 0) {
        int32_t up = (i - 1) / 2;
        if (!cand_before(&c, &h[up]))
            break;
        h[i] = h[up];
        i = up;
    }
    h[i] = c;
}

static cand heap_pop(cand *h, int32_t *n)
{
    cand top = h[0];
    cand last = h[--(*n)];
    int32_t i = 0;
    for (;;) {
        int32_t l = 2 * i + 1, best = l;
        if (l >= *n)
            break;
        if (l + 1 < *n && cand_before(&h[l + 1], &h[l]))
            best = l + 1;
        if (!cand_before(&h[best], &last))
            break;
        h[i] = h[best];
        i = best;
    }
    if (*n > 0)
        h[i] = last;
    return top;
}

/* Ask cb for node's candidates; keep the valid ones (probability in (0, 1],
 * >= min_p) in t->cb_ids / cb_p, compacted. */
static copse_status ask(copse_tree *t, copse_tree_expand_cb cb, void *ud, int32_t node, int32_t cap,
                        float min_p, int32_t *n_out)
{
    int32_t n = 0;
    copse_status st = cb(ud, t, node, t->cb_ids, t->cb_p, cap, &n);
    if (st != COPSE_OK)
        return st;
    if (n < 0)
        n = 0;
    if (n > cap)
        n = cap;
    int32_t m = 0;
    for (int32_t i = 0; i < n; i++) {
        float p = t->cb_p[i];
        if (!(p > 0.0f) || p < min_p)
            continue;
        t->cb_ids[m] = t->cb_ids[i];
        t->cb_p[m] = p > 1.0f ? 1.0f : p;
        m++;
    }
    *n_out = m;
    return COPSE_OK;
}

static bool expand_params_ok(const copse_tree_expand_params *p)
{
    return p && p->drafter_bits != 0 && !isnan(p->min_p);
}

/* Push node's candidates (COPSE_TREE_ROOT: the root's) onto the heap. */
static copse_status push_children(copse_tree *t, copse_tree_expand_cb cb, void *ud, int32_t node,
                                  int32_t width, float min_p, int32_t *nh, uint32_t *seq)
{
    int32_t m;
    copse_status st = ask(t, cb, ud, node, width, min_p, &m);
    if (st != COPSE_OK)
        return st;
    float plp = node == COPSE_TREE_ROOT ? 0.0f : t->nodes[node].logp;
    for (int32_t i = 0; i < m; i++) {
        assert(*nh < t->n_cands_cap);
        heap_push(t->cands, nh,
                  (cand){.logp = plp + logf(t->cb_p[i]), .p = t->cb_p[i], .parent = node,
                         .token = t->cb_ids[i], .seq = (*seq)++});
    }
    return COPSE_OK;
}

copse_status copse__tree_expand_best(copse_tree *t, copse_token root_token,
                                     const copse_tree_expand_params *params,
                                     copse_tree_expand_cb cb, void *ud)
{
    copse__tree_reset(t, root_token);
    if (!expand_params_ok(params) || !cb)
        return COPSE_EINVAL;
    int32_t budget = params->budget < t->cap ? params->budget : t->cap;
    int32_t max_depth = params->max_depth < COPSE_TREE_MAX_DEPTH ? params->max_depth : COPSE_TREE_MAX_DEPTH;
    int32_t width = params->max_children < t->max_children ? params->max_children : t->max_children;
    if (budget <= 0 || max_depth <= 0 || width <= 0)
        return COPSE_OK;

    /* The heap holds every pushed, not yet popped candidate: at most one
     * batch of `width` per expanded node (the root + budget nodes), so
     * (cap + 1) * max_children entries always suffice. Pops come in
     * non-increasing logp (a child never beats its parent), so the first
     * `budget` new nodes are the best `budget` reachable ones. */
    int32_t nh = 0;
    uint32_t seq = 0;
    copse_status st = push_children(t, cb, ud, COPSE_TREE_ROOT, width, params->min_p, &nh, &seq);
    while (st == COPSE_OK && t->n < budget && nh > 0) {
        cand c = heap_pop(t->cands, &nh);
        int32_t node;
        bool grew;
        st = insert(t, c.parent, c.token, c.p, params->drafter_bits, COPSE_TREE_NO_Q, true, &node,
                    &grew);
        /* A duplicate candidate token merged into its sibling: nothing new. */
        if (st == COPSE_OK && grew && t->nodes[node].depth < max_depth && t->n < budget)
            st = push_children(t, cb, ud, node, width, params->min_p, &nh, &seq);
    }
    return st;
}

/* qsort orders for the static expansion's level lists. */
static int cmp_rank(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    if (cand_before(x, y))
        return -1;
    if (cand_before(y, x))
        return 1;
    return 0;
}

static int cmp_seq(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Per-node candidate order for the static expansion: higher probability
 * first, ties by the callback's order. */
static int cmp_prob(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    if (x->p != y->p)
        return x->p > y->p ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

copse_status copse__tree_expand_static(copse_tree *t, copse_token root_token,
                                       const int32_t *widths, int32_t n_widths,
                                       const copse_tree_expand_params *params,
                                       copse_tree_expand_cb cb, void *ud)
{
    copse__tree_reset(t, root_token);
    if (!expand_params_ok(params) || !cb || n_widths < 0 || (n_widths > 0 && !widths))
        return COPSE_EINVAL;
    int32_t budget = params->budget < t->cap ? params->budget : t->cap;
    int32_t max_depth = params->max_depth < COPSE_TREE_MAX_DEPTH ? params->max_depth : COPSE_TREE_MAX_DEPTH;
    int32_t levels = n_widths < max_depth ? n_widths : max_depth;

    /* The previous level's nodes are [lvl_begin, lvl_end); the root level is
     * [COPSE_TREE_ROOT, 0), i.e. just the root. */
    int32_t lvl_begin = COPSE_TREE_ROOT, lvl_end = 0;
    for (int32_t d = 1; d <= levels && t->n < budget; d++) {
        int32_t k = widths[d - 1] < t->max_children ? widths[d - 1] : t->max_children;
        if (k <= 0)
            break;
        int32_t nc = 0;
        uint32_t seq = 0;
        for (int32_t par = lvl_begin; par < lvl_end; par++) {
            int32_t m;
            copse_status st = ask(t, cb, ud, par, t->max_children, params->min_p, &m);
            if (st != COPSE_OK)
                return st;
            /* This parent's top k, ties by callback order. */
            cand *mine = t->cands + nc;
            for (int32_t i = 0; i < m; i++)
                mine[i] = (cand){.p = t->cb_p[i], .token = t->cb_ids[i], .parent = par, .seq = (uint32_t)i};
            qsort(mine, (size_t)m, sizeof *mine, cmp_prob);
            if (m > k)
                m = k;
            float plp = par == COPSE_TREE_ROOT ? 0.0f : t->nodes[par].logp;
            for (int32_t i = 0; i < m; i++) {
                mine[i].logp = plp + logf(mine[i].p);
                mine[i].seq = seq++; /* level order: parent, then rank */
            }
            nc += m;
        }
        bool cut = nc > budget - t->n;
        if (cut) {
            qsort(t->cands, (size_t)nc, sizeof *t->cands, cmp_rank);
            nc = budget - t->n;
            qsort(t->cands, (size_t)nc, sizeof *t->cands, cmp_seq);
        }
        int32_t begin = t->n;
        for (int32_t i = 0; i < nc; i++) {
            int32_t node;
            bool grew;
            copse_status st = insert(t, t->cands[i].parent, t->cands[i].token, t->cands[i].p,
                                     params->drafter_bits, COPSE_TREE_NO_Q, true, &node, &grew);
            if (st != COPSE_OK)
                return st;
        }
        if (cut)
            break;
        lvl_begin = begin;
        lvl_end = t->n;
        if (lvl_begin == lvl_end)
            break;
    }
    return COPSE_OK;
}

/* ---------------------------------------------------------------- merge */

/* Keep the `budget` best nodes by logp (ties: lower index) with their
 * ancestors; compact the survivors in order. The rank list is built as
 * (logp, index) pairs in t->cands (n <= cap < its size) and sorted with the
 * expansion's order, whose tie-break (seq) is then the node index. Since a
 * child's logp never exceeds its parent's and a parent has the lower index,
 * ancestors rank first; the walk up keeps that true for any input. */
static void prune(copse_tree *t, int32_t budget)
{
    int32_t n = t->n;
    if (n <= 0)
        return;
    cand *r = t->cands;
    for (int32_t i = 0; i < n; i++)
        r[i] = (cand){.logp = t->nodes[i].logp, .seq = (uint32_t)i};
    qsort(r, (size_t)n, sizeof *r, cmp_rank);
    memset(t->keep, 0, (size_t)n);
    int32_t kept = 0;
    for (int32_t j = 0; j < n && kept < budget; j++) {
        int32_t i = (int32_t)r[j].seq;
        if (t->keep[i])
            continue;
        int32_t need = 0;
        for (int32_t a = i; a != COPSE_TREE_ROOT && !t->keep[a]; a = t->nodes[a].parent)
            need++;
        if (kept + need > budget)
            continue;
        for (int32_t a = i; a != COPSE_TREE_ROOT && !t->keep[a]; a = t->nodes[a].parent)
            t->keep[a] = 1;
        kept += need;
    }
    int32_t m = 0;
    for (int32_t i = 0; i < n; i++) {
        if (!t->keep[i]) {
            t->map[i] = -1;
            continue;
        }
        copse_tree_node nd = t->nodes[i];
        if (nd.parent != COPSE_TREE_ROOT)
            nd.parent = t->map[nd.parent];
        t->map[i] = m;
        t->nodes[m++] = nd;
    }
    t->n = m;
    relink(t);
}

copse_status copse__tree_merge(copse_tree *out, const copse_tree *const *in, int32_t n_in,
                               int32_t budget)
{
    if (n_in < 0 || (n_in > 0 && !in))
        return COPSE_EINVAL;
    copse__tree_reset(out, n_in > 0 ? in[0]->root : 0);
    int64_t total = 0;
    for (int32_t a = 0; a < n_in; a++) {
        if (!in[a] || in[a] == out || in[a]->root != out->root)
            return COPSE_EINVAL;
        total += in[a]->n;
    }
    for (int32_t a = 0; a < n_in; a++) {
        const copse_tree *src = in[a];
        if (src->n > out->cap || src->nq > out->cap)
            goto nospace;
        for (int32_t q = 0; q < src->nq; q++)
            out->qmap[q] = -1;
        for (int32_t i = 0; i < src->n; i++) {
            const copse_tree_node *s = &src->nodes[i];
            int32_t parent = s->parent == COPSE_TREE_ROOT ? COPSE_TREE_ROOT : out->map[s->parent];
            int32_t node;
            bool grew;
            /* Deterministic bits first, then each stochastic proposer. */
            uint32_t first_bits = s->onehot ? s->onehot : s->q_bit[0];
            int32_t first_q = COPSE_TREE_NO_Q;
            int32_t k0 = 0;
            if (!s->onehot) {
                /* A purely stochastic node: its first q entry creates it. */
                int32_t sq = s->q[0];
                if (out->qmap[sq] < 0) {
                    copse_tree_q qq = copse__tree_get_q(src, sq);
                    if (copse__tree_add_q(out, qq.ids, qq.p, qq.n, &out->qmap[sq]) != COPSE_OK)
                        goto nospace;
                }
                first_q = out->qmap[sq];
                k0 = 1;
            }
            copse_status st = insert(out, parent, s->token, s->p, first_bits, first_q, false, &node, &grew);
            if (st == COPSE_ENOSPACE)
                goto nospace;
            assert(st == COPSE_OK); /* depths are copied from a valid tree */
            for (int32_t k = k0; k < s->n_q; k++) {
                int32_t sq = s->q[k];
                if (out->qmap[sq] < 0) {
                    copse_tree_q qq = copse__tree_get_q(src, sq);
                    if (copse__tree_add_q(out, qq.ids, qq.p, qq.n, &out->qmap[sq]) != COPSE_OK)
                        goto nospace;
                }
                add_proposal(&out->nodes[node], s->q_bit[k], out->qmap[sq]);
            }
            out->map[i] = node;
        }
    }
    refresh_logp(out, 0);
    if (out->n > budget)
        prune(out, budget < 0 ? 0 : budget);
    if (total > budget) {
        /* Losslessness rule (tree.h): a selection that could have looked at
         * sampled values voids every q. */
        for (int32_t i = 0; i < out->n; i++) {
            copse_tree_node *nd = &out->nodes[i];
            for (int32_t k = 0; k < nd->n_q; k++)
                nd->onehot |= nd->q_bit[k];
            nd->n_q = 0;
        }
    }
    return COPSE_OK;
nospace:
    copse__tree_reset(out, out->root);
    return COPSE_ENOSPACE;
}

/* ---------------------------------------------------------------- flatten */

int32_t copse__tree_flat_rows(const copse_tree *t) { return t->n + 1; }

int32_t copse__tree_mask_words(int32_t n_rows) { return (n_rows + 63) / 64; }

void copse__tree_flatten(const copse_tree *t, copse_token *tokens, int32_t *depth, uint64_t *mask,
                         int32_t *parent_row)
{
    int32_t rows = t->n + 1;
    size_t w = (size_t)copse__tree_mask_words(rows);
    if (tokens)
        tokens[0] = t->root;
    if (depth)
        depth[0] = 0;
    if (parent_row)
        parent_row[0] = -1;
    if (mask) {
        memset(mask, 0, w * sizeof *mask);
        mask[0] = 1;
    }
    for (int32_t i = 0; i < t->n; i++) {
        const copse_tree_node *nd = &t->nodes[i];
        int32_t r = i + 1, pr = nd->parent + 1; /* the root's row is 0 */
        if (tokens)
            tokens[r] = nd->token;
        if (depth)
            depth[r] = nd->depth;
        if (parent_row)
            parent_row[r] = pr;
        if (mask) {
            /* The parent's row already holds the root and every ancestor. */
            uint64_t *row = mask + (size_t)r * w;
            memcpy(row, mask + (size_t)pr * w, w * sizeof *row);
            row[r / 64] |= 1ull << (r % 64);
        }
    }
}
