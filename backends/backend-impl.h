/*
 * backend-impl.h — the interface every backend implements (internal).
 *
 * Three levels: registration -> device -> queue, plus buffers. Every object is
 * { interface by value, owner, void *ctx }. Entries marked (optional) may be
 * NULL; the core then supplies a fallback or reports COPSE_EUNSUPPORTED.
 *
 * Compute ops run on a queue, in submission order, on tensors that are views
 * into buffers of the queue's device (copse_tensor). Small per-call metadata
 * (token ids, positions, block tables, masks) is passed as host arrays; a
 * device backend uploads what it needs. The core never touches device memory
 * directly. Every op has a scalar reference in the CPU backend, the oracle of
 * the conformance tests.
 *
 * Threading: registration and device queries are thread-safe. A queue is used
 * by one thread at a time; work on one queue runs in submission order.
 */
#ifndef COPSE_BACKEND_IMPL_H
#define COPSE_BACKEND_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "copse.h"

#define COPSE_BACKEND_API_VERSION 1

typedef struct copse_backend_reg copse_backend_reg;
typedef struct copse_backend_dev copse_backend_dev;
typedef struct copse_backend_buffer copse_backend_buffer;

/* ---------------------------------------------------------------- device */

typedef enum copse_dev_kind {
    COPSE_DEV_CPU,
    COPSE_DEV_GPU,
    COPSE_DEV_ACCEL,
} copse_dev_kind;

typedef struct copse_dev_props {
    char name[128];        /* "cpu: Intel(R) Xeon(R) ...", "cuda:0 NVIDIA H100" */
    char features[256];    /* space-separated, e.g. "avx2 avx512f avx512vnni" */
    copse_dev_kind kind;
    uint64_t memory_total; /* bytes; 0 if unknown */
    uint64_t memory_free;  /* bytes; 0 if unknown */
    int compute_units;     /* cores / SMs / CUs */
} copse_dev_props;

typedef struct copse_backend_buffer_i {
    void (*free)(copse_backend_buffer *buf);
    /* Host pointer if the memory is host-visible, else NULL. (optional) */
    void *(*host_ptr)(copse_backend_buffer *buf);
    copse_status (*upload)(copse_backend_buffer *buf, size_t offset, const void *src, size_t n);
    copse_status (*download)(copse_backend_buffer *buf, size_t offset, void *dst, size_t n);
} copse_backend_buffer_i;

struct copse_backend_buffer {
    copse_backend_buffer_i iface;
    copse_backend_dev *dev; /* owner */
    size_t size;
    void *ctx;
};

/* ---------------------------------------------------------------- tensors and ops */

/* A 2-D view into a buffer: ne[1] rows of ne[0] elements of `type` (a
 * copse_qtype; ne[0] a multiple of its block size), row r starting at byte
 * offset + r * row_stride. Activations are F32 rows, one per token. */
typedef struct copse_tensor {
    copse_backend_buffer *buf;
    size_t offset;
    uint32_t type;
    int64_t ne[2];
    size_t row_stride;
} copse_tensor;

/* Rotary embedding. NORM rotates adjacent pairs (x[2i], x[2i+1]) (llama);
 * NEOX rotates (x[i], x[i + head_dim/2]). Angle for pair i at position p:
 * p * freq_scale * theta_base^(-2i/head_dim). */
typedef enum copse_rope_mode { COPSE_ROPE_NORM = 0, COPSE_ROPE_NEOX = 2 } copse_rope_mode;

typedef struct copse_rope_params {
    copse_rope_mode mode;
    int32_t n_heads;
    int32_t head_dim;
    float theta_base;
    float freq_scale; /* 1 / linear scaling factor */
} copse_rope_params;

