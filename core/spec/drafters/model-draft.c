/*
 * model-draft.c — the level-wise tree builder shared by the model drafters
 * (layerskip.c, draft-model.c). Contract in drafter.h ("Model drafters") and
 * drafters-impl.h (copse__mdraft_*).
 *
 * One call drafts trees for n sequences. Level d = 1 .. max_depth runs one
 * draft forward (split only where the rows pass the forward's limits) over
 * the frontier of every sequence: at level 1 the pending root, later the
 * nodes chosen at level d - 1. Each frontier node writes scratch row
 * base + j of its sequence (base = rows written at earlier levels) and sees
 * the committed prefix, its ancestors' rows and itself (copse_fwd_batch's
 * scratch_base and masks). Its logits give the candidates of its children.
 *
 * Greedy: a node's max_branch most probable tokens become candidates; the
 * draft_width best candidates of the level by cumulative log-probability
 * (ties: created earlier) whose logp beats the budget-th best candidate so
 * far are expanded at the next level (a candidate below that bar can never
 * enter the result, nor can its descendants); at the end the `budget` best
 * candidates form the tree. A child's logp never exceeds its parent's and
 * parents are created first, so the cut is ancestor-closed.
 *
 * Sampled: for each frontier node u, q_u is the processed draft distribution
 * cut to draft_q_top tokens. The level's child slots (u, k) score logp(u) +
 * log(k-th largest q_u); the best min(width, ceil(remaining budget / levels
 * left)) slots are taken, which fixes each node's child count before any
 * draw. Then each node's children are drawn from q_u without replacement
 * (keyed uniforms) and added with one shared q record. Nothing sampled is
 * ever dropped afterwards (tree.h, losslessness contract).
 */
#include "spec/drafters/drafters-impl.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "rng.h"

typedef struct md_cand {
    copse_token token;
    int32_t parent; /* candidate index, -1: the root */
    int32_t row;    /* scratch row once expanded, else -1 */
    float p;
    float logp;
} md_cand;

/* Scratch of one entry of a call. */
typedef struct md_entry {
    int32_t seq, kvseq;
    copse_tree *tree;
    int32_t n_ctx, budget, max_depth, remaining;
    bool sampled, active;
    uint64_t *rowmask;   /* [row_cap * mw]: row r sees rows with bits set */
    int32_t n_rows;      /* rows written (the next level's base) */
    int32_t *front;      /* [width] greedy: candidate (-1 root); sampled: tree node (-1 root) */
    int32_t n_front;
    int32_t *node_row;   /* [node_cap] sampled: scratch row of tree node i (-1 none) */
    md_cand *cands;      /* [cand_cap] greedy */
    int32_t n_cands;
} md_entry;

typedef struct md_seq {
    bool sampled;
    copse_sampling_params sp;
} md_seq;

struct copse__mdraft {
    copse_drafter_params p;
    copse_forward *f;
    uint32_t n_layers;
    const copse_fwd_head *head;
    int32_t n_out;     /* logits per row */
    int32_t width, max_branch, row_cap, mw, cand_cap, node_cap, max_rows, q_top;
    md_seq *seqs;      /* [max_seqs] */
    md_entry *ents;    /* [max_seqs] */
    void **blocks;     /* per-entry allocations, freed at destroy */

    /* one forward call */
    copse_token *tokens;   /* [max_rows] */
    int32_t *depth;        /* [max_rows] */
    int32_t *logit_rows;   /* [max_rows] 0, 1, ... */
    int32_t *row_ent;      /* [max_rows] entry of each batch row */
    int32_t *b_seq, *b_first, *b_new, *b_base; /* [max_seqs] */
    const uint64_t **b_mask;                   /* [max_seqs] */
    uint64_t *maskbuf;     /* [max_rows * mw] */
    float *logits;         /* [max_rows * n_out] */
    int32_t *ent_first_row; /* [max_seqs] batch row of each entry's first frontier row, -1 */

    /* per-row processing */
    copse_sampler *sampler;
    float *qp;             /* [width * q_top] sampled: q of each frontier row, p descending */
    copse_token *qi;       /* [width * q_top] head index of each */
    int32_t *qn;           /* [width] */
    int32_t *take;         /* [width] children per frontier row */
    int32_t *nfront;       /* [width] the next level's frontier, being built */
    float *w;              /* [q_top] draw weights */
    copse_token *qids;     /* [q_top] token ids for the q record */
    int32_t *top_i;        /* [max_branch] */
    float *top_l;          /* [max_branch] */
    int32_t *order;        /* [cand_cap] */
};

