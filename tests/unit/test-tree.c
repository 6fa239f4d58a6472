/*
 * test-tree.c — token trees (core/spec/tree.c).
 *
 * Oracles: a brute-force enumeration of every candidate path of a
 * pseudo-random "drafter" (children and probabilities a hash of the path)
 * for best-first and static expansion; a path-keyed table rebuilt from the
 * inputs for the trie merge; an ancestor walk for the flattened masks.
 * Inputs are fresh each run (test_seed()).
 */
#include "test.h"

#include <stdbool.h>

#include "copse.h"
#include "spec/tree.h"

static uint64_t rng_state;

static uint32_t rnd(uint32_t n) /* uniform-ish in [0, n), n > 0 */
{
    return (uint32_t)(test_rand(&rng_state) % n);
}

static float rnd_p(void) /* in (0, 1] */
{
    return (float)(rnd(1u << 24) + 1) * 0x1p-24f;
}

static void check_valid(const copse_tree *t)
{
    char err[256] = "";
    copse_status st = copse__tree_validate(t, err, sizeof err);
    CHECK_STATUS(st, COPSE_OK);
    if (st != COPSE_OK)
        fprintf(stderr, "validate: %s\n", err);
}

/* ---------------------------------------------------------------- the hashed drafter */

#define MAXD 8

typedef struct oracle {
    uint64_t salt;
    int32_t width; /* most children per node */
    int32_t vocab;
    int calls;
} oracle;

static uint64_t mix(uint64_t h)
{
    return test_rand(&h);
}

/* Children of a path: a hash-chosen count in [0, width], distinct tokens,
 * probabilities in (0, 1]; the first cap of them. */
static int32_t oracle_children(const oracle *o, const copse_token *path, int32_t depth,
                               copse_token *ids, float *p, int32_t cap)
{
    uint64_t h = mix(o->salt ^ (uint64_t)depth);
    for (int32_t i = 0; i < depth; i++)
        h = mix(h ^ (uint64_t)(uint32_t)path[i] * 0x9e3779b97f4a7c15ull);
    int32_t n = (int32_t)(h % (uint64_t)(o->width + 1));
    if (depth == 0 && n == 0)
        n = 1;
    if (n > cap)
        n = cap;
    if (n > o->vocab)
        n = o->vocab;
    for (int32_t i = 0; i < n; i++) {
        copse_token id;
        bool dup;
        do {
            h = mix(h);
            id = (copse_token)(h % (uint64_t)o->vocab);
            dup = false;
            for (int32_t j = 0; j < i; j++)
                dup |= ids[j] == id;
        } while (dup);
        h = mix(h);
        ids[i] = id;
        p[i] = (float)((h >> 40) + 1) * 0x1p-24f;
    }
    return n;
}

static copse_status oracle_cb(void *ud, const copse_tree *t, int32_t node, copse_token *ids,
                              float *probs, int32_t cap, int32_t *n_out)
{
    oracle *o = ud;
    copse_token path[COPSE_TREE_MAX_DEPTH];
    int32_t d = copse__tree_path(t, node, path);
    o->calls++;
    *n_out = oracle_children(o, path, d, ids, probs, cap);
    return COPSE_OK;
}

/* Every reachable candidate's logp (computed as the tree does: parent's
 * logp + logf(p)), depth <= max_depth, probability >= min_p. */
static void brute(const oracle *o, copse_token *path, int32_t depth, float logp, int32_t max_depth,
                  int32_t cap, float min_p, float *out, int32_t *n)
{
    if (depth >= max_depth)
        return;
    copse_token ids[64];
    float p[64];
    int32_t m = oracle_children(o, path, depth, ids, p, cap);
    for (int32_t i = 0; i < m; i++) {
        if (p[i] < min_p)
            continue;
        float lp = logp + logf(p[i]);
        out[(*n)++] = lp;
        path[depth] = ids[i];
        brute(o, path, depth + 1, lp, max_depth, cap, min_p, out, n);
    }
}

static int cmp_float_desc(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x > y ? -1 : x < y;
}

/* ---------------------------------------------------------------- basics */

