/*
 * test-drafters.c — the model-free drafters and the drafter registry
 * (core/spec/drafter.h, core/spec/drafters/).
 *
 * Oracles: hand-built histories whose continuations are known; a brute-force
 * scan of the history for the n-gram index; an index rebuilt from scratch
 * for the incrementally updated one; the suffix pool's own invariant check
 * (counts, hash, accounting) after every step of a random workload. Every
 * proposed tree is checked with copse__tree_validate.
 */
#include "test.h"

#include <limits.h>
#include <stdbool.h>

#include "copse.h"
#include "spec/drafter.h"
#include "spec/drafters/drafters-impl.h"
#include "spec/tree.h"

/* ---------------------------------------------------------------- helpers */

static uint64_t rng_state;

static uint32_t rnd(uint32_t n) /* in [0, n), n > 0 */
{
    return (uint32_t)(test_rand(&rng_state) % n);
}

static copse_drafter_params params_vocab(int32_t n_vocab)
{
    copse_drafter_params p = copse__drafter_default_params();
    p.n_vocab = n_vocab;
    return p;
}

static copse_drafter *make(const char *spec, const copse_drafter_params *p)
{
    copse_drafter *d = NULL;
    char err[256] = "";
    copse_status st = copse__drafter_create(spec, p, &d, err, sizeof err);
    CHECK_STATUS(st, COPSE_OK);
    if (st != COPSE_OK)
        fprintf(stderr, "create %s: %s\n", spec, err);
    return d;
}

static copse_tree *make_tree(int32_t max_nodes)
{
    copse_tree *t = NULL;
    CHECK_STATUS(copse__tree_create(max_nodes, 16, 0, &t), COPSE_OK);
    return t;
}

static void check_tree(const copse_tree *t, uint32_t bit)
{
    char err[256] = "";
    copse_status st = copse__tree_validate(t, err, sizeof err);
    CHECK_STATUS(st, COPSE_OK);
    if (st != COPSE_OK)
        fprintf(stderr, "tree: %s\n", err);
    for (int32_t i = 0; i < copse__tree_size(t); i++) {
        const copse_tree_node *n = copse__tree_node(t, i);
        CHECK_INT_EQ(n->drafters, bit);
        CHECK_INT_EQ(n->onehot, bit);
        CHECK_INT_EQ(n->n_q, 0);
    }
}

/* Propose with ctx = the whole history given, return the tree size. */
static int32_t propose(copse_drafter *d, int32_t seq, const int32_t *ctx, int32_t n, int32_t budget,
                       int32_t depth, copse_tree *t)
{
    copse_status st = d->iface.propose(d, seq, ctx, n, budget, depth, t);
    CHECK_STATUS(st, COPSE_OK);
    CHECK_INT_EQ(copse__tree_root_token(t), ctx[n - 1]);
    check_tree(t, 1);
    return copse__tree_size(t);
}

/* Does the tree hold the path toks[0..n) below the root? */
static bool has_path(const copse_tree *t, const int32_t *toks, int32_t n)
{
    int32_t at = COPSE_TREE_ROOT;
    for (int32_t i = 0; i < n; i++) {
        at = copse__tree_find_child(t, at, toks[i]);
        if (at < 0)
            return false;
    }
    return true;
}

/* Children tokens of node (COPSE_TREE_ROOT for the root), in child order. */
static int32_t children(const copse_tree *t, int32_t node, int32_t *out, float *p, int32_t cap)
{
    int32_t n = 0;
    for (int32_t c = copse__tree_first_child(t, node); c >= 0 && n < cap;
         c = copse__tree_node(t, c)->next_sibling, n++) {
        out[n] = copse__tree_node(t, c)->token;
        if (p)
            p[n] = copse__tree_node(t, c)->p;
    }
    return n;
}

/* The child of node with the highest p (first on ties), -1 if none. */
static int32_t best_child(const copse_tree *t, int32_t node)
{
    int32_t best = -1;
    for (int32_t c = copse__tree_first_child(t, node); c >= 0; c = copse__tree_node(t, c)->next_sibling)
        if (best < 0 || copse__tree_node(t, c)->p > copse__tree_node(t, best)->p)
            best = c;
    return best;
}

#define LEN(a) ((int32_t)(sizeof(a) / sizeof((a)[0])))

/* ---------------------------------------------------------------- ngram */

