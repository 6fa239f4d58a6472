/*
 * serve.c — the server: routing, completions over the engine thread,
 * responses, metrics, graceful stop (see serve.h).
 */
#include "serve.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine-thread.h"
#include "metrics.h"
#include "sse.h"

/* A completion request as the loop sees it. */
typedef struct srv_req {
    struct srv_req *prev, *next;
    copse_server *srv;
    copse_http_conn *conn; /* NULL once the client has gone */
    copse_api_route route;
    bool chat, stream, want_logprobs;
    bool started;          /* the engine admitted it */
    bool first_token_seen;
    char id[48];
    int64_t created;
    uint64_t t_arrive, t_first, t_last; /* uv_hrtime ns */
    /* non-streamed: the whole text and logprobs so far */
    char *text;
    size_t len, cap;
    cJSON *logprobs;
    int32_t n_prompt, n_generated;
    uint64_t proposed, accepted;
} srv_req;

struct copse_server {
    uv_loop_t *loop;
    copse_serve_config cfg;
    char *model_name;
    copse_http_server *http;
    copse_et *et;
    copse_metrics metrics;
    srv_req *reqs; /* in flight */
    uint64_t next_id;
    int64_t started_at;
    /* graceful stop */
    bool draining, cancelled_all, finalized;
    uint64_t drain_deadline; /* uv_now ms */
    uv_timer_t drain_timer;
    bool drain_timer_open;
};

static int64_t unix_now(void)
{
    return (int64_t)time(NULL);
}

/* ---------------------------------------------------------------- plain responses */

static void respond_json(copse_server *s, copse_http_conn *c, copse_api_route route, int status, char *body,
                         const char *extra)
{
    copse__metrics_request(&s->metrics, route, body ? status : 503);
    if (!body) {
        static const char oom[] = "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\",\"param\":null,\"code\":null}}";
        copse__http_respond(c, 503, "application/json", oom, sizeof oom - 1, NULL, true);
        return;
    }
    copse__http_respond(c, status, "application/json", body, strlen(body), extra, false);
    free(body);
}

static void respond_error(copse_server *s, copse_http_conn *c, copse_api_route route, const copse_api_error *e,
                          const char *extra)
{
    respond_json(s, c, route, e->status, copse__api_error_json(e), extra);
}

/* ---------------------------------------------------------------- requests */

static void req_free(copse_server *s, srv_req *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        s->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    s->metrics.in_flight--;
    free(r->text);
    cJSON_Delete(r->logprobs);
    free(r);
}

static void start_completion(copse_server *s, copse_http_conn *c, copse_api_route route, const copse_http_parser *hp)
{
    const bool chat = route == COPSE_ROUTE_CHAT;
    copse_api_completion *comp = malloc(sizeof *comp);
    srv_req *r = calloc(1, sizeof *r);
    copse_api_error e;
    if (!comp || !r) {
        free(comp);
        free(r);
        copse__api_error_set(&e, 503, NULL, "out of memory");
        respond_error(s, c, route, &e, NULL);
        return;
    }
    if (copse__api_completion_parse(hp->body, hp->body_len, chat, &s->cfg.limits, comp, &e) != 0) {
        free(comp);
        free(r);
        respond_error(s, c, route, &e, NULL);
        return;
    }
    r->srv = s;
    r->conn = c;
    r->route = route;
    r->chat = chat;
    r->stream = comp->stream;
    r->want_logprobs = comp->want_logprobs;
    r->created = unix_now();
    r->t_arrive = uv_hrtime();
    snprintf(r->id, sizeof r->id, "%s-%" PRIx64 "%08" PRIx64, chat ? "chatcmpl" : "cmpl", (uint64_t)s->started_at,
             ++s->next_id);
    r->next = s->reqs;
    if (s->reqs)
        s->reqs->prev = r;
    s->reqs = r;
    s->metrics.in_flight++;
    copse__http_conn_set_req(c, r);
    copse__et_submit(s->et, r, comp);
}

