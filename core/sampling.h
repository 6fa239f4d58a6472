/*
 * sampling.h — token sampling: logit processing, the
 * processed distribution p, and logprobs (internal).
 *
 * Contract
 *   - Randomness is a pure function of a key (seed, sequence, step, node,
 *     draw): copse__rng_uniform() keeps no state, so a token's draw does not
 *     depend on batch make-up, thread or scheduling order (DESIGN.md,
 *     "Verification").
 *   - A copse_sampler is a workspace sized for one vocabulary. It is created
 *     once (the only allocation) and reused for every token; nothing in the
 *     per-token path allocates. A sampler is not thread-safe: use one per
 *     thread. Functions that take no sampler are pure and thread-safe.
 *   - Logits are natural-log unnormalized scores, one float per token id,
 *     row length n_vocab. -inf means "impossible" and is allowed; NaN and
 *     +inf are rejected (COPSE_EINVAL); a row with no finite logit left has
 *     no distribution (COPSE_ERANGE).
 *   - Processing order, fixed and the same everywhere (plain decoding and
 *     speculative verification alike):
 *         penalties -> temperature -> top-k -> top-p -> min-p -> normalize
 *     top-p and min-p act on the distribution renormalized after the previous
 *     stage. Whenever tokens compare equal, the lower token id ranks first,
 *     so every cut is deterministic.
 *   - A processed distribution (copse_sampling_dist) lists the tokens with
 *     p > 0 in ascending id order; sampling walks it in that order (inverse
 *     CDF), so the sparse and dense forms of one distribution give the same
 *     token for the same uniform.
 */
#ifndef COPSE_CORE_SAMPLING_H
#define COPSE_CORE_SAMPLING_H

#include <stddef.h>
#include <stdint.h>

#include "copse.h"
#include "rng.h"

/* ---------------------------------------------------------------- parameters */

typedef struct copse_sampling_params {
    float temperature;        /* > 0 scales logits; 0 = greedy (argmax). Default 1 */
    int32_t top_k;            /* keep exactly the k best-ranked (ties: lower id);
                                 0 = off. Default 0 */
    float top_p;              /* keep the smallest prefix with mass >= top_p, in (0,1]; 1 = off */
    float min_p;              /* keep tokens with p >= min_p * p_max, in [0,1]; 0 = off */
    float repetition_penalty; /* > 0; divide positive / multiply negative logits of seen
                                 tokens (llama.cpp / CTRL style); 1 = off */
    float frequency_penalty;  /* logit -= frequency_penalty * count   (OpenAI style); 0 = off */
    float presence_penalty;   /* logit -= presence_penalty * (count > 0)            ; 0 = off */
    int32_t penalty_last_n;   /* penalties look at the last N history tokens; 0 = none,
                                 -1 = the whole history. Default 64 */
    uint64_t seed;            /* first part of the randomness key. Default 0: callers that
                                 want fresh randomness per request set it */
} copse_sampling_params;

/* Defaults as code: every processing stage off, temperature 1. */
copse_sampling_params copse__sampling_default_params(void);

/* COPSE_OK, or COPSE_EINVAL with a message naming the offending field. */
copse_status copse__sampling_validate(const copse_sampling_params *params, char *err,
                                      size_t err_size);

/* ---------------------------------------------------------------- sampler workspace */

typedef struct copse_sampler copse_sampler;

/* A workspace for rows of n_vocab logits (1 <= n_vocab <= INT32_MAX / 2).
 * Allocates 24 bytes per vocabulary entry plus 32 KiB (about 6 MiB for
 * 262144). */
copse_status copse__sampler_create(int32_t n_vocab, copse_sampler **out, char *err,
                                   size_t err_size);
void copse__sampler_destroy(copse_sampler *s);

int32_t copse__sampler_n_vocab(const copse_sampler *s);

/* The message of the last failed call on s ("" if none failed yet). */
const char *copse__sampler_error(const copse_sampler *s);

/* ---------------------------------------------------------------- processing */

/*
 * Apply repetition, frequency and presence penalties to logits[0..n_vocab)
 * in place, counting each token in the last params->penalty_last_n entries
 * of history[0..n_history). Each distinct token t seen c > 0 times in the
 * window is penalized once:
 *     x = logits[t];  x = x > 0 ? x / repetition : x * repetition;
 *     logits[t] = x - (c * frequency + presence);
 * in float arithmetic. -inf logits stay -inf. History ids outside
 * [0, n_vocab) give COPSE_EINVAL and leave logits untouched. O(window).
 */