static void test_ngram_repeated_phrase(void)
{
    copse_drafter_params p = params_vocab(100);
    copse_drafter *d = make("ngram", &p);
    copse_tree *t = make_tree(64);
    if (!d || !t)
        goto done;
    CHECK_STR_EQ(d->name, "ngram");
    CHECK(!d->has_q);
    /* A B C D E F x y B C  ->  D E F x y ... */
    const int32_t prompt[] = {10, 11, 12, 13, 14, 15, 30, 31, 11, 12};
    CHECK_STATUS(d->iface.seq_begin(d, 0, prompt, LEN(prompt), 64), COPSE_OK);
    int32_t n = propose(d, 0, prompt, LEN(prompt), 8, 3, t);
    CHECK_INT_EQ(n, 3);
    const int32_t want[] = {13, 14, 15};
    CHECK(has_path(t, want, 3));
    CHECK_INT_EQ(copse__tree_depth(t), 3);
    for (int32_t i = 0; i < n; i++)
        CHECK(copse__tree_node(t, i)->p == 1.0f);
    /* Deeper: the chain runs on through the history (D E F x y B C), then
     * periodically (D ...), up to the budget. */
    n = propose(d, 0, prompt, LEN(prompt), 8, 16, t);
    const int32_t want_long[] = {13, 14, 15, 30, 31, 11, 12, 13};
    CHECK_INT_EQ(n, 8);
    CHECK(has_path(t, want_long, 8));
    /* After observing D, the match is "B C D" -> E F ... */
    const int32_t acc[] = {13};
    CHECK_STATUS(d->iface.observe(d, 0, acc, 1), COPSE_OK);
    const int32_t ctx2[] = {10, 11, 12, 13, 14, 15, 30, 31, 11, 12, 13};
    n = propose(d, 0, ctx2, LEN(ctx2), 2, 16, t);
    const int32_t want2[] = {14, 15};
    CHECK_INT_EQ(n, 2);
    CHECK(has_path(t, want2, 2));
    d->iface.seq_end(d, 0);
done:
    copse__tree_destroy(t);
    copse__drafter_destroy(d);
}

static void test_ngram_prefers_longer(void)
{
    copse_drafter_params p = params_vocab(100);
    copse_drafter *d = make("ngram", &p);
    p.ngram_max_n = 2;
    copse_drafter *d2 = make("ngram", &p);
    copse_tree *t = make_tree(64);
    if (!d || !d2 || !t)
        goto done;
    /* "1 2 3" is followed by 9 once; "2 3" by 7 twice (more often, more
     * recently) and by 8 once (most recently). The 3-gram match wins. */
    const int32_t h[] = {1, 2, 3, 9, 50, 5, 2, 3, 7, 51, 6, 2, 3, 7, 52, 4, 2, 3, 8, 53, 1, 2, 3};
    CHECK_STATUS(d->iface.seq_begin(d, 3, h, LEN(h), 100), COPSE_OK);
    CHECK_STATUS(d2->iface.seq_begin(d2, 3, h, LEN(h), 100), COPSE_OK);
    int32_t kids[8];
    float kp[8];
    propose(d, 3, h, LEN(h), 16, 1, t);
    CHECK_INT_EQ(children(t, COPSE_TREE_ROOT, kids, kp, 8), 1);
    CHECK_INT_EQ(kids[0], 9);
    /* With 2-grams only: siblings 7 (2 of 4: p 0.5), 9 and 8 (1 of 4); the
     * most frequent ranks first, then the most recent. */
    int32_t n = propose(d2, 3, h, LEN(h), 16, 1, t);
    CHECK_INT_EQ(n, 3);
    CHECK_INT_EQ(children(t, COPSE_TREE_ROOT, kids, kp, 8), 3);
    int32_t b = best_child(t, COPSE_TREE_ROOT);
    CHECK(b >= 0 && copse__tree_node(t, b)->token == 7);
    CHECK(b >= 0 && fabsf(copse__tree_node(t, b)->p - 0.5f) < 1e-6f);
    CHECK_INT_EQ(copse__tree_node(t, 0)->token, 7);
    CHECK_INT_EQ(copse__tree_node(t, 1)->token, 8); /* newest of the ties */
    CHECK_INT_EQ(copse__tree_node(t, 2)->token, 9);
    /* Budget 1: only the best. */
    n = propose(d2, 3, h, LEN(h), 1, 4, t);
    CHECK_INT_EQ(n, 1);
    CHECK_INT_EQ(copse__tree_node(t, 0)->token, 7);
done:
    copse__tree_destroy(t);
    copse__drafter_destroy(d);
    copse__drafter_destroy(d2);
}

