/*
 * verify.c — greedy and multi-step speculative sampling (MSS) verification
 * of one token tree on host logits: the reference the backend verify ops
 * are tested against. Contract, randomness keys and the losslessness rules
 * in verify.h and tree.h.
 */
#include "spec/verify.h"

#include <assert.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "rng.h"

/* A residual whose mass falls below this fraction of the node's original
 * mass counts as empty (p == q up to rounding) and falls back to p. */
#define RESIDUAL_EPS 1e-9

/* One acceptance test at a node: child `node`, tested with its q entry
 * `qk` (index into node.q[]) or as one-hot (qk < 0). */
typedef struct vtry {
    int32_t node;
    int32_t qk;
} vtry;

struct copse_verify {
    int32_t n_vocab;
    int32_t max_nodes;
    copse_sampler *sampler;
    float *P;      /* [n_vocab] current (residual) target weights, 0 off the support */
    float *Q;      /* [n_vocab] scratch for one q, all 0 between uses */
    float *w;      /* [n_vocab] gathered weights for the final draw */
    vtry *tries;   /* [max_nodes * (1 + COPSE_TREE_MAX_Q)] */
    int32_t *pos;  /* same size: order-fixing scratch */
    int32_t *ord;  /* same size */
};

/* ---------------------------------------------------------------- parameters */

copse_verify_params copse__verify_default_params(void)
{
    return (copse_verify_params){
        .sampling = copse__sampling_default_params(),
        .max_tokens = INT32_MAX,
    };
}

/* ---------------------------------------------------------------- workspace */

copse_status copse__verify_create(int32_t n_vocab, int32_t max_nodes, copse_verify **out, char *err,
                                  size_t err_size)
{
    *out = NULL;
    if (n_vocab < 1 || n_vocab > INT32_MAX / 2 || max_nodes < 1 || max_nodes > COPSE_TREE_MAX_NODES)
        return copse__errorf(err, err_size, COPSE_EINVAL,
                             "verify: n_vocab %d or max_nodes %d out of range", (int)n_vocab,
                             (int)max_nodes);
    copse_verify *v = calloc(1, sizeof *v);
    if (!v)
        return copse__errorf(err, err_size, COPSE_ENOMEM, "verify: out of memory");
    v->n_vocab = n_vocab;
    v->max_nodes = max_nodes;
    size_t nt = (size_t)max_nodes * (1 + COPSE_TREE_MAX_Q);
    copse_status st = copse__sampler_create(n_vocab, &v->sampler, err, err_size);
    if (st != COPSE_OK)
        goto fail;
    v->P = calloc((size_t)n_vocab, sizeof *v->P);
    v->Q = calloc((size_t)n_vocab, sizeof *v->Q);
    v->w = calloc((size_t)n_vocab, sizeof *v->w);
    v->tries = calloc(nt, sizeof *v->tries);
    v->pos = calloc(nt, sizeof *v->pos);
    v->ord = calloc(nt, sizeof *v->ord);
    if (!v->P || !v->Q || !v->w || !v->tries || !v->pos || !v->ord) {
        st = copse__errorf(err, err_size, COPSE_ENOMEM, "verify: out of memory");
        goto fail;
    }
    *out = v;
    return COPSE_OK;
fail:
    copse__verify_destroy(v);
    return st;
}

void copse__verify_destroy(copse_verify *v)
{
    if (!v)
        return;
    copse__sampler_destroy(v->sampler);
    free(v->P);
    free(v->Q);
    free(v->w);
    free(v->tries);
    free(v->pos);
    free(v->ord);
    free(v);
}

/* ---------------------------------------------------------------- emitting and stops */

static bool is_eos(const copse_verify_params *p, copse_token tok)
{
    for (int32_t i = 0; i < p->n_eos; i++)
        if (p->eos[i] == tok)
            return true;
    return false;
}

/* Emit one token; true when a stop condition ends the call with it. */
static bool emit(const copse_verify_params *p, copse_verify_result *res, copse_token tok)
{
    int32_t idx = res->n_tokens++;
    res->tokens[idx] = tok;
    if (is_eos(p, tok)) {
        res->stop = COPSE_VERIFY_EOS;
        return true;
    }
    if (p->stop_cb && p->stop_cb(p->stop_ud, tok, idx)) {
        res->stop = COPSE_VERIFY_STOPPED;
        return true;
    }
    if (res->n_tokens >= p->max_tokens) {
        res->stop = COPSE_VERIFY_LIMIT;
        return true;
    }
    return false;
}

