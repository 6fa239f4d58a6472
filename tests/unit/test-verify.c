/*
 * test-verify.c — tree verification (core/spec/verify.c).
 *
 * Oracles: a brute-force greedy walk over synthetic logits; plain decoding
 * (copse__sampling_sample_token) for an empty tree; and, for MSS, the
 * target's own processed distributions (copse__sampling_probs) in a
 * chi-square goodness-of-fit test of the first and of the first two emitted
 * tokens over many independently keyed draws, on an 8-token vocabulary with
 * synthetic target logits and draft distributions. The same test must
 * REJECT deliberately wrong verifiers, so it is known to have power.
 *
 * Thresholds: chi-square critical values at false-alarm probability 1e-6
 * per statistic (one-sided z = 4.753 through the Wilson–Hilferty cube-root
 * approximation, accurate to a few percent at these degrees of freedom:
 * 41.9 for df 7, 131.7 for df 63). 24 lossless statistics run per
 * execution, so a false failure has probability about 2.4e-5. Each run uses
 * 100000 draws per configuration; the wrong verifiers score in the
 * hundreds to tens of thousands against those thresholds.
 */
#include "test.h"
#include "stats.h"

#include <stdbool.h>

#include "copse.h"
#include "sampling.h"
#include "spec/tree.h"
#include "spec/verify.h"

static uint64_t rng_state;

static uint32_t rnd(uint32_t n)
{
    return (uint32_t)(test_rand(&rng_state) % n);
}

static double rnd_u(void) /* [0, 1) */
{
    return (double)(test_rand(&rng_state) >> 11) * 0x1.0p-53;
}

/* ---------------------------------------------------------------- greedy */

enum { GV = 6 }; /* small vocabulary so tree tokens often match the argmax */

static int32_t argmax_row(const float *row, int32_t n)
{
    int32_t b = 0;
    for (int32_t i = 1; i < n; i++)
        if (row[i] > row[b])
            b = i;
    return b;
}

typedef struct stop_ctx {
    int32_t at; /* stop at this emitted index */
    int32_t calls;
} stop_ctx;

static bool stop_at(void *ud, copse_token tok, int32_t index)
{
    stop_ctx *s = ud;
    (void)tok;
    CHECK_INT_EQ(index, s->calls);
    s->calls++;
    return index == s->at;
}

static void random_det_tree(copse_tree *t, int32_t n, int32_t vocab)
{
    copse__tree_reset(t, (copse_token)rnd((uint32_t)vocab));
    for (int32_t k = 0; k < n; k++) {
        int32_t sz = copse__tree_size(t);
        int32_t parent = sz == 0 || rnd(3) == 0 ? COPSE_TREE_ROOT : (int32_t)rnd((uint32_t)sz);
        copse__tree_add(t, parent, (copse_token)rnd((uint32_t)vocab), 0.5f, 1, COPSE_TREE_NO_Q, NULL);
    }
}