static void test_ngram_no_match_and_edges(void)
{
    copse_drafter_params p = params_vocab(100);
    copse_drafter *d = make("ngram", &p);
    copse_tree *t = make_tree(16);
    if (!d || !t)
        goto done;
    /* No repeat: empty tree. */
    const int32_t h[] = {1, 2, 3, 4, 5};
    CHECK_STATUS(d->iface.seq_begin(d, 0, h, LEN(h), 10), COPSE_OK);
    CHECK_INT_EQ(propose(d, 0, h, LEN(h), 8, 8, t), 0);
    /* Empty prompt, then one token. */
    CHECK_STATUS(d->iface.seq_begin(d, 1, NULL, 0, 4), COPSE_OK);
    const int32_t one[] = {7};
    CHECK_INT_EQ(propose(d, 1, one, 1, 8, 8, t), 0);
    /* Catch-up past max_len: ERANGE; shorter ctx or another last token: EINVAL. */
    const int32_t five[] = {7, 7, 7, 7, 7};
    CHECK_STATUS(d->iface.propose(d, 1, five, 5, 8, 8, t), COPSE_ERANGE);
    const int32_t four[] = {7, 7, 7, 7};
    /* 7 7 7 7: the 3-gram "7 7 7" ending at 2 is followed by one token;
     * the periodic continuation goes on to the depth limit. */
    CHECK_INT_EQ(propose(d, 1, four, 4, 8, 5, t), 5);
    CHECK_INT_EQ(copse__tree_depth(t), 5);
    CHECK_STATUS(d->iface.propose(d, 1, one, 1, 8, 8, t), COPSE_EINVAL);
    const int32_t other[] = {7, 7, 7, 8};
    CHECK_STATUS(d->iface.propose(d, 1, other, 4, 8, 8, t), COPSE_EINVAL);
    CHECK_STATUS(d->iface.observe(d, 1, one, 1), COPSE_ERANGE);
    d->iface.seq_end(d, 1);
    /* Budget 0, negative, huge; depth 0, huge. */
    const int32_t rep[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21,
                           22, 23, 24, 25, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18,
                           19, 20, 21, 22, 23, 24, 25, 1};
    CHECK_STATUS(d->iface.seq_begin(d, 2, rep, LEN(rep), LEN(rep)), COPSE_OK);
    CHECK_INT_EQ(propose(d, 2, rep, LEN(rep), 0, 8, t), 0);
    CHECK_INT_EQ(propose(d, 2, rep, LEN(rep), -5, 8, t), 0);
    CHECK_INT_EQ(propose(d, 2, rep, LEN(rep), 8, 0, t), 0);
    CHECK_INT_EQ(propose(d, 2, rep, LEN(rep), 8, -1, t), 0);
    /* Budget clamp: min(params.max_nodes = 64, tree capacity = 16). */
    CHECK_INT_EQ(propose(d, 2, rep, LEN(rep), INT32_MAX, INT32_MAX, t), 16);
    /* Depth clamp: params.max_depth (16) with a big tree. */
    copse_tree *big = make_tree(256);
    if (big) {
        CHECK_INT_EQ(propose(d, 2, rep, LEN(rep), INT32_MAX, INT32_MAX, big), 16);
        CHECK_INT_EQ(copse__tree_depth(big), 16);
        CHECK_INT_EQ(propose(d, 2, rep, LEN(rep), 5, INT32_MAX, big), 5);
        CHECK_INT_EQ(propose(d, 2, rep, LEN(rep), INT32_MAX, 3, big), 3);
        CHECK_INT_EQ(copse__tree_depth(big), 3);
    }
    copse__tree_destroy(big);
    d->iface.seq_end(d, 2);
    d->iface.seq_end(d, 0);
    /* Bad arguments to seq_begin. */
    CHECK_STATUS(d->iface.seq_begin(d, 0, h, LEN(h), 4), COPSE_EINVAL); /* max_len < prompt */
    CHECK_STATUS(d->iface.seq_begin(d, 0, NULL, 0, 0), COPSE_EINVAL);
    CHECK_STATUS(d->iface.seq_begin(d, 0, NULL, 0, INT32_MAX), COPSE_EINVAL); /* > 2^28 */
done:
    copse__tree_destroy(t);
    copse__drafter_destroy(d); /* with no sequence live */
}

