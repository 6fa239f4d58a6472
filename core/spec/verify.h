/*
 * verify.h — verification of a token tree against the target's logits
 * (internal; the host reference of the backend `verify` op).
 *
 * Input: one sequence's tree (tree.h), flattened as [pending root, nodes],
 * and the target's logits for every flattened row: row 0 (the root) holds
 * the distribution of the root's children, row 1 + i that of node i's
 * children. Output: the accepted path (node indices, strictly increasing,
 * each the child of the previous) and the next token (the correction token
 * after a rejection, or the bonus token after a fully accepted path).
 *
 * Greedy (params.sampling.temperature == 0)
 *   Walk from the root while a child's token equals the target's argmax at
 *   its parent's row (penalized logits when penalties are on; lowest id on
 *   ties), then append the target's own argmax at the last accepted row.
 *   Equal to plain greedy decoding token for token.
 *
 * Stochastic: multi-step speculative sampling (MSS, SpecInfer Alg. 2)
 *   At node u (row r), p = the processed target distribution of row r
 *   (copse__sampling_probs: penalties over history + path, temperature,
 *   top-k, top-p, min-p). The *tries* at u are: for each child c, one
 *   one-hot try if some proposer proposed c deterministically (or c has no
 *   q), plus one try per stochastic proposer of c (its own q). Tries run in
 *   a random order (keyed Fisher-Yates shuffle), except that the tries of
 *   one stochastic proposer keep the order it added its children (its draw
 *   order) among the slots they occupy. Try k of token x with distribution
 *   q_k accepts iff U_k < p(x) / q_k(x) (probability min(1, p/q)); then the
 *   walk descends into c. On rejection p <- normalize(max(0, p - q_k)) and
 *   the next try runs. If every try fails (or u is a leaf) the next token
 *   is drawn from the current p (the residual after a rejection, else the
 *   target's distribution). A residual with no mass left (p == q up to
 *   rounding: total below 1e-9 of the node's original mass) falls back to
 *   the node's original p.
 *   q_k of a one-hot try is the point mass on x. q_k of a stochastic try by
 *   proposer d is d's q with the tokens of d's earlier children of u (in
 *   node order) removed and renormalized — the law of a draw without
 *   replacement. A try whose q_k(x) is 0 (inconsistent q) runs as one-hot,
 *   and so do all tries of a drafter that also has a one-hot proposal
 *   among u's children (tree.h, "demotion rule").
 *   Merged proposers with different q: each keeps its own try with its own
 *   q, so a token two drafters proposed is tested once per proposer, each
 *   against the residual left by the tries before it. This is recursive
 *   rejection sampling; it is lossless as long as each stochastic token
 *   really was drawn from its q (tree.h, "losslessness contract"); one-hot
 *   tries are lossless for any proposal.
 *
 * Randomness
 *   Every uniform is copse__rng_uniform(seed, sequence, step + depth(u),
 *   row(u), draw) where row(u) is u's flattened row (0 = root) and:
 *     COPSE_VERIFY_DRAW_SAMPLE (0)       the final draw (correction/bonus);
 *                                        the same key plain decoding uses,
 *                                        so an empty tree reproduces
 *                                        copse__sampling_sample_token;
 *     COPSE_VERIFY_DRAW_ORDER + i        uniform i of the child shuffle;
 *     COPSE_VERIFY_DRAW_ACCEPT + k       the acceptance test of try k.
 *   `step` is the absolute position of the token drawn at the root (the
 *   pending token sits at position committed length, so step = committed
 *   length + 1); plain decoding should pass the position of the token it
 *   samples the same way. Then no key is used twice across steps: a call
 *   consumes step components step .. step + n_accepted only (it never
 *   visits below its last accepted node), and the next call's step is
 *   step + n_accepted + 1, one past the token emitted last.
 *
 * Stop conditions
 *   The emitted tokens are the accepted tokens then the next token. They
 *   are cut after the first token in eos[] or for which stop_cb returns
 *   true (the token itself is kept), and after max_tokens tokens. A cut
 *   inside the path drops the rest of the path and the next token.
 *
 * Memory and threading: copse__verify_create allocates the workspace (a
 * sampler, dense rows of n_vocab floats, try lists for a tree capacity);
 * a run allocates nothing. One workspace per thread.
 */
