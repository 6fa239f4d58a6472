/*
 * metrics.h — the server's counters and histograms, rendered in the
 * Prometheus text exposition format (internal).
 *
 * Threading: a copse_metrics is updated and rendered on the loop thread
 * only; engine figures come in as a snapshot (copse_metrics_engine) that
 * the engine thread publishes.
 */
#ifndef COPSE_SERVER_METRICS_H
#define COPSE_SERVER_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "api.h"

#define COPSE_METRICS_MAX_BUCKETS 16
#define COPSE_METRICS_MAX_DRAFTERS 8

typedef struct copse_histogram {
    int n_bounds;
    double bounds[COPSE_METRICS_MAX_BUCKETS]; /* ascending upper bounds; +Inf is implied */
    uint64_t counts[COPSE_METRICS_MAX_BUCKETS + 1]; /* per bucket, not cumulative */
    uint64_t count;
    double sum;
} copse_histogram;

/* Add n observations of value v. */
void copse__histogram_observe(copse_histogram *h, double v, uint64_t n);

typedef struct copse_metrics {
    struct {
        copse_api_route route;
        int status;
        uint64_t n;
    } requests[64];
    int n_requests;
    uint64_t prompt_tokens, completion_tokens;
    uint64_t cancelled;       /* requests cancelled by a client disconnect */
    uint64_t rejected_busy;   /* 429s from a full queue */
    copse_histogram ttft;     /* seconds from request to first token */
    copse_histogram itl;      /* seconds between tokens */
    copse_histogram duration; /* seconds per completion request */
    int64_t connections;      /* open now */
    int64_t in_flight;        /* completion requests in the engine now */
} copse_metrics;

/* What the engine thread publishes after each step. */
typedef struct copse_metrics_engine {
    int32_t running, waiting;
    uint64_t steps, preempted;
    uint32_t kv_blocks_total, kv_blocks_used, kv_blocks_free;
    int32_t n_drafters;
    struct {
        char name[64];
        uint64_t steps, proposed, accepted, accepted_steps;
    } drafters[COPSE_METRICS_MAX_DRAFTERS];
} copse_metrics_engine;

void copse__metrics_init(copse_metrics *m);
void copse__metrics_request(copse_metrics *m, copse_api_route route, int status);
/* Prometheus text (malloc'ed, NUL-terminated; NULL on no memory). */
char *copse__metrics_render(const copse_metrics *m, const copse_metrics_engine *e, size_t *len);

#endif /* COPSE_SERVER_METRICS_H */
