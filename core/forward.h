/*
 * forward.h — the llama-family forward pass over a ragged batch (internal).
 *
 * One call runs the target model over any number of new tokens from any
 * number of sequences: prefill chunks, single decode tokens and speculative
 * trees are the same call. Each sequence's new tokens are stored in the paged
 * KV cache at scratch positions committed + j (j = 0 .. n_new-1), rotated at
 * positions committed + depth[j], and see the committed prefix plus the new
 * tokens their mask allows (causal when no mask). Whether the new entries
 * become committed is the caller's choice afterwards (copse__kvcache_commit
 * for plain decoding, commit_path after verification).
 *
 * Architectures: "llama" (Llama 2/3, SmolLM/SmolLM2, Mistral, TinyLlama):
 * RMSNorm, RoPE (adjacent pairs, theta and linear scaling from metadata),
 * grouped-query attention, SwiGLU, tied or separate output head.
 *
 * Memory: everything (activations for max_tokens tokens, logits for
 * max_tokens rows, KV pools from the budget, KV bookkeeping) is allocated by
 * copse__forward_create; a forward call allocates nothing. Weights are
 * borrowed views into the model's mapping where the device can read host
 * memory, else uploaded once.
 *
 * Threading: a copse_forward is used by one thread at a time.
 */
#ifndef COPSE_CORE_FORWARD_H
#define COPSE_CORE_FORWARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend-impl.h"
#include "copse.h"
#include "gguf.h"
#include "kvcache.h"

/* ---------------------------------------------------------------- hyperparameters */

typedef struct copse_hparams {
    char arch[32];
    uint32_t n_layer;
    uint32_t n_embd;
    uint32_t n_ff;
    uint32_t n_head;
    uint32_t n_head_kv;
    uint32_t head_dim;
    uint32_t n_vocab;
    uint32_t n_ctx_train;
    float rope_theta;
    float rope_freq_scale; /* 1 / linear scaling factor; 1 = none */
    float rms_eps;
    bool tied_output; /* no output.weight: the embedding table is the head */
} copse_hparams;

/* Read and check a llama-family model's hyperparameters from its metadata.
 * COPSE_EUNSUPPORTED for other architectures or rope scaling kinds,
 * COPSE_EFORMAT for missing or inconsistent keys (err names the key). */
copse_status copse__hparams_load(const copse_gguf *g, copse_hparams *hp, char *err, size_t err_size);

/* ---------------------------------------------------------------- forward */

typedef struct copse_forward copse_forward;

typedef struct copse_forward_params {
    int n_threads;         /* CPU threads (0 = all cores) */
    uint32_t max_tokens;   /* most new tokens in one call */
    uint32_t max_seqs;     /* most live sequences in the KV cache */
    uint32_t max_ctx;      /* longest sequence, scratch included (0 = training context) */
    uint64_t kv_mem;       /* KV pool budget in bytes (0 = enough for max_seqs * max_ctx) */
    uint32_t block_size;   /* KV block size in tokens */
    uint32_t kv_type;      /* copse_qtype of the pools: COPSE_Q_F32 (default) or COPSE_Q_F16 */
} copse_forward_params;

copse_forward_params copse__forward_default_params(void);

/* Build the forward state of a loaded model on a device of a backend. */
copse_status copse__forward_create(const copse_gguf *g, copse_backend_dev *dev,
                                   const copse_forward_params *p, copse_forward **out, char *err,
                                   size_t err_size);
void copse__forward_destroy(copse_forward *f);

const copse_hparams *copse__forward_hparams(const copse_forward *f);
/* The KV bookkeeping: add and free sequences, commit, roll back through it. */
copse_kvcache *copse__forward_kv(copse_forward *f);

/* A ragged batch. Sequence s (a live KV sequence id seq[s]) owns batch tokens
 * [first[s], first[s] + n_new[s]), in order, with no gaps between sequences. */
typedef struct copse_fwd_batch {
    int32_t n_tokens;
    const copse_token *tokens; /* [n_tokens] */
    const int32_t *depth;      /* [n_tokens] position offset from committed; NULL: j (a chain) */
    int32_t n_seqs;
    const int32_t *seq;        /* [n_seqs] KV sequence ids */
    const int32_t *first;      /* [n_seqs] */
    const int32_t *n_new;      /* [n_seqs] */
    const uint64_t *const *mask; /* [n_seqs] ancestor masks (see copse_attn_batch) or NULL: all causal */
    int32_t n_logits;
    const int32_t *logit_rows; /* [n_logits] batch token indices whose logits are wanted */

    /* Drafting (all optional; zero/NULL gives the behaviour above exactly).
     *
     * scratch_base[s]: sequence s already holds that many scratch entries
     * (positions committed + k, k < base, written by earlier calls since the
     * last commit/truncate); its new tokens are stored at committed + base +
     * j, rotated at committed + depth[j] with depth[j] in [0, base + j], and
     * its mask (if any) has n_new rows of copse__tree_mask_words(base +
     * n_new) words over all base + n_new scratch entries: bit k of row j set
     * iff new token j sees scratch entry k (its own entry is k = base + j).
     * NULL mask: entry k visible iff k <= base + j. Needs a backend whose
     * attention appends to scratch (COPSE_EUNSUPPORTED otherwise).
     *
     * n_layers: run only the first n_layers blocks, then the final norm and
     * the head (a layer-skip draft); 0 = all. The skipped layers' KV entries
     * of the new tokens are not written.
     *
     * head: a reduced output head of this forward (copse__forward_head_create);
     * logits rows then have head->n entries (entry i = token ids[i]). */
    const int32_t *scratch_base; /* [n_seqs] or NULL */
    uint32_t n_layers;
    const struct copse_fwd_head *head;
} copse_fwd_batch;