#ifndef COPSE_SPEC_VERIFY_H
#define COPSE_SPEC_VERIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend-impl.h"
#include "copse.h"
#include "sampling.h"
#include "spec/tree.h"

#define COPSE_VERIFY_DRAW_SAMPLE 0u
#define COPSE_VERIFY_DRAW_ORDER 1u
#define COPSE_VERIFY_DRAW_ACCEPT 0x80000000u

/* ---------------------------------------------------------------- parameters */

/* Deliberately wrong verifiers (tests only, see copse_verify_params). */
typedef enum copse_verify_fault {
    COPSE_VERIFY_FAULT_NONE = 0,
    COPSE_VERIFY_FAULT_NO_RESIDUAL, /* after every try failed, draw from p, not the residual */
    COPSE_VERIFY_FAULT_IGNORE_Q,    /* accept with min(1, p(x)) even when q is real */
} copse_verify_fault;

/* Called once per emitted token in emission order until it returns true
 * (e.g. a stop string completed by this token): the token is kept and
 * nothing after it is emitted. index counts tokens emitted this call. */
typedef bool (*copse_verify_stop_cb)(void *ud, copse_token token, int32_t index);

typedef struct copse_verify_params {
    copse_sampling_params sampling; /* temperature 0 selects greedy; seed keys the RNG */
    uint32_t sequence;              /* RNG key: sequence id within the request */
    uint32_t step;                  /* RNG key: position of the token drawn at the root */
    /* Penalty history: the tokens before the path, root token included. verify
     * writes the path tokens after them (history[n_history ..]) while it walks,
     * so history_cap must be >= n_history + tree depth. May be NULL (0, 0)
     * when no penalty is on. */
    copse_token *history;
    size_t n_history;
    size_t history_cap;
    const copse_token *eos; /* [n_eos] end-of-sequence ids (may be NULL) */
    int32_t n_eos;
    copse_verify_stop_cb stop_cb; /* may be NULL */
    void *stop_ud;
    int32_t max_tokens; /* most tokens to emit in this call, >= 1 */
    /* For tests only: a deliberately wrong verifier, so that distribution
     * tests can show they have power. Never set outside tests. */
    copse_verify_fault fault;
} copse_verify_params;

/* Defaults as code: default sampling, key (0, 0), no history, no stops,
 * max_tokens INT32_MAX. */
copse_verify_params copse__verify_default_params(void);

typedef enum copse_verify_stop {
    COPSE_VERIFY_CONTINUE = 0, /* no stop condition met */
    COPSE_VERIFY_EOS = 1,      /* the last emitted token is in eos[] */
    COPSE_VERIFY_STOPPED = 2,  /* stop_cb returned true for the last emitted token */
    COPSE_VERIFY_LIMIT = 3,    /* max_tokens reached */
} copse_verify_stop;

typedef struct copse_verify_result {
    int32_t n_accepted;                        /* accepted nodes (emitted path length) */
    int32_t accepted[COPSE_TREE_MAX_DEPTH];    /* node indices, root child first */
    bool has_next;                             /* next is emitted */
    copse_token next;                          /* correction or bonus token */
    int32_t n_tokens;                          /* n_accepted + has_next */
    copse_token tokens[COPSE_TREE_MAX_DEPTH + 1]; /* emitted tokens in order */
    copse_verify_stop stop;
    int32_t n_tries;                           /* acceptance tests run (MSS), stats */
} copse_verify_result;

/* ---------------------------------------------------------------- workspace */

typedef struct copse_verify copse_verify;

/* A workspace for rows of n_vocab logits and trees of up to max_nodes nodes.
 * COPSE_EINVAL (limits), COPSE_ENOMEM; *out NULL on failure. */
copse_status copse__verify_create(int32_t n_vocab, int32_t max_nodes, copse_verify **out, char *err,
                                  size_t err_size);
