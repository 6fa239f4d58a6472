/*
 * cpu-verify.c — the CPU backend's verify op: greedy and temperature-only
 * MSS with one-hot tries over whole trees (contract in backend-impl.h,
 * equivalence argument in cpu-verify.h, rules in core/spec/verify.h).
 *
 * Each step mirrors the host reference line for line:
 *   row check     copse__sampling_probs: NaN/+inf -> COPSE_EINVAL, all -inf
 *                 -> COPSE_ERANGE (only rows the walk visits are checked);
 *   greedy        the first id whose logit equals the row maximum;
 *   p             w_i = expf((l_i - max) / T) in float, total = sum of w in
 *                 id order in double, p_i = (float)(w_i * (1 / total));
 *   tries         the children in row (node) order, shuffled by keyed
 *                 Fisher-Yates; try k accepts iff U_k < P[x] / z with z the
 *                 residual's mass summed in id order; a rejection zeroes
 *                 P[x]; a residual below 1e-9 of the node's mass falls back
 *                 to p;
 *   final draw    copse__sampling_sample over the dense residual (or p at a
 *                 leaf): the sparse and dense forms give the same token.
 */
#include "cpu-verify.h"

#include <math.h>
#include <string.h>

#include "rng-inline.h"
#include "sampling.h"
#include "spec/verify.h"

/* The same constant as verify.c's RESIDUAL_EPS. */
#define RESIDUAL_EPS 1e-9

/* copse__sampling_probs's checks of a row; *max the row maximum. */
static copse_status row_check(const float *l, int32_t n, float *max)
{
    float m = -INFINITY;
    int32_t n_ninf = 0;
    for (int32_t i = 0; i < n; i++) {
        float x = l[i];
        if (x != x || x == INFINITY)
            return COPSE_EINVAL;
        n_ninf += x == -INFINITY;
        m = x > m ? x : m;
    }
    *max = m;
    return n_ninf == n ? COPSE_ERANGE : COPSE_OK;
}

/* The processed distribution at temperature t, dense: p[i] as
 * copse__sampling_probs lists it, 0 for tokens it leaves out. */
static void row_probs(const float *l, int32_t n, float max, float t, float *p)
{
    double total = 0.0;
    for (int32_t i = 0; i < n; i++) {
        float w = l[i] == -INFINITY ? 0.0f : expf((l[i] - max) / t);
        p[i] = w;
        total += w;
    }
    const double inv_total = 1.0 / total; /* total >= 1: the argmax weighs 1 */
    for (int32_t i = 0; i < n; i++)
        p[i] = (float)(p[i] * inv_total);
}

static double mass(const float *p, int32_t n)
{
    double z = 0.0;
    for (int32_t i = 0; i < n; i++)
        z += p[i];
    return z;
}

void copse__cpu_verify_tree(const float *logits, size_t row_stride, int32_t n_vocab, const copse_verify_batch *b,
                            int32_t s, float *scratch, copse_verify_path *out)
{
    const copse_verify_seq *sq = &b->seqs[s];
    const int32_t *parent = b->parent + sq->row0;
    const copse_token *token = b->token + sq->row0;
    const bool greedy = sq->temperature == 0.0f;
    float *P0 = scratch, *P = scratch + n_vocab;
    int32_t kids[COPSE_TREE_MAX_NODES];
    memset(out, 0, sizeof *out);

    int32_t u = 0; /* the walk's row, relative to row0 */
    for (int32_t du = 0;; du++) {
        const float *l = logits + (size_t)(sq->row0 + u) * row_stride;
        float max;
        copse_status st = row_check(l, n_vocab, &max);
        if (st != COPSE_OK) {
            out->status = st;
            out->bad_row = u;
            return;
        }
        /* children of u, in row order */
        int32_t nt = 0;
        for (int32_t r = u + 1; r < sq->n_rows; r++)
            if (parent[r] == u)
                kids[nt++] = r;
        int32_t child = -1;
        copse_token next = 0;
        if (greedy) {
            int32_t arg = 0;
            while (l[arg] != max)
                arg++;
            next = arg;
            for (int32_t k = 0; k < nt && child < 0; k++)
                if (token[kids[k]] == arg)
                    child = kids[k];
        } else {
            const uint32_t step = sq->step + (uint32_t)du;
            row_probs(l, n_vocab, max, sq->temperature, P0);
            const float *w = P0; /* what the final draw samples from */
            if (nt > 0) {
                for (int32_t i = nt - 1; i > 0; i--) {
                    double r = copse_rng_uniform_inline(sq->seed, sq->sequence, step, (uint32_t)u,
                                                        COPSE_VERIFY_DRAW_ORDER + (uint32_t)(nt - 1 - i));
                    int32_t j = (int32_t)(r * (double)(i + 1));
                    int32_t tmp = kids[i];
                    kids[i] = kids[j];
                    kids[j] = tmp;
                }
                memcpy(P, P0, sizeof *P * (size_t)n_vocab);
                const double z0 = mass(P0, n_vocab);
                double z = z0;
                for (int32_t k = 0; k < nt && child < 0; k++) {
                    copse_token x = token[kids[k]];
                    bool in_vocab = x >= 0 && x < n_vocab;
                    double px = in_vocab ? (double)P[x] / z : 0.0;
                    double r = copse_rng_uniform_inline(sq->seed, sq->sequence, step, (uint32_t)u,
                                                        COPSE_VERIFY_DRAW_ACCEPT + (uint32_t)k);
                    out->n_tries++;
                    if (r < px) {
                        child = kids[k];
                        break;
                    }
                    if (in_vocab)
                        P[x] = 0.0f;
                    z = mass(P, n_vocab);
                    if (!(z > RESIDUAL_EPS * z0)) { /* p == q up to rounding: fall back to p */
                        memcpy(P, P0, sizeof *P * (size_t)n_vocab);
                        z = z0;
                    }
                }
                w = P;
            }
            if (child < 0) {
                double r = copse_rng_uniform_inline(sq->seed, sq->sequence, step, (uint32_t)u,
                                                    COPSE_VERIFY_DRAW_SAMPLE);
                st = copse__sampling_sample(w, NULL, n_vocab, r, &next);
                if (st != COPSE_OK) { /* cannot happen: p has mass */
                    out->status = st;
                    out->bad_row = u;
                    return;
                }
            }
        }
        if (child < 0) {
            out->next = next;
            return;
        }
        out->accepted[out->n_accepted++] = child - 1;
        u = child;
    }
}