static void test_greedy(void)
{
    copse_tree *t = NULL;
    copse_verify *v = NULL;
    char err[256] = "";
    CHECK_STATUS(copse__tree_create(40, 1, 0, &t), COPSE_OK);
    CHECK_STATUS(copse__verify_create(GV, 40, &v, err, sizeof err), COPSE_OK);
    if (!t || !v)
        goto done;
    static float logits[41 * GV];
    copse_token amax[41];
    for (int iter = 0; iter < 2000; iter++) {
        random_det_tree(t, (int32_t)rnd(41), GV);
        int32_t rows = copse__tree_flat_rows(t);
        for (int32_t r = 0; r < rows; r++) {
            for (int32_t i = 0; i < GV; i++)
                logits[r * GV + i] = (float)rnd(1000) * 0.01f;
            amax[r] = argmax_row(&logits[r * GV], GV);
        }
        /* Brute-force walk. */
        int32_t path[COPSE_TREE_MAX_DEPTH], n = 0, u = COPSE_TREE_ROOT;
        for (;;) {
            int32_t found = -1;
            for (int32_t c = 0; c < copse__tree_size(t); c++)
                if (copse__tree_node(t, c)->parent == u && copse__tree_node(t, c)->token == amax[u + 1])
                    found = c;
            if (found < 0)
                break;
            path[n++] = found;
            u = found;
        }
        copse_verify_params p = copse__verify_default_params();
        p.sampling.temperature = 0.0f;
        copse_verify_result res, res2;
        CHECK_STATUS(copse__verify_run(v, t, logits, GV, &p, &res, err, sizeof err), COPSE_OK);
        copse__verify_greedy_ids(t, amax, &p, &res2);
        bool ok = res.n_accepted == n && res.has_next && res.next == amax[u + 1] &&
                  res.n_tokens == n + 1 && res.stop == COPSE_VERIFY_CONTINUE;
        for (int32_t k = 0; k < n && ok; k++)
            ok = res.accepted[k] == path[k] && res.tokens[k] == copse__tree_node(t, path[k])->token;
        ok = ok && res.tokens[n] == res.next;
        ok = ok && memcmp(&res, &res2, sizeof res) == 0;
        CHECK(ok);
        uint32_t rows_c[COPSE_TREE_MAX_DEPTH + 1];
        CHECK_INT_EQ(copse__verify_commit_rows(&res, rows_c), n + 1);
        bool inc = rows_c[0] == 0;
        for (int32_t k = 1; k <= n; k++)
            inc = inc && rows_c[k] > rows_c[k - 1] && rows_c[k] == (uint32_t)path[k - 1] + 1;
        CHECK(inc);

        /* Stop conditions on the same walk. */
        if (n >= 1) {
            int32_t cut = (int32_t)rnd((uint32_t)n + 1); /* emitted index to stop at */
            copse_token eos = res.tokens[cut];
            /* an earlier occurrence of the same token stops first */
            int32_t first = 0;
            while (res.tokens[first] != eos)
                first++;
            p.eos = &eos;
            p.n_eos = 1;
            copse_verify_result r3;
            CHECK_STATUS(copse__verify_run(v, t, logits, GV, &p, &r3, err, sizeof err), COPSE_OK);
            CHECK_INT_EQ(r3.n_tokens, first + 1);
            CHECK_INT_EQ(r3.stop, COPSE_VERIFY_EOS);
            CHECK_INT_EQ(r3.n_accepted, first < n ? first + 1 : n);
            CHECK(r3.has_next == (first == n));
            p.eos = NULL;
            p.n_eos = 0;
            p.max_tokens = cut + 1;
            CHECK_STATUS(copse__verify_run(v, t, logits, GV, &p, &r3, err, sizeof err), COPSE_OK);
            CHECK_INT_EQ(r3.n_tokens, cut + 1);
            CHECK_INT_EQ(r3.stop, COPSE_VERIFY_LIMIT);
            CHECK(memcmp(r3.tokens, res.tokens, (size_t)(cut + 1) * sizeof *r3.tokens) == 0);
            p.max_tokens = INT32_MAX;
            stop_ctx sc = {.at = cut};
            p.stop_cb = stop_at;
            p.stop_ud = &sc;
            copse__verify_greedy_ids(t, amax, &p, &r3);
            CHECK_INT_EQ(r3.n_tokens, cut + 1);
            CHECK_INT_EQ(sc.calls, cut + 1);
            CHECK_INT_EQ(r3.stop, COPSE_VERIFY_STOPPED);
            p.stop_cb = NULL;
        }
    }
    /* Bad parameters. */
    {
        copse_verify_params p = copse__verify_default_params();
        copse_verify_result res;
        p.max_tokens = 0;
        CHECK_STATUS(copse__verify_run(v, t, logits, GV, &p, &res, err, sizeof err), COPSE_EINVAL);
        p.max_tokens = 1;
        p.sampling.top_p = 0.0f;
        CHECK_STATUS(copse__verify_run(v, t, logits, GV, &p, &res, err, sizeof err), COPSE_EINVAL);
        p.sampling.top_p = 1.0f;
        CHECK_STATUS(copse__verify_run(v, t, logits, GV - 1, &p, &res, err, sizeof err), COPSE_EINVAL);
        copse_token hist[2] = {0, 0};
        random_det_tree(t, 10, 2);
        p.history = hist;
        p.n_history = 1;
        p.history_cap = 2;
        if (copse__tree_depth(t) > 1)
            CHECK_STATUS(copse__verify_run(v, t, logits, GV, &p, &res, err, sizeof err), COPSE_EINVAL);
        p.history = NULL;
        p.n_history = p.history_cap = 0;
        /* A tree larger than the workspace. */
        copse_verify *small = NULL;
        CHECK_STATUS(copse__verify_create(GV, 2, &small, err, sizeof err), COPSE_OK);
        random_det_tree(t, 3, 1000);
        CHECK_STATUS(copse__verify_run(small, t, logits, GV, &p, &res, err, sizeof err), COPSE_EINVAL);
        copse__verify_destroy(small);
        CHECK_STATUS(copse__verify_create(0, 2, &small, err, sizeof err), COPSE_EINVAL);
        CHECK(small == NULL);
        /* Tokens outside the vocabulary are never accepted (MSS and greedy). */
        copse__tree_reset(t, 0);
        CHECK_STATUS(copse__tree_add(t, COPSE_TREE_ROOT, GV + 3, 1.0f, 1, COPSE_TREE_NO_Q, NULL), COPSE_OK);
        CHECK_STATUS(copse__tree_add(t, COPSE_TREE_ROOT, -4, 1.0f, 1, COPSE_TREE_NO_Q, NULL), COPSE_OK);
        for (int i = 0; i < 20; i++) {
            p.sequence = (uint32_t)i;
            p.sampling.temperature = i % 2 ? 1.0f : 0.0f;
            CHECK_STATUS(copse__verify_run(v, t, logits, GV, &p, &res, err, sizeof err), COPSE_OK);
            CHECK(res.n_accepted == 0 && res.has_next && res.next >= 0 && res.next < GV);
        }
    }
done:
    copse__tree_destroy(t);
    copse__verify_destroy(v);
}

