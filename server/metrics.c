/*
 * metrics.c — counters, histograms and their Prometheus text (see metrics.h).
 */
#include "metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void copse__histogram_observe(copse_histogram *h, double v, uint64_t n)
{
    int b = 0;
    while (b < h->n_bounds && v > h->bounds[b])
        b++;
    h->counts[b] += n;
    h->count += n;
    h->sum += v * (double)n;
}

static void hist_init(copse_histogram *h, const double *bounds, int n)
{
    memset(h, 0, sizeof *h);
    h->n_bounds = n;
    memcpy(h->bounds, bounds, sizeof *bounds * (size_t)n);
}

void copse__metrics_init(copse_metrics *m)
{
    memset(m, 0, sizeof *m);
    static const double ttft[] = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
    static const double itl[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5};
    static const double dur[] = {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300};
    hist_init(&m->ttft, ttft, (int)(sizeof ttft / sizeof ttft[0]));
    hist_init(&m->itl, itl, (int)(sizeof itl / sizeof itl[0]));
    hist_init(&m->duration, dur, (int)(sizeof dur / sizeof dur[0]));
}

void copse__metrics_request(copse_metrics *m, copse_api_route route, int status)
{
    for (int i = 0; i < m->n_requests; i++)
        if (m->requests[i].route == route && m->requests[i].status == status) {
            m->requests[i].n++;
            return;
        }
    if (m->n_requests < (int)(sizeof m->requests / sizeof m->requests[0])) {
        m->requests[m->n_requests].route = route;
        m->requests[m->n_requests].status = status;
        m->requests[m->n_requests++].n = 1;
    }
}

/* ---------------------------------------------------------------- text */

typedef struct sbuf {
    char *s;
    size_t len, cap;
    int oom;
} sbuf;

__attribute__((format(printf, 2, 3))) static void put(sbuf *b, const char *fmt, ...)
{
    if (b->oom)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t nc = b->cap * 2 + (size_t)n;
        char *ns = realloc(b->s, nc);
        if (!ns) {
            b->oom = 1;
            return;
        }
        b->s = ns;
        b->cap = nc;
    }
}