/* Paged attention over a ragged batch (host arrays, valid for the call).
 *
 * The n_tokens new tokens are grouped by sequence: sequence s owns batch
 * tokens [first[s], first[s] + n_new[s]). Their K/V entries were stored (by
 * kv_store) at positions committed[s] + j, j = 0 .. n_new[s]-1 (tree node j
 * of a speculative tree, or the j-th token of a prefill chunk). Token j of
 * sequence s sees key positions [0, committed[s]) — the committed prefix —
 * and the new entries k with mask bit (j, k) set. mask[s] == NULL means causal
 * (k <= j: prefill, decode, chains); otherwise mask[s] holds n_new[s] rows of
 * ceil(n_new[s] / 64) words, bit k of row j set iff node k is an ancestor of
 * node j or j itself. Positions map to cache slots through the sequence's
 * block table: slot = table[pos / block_size] * block_size + pos % block_size.
 *
 * Appending to scratch (drafting a tree level by level): when base is not
 * NULL, sequence s already has base[s] scratch entries at positions
 * committed[s] + k, k < base[s], written by earlier calls, and its new
 * tokens' entries are at committed[s] + base[s] + j. Scratch entry k is then
 * "new entry" k for visibility: token j of sequence s sees the committed
 * prefix and the entries k < base[s] + n_new[s] with mask bit (j, k) set;
 * mask rows have ceil((base[s] + n_new[s]) / 64) words; NULL mask means k <=
 * base[s] + j. base == NULL (all zero) is exactly the behaviour above. Only
 * queues whose interface sets attention_scratch_base accept a non-NULL base;
 * the core does not pass one to others. */
typedef struct copse_attn_batch {
    int32_t n_seqs;
    int32_t n_tokens;
    int32_t block_size;
    const int32_t *first;          /* [n_seqs] */
    const int32_t *n_new;          /* [n_seqs] */
    const int32_t *committed;      /* [n_seqs] */
    const int32_t *const *tables;  /* [n_seqs] block tables */
    const uint64_t *const *mask;   /* [n_seqs], entries may be NULL (causal) */
    const int32_t *base;           /* [n_seqs] scratch entries before the new ones, or NULL (all 0) */
    int32_t n_heads;
    int32_t n_kv_heads;            /* n_heads % n_kv_heads == 0 (grouped-query) */
    int32_t head_dim;
    float scale;                   /* usually 1/sqrt(head_dim) */
} copse_attn_batch;

/* One KV entry move (slots), see core/kvcache.h for the ordering contract:
 * moves run in list order. */
typedef struct copse_slot_move {
    int32_t src;
    int32_t dst;
} copse_slot_move;

/* Tree verification on the device (the `verify` op; the rules are
 * core/spec/verify.h's, which is the host reference). A batch holds n_seqs
 * trees over the rows of one logits tensor [n_rows, n_vocab]: tree s owns
 * rows [row0, row0 + n_rows) — row row0 is its pending root, row row0 + 1 + i
 * its node i. parent[] and token[] are indexed by logits row: parent[r] is
 * the row of r's parent relative to its tree's row0 (0 for children of the
 * root, -1 for the root row itself), token[r] the node's proposed token
 * (the root row's entry is unused). Nodes come parents before children
 * (parent row < row), and the children of a node are taken in row order.
 *
 * Only what needs no host-side sampling state is verified here: greedy
 * (temperature 0: argmax, lowest id on ties), or MSS with temperature only
 * (no top-k/top-p/min-p, no penalties) and every proposal one-hot
 * (deterministic drafters), with the uniforms keyed exactly as verify.h
 * says. Stop conditions (eos, stop strings, max_tokens) are not applied:
 * the host cuts the returned path afterwards, which verify.h shows is
 * equivalent. */
#define COPSE_VERIFY_MAX_PATH 64 /* = COPSE_TREE_MAX_DEPTH (core/spec/tree.h) */

typedef struct copse_verify_seq {
    int32_t row0;      /* the root's logits row */
    int32_t n_rows;    /* 1 + tree nodes, >= 1 (1: an empty tree, plain sampling) */
    float temperature; /* 0: greedy; > 0: MSS at this temperature */
    uint64_t seed;     /* RNG key (core/rng.h): the request's seed, */
    uint32_t sequence; /* its sequence id, */
    uint32_t step;     /* the position of the token drawn at the root */
} copse_verify_seq;

typedef struct copse_verify_batch {
    int32_t n_seqs;
    const copse_verify_seq *seqs; /* [n_seqs], rows of different trees disjoint */
    const int32_t *parent;        /* [logits rows] see above */
    const copse_token *token;     /* [logits rows] */
} copse_verify_batch;

/* One tree's outcome. status COPSE_OK, or the status copse__verify_run
 * would return for a row on the walked path: COPSE_EINVAL (a NaN or +inf
 * logit), COPSE_ERANGE (every logit -inf); then bad_row is the row
 * (relative to row0) and the rest is undefined. */
typedef struct copse_verify_path {
    int32_t status;
    int32_t bad_row;
    int32_t n_accepted;                      /* accepted nodes */
    int32_t accepted[COPSE_VERIFY_MAX_PATH]; /* node indices (row - row0 - 1), root child first */
    copse_token next;                        /* the correction or bonus token */
    int32_t n_tries;                         /* acceptance tests run (MSS), stats */
} copse_verify_path;

