/*
 * serve.h — the server: HTTP requests routed to the API, completions run
 * on the engine thread and answered as JSON or SSE, metrics, and the
 * graceful stop (internal).
 *
 * Threading: the loop thread only (the engine runs on its own thread, see
 * engine-thread.h).
 */
#ifndef COPSE_SERVER_SERVE_H
#define COPSE_SERVER_SERVE_H

#include <stdbool.h>

#include <uv.h>

#include "api.h"
#include "chat.h"
#include "engine.h"
#include "http.h"
#include "tokenizer.h"

typedef struct copse_server copse_server;

typedef struct copse_serve_config {
    const char *model_name;    /* reported in responses and /v1/models */
    copse_api_limits limits;   /* request validation */
    double grace_s;            /* graceful stop: how long in-flight requests may finish */
    bool log_requests;         /* one line per completion request on standard error */
} copse_serve_config;

/* The engine, tokenizer and format are borrowed until the loop ends. */
int copse__server_create(uv_loop_t *loop, copse_engine *engine, const copse_tokenizer *tok,
                         const copse_chat_format *fmt, const copse_http_config *http,
                         const copse_serve_config *cfg, copse_server **out, char *err, size_t err_size);
int copse__server_listen_unix(copse_server *s, const char *path, unsigned mode, char *err, size_t err_size);
int copse__server_listen_tcp(copse_server *s, const char *addr, char *err, size_t err_size);

/* Begin the graceful stop (SIGINT/SIGTERM): stop accepting, let requests in
 * flight finish for grace_s, then cancel the rest, close everything. The
 * loop ends when all is closed. A second call cancels at once. */
void copse__server_shutdown(copse_server *s);
/* Free after the loop has ended (the engine thread has been joined). */
void copse__server_free(copse_server *s);

#endif /* COPSE_SERVER_SERVE_H */