static void test_basics(void)
{
    copse_tree *t = NULL;
    CHECK_STATUS(copse__tree_create(0, 4, 0, &t), COPSE_EINVAL);
    CHECK(t == NULL);
    CHECK_STATUS(copse__tree_create(COPSE_TREE_MAX_NODES + 1, 4, 0, &t), COPSE_EINVAL);
    CHECK_STATUS(copse__tree_create(5, 4, 16, &t), COPSE_OK);
    if (!t)
        return;
    copse__tree_reset(t, 42);
    CHECK_INT_EQ(copse__tree_root_token(t), 42);
    CHECK_INT_EQ(copse__tree_size(t), 0);
    CHECK_INT_EQ(copse__tree_capacity(t), 5);
    CHECK_INT_EQ(copse__tree_flat_rows(t), 1);

    int32_t a, b, c, d;
    CHECK_STATUS(copse__tree_add(t, COPSE_TREE_ROOT, 7, 0.5f, 1, COPSE_TREE_NO_Q, &a), COPSE_OK);
    CHECK_STATUS(copse__tree_add(t, a, 8, 0.5f, 1, COPSE_TREE_NO_Q, &b), COPSE_OK);
    CHECK_STATUS(copse__tree_add(t, COPSE_TREE_ROOT, 9, 0.25f, 2, COPSE_TREE_NO_Q, &c), COPSE_OK);
    CHECK_INT_EQ(a, 0);
    CHECK_INT_EQ(b, 1);
    CHECK_INT_EQ(c, 2);
    CHECK_INT_EQ(copse__tree_node(t, b)->depth, 2);
    CHECK(copse__tree_node(t, b)->logp == logf(0.5f) + logf(0.5f));
    CHECK_INT_EQ(copse__tree_depth(t), 2);
    /* Same (parent, token): merged into node 0; higher p kept, subtree updated. */
    CHECK_STATUS(copse__tree_add(t, COPSE_TREE_ROOT, 7, 0.75f, 4, COPSE_TREE_NO_Q, &d), COPSE_OK);
    CHECK_INT_EQ(d, 0);
    CHECK_INT_EQ(copse__tree_size(t), 3);
    CHECK_INT_EQ(copse__tree_node(t, 0)->drafters, 5);
    CHECK(copse__tree_node(t, 0)->p == 0.75f);
    CHECK(copse__tree_node(t, 1)->logp == logf(0.75f) + logf(0.5f));
    CHECK_INT_EQ(copse__tree_find_child(t, COPSE_TREE_ROOT, 9), 2);
    CHECK_INT_EQ(copse__tree_find_child(t, 0, 9), -1);
    copse_token path[4];
    CHECK_INT_EQ(copse__tree_path(t, 1, path), 2);
    CHECK_INT_EQ(path[0], 7);
    CHECK_INT_EQ(path[1], 8);
    check_valid(t);

    /* q records and stochastic entries. */
    const copse_token qi[3] = {8, 3, 5};
    const float qp[3] = {0.5f, 0.25f, 0.25f};
    int32_t q;
    CHECK_STATUS(copse__tree_add_q(t, qi, qp, 3, &q), COPSE_OK);
    copse_tree_q got = copse__tree_get_q(t, q);
    CHECK_INT_EQ(got.n, 3);
    CHECK_INT_EQ(got.ids[1], 3);
    CHECK(got.p[0] == 0.5f);
    CHECK_STATUS(copse__tree_add(t, a, 8, 0.5f, 2, q, NULL), COPSE_OK);
    CHECK_INT_EQ(copse__tree_node(t, 1)->n_q, 1);
    CHECK_INT_EQ(copse__tree_node(t, 1)->q_bit[0], 2);
    CHECK_INT_EQ(copse__tree_node(t, 1)->drafters, 3);
    CHECK_INT_EQ(copse__tree_node(t, 1)->onehot, 1);
    CHECK_STATUS(copse__tree_add(t, a, 8, 0.5f, 6, q, NULL), COPSE_EINVAL); /* two bits with q */
    CHECK_STATUS(copse__tree_add(t, a, 8, 0.5f, 2, 99, NULL), COPSE_EINVAL);
    CHECK_STATUS(copse__tree_add(t, 17, 8, 0.5f, 2, COPSE_TREE_NO_Q, NULL), COPSE_EINVAL);
    CHECK_STATUS(copse__tree_add(t, a, 8, 0.5f, 0, COPSE_TREE_NO_Q, NULL), COPSE_EINVAL);
    CHECK_STATUS(copse__tree_add(t, a, 8, NAN, 1, COPSE_TREE_NO_Q, NULL), COPSE_EINVAL);
    CHECK_STATUS(copse__tree_add_q(t, qi, qp, 0, &q), COPSE_EINVAL);
    const float bad[1] = {-1.0f};
    CHECK_STATUS(copse__tree_add_q(t, qi, bad, 1, &q), COPSE_EINVAL);
    float big[20] = {0};
    copse_token bigi[20] = {0};
    CHECK_STATUS(copse__tree_add_q(t, bigi, big, 20, &q), COPSE_ENOSPACE); /* arena is 16 */
    check_valid(t);

    /* Capacity. */
    CHECK_STATUS(copse__tree_add(t, COPSE_TREE_ROOT, 1, 0.1f, 1, COPSE_TREE_NO_Q, NULL), COPSE_OK);
    CHECK_STATUS(copse__tree_add(t, COPSE_TREE_ROOT, 2, 0.1f, 1, COPSE_TREE_NO_Q, NULL), COPSE_OK);
    CHECK_STATUS(copse__tree_add(t, COPSE_TREE_ROOT, 3, 0.1f, 1, COPSE_TREE_NO_Q, NULL), COPSE_ENOSPACE);
    CHECK_INT_EQ(copse__tree_size(t), 5);
    /* Out-of-range p is clamped into (0, 1]. */
    copse__tree_reset(t, 1);
    CHECK_STATUS(copse__tree_add(t, COPSE_TREE_ROOT, 1, 2.0f, 1, COPSE_TREE_NO_Q, &a), COPSE_OK);
    CHECK(copse__tree_node(t, a)->p == 1.0f);
    CHECK_STATUS(copse__tree_add(t, COPSE_TREE_ROOT, 2, 0.0f, 1, COPSE_TREE_NO_Q, &a), COPSE_OK);
    CHECK(copse__tree_node(t, a)->p > 0.0f);
    check_valid(t);
    copse__tree_destroy(t);

    /* Depth limit. */
    CHECK_STATUS(copse__tree_create(COPSE_TREE_MAX_DEPTH + 1, 1, 0, &t), COPSE_OK);
    if (!t)
        return;
    int32_t par = COPSE_TREE_ROOT;
    for (int32_t i = 0; i < COPSE_TREE_MAX_DEPTH; i++)
        CHECK_STATUS(copse__tree_add(t, par, 3, 0.9f, 1, COPSE_TREE_NO_Q, &par), COPSE_OK);
    CHECK_STATUS(copse__tree_add(t, par, 3, 0.9f, 1, COPSE_TREE_NO_Q, NULL), COPSE_ERANGE);
    CHECK_INT_EQ(copse__tree_depth(t), COPSE_TREE_MAX_DEPTH);
    check_valid(t);
    copse__tree_destroy(t);
    copse__tree_destroy(NULL);
}