typedef struct copse_backend_queue copse_backend_queue;

/* Ops. All return COPSE_OK or a status for a failure the device reported
 * (out of memory, failed launch); shape mismatches are programming errors
 * (assert). Outputs never alias inputs unless stated. Units: tokens are
 * rows; d = model width. */
typedef struct copse_backend_queue_i {
    void (*destroy)(copse_backend_queue *q);
    /* Wait until every submitted op has finished. */
    copse_status (*synchronize)(copse_backend_queue *q);

    /* out[t] = dequant(table row ids[t]); out F32 [n, d]. */
    copse_status (*embed)(copse_backend_queue *q, const copse_tensor *table, const int32_t *ids,
                          int32_t n, const copse_tensor *out);
    /* out[t] = x[t] / sqrt(mean(x[t]^2) + eps) * w; w F32 [d]. out may alias x. */
    copse_status (*rms_norm)(copse_backend_queue *q, const copse_tensor *x, const copse_tensor *w,
                             float eps, const copse_tensor *out);
    /* In place on x [n, n_heads * head_dim], token t at position pos[t]. */
    copse_status (*rope)(copse_backend_queue *q, const copse_tensor *x, const int32_t *pos,
                         const copse_rope_params *p);
    /* out = a + b (same shapes). out may alias a or b. */
    copse_status (*add)(copse_backend_queue *q, const copse_tensor *a, const copse_tensor *b,
                        const copse_tensor *out);
    /* out = silu(gate) * up. out may alias gate or up. */
    copse_status (*swiglu)(copse_backend_queue *q, const copse_tensor *gate, const copse_tensor *up,
                           const copse_tensor *out);
    /* out[t][r] = dot(w row r, x[t]); w quantized [n_out rows, k], x F32 [n, k],
     * out F32 [n, n_out]. A token's result must not depend on n (batch invariance). */
    copse_status (*matmul)(copse_backend_queue *q, const copse_tensor *w, const copse_tensor *x,
                           const copse_tensor *out);
    /* Store k[t], v[t] (F32 [n, kv_dim]) into the layer's pools at slots[t]
     * (pools [n_slots, kv_dim], of the pool type, e.g. F16 or F32). */
    copse_status (*kv_store)(copse_backend_queue *q, const copse_tensor *k, const copse_tensor *v,
                             const int32_t *slots, int32_t n, const copse_tensor *k_pool,
                             const copse_tensor *v_pool);
    /* out [n_tokens, n_heads * head_dim] = softmax(q k^T * scale) v over the
     * visible keys of each token (see copse_attn_batch). */
    copse_status (*attention)(copse_backend_queue *q, const copse_tensor *qry, const copse_tensor *k_pool,
                              const copse_tensor *v_pool, const copse_attn_batch *b,
                              const copse_tensor *out);
    /* Move pool entries (all listed layers' pools, K and V), in list order. */
    copse_status (*kv_commit)(copse_backend_queue *q, const copse_tensor *const *pools, int32_t n_pools,
                              const copse_slot_move *moves, int32_t n_moves);
    /* Verification, greedy: argmax[t] = index of the largest logit of row t
     * (lowest index on ties), logits F32 [n, n_vocab]; only ids leave the
     * device, the host walks the tree (spec/verify.h). */
    copse_status (*argmax)(copse_backend_queue *q, const copse_tensor *logits, int32_t *argmax);
    /* Verification, stochastic (MSS): the target's probabilities,
     * out[t][i] = exp(l[t][i] * inv_temp - m) / sum_j exp(l[t][j] * inv_temp - m)
     * with m the row maximum of l * inv_temp (F32 [n, n_vocab]); the host
     * applies top-k/top-p/min-p to the rows it reads. out may alias logits.
     * (optional: NULL means the core computes it on the host) */
    copse_status (*softmax)(copse_backend_queue *q, const copse_tensor *logits, float inv_temp,
                            const copse_tensor *out);
    /* Verification of whole trees (see copse_verify_batch): out[s] gets tree
     * s's accepted path and next token; only these leave the device. The
     * result is in host memory when the call returns (it waits for the
     * queue). logits F32 [n_rows, n_vocab]. Returns a device failure only;
     * per-tree errors are in out[s].status. (optional: NULL means the core
     * downloads the rows and verifies on the host) */
    copse_status (*verify)(copse_backend_queue *q, const copse_tensor *logits, const copse_verify_batch *b,
                           copse_verify_path *out);

    /* A forward step of n_tokens tokens: the ops the core submits between
     * step_begin and step_end form one step, which a device backend may
     * record and replay as a whole (CUDA graphs). step_end comes before the
     * core waits for or reads any result of the step; ok = false after a
     * failed op (the backend drops what it recorded). Ops keep their
     * contract inside a step. (optional: both or neither) */
    copse_status (*step_begin)(copse_backend_queue *q, int32_t n_tokens);
    copse_status (*step_end)(copse_backend_queue *q, bool ok);

    /* Capabilities (optional: false when left out of the initializer). */
    bool attention_scratch_base; /* attention honors copse_attn_batch.base */
} copse_backend_queue_i;