/* An empty tree reproduces plain decoding (same key, same token). */
static void test_plain_equivalence(void)
{
    enum { V = 50 };
    copse_tree *t = NULL;
    copse_verify *v = NULL;
    copse_sampler *s = NULL;
    char err[256] = "";
    CHECK_STATUS(copse__tree_create(4, 1, 0, &t), COPSE_OK);
    CHECK_STATUS(copse__verify_create(V, 4, &v, err, sizeof err), COPSE_OK);
    CHECK_STATUS(copse__sampler_create(V, &s, err, sizeof err), COPSE_OK);
    if (!t || !v || !s)
        goto done;
    float logits[V];
    int diff = 0;
    for (int iter = 0; iter < 500; iter++) {
        for (int32_t i = 0; i < V; i++)
            logits[i] = (float)rnd_u() * 4.0f;
        copse__tree_reset(t, 3);
        copse_verify_params p = copse__verify_default_params();
        p.sampling.seed = test_rand(&rng_state);
        p.sampling.temperature = 0.5f + (float)rnd_u();
        p.sampling.top_k = (int32_t)rnd(10);
        p.sequence = rnd(100);
        p.step = rnd(100000);
        copse_verify_result res;
        CHECK_STATUS(copse__verify_run(v, t, logits, V, &p, &res, err, sizeof err), COPSE_OK);
        copse_token want;
        CHECK_STATUS(copse__sampling_sample_token(s, &p.sampling, logits, NULL, 0, p.sequence, p.step, &want),
                     COPSE_OK);
        diff += res.n_tokens != 1 || !res.has_next || res.next != want;
    }
    CHECK_INT_EQ(diff, 0);
done:
    copse__tree_destroy(t);
    copse__verify_destroy(v);
    copse__sampler_destroy(s);
}

/* ---------------------------------------------------------------- MSS losslessness */

enum { V = 8 };

/* The synthetic target (logits by context) and draft (q by context). */
typedef struct world {
    float L0[V], L1[V][V], L2[V][V][V]; /* target logits after (), (x), (x, y) */
    float Q0[V], Q1[V][V];              /* draft distributions after (), (x) */
    copse_sampling_params sp;
    copse_token hist[16]; /* penalty history: [h0, root] + path */
} world;

