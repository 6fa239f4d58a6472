/*
 * cpu-queue.h — the CPU backend's queue (internal).
 *
 * A CPU queue runs every op synchronously on the calling thread together
 * with a persistent pool of n_threads - 1 worker threads created with the
 * queue. Work is split over rows: matmul over output rows (chunks of 16),
 * attention over (token, head) pairs, kv_commit over pools, every other op
 * over tokens. Results never depend on the split: each output element is
 * computed by one fixed sequence of operations (batch invariance, see
 * DESIGN.md), so a token's output is bit-identical whatever the number of
 * tokens in the call and the number of threads.
 *
 * Activation precision: matmul quantizes the activations per 32-block to
 * int16 (q16, the default: relative error ~1e-5), to int8 (q8: ~1e-2,
 * faster) or keeps them f32 (the ref path), as the queue was created with;
 * copse__cpu_queue_create takes it from the environment variable
 * COPSE_CPU_ACT = q16 | q8 | f32 (read once, at queue creation; unset or
 * unknown: q16). A weight type without a kernel for the chosen precision
 * takes the f32 path. COPSE_CPU_ISA picks the kernel level independently
 * (cpu-kernels.h); level ref has no integer kernels, so it is f32 always.
 *
 * Memory: the queue allocates its threads and a scratch arena at creation
 * (COPSE_CPU_SCRATCH_INITIAL bytes). The arena holds matmul's quantized
 * activations (about 2 k + 12 * k / 32 bytes per token for q16, k + 12 * k
 * / 32 for q8, 64-byte aligned pieces) and, for weight types on the f32
 * path, one dequantized f32 weight row per thread (4 k bytes each). When a call needs more, the arena
 * grows to max(need, 2 * size) — so it is reallocated at most
 * O(log2(largest need / initial size)) times over the queue's life, and
 * never once the largest batch has been seen. Attention, rope and the other
 * ops use only bounded stack space (head_dim <= COPSE_CPU_MAX_HEAD_DIM).
 * A failed growth returns COPSE_ENOMEM from the op and changes nothing.
 *
 * Threading: as backend-impl.h says, one thread at a time uses a queue;
 * synchronize() is trivial because every op has finished when it returns.
 */
#ifndef COPSE_CPU_QUEUE_H
#define COPSE_CPU_QUEUE_H

#include "../backend-impl.h"
#include "cpu-kernels.h"

#define COPSE_CPU_SCRATCH_INITIAL ((size_t)1 << 20)
#define COPSE_CPU_MAX_HEAD_DIM 512
#define COPSE_CPU_MAX_THREADS 512

/* A queue using kernel table `k` (NULL: copse__cpu_kernels_best()) and
 * n_threads threads in all (0: the number of online CPUs; capped at
 * COPSE_CPU_MAX_THREADS). COPSE_ENOMEM if memory or a thread could not be
 * had; *out is NULL on failure. dev->iface.queue_create calls this with
 * k = NULL. */
copse_status copse__cpu_queue_create(copse_backend_dev *dev, int n_threads, const copse_cpu_kernels *k,
                                     copse_backend_queue **out);

/* The same with an explicit activation precision (COPSE_CPU_ACT is not
 * read). */
copse_status copse__cpu_queue_create_act(copse_backend_dev *dev, int n_threads, const copse_cpu_kernels *k,
                                         copse_cpu_act act, copse_backend_queue **out);

/* The activation precision of a CPU queue. */
copse_cpu_act copse__cpu_queue_act(const copse_backend_queue *q);

/* The kernel table and thread count of a CPU queue. */
const copse_cpu_kernels *copse__cpu_queue_kernels(const copse_backend_queue *q);
int copse__cpu_queue_threads(const copse_backend_queue *q);

#endif /* COPSE_CPU_QUEUE_H */