/* Accept child c (token tok): true when the walk must end (stop). */
static bool accept_node(const copse_verify_params *p, copse_verify_result *res, int32_t c,
                        copse_token tok)
{
    res->accepted[res->n_accepted++] = c;
    if (p->history && p->n_history + (size_t)res->n_accepted <= p->history_cap)
        p->history[p->n_history + (size_t)res->n_accepted - 1] = tok;
    return emit(p, res, tok);
}

static void finish_next(const copse_verify_params *p, copse_verify_result *res, copse_token tok)
{
    res->has_next = true;
    res->next = tok;
    emit(p, res, tok);
}

/* ---------------------------------------------------------------- greedy */

void copse__verify_greedy_ids(const copse_tree *t, const copse_token *row_argmax,
                              const copse_verify_params *params, copse_verify_result *res)
{
    memset(res, 0, sizeof *res);
    assert(params->max_tokens >= 1);
    int32_t u = COPSE_TREE_ROOT;
    for (;;) {
        copse_token want = row_argmax[u + 1]; /* row of u */
        int32_t c = copse__tree_find_child(t, u, want);
        if (c < 0) {
            finish_next(params, res, want);
            return;
        }
        if (accept_node(params, res, c, want))
            return;
        u = c;
    }
}

/* ---------------------------------------------------------------- MSS helpers */

/* Keyed uniform for node u at depth du (row u + 1). */
static double uni(const copse_verify_params *p, int32_t u, int32_t du, uint32_t draw)
{
    return copse__rng_uniform(p->sampling.seed, p->sequence, p->step + (uint32_t)du,
                              (uint32_t)(u + 1), draw);
}

/* The tries at node u (see verify.h): fills v->tries, returns their count.
 * Drafters with a one-hot proposal among u's children are demoted to one-hot
 * for all of them. */
static int32_t build_tries(copse_verify *v, const copse_tree *t, int32_t u)
{
    uint32_t demoted = 0;
    for (int32_t c = copse__tree_first_child(t, u); c >= 0; c = copse__tree_node(t, c)->next_sibling)
        demoted |= copse__tree_node(t, c)->onehot;
    int32_t nt = 0;
    for (int32_t c = copse__tree_first_child(t, u); c >= 0; c = copse__tree_node(t, c)->next_sibling) {
        const copse_tree_node *nd = copse__tree_node(t, c);
        bool onehot = nd->onehot != 0 || nd->n_q == 0;
        for (int32_t k = 0; k < nd->n_q; k++) {
            if (nd->q_bit[k] & demoted)
                onehot = true;
            else
                v->tries[nt++] = (vtry){.node = c, .qk = k};
        }
        if (onehot)
            v->tries[nt++] = (vtry){.node = c, .qk = -1};
    }
    return nt;
}

/* Random order of the tries (Fisher-Yates on keyed uniforms), then each
 * stochastic drafter's tries are put back in node order (its draw order)
 * within the slots they occupy. */
static void order_tries(copse_verify *v, const copse_tree *t, const copse_verify_params *p,
                        int32_t u, int32_t du, int32_t nt)
{
    vtry *tr = v->tries;
    for (int32_t i = nt - 1; i > 0; i--) {
        double r = uni(p, u, du, COPSE_VERIFY_DRAW_ORDER + (uint32_t)(nt - 1 - i));
        int32_t j = (int32_t)(r * (double)(i + 1));
        vtry tmp = tr[i];
        tr[i] = tr[j];
        tr[j] = tmp;
    }
    uint32_t done = 0;
    for (int32_t i = 0; i < nt; i++) {
        if (tr[i].qk < 0)
            continue;
        uint32_t b = copse__tree_node(t, tr[i].node)->q_bit[tr[i].qk];
        if (done & b)
            continue;
        done |= b;
        /* Slots of drafter b's tries, and their nodes sorted ascending. */
        int32_t m = 0;
        for (int32_t j = i; j < nt; j++)
            if (tr[j].qk >= 0 && copse__tree_node(t, tr[j].node)->q_bit[tr[j].qk] == b) {
                v->pos[m] = j;
                v->ord[m] = tr[j].node;
                m++;
            }
        for (int32_t a = 1; a < m; a++) /* insertion sort: m is tiny */
            for (int32_t c = a; c > 0 && v->ord[c - 1] > v->ord[c]; c--) {
                int32_t tmp = v->ord[c];
                v->ord[c] = v->ord[c - 1];
                v->ord[c - 1] = tmp;
            }
        for (int32_t a = 0; a < m; a++) {
            const copse_tree_node *nd = copse__tree_node(t, v->ord[a]);
            int32_t k = 0;
            while (nd->q_bit[k] != b)
                k++;
            tr[v->pos[a]] = (vtry){.node = v->ord[a], .qk = k};
        }
    }
}