/* ---------------------------------------------------------------- best-first expansion */

static void test_expand_best(void)
{
    copse_tree *t = NULL;
    CHECK_STATUS(copse__tree_create(64, 6, 0, &t), COPSE_OK);
    if (!t)
        return;
    static float all[20000];
    for (int iter = 0; iter < 300; iter++) {
        oracle o = {.salt = test_rand(&rng_state), .width = 1 + (int32_t)rnd(4),
                    .vocab = 2 + (int32_t)rnd(50)};
        copse_tree_expand_params ep = {
            .budget = (int32_t)rnd(70), /* may exceed the capacity: clamped */
            .max_depth = 1 + (int32_t)rnd(6),
            .max_children = 1 + (int32_t)rnd(6),
            .min_p = rnd(3) == 0 ? 0.3f : 0.0f,
            .drafter_bits = 1u << rnd(32),
        };
        if (iter % 10 == 0)
            ep.max_children = 1; /* a chain */
        copse_status st = copse__tree_expand_best(t, 5, &ep, oracle_cb, &o);
        CHECK_STATUS(st, COPSE_OK);
        check_valid(t);
        int32_t budget = ep.budget < 64 ? ep.budget : 64;
        int32_t n_all = 0;
        copse_token path[MAXD];
        brute(&o, path, 0, 0.0f, ep.max_depth, ep.max_children, ep.min_p, all, &n_all);
        qsort(all, (size_t)n_all, sizeof *all, cmp_float_desc);
        int32_t want = n_all < budget ? n_all : budget;
        int32_t n = copse__tree_size(t);
        CHECK_INT_EQ(n, want);
        CHECK_INT_EQ(copse__tree_root_token(t), 5);
        float got[64];
        bool chain_ok = true;
        for (int32_t i = 0; i < n; i++) {
            const copse_tree_node *nd = copse__tree_node(t, i);
            got[i] = nd->logp;
            CHECK(nd->depth <= ep.max_depth);
            CHECK(nd->drafters == ep.drafter_bits && nd->onehot == ep.drafter_bits && nd->n_q == 0);
            if (ep.max_children == 1 && nd->parent != i - 1)
                chain_ok = false;
        }
        CHECK(chain_ok);
        qsort(got, (size_t)n, sizeof *got, cmp_float_desc);
        int mism = 0;
        for (int32_t i = 0; i < n && i < want; i++)
            mism += got[i] != all[i];
        CHECK_INT_EQ(mism, 0);
        /* The callback ran for the root and at most once per node. */
        CHECK(o.calls <= n + 1 && (o.calls >= 1 || budget == 0));
    }
    /* A callback error stops the expansion and comes back. */
    copse_tree_expand_params ep = {.budget = 8, .max_depth = 3, .max_children = 2, .drafter_bits = 1};
    CHECK_STATUS(copse__tree_expand_best(t, 1, &ep, NULL, NULL), COPSE_EINVAL);
    ep.drafter_bits = 0;
    oracle o = {.salt = 1, .width = 2, .vocab = 10};
    CHECK_STATUS(copse__tree_expand_best(t, 1, &ep, oracle_cb, &o), COPSE_EINVAL);
    copse__tree_destroy(t);
}