static void test_vocab_edges(void)
{
    const char *specs[] = {"ngram", "suffix"};
    for (int k = 0; k < 2; k++) {
        copse_drafter_params p = params_vocab(100);
        copse_drafter *d = make(specs[k], &p);
        copse_tree *t = make_tree(16);
        if (!d || !t) {
            copse__tree_destroy(t);
            copse__drafter_destroy(d);
            continue;
        }
        const int32_t ok[] = {99, 0, 99, 0, 99};
        const int32_t bad_hi[] = {99, 100};
        const int32_t bad_lo[] = {-1};
        CHECK_STATUS(d->iface.seq_begin(d, 0, bad_hi, 2, 10), COPSE_EINVAL);
        CHECK_STATUS(d->iface.seq_begin(d, 0, bad_lo, 1, 10), COPSE_EINVAL);
        CHECK_STATUS(d->iface.seq_begin(d, 0, ok, LEN(ok), 10), COPSE_OK);
        CHECK_INT_EQ(propose(d, 0, ok, LEN(ok), 4, 2, t), 2); /* 99 -> 0 99 */
        CHECK_STATUS(d->iface.observe(d, 0, bad_hi + 1, 1), COPSE_EINVAL);
        const int32_t ctx_bad[] = {99, 0, 99, 0, 99, 100};
        CHECK_STATUS(d->iface.propose(d, 0, ctx_bad, LEN(ctx_bad), 4, 4, t), COPSE_EINVAL);
        /* A stale tree is never half-filled by an error: still valid. */
        check_tree(t, 1);
        /* A seq left live is freed by destroy. */
        copse__tree_destroy(t);
        copse__drafter_destroy(d);
        /* The largest vocabulary. */
        p = params_vocab(INT32_MAX);
        d = make(specs[k], &p);
        t = make_tree(16);
        if (d && t) {
            const int32_t big[] = {INT32_MAX - 1, 0, INT32_MAX - 1, 0, INT32_MAX - 1};
            CHECK_STATUS(d->iface.seq_begin(d, 5, big, LEN(big), 10), COPSE_OK);
            CHECK_INT_EQ(propose(d, 5, big, LEN(big), 4, 2, t), 2);
            CHECK_INT_EQ(copse__tree_node(t, 0)->token, 0);
            CHECK_INT_EQ(copse__tree_node(t, 1)->token, INT32_MAX - 1);
            d->iface.seq_end(d, 5);
        }
        copse__tree_destroy(t);
        copse__drafter_destroy(d);
    }
}

/* Brute force: positions p (newest first) where the last n tokens of
 * h[0..len) also end, with p + 1 < len. */
static int32_t brute_find(const int32_t *h, int32_t len, int32_t n, int32_t *out, int32_t max_out)
{
    int32_t k = 0;
    if (len < n + 1)
        return 0;
    for (int32_t p = len - 2; p >= n - 1 && k < max_out; p--)
        if (memcmp(h + p - n + 1, h + len - n, (size_t)n * sizeof *h) == 0)
            out[k++] = p;
    return k;
}

static void test_ngram_index_incremental(void)
{
    enum { CAP = 600, MAXN = 4 };
    static int32_t h[CAP];
    for (int round = 0; round < 20; round++) {
        copse__ngram_index inc, reb;
        CHECK_STATUS(copse__ngram_index_init(&inc, CAP, MAXN), COPSE_OK);
        uint32_t alphabet = 2 + rnd(6);
        int32_t len = 0;
        while (len < CAP) {
            int32_t chunk = (int32_t)rnd(9); /* 0 .. 8, empty appends included */
            if (chunk > CAP - len)
                chunk = CAP - len;
            for (int32_t i = 0; i < chunk; i++)
                h[len + i] = (int32_t)rnd(alphabet);
            CHECK_STATUS(copse__ngram_index_append(&inc, h + len, chunk), COPSE_OK);
            len += chunk;
            /* find() vs brute force, for every n. */
            for (int32_t n = 1; n <= MAXN; n++) {
                int32_t a[16], b[16];
                int32_t ka = copse__ngram_index_find(&inc, n, a, 16, INT32_MAX);
                int32_t kb = brute_find(h, len, n, b, 16);
                CHECK_INT_EQ(ka, kb);
                for (int32_t i = 0; i < ka && i < kb; i++)
                    CHECK_INT_EQ(a[i], b[i]);
            }
        }
        CHECK_STATUS(copse__ngram_index_append(&inc, h, 1), COPSE_ERANGE);
        CHECK_INT_EQ(inc.len, CAP);
        /* Rebuilt in one go: identical arrays. */
        CHECK_STATUS(copse__ngram_index_init(&reb, CAP, MAXN), COPSE_OK);
        CHECK_STATUS(copse__ngram_index_append(&reb, h, CAP), COPSE_OK);
        CHECK(memcmp(inc.tokens, reb.tokens, CAP * sizeof(int32_t)) == 0);
        for (int32_t n = 1; n <= MAXN; n++) {
            CHECK(memcmp(inc.head[n], reb.head[n], (inc.mask + 1) * sizeof(int32_t)) == 0);
            CHECK(memcmp(inc.prev[n] + n - 1, reb.prev[n] + n - 1, (CAP - n + 1) * sizeof(int32_t)) == 0);
        }
        copse__ngram_index_free(&inc);
        copse__ngram_index_free(&reb);
    }
}

/* A drafter fed by observe() proposes the same trees as one given the whole
 * history at seq_begin, and as one catching up inside propose(). */