/* Scatter the q of try (c, qk) into v->Q with the tokens of drafter b's
 * earlier children of u removed; returns its total mass (0 if none). */
static double load_q(copse_verify *v, const copse_tree *t, int32_t u, int32_t c, int32_t qk)
{
    const copse_tree_node *nd = copse__tree_node(t, c);
    uint32_t b = nd->q_bit[qk];
    copse_tree_q q = copse__tree_get_q(t, nd->q[qk]);
    double sum = 0.0;
    for (int32_t i = 0; i < q.n; i++) {
        copse_token id = q.ids[i];
        if (id < 0 || id >= v->n_vocab)
            continue;
        v->Q[id] += q.p[i];
        sum += q.p[i];
    }
    for (int32_t s = copse__tree_first_child(t, u); s != c; s = copse__tree_node(t, s)->next_sibling) {
        const copse_tree_node *sn = copse__tree_node(t, s);
        if ((sn->drafters & b) && sn->token >= 0 && sn->token < v->n_vocab) {
            sum -= v->Q[sn->token];
            v->Q[sn->token] = 0.0f;
        }
    }
    return sum > 0.0 ? sum : 0.0;
}

static void clear_q(copse_verify *v, const copse_tree *t, int32_t c, int32_t qk)
{
    const copse_tree_node *nd = copse__tree_node(t, c);
    copse_tree_q q = copse__tree_get_q(t, nd->q[qk]);
    for (int32_t i = 0; i < q.n; i++)
        if (q.ids[i] >= 0 && q.ids[i] < v->n_vocab)
            v->Q[q.ids[i]] = 0.0f;
}

static void load_p(copse_verify *v, const copse_sampling_dist *d, double *z)
{
    double s = 0.0;
    for (int32_t i = 0; i < d->n; i++) {
        v->P[d->ids[i]] = d->p[i];
        s += d->p[i];
    }
    *z = s;
}

static void clear_p(copse_verify *v, const copse_sampling_dist *d)
{
    for (int32_t i = 0; i < d->n; i++)
        v->P[d->ids[i]] = 0.0f;
}

/*
 * MSS at node u: try its children; on acceptance *child receives the node,
 * else *child = -1 and *next the token drawn from the residual (or from p
 * when nothing was tried).
 */