/* ---------------------------------------------------------------- static expansion */

static copse_status fail_cb(void *ud, const copse_tree *t, int32_t node, copse_token *ids,
                            float *probs, int32_t cap, int32_t *n_out)
{
    (void)ud, (void)t, (void)node, (void)ids, (void)probs, (void)cap, (void)n_out;
    return COPSE_EIO;
}

/* Children tokens of `node` must be exactly the oracle's top k by p. */
static bool children_are_top_k(const copse_tree *t, const oracle *o, int32_t node, int32_t k)
{
    copse_token path[COPSE_TREE_MAX_DEPTH];
    int32_t d = copse__tree_path(t, node, path);
    copse_token ids[64];
    float p[64];
    int32_t m = oracle_children(o, path, d, ids, p, copse__tree_max_children(t));
    /* selection sort by p desc, stable */
    for (int32_t i = 0; i < m; i++) {
        int32_t best = i;
        for (int32_t j = i + 1; j < m; j++)
            if (p[j] > p[best])
                best = j;
        copse_token ti = ids[best];
        float pi = p[best];
        for (int32_t j = best; j > i; j--) {
            ids[j] = ids[j - 1];
            p[j] = p[j - 1];
        }
        ids[i] = ti;
        p[i] = pi;
    }
    if (m > k)
        m = k;
    int32_t n = 0;
    for (int32_t c = copse__tree_first_child(t, node); c >= 0; c = copse__tree_node(t, c)->next_sibling) {
        if (n >= m || copse__tree_node(t, c)->token != ids[n])
            return false;
        n++;
    }
    return n == m;
}