/* ---------------------------------------------------------------- lifecycle */

void copse__mdraft_destroy(copse__mdraft *m)
{
    if (!m)
        return;
    if (m->ents)
        for (int32_t i = 0; i < m->p.max_seqs; i++) {
            free(m->ents[i].rowmask);
            free(m->ents[i].front);
            free(m->ents[i].node_row);
            free(m->ents[i].cands);
        }
    free(m->ents);
    free(m->seqs);
    free(m->tokens);
    free(m->depth);
    free(m->logit_rows);
    free(m->row_ent);
    free(m->b_seq);
    free(m->b_first);
    free(m->b_new);
    free(m->b_base);
    free(m->b_mask);
    free(m->maskbuf);
    free(m->logits);
    free(m->ent_first_row);
    copse__sampler_destroy(m->sampler);
    free(m->qp);
    free(m->qi);
    free(m->qn);
    free(m->take);
    free(m->nfront);
    free(m->w);
    free(m->qids);
    free(m->top_i);
    free(m->top_l);
    free(m->order);
    free(m);
}

copse_status copse__mdraft_create(const copse_drafter_params *p, copse_forward *f, uint32_t n_layers,
                                  const copse_fwd_head *head, copse__mdraft **out, char *err, size_t err_size)
{
    *out = NULL;
    copse__mdraft *m = calloc(1, sizeof *m);
    if (!m)
        return copse__errorf(err, err_size, COPSE_ENOMEM, "model drafter: out of memory");
    m->p = *p;
    m->f = f;
    m->n_layers = n_layers;
    m->head = head;
    const copse_forward_params *fp = copse__forward_params(f);
    m->n_out = head ? head->n : (int32_t)copse__forward_hparams(f)->n_vocab;
    m->max_rows = (int32_t)(p->draft_max_tokens < fp->max_tokens ? p->draft_max_tokens : fp->max_tokens);
    m->width = p->draft_width < m->max_rows ? p->draft_width : m->max_rows;
    m->max_branch = p->max_branch;
    m->q_top = p->draft_q_top < m->n_out ? p->draft_q_top : m->n_out;
    int64_t rows = 1 + (int64_t)m->width * (p->max_depth - 1);
    if (rows > COPSE_TREE_MAX_NODES)
        rows = COPSE_TREE_MAX_NODES;
    m->row_cap = (int32_t)rows;
    m->mw = copse__tree_mask_words(m->row_cap);
    m->cand_cap = m->row_cap * m->max_branch;
    m->node_cap = p->max_nodes;
    const size_t S = (size_t)p->max_seqs, R = (size_t)m->max_rows, W = (size_t)m->width;

    m->seqs = calloc(S, sizeof *m->seqs);
    m->ents = calloc(S, sizeof *m->ents);
    m->tokens = calloc(R, sizeof *m->tokens);
    m->depth = calloc(R, sizeof *m->depth);
    m->logit_rows = calloc(R, sizeof *m->logit_rows);
    m->row_ent = calloc(R, sizeof *m->row_ent);
    m->b_seq = calloc(S, sizeof *m->b_seq);
    m->b_first = calloc(S, sizeof *m->b_first);
    m->b_new = calloc(S, sizeof *m->b_new);
    m->b_base = calloc(S, sizeof *m->b_base);
    m->b_mask = calloc(S, sizeof *m->b_mask);
    m->maskbuf = calloc(R * (size_t)m->mw, sizeof *m->maskbuf);
    m->logits = malloc(R * (size_t)m->n_out * sizeof *m->logits);
    m->ent_first_row = calloc(S, sizeof *m->ent_first_row);
    m->qp = calloc(W * (size_t)m->q_top, sizeof *m->qp);
    m->qi = calloc(W * (size_t)m->q_top, sizeof *m->qi);
    m->qn = calloc(W, sizeof *m->qn);
    m->take = calloc(W, sizeof *m->take);
    m->nfront = calloc(W, sizeof *m->nfront);
    m->w = calloc((size_t)m->q_top, sizeof *m->w);
    m->qids = calloc((size_t)m->q_top, sizeof *m->qids);
    m->top_i = calloc((size_t)m->max_branch, sizeof *m->top_i);
    m->top_l = calloc((size_t)m->max_branch, sizeof *m->top_l);
    m->order = calloc((size_t)m->cand_cap, sizeof *m->order);
    bool ok = m->seqs && m->ents && m->tokens && m->depth && m->logit_rows && m->row_ent && m->b_seq &&
              m->b_first && m->b_new && m->b_base && m->b_mask && m->maskbuf && m->logits && m->ent_first_row &&
              m->qp && m->qi && m->qn && m->take && m->nfront && m->w && m->qids && m->top_i && m->top_l && m->order;
    for (size_t i = 0; ok && i < S; i++) {
        md_entry *e = &m->ents[i];
        e->rowmask = calloc((size_t)m->row_cap * (size_t)m->mw, sizeof *e->rowmask);
        e->front = calloc(W, sizeof *e->front);
        e->node_row = calloc((size_t)m->node_cap, sizeof *e->node_row);
        e->cands = calloc((size_t)m->cand_cap, sizeof *e->cands);
        ok = e->rowmask && e->front && e->node_row && e->cands;
    }
    if (!ok) {
        copse__mdraft_destroy(m);
        return copse__errorf(err, err_size, COPSE_ENOMEM, "model drafter: out of memory");
    }
    copse_status st = copse__sampler_create(m->n_out, &m->sampler, err, err_size);
    if (st != COPSE_OK) {
        copse__mdraft_destroy(m);
        return st;
    }
    for (int32_t i = 0; i < m->max_rows; i++)
        m->logit_rows[i] = i;
    *out = m;
    return COPSE_OK;
}