static void random_dist(float *q)
{
    /* about a third of the tokens impossible, at least 4 possible */
    double s = 0.0;
    for (int32_t i = 0; i < V; i++) {
        q[i] = (i < 4 || rnd(3)) ? (float)(0.05 + rnd_u()) : 0.0f;
        s += q[i];
    }
    for (int32_t i = 0; i < V; i++)
        q[i] = (float)(q[i] / s);
    /* shuffle which tokens are the possible ones */
    for (int32_t i = V - 1; i > 0; i--) {
        int32_t j = (int32_t)rnd((uint32_t)i + 1);
        float tmp = q[i];
        q[i] = q[j];
        q[j] = tmp;
    }
}

static void random_world(world *w)
{
    for (int32_t i = 0; i < V; i++) {
        w->L0[i] = (float)(rnd_u() * 3.0);
        for (int32_t j = 0; j < V; j++) {
            w->L1[i][j] = (float)(rnd_u() * 3.0);
            for (int32_t k = 0; k < V; k++)
                w->L2[i][j][k] = (float)(rnd_u() * 3.0);
        }
    }
    random_dist(w->Q0);
    for (int32_t i = 0; i < V; i++)
        random_dist(w->Q1[i]);
}

/* Drafting modes. */
enum { DRAFT_STOCH, DRAFT_DET, DRAFT_MERGED, DRAFT_MERGED_OVER };

/* k tokens drawn without replacement from q (test randomness, independent
 * of the verifier's keys). Returns how many (<= support size). */
static int32_t draw_wor(const float *q, int32_t k, copse_token *out)
{
    float w[V];
    memcpy(w, q, sizeof w);
    int32_t n = 0;
    for (; n < k; n++) {
        double s = 0.0;
        for (int32_t i = 0; i < V; i++)
            s += w[i];
        if (!(s > 0.0))
            break;
        double u = rnd_u() * s, c = 0.0;
        int32_t pick = -1;
        for (int32_t i = 0; i < V; i++) {
            if (w[i] <= 0.0f)
                continue;
            c += w[i];
            pick = i;
            if (u < c)
                break;
        }
        out[n] = pick;
        w[pick] = 0.0f;
    }
    return n;
}

static int32_t top_k_of(const float *q, int32_t k, copse_token *out)
{
    bool used[V] = {false};
    int32_t n = 0;
    for (; n < k; n++) {
        int32_t b = -1;
        for (int32_t i = 0; i < V; i++)
            if (!used[i] && q[i] > 0.0f && (b < 0 || q[i] > q[b]))
                b = i;
        if (b < 0)
            break;
        used[b] = true;
        out[n] = b;
    }
    return n;
}

static void add_level(copse_tree *t, int32_t parent, const float *q, int32_t width, bool stoch, uint32_t bit)
{
    copse_token ids[V];
    int32_t n;
    int32_t qid = COPSE_TREE_NO_Q;
    if (stoch) {
        copse_token all[V];
        float p[V];
        int32_t m = 0;
        for (int32_t i = 0; i < V; i++)
            if (q[i] > 0.0f) {
                all[m] = i;
                p[m++] = q[i];
            }
        CHECK_STATUS(copse__tree_add_q(t, all, p, m, &qid), COPSE_OK);
        n = draw_wor(q, width, ids);
    } else {
        n = top_k_of(q, width, ids);
    }
    for (int32_t i = 0; i < n; i++)
        CHECK_STATUS(copse__tree_add(t, parent, ids[i], q[ids[i]], bit, qid, NULL), COPSE_OK);
}

/* A draft tree at context `ctx` (0 or 1 tokens) of the given depth. */
static void draft_one(copse_tree *t, const world *w, copse_token root, const copse_token *ctx, int32_t n_ctx,
                      int32_t depth, int32_t width, bool stoch, uint32_t bit)
{
    copse__tree_reset(t, root);
    const float *q0 = n_ctx == 0 ? w->Q0 : w->Q1[ctx[0]];
    add_level(t, COPSE_TREE_ROOT, q0, width, stoch, bit);
    if (depth >= 2 && n_ctx == 0) {
        int32_t n1 = copse__tree_size(t);
        for (int32_t i = 0; i < n1; i++)
            add_level(t, i, w->Q1[copse__tree_node(t, i)->token], width, stoch, bit);
    }
}

typedef struct drafter_set {
    copse_tree *a, *b, *m;
} drafter_set;