static void test_expand_static(void)
{
    copse_tree *full = NULL, *t = NULL;
    CHECK_STATUS(copse__tree_create(512, 8, 0, &full), COPSE_OK);
    CHECK_STATUS(copse__tree_create(512, 8, 0, &t), COPSE_OK);
    if (!full || !t)
        goto done;

    /* SpecInfer's default vector on a drafter that always has 8 children. */
    {
        oracle o = {.salt = test_rand(&rng_state), .width = 8, .vocab = 1000};
        /* width 8 but the hashed count may be smaller: count per level from the tree. */
        const int32_t v[8] = {1, 1, 3, 1, 1, 1, 1, 1};
        copse_tree_expand_params ep = {.budget = 512, .max_depth = 8, .drafter_bits = 1};
        CHECK_STATUS(copse__tree_expand_static(full, 0, v, 8, &ep, oracle_cb, &o), COPSE_OK);
        check_valid(full);
        CHECK(copse__tree_depth(full) <= 8);
        CHECK(copse__tree_size(full) <= 1 + 1 + 3 + 3 * 5);
        bool ok = children_are_top_k(full, &o, COPSE_TREE_ROOT, 1);
        for (int32_t i = 0; i < copse__tree_size(full); i++) {
            int32_t d = copse__tree_node(full, i)->depth;
            ok &= children_are_top_k(full, &o, i, d < 8 ? v[d] : 0);
        }
        CHECK(ok);
    }

    for (int iter = 0; iter < 200; iter++) {
        oracle o = {.salt = test_rand(&rng_state), .width = 1 + (int32_t)rnd(5), .vocab = 100};
        int32_t v[6], nv = 1 + (int32_t)rnd(6);
        for (int32_t i = 0; i < nv; i++)
            v[i] = 1 + (int32_t)rnd(3);
        copse_tree_expand_params ep = {.budget = 512, .max_depth = 1 + (int32_t)rnd(6), .drafter_bits = 2};
        CHECK_STATUS(copse__tree_expand_static(full, 3, v, nv, &ep, oracle_cb, &o), COPSE_OK);
        check_valid(full);
        int32_t levels = nv < ep.max_depth ? nv : ep.max_depth;
        bool ok = children_are_top_k(full, &o, COPSE_TREE_ROOT, v[0]);
        int32_t per_level[8] = {0};
        for (int32_t i = 0; i < copse__tree_size(full); i++) {
            int32_t d = copse__tree_node(full, i)->depth;
            per_level[d]++;
            ok &= d <= levels;
            ok &= children_are_top_k(full, &o, i, d < levels ? v[d] : 0);
            /* levels are contiguous: depth never decreases along node order */
            ok &= i == 0 || copse__tree_node(full, i - 1)->depth <= d;
        }
        CHECK(ok);

        /* With a budget: the levels before the cut whole, the cut level's
         * best by logp. */
        int32_t n_full = copse__tree_size(full);
        ep.budget = (int32_t)rnd((uint32_t)n_full + 2);
        CHECK_STATUS(copse__tree_expand_static(t, 3, v, nv, &ep, oracle_cb, &o), COPSE_OK);
        check_valid(t);
        int32_t want = ep.budget < n_full ? ep.budget : n_full;
        CHECK_INT_EQ(copse__tree_size(t), want);
        int32_t below = 0, cut = 1;
        while (cut <= levels && below + per_level[cut] <= want)
            below += per_level[cut++];
        /* nodes of depth < cut identical to the full tree's first `below` */
        bool same = true;
        for (int32_t i = 0; i < below && i < copse__tree_size(t); i++) {
            const copse_tree_node *a = copse__tree_node(t, i), *b = copse__tree_node(full, i);
            same &= a->token == b->token && a->parent == b->parent && a->logp == b->logp;
        }
        CHECK(same);
        if (want > below && cut <= levels) {
            float lv[512], lt[512];
            int32_t nl = 0, nt = 0;
            for (int32_t i = 0; i < n_full; i++)
                if (copse__tree_node(full, i)->depth == cut)
                    lv[nl++] = copse__tree_node(full, i)->logp;
            for (int32_t i = below; i < copse__tree_size(t); i++)
                lt[nt++] = copse__tree_node(t, i)->logp;
            qsort(lv, (size_t)nl, sizeof *lv, cmp_float_desc);
            qsort(lt, (size_t)nt, sizeof *lt, cmp_float_desc);
            CHECK_INT_EQ(nt, want - below);
            int mism = 0;
            for (int32_t i = 0; i < nt; i++)
                mism += lt[i] != lv[i];
            CHECK_INT_EQ(mism, 0);
        }
    }
    {
        const int32_t v[2] = {2, 2};
        copse_tree_expand_params ep = {.budget = 8, .max_depth = 3, .max_children = 2, .drafter_bits = 1};
        CHECK_STATUS(copse__tree_expand_static(t, 0, v, 2, &ep, fail_cb, NULL), COPSE_EIO);
        CHECK_STATUS(copse__tree_expand_best(t, 0, &ep, fail_cb, NULL), COPSE_EIO);
    }
done:
    copse__tree_destroy(full);
    copse__tree_destroy(t);
}

