/*
 * drafters-impl.h — pieces shared by the model-free drafters (internal to
 * core/spec/drafters/).
 *
 * Two building blocks, both defined in ngram.c:
 *
 *   copse__ngram_index  a per-sequence history of committed tokens with, for
 *                       every n in [1, max_n], a hash-chain index of the
 *                       n-grams of the history: head[h] is the last position
 *                       where an n-gram with hash h *ends*, prev[i] the
 *                       previous position ending an n-gram with the same hash
 *                       as the one ending at i (-1 at the end of a chain).
 *                       Appending one token costs one hash step and two
 *                       stores per level: O(1) for a fixed max_n, no
 *                       allocation. Chains are walked newest first;
 *                       a hash hit is always verified against the tokens.
 *
 *   copse__drafter_cands  a small scratch trie of candidate continuations
 *                       with weights (observed counts). Drafters add paths or
 *                       single children under the root (the sequence's last
 *                       token), then emit it through the tree's best-first
 *                       expansion (copse__tree_expand_best) with p(child) =
 *                       weight(child) / weight(parent). Every contribution
 *                       adds to a node no more than to its parent, so p is in
 *                       (0, 1] and the cumulative probability of a node is
 *                       its weight / the root's weight: best-first keeps the
 *                       `budget` heaviest nodes, closed under ancestors.
 *
 * Memory: both are sized once (index at seq_begin, cands at drafter create)
 * and never allocate afterwards. Neither is thread-safe; the owner serializes.
 */
#ifndef COPSE_SPEC_DRAFTERS_IMPL_H
#define COPSE_SPEC_DRAFTERS_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "copse.h"
#include "spec/drafter.h"
#include "spec/tree.h"

/* ---------------------------------------------------------------- n-gram index */

#define COPSE__NGRAM_MAX_N 8           /* upper bound on max_n (hash levels) */
#define COPSE__NGRAM_MAX_CAP (1 << 28) /* upper bound on a sequence's max_len */

typedef struct copse__ngram_index {
    int32_t *tokens;   /* [cap] committed history */
    int32_t len;       /* tokens held */
    int32_t cap;       /* the sequence's max length */
    int32_t max_n;     /* levels 1..max_n */
    uint32_t mask;     /* head table size - 1 (power of two >= 2 * cap) */
    int32_t *head[COPSE__NGRAM_MAX_N + 1]; /* [n][mask + 1], -1 = empty; [0] unused */
    int32_t *prev[COPSE__NGRAM_MAX_N + 1]; /* [n][cap] */
    void *block;       /* the one allocation holding all arrays */
} copse__ngram_index;

/* Allocate an index for up to cap tokens and levels 1..max_n (1 <= max_n <=
 * COPSE__NGRAM_MAX_N). COPSE_EINVAL unless 1 <= cap <= COPSE__NGRAM_MAX_CAP;
 * COPSE_ENOMEM. On failure *ix is left empty (block NULL). */
copse_status copse__ngram_index_init(copse__ngram_index *ix, int32_t cap, int32_t max_n);
void copse__ngram_index_free(copse__ngram_index *ix);

/* Append tokens; COPSE_ERANGE (and nothing appended) if they do not fit in
 * cap. O(n * max_n). */
copse_status copse__ngram_index_append(copse__ngram_index *ix, const int32_t *toks, int32_t n);

/* True if every id of toks[0..n) is in [0, p->n_vocab). */
bool copse__drafter_tokens_ok(const copse_drafter_params *p, const int32_t *toks, int32_t n);

/* A drafter's seq_begin over its index: check the prompt (COPSE_EINVAL),
 * allocate for max_len tokens and index the prompt. */
copse_status copse__ngram_index_begin(copse__ngram_index *ix, const copse_drafter_params *p, const int32_t *prompt,
                                      int32_t n_prompt, int32_t max_len);

/* A drafter's propose over its index: check the part of the history ctx[0..n_ctx)
 * the index has not seen (COPSE_EINVAL, also for an empty history), then
 * copse__ngram_index_sync. */