static const copse_tree *draft(drafter_set *d, const world *w, int mode, copse_token root,
                               const copse_token *ctx, int32_t n_ctx, int32_t depth, int32_t width)
{
    switch (mode) {
    case DRAFT_STOCH:
        draft_one(d->a, w, root, ctx, n_ctx, depth, width, true, 1);
        return d->a;
    case DRAFT_DET:
        draft_one(d->a, w, root, ctx, n_ctx, depth, width, false, 2);
        return d->a;
    default: {
        draft_one(d->a, w, root, ctx, n_ctx, depth, width, true, 1);
        draft_one(d->b, w, root, ctx, n_ctx, depth, width, false, 2);
        const copse_tree *in[2] = {d->a, d->b};
        int32_t budget = mode == DRAFT_MERGED ? 64 : 3;
        CHECK_STATUS(copse__tree_merge(d->m, in, 2, budget), COPSE_OK);
        return d->m;
    }
    }
}

/* Target logits for every flattened row of t at context ctx. */
static void fill_logits(const world *w, const copse_tree *t, const copse_token *ctx, int32_t n_ctx,
                        float *logits)
{
    int32_t rows = copse__tree_flat_rows(t);
    for (int32_t r = 0; r < rows; r++) {
        copse_token path[4];
        int32_t d = 0;
        for (int32_t i = 0; i < n_ctx; i++)
            path[d++] = ctx[i];
        if (r > 0)
            d += copse__tree_path(t, r - 1, path + d);
        const float *src = d == 0 ? w->L0 : d == 1 ? w->L1[path[0]] : w->L2[path[0]][path[1]];
        CHECK(d <= 2);
        memcpy(logits + (size_t)r * V, src, V * sizeof *src);
    }
}

/* Deliberately wrong verifiers, first token only. */
enum { WRONG_NO_RESIDUAL, WRONG_IGNORE_Q };

static copse_token wrong_first(copse_sampler *s, const copse_tree *t, const float *logits,
                               const copse_sampling_params *sp, const copse_token *hist, size_t nh, int kind)
{
    copse_sampling_dist d;
    CHECK_STATUS(copse__sampling_probs(s, sp, logits, hist, nh, &d), COPSE_OK);
    float p[V] = {0};
    for (int32_t i = 0; i < d.n; i++)
        p[d.ids[i]] = d.p[i];
    for (int32_t c = copse__tree_first_child(t, COPSE_TREE_ROOT); c >= 0;
         c = copse__tree_node(t, c)->next_sibling) {
        const copse_tree_node *nd = copse__tree_node(t, c);
        double q = 1.0;
        if (nd->n_q > 0 && kind == WRONG_NO_RESIDUAL) {
            copse_tree_q tq = copse__tree_get_q(t, nd->q[0]);
            for (int32_t i = 0; i < tq.n; i++)
                if (tq.ids[i] == nd->token)
                    q = tq.p[i];
        }
        /* min(1, p/q) (or min(1, p): q ignored), and no residual after */
        if (rnd_u() < p[nd->token] / q)
            return nd->token;
    }
    double u = rnd_u(), c = 0.0;
    for (int32_t i = 0; i < V; i++) {
        c += p[i];
        if (u < c && p[i] > 0.0f)
            return i;
    }
    return d.ids[d.n - 1];
}

typedef struct mss_config {
    int mode;
    int32_t width;
    float temperature;
    int32_t top_k;
    float presence; /* presence penalty (history handling) */
} mss_config;