struct copse_backend_queue {
    copse_backend_queue_i iface;
    copse_backend_dev *dev; /* owner */
    void *ctx;
};

typedef struct copse_backend_dev_i {
    void (*get_props)(const copse_backend_dev *dev, copse_dev_props *out);
    copse_status (*buffer_alloc)(copse_backend_dev *dev, size_t size, copse_backend_buffer **out);
    /* A buffer that borrows host memory (e.g. weights in the mapped model
     * file) without copying, where the device can read host memory. (optional) */
    copse_status (*buffer_from_host)(copse_backend_dev *dev, void *ptr, size_t size,
                                     copse_backend_buffer **out);
    /* A new queue; n_threads applies to CPU-like devices (0 = all cores). */
    copse_status (*queue_create)(copse_backend_dev *dev, int n_threads, copse_backend_queue **out);
} copse_backend_dev_i;

struct copse_backend_dev {
    copse_backend_dev_i iface;
    copse_backend_reg *reg; /* owner */
    void *ctx;
};

/* ---------------------------------------------------------------- registration */

typedef struct copse_backend_reg_i {
    size_t (*dev_count)(copse_backend_reg *reg);
    copse_backend_dev *(*dev_get)(copse_backend_reg *reg, size_t i);
    /* Backend-specific knobs by name (e.g. "cpu.n_threads"), instead of new
     * vtable slots. (optional) */
    void *(*get_proc)(copse_backend_reg *reg, const char *name);
} copse_backend_reg_i;

struct copse_backend_reg {
    int api_version; /* COPSE_BACKEND_API_VERSION */
    const char *name; /* "cpu", "cuda", "hip", "opencl" */
    copse_backend_reg_i iface;
    void *ctx;
};

/* Each backend folder exports exactly one of these. */
copse_backend_reg *copse_backend_cpu_reg(void);
copse_backend_reg *copse_backend_opencl_reg(void);

/* get_proc names any backend may answer (NULL where it has nothing to say):
 *   "status_text"     const char *(*)(copse_backend_reg *): why the backend
 *                     has no device (e.g. no OpenCL platform), else "";
 *   "dev_last_error"  const char *(*)(copse_backend_dev *): the message of
 *                     the device's last failure (kernel build log, failed
 *                     allocation), else "";
 *   "copy_bandwidth"  double (*)(copse_backend_dev *): the device memory's
 *                     measured copy bandwidth in bytes/s (read + written
 *                     bytes per second), 0 if unmeasured; the decode floor
 *                     of `copse bench decode` on a device backend. */
typedef const char *(*copse_backend_status_text_fn)(copse_backend_reg *reg);
typedef const char *(*copse_backend_dev_last_error_fn)(copse_backend_dev *dev);
typedef double (*copse_backend_copy_bandwidth_fn)(copse_backend_dev *dev);
copse_backend_reg *copse_backend_cuda_reg(void); /* backends/cuda (COPSE_HAVE_CUDA) */
copse_backend_reg *copse_backend_hip_reg(void);  /* the same sources through hipcc (COPSE_HAVE_HIP) */
copse_backend_reg *copse_backend_gpusim_reg(void); /* the same sources on a CPU simulator (COPSE_HAVE_GPUSIM) */

/* ---------------------------------------------------------------- core registry */

/* Registered backends, CPU last (the fallback). */
size_t copse__backend_count(void);
copse_backend_reg *copse__backend_get(size_t i);
/* By name ("cpu"); NULL if not built in. */
copse_backend_reg *copse__backend_find(const char *name);

#endif /* COPSE_BACKEND_IMPL_H */