/* Accepts NULL. */
void copse__verify_destroy(copse_verify *v);

/* ---------------------------------------------------------------- verification */

/*
 * Verify tree t against logits: row r (0 .. copse__tree_flat_rows(t)) at
 * logits + r * row_stride, n_vocab floats each. Greedy or MSS by
 * params->sampling.temperature (see above). COPSE_EINVAL for bad params
 * (message in err), a tree larger than the workspace, or a too small
 * history_cap; COPSE_ERANGE / COPSE_EINVAL from a row without a
 * distribution (all -inf, NaN). On error *res is zeroed.
 */
copse_status copse__verify_run(copse_verify *v, const copse_tree *t, const float *logits,
                               size_t row_stride, const copse_verify_params *params,
                               copse_verify_result *res, char *err, size_t err_size);

/*
 * Greedy verification from per-row argmax ids (the backend argmax op's
 * output, row_argmax[n_rows], no penalties): pure, no workspace. Stop
 * conditions and max_tokens apply as above; sampling params are ignored.
 */
void copse__verify_greedy_ids(const copse_tree *t, const copse_token *row_argmax,
                              const copse_verify_params *params, copse_verify_result *res);

/* ---------------------------------------------------------------- the backend verify op */

/*
 * The backend `verify` op (backend-impl.h, copse_verify_batch) computes on
 * the device, for the trees that need no host-side sampling state, the
 * accepted path and the next token that copse__verify_run would compute,
 * without stop conditions. The host then applies the stops to the path
 * (copse__verify_from_path). Cutting afterwards is equivalent because the
 * walk never looks at stops: the decision at depth du depends only on the
 * rows on the path and the uniforms keyed (step + du, row), never on what
 * was emitted, so the tokens before a cut are the same, and emitting them
 * in order with the same stop_cb calls cuts at the same token. A row the
 * host would never reach (below a cut) may still be bad (NaN) on the
 * device: the op reports where its walk stopped, and the error counts only
 * when the cut does not come first — as on the host.
 *
 * The op uses exactly the keys above, so on the CPU backend its result is
 * bit-identical to copse__verify_run's; device backends document their
 * rounding (backends/cuda/verify.cu).
 */

/* Whether the verify op may verify tree t under params: no fault; valid
 * sampling params without penalties; greedy, or temperature-only sampling
 * (top_k 0 or >= n_vocab, top_p 1, min_p 0) with every proposal one-hot
 * (no node keeps a q: deterministic drafters such as ngram and suffix). */
bool copse__verify_op_eligible(const copse_tree *t, const copse_verify_params *params, int32_t n_vocab);

/* Tree t as op input with its root at logits row row0: *seq (key and
 * temperature from params) and parent[0 .. flat rows), token[0 .. flat
 * rows) — the op's arrays at row0. */
void copse__verify_op_tree(const copse_tree *t, const copse_verify_params *params, int32_t row0,
                           copse_verify_seq *seq, int32_t *parent, copse_token *token);

/*
 * The result copse__verify_run would give, from the op's path for tree t:
 * the accepted tokens then the next token, emitted and cut by the stop
 * conditions of params exactly as verify.h says (history written as
 * there). An error the op reports on its walk is returned (message in err,
 * *res zeroed) unless a stop cut the path before the bad row. res->n_tries
 * is the op's count over its whole walk (copse__verify_run stops counting
 * at a cut); everything else equals copse__verify_run's result.
 */
copse_status copse__verify_from_path(const copse_tree *t, const copse_verify_path *path,
                                     const copse_verify_params *params, copse_verify_result *res, char *err,
                                     size_t err_size);

/* The KV rows to commit for a result, for copse__kvcache_commit_path with
 * n_nodes = copse__tree_flat_rows(t): rows[0] = 0 (the pending root), rows[1
 * + k] = 1 + accepted[k]. Returns n_accepted + 1. rows needs that room. */
int32_t copse__verify_commit_rows(const copse_verify_result *res, uint32_t *rows);

#endif /* COPSE_SPEC_VERIFY_H */