void copse__mdraft_seq_reset(copse__mdraft *m, int32_t seq)
{
    assert(seq >= 0 && seq < m->p.max_seqs);
    m->seqs[seq].sampled = false;
    m->seqs[seq].sp = copse__sampling_default_params();
    m->seqs[seq].sp.temperature = 0.0f;
}

copse_status copse__mdraft_seq_sampling(copse__mdraft *m, int32_t seq, const copse_sampling_params *sp)
{
    assert(seq >= 0 && seq < m->p.max_seqs);
    copse_sampling_params s = *sp;
    /* q is the drafter's choice: penalties would need the history, leave them out */
    s.repetition_penalty = 1.0f;
    s.frequency_penalty = 0.0f;
    s.presence_penalty = 0.0f;
    s.penalty_last_n = 0;
    if (copse__sampling_validate(&s, NULL, 0) != COPSE_OK)
        return COPSE_EINVAL;
    m->seqs[seq].sp = s;
    m->seqs[seq].sampled = s.temperature > 0.0f;
    return COPSE_OK;
}

/* ---------------------------------------------------------------- helpers */

static copse_token head_token(const copse__mdraft *m, int32_t i)
{
    return m->head ? m->head->ids[i] : i;
}

static void row_mask_set(const copse__mdraft *m, md_entry *e, int32_t row, int32_t parent_row)
{
    uint64_t *r = e->rowmask + (size_t)row * (size_t)m->mw;
    if (parent_row >= 0)
        memcpy(r, e->rowmask + (size_t)parent_row * (size_t)m->mw, sizeof *r * (size_t)m->mw);
    else
        memset(r, 0, sizeof *r * (size_t)m->mw);
    r[row / 64] |= 1ull << (row % 64);
}

/* Greedy: the max_branch largest logits of a row (ties: lower index), in
 * descending order, with their probabilities. Returns how many. */
static int32_t top_candidates(copse__mdraft *m, const float *l, int32_t kmax)
{
    int32_t n = 0;
    float mx = -INFINITY;
    for (int32_t i = 0; i < m->n_out; i++) {
        const float v = l[i];
        if (!(v > -INFINITY) || v != v)
            continue;
        if (v > mx)
            mx = v;
        if (n == kmax && !(v > m->top_l[n - 1]))
            continue;
        int32_t j = n < kmax ? n++ : n - 1;
        while (j > 0 && v > m->top_l[j - 1]) {
            m->top_l[j] = m->top_l[j - 1];
            m->top_i[j] = m->top_i[j - 1];
            j--;
        }
        m->top_l[j] = v;
        m->top_i[j] = i;
    }
    if (n == 0)
        return 0;
    double z = 0.0;
    for (int32_t i = 0; i < m->n_out; i++)
        if (l[i] > -INFINITY)
            z += exp((double)l[i] - (double)mx);
    for (int32_t j = 0; j < n; j++)
        m->top_l[j] = (float)(exp((double)m->top_l[j] - (double)mx) / z); /* now probabilities */
    return n;
}