/* Run the model over the batch and write logits[n_logits][n_vocab] (host;
 * [n_logits][head->n] with a reduced head). logits NULL leaves them on the
 * device only (copse__forward_logits and the functions below read them).
 * Reserves KV scratch for each sequence's new tokens first; COPSE_ENOSPACE
 * (nothing run, nothing reserved beyond what already was) when the cache is
 * full, COPSE_ERANGE when a sequence would exceed max_ctx, COPSE_EINVAL for a
 * malformed batch (err says what). */
copse_status copse__forward_run(copse_forward *f, const copse_fwd_batch *b, float *logits, char *err,
                                size_t err_size);

/* ---------------------------------------------------------------- logits on the device
 *
 * The last run's n_logits rows stay in the forward's device logits tensor
 * until the next run. The engine downloads only the rows the host needs,
 * or runs the backend's verify op on them so that only accepted paths
 * leave the device. On a host-visible device (CPU) nothing is copied. */

/* The view of the last run's logits rows: F32 [n_logits, n_vocab] (head->n
 * wide with a reduced head; 0 rows before a run or after one without). */
copse_tensor copse__forward_logits(const copse_forward *f);
/* Copy rows [row0, row0 + n) of the last run's logits to host (n rows of
 * the row width); synchronous. */
copse_status copse__forward_download_logits(copse_forward *f, int32_t row0, int32_t n, float *host);
/* Rows [row0, row0 + n) in host memory: a pointer into the device buffer
 * when it is host-visible (no copy), else downloaded into scratch (room for
 * n rows) and scratch returned; NULL with *st set on a device error. Valid
 * until the next run. */
const float *copse__forward_logits_rows(copse_forward *f, int32_t row0, int32_t n, float *scratch,
                                        copse_status *st);
/* Whether the device's queue has the verify op (backend-impl.h). */
bool copse__forward_has_verify(const copse_forward *f);
/* The verify op over the last run's logits (full vocabulary rows): out[s]
 * for b->seqs[s]. COPSE_EUNSUPPORTED without the op, else a device error. */
copse_status copse__forward_verify(copse_forward *f, const copse_verify_batch *b, copse_verify_path *out);

/* Apply KV entry moves (from copse__kvcache_commit_path) to every layer's K
 * and V pools, in list order (the backend's kv_commit op), and wait for them.
 * n == 0 does nothing. */
copse_status copse__forward_kv_moves(copse_forward *f, const copse_kv_move *moves, int32_t n);

/* ---------------------------------------------------------------- drafting helpers */

/* A reduced output head: the rows ids[0 .. n) of the model's output matrix
 * (the embedding table when tied), copied to a buffer of f's device. g must
 * be the model f was created from (its output tensor is checked against the
 * hyperparameters). ids distinct, in [0, n_vocab), 1 <= n <= n_vocab
 * (COPSE_EINVAL otherwise). Destroy before f. */
typedef struct copse_fwd_head {
    int32_t n;                /* rows */
    const int32_t *ids;       /* [n] the token id of each row (owned) */
    const copse_forward *f;   /* the forward it belongs to */
    copse_tensor w;           /* [n_embd, n] quantized rows */
    copse_backend_buffer *buf;
} copse_fwd_head;

copse_status copse__forward_head_create(copse_forward *f, const copse_gguf *g, const int32_t *ids, int32_t n,
                                        copse_fwd_head **out, char *err, size_t err_size);
void copse__forward_head_destroy(copse_fwd_head *h); /* NULL-safe */

/* The device and the (defaulted) parameters f was created with. */
copse_backend_dev *copse__forward_dev(const copse_forward *f);
const copse_forward_params *copse__forward_params(const copse_forward *f);

/* Read KV entry `slot` of layer `layer` (K and V rows of n_head_kv *
 * head_dim elements each, converted to F32) into k and v. For tests and
 * debugging; synchronous. */
copse_status copse__forward_kv_read(copse_forward *f, uint32_t layer, int32_t slot, float *k, float *v);

#endif /* COPSE_CORE_FORWARD_H */