/* ---------------------------------------------------------------- merge */

typedef struct rec {
    int32_t depth;
    copse_token path[MAXD];
    uint32_t bits;
    float p;
    float logp;
} rec;

static int cmp_rec(const void *a, const void *b)
{
    const rec *x = a, *y = b;
    if (x->depth != y->depth)
        return x->depth < y->depth ? -1 : 1;
    for (int32_t i = 0; i < x->depth; i++)
        if (x->path[i] != y->path[i])
            return x->path[i] < y->path[i] ? -1 : 1;
    return 0;
}

static int32_t content(const copse_tree *t, rec *r)
{
    int32_t n = copse__tree_size(t);
    for (int32_t i = 0; i < n; i++) {
        const copse_tree_node *nd = copse__tree_node(t, i);
        memset(&r[i], 0, sizeof r[i]);
        r[i].depth = copse__tree_path(t, i, r[i].path);
        r[i].bits = nd->drafters;
        r[i].p = nd->p;
        r[i].logp = nd->logp;
    }
    qsort(r, (size_t)n, sizeof *r, cmp_rec);
    return n;
}

static bool same_content(const rec *a, int32_t na, const rec *b, int32_t nb)
{
    if (na != nb)
        return false;
    for (int32_t i = 0; i < na; i++)
        if (cmp_rec(&a[i], &b[i]) != 0 || a[i].bits != b[i].bits || a[i].p != b[i].p ||
            a[i].logp != b[i].logp)
            return false;
    return true;
}

/* A random tree: n adds over a small vocabulary (so trees overlap), random
 * single drafter bits from `bits`, some stochastic with a q record. */
static void random_tree(copse_tree *t, copse_token root, int32_t n, uint32_t bits, int32_t vocab)
{
    copse__tree_reset(t, root);
    for (int32_t k = 0; k < n; k++) {
        int32_t sz = copse__tree_size(t);
        int32_t parent = sz == 0 || rnd(4) == 0 ? COPSE_TREE_ROOT : (int32_t)rnd((uint32_t)sz);
        if (parent != COPSE_TREE_ROOT && copse__tree_node(t, parent)->depth >= MAXD)
            parent = COPSE_TREE_ROOT;
        uint32_t b;
        do
            b = 1u << rnd(32);
        while (!(b & bits));
        int32_t q = COPSE_TREE_NO_Q;
        if (rnd(3) == 0) {
            copse_token ids[4] = {0, 1, 2, 3};
            float p[4] = {rnd_p(), rnd_p(), rnd_p(), rnd_p()};
            if (copse__tree_add_q(t, ids, p, 4, &q) != COPSE_OK)
                q = COPSE_TREE_NO_Q;
        }
        copse_status st = copse__tree_add(t, parent, (copse_token)rnd((uint32_t)vocab), rnd_p(), b, q, NULL);
        CHECK(st == COPSE_OK || st == COPSE_ENOSPACE);
    }
}