/* Sampled: q of a row into qp/qi[slot] (p descending, ties lower index),
 * cut to q_top tokens and renormalized. */
static copse_status row_q(copse__mdraft *m, const md_seq *s, const float *l, int32_t slot)
{
    copse_sampling_dist d;
    copse_status st = copse__sampling_probs(m->sampler, &s->sp, l, NULL, 0, &d);
    if (st != COPSE_OK)
        return st;
    float *qp = m->qp + (size_t)slot * (size_t)m->q_top;
    copse_token *qi = m->qi + (size_t)slot * (size_t)m->q_top;
    int32_t n = 0;
    for (int32_t k = 0; k < d.n; k++) {
        const float v = d.p[k];
        if (!(v > 0.0f))
            continue;
        if (n == m->q_top && !(v > qp[n - 1]))
            continue; /* ids ascend: an equal p keeps the lower id already held */
        int32_t j = n < m->q_top ? n++ : n - 1;
        while (j > 0 && v > qp[j - 1]) {
            qp[j] = qp[j - 1];
            qi[j] = qi[j - 1];
            j--;
        }
        qp[j] = v;
        qi[j] = d.ids[k];
    }
    double z = 0.0;
    for (int32_t k = 0; k < n; k++)
        z += qp[k];
    if (n == 0 || !(z > 0.0))
        return COPSE_ERANGE;
    for (int32_t k = 0; k < n; k++)
        qp[k] = (float)(qp[k] / z);
    m->qn[slot] = n;
    return COPSE_OK;
}

static int cmp_desc(const void *a, const void *b, const md_cand *c)
{
    const int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    if (c[i].logp != c[j].logp)
        return c[i].logp > c[j].logp ? -1 : 1;
    return i < j ? -1 : (i > j);
}

/* Sort idx[0..n) by candidate logp descending, ties by index (insertion
 * sort: n is a few hundred at most and mostly small). */
static void sort_cands(int32_t *idx, int32_t n, const md_cand *c)
{
    for (int32_t i = 1; i < n; i++) {
        int32_t v = idx[i], j = i;
        while (j > 0 && cmp_desc(&v, &idx[j - 1], c) < 0) {
            idx[j] = idx[j - 1];
            j--;
        }
        idx[j] = v;
    }
}

/* ---------------------------------------------------------------- one level, one entry */

/* Greedy: candidates from the frontier rows' logits, then the next frontier. */
static void level_greedy(copse__mdraft *m, md_entry *e, const float *logits, int32_t level)
{
    const int32_t first_new = e->n_cands;
    for (int32_t j = 0; j < e->n_front; j++) {
        const int32_t pc = e->front[j];
        const float plogp = pc < 0 ? 0.0f : e->cands[pc].logp;
        int32_t k = top_candidates(m, logits + (size_t)j * (size_t)m->n_out, m->max_branch);
        for (int32_t c = 0; c < k && e->n_cands < m->cand_cap; c++) {
            float pr = m->top_l[c];
            if (!(pr > 0.0f))
                continue;
            if (pr > 1.0f)
                pr = 1.0f;
            md_cand *nc = &e->cands[e->n_cands++];
            nc->token = head_token(m, m->top_i[c]);
            nc->parent = pc;
            nc->row = -1;
            nc->p = pr;
            nc->logp = plogp + logf(pr);
        }
    }
    e->n_front = 0;
    if (level >= e->max_depth)
        return;
    /* the bar: the budget-th best logp so far */
    float bar = -INFINITY;
    if (e->n_cands >= e->budget) {
        for (int32_t i = 0; i < e->n_cands; i++)
            m->order[i] = i;
        sort_cands(m->order, e->n_cands, e->cands);
        bar = e->cands[m->order[e->budget - 1]].logp;
    }
    int32_t n = 0;
    for (int32_t i = first_new; i < e->n_cands; i++)
        if (e->cands[i].logp > bar)
            m->order[n++] = i;
    sort_cands(m->order, n, e->cands);
    for (int32_t i = 0; i < n && e->n_front < m->width && e->n_rows + e->n_front < m->row_cap; i++)
        e->front[e->n_front++] = m->order[i];
}