static void on_request(void *ud, copse_http_conn *c, const copse_http_parser *hp)
{
    copse_server *s = ud;
    const char *path;
    size_t plen;
    copse__http_request_path(hp, &path, &plen);
    copse_api_route route;
    int st = copse__api_route_find(hp->method, path, plen, &route);
    copse_api_error e;
    if (st == 404) {
        copse__api_error_set(&e, 404, NULL, "no route for %s %.*s", http_method_str((enum http_method)hp->method),
                             (int)(plen > 200 ? 200 : plen), path);
        respond_error(s, c, COPSE_ROUTE_NONE, &e, NULL);
        return;
    }
    if (st == 405) {
        const bool post = route == COPSE_ROUTE_COMPLETIONS || route == COPSE_ROUTE_CHAT;
        copse__api_error_set(&e, 405, NULL, "%.*s accepts only %s", (int)plen, path, post ? "POST" : "GET");
        respond_error(s, c, route, &e, post ? "Allow: POST\r\n" : "Allow: GET, HEAD\r\n");
        return;
    }
    switch (route) {
    case COPSE_ROUTE_HEALTH:
        if (s->draining)
            respond_json(s, c, route, 503, strdup("{\"status\":\"stopping\"}"), NULL);
        else
            respond_json(s, c, route, 200, strdup("{\"status\":\"ok\"}"), NULL);
        return;
    case COPSE_ROUTE_MODELS:
        respond_json(s, c, route, 200, copse__api_models_json(s->model_name, s->started_at), NULL);
        return;
    case COPSE_ROUTE_METRICS: {
        copse_metrics_engine es;
        copse__et_stats(s->et, &es);
        copse__metrics_request(&s->metrics, route, 200); /* counted before rendering: it is in its own output */
        size_t len = 0;
        char *text = copse__metrics_render(&s->metrics, &es, &len);
        if (!text) {
            copse__http_respond(c, 503, "text/plain", "out of memory\n", 14, NULL, true);
            return;
        }
        copse__http_respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", text, len, NULL, false);
        free(text);
        return;
    }
    case COPSE_ROUTE_COMPLETIONS:
    case COPSE_ROUTE_CHAT:
        if (s->draining) {
            copse__api_error_set(&e, 503, NULL, "the server is stopping");
            respond_error(s, c, route, &e, NULL);
            return;
        }
        start_completion(s, c, route, hp);
        return;
    default:
        copse__api_error_set(&e, 404, NULL, "not found");
        respond_error(s, c, route, &e, NULL);
        return;
    }
}

static void on_abort(void *ud, copse_http_conn *c, void *req)
{
    (void)c;
    copse_server *s = ud;
    srv_req *r = req;
    r->conn = NULL;
    s->metrics.cancelled++;
    copse__et_cancel(s->et, r);
}

static void on_error_response(void *ud, int status)
{
    copse_server *s = ud;
    copse__metrics_request(&s->metrics, COPSE_ROUTE_NONE, status);
}

static void on_connections(void *ud, int open)
{
    copse_server *s = ud;
    s->metrics.connections = open;
}

/* ---------------------------------------------------------------- engine messages */

static copse_api_result result_of(const copse_server *s, const srv_req *r, const char *finish, bool usage)
{
    return (copse_api_result){.id = r->id,
                              .model = s->model_name,
                              .created = r->created,
                              .finish = finish,
                              .prompt_tokens = r->n_prompt,
                              .completion_tokens = r->n_generated,
                              .usage = usage};
}

/* Send one SSE event; false if the connection failed (it aborted r). */
static bool send_event(srv_req *r, char *json)
{
    if (!json)
        return r->conn != NULL;
    size_t len;
    char *ev = copse__sse_event(json, &len);
    free(json);
    if (!ev || !r->conn)
        return r->conn != NULL;
    int rc = copse__http_stream_write(r->conn, ev, len);
    free(ev);
    return rc == 0;
}

/* Append logprob entries of a message to the request's collection. */
static void collect_logprobs(srv_req *r, cJSON *lp)
{
    if (!lp)
        return;
    if (!r->logprobs) {
        r->logprobs = lp;
        return;
    }
    if (r->chat) {
        cJSON *it;
        while ((it = cJSON_DetachItemFromArray(lp, 0)))
            cJSON_AddItemToArray(r->logprobs, it);
    } else {
        static const char *const keys[] = {"tokens", "token_logprobs", "top_logprobs", "text_offset"};
        for (int k = 0; k < 4; k++) {
            cJSON *dst = cJSON_GetObjectItemCaseSensitive(r->logprobs, keys[k]);
            cJSON *src = cJSON_GetObjectItemCaseSensitive(lp, keys[k]);
            cJSON *it;
            while (dst && src && (it = cJSON_DetachItemFromArray(src, 0)))
                cJSON_AddItemToArray(dst, it);
        }
    }
    cJSON_Delete(lp);
}

static void log_request(const copse_server *s, const srv_req *r, int status, const char *finish)
{
    if (!s->cfg.log_requests)
        return;
    const double total = (double)(uv_hrtime() - r->t_arrive) * 1e-9;
    const double gen_s = r->first_token_seen ? (double)(r->t_last - r->t_first) * 1e-9 : 0.0;
    const double ttft = r->first_token_seen ? (double)(r->t_first - r->t_arrive) * 1e-9 : 0.0;
    char acc[96] = "no speculation";
    if (r->proposed)
        snprintf(acc, sizeof acc, "accepted %" PRIu64 "/%" PRIu64 " (%.0f%%)", r->accepted, r->proposed,
                 100.0 * (double)r->accepted / (double)r->proposed);
    fprintf(stderr,
            "copse serve: %s %s %d %s: prompt %d, generated %d tokens; %.3fs, first token %.3fs, %.1f tokens/s; %s\n",
            r->id, copse__api_route_name(r->route), status, finish ? finish : "error", r->n_prompt, r->n_generated,
            total, ttft, r->n_generated > 1 && gen_s > 0 ? (r->n_generated - 1) / gen_s : 0.0, acc);
}

