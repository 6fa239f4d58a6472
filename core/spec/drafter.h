/*
 * drafter.h — the drafter interface and the drafter registry (internal).
 *
 * A drafter proposes a token tree for a sequence and learns from what the
 * target accepted (DESIGN.md, "Drafters"). Every drafter is an object
 * { interface by value, name, flags, void *ctx } created per engine from a
 * spec string ("ngram", "suffix", "layerskip:N", "model:FILE").
 *
 * Lifecycle, per engine and per sequence
 *   copse__drafter_create()            once per engine; allocates everything
 *                                      that does not depend on a sequence.
 *   iface.seq_begin(seq, prompt, max_len)
 *                                      when a sequence is admitted; may
 *                                      allocate state bounded by max_len
 *                                      (the sequence's prompt + output cap).
 *   iface.propose(seq, ctx, budget, max_depth, tree)
 *                                      each step; fills `tree` (reset by the
 *                                      drafter, root = ctx[n_ctx - 1]).
 *   iface.observe(seq, accepted)       after verification: the tokens that
 *                                      were committed, in order (the target's
 *                                      correction/bonus token included).
 *   iface.seq_end(seq)                 when the sequence finishes or is
 *                                      dropped; frees its state.
 *   iface.destroy()                    once; seq_end is implied for every
 *                                      live sequence.
 * Nothing in propose/observe allocates.
 *
 * Sequences
 *   seq is a slot id in [0, params.max_seqs) chosen by the engine (the same
 *   ids as the KV cache's). Using a slot that is not begun, or beginning one
 *   twice, is a programming error (assert).
 *
 * History and context
 *   A drafter keeps its own copy of each sequence's committed history:
 *   prompt (seq_begin) + every observe(). propose() receives the engine's
 *   view of the full committed history ctx[0, n_ctx); it must extend the
 *   drafter's copy (n_ctx >= drafter's length). A tail the drafter has not
 *   seen (e.g. tokens committed while another drafter was selected) is
 *   caught up inside propose(); a ctx that is shorter than the drafter's
 *   history, or whose last known token disagrees with it, is COPSE_EINVAL.
 *   A history that would pass max_len is COPSE_ERANGE (nothing appended).
 *   Tokens outside [0, params.n_vocab) are COPSE_EINVAL.
 *
 * Trees (spec/tree.h)
 *   propose() resets `tree` with root token ctx[n_ctx - 1] (the pending
 *   token: emitted, not yet in the target's KV cache) and adds at most
 *   `budget` nodes (the root is not a node) of depth at most `max_depth`
 *   (root children have depth 1), each marked with params.bit. Limits are
 *   clamped, never refused: budget to [0, min(params.max_nodes, tree
 *   capacity)], max_depth to [0, params.max_depth]; negative values count
 *   as 0. An empty tree (root only) means "no proposal" and is COPSE_OK.
 *   `has_q` false (ngram, suffix): the drafter is deterministic; its nodes
 *   are one-hot (COPSE_TREE_NO_Q) and node probabilities only rank nodes.
 *   `has_q` true (model drafters): nodes carry the q they were drawn from.
 *
 * Threading: a drafter is used by one thread at a time (the engine
 * serializes calls, possibly from libuv's thread pool, but never two at
 * once on one drafter). Different drafters are independent. State shared
 * across the sequences of one drafter (the suffix drafter's global pool)
 * lives inside the drafter, never in globals.
 */
#ifndef COPSE_SPEC_DRAFTER_H
#define COPSE_SPEC_DRAFTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "copse.h"
#include "spec/tree.h"

typedef struct copse_drafter copse_drafter;

/* ---------------------------------------------------------------- parameters */

typedef struct copse_drafter_params {
    int32_t n_vocab;      /* tokens are ids in [0, n_vocab). Required (> 0) */
    int32_t max_seqs;     /* sequence slots. Default 64 */
    int32_t max_nodes;    /* clamp on propose()'s budget. Default 64 */
    int32_t max_depth;    /* clamp on propose()'s depth, <= COPSE_TREE_MAX_DEPTH. Default 16 */
    uint32_t bit;         /* this drafter's bit in tree nodes' drafter mask. Default 1 */
    int32_t max_branch;   /* most occurrences / children considered per node. Default 8 */

    /* ngram (also the suffix drafter's index over the request itself) */
    int32_t ngram_min_n;  /* shortest match tried. Default 1 */
    int32_t ngram_max_n;  /* longest match tried, <= 8. Default 4 */

    /* suffix: the global pool of finished requests' outputs */
    int32_t suffix_pool_tokens; /* tokens kept in the pool (FIFO by request). Default 16384 */
    int32_t suffix_max_docs;    /* requests kept in the pool. Default 1024 */
    int32_t suffix_depth;       /* depth of the pool's suffix trie. Default 24 */
    int32_t suffix_max_match;   /* longest context suffix matched in the pool,
                                   < suffix_depth. Default 8 */
} copse_drafter_params;