/* Greedy: the best `budget` candidates become the tree. */
static copse_status finish_greedy(copse__mdraft *m, md_entry *e)
{
    int32_t n = e->n_cands;
    for (int32_t i = 0; i < n; i++)
        m->order[i] = i;
    sort_cands(m->order, n, e->cands);
    if (n > e->budget)
        n = e->budget;
    /* mark the chosen, then add in index order (parents first); cands[].row
     * is reused as the tree node index */
    for (int32_t i = 0; i < e->n_cands; i++)
        e->cands[i].row = -2;
    for (int32_t i = 0; i < n; i++)
        e->cands[m->order[i]].row = -3;
    for (int32_t i = 0; i < e->n_cands; i++) {
        md_cand *c = &e->cands[i];
        if (c->row != -3)
            continue;
        int32_t parent = c->parent < 0 ? COPSE_TREE_ROOT : e->cands[c->parent].row;
        assert(parent >= COPSE_TREE_ROOT);
        int32_t node;
        copse_status st = copse__tree_add(e->tree, parent, c->token, c->p, m->p.bit, COPSE_TREE_NO_Q, &node);
        if (st != COPSE_OK)
            return st;
        c->row = node;
    }
    return COPSE_OK;
}

/* Sampled: q per frontier row, the level's child counts, then the draws. */
static copse_status level_sampled(copse__mdraft *m, md_entry *e, const float *logits, int32_t level)
{
    const md_seq *s = &m->seqs[e->seq];
    for (int32_t j = 0; j < e->n_front; j++) {
        copse_status st = row_q(m, s, logits + (size_t)j * (size_t)m->n_out, j);
        if (st != COPSE_OK)
            return st;
        m->take[j] = 0;
    }
    /* child counts from q's sorted probabilities only */
    int32_t levels_left = e->max_depth - level + 1;
    int32_t cap = (e->remaining + levels_left - 1) / levels_left;
    if (cap > m->width)
        cap = m->width;
    if (cap < 1)
        cap = 1;
    if (cap > e->remaining)
        cap = e->remaining;
    for (int32_t t = 0; t < cap; t++) {
        int32_t best = -1;
        float best_score = -INFINITY;
        for (int32_t j = 0; j < e->n_front; j++) {
            const int32_t k = m->take[j];
            if (k >= m->qn[j] || k >= m->max_branch)
                continue;
            const int32_t u = e->front[j];
            const float lp = u < 0 ? 0.0f : copse__tree_node(e->tree, u)->logp;
            const float sc = lp + logf(m->qp[(size_t)j * (size_t)m->q_top + (size_t)k]);
            if (best < 0 || sc > best_score) {
                best = j;
                best_score = sc;
            }
        }
        if (best < 0)
            break;
        m->take[best]++;
    }
    /* draws, without replacement, and the nodes */
    const int32_t n_front = e->n_front;
    int32_t new_front = 0;
    for (int32_t j = 0; j < n_front; j++) {
        const int32_t n_take = m->take[j];
        if (n_take == 0)
            continue;
        const int32_t u = e->front[j];
        const float *qp = m->qp + (size_t)j * (size_t)m->q_top;
        const copse_token *qi = m->qi + (size_t)j * (size_t)m->q_top;
        const int32_t qn = m->qn[j];
        for (int32_t k = 0; k < qn; k++) {
            m->w[k] = qp[k];
            m->qids[k] = head_token(m, qi[k]);
        }
        int32_t qid = COPSE_TREE_NO_Q;
        if (copse__tree_add_q(e->tree, m->qids, qp, qn, &qid) != COPSE_OK)
            qid = COPSE_TREE_NO_Q; /* arena full: record one-hot, still lossless */
        const uint32_t step = (uint32_t)(e->n_ctx - 1 + level);
        const uint32_t key_node = (uint32_t)(u + 1);
        for (int32_t i = 0; i < n_take; i++) {
            double r = copse__rng_uniform(s->sp.seed, (uint32_t)e->seq, step, key_node, COPSE_DRAFTER_DRAW + (uint32_t)i);
            copse_token k;
            if (copse__sampling_sample(m->w, NULL, qn, r, &k) != COPSE_OK)
                break; /* no mass left (cannot happen: take <= support) */
            m->w[k] = 0.0f;
            int32_t node;
            copse_status st = copse__tree_add(e->tree, u, m->qids[k], qp[k], m->p.bit, qid, &node);
            if (st != COPSE_OK)
                return st;
            e->remaining--;
            e->node_row[node] = -1;
            if (level < e->max_depth && new_front < m->width && e->n_rows + new_front < m->row_cap)
                m->nfront[new_front++] = node;
        }
    }
    if (e->remaining <= 0)
        new_front = 0;
    memcpy(e->front, m->nfront, sizeof *e->front * (size_t)new_front);
    e->n_front = new_front;
    return COPSE_OK;
}

