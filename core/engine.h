/*
 * engine.h — the multi-request engine: admission, continuous batching,
 * chunked prefill and speculative steps over one ragged batch (internal).
 *
 * A request (prompt tokens, sampling, limits, drafters) is submitted, waits
 * in a FIFO queue until a KV sequence and enough KV blocks for its prompt
 * are free, then runs. One engine step is one target forward over every
 * running request at once (no padding):
 *
 *   for every decoding request: its drafters propose trees (batched per
 *       drafter) -> merged under the request's node budget -> flattened
 *       [pending token + nodes]; plain requests contribute 1 row
 *   prefilling requests add prompt chunks with what is left of the step's
 *       token budget (oldest first), so a long prompt never stalls decoding
 *   -> copse__forward_run over all rows
 *   -> per request: verify (greedy at temperature 0, MSS otherwise; keyed by
 *       the request's seed so results do not depend on batch make-up) —
 *       on the device by the backend's verify op for the requests it can
 *       take (greedy or temperature-only sampling, one-hot drafts, no
 *       logprobs: spec/verify.h), so only their accepted paths leave the
 *       device; the others' logits rows are read on the host (no copy on
 *       the CPU backend) and verified there; stop conditions are applied
 *       on the host either way;
 *       commit the accepted path's KV, drop the rest, drafters observe;
 *       a finished prefill samples the first token
 *   -> one event per request that emitted tokens or finished.
 *
 * Output equals plain decoding of the same request alone: bit-identical at
 * temperature 0 (the backend's ops are batch-invariant), and distributed as
 * the target's sampling distribution otherwise (MSS is lossless).
 *
 * When the KV cache runs out during a step the youngest running request is
 * preempted: its KV is freed and it returns to the head of the queue with
 * its committed tokens as its new prompt (its emitted tokens stand; the
 * client sees no difference but latency). A request that cannot run even
 * alone fails with COPSE_FINISH_ERROR.
 *
 * Threading: one thread at a time (submit, cancel, step and the queries are
 * not thread-safe; a server serializes them, e.g. on its engine thread).
 * stop_cb runs inside copse__engine_step on that thread.
 */
#ifndef COPSE_CORE_ENGINE_H
#define COPSE_CORE_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "copse.h"
#include "forward.h"
#include "sampling.h"
#include "spec/verify.h"

#define COPSE_ENGINE_MAX_DRAFTERS 8
#define COPSE_ENGINE_TOP_LOGPROBS 5

typedef struct copse_engine copse_engine;

/* ---------------------------------------------------------------- parameters */

typedef struct copse_engine_params {
    int32_t max_running;  /* requests running at once (<= the forward's max_seqs). Default 8 */
    int32_t max_waiting;  /* queued requests beyond those; more: COPSE_EBUSY. Default 256 */
    int32_t step_tokens;  /* most rows in one forward (trees + prefill chunks); clamped to
                             the forward's max_tokens. Default 512 */
    /* Drafters available to requests, by spec ("ngram", "suffix",
     * "layerskip:N", "model:FILE"); a request picks a subset by bit
     * (bit i = drafters[i]). Created once per engine. */
    const char *const *drafters;
    int32_t n_drafters;   /* 0 .. COPSE_ENGINE_MAX_DRAFTERS */
    const copse_gguf *gguf; /* the target model (required by layerskip:N and model:FILE) */
    int32_t spec_nodes;   /* default node budget per request per step (>= 1). Default 16 */
    int32_t spec_depth;   /* default depth limit (>= 1). Default 8 */
    int32_t max_branch;   /* most children a drafter proposes per node (tree width);
                             0: the drafters' default (8) */
    int n_threads;        /* CPU threads for drafters that run models (0 = all) */
    /* Adaptive node budget (default true): per request, the tree's budget
     * follows its recent accepted length, and speculation pauses (with an
     * occasional small probe) while the expected gain, accepted tokens per
     * step, does not pay for the extra rows' measured cost. false: every
     * step proposes the full budget. */
    bool adaptive;
    /* Tests only: run a deliberately wrong verifier (spec/verify.h). */
    copse_verify_fault verify_fault;
    /* Verify every request on the host (copse__verify_run over downloaded
     * logits), never with the backend's verify op; also forced by the
     * environment variable COPSE_VERIFY_HOST=1 (read at create). For tests
     * that compare the two paths. Default false. */
    bool verify_on_host;
    /* End-of-generation tokens (the tokenizer's EOG set); a request stops
     * after emitting one unless it sets ignore_eos. Copied by create. */
    const copse_token *eos;
    int32_t n_eos;        /* 0 .. 64 */
} copse_engine_params;

copse_engine_params copse__engine_default_params(void);

/* Why a request ended. */
typedef enum copse_finish {
    COPSE_FINISH_NONE = 0,  /* still running */
    COPSE_FINISH_STOP,      /* end-of-generation token or stop_cb */
    COPSE_FINISH_LENGTH,    /* max_tokens reached, or the context is full */
    COPSE_FINISH_CANCELLED, /* copse__engine_cancel */
    COPSE_FINISH_ERROR,     /* see the event's status and error */
} copse_finish;

const char *copse__finish_name(copse_finish f); /* "stop", "length", "cancelled", "error", "none" */