static void test_merge(void)
{
    enum { CAP = 200 };
    copse_tree *a = NULL, *b = NULL, *m = NULL, *m2 = NULL;
    CHECK_STATUS(copse__tree_create(CAP / 2, 4, 4 * CAP, &a), COPSE_OK);
    CHECK_STATUS(copse__tree_create(CAP / 2, 4, 4 * CAP, &b), COPSE_OK);
    CHECK_STATUS(copse__tree_create(CAP, 4, 8 * CAP, &m), COPSE_OK);
    CHECK_STATUS(copse__tree_create(CAP, 4, 8 * CAP, &m2), COPSE_OK);
    if (!a || !b || !m || !m2)
        goto done;
    static rec ra[CAP], rb[CAP], rm[CAP], rm2[CAP], ru[2 * CAP];
    for (int iter = 0; iter < 300; iter++) {
        int32_t vocab = 2 + (int32_t)rnd(5);
        random_tree(a, 9, (int32_t)rnd(CAP / 2 + 1), 0x3, vocab);
        random_tree(b, 9, (int32_t)rnd(CAP / 2 + 1), 0x6, vocab);
        check_valid(a);
        check_valid(b);
        int32_t na = content(a, ra), nb = content(b, rb);

        /* Oracle union: records by path, bits OR-ed, higher p. */
        int32_t nu = 0;
        for (int32_t i = 0; i < na; i++)
            ru[nu++] = ra[i];
        for (int32_t i = 0; i < nb; i++) {
            int32_t j = 0;
            while (j < nu && cmp_rec(&ru[j], &rb[i]) != 0)
                j++;
            if (j == nu)
                ru[nu++] = rb[i];
            else {
                ru[j].bits |= rb[i].bits;
                ru[j].p = ru[j].p > rb[i].p ? ru[j].p : rb[i].p;
            }
        }
        qsort(ru, (size_t)nu, sizeof *ru, cmp_rec);
        /* logp along the path, in depth order (records are depth-sorted) */
        for (int32_t i = 0; i < nu; i++) {
            float plp = 0.0f;
            if (ru[i].depth > 1) {
                rec key = ru[i];
                key.depth--;
                const rec *par = bsearch(&key, ru, (size_t)nu, sizeof *ru, cmp_rec);
                CHECK(par != NULL);
                if (par)
                    plp = par->logp;
            }
            ru[i].logp = plp + logf(ru[i].p);
        }

        const copse_tree *in[2] = {a, b};
        CHECK_STATUS(copse__tree_merge(m, in, 2, CAP), COPSE_OK);
        check_valid(m);
        int32_t nm = content(m, rm);
        CHECK(same_content(rm, nm, ru, nu));
        /* Within budget: q entries kept, each equal to its input's q. */
        int32_t n_q_in = 0, n_q_out = 0;
        for (int32_t i = 0; i < copse__tree_size(a); i++)
            n_q_in += copse__tree_node(a, i)->n_q;
        for (int32_t i = 0; i < copse__tree_size(b); i++)
            n_q_in += copse__tree_node(b, i)->n_q;
        bool q_same = true;
        for (int32_t i = 0; i < copse__tree_size(m); i++) {
            const copse_tree_node *nd = copse__tree_node(m, i);
            n_q_out += nd->n_q;
            for (int32_t k = 0; k < nd->n_q; k++) {
                copse_tree_q q = copse__tree_get_q(m, nd->q[k]);
                q_same &= q.n == 4 && q.ids[3] == 3 && q.p[0] > 0.0f;
            }
        }
        CHECK(q_same);
        /* Distinct proposer bits per node never collide across a (0x3) and
         * b (0x6) except bit 2, which keeps the first q only. */
        CHECK(n_q_out <= n_q_in);

        /* Commutative in content, idempotent. */
        const copse_tree *ba[2] = {b, a};
        CHECK_STATUS(copse__tree_merge(m2, ba, 2, CAP), COPSE_OK);
        int32_t nm2 = content(m2, rm2);
        CHECK(same_content(rm2, nm2, rm, nm));
        const copse_tree *aa[2] = {a, a};
        CHECK_STATUS(copse__tree_merge(m2, aa, 2, CAP), COPSE_OK);
        nm2 = content(m2, rm2);
        CHECK(same_content(rm2, nm2, ra, na));
        const copse_tree *mm[1] = {m};
        CHECK_STATUS(copse__tree_merge(m2, mm, 1, CAP), COPSE_OK);
        nm2 = content(m2, rm2);
        CHECK(same_content(rm2, nm2, rm, nm));

        /* Under a budget: the best by logp, ancestor-closed (validate),
         * a subset of the union, every q demoted (inputs exceed it). */
        int32_t budget = (int32_t)rnd((uint32_t)nu + 1);
        CHECK_STATUS(copse__tree_merge(m2, in, 2, budget), COPSE_OK);
        check_valid(m2);
        nm2 = content(m2, rm2);
        CHECK_INT_EQ(nm2, budget < nu ? budget : nu);
        bool subset = true, demoted = true;
        for (int32_t i = 0; i < nm2; i++) {
            const rec *u = bsearch(&rm2[i], ru, (size_t)nu, sizeof *ru, cmp_rec);
            subset &= u && u->bits == rm2[i].bits && u->logp == rm2[i].logp;
        }
        for (int32_t i = 0; i < copse__tree_size(m2); i++)
            demoted &= copse__tree_node(m2, i)->n_q == 0 || na + nb <= budget;
        CHECK(subset);
        CHECK(demoted);
        float lu[2 * CAP], lm[CAP];
        for (int32_t i = 0; i < nu; i++)
            lu[i] = ru[i].logp;
        for (int32_t i = 0; i < nm2; i++)
            lm[i] = rm2[i].logp;
        qsort(lu, (size_t)nu, sizeof *lu, cmp_float_desc);
        qsort(lm, (size_t)nm2, sizeof *lm, cmp_float_desc);
        int mism = 0;
        for (int32_t i = 0; i < nm2; i++)
            mism += lm[i] != lu[i];
        CHECK_INT_EQ(mism, 0);
    }

    /* Errors: different roots, out as an input, union too large. */
    {
        copse__tree_reset(a, 1);
        copse__tree_reset(b, 2);
        const copse_tree *in[2] = {a, b};
        CHECK_STATUS(copse__tree_merge(m, in, 2, CAP), COPSE_EINVAL);
        const copse_tree *self[1] = {m};
        CHECK_STATUS(copse__tree_merge(m, self, 1, CAP), COPSE_EINVAL);
        copse_tree *small = NULL;
        CHECK_STATUS(copse__tree_create(4, 1, 0, &small), COPSE_OK);
        if (small) {
            random_tree(a, 1, 40, 1, 50);
            const copse_tree *one[1] = {a};
            CHECK_STATUS(copse__tree_merge(small, one, 1, 4), COPSE_ENOSPACE);
            CHECK_INT_EQ(copse__tree_size(small), 0);
            copse__tree_destroy(small);
        }
        CHECK_STATUS(copse__tree_merge(m, NULL, 0, CAP), COPSE_OK);
        CHECK_INT_EQ(copse__tree_size(m), 0);
    }
done:
    copse__tree_destroy(a);
    copse__tree_destroy(b);
    copse__tree_destroy(m);
    copse__tree_destroy(m2);
}