/* ---------------------------------------------------------------- a call */

copse_status copse__mdraft_run(copse__mdraft *m, int32_t n, const int32_t *seqs, const int32_t *kvseqs,
                               const copse_token *const *ctx, const int32_t *n_ctx, const int32_t *budget,
                               const int32_t *max_depth, copse_tree *const *trees, char *err, size_t err_size)
{
    assert(n >= 0 && n <= m->p.max_seqs);
    int32_t deepest = 0;
    for (int32_t i = 0; i < n; i++) {
        md_entry *e = &m->ents[i];
        e->seq = seqs[i];
        e->kvseq = kvseqs[i];
        e->tree = trees[i];
        e->n_ctx = n_ctx[i];
        e->budget = budget[i];
        e->max_depth = max_depth[i];
        copse__drafter_clamp(&m->p, trees[i], &e->budget, &e->max_depth);
        copse__tree_reset(trees[i], ctx[i][n_ctx[i] - 1]);
        e->remaining = e->budget;
        e->sampled = m->seqs[e->seq].sampled;
        e->n_rows = 0;
        e->n_cands = 0;
        e->active = e->budget > 0 && e->max_depth > 0;
        e->n_front = e->active ? 1 : 0;
        e->front[0] = -1; /* the root */
        if (e->active && e->max_depth > deepest)
            deepest = e->max_depth;
    }

    for (int32_t level = 1; level <= deepest; level++) {
        /* frontier rows of every entry, in as few forward calls as fit */
        int32_t i0 = 0;
        while (i0 < n) {
            int32_t rows = 0, ns = 0, i = i0;
            for (; i < n; i++) {
                md_entry *e = &m->ents[i];
                m->ent_first_row[i] = -1;
                if (!e->active || e->n_front == 0)
                    continue;
                if (rows + e->n_front > m->max_rows || ns == (int32_t)copse__forward_params(m->f)->max_seqs)
                    break;
                const int32_t base = e->n_rows, words = copse__tree_mask_words(base + e->n_front);
                m->ent_first_row[i] = rows;
                m->b_seq[ns] = e->kvseq;
                m->b_first[ns] = rows;
                m->b_new[ns] = e->n_front;
                m->b_base[ns] = base;
                uint64_t *mk = m->maskbuf + (size_t)rows * (size_t)m->mw;
                m->b_mask[ns] = mk;
                for (int32_t j = 0; j < e->n_front; j++) {
                    const int32_t u = e->front[j], row = base + j;
                    int32_t parent_row, dep;
                    copse_token tok;
                    if (u < 0) {
                        parent_row = -1;
                        dep = 0;
                        tok = copse__tree_root_token(e->tree);
                    } else if (e->sampled) {
                        const copse_tree_node *nd = copse__tree_node(e->tree, u);
                        parent_row = nd->parent < 0 ? 0 : e->node_row[nd->parent];
                        dep = nd->depth;
                        tok = nd->token;
                        e->node_row[u] = row;
                    } else {
                        md_cand *c = &e->cands[u];
                        parent_row = c->parent < 0 ? 0 : e->cands[c->parent].row;
                        dep = 0;
                        for (int32_t a = u; a >= 0; a = e->cands[a].parent)
                            dep++;
                        tok = c->token;
                        c->row = row;
                    }
                    row_mask_set(m, e, row, parent_row);
                    memcpy(mk + (size_t)j * (size_t)words, e->rowmask + (size_t)row * (size_t)m->mw,
                           sizeof *mk * (size_t)words);
                    m->tokens[rows + j] = tok;
                    m->depth[rows + j] = dep;
                    m->row_ent[rows + j] = i;
                }
                rows += e->n_front;
                ns++;
            }
            const int32_t i_end = i;
            if (ns > 0) {
                copse_fwd_batch b = {.n_tokens = rows,
                                     .tokens = m->tokens,
                                     .depth = m->depth,
                                     .n_seqs = ns,
                                     .seq = m->b_seq,
                                     .first = m->b_first,
                                     .n_new = m->b_new,
                                     .mask = m->b_mask,
                                     .n_logits = rows,
                                     .logit_rows = m->logit_rows,
                                     .scratch_base = m->b_base,
                                     .n_layers = m->n_layers,
                                     .head = m->head};
                char ferr[256];
                copse_status st = copse__forward_run(m->f, &b, m->logits, ferr, sizeof ferr);
                if (st == COPSE_ENOSPACE || st == COPSE_ERANGE) {
                    /* no room for more scratch: these trees stop growing here */
                    for (int32_t k = i0; k < i_end; k++)
                        if (m->ent_first_row[k] >= 0)
                            m->ents[k].n_front = 0;
                } else if (st != COPSE_OK) {
                    return copse__errorf(err, err_size, st, "draft forward: %s", ferr);
                } else {
                    for (int32_t k = i0; k < i_end; k++) {
                        md_entry *e = &m->ents[k];
                        if (m->ent_first_row[k] < 0)
                            continue;
                        e->n_rows += e->n_front;
                        const float *lg = m->logits + (size_t)m->ent_first_row[k] * (size_t)m->n_out;
                        if (e->sampled) {
                            if ((st = level_sampled(m, e, lg, level)) != COPSE_OK)
                                return copse__errorf(err, err_size, st, "draft sampling at depth %d: %s", level,
                                                     copse_strerror(st));
                        } else {
                            level_greedy(m, e, lg, level);
                        }
                    }
                }
            }
            i0 = i_end > i0 ? i_end : i0 + 1;
        }
    }
    for (int32_t i = 0; i < n; i++) {
        md_entry *e = &m->ents[i];
        if (e->active && !e->sampled) {
            copse_status st = finish_greedy(m, e);
            if (st != COPSE_OK)
                return copse__errorf(err, err_size, st, "draft tree: %s", copse_strerror(st));
        }
    }
    return COPSE_OK;
}