typedef struct copse_request_params {
    const copse_token *prompt; /* [n_prompt], n_prompt >= 1; copied by submit */
    int32_t n_prompt;
    int32_t max_tokens;        /* new tokens, >= 1 */
    copse_sampling_params sampling; /* temperature 0: greedy; seed keys all randomness */
    uint32_t drafters;         /* bit i: use engine drafter i (merged); 0: plain decoding */
    int32_t spec_nodes;        /* node budget per step; 0: engine default */
    int32_t spec_depth;        /* depth limit; 0: engine default */
    int32_t top_logprobs;      /* 0: no logprobs; 1 .. COPSE_ENGINE_TOP_LOGPROBS: the emitted
                                  token's logprob and that many best alternatives */
    bool ignore_eos;           /* do not stop at end-of-generation tokens */
    copse_verify_stop_cb stop_cb; /* may be NULL; e.g. stop strings */
    void *stop_ud;
} copse_request_params;

copse_request_params copse__request_default_params(void);

/* Log-probabilities of one emitted token under the target's distribution
 * (log-softmax of the raw logits, before temperature and truncation). */
typedef struct copse_token_logprob {
    copse_token token;
    float logprob;
    int32_t n_top;
    copse_token top[COPSE_ENGINE_TOP_LOGPROBS];
    float top_logprob[COPSE_ENGINE_TOP_LOGPROBS];
} copse_token_logprob;

/* What happened to one request in one step. Pointers are valid until the
 * next copse__engine_step or copse__engine_destroy. */
typedef struct copse_engine_event {
    uint64_t id;
    void *ud;                    /* as given to submit */
    const copse_token *tokens;   /* emitted this step, in order (may be 0 tokens) */
    int32_t n_tokens;
    const copse_token_logprob *logprobs; /* [n_tokens] when requested, else NULL */
    copse_finish finish;         /* NONE: more will come */
    copse_status status;         /* COPSE_OK unless finish == ERROR */
    const char *error;           /* message when finish == ERROR, else "" */
    int32_t n_prompt;            /* prompt tokens */
    int32_t n_generated;         /* tokens emitted so far, these included */
    uint64_t proposed;           /* draft nodes proposed for this request so far */
    uint64_t accepted;           /* of which accepted */
    uint64_t spec_steps;         /* speculative steps so far */
} copse_engine_event;

/* ---------------------------------------------------------------- lifecycle */

/* An engine over a forward state (borrowed; the engine owns its KV
 * sequences from now on). COPSE_EINVAL (bad params or drafter spec, err
 * names it), COPSE_EUNSUPPORTED, COPSE_ENOMEM. *out NULL on failure. */
copse_status copse__engine_create(copse_forward *f, const copse_engine_params *p, copse_engine **out,
                                  char *err, size_t err_size);
/* Ends every request without events. NULL-safe. */
void copse__engine_destroy(copse_engine *e);

/* Queue a request. COPSE_EINVAL (bad params, err names the field, e.g. a
 * drafter bit with no drafter or a token out of the vocabulary), COPSE_ERANGE
 * (the prompt does not fit the context), COPSE_EBUSY (queue full),
 * COPSE_ENOMEM. *id is unique for the engine's lifetime (never 0). */
copse_status copse__engine_submit(copse_engine *e, const copse_request_params *rp, void *ud, uint64_t *id,
                                  char *err, size_t err_size);

/* End a request now: its KV blocks and drafter state are freed at once and
 * it reports COPSE_FINISH_CANCELLED in the next step's events. Unknown or
 * finished ids are ignored. */
void copse__engine_cancel(copse_engine *e, uint64_t id);

/* Run one step (see the top of this file). *events / *n_events: one event
 * per request that emitted tokens or ended. Returns COPSE_OK with no events
 * when idle. A failure of one request is reported in its event; a status
 * other than COPSE_OK means the engine itself failed (device error): every
 * request was ended with FINISH_ERROR events. */
copse_status copse__engine_step(copse_engine *e, const copse_engine_event **events, int32_t *n_events,
                                char *err, size_t err_size);

/* Nothing running and nothing waiting. */
bool copse__engine_idle(const copse_engine *e);

/* ---------------------------------------------------------------- statistics */

typedef struct copse_engine_stats {
    int32_t running;          /* requests in the batch */
    int32_t waiting;          /* requests queued */
    uint64_t steps;           /* forward steps run */
    uint64_t preempted;       /* preemptions so far */
    uint64_t prompt_tokens;   /* prompt tokens prefilled (re-prefills included) */
    uint64_t generated_tokens;/* tokens emitted */
    double forward_s;         /* time in target forwards */
    double draft_s;           /* time in drafters */
    double verify_s;          /* time verifying and committing */
    copse_kv_stats kv;        /* blocks used / free */
} copse_engine_stats;

typedef struct copse_drafter_stats {
    const char *spec;     /* as given to the engine */
    uint64_t steps;       /* request-steps where it proposed a tree */
    uint64_t proposed;    /* nodes it proposed (before merging) */
    uint64_t accepted;    /* accepted nodes it had proposed */
    uint64_t accepted_steps; /* steps whose accepted path had >= 1 node of it */
    double draft_s;       /* time proposing */
} copse_drafter_stats;

copse_engine_stats copse__engine_stats(const copse_engine *e);
int32_t copse__engine_n_drafters(const copse_engine *e);
copse_drafter_stats copse__engine_drafter_stats(const copse_engine *e, int32_t i);
/* For tests: a running request's KV sequence and its committed tokens
 * (tokens[0 .. *n_committed) are in the KV cache). COPSE_ENOTFOUND when the
 * request is not running. */
copse_status copse__engine_debug_request(const copse_engine *e, uint64_t id, int32_t *seq,
                                         const copse_token **tokens, int32_t *n_committed);

/* The forward it drives (e.g. for copse__forward_hparams). */
copse_forward *copse__engine_forward(copse_engine *e);

#endif /* COPSE_CORE_ENGINE_H */