static void test_ngram_observe_equals_rebuild(void)
{
    enum { LEN_ = 400 };
    static int32_t h[LEN_];
    copse_drafter_params p = params_vocab(8);
    copse_drafter *a = make("ngram", &p), *b = make("ngram", &p), *c = make("ngram", &p);
    copse_tree *ta = make_tree(64), *tb = make_tree(64), *tc = make_tree(64);
    if (!a || !b || !c || !ta || !tb || !tc)
        goto done;
    for (int32_t i = 0; i < LEN_; i++)
        h[i] = (int32_t)rnd(5);
    CHECK_STATUS(a->iface.seq_begin(a, 0, h, 10, LEN_), COPSE_OK);
    CHECK_STATUS(c->iface.seq_begin(c, 0, h, 10, LEN_), COPSE_OK);
    int32_t len = 10;
    while (len < LEN_) {
        int32_t chunk = 1 + (int32_t)rnd(6);
        if (chunk > LEN_ - len)
            chunk = LEN_ - len;
        CHECK_STATUS(a->iface.observe(a, 0, h + len, chunk), COPSE_OK);
        len += chunk;
        CHECK_STATUS(b->iface.seq_begin(b, 0, h, len, LEN_), COPSE_OK);
        int32_t budget = 1 + (int32_t)rnd(64), depth = 1 + (int32_t)rnd(16);
        int32_t na = propose(a, 0, h, len, budget, depth, ta);
        int32_t nb = propose(b, 0, h, len, budget, depth, tb);
        int32_t nc = propose(c, 0, h, len, budget, depth, tc); /* catch-up */
        CHECK_INT_EQ(na, nb);
        CHECK_INT_EQ(na, nc);
        CHECK(na <= budget);
        CHECK(copse__tree_depth(ta) <= depth);
        for (int32_t i = 0; i < na && i < nb && i < nc; i++) {
            const copse_tree_node *x = copse__tree_node(ta, i), *y = copse__tree_node(tb, i),
                                  *z = copse__tree_node(tc, i);
            CHECK(x->token == y->token && x->parent == y->parent && x->p == y->p);
            CHECK(x->token == z->token && x->parent == z->parent && x->p == z->p);
        }
        b->iface.seq_end(b, 0);
    }
    a->iface.seq_end(a, 0);
done:
    copse__tree_destroy(ta);
    copse__tree_destroy(tb);
    copse__tree_destroy(tc);
    copse__drafter_destroy(a);
    copse__drafter_destroy(b);
    copse__drafter_destroy(c);
}

/* ---------------------------------------------------------------- suffix */

static void check_pool(const copse_drafter *d)
{
    char err[256] = "";
    copse_status st = copse__suffix_validate(d, err, sizeof err);
    CHECK_STATUS(st, COPSE_OK);
    if (st != COPSE_OK)
        fprintf(stderr, "pool: %s\n", err);
    copse__suffix_stats s;
    copse__suffix_get_stats(d, &s);
    CHECK(s.nodes <= s.node_cap);
    CHECK(s.tokens <= s.token_cap);
}

/* Run one finished request through d: prompt, then the output observed in
 * chunks, then seq_end. */
static void run_request(copse_drafter *d, int32_t seq, const int32_t *prompt, int32_t np, const int32_t *out,
                        int32_t no)
{
    CHECK_STATUS(d->iface.seq_begin(d, seq, prompt, np, np + no + 1), COPSE_OK);
    for (int32_t i = 0; i < no;) {
        int32_t c = 1 + (int32_t)rnd(3);
        if (c > no - i)
            c = no - i;
        CHECK_STATUS(d->iface.observe(d, seq, out + i, c), COPSE_OK);
        i += c;
    }
    d->iface.seq_end(d, seq);
}

static void test_suffix_own_history(void)
{
    copse_drafter_params p = params_vocab(100);
    copse_drafter *d = make("suffix", &p);
    copse_tree *t = make_tree(64);
    if (!d || !t)
        goto done;
    CHECK_STR_EQ(d->name, "suffix");
    CHECK(!d->has_q);
    const int32_t prompt[] = {10, 11, 12, 13, 14, 15, 30, 31, 11, 12};
    CHECK_STATUS(d->iface.seq_begin(d, 0, prompt, LEN(prompt), 64), COPSE_OK);
    CHECK_INT_EQ(propose(d, 0, prompt, LEN(prompt), 3, 8, t), 3);
    const int32_t want[] = {13, 14, 15};
    CHECK(has_path(t, want, 3));
    /* Nothing pooled yet, nothing repeated: empty. */
    const int32_t fresh[] = {1, 2, 3};
    CHECK_STATUS(d->iface.seq_begin(d, 1, fresh, 3, 8), COPSE_OK);
    CHECK_INT_EQ(propose(d, 1, fresh, 3, 8, 8, t), 0);
    CHECK_STATUS(d->iface.seq_begin(d, 2, NULL, 0, 8), COPSE_OK);
    CHECK_INT_EQ(propose(d, 2, fresh, 1, 8, 8, t), 0); /* catch-up from empty */
    d->iface.seq_end(d, 2);
    check_pool(d);
done:
    copse__tree_destroy(t);
    copse__drafter_destroy(d); /* seqs 0 and 1 still live */
}