static void run_mss_config(const mss_config *cfg, long n_draws)
{
    world w;
    random_world(&w);
    w.sp = copse__sampling_default_params();
    w.sp.temperature = cfg->temperature;
    w.sp.top_k = cfg->top_k;
    w.sp.presence_penalty = cfg->presence;
    w.sp.penalty_last_n = -1;
    w.sp.seed = test_rand(&rng_state);

    char err[256] = "";
    drafter_set d = {0};
    copse_verify *v = NULL;
    copse_sampler *s = NULL;
    CHECK_STATUS(copse__tree_create(64, 1, 256, &d.a), COPSE_OK);
    CHECK_STATUS(copse__tree_create(64, 1, 256, &d.b), COPSE_OK);
    CHECK_STATUS(copse__tree_create(128, 1, 512, &d.m), COPSE_OK);
    CHECK_STATUS(copse__verify_create(V, 128, &v, err, sizeof err), COPSE_OK);
    CHECK_STATUS(copse__sampler_create(V, &s, err, sizeof err), COPSE_OK);
    if (!d.a || !d.b || !d.m || !v || !s)
        goto done;

    const copse_token h0 = 5, root = 2;
    /* Expected: p0 over the first token, p0(x) p1[x](y) over pairs. */
    double e1[V] = {0}, e2[V * V] = {0};
    {
        copse_token hist[3] = {h0, root, 0};
        copse_sampling_dist dist;
        CHECK_STATUS(copse__sampling_probs(s, &w.sp, w.L0, hist, 2, &dist), COPSE_OK);
        for (int32_t i = 0; i < dist.n; i++)
            e1[dist.ids[i]] = dist.p[i];
        for (int32_t x = 0; x < V; x++) {
            if (e1[x] <= 0.0)
                continue;
            hist[2] = x;
            CHECK_STATUS(copse__sampling_probs(s, &w.sp, w.L1[x], hist, 3, &dist), COPSE_OK);
            for (int32_t i = 0; i < dist.n; i++)
                e2[x * V + dist.ids[i]] = e1[x] * dist.p[i];
        }
    }

    long o1[V] = {0}, o2[V * V] = {0}, ow[2][V] = {{0}};
    static float logits[129 * V];
    long accepted = 0;
    for (long n = 0; n < n_draws; n++) {
        copse_token hist[16] = {h0, root};
        const copse_tree *t = draft(&d, &w, cfg->mode, root, NULL, 0, 2, cfg->width);
        fill_logits(&w, t, NULL, 0, logits);
        copse_verify_params p = copse__verify_default_params();
        p.sampling = w.sp;
        p.sequence = (uint32_t)n;
        p.step = 1000;
        p.history = hist;
        p.n_history = 2;
        p.history_cap = 16;
        copse_verify_result res;
        copse_status st = copse__verify_run(v, t, logits, V, &p, &res, err, sizeof err);
        CHECK_STATUS(st, COPSE_OK);
        if (st != COPSE_OK) {
            fprintf(stderr, "verify: %s\n", err);
            break;
        }
        accepted += res.n_accepted;
        copse_token t0 = res.tokens[0], t1;
        if (res.n_tokens >= 2) {
            t1 = res.tokens[1];
        } else {
            /* Next step: the emitted token is the new root, context (t0). */
            hist[2] = t0;
            const copse_tree *t2 = draft(&d, &w, cfg->mode, t0, &t0, 1, 1, cfg->width);
            fill_logits(&w, t2, &t0, 1, logits);
            p.step = 1000 + 1;
            p.n_history = 3;
            st = copse__verify_run(v, t2, logits, V, &p, &res, err, sizeof err);
            CHECK_STATUS(st, COPSE_OK);
            t1 = res.tokens[0];
        }
        o1[t0]++;
        o2[t0 * V + t1]++;

        /* The wrong verifiers on a fresh tree at the root context. */
        if (cfg->mode == DRAFT_STOCH || cfg->mode == DRAFT_DET) {
            t = draft(&d, &w, cfg->mode, root, NULL, 0, 1, cfg->width);
            fill_logits(&w, t, NULL, 0, logits);
            copse_token hh[2] = {h0, root};
            ow[0][wrong_first(s, t, logits, &w.sp, hh, 2, WRONG_NO_RESIDUAL)]++;
            ow[1][wrong_first(s, t, logits, &w.sp, hh, 2, WRONG_IGNORE_Q)]++;
        }
    }

    int df1, df2;
    double x1 = chi2(o1, e1, V, n_draws, &df1);
    double x2 = chi2(o2, e2, V * V, n_draws, &df2);
    fprintf(stderr,
            "mss mode %d width %d T %.1f top_k %d presence %.1f: accepted/draw %.3f, "
            "first token chi2 %.1f (df %d, crit %.1f), two tokens chi2 %.1f (df %d, crit %.1f)\n",
            cfg->mode, (int)cfg->width, (double)cfg->temperature, (int)cfg->top_k, (double)cfg->presence,
            (double)accepted / (double)n_draws, x1, df1, chi2_crit(df1), x2, df2, chi2_crit(df2));
    CHECK(x1 < chi2_crit(df1));
    CHECK(x2 < chi2_crit(df2));
    if (cfg->mode == DRAFT_STOCH || cfg->mode == DRAFT_DET) {
        for (int k = 0; k < 2; k++) {
            int dfw;
            double xw = chi2(ow[k], e1, V, n_draws, &dfw);
            fprintf(stderr, "  wrong verifier %s: chi2 %.1f (df %d, must exceed %.1f)\n",
                    k == 0 ? "no-residual" : "ignore-q", xw, dfw, chi2_crit(dfw));
            CHECK(xw > chi2_crit(dfw));
        }
    }
done:
    copse__tree_destroy(d.a);
    copse__tree_destroy(d.b);
    copse__tree_destroy(d.m);
    copse__verify_destroy(v);
    copse__sampler_destroy(s);
}

