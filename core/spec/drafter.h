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
 * Model drafters (layerskip:N, model:FILE)
 *   Need the fields of "model drafters" in the params (the engine fills
 *   them; ngram and suffix ignore them). Sequence ids: the engine guarantees
 *   that a drafter's `seq` IS the target's KV sequence id of that sequence
 *   and that params.max_seqs >= the target forward's max_seqs (layerskip
 *   uses the target's sequence `seq` directly; model:FILE maps it to its own
 *   KV sequence).
 *   Drafting state at propose time: the sequence's committed tokens ctx[0,
 *   n_ctx - 1) are in the target's KV cache (committed length n_ctx - 1,
 *   checked: COPSE_EINVAL otherwise for layerskip) and ctx[n_ctx - 1] is the
 *   pending token. layerskip writes its draft rows into the target's KV
 *   scratch (positions >= n_ctx - 1, first N layers only); the target's
 *   verification forward rewrites every layer of the rows it uses and the
 *   engine truncates the scratch afterwards, as for any step. model:FILE
 *   keeps its own KV cache: after propose it holds exactly ctx[0, n_ctx)
 *   (committed + pending, as a plain prefill would compute them); tokens it
 *   has not seen are prefilled (batched over sequences) in the next propose.
 *   Tree shape: level-wise expansion, one draft forward per depth over the
 *   frontier nodes of all sequences of a propose_batch call.
 *     temperature 0 (default, and after seq_sampling with temperature 0):
 *       each expanded node's max_branch most probable tokens are candidates;
 *       the draft_width best candidates of each level (by cumulative draft
 *       probability, ties: earlier) are expanded next; the tree is the
 *       `budget` best candidates overall (ancestor-closed). One-hot nodes.
 *     temperature > 0: children are SAMPLED from q = the draft distribution
 *       after the request's temperature/top-k/top-p/min-p (penalties off),
 *       cut to its draft_q_top most probable tokens and renormalized. How
 *       many children each node gets is decided from q's sorted
 *       probabilities before any draw (never from drawn values); then they
 *       are drawn without replacement with uniforms keyed by (seed, seq,
 *       step = n_ctx - 1 + depth, node = parent's flattened row, draw =
 *       COPSE_DRAFTER_DRAW + i), and recorded with q (has_q). Trees need a q
 *       arena of max_nodes * d->q_per_node entries; when it is full the
 *       children are recorded one-hot (still lossless).
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
#include "forward.h"
#include "gguf.h"
#include "sampling.h"
#include "spec/tree.h"

/* Draw ids of a sampled draft (rng.h), distinct from every draw number the
 * verifier uses (verify.h: 0, 1 + i, 0x80000000 + k). */
#define COPSE_DRAFTER_DRAW 0x40000000u

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

    /* model drafters (layerskip:N, model:FILE); ngram/suffix ignore these */
    copse_forward *target;          /* the target's forward state (weights, hparams, KV).
                                       Required by layerskip; model:FILE takes its default
                                       device and context from it when set */
    const copse_gguf *target_gguf;  /* the target model. Required by both (vocabulary check,
                                       reduced head rows) */
    copse_backend_dev *dev;         /* where model:FILE runs its forward (NULL: the target's
                                       device, else the CPU) */
    int n_threads;                  /* its CPU threads (0 = all cores) */
    int32_t draft_vocab;            /* reduced head: the K most frequent tokens (tokenizer
                                       scores when present, else the lowest ids = byte-level
                                       BPE merge order). 0 = full vocabulary. Default 0 */
    int32_t draft_width;            /* nodes expanded per tree level per sequence. Default 4 */
    int32_t draft_q_top;            /* sampled drafts: q keeps at most this many tokens.
                                       Default 64 */
    uint32_t draft_max_ctx;         /* model:FILE: longest sequence in its KV, scratch included
                                       (0: the target forward's max_ctx, else 4096) */
    uint64_t draft_kv_mem;          /* model:FILE: its KV budget in bytes (0: max_seqs *
                                       draft_max_ctx tokens) */
    uint32_t draft_max_tokens;      /* rows per draft forward call (model:FILE's own forward;
                                       layerskip also stays within the target's). Default 128 */
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

    /* (optional) The request's sampling parameters for a begun sequence,
     * called by the engine after seq_begin (a sequence without this call
     * drafts greedily). temperature 0: deterministic top-k drafts (one-hot
     * nodes); > 0: drafts sampled from q keyed by sp->seed (see "Model
     * drafters"). Penalties are ignored. COPSE_EINVAL for invalid params. */
    copse_status (*seq_sampling)(copse_drafter *d, int32_t seq, const copse_sampling_params *sp);
    /* (optional) propose for n sequences at once (distinct seqs), one draft
     * forward per tree level for all of them; entry i as propose(seqs[i],
     * ctx[i], n_ctx[i], budget[i], max_depth[i], trees[i]). NULL: the engine
     * loops over propose. On an error no tree is valid (each is reset or
     * as it was). */
    copse_status (*propose_batch)(copse_drafter *d, int32_t n, const int32_t *seqs, const copse_token *const *ctx,
                                  const int32_t *n_ctx, const int32_t *budget, const int32_t *max_depth,
                                  copse_tree *const *trees);
} copse_drafter_i;

struct copse_drafter {
    copse_drafter_i iface;
    const char *name; /* "ngram", "suffix", ... (static storage) */
    bool has_q;       /* true: proposals carry a real q; false: one-hot q */
    void *ctx;
    int32_t q_per_node; /* q arena entries a tree needs per node for this
                           drafter's q records (0: it records none). Size
                           trees with copse__tree_create(max_nodes, .., max_nodes
                           * q_per_node) */
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
 * message for an unknown name or a bad/missing/extra argument. */
copse_status copse__drafter_parse(const char *spec, copse_drafter_spec *out, char *err, size_t err_size);

/* Create a drafter from a spec. COPSE_EINVAL (bad spec or params, e.g.
 * layerskip N >= the target's layer count, a missing target), COPSE_EFORMAT
 * / COPSE_EIO (model:FILE unreadable, or its vocabulary differs from the
 * target's: the message names the first differing token id and both
 * strings), COPSE_EUNSUPPORTED, COPSE_ENOMEM. On failure *out is NULL. */
copse_status copse__drafter_create(const char *spec, const copse_drafter_params *p, copse_drafter **out,
                                   char *err, size_t err_size);

/* NULL-safe. */
void copse__drafter_destroy(copse_drafter *d);

/* The constructors behind the registry (params already validated). */
copse_status copse__ngram_create(const copse_drafter_params *p, copse_drafter **out, char *err,
                                 size_t err_size);
copse_status copse__suffix_create(const copse_drafter_params *p, copse_drafter **out, char *err,
                                  size_t err_size);
copse_status copse__layerskip_create(const copse_drafter_params *p, int32_t n_layers, copse_drafter **out,
                                     char *err, size_t err_size);
copse_status copse__draft_model_create(const copse_drafter_params *p, const char *file, copse_drafter **out,
                                       char *err, size_t err_size);

#endif /* COPSE_SPEC_DRAFTER_H */