static void head(sbuf *b, const char *name, const char *type, const char *help)
{
    put(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void hist(sbuf *b, const char *name, const char *help, const copse_histogram *h)
{
    head(b, name, "histogram", help);
    uint64_t cum = 0;
    for (int i = 0; i < h->n_bounds; i++) {
        cum += h->counts[i];
        put(b, "%s_bucket{le=\"%g\"} %llu\n", name, h->bounds[i], (unsigned long long)cum);
    }
    cum += h->counts[h->n_bounds];
    put(b, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.9g\n%s_count %llu\n", name, (unsigned long long)cum, name, h->sum,
        name, (unsigned long long)h->count);
}

/* Drafter specs may hold a file name: escape for a label value. */
static void label_value(char *out, size_t cap, const char *s)
{
    size_t at = 0;
    for (; *s && at + 3 < cap; s++) {
        if (*s == '"' || *s == '\\') {
            out[at++] = '\\';
            out[at++] = *s;
        } else if (*s == '\n') {
            out[at++] = '\\';
            out[at++] = 'n';
        } else {
            out[at++] = *s;
        }
    }
    out[at] = 0;
}

char *copse__metrics_render(const copse_metrics *m, const copse_metrics_engine *e, size_t *len)
{
    sbuf b = {.cap = 8192};
    b.s = malloc(b.cap);
    if (!b.s)
        return NULL;
    b.s[0] = 0;

    head(&b, "copse_requests_total", "counter", "HTTP requests answered, by route and status code");
    for (int i = 0; i < m->n_requests; i++)
        put(&b, "copse_requests_total{route=\"%s\",status=\"%d\"} %llu\n",
            copse__api_route_name(m->requests[i].route), m->requests[i].status,
            (unsigned long long)m->requests[i].n);
    head(&b, "copse_prompt_tokens_total", "counter", "prompt tokens of completed requests");
    put(&b, "copse_prompt_tokens_total %llu\n", (unsigned long long)m->prompt_tokens);
    head(&b, "copse_completion_tokens_total", "counter", "tokens generated");
    put(&b, "copse_completion_tokens_total %llu\n", (unsigned long long)m->completion_tokens);
    head(&b, "copse_requests_cancelled_total", "counter", "requests cancelled because the client went away");
    put(&b, "copse_requests_cancelled_total %llu\n", (unsigned long long)m->cancelled);
    head(&b, "copse_requests_rejected_busy_total", "counter", "requests refused with 429 because the queue was full");
    put(&b, "copse_requests_rejected_busy_total %llu\n", (unsigned long long)m->rejected_busy);
    hist(&b, "copse_time_to_first_token_seconds", "time from a request's arrival to its first token", &m->ttft);
    hist(&b, "copse_inter_token_latency_seconds", "time between a request's successive tokens", &m->itl);
    hist(&b, "copse_request_duration_seconds", "time from a completion request's arrival to its end", &m->duration);
    head(&b, "copse_connections", "gauge", "open client connections");
    put(&b, "copse_connections %lld\n", (long long)m->connections);
    head(&b, "copse_requests_in_flight", "gauge", "completion requests in the engine (queued or running)");
    put(&b, "copse_requests_in_flight %lld\n", (long long)m->in_flight);

    head(&b, "copse_queue_depth", "gauge", "requests waiting for a slot in the batch");
    put(&b, "copse_queue_depth %d\n", e->waiting);
    head(&b, "copse_requests_running", "gauge", "requests in the running batch");
    put(&b, "copse_requests_running %d\n", e->running);
    head(&b, "copse_engine_steps_total", "counter", "engine steps (one target forward each)");
    put(&b, "copse_engine_steps_total %llu\n", (unsigned long long)e->steps);
    head(&b, "copse_engine_preemptions_total", "counter", "requests preempted because the KV cache ran out");
    put(&b, "copse_engine_preemptions_total %llu\n", (unsigned long long)e->preempted);
    head(&b, "copse_kv_blocks_used", "gauge", "KV cache blocks in use");
    put(&b, "copse_kv_blocks_used %u\n", e->kv_blocks_used);
    head(&b, "copse_kv_blocks_free", "gauge", "KV cache blocks free");
    put(&b, "copse_kv_blocks_free %u\n", e->kv_blocks_free);
    head(&b, "copse_kv_blocks_total", "gauge", "KV cache blocks in all");
    put(&b, "copse_kv_blocks_total %u\n", e->kv_blocks_total);

    head(&b, "copse_drafter_proposed_tokens_total", "counter", "draft tokens proposed, by drafter");
    char name[160];
    for (int32_t i = 0; i < e->n_drafters; i++) {
        label_value(name, sizeof name, e->drafters[i].name);
        put(&b, "copse_drafter_proposed_tokens_total{drafter=\"%s\"} %llu\n", name,
            (unsigned long long)e->drafters[i].proposed);
    }
    head(&b, "copse_drafter_accepted_tokens_total", "counter", "draft tokens accepted, by drafter");
    for (int32_t i = 0; i < e->n_drafters; i++) {
        label_value(name, sizeof name, e->drafters[i].name);
        put(&b, "copse_drafter_accepted_tokens_total{drafter=\"%s\"} %llu\n", name,
            (unsigned long long)e->drafters[i].accepted);
    }
    head(&b, "copse_drafter_steps_total", "counter", "request-steps in which the drafter proposed a tree");
    for (int32_t i = 0; i < e->n_drafters; i++) {
        label_value(name, sizeof name, e->drafters[i].name);
        put(&b, "copse_drafter_steps_total{drafter=\"%s\"} %llu\n", name, (unsigned long long)e->drafters[i].steps);
    }
    head(&b, "copse_drafter_mean_accepted_length", "gauge",
         "accepted draft tokens per request-step in which the drafter proposed");
    for (int32_t i = 0; i < e->n_drafters; i++) {
        label_value(name, sizeof name, e->drafters[i].name);
        double mean = e->drafters[i].steps ? (double)e->drafters[i].accepted / (double)e->drafters[i].steps : 0.0;
        put(&b, "copse_drafter_mean_accepted_length{drafter=\"%s\"} %.6g\n", name, mean);
    }
    if (b.oom) {
        free(b.s);
        return NULL;
    }
    if (len)
        *len = b.len;
    return b.s;
}