static void test_suffix_frequency_and_learning(void)
{
    copse_drafter_params p = params_vocab(1000);
    copse_drafter *d = make("suffix", &p);
    copse_tree *t = make_tree(64);
    if (!d || !t)
        goto done;
    const int32_t pr[] = {900, 901};
    /* Outputs of earlier requests: "5 6" continues with 7 8 twice, 9 once. */
    const int32_t o1[] = {1, 5, 6, 7, 8}, o2[] = {2, 5, 6, 7, 8}, o3[] = {3, 5, 6, 9};
    run_request(d, 0, pr, 2, o1, LEN(o1));
    /* Learned across requests: a new request ending in "5 6" gets 7 8. */
    const int32_t q[] = {40, 41, 5, 6};
    CHECK_STATUS(d->iface.seq_begin(d, 1, q, LEN(q), 16), COPSE_OK);
    CHECK_INT_EQ(propose(d, 1, q, LEN(q), 8, 8, t), 2);
    const int32_t want[] = {7, 8};
    CHECK(has_path(t, want, 2));
    /* A running request's output is not pooled until it ends. */
    CHECK_STATUS(d->iface.seq_begin(d, 2, pr, 2, 16), COPSE_OK);
    CHECK_STATUS(d->iface.observe(d, 2, o3, LEN(o3)), COPSE_OK);
    CHECK_INT_EQ(propose(d, 1, q, LEN(q), 8, 8, t), 2);
    d->iface.seq_end(d, 2);
    run_request(d, 3, pr, 2, o2, LEN(o2));
    check_pool(d);
    /* Now 7 (2 of 3) ranks first, 9 (1 of 3) second. */
    int32_t n = propose(d, 1, q, LEN(q), 8, 8, t);
    CHECK_INT_EQ(n, 3);
    int32_t kids[4];
    float kp[4];
    CHECK_INT_EQ(children(t, COPSE_TREE_ROOT, kids, kp, 4), 2);
    CHECK_INT_EQ(copse__tree_node(t, 0)->token, 7);
    CHECK(fabsf(copse__tree_node(t, 0)->p - 2.0f / 3.0f) < 1e-5f);
    int32_t i9 = copse__tree_find_child(t, COPSE_TREE_ROOT, 9);
    CHECK(i9 >= 0 && fabsf(copse__tree_node(t, i9)->p - 1.0f / 3.0f) < 1e-5f);
    /* Budget 1: the most frequent only. */
    CHECK_INT_EQ(propose(d, 1, q, LEN(q), 1, 8, t), 1);
    CHECK_INT_EQ(copse__tree_node(t, 0)->token, 7);
    d->iface.seq_end(d, 1);
    /* The request's own continuation joins the pool's. Its history
     * "77 5 6 9 78 5 6" brings mass 2 (a 2-gram match, one occurrence) to 9;
     * the pool matches "5 6" (2 tokens: mass 2) split 7 : 9 = 2 : 1. So 9
     * weighs 2 + 2/3, 7 weighs 4/3, of 4: p(9) = 2/3, p(7) = 1/3. */
    const int32_t own[] = {77, 5, 6, 9, 78, 5, 6};
    CHECK_STATUS(d->iface.seq_begin(d, 4, own, LEN(own), 16), COPSE_OK);
    propose(d, 4, own, LEN(own), 2, 1, t);
    CHECK_INT_EQ(copse__tree_size(t), 2);
    CHECK_INT_EQ(copse__tree_node(t, 0)->token, 9);
    CHECK(fabsf(copse__tree_node(t, 0)->p - 2.0f / 3.0f) < 1e-5f);
    CHECK_INT_EQ(copse__tree_node(t, 1)->token, 7);
    CHECK(fabsf(copse__tree_node(t, 1)->p - 1.0f / 3.0f) < 1e-5f);
    d->iface.seq_end(d, 4);
    check_pool(d);
done:
    copse__tree_destroy(t);
    copse__drafter_destroy(d);
}

