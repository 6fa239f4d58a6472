/*
 * cpu-pool.h — the CPU backend's persistent thread pool (internal).
 *
 * A pool of n_threads - 1 worker threads plus the calling thread. run()
 * splits items [0, n_items) into chunks of `grain` items; every thread, the
 * caller included, takes chunks from an atomic counter until none are left,
 * and run() returns when all chunks are done. Which thread runs which chunk
 * is unspecified, so a task must write disjoint outputs per chunk and must
 * not let a result depend on the split (the ops' batch invariance).
 *
 * Threading: one thread at a time calls run() (the queue's owner); the
 * workers exist from create() to destroy(). Nothing is allocated after
 * create().
 */
#ifndef COPSE_CPU_POOL_H
#define COPSE_CPU_POOL_H

#include <stdint.h>

#include "copse.h"

/* One chunk [begin, end) of a task; tid in [0, n_threads), 0 = the caller. */
typedef void (*copse_cpu_task_fn)(void *arg, int64_t begin, int64_t end, int tid);

typedef struct copse_cpu_pool copse_cpu_pool;

/* n_threads >= 1 threads in all. COPSE_ENOMEM if memory or a thread could
 * not be had; *out is NULL then. */
copse_status copse__cpu_pool_create(int n_threads, copse_cpu_pool **out);
/* Joins the workers. Accepts NULL. */
void copse__cpu_pool_destroy(copse_cpu_pool *p);
/* Runs fn over all chunks and returns when they are done. Tasks of at most
 * one chunk, and all tasks of a one-thread pool, run on the caller alone. */
void copse__cpu_pool_run(copse_cpu_pool *p, copse_cpu_task_fn fn, void *arg, int64_t n_items, int64_t grain);
int copse__cpu_pool_threads(const copse_cpu_pool *p);

#endif /* COPSE_CPU_POOL_H */