copse_status copse__ngram_index_catch_up(copse__ngram_index *ix, const copse_drafter_params *p, const int32_t *ctx,
                                         int32_t n_ctx);

/* A drafter's observe over its index: check the tokens (COPSE_EINVAL), append. */
copse_status copse__ngram_index_observe(copse__ngram_index *ix, const copse_drafter_params *p, const int32_t *toks,
                                        int32_t n);

/* Bring the index in line with a caller's full history ctx[0..n_ctx): append
 * the tail the index has not seen. COPSE_EINVAL if ctx is shorter than the
 * history or disagrees with its last token; COPSE_ERANGE past cap. */
copse_status copse__ngram_index_sync(copse__ngram_index *ix, const int32_t *ctx, int32_t n_ctx);

/* Up to max_out most recent earlier positions p (newest first) where the
 * history's last n tokens also occur ending at p, with p + 1 < len (so at
 * least one continuation token follows); walks at most max_steps chain links.
 * Returns the number written to out. n must be in [1, max_n]. */
int32_t copse__ngram_index_find(const copse__ngram_index *ix, int32_t n, int32_t *out,
                                int32_t max_out, int32_t max_steps);

struct copse__drafter_cands;

/* Add the continuations of the longest match (n from max_n down to min_n)
 * of the history's tail to cands: one path per occurrence (newest first, up
 * to max_occ), each of max_depth tokens (continued periodically where it
 * reaches the history's end, see ngram.c), each of weight occ_weight.
 * Returns the n used (0: no match, cands unchanged). */
int32_t copse__ngram_index_propose(const copse__ngram_index *ix, int32_t min_n, int32_t max_n,
                                   int32_t max_occ, int32_t max_depth, float occ_weight,
                                   struct copse__drafter_cands *cands);

/* ---------------------------------------------------------------- candidate trie */

typedef struct copse__drafter_cand {
    int32_t token;
    int32_t parent;       /* candidate index; -1 for the root */
    int32_t first_child;  /* -1 if none */
    int32_t next_sibling; /* -1 if none */
    int32_t depth;        /* root 0 */
    float weight;         /* sum of contributions through this node */
} copse__drafter_cand;

typedef struct copse__drafter_cands {
    copse__drafter_cand *nodes; /* [cap]; nodes[0] is the root */
    int32_t n;
    int32_t cap;
    int32_t *map;   /* [map_cap] tree node -> candidate, filled during emit */
    int32_t map_cap;
} copse__drafter_cands;

/* cap candidate nodes (root included); emit() handles trees of up to
 * max_tree_nodes nodes. */
copse_status copse__drafter_cands_init(copse__drafter_cands *c, int32_t cap, int32_t max_tree_nodes);
void copse__drafter_cands_free(copse__drafter_cands *c);

/* Empty the trie; the root gets token root_token and weight 0. */
void copse__drafter_cands_reset(copse__drafter_cands *c, int32_t root_token);

/* The child of parent with this token, created if missing; weight added to
 * it (not to its ancestors). -1 when the trie is full (nothing changed). */
int32_t copse__drafter_cands_add(copse__drafter_cands *c, int32_t parent, int32_t token, float weight);

/* Add a path of n tokens below the root, weight w on every node of it (and
 * on the root). Stops quietly where the trie is full. */
void copse__drafter_cands_add_path(copse__drafter_cands *c, const int32_t *toks, int32_t n, float w);

/* Reset tree to the root's token and fill it by best-first expansion: the
 * `budget` heaviest candidates of depth <= max_depth, at most max_children
 * per node, marked drafter_bits, deterministic (one-hot q). p = weight(node)
 * / weight(parent), a ranking only. budget <= the map capacity of init. */
copse_status copse__drafter_cands_emit(copse__drafter_cands *c, int32_t budget, int32_t max_depth,
                                       int32_t max_children, uint32_t drafter_bits, copse_tree *tree);

/* ---------------------------------------------------------------- shared helpers */