static void on_msg(void *ud, copse_et_msg *m)
{
    copse_server *s = ud;
    srv_req *r = m->cookie;
    const uint64_t now = uv_hrtime();
    if (m->n_prompt)
        r->n_prompt = m->n_prompt;
    if (m->n_generated)
        r->n_generated = m->n_generated;
    r->proposed = m->proposed ? m->proposed : r->proposed;
    r->accepted = m->accepted ? m->accepted : r->accepted;

    /* metrics */
    if (m->n_tokens > 0) {
        s->metrics.completion_tokens += (uint64_t)m->n_tokens;
        if (!r->first_token_seen) {
            r->first_token_seen = true;
            r->t_first = now;
            copse__histogram_observe(&s->metrics.ttft, (double)(now - r->t_arrive) * 1e-9, 1);
            if (m->n_tokens > 1)
                copse__histogram_observe(&s->metrics.itl, 0.0, (uint64_t)m->n_tokens - 1);
        } else {
            copse__histogram_observe(&s->metrics.itl, (double)(now - r->t_last) * 1e-9 / m->n_tokens,
                                     (uint64_t)m->n_tokens);
        }
        r->t_last = now;
    }

    if (m->started) {
        r->started = true;
        if (r->conn && r->stream) {
            if (copse__http_stream_begin(r->conn, 200, "text/event-stream", NULL) == 0 && r->chat) {
                copse_api_result res = result_of(s, r, NULL, false);
                send_event(r, copse__api_chunk_json(true, &res, "", 0, true, NULL));
            }
        }
    }

    if (!m->end) {
        if (r->conn && r->stream && (m->text_len || m->logprobs)) {
            copse_api_result res = result_of(s, r, NULL, false);
            send_event(r, copse__api_chunk_json(r->chat, &res, m->text, m->text_len, false, m->logprobs));
            m->logprobs = NULL;
        } else if (r->conn && !r->stream) {
            if (m->text_len) {
                if (r->len + m->text_len + 1 > r->cap) {
                    size_t nc = (r->len + m->text_len + 1) * 2;
                    char *nt = realloc(r->text, nc);
                    if (!nt) {
                        copse__et_msg_free(m);
                        return; /* the text is cut; the end reports it */
                    }
                    r->text = nt;
                    r->cap = nc;
                }
                memcpy(r->text + r->len, m->text, m->text_len);
                r->len += m->text_len;
            }
            collect_logprobs(r, m->logprobs);
            m->logprobs = NULL;
        }
        copse__et_msg_free(m);
        return;
    }

    /* the end */
    s->metrics.prompt_tokens += (uint64_t)(r->n_prompt > 0 ? r->n_prompt : 0);
    copse__histogram_observe(&s->metrics.duration, (double)(now - r->t_arrive) * 1e-9, 1);
    int status = 200;
    const char *finish = m->finish;
    const bool failed = !finish || !strcmp(finish, "cancelled");
    if (r->conn) {
        copse_api_error e;
        if (failed) {
            if (!finish)
                copse__api_error_set(&e, m->http_status ? m->http_status : 500, m->error_param[0] ? m->error_param : NULL,
                                     "%s", m->error);
            else
                copse__api_error_set(&e, 503, NULL, "the request was cancelled: the server is stopping");
            if (e.status == 429)
                s->metrics.rejected_busy++;
            status = e.status;
        }
        if (r->stream && r->started) {
            copse_api_result res = result_of(s, r, failed ? NULL : finish, !failed);
            bool ok = true;
            if (failed) {
                char *ej = copse__api_error_json(&e);
                ok = send_event(r, ej);
            } else {
                ok = send_event(r, copse__api_chunk_json(r->chat, &res, m->text, m->text_len, false, m->logprobs));
                m->logprobs = NULL;
            }
            size_t dl;
            const char *done = copse__sse_done(&dl);
            if (ok && copse__http_stream_write(r->conn, done, dl) == 0)
                copse__http_stream_end(r->conn);
            copse__metrics_request(&s->metrics, r->route, failed ? e.status : 200);
        } else if (failed) {
            respond_error(s, r->conn, r->route, &e, e.status == 429 ? "Retry-After: 1\r\n" : NULL);
        } else {
            if (m->text_len) {
                char *nt = realloc(r->text, r->len + m->text_len + 1);
                if (nt) {
                    r->text = nt;
                    memcpy(r->text + r->len, m->text, m->text_len);
                    r->len += m->text_len;
                }
            }
            collect_logprobs(r, m->logprobs);
            m->logprobs = NULL;
            copse_api_result res = result_of(s, r, finish, true);
            char *body = copse__api_response_json(r->chat, &res, r->text, r->len, r->logprobs);
            r->logprobs = NULL;
            respond_json(s, r->conn, r->route, 200, body, NULL);
        }
    } else {
        status = 499; /* the client closed the connection (nginx's convention) */
        copse__metrics_request(&s->metrics, r->route, status);
    }
    log_request(s, r, status, finish);
    copse__et_msg_free(m);
    req_free(s, r);
}