/* ---------------------------------------------------------------- flatten */

static bool is_ancestor_or_self(const copse_tree *t, int32_t k_row, int32_t j_row)
{
    if (k_row == 0 || k_row == j_row)
        return true;
    for (int32_t a = j_row - 1; a != COPSE_TREE_ROOT; a = copse__tree_node(t, a)->parent)
        if (a == k_row - 1)
            return true;
    return false;
}

static void test_flatten(void)
{
    copse_tree *t = NULL;
    CHECK_STATUS(copse__tree_create(300, 1, 0, &t), COPSE_OK);
    if (!t)
        return;
    static copse_token tok[301];
    static int32_t depth[301], prow[301];
    static uint64_t mask[301 * 5];
    for (int iter = 0; iter < 60; iter++) {
        int32_t n = iter < 5 ? iter : (int32_t)rnd(300);
        random_tree(t, 77, n, 1, 1000);
        int32_t rows = copse__tree_flat_rows(t);
        int32_t w = copse__tree_mask_words(rows);
        CHECK_INT_EQ(rows, copse__tree_size(t) + 1);
        CHECK_INT_EQ(w, (rows + 63) / 64);
        memset(mask, 0xAB, sizeof mask);
        copse__tree_flatten(t, tok, depth, mask, prow);
        CHECK_INT_EQ(tok[0], 77);
        CHECK_INT_EQ(depth[0], 0);
        CHECK_INT_EQ(prow[0], -1);
        int bad = 0;
        for (int32_t j = 1; j < rows; j++) {
            const copse_tree_node *nd = copse__tree_node(t, j - 1);
            bad += tok[j] != nd->token || depth[j] != nd->depth || prow[j] != nd->parent + 1;
            bad += depth[j] != depth[prow[j]] + 1;
        }
        for (int32_t j = 0; j < rows; j++)
            for (int32_t k = 0; k < w * 64; k++) {
                bool bit = (mask[(size_t)j * (size_t)w + (size_t)(k / 64)] >> (k % 64)) & 1;
                bool want = k < rows && is_ancestor_or_self(t, k, j);
                bad += bit != want;
            }
        CHECK_INT_EQ(bad, 0);
        /* NULL outputs are allowed. */
        copse__tree_flatten(t, tok, NULL, NULL, NULL);
    }
    copse__tree_destroy(t);
}

int main(void)
{
    rng_state = test_seed();
    test_basics();
    test_expand_best();
    test_expand_static();
    test_merge();
    test_flatten();
    return test_exit();
}