/* Defaults as code (n_vocab 0: the caller must set it). */
copse_drafter_params copse__drafter_default_params(void);

/* COPSE_OK or COPSE_EINVAL with a message naming the offending field. */
copse_status copse__drafter_params_validate(const copse_drafter_params *p, char *err, size_t err_size);

/* ---------------------------------------------------------------- interface */

typedef struct copse_drafter_i {
    /* Free everything, live sequences included. */
    void (*destroy)(copse_drafter *d);
    /* Start sequence `seq` with its prompt (n_prompt may be 0). max_len
     * bounds its history (prompt + output), 1 <= max_len <= 2^28 and >=
     * n_prompt; memory is O(max_len). COPSE_ENOMEM, COPSE_EINVAL (a bad
     * token or max_len). On failure the slot stays free. */
    copse_status (*seq_begin)(copse_drafter *d, int32_t seq, const copse_token *prompt, int32_t n_prompt,
                              int32_t max_len);
    /* Fill `tree` (see "Trees" above). n_ctx >= 1. On COPSE_EINVAL or
     * COPSE_ERANGE (bad ctx) the tree is left as it was. */
    copse_status (*propose)(copse_drafter *d, int32_t seq, const copse_token *ctx, int32_t n_ctx,
                            int32_t budget, int32_t max_depth, copse_tree *tree);
    /* The tokens committed after the last step, in order (n may be 0). */
    copse_status (*observe)(copse_drafter *d, int32_t seq, const copse_token *accepted, int32_t n);
    /* Free the sequence's state (the suffix drafter first moves its output
     * into the global pool). */
    void (*seq_end)(copse_drafter *d, int32_t seq);
} copse_drafter_i;

struct copse_drafter {
    copse_drafter_i iface;
    const char *name; /* "ngram", "suffix", ... (static storage) */
    bool has_q;       /* true: proposals carry a real q; false: one-hot q */
    void *ctx;
};

/* ---------------------------------------------------------------- specs and registry */

typedef enum copse_drafter_kind {
    COPSE_DRAFTER_NGRAM,
    COPSE_DRAFTER_SUFFIX,
    COPSE_DRAFTER_LAYERSKIP,
    COPSE_DRAFTER_MODEL,
} copse_drafter_kind;

/* A parsed spec. `file` points into the parsed string (borrowed). */
typedef struct copse_drafter_spec {
    copse_drafter_kind kind;
    int32_t layers;    /* layerskip:N, N >= 1 */
    const char *file;  /* model:FILE, non-empty */
} copse_drafter_spec;

/* Parse "ngram", "suffix", "layerskip:N", "model:FILE". COPSE_EINVAL with a
 * message for an unknown name or a bad/missing/extra argument (checked
 * first). Kinds that are not built yet ("layerskip", "model") give
 * COPSE_EUNSUPPORTED "... is not built yet", with *out still filled. */
copse_status copse__drafter_parse(const char *spec, copse_drafter_spec *out, char *err, size_t err_size);

/* Create a drafter from a spec. COPSE_EINVAL (bad spec or params),
 * COPSE_EUNSUPPORTED ("layerskip"/"model": not built yet), COPSE_ENOMEM.
 * On failure *out is NULL. */
copse_status copse__drafter_create(const char *spec, const copse_drafter_params *p, copse_drafter **out,
                                   char *err, size_t err_size);

/* NULL-safe. */
void copse__drafter_destroy(copse_drafter *d);

/* The constructors behind the registry (params already validated). */
copse_status copse__ngram_create(const copse_drafter_params *p, copse_drafter **out, char *err,
                                 size_t err_size);
copse_status copse__suffix_create(const copse_drafter_params *p, copse_drafter **out, char *err,
                                  size_t err_size);

#endif /* COPSE_SPEC_DRAFTER_H */