static copse_status mss_node(copse_verify *v, const copse_tree *t, const copse_verify_params *p,
                             const copse_sampling_dist *d, int32_t u, int32_t du,
                             copse_verify_result *res, int32_t *child, copse_token *next)
{
    *child = -1;
    int32_t nt = build_tries(v, t, u);
    if (nt == 0) /* a leaf: draw from p itself, exactly as plain decoding */
        return copse__sampling_sample(d->p, d->ids, d->n, uni(p, u, du, COPSE_VERIFY_DRAW_SAMPLE), next);
    order_tries(v, t, p, u, du, nt);

    double z0, z;
    load_p(v, d, &z0);
    z = z0;
    for (int32_t k = 0; k < nt; k++) {
        int32_t c = v->tries[k].node, qk = v->tries[k].qk;
        copse_token x = copse__tree_node(t, c)->token;
        bool in_vocab = x >= 0 && x < v->n_vocab;
        double qsum = qk >= 0 ? load_q(v, t, u, c, qk) : 0.0;
        double qx = 1.0; /* one-hot */
        if (qk >= 0) {
            qx = in_vocab ? (double)v->Q[x] / qsum : 0.0;
            if (!(qsum > 0.0) || !(qx > 0.0) || !isfinite(qx)) {
                clear_q(v, t, c, qk); /* inconsistent q: run as one-hot */
                qk = -1;
                qx = 1.0;
            }
        }
        double px = in_vocab ? (double)v->P[x] / z : 0.0;
        double r = uni(p, u, du, COPSE_VERIFY_DRAW_ACCEPT + (uint32_t)k);
        res->n_tries++;
        if (r < px / (p->fault == COPSE_VERIFY_FAULT_IGNORE_Q ? 1.0 : qx)) {
            if (qk >= 0)
                clear_q(v, t, c, qk);
            clear_p(v, d);
            *child = c;
            return COPSE_OK;
        }
        /* Rejected: p <- normalize(max(0, p - q)), kept unnormalized as
         * P - z q (z = P's mass), which is zero off p's support. */
        if (qk < 0) {
            if (in_vocab)
                v->P[x] = 0.0f;
        } else {
            const copse_tree_node *nd = copse__tree_node(t, c);
            copse_tree_q q = copse__tree_get_q(t, nd->q[qk]);
            for (int32_t i = 0; i < q.n; i++) {
                copse_token id = q.ids[i];
                if (id < 0 || id >= v->n_vocab || v->Q[id] == 0.0f)
                    continue;
                double nv = (double)v->P[id] - z * ((double)v->Q[id] / qsum);
                v->P[id] = nv > 0.0 ? (float)nv : 0.0f;
                v->Q[id] = 0.0f; /* also skips a repeated id */
            }
            clear_q(v, t, c, qk);
        }
        z = 0.0;
        for (int32_t i = 0; i < d->n; i++)
            z += v->P[d->ids[i]];
        if (!(z > RESIDUAL_EPS * z0)) /* p == q up to rounding: fall back to p */
            load_p(v, d, &z);
    }
    /* Every try failed: draw from the residual over p's support (ids
     * ascending, so the same inverse-CDF walk as everywhere). */
    for (int32_t i = 0; i < d->n; i++)
        v->w[i] = p->fault == COPSE_VERIFY_FAULT_NO_RESIDUAL ? d->p[i] : v->P[d->ids[i]];
    clear_p(v, d);
    return copse__sampling_sample(v->w, d->ids, d->n, uni(p, u, du, COPSE_VERIFY_DRAW_SAMPLE), next);
}

/* ---------------------------------------------------------------- verification */

copse_status copse__verify_run(copse_verify *v, const copse_tree *t, const float *logits,
                               size_t row_stride, const copse_verify_params *params,
                               copse_verify_result *res, char *err, size_t err_size)
{
    memset(res, 0, sizeof *res);
    copse_status st = copse__sampling_validate(&params->sampling, err, err_size);
    if (st != COPSE_OK)
        return st;
    if (copse__tree_size(t) > v->max_nodes)
        return copse__errorf(err, err_size, COPSE_EINVAL, "verify: tree of %d nodes, workspace %d",
                             (int)copse__tree_size(t), (int)v->max_nodes);
    if (params->max_tokens < 1)
        return copse__errorf(err, err_size, COPSE_EINVAL, "verify: max_tokens %d < 1",
                             (int)params->max_tokens);
    if (params->n_eos < 0 || (params->n_eos > 0 && !params->eos))
        return copse__errorf(err, err_size, COPSE_EINVAL, "verify: bad eos list");
    if (params->history && params->n_history + (size_t)copse__tree_depth(t) > params->history_cap)
        return copse__errorf(err, err_size, COPSE_EINVAL,
                             "verify: history_cap %zu < n_history %zu + tree depth %d",
                             params->history_cap, params->n_history, (int)copse__tree_depth(t));
    if ((uint64_t)row_stride < (uint64_t)v->n_vocab)
        return copse__errorf(err, err_size, COPSE_EINVAL, "verify: row_stride %zu < n_vocab %d",
                             row_stride, (int)v->n_vocab);

    bool greedy = params->sampling.temperature == 0.0f;
    int32_t u = COPSE_TREE_ROOT;
    for (int32_t du = 0;; du++) {
        const float *row = logits + (size_t)(u + 1) * row_stride;
        const copse_token *hist = params->history;
        size_t nh = params->history ? params->n_history + (size_t)du : 0;
        copse_sampling_dist d;
        st = copse__sampling_probs(v->sampler, &params->sampling, row, hist, nh, &d);
        if (st != COPSE_OK) {
            copse__errorf(err, err_size, st, "verify: row %d: %s", (int)(u + 1),
                          copse__sampler_error(v->sampler));
            goto fail;
        }
        int32_t c;
        copse_token next = 0;
        if (greedy) {
            /* temperature 0: d is one-hot at the (penalized) argmax */
            next = d.ids[0];
            c = copse__tree_find_child(t, u, next);
        } else {
            st = mss_node(v, t, params, &d, u, du, res, &c, &next);
            if (st != COPSE_OK) {
                copse__errorf(err, err_size, st, "verify: drawing at row %d failed", (int)(u + 1));
                goto fail;
            }
        }
        if (c < 0) {
            finish_next(params, res, next);
            return COPSE_OK;
        }
        if (accept_node(params, res, c, copse__tree_node(t, c)->token))
            return COPSE_OK;
        u = c;
    }
fail:
    memset(res, 0, sizeof *res);
    return st;
}