copse_status copse__sampling_apply_penalties(copse_sampler *s, const copse_sampling_params *params,
                                             float *logits, const copse_token *history,
                                             size_t n_history);

/* A processed distribution: n tokens with p > 0, ids ascending, p summing to
 * 1 (within float rounding). A token whose probability is below float range
 * (underflow) counts as p = 0 and is not listed, so top-k can list fewer than
 * k. The arrays live in the sampler and stay valid until the next
 * processing call on it. */
typedef struct copse_sampling_dist {
    int32_t n;
    const copse_token *ids;
    const float *p;
} copse_sampling_dist;

/*
 * The processed distribution of one logits row (not modified): penalties
 * from history (may be NULL when n_history is 0), then temperature, top-k,
 * top-p, min-p. temperature 0 gives the one-hot distribution at the argmax
 * of the penalized logits (lowest id on ties). Invalid params give
 * COPSE_EINVAL (the check is a few comparisons); the message of any failure
 * is in copse__sampler_error(s).
 *
 * Cost: a few sequential passes over the row, plus O(m log m) to put the m
 * kept tokens in id order after a cut; exp runs only on tokens that survive
 * top-k. No full sort of the vocabulary anywhere:
 *   top-k <= 1024: one pass with a k-entry heap; larger k: quickselect
 *     (expected O(n), heapsort fallback bounds the worst case);
 *   top-p: nth_element-style partition on probability mass; over more than
 *     4096 candidates a histogram of the weights first narrows the boundary
 *     to one bucket (1/32 of an octave) and only that bucket is partitioned.
 */
copse_status copse__sampling_probs(copse_sampler *s, const copse_sampling_params *params,
                                   const float *logits, const copse_token *history,
                                   size_t n_history, copse_sampling_dist *out);

/* Scatter a distribution into dense[0..n_vocab) (zeros elsewhere). */
void copse__sampling_dist_to_dense(const copse_sampling_dist *dist, float *dense,
                                   int32_t n_vocab);

/* ---------------------------------------------------------------- drawing */

/*
 * Draw a token by inverse CDF with uniform u in [0, 1): the first entry, in
 * the given order, whose cumulative weight exceeds u * total. p need not be
 * normalized (an MSS residual max(0, p - q) can be passed as is).
 * ids maps entry j to its token; NULL means entry j is token j (dense row).
 * Entries with p == 0 are never chosen. COPSE_EINVAL for u outside [0,1) or
 * a negative / non-finite weight; COPSE_ERANGE when the total is 0.
 */
copse_status copse__sampling_sample(const float *p, const copse_token *ids, int32_t n, double u,
                                    copse_token *out);

/* Argmax of logits[0..n); the lowest id wins ties. COPSE_EINVAL on NaN,
 * COPSE_ERANGE when every logit is -inf. */
copse_status copse__sampling_argmax(const float *logits, int32_t n, copse_token *out);

/*
 * Plain decoding in one call: process the row, then draw with the uniform
 * keyed by (params->seed, sequence, step, node 0, draw 0). Greedy
 * (temperature 0) uses no randomness.
 */
copse_status copse__sampling_sample_token(copse_sampler *s, const copse_sampling_params *params,
                                          const float *logits, const copse_token *history,
                                          size_t n_history, uint32_t sequence, uint32_t step,
                                          copse_token *out);

/* ---------------------------------------------------------------- logprobs */

#define COPSE_SAMPLING_MAX_TOP_LOGPROBS 20

/* log(sum(exp(logits))) computed stably (max subtracted, double
 * accumulation). COPSE_EINVAL on NaN or +inf, COPSE_ERANGE if all -inf. */
copse_status copse__sampling_logsumexp(const float *logits, int32_t n, double *out);

/* out[i] = logits[i] - logsumexp(logits): natural-log probabilities, -inf
 * stays -inf. out may equal logits. */
copse_status copse__sampling_log_softmax(const float *logits, int32_t n, float *out);

/* The top_n (1..20) most probable tokens by logit, descending, ties by lower
 * id, with their log-probabilities. Fewer than top_n come back when fewer
 * tokens are finite; *n_out says how many. */
copse_status copse__sampling_top_logprobs(const float *logits, int32_t n, int32_t top_n,
                                          copse_token *ids, float *logprobs, int32_t *n_out);

#endif /* COPSE_CORE_SAMPLING_H */