int32_t copse__mdraft_rows_written(const copse__mdraft *m, int32_t i)
{
    return m->ents[i].n_rows;
}

/* ---------------------------------------------------------------- reduced vocabulary */

typedef struct ranked {
    float score;
    int32_t id;
} ranked;

static int cmp_ranked(const void *a, const void *b)
{
    const ranked *x = a, *y = b;
    if (x->score != y->score)
        return x->score > y->score ? -1 : 1;
    return x->id < y->id ? -1 : (x->id > y->id);
}

copse_status copse__draft_vocab_ids(const copse_gguf *g, int32_t n_vocab, int32_t k, int32_t *ids)
{
    if (k < 1 || k > n_vocab)
        return COPSE_EINVAL;
    const copse_gguf_array *sc = NULL;
    bool use_scores = copse__gguf_get_arr(g, "tokenizer.ggml.scores", COPSE_GGUF_FLOAT32, &sc) == COPSE_OK &&
                      sc->n == (uint64_t)n_vocab;
    if (use_scores) {
        float lo = copse__gguf_arr_f32(sc, 0), hi = lo;
        for (uint64_t i = 1; i < sc->n; i++) {
            float v = copse__gguf_arr_f32(sc, i);
            lo = v < lo ? v : lo;
            hi = v > hi ? v : hi;
        }
        use_scores = hi > lo;
    }
    if (!use_scores) {
        for (int32_t i = 0; i < k; i++)
            ids[i] = i;
        return COPSE_OK;
    }
    ranked *r = malloc(sizeof *r * (size_t)n_vocab);
    if (!r)
        return COPSE_ENOMEM;
    for (int32_t i = 0; i < n_vocab; i++) {
        float v = copse__gguf_arr_f32(sc, (uint64_t)i);
        r[i] = (ranked){.score = v == v ? v : -INFINITY, .id = i};
    }
    qsort(r, (size_t)n_vocab, sizeof *r, cmp_ranked);
    for (int32_t i = 0; i < k; i++)
        ids[i] = r[i].id;
    free(r);
    return COPSE_OK;
}