/* The clamping rule every model-free drafter applies to propose() limits:
 * budget to [0, min(params.max_nodes, tree capacity)], depth to
 * [0, params.max_depth] (params.max_depth <= COPSE_TREE_MAX_DEPTH). */
void copse__drafter_clamp(const copse_drafter_params *p, const copse_tree *tree, int32_t *budget,
                          int32_t *max_depth);

/* ---------------------------------------------------------------- model drafters' tree builder */

/* The level-wise tree builder of layerskip and model:FILE (model-draft.c):
 * drafts with forward f (its first n_layers layers, 0 = all; reduced head
 * or NULL). Sized from p (max_seqs entries per call, max_nodes, max_depth,
 * max_branch, draft_width, draft_q_top, draft_max_tokens). */
typedef struct copse__mdraft copse__mdraft;

copse_status copse__mdraft_create(const copse_drafter_params *p, copse_forward *f, uint32_t n_layers,
                                  const copse_fwd_head *head, copse__mdraft **out, char *err, size_t err_size);
void copse__mdraft_destroy(copse__mdraft *m); /* NULL-safe */

/* Drafter sequence `seq` drafts greedily (seq_begin) / with sp (seq_sampling:
 * COPSE_EINVAL for invalid params). */
void copse__mdraft_seq_reset(copse__mdraft *m, int32_t seq);
copse_status copse__mdraft_seq_sampling(copse__mdraft *m, int32_t seq, const copse_sampling_params *sp);

/* Draft n trees (drafter.h "Model drafters"): entry i is drafter sequence
 * seqs[i] whose KV sequence in f is kvseqs[i], holding exactly ctx[i][0,
 * n_ctx[i] - 1) committed (the caller checks). Writes draft rows into that
 * sequence's scratch (row 0 = the root at position n_ctx - 1); the caller
 * commits or truncates. Limits are clamped as drafter.h says. Scratch that
 * does not fit (COPSE_ENOSPACE / ERANGE from the forward) stops a tree's
 * growth quietly; other forward errors are returned (message in err). */
copse_status copse__mdraft_run(copse__mdraft *m, int32_t n, const int32_t *seqs, const int32_t *kvseqs,
                               const copse_token *const *ctx, const int32_t *n_ctx, const int32_t *budget,
                               const int32_t *max_depth, copse_tree *const *trees, char *err, size_t err_size);

/* Scratch rows entry i of the last run wrote (0: none; row 0 is the root). */
int32_t copse__mdraft_rows_written(const copse__mdraft *m, int32_t i);

/* The most frequent tokens of a model's vocabulary for a reduced head: the k
 * ids with the highest tokenizer.ggml.scores when the model has varying
 * scores, else the k lowest ids (byte-level BPE ids follow merge order).
 * ids[k] out. COPSE_EINVAL for k outside [1, n_vocab]. */
copse_status copse__draft_vocab_ids(const copse_gguf *g, int32_t n_vocab, int32_t k, int32_t *ids);

/* model:FILE introspection (tests): its forward, and its KV sequence of
 * drafter sequence seq (-1 when not begun). */
copse_forward *copse__draft_model_forward(const copse_drafter *d);
int32_t copse__draft_model_kvseq(const copse_drafter *d, int32_t seq);

/* ---------------------------------------------------------------- suffix pool introspection (tests) */

typedef struct copse__suffix_stats {
    int32_t nodes;     /* live trie nodes, root included */
    int32_t node_cap;  /* the bound: suffix_pool_tokens * suffix_depth + 1 */
    int32_t tokens;    /* pooled tokens */
    int32_t token_cap; /* suffix_pool_tokens */
    int32_t docs;      /* pooled outputs */
} copse__suffix_stats;

/* d must be a "suffix" drafter. */
void copse__suffix_get_stats(const copse_drafter *d, copse__suffix_stats *out);

/* Check the pool's invariants (counts, child lists, hash, token and node
 * accounting). COPSE_EINVAL with a message naming the first violation. */
copse_status copse__suffix_validate(const copse_drafter *d, char *err, size_t err_size);

#endif /* COPSE_SPEC_DRAFTERS_IMPL_H */
