/*
 * engine.h — speculative decoding of one sequence over a copse_forward
 * (internal).
 *
 * State: the committed tokens (in the target's KV cache) and the pending
 * token (emitted, not yet in the KV cache). One step:
 *   drafter propose (a tree rooted at the pending token)
 *   -> flatten [pending + nodes] into one ragged row
 *   -> copse__forward_run with logits for every row
 *   -> copse__verify_run (greedy at temperature 0, MSS otherwise)
 *   -> commit the KV rows [0, 1 + accepted...] (commit_path + kv moves),
 *      give the scratch back
 *   -> drafter observe(emitted tokens)
 * and returns the emitted tokens (accepted, then the next pending token).
 * After every step the last emitted token is the pending one: it is never
 * in the KV cache (when a stop cuts inside the path, the last accepted
 * token is left out of the commit and becomes pending).
 *
 * Memory: everything (trees, batch arrays, logits rows, verification
 * workspace, history) is allocated at create; a step allocates nothing.
 * Threading: one thread at a time, like the copse_forward it drives.
 */
#ifndef COPSE_SPEC_ENGINE_H
#define COPSE_SPEC_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "copse.h"
#include "forward.h"
#include "sampling.h"
#include "spec/drafter.h"
#include "spec/verify.h"

typedef struct copse_spec_params {
    copse_sampling_params sampling; /* temperature 0: greedy verification */
    int32_t budget;                 /* most proposed nodes per step. Default 16 */
    int32_t max_depth;              /* deepest proposed node. Default 8 */
    uint32_t max_len;               /* most tokens of the sequence (committed + pending) */
    /* model drafters (layerskip:N, model:FILE) */
    const copse_gguf *target_gguf;  /* the target model (required by them) */
    int n_threads;                  /* model:FILE's CPU threads (0 = all) */
    int32_t draft_vocab;            /* reduced draft head of K tokens (0 = full) */
} copse_spec_params;

copse_spec_params copse__spec_default_params(void);

typedef struct copse_spec_stats {
    uint64_t steps;     /* verification steps */
    uint64_t proposed;  /* nodes proposed over all steps */
    uint64_t accepted;  /* nodes accepted over all steps */
    uint64_t emitted;   /* tokens emitted by steps (accepted + next tokens) */
} copse_spec_stats;

typedef struct copse_spec_engine copse_spec_engine;

/* A stepper for KV sequence `seq` of f with the drafter of `draft_spec`
 * ("ngram", "suffix", "layerskip:N", "model:FILE"; the drafter's sequence
 * id is `seq`, its max_seqs the forward's, model drafters run on f's
 * device and get the request's sampling parameters). COPSE_EINVAL / COPSE_EUNSUPPORTED (bad spec),
 * COPSE_ENOMEM. *out NULL on failure. */
copse_status copse__spec_create(copse_forward *f, int32_t seq, const char *draft_spec,
                                const copse_spec_params *p, copse_spec_engine **out, char *err,
                                size_t err_size);
void copse__spec_destroy(copse_spec_engine *e);

/* Start (or restart) the sequence: committed[0 .. n) are exactly the KV
 * sequence's committed entries, pending the token emitted after them.
 * Ends the previous drafter sequence if any. */
copse_status copse__spec_begin(copse_spec_engine *e, const copse_token *committed, uint32_t n,
                               copse_token pending, char *err, size_t err_size);

/* One step. stop_cb (may be NULL) and max_tokens (>= 1) as in verify.h.
 * *tokens points at the emitted tokens (valid until the next step), *n_tokens
 * their number (>= 1), *stop why it stopped (CONTINUE if it did not). */
copse_status copse__spec_step(copse_spec_engine *e, copse_verify_stop_cb stop_cb, void *stop_ud,
                              int32_t max_tokens, const copse_token **tokens, int32_t *n_tokens,
                              copse_verify_stop *stop, char *err, size_t err_size);

/* Committed tokens (in the KV cache) and their number; the pending token. */
const copse_token *copse__spec_committed(const copse_spec_engine *e, uint32_t *n);
copse_token copse__spec_pending(const copse_spec_engine *e);

copse_spec_stats copse__spec_stats(const copse_spec_engine *e);
const char *copse__spec_drafter_name(const copse_spec_engine *e);
/* The drafter the stepper drives (owned by it; for tests). */
copse_drafter *copse__spec_drafter(const copse_spec_engine *e);

#endif /* COPSE_SPEC_ENGINE_H */