static void test_mss_lossless(void)
{
    const long n = 100000;
    static const mss_config cfgs[] = {
        {DRAFT_STOCH, 1, 1.0f, 0, 0.0f},
        {DRAFT_STOCH, 3, 1.0f, 0, 0.0f},
        {DRAFT_STOCH, 1, 0.7f, 0, 0.0f},
        {DRAFT_STOCH, 3, 0.7f, 0, 0.0f},
        {DRAFT_DET, 1, 1.0f, 0, 0.0f},
        {DRAFT_DET, 3, 1.0f, 0, 0.0f},
        {DRAFT_DET, 1, 0.7f, 0, 0.0f},
        {DRAFT_DET, 3, 0.7f, 0, 0.0f},
        {DRAFT_MERGED, 3, 1.0f, 0, 0.0f},
        {DRAFT_MERGED_OVER, 3, 0.7f, 0, 0.0f},
        {DRAFT_STOCH, 3, 0.7f, 5, 0.0f},
        {DRAFT_STOCH, 3, 1.0f, 0, 1.5f},
    };
    for (size_t i = 0; i < sizeof cfgs / sizeof cfgs[0]; i++)
        run_mss_config(&cfgs[i], n);
}

/* Same key, same result; a different sequence id gives other draws. */
static void test_mss_determinism(void)
{
    world w;
    random_world(&w);
    char err[256] = "";
    drafter_set d = {0};
    copse_verify *v = NULL;
    CHECK_STATUS(copse__tree_create(64, 1, 256, &d.a), COPSE_OK);
    CHECK_STATUS(copse__verify_create(V, 64, &v, err, sizeof err), COPSE_OK);
    if (!d.a || !v)
        goto done;
    static float logits[65 * V];
    const copse_tree *t = draft(&d, &w, DRAFT_STOCH, 1, NULL, 0, 2, 3);
    fill_logits(&w, t, NULL, 0, logits);
    copse_verify_params p = copse__verify_default_params();
    p.sampling.seed = 99;
    int same = 0, differ = 0;
    for (uint32_t seq = 0; seq < 200; seq++) {
        copse_verify_result r1, r2;
        p.sequence = seq;
        CHECK_STATUS(copse__verify_run(v, t, logits, V, &p, &r1, err, sizeof err), COPSE_OK);
        CHECK_STATUS(copse__verify_run(v, t, logits, V, &p, &r2, err, sizeof err), COPSE_OK);
        same += memcmp(&r1, &r2, sizeof r1) == 0;
        p.sequence = seq + 1000;
        CHECK_STATUS(copse__verify_run(v, t, logits, V, &p, &r2, err, sizeof err), COPSE_OK);
        differ += r1.n_tokens != r2.n_tokens || memcmp(r1.tokens, r2.tokens, sizeof r1.tokens) != 0;
    }
    CHECK_INT_EQ(same, 200);
    CHECK(differ > 0);
done:
    copse__tree_destroy(d.a);
    copse__verify_destroy(v);
}

int main(void)
{
    rng_state = test_seed();
    test_greedy();
    test_plain_equivalence();
    test_mss_determinism();
    test_mss_lossless();
    return test_exit();
}