/* ---------------------------------------------------------------- the backend verify op */

_Static_assert(COPSE_VERIFY_MAX_PATH == COPSE_TREE_MAX_DEPTH, "an op path holds the deepest tree");

bool copse__verify_op_eligible(const copse_tree *t, const copse_verify_params *params, int32_t n_vocab)
{
    const copse_sampling_params *s = &params->sampling;
    if (params->fault != COPSE_VERIFY_FAULT_NONE || copse__sampling_validate(s, NULL, 0) != COPSE_OK)
        return false;
    if (s->penalty_last_n != 0 &&
        (s->repetition_penalty != 1.0f || s->frequency_penalty != 0.0f || s->presence_penalty != 0.0f))
        return false;
    if (s->temperature == 0.0f)
        return true;
    if ((s->top_k > 0 && s->top_k < n_vocab) || s->top_p < 1.0f || s->min_p > 0.0f)
        return false;
    for (int32_t i = 0; i < copse__tree_size(t); i++)
        if (copse__tree_node(t, i)->n_q > 0)
            return false;
    return true;
}

void copse__verify_op_tree(const copse_tree *t, const copse_verify_params *params, int32_t row0,
                           copse_verify_seq *seq, int32_t *parent, copse_token *token)
{
    const int32_t n = copse__tree_size(t);
    *seq = (copse_verify_seq){
        .row0 = row0,
        .n_rows = n + 1,
        .temperature = params->sampling.temperature,
        .seed = params->sampling.seed,
        .sequence = params->sequence,
        .step = params->step,
    };
    parent[0] = -1;
    token[0] = copse__tree_root_token(t);
    for (int32_t i = 0; i < n; i++) {
        const copse_tree_node *nd = copse__tree_node(t, i);
        parent[1 + i] = nd->parent + 1; /* COPSE_TREE_ROOT -> row 0 */
        token[1 + i] = nd->token;
    }
}

copse_status copse__verify_from_path(const copse_tree *t, const copse_verify_path *path,
                                     const copse_verify_params *params, copse_verify_result *res, char *err,
                                     size_t err_size)
{
    memset(res, 0, sizeof *res);
    if (params->max_tokens < 1)
        return copse__errorf(err, err_size, COPSE_EINVAL, "verify: max_tokens %d < 1", (int)params->max_tokens);
    if (params->n_eos < 0 || (params->n_eos > 0 && !params->eos))
        return copse__errorf(err, err_size, COPSE_EINVAL, "verify: bad eos list");
    assert(path->n_accepted >= 0 && path->n_accepted <= COPSE_TREE_MAX_DEPTH);
    res->n_tries = path->n_tries;
    for (int32_t k = 0; k < path->n_accepted; k++) {
        int32_t c = path->accepted[k];
        assert(c >= 0 && c < copse__tree_size(t));
        if (accept_node(params, res, c, copse__tree_node(t, c)->token))
            return COPSE_OK;
    }
    if (path->status != COPSE_OK) {
        copse_status st = (copse_status)path->status;
        copse__errorf(err, err_size, st, "verify: row %d: %s", (int)path->bad_row,
                      st == COPSE_ERANGE ? "every logit is -inf: no token can be drawn" : "a logit is NaN or +inf");
        memset(res, 0, sizeof *res);
        return st;
    }
    finish_next(params, res, path->next);
    return COPSE_OK;
}

int32_t copse__verify_commit_rows(const copse_verify_result *res, uint32_t *rows)
{
    rows[0] = 0;
    for (int32_t k = 0; k < res->n_accepted; k++)
        rows[1 + k] = (uint32_t)res->accepted[k] + 1;
    return res->n_accepted + 1;
}
