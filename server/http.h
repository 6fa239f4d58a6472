/*
 * http.h — HTTP/1.1 connections on a libuv loop: listening (Unix socket,
 * loopback TCP), reading and parsing requests with limits, timeouts, and
 * writing whole or chunked responses (internal).
 *
 * One request per connection at a time: a parsed request goes to the
 * handler, which answers with copse__http_respond, or with stream_begin,
 * stream_write..., stream_end. Pipelined requests wait in the read buffer
 * and are parsed when the previous response has been written out. The
 * connection keeps reading while a request is handled, so a client that
 * goes away is noticed at once: on_abort runs and the handler's request
 * must stop (the connection is gone; do not respond).
 *
 * Timeouts: a client must send a request's headers within header_timeout
 * and the whole request within request_timeout of its first byte; an idle
 * keep-alive connection is closed after idle_timeout; a response that
 * cannot be written (the client does not read) for write_timeout, or that
 * queues more than max_write_queue bytes, closes the connection.
 *
 * Threading: the loop thread only.
 */
#ifndef COPSE_SERVER_HTTP_H
#define COPSE_SERVER_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "http-parse.h"

typedef struct copse_http_server copse_http_server;
typedef struct copse_http_conn copse_http_conn;

typedef struct copse_http_config {
    copse_http_limits limits;
    uint64_t header_timeout_ms;  /* Default 10 s */
    uint64_t request_timeout_ms; /* Default 30 s */
    uint64_t idle_timeout_ms;    /* Default 60 s */
    uint64_t write_timeout_ms;   /* Default 30 s */
    size_t max_write_queue;      /* Default 4 MiB */
    int max_connections;         /* Default 1024 */
} copse_http_config;

copse_http_config copse__http_default_config(void);

typedef struct copse_http_handler {
    /* A complete request (hp holds it until the response ends). */
    void (*on_request)(void *ud, copse_http_conn *c, const copse_http_parser *hp);
    /* The connection closed while the handler's response was not finished. */
    void (*on_abort)(void *ud, copse_http_conn *c, void *req);
    /* A response ended with this status (for metrics); 0: the connection
     * closed before a response (timeouts, disconnects). */
    void (*on_error_response)(void *ud, int status);
    void (*on_connections)(void *ud, int open);
    void *ud;
} copse_http_handler;

int copse__http_server_create(uv_loop_t *loop, const copse_http_config *cfg, const copse_http_handler *h,
                              copse_http_server **out);
/* Listen on a Unix socket at path with the given mode. An existing socket
 * file is replaced only when no server answers on it. Returns 0 or -1 with
 * err naming the cause. */
int copse__http_listen_unix(copse_http_server *s, const char *path, unsigned mode, char *err, size_t err_size);
/* Listen on "HOST:PORT" (an IPv4 address, e.g. 127.0.0.1:8080). */
int copse__http_listen_tcp(copse_http_server *s, const char *addr, char *err, size_t err_size);
/* Stop accepting; the socket file is removed. */
void copse__http_stop_listening(copse_http_server *s);
/* Close every connection (their requests are aborted) and free the server
 * once the handles are closed: run the loop afterwards. */
void copse__http_server_destroy(copse_http_server *s);
int copse__http_open_connections(const copse_http_server *s);
/* Close connections that are idle between requests (for a graceful stop). */
void copse__http_close_idle(copse_http_server *s);

/* The handler's per-request pointer (passed back to on_abort). */
void copse__http_conn_set_req(copse_http_conn *c, void *req);

/* A whole response. extra_headers: "Name: value\r\n" lines or NULL. The
 * connection continues with the next request once it is written (or
 * closes, for requests without keep-alive and for errors >= 400 that
 * ask for it with close_after). Returns 0, or -1 if the connection failed
 * (it is closing; on_abort is not called). */
int copse__http_respond(copse_http_conn *c, int status, const char *content_type, const char *body, size_t len,
                        const char *extra_headers, bool close_after);
/* A chunked response: headers now, chunks as they come, then the end. */
int copse__http_stream_begin(copse_http_conn *c, int status, const char *content_type, const char *extra_headers);
int copse__http_stream_write(copse_http_conn *c, const char *data, size_t len);
int copse__http_stream_end(copse_http_conn *c);

#endif /* COPSE_SERVER_HTTP_H */
