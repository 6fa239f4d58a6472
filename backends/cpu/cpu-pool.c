/*
 * cpu-pool.c — the CPU backend's persistent thread pool.
 *
 * Contract: see cpu-pool.h.
 *
 * Protocol: the calling thread publishes a task (function, argument, item
 * count, grain) under the mutex and bumps a generation counter; workers see
 * it, and every thread — the caller included — takes chunks from an atomic
 * counter until none are left. The last worker to finish signals the
 * caller. Waiting is spin-then-block: a worker polls the generation for a
 * short while (the ops of one forward pass follow each other within
 * microseconds) before sleeping on the condition variable, and the caller
 * polls the pending count likewise; the mutex makes the hand-over to a
 * sleeping thread lossless.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

#include "cpu-pool.h"

/* ---------------------------------------------------------------- state */

typedef struct cpu_worker {
    copse_cpu_pool *q;
    int tid;
} cpu_worker;

struct copse_cpu_pool {
    int n_threads;
    pthread_t *threads; /* n_threads - 1 */
    cpu_worker *workers;
    int n_started;
    pthread_mutex_t mu;
    pthread_cond_t wake;
    pthread_cond_t done;
    bool sync_init;
    atomic_ullong gen;  /* bumped per task (under mu) */
    atomic_int pending; /* workers still in the current task */
    atomic_bool stop;
    /* the current task; written by the caller only while no worker is in one */
    copse_cpu_task_fn fn;
    void *arg;
    int64_t n_items, grain;
    atomic_llong next_chunk;
};

/* ---------------------------------------------------------------- running */


static void run_chunks(copse_cpu_pool *q, int tid)
{
    int64_t n_chunks = (q->n_items + q->grain - 1) / q->grain;
    for (;;) {
        int64_t c = atomic_fetch_add(&q->next_chunk, 1);
        if (c >= n_chunks)
            break;
        int64_t b = c * q->grain;
        int64_t e = b + q->grain < q->n_items ? b + q->grain : q->n_items;
        q->fn(q->arg, b, e, tid);
    }
}

#define POOL_SPIN 20000 /* polls before blocking, some tens of microseconds */

static void *worker_main(void *p)
{
    cpu_worker *w = p;
    copse_cpu_pool *q = w->q;
    uint64_t seen = 0;
    for (;;) {
        for (int i = 0; i < POOL_SPIN && atomic_load(&q->gen) == seen && !atomic_load(&q->stop); i++)
            ;
        if (atomic_load(&q->gen) == seen && !atomic_load(&q->stop)) {
            pthread_mutex_lock(&q->mu);
            while (atomic_load(&q->gen) == seen && !atomic_load(&q->stop))
                pthread_cond_wait(&q->wake, &q->mu);
            pthread_mutex_unlock(&q->mu);
        }
        if (atomic_load(&q->stop))
            break;
        seen = atomic_load(&q->gen);
        run_chunks(q, w->tid);
        if (atomic_fetch_sub(&q->pending, 1) == 1) {
            pthread_mutex_lock(&q->mu);
            pthread_cond_signal(&q->done);
            pthread_mutex_unlock(&q->mu);
        }
    }
    return NULL;
}

void copse__cpu_pool_run(copse_cpu_pool *q, copse_cpu_task_fn fn, void *arg, int64_t n_items, int64_t grain)
{
    if (n_items <= 0)
        return;
    if (grain < 1)
        grain = 1;
    if (q->n_threads == 1 || n_items <= grain) {
        for (int64_t b = 0; b < n_items; b += grain)
            fn(arg, b, b + grain < n_items ? b + grain : n_items, 0);
        return;
    }
    /* Every worker has finished the previous task (pending reached 0), so
     * the plain task fields may be rewritten; the generation bump (seq_cst)
     * publishes them. */
    pthread_mutex_lock(&q->mu);
    q->fn = fn;
    q->arg = arg;
    q->n_items = n_items;
    q->grain = grain;
    atomic_store(&q->next_chunk, 0);
    atomic_store(&q->pending, q->n_threads - 1);
    atomic_fetch_add(&q->gen, 1);
    pthread_cond_broadcast(&q->wake);
    pthread_mutex_unlock(&q->mu);

    run_chunks(q, 0);

    for (int i = 0; i < POOL_SPIN && atomic_load(&q->pending) > 0; i++)
        ;
    if (atomic_load(&q->pending) > 0) {
        pthread_mutex_lock(&q->mu);
        while (atomic_load(&q->pending) > 0)
            pthread_cond_wait(&q->done, &q->mu);
        pthread_mutex_unlock(&q->mu);
    }
}

/* ---------------------------------------------------------------- lifecycle */

void copse__cpu_pool_destroy(copse_cpu_pool *q)
{
    if (!q)
        return;
    if (q->sync_init) {
        pthread_mutex_lock(&q->mu);
        atomic_store(&q->stop, true);
        pthread_cond_broadcast(&q->wake);
        pthread_mutex_unlock(&q->mu);
        for (int i = 0; i < q->n_started; i++)
            pthread_join(q->threads[i], NULL);
        pthread_cond_destroy(&q->done);
        pthread_cond_destroy(&q->wake);
        pthread_mutex_destroy(&q->mu);
    }
    free(q->threads);
    free(q->workers);
    free(q);
}

copse_status copse__cpu_pool_create(int n_threads, copse_cpu_pool **out)
{
    *out = NULL;
    if (n_threads < 1)
        n_threads = 1;
    copse_cpu_pool *q = calloc(1, sizeof *q);
    if (!q)
        return COPSE_ENOMEM;
    q->n_threads = n_threads;
    atomic_init(&q->gen, 0);
    atomic_init(&q->pending, 0);
    atomic_init(&q->stop, false);
    atomic_init(&q->next_chunk, 0);
    q->threads = calloc((size_t)n_threads, sizeof *q->threads);
    q->workers = calloc((size_t)n_threads, sizeof *q->workers);
    if (!q->threads || !q->workers)
        goto fail;
    if (pthread_mutex_init(&q->mu, NULL) != 0)
        goto fail;
    if (pthread_cond_init(&q->wake, NULL) != 0) {
        pthread_mutex_destroy(&q->mu);
        goto fail;
    }
    if (pthread_cond_init(&q->done, NULL) != 0) {
        pthread_cond_destroy(&q->wake);
        pthread_mutex_destroy(&q->mu);
        goto fail;
    }
    q->sync_init = true;
    for (int i = 0; i < n_threads - 1; i++) {
        q->workers[i] = (cpu_worker){q, i + 1};
        if (pthread_create(&q->threads[i], NULL, worker_main, &q->workers[i]) != 0)
            goto fail;
        q->n_started++;
    }
    *out = q;
    return COPSE_OK;

fail:
    copse__cpu_pool_destroy(q);
    return COPSE_ENOMEM;
}

int copse__cpu_pool_threads(const copse_cpu_pool *q)
{
    return q->n_threads;
}