static void test_suffix_eviction(void)
{
    copse_drafter_params p = params_vocab(1000);
    p.suffix_pool_tokens = 64;
    p.suffix_max_docs = 4;
    p.suffix_depth = 8;
    p.suffix_max_match = 4;
    copse_drafter *d = make("suffix", &p);
    copse_tree *t = make_tree(64);
    if (!d || !t)
        goto done;
    const int32_t pr[] = {999};
    const int32_t special[] = {200, 201, 202, 203};
    const int32_t q[] = {500, 200, 201};
    const int32_t want[] = {202, 203};
    run_request(d, 0, pr, 1, special, 4);
    CHECK_STATUS(d->iface.seq_begin(d, 1, q, 3, 8), COPSE_OK);
    CHECK_INT_EQ(propose(d, 1, q, 3, 8, 8, t), 2);
    CHECK(has_path(t, want, 2));
    /* By tokens: 60 other tokens still fit (4 + 60 = 64), one more evicts. */
    int32_t filler[64];
    for (int32_t i = 0; i < 64; i++)
        filler[i] = 300 + i;
    run_request(d, 2, pr, 1, filler, 60);
    check_pool(d);
    CHECK_INT_EQ(propose(d, 1, q, 3, 8, 8, t), 2);
    run_request(d, 2, pr, 1, filler, 1);
    check_pool(d);
    CHECK_INT_EQ(propose(d, 1, q, 3, 8, 8, t), 0);
    copse__suffix_stats s;
    copse__suffix_get_stats(d, &s);
    CHECK_INT_EQ(s.docs, 2);
    CHECK_INT_EQ(s.tokens, 61);
    /* By count: 4 outputs at most. */
    run_request(d, 0, pr, 1, special, 4);
    CHECK_INT_EQ(propose(d, 1, q, 3, 8, 8, t), 2);
    for (int k = 0; k < 3; k++)
        run_request(d, 2, pr, 1, filler + k, 1);
    copse__suffix_get_stats(d, &s);
    CHECK_INT_EQ(s.docs, 4);
    CHECK_INT_EQ(propose(d, 1, q, 3, 8, 8, t), 2);
    run_request(d, 2, pr, 1, filler, 1);
    CHECK_INT_EQ(propose(d, 1, q, 3, 8, 8, t), 0);
    check_pool(d);
    /* An output longer than the pool keeps its last tokens only. */
    int32_t longo[100];
    for (int32_t i = 0; i < 100; i++)
        longo[i] = 600 + i;
    run_request(d, 2, pr, 1, longo, 100);
    copse__suffix_get_stats(d, &s);
    CHECK_INT_EQ(s.docs, 1);
    CHECK_INT_EQ(s.tokens, 64);
    check_pool(d);
    d->iface.seq_end(d, 1);
done:
    copse__tree_destroy(t);
    copse__drafter_destroy(d);
}

static void test_suffix_memory_bound(void)
{
    copse_drafter_params p = params_vocab(50);
    p.suffix_pool_tokens = 300;
    p.suffix_max_docs = 16;
    p.suffix_depth = 10;
    p.suffix_max_match = 6;
    p.max_seqs = 4;
    copse_drafter *d = make("suffix", &p);
    copse_tree *t = make_tree(32);
    if (!d || !t)
        goto done;
    int32_t buf[256];
    int32_t live_len[4] = {0};
    bool live[4] = {false};
    static int32_t hist[4][256];
    int max_nodes_seen = 0;
    for (int step = 0; step < 6000; step++) {
        int32_t s = (int32_t)rnd(4);
        if (!live[s]) {
            int32_t np = (int32_t)rnd(20);
            for (int32_t i = 0; i < np; i++)
                hist[s][i] = (int32_t)rnd(rnd(2) ? 6 : 50); /* some repetition */
            CHECK_STATUS(d->iface.seq_begin(d, s, hist[s], np, 256), COPSE_OK);
            live[s] = true;
            live_len[s] = np;
        } else if (live_len[s] > 0 && rnd(4) != 0) {
            int32_t budget = (int32_t)rnd(40), depth = (int32_t)rnd(12);
            int32_t n = propose(d, s, hist[s], live_len[s], budget, depth, t);
            CHECK(n <= 32 && n <= budget);
            CHECK(copse__tree_depth(t) <= depth);
            int32_t acc = 1 + (int32_t)rnd(4);
            if (acc > 256 - live_len[s])
                acc = 256 - live_len[s];
            for (int32_t i = 0; i < acc; i++)
                buf[i] = hist[s][live_len[s] + i] = (int32_t)rnd(rnd(2) ? 6 : 50);
            CHECK_STATUS(d->iface.observe(d, s, buf, acc), COPSE_OK);
            live_len[s] += acc;
            if (live_len[s] >= 256) {
                d->iface.seq_end(d, s);
                live[s] = false;
            }
        } else {
            d->iface.seq_end(d, s);
            live[s] = false;
            check_pool(d);
            copse__suffix_stats st;
            copse__suffix_get_stats(d, &st);
            if (st.nodes > max_nodes_seen)
                max_nodes_seen = st.nodes;
        }
    }
    fprintf(stderr, "suffix workload: at most %d pool nodes of bound %d\n", max_nodes_seen,
            p.suffix_pool_tokens * p.suffix_depth + 1);
    check_pool(d);
done:
    copse__tree_destroy(t);
    copse__drafter_destroy(d);
}

/* ---------------------------------------------------------------- registry */