/* ---------------------------------------------------------------- lifecycle */

int copse__server_create(uv_loop_t *loop, copse_engine *engine, const copse_tokenizer *tok,
                         const copse_chat_format *fmt, const copse_http_config *http,
                         const copse_serve_config *cfg, copse_server **out, char *err, size_t err_size)
{
    *out = NULL;
    copse_server *s = calloc(1, sizeof *s);
    if (!s || !(s->model_name = strdup(cfg->model_name))) {
        free(s);
        snprintf(err, err_size, "out of memory");
        return -1;
    }
    s->loop = loop;
    s->cfg = *cfg;
    s->cfg.model_name = s->model_name;
    s->started_at = unix_now();
    copse__metrics_init(&s->metrics);
    copse_http_handler h = {.on_request = on_request,
                            .on_abort = on_abort,
                            .on_error_response = on_error_response,
                            .on_connections = on_connections,
                            .ud = s};
    if (copse__http_server_create(loop, http, &h, &s->http) != 0) {
        snprintf(err, err_size, "out of memory");
        free(s->model_name);
        free(s);
        return -1;
    }
    if (copse__et_create(loop, engine, tok, fmt, on_msg, s, &s->et, err, err_size) != 0) {
        copse__http_server_destroy(s->http);
        free(s->model_name);
        free(s);
        return -1;
    }
    uv_timer_init(loop, &s->drain_timer);
    s->drain_timer.data = s;
    s->drain_timer_open = true;
    *out = s;
    return 0;
}

int copse__server_listen_unix(copse_server *s, const char *path, unsigned mode, char *err, size_t err_size)
{
    return copse__http_listen_unix(s->http, path, mode, err, err_size);
}

int copse__server_listen_tcp(copse_server *s, const char *addr, char *err, size_t err_size)
{
    return copse__http_listen_tcp(s->http, addr, err, err_size);
}

static void cancel_all(copse_server *s)
{
    s->cancelled_all = true;
    for (srv_req *r = s->reqs; r; r = r->next)
        copse__et_cancel(s->et, r);
}

/* Close everything; the loop then runs out of handles and returns. */
static void finalize(copse_server *s)
{
    if (s->finalized)
        return;
    s->finalized = true;
    copse__http_server_destroy(s->http); /* aborts what is left: cancels go to the engine thread */
    s->http = NULL;
    copse__et_destroy(s->et);            /* joins; no more messages */
    s->et = NULL;
    while (s->reqs)
        req_free(s, s->reqs);
    uv_timer_stop(&s->drain_timer);
    uv_close((uv_handle_t *)&s->drain_timer, NULL);
}

static void drain_tick(uv_timer_t *t)
{
    copse_server *s = t->data;
    copse__http_close_idle(s->http);
    const uint64_t now = uv_now(s->loop);
    if (!s->reqs && copse__http_open_connections(s->http) == 0) {
        finalize(s);
        return;
    }
    if (now >= s->drain_deadline && !s->cancelled_all) {
        fprintf(stderr, "copse serve: grace period over; cancelling the requests still running\n");
        cancel_all(s);
    }
    if (now >= s->drain_deadline + 2000) { /* the clients did not take their last bytes */
        finalize(s);
        return;
    }
}

void copse__server_shutdown(copse_server *s)
{
    if (s->finalized)
        return;
    if (s->draining) {
        if (!s->cancelled_all) {
            fprintf(stderr, "copse serve: second signal; cancelling the requests in flight\n");
            cancel_all(s);
            s->drain_deadline = uv_now(s->loop);
        }
        return;
    }
    s->draining = true;
    fprintf(stderr, "copse serve: stopping: %d requests in flight, grace period %.1fs\n", (int)s->metrics.in_flight,
            s->cfg.grace_s);
    copse__http_stop_listening(s->http);
    s->drain_deadline = uv_now(s->loop) + (uint64_t)(s->cfg.grace_s * 1000.0);
    uv_timer_start(&s->drain_timer, drain_tick, 0, 50);
}

void copse__server_free(copse_server *s)
{
    if (!s)
        return;
    free(s->model_name);
    free(s);
}