static void test_registry(void)
{
    copse_drafter_spec s;
    char err[256];
    CHECK_STATUS(copse__drafter_parse("ngram", &s, err, sizeof err), COPSE_OK);
    CHECK_INT_EQ(s.kind, COPSE_DRAFTER_NGRAM);
    CHECK_STATUS(copse__drafter_parse("suffix", &s, err, sizeof err), COPSE_OK);
    CHECK_INT_EQ(s.kind, COPSE_DRAFTER_SUFFIX);
    CHECK_STATUS(copse__drafter_parse("layerskip:12", &s, err, sizeof err), COPSE_OK);
    CHECK_INT_EQ(s.kind, COPSE_DRAFTER_LAYERSKIP);
    CHECK_INT_EQ(s.layers, 12);
    CHECK_STATUS(copse__drafter_parse("model:draft.gguf", &s, err, sizeof err), COPSE_OK);
    CHECK_INT_EQ(s.kind, COPSE_DRAFTER_MODEL);
    CHECK_STR_EQ(s.file, "draft.gguf");
    static const char *bad[] = {
        "", "bogus", "ngram:3", "suffix:", "layerskip", "layerskip:", "layerskip:0", "layerskip:-1",
        "layerskip:abc", "layerskip:4x", "layerskip:99999999999999999999", "model", "model:", "none",
        "NGRAM", " ngram", "ngram ",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        copse_status st = copse__drafter_parse(bad[i], &s, err, sizeof err);
        CHECK_STATUS(st, COPSE_EINVAL);
        if (st != COPSE_EINVAL || !err[0])
            fprintf(stderr, "spec '%s': %s\n", bad[i], err);
        CHECK(err[0] != 0);
    }
    CHECK_STATUS(copse__drafter_parse(NULL, &s, err, sizeof err), COPSE_EINVAL);
    CHECK_STATUS(copse__drafter_parse("bogus", &s, NULL, 0), COPSE_EINVAL); /* no message buffer */

    copse_drafter_params p = params_vocab(10);
    copse_drafter *d = (copse_drafter *)&p; /* must be overwritten with NULL */
    /* Model drafters without a target model: a clear error (no crash). */
    err[0] = 0;
    CHECK_STATUS(copse__drafter_create("layerskip:2", &p, &d, err, sizeof err), COPSE_EINVAL);
    CHECK(d == NULL);
    CHECK(strstr(err, "target") != NULL);
    err[0] = 0;
    CHECK_STATUS(copse__drafter_create("model:x.gguf", &p, &d, err, sizeof err), COPSE_EINVAL);
    CHECK(d == NULL);
    CHECK(strstr(err, "target") != NULL);
    CHECK_STATUS(copse__drafter_create("nope", &p, &d, err, sizeof err), COPSE_EINVAL);
    CHECK(d == NULL);
    /* Bad params name the field. */
    copse_drafter_params bp = copse__drafter_default_params(); /* n_vocab 0 */
    CHECK_STATUS(copse__drafter_create("ngram", &bp, &d, err, sizeof err), COPSE_EINVAL);
    CHECK(strstr(err, "n_vocab") != NULL);
    bp = params_vocab(10);
    bp.ngram_max_n = 9;
    CHECK_STATUS(copse__drafter_create("ngram", &bp, &d, err, sizeof err), COPSE_EINVAL);
    CHECK(strstr(err, "ngram_max_n") != NULL);
    bp = params_vocab(10);
    bp.max_depth = COPSE_TREE_MAX_DEPTH + 1;
    CHECK_STATUS(copse__drafter_create("suffix", &bp, &d, err, sizeof err), COPSE_EINVAL);
    bp = params_vocab(10);
    bp.suffix_max_match = bp.suffix_depth;
    CHECK_STATUS(copse__drafter_create("suffix", &bp, &d, err, sizeof err), COPSE_EINVAL);
    bp = params_vocab(10);
    bp.suffix_pool_tokens = 1 << 22; /* in range, but * depth 24 passes the node bound */
    CHECK_STATUS(copse__drafter_create("suffix", &bp, &d, err, sizeof err), COPSE_EINVAL);
    CHECK(strstr(err, "nodes") != NULL);
    CHECK(d == NULL);
    copse__drafter_destroy(d);
    copse__drafter_destroy(NULL);
}

/* ---------------------------------------------------------------- main */

int main(void)
{
    rng_state = test_seed();
    test_registry();
    test_ngram_repeated_phrase();
    test_ngram_prefers_longer();
    test_ngram_no_match_and_edges();
    test_vocab_edges();
    test_ngram_index_incremental();
    test_ngram_observe_equals_rebuild();
    test_suffix_own_history();
    test_suffix_frequency_and_learning();
    test_suffix_eviction();
    test_suffix_memory_bound();
    return test_exit();
}
