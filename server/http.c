/*
 * http.c — HTTP/1.1 connections on a libuv loop (see http.h).
 */
#include "http.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "api.h"

copse_http_config copse__http_default_config(void)
{
    return (copse_http_config){
        .limits = copse__http_default_limits(),
        .header_timeout_ms = 10000,
        .request_timeout_ms = 30000,
        .idle_timeout_ms = 60000,
        .write_timeout_ms = 30000,
        .max_write_queue = 4u << 20,
        .max_connections = 1024,
    };
}

typedef enum conn_state {
    ST_READ,    /* reading a request */
    ST_HANDLE,  /* a request is being answered */
    ST_CLOSING,
} conn_state;

struct copse_http_conn {
    copse_http_conn *prev, *next;
    copse_http_server *srv;
    union {
        uv_stream_t stream;
        uv_pipe_t pipe;
        uv_tcp_t tcp;
    } h;
    uv_timer_t timer;
    int open_handles;
    conn_state st;
    copse_http_parser hp;
    char *in; /* bytes read, not parsed yet */
    size_t in_len, in_cap;
    bool reading;
    bool continue_sent;
    void *req;          /* the handler's request, while its response is unfinished */
    bool streaming;     /* a chunked response is open */
    bool response_done; /* the whole response is queued */
    bool close_after;   /* close when it is written */
    bool head;          /* a HEAD request: no body */
    int pending_writes;
    uint64_t req_start; /* loop time of the request's first byte; 0: none yet */
    uint64_t write_progress;
};

struct copse_http_server {
    uv_loop_t *loop;
    copse_http_config cfg;
    copse_http_handler h;
    uv_pipe_t pipe;
    bool pipe_open;
    char *sock_path;
    uv_tcp_t tcp;
    bool tcp_open;
    int listener_handles; /* open listener handles (closing included) */
    copse_http_conn *conns;
    int n_conns;
    bool draining;   /* stopped listening: responses close their connections */
    bool destroying;
};

static void conn_close(copse_http_conn *c);
static void process_input(copse_http_conn *c);
static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);

static size_t max_buffered(const copse_http_server *s)
{
    return s->cfg.limits.max_header_bytes + s->cfg.limits.max_body_bytes + 64 * 1024;
}

/* ---------------------------------------------------------------- server lifetime */

static void server_maybe_free(copse_http_server *s)
{
    if (s->destroying && s->listener_handles == 0 && s->conns == NULL) {
        free(s->sock_path);
        free(s);
    }
}

static void listener_close_cb(uv_handle_t *h)
{
    copse_http_server *s = h->data;
    s->listener_handles--;
    server_maybe_free(s);
}

/* ---------------------------------------------------------------- timers */

static void arm_timer(copse_http_conn *c);

static void timer_cb(uv_timer_t *t)
{
    copse_http_conn *c = t->data;
    copse_http_server *s = c->srv;
    if (c->st == ST_READ) {
        if (c->hp.started && !c->req) {
            /* too slow: tell the client, then close */
            copse_api_error e;
            copse__api_error_set(&e, 408, NULL, "the request did not arrive in time");
            char *body = copse__api_error_json(&e);
            c->st = ST_HANDLE;
            if (s->h.on_error_response)
                s->h.on_error_response(s->h.ud, 408);
            if (!body || copse__http_respond(c, 408, "application/json", body, strlen(body), NULL, true) != 0)
                conn_close(c);
            free(body);
            /* the 408 must be written within the write timeout */
            return;
        }
        conn_close(c); /* idle */
        return;
    }
    if (c->st == ST_HANDLE && c->pending_writes > 0) {
        uint64_t now = uv_now(s->loop);
        if (now - c->write_progress >= s->cfg.write_timeout_ms) {
            fprintf(stderr, "copse serve: closing a connection whose client does not read its response\n");
            conn_close(c);
            return;
        }
        arm_timer(c);
    }
}

static void arm_timer(copse_http_conn *c)
{
    if (c->st == ST_CLOSING)
        return;
    copse_http_server *s = c->srv;
    uint64_t now = uv_now(s->loop), deadline;
    if (c->st == ST_READ) {
        if (!c->hp.started)
            deadline = now + s->cfg.idle_timeout_ms;
        else if (!c->hp.headers_complete)
            deadline = c->req_start + s->cfg.header_timeout_ms;
        else
            deadline = c->req_start + s->cfg.request_timeout_ms;
    } else if (c->pending_writes > 0) {
        deadline = c->write_progress + s->cfg.write_timeout_ms;
    } else {
        uv_timer_stop(&c->timer);
        return;
    }
    uv_timer_start(&c->timer, timer_cb, deadline > now ? deadline - now : 0, 0);
}

/* ---------------------------------------------------------------- closing */

static void conn_handle_close_cb(uv_handle_t *h)
{
    copse_http_conn *c = h->data;
    if (--c->open_handles > 0)
        return;
    copse_http_server *s = c->srv;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->n_conns--;
    if (s->h.on_connections)
        s->h.on_connections(s->h.ud, s->n_conns);
    copse__http_parser_free(&c->hp);
    free(c->in);
    free(c);
    server_maybe_free(s);
}

static void conn_close(copse_http_conn *c)
{
    if (c->st == ST_CLOSING)
        return;
    c->st = ST_CLOSING;
    void *req = c->req;
    c->req = NULL;
    if (req && c->srv->h.on_abort)
        c->srv->h.on_abort(c->srv->h.ud, c, req);
    uv_close((uv_handle_t *)&c->timer, conn_handle_close_cb);
    uv_close((uv_handle_t *)&c->h.stream, conn_handle_close_cb);
}

/* ---------------------------------------------------------------- writing */

typedef struct write_req {
    uv_write_t req;
    char *buf;
} write_req;

static void finish_response(copse_http_conn *c)
{
    c->req = NULL;
    c->streaming = false;
    c->response_done = false;
    if (c->close_after || c->srv->draining || c->srv->destroying) {
        conn_close(c);
        return;
    }
    copse__http_parser_reset(&c->hp);
    c->st = ST_READ;
    c->req_start = 0;
    c->continue_sent = false;
    c->head = false;
    if (!c->reading) {
        if (uv_read_start(&c->h.stream, alloc_cb, read_cb) < 0) {
            conn_close(c);
            return;
        }
        c->reading = true;
    }
    arm_timer(c);
    process_input(c);
}

static void write_cb(uv_write_t *w, int status)
{
    write_req *wr = (write_req *)w;
    copse_http_conn *c = w->data;
    free(wr->buf);
    free(wr);
    c->pending_writes--;
    if (c->st == ST_CLOSING)
        return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    c->write_progress = uv_now(c->srv->loop);
    if (c->pending_writes == 0 && c->response_done)
        finish_response(c);
    else
        arm_timer(c);
}

/* Queue buf[0..len) (taken over). Returns 0, or -1 after closing. */
static int conn_write(copse_http_conn *c, char *buf, size_t len)
{
    if (c->st == ST_CLOSING) {
        free(buf);
        return -1;
    }
    write_req *wr = malloc(sizeof *wr);
    if (!wr) {
        free(buf);
        conn_close(c);
        return -1;
    }
    wr->buf = buf;
    wr->req.data = c;
    uv_buf_t b = uv_buf_init(buf, (unsigned)len);
    if (c->pending_writes == 0)
        c->write_progress = uv_now(c->srv->loop);
    int rc = uv_write(&wr->req, &c->h.stream, &b, 1, write_cb);
    if (rc < 0) {
        free(buf);
        free(wr);
        conn_close(c);
        return -1;
    }
    c->pending_writes++;
    if (uv_stream_get_write_queue_size(&c->h.stream) > c->srv->cfg.max_write_queue) {
        fprintf(stderr, "copse serve: closing a connection with more than %zu bytes unread by its client\n",
                c->srv->cfg.max_write_queue);
        conn_close(c);
        return -1;
    }
    arm_timer(c);
    return 0;
}

static char *format_head(copse_http_conn *c, int status, const char *content_type, const char *length_or_chunked,
                         const char *extra, size_t *len)
{
    const bool keep = !c->close_after && c->hp.keep_alive && !c->srv->draining && !c->srv->destroying;
    size_t cap = 512 + (extra ? strlen(extra) : 0);
    char *h = malloc(cap);
    if (!h)
        return NULL;
    int n = snprintf(h, cap,
                     "HTTP/1.1 %d %s\r\n"
                     "Content-Type: %s\r\n"
                     "%s"
                     "Connection: %s\r\n"
                     "Cache-Control: no-cache\r\n"
                     "%s\r\n",
                     status, copse__http_status_text(status), content_type, length_or_chunked,
                     keep ? "keep-alive" : "close", extra ? extra : "");
    if (n < 0 || (size_t)n >= cap) {
        free(h);
        return NULL;
    }
    if (!keep)
        c->close_after = true;
    *len = (size_t)n;
    return h;
}

int copse__http_respond(copse_http_conn *c, int status, const char *content_type, const char *body, size_t len,
                        const char *extra_headers, bool close_after)
{
    if (c->st == ST_CLOSING)
        return -1;
    if (close_after)
        c->close_after = true;
    char cl[64];
    snprintf(cl, sizeof cl, "Content-Length: %zu\r\n", len);
    size_t hl;
    char *head = format_head(c, status, content_type, cl, extra_headers, &hl);
    if (!head) {
        conn_close(c);
        return -1;
    }
    const size_t bl = c->head ? 0 : len;
    char *all = realloc(head, hl + bl + 1);
    if (!all) {
        free(head);
        conn_close(c);
        return -1;
    }
    if (bl)
        memcpy(all + hl, body, bl);
    c->response_done = true;
    c->req = NULL;
    return conn_write(c, all, hl + bl);
}

int copse__http_stream_begin(copse_http_conn *c, int status, const char *content_type, const char *extra_headers)
{
    if (c->st == ST_CLOSING)
        return -1;
    size_t hl;
    char *head = format_head(c, status, content_type, "Transfer-Encoding: chunked\r\n", extra_headers, &hl);
    if (!head) {
        conn_close(c);
        return -1;
    }
    c->streaming = true;
    return conn_write(c, head, hl);
}

int copse__http_stream_write(copse_http_conn *c, const char *data, size_t len)
{
    if (c->st == ST_CLOSING)
        return -1;
    if (len == 0 || c->head)
        return 0;
    char *buf = malloc(len + 32);
    if (!buf) {
        conn_close(c);
        return -1;
    }
    int n = snprintf(buf, 32, "%zx\r\n", len);
    memcpy(buf + n, data, len);
    memcpy(buf + n + len, "\r\n", 2);
    return conn_write(c, buf, (size_t)n + len + 2);
}

int copse__http_stream_end(copse_http_conn *c)
{
    if (c->st == ST_CLOSING)
        return -1;
    char *buf = malloc(8);
    if (!buf) {
        conn_close(c);
        return -1;
    }
    memcpy(buf, "0\r\n\r\n", 5);
    c->response_done = true;
    c->req = NULL;
    return conn_write(c, buf, c->head ? 0 : 5);
}

void copse__http_conn_set_req(copse_http_conn *c, void *req)
{
    c->req = req;
}

/* ---------------------------------------------------------------- reading */

static void respond_error(copse_http_conn *c, int status, const char *msg)
{
    copse_api_error e;
    copse__api_error_set(&e, status, NULL, "%s", msg);
    char *body = copse__api_error_json(&e);
    c->st = ST_HANDLE;
    copse_http_server *s = c->srv;
    if (s->h.on_error_response)
        s->h.on_error_response(s->h.ud, status);
    if (!body || copse__http_respond(c, status, "application/json", body, strlen(body), NULL, true) != 0)
        conn_close(c);
    free(body);
}

static void process_input(copse_http_conn *c)
{
    copse_http_server *s = c->srv;
    while (c->st == ST_READ && c->in_len > 0) {
        size_t used = 0;
        copse_http_result r = copse__http_parser_feed(&c->hp, c->in, c->in_len, &used);
        if (used > c->in_len)
            used = c->in_len;
        memmove(c->in, c->in + used, c->in_len - used);
        c->in_len -= used;
        if (c->hp.started && c->req_start == 0)
            c->req_start = uv_now(s->loop);
        if (r == COPSE_HTTP_ERROR) {
            respond_error(c, c->hp.err_status ? c->hp.err_status : 400, c->hp.err_msg);
            return;
        }
        if (r == COPSE_HTTP_REQUEST) {
            c->st = ST_HANDLE;
            c->head = c->hp.method == HTTP_HEAD;
            arm_timer(c);
            s->h.on_request(s->h.ud, c, &c->hp);
            return;
        }
        if (used == 0)
            break; /* cannot happen with MORE; no endless loop either way */
    }
    if (c->st == ST_READ) {
        if (c->hp.expect_continue && !c->continue_sent) {
            c->continue_sent = true;
            char *msg = malloc(32);
            if (!msg) {
                conn_close(c);
                return;
            }
            memcpy(msg, "HTTP/1.1 100 Continue\r\n\r\n", 25);
            if (conn_write(c, msg, 25) != 0)
                return;
        }
        arm_timer(c);
    }
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    size_t n = suggested < 65536 ? suggested : 65536;
    buf->base = malloc(n);
    buf->len = buf->base ? n : 0;
}

static void read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    copse_http_conn *c = st->data;
    if (nread < 0) {
        free(buf->base);
        conn_close(c); /* EOF or error: a request in progress is aborted */
        return;
    }
    if (nread == 0 || c->st == ST_CLOSING) {
        free(buf->base);
        return;
    }
    size_t n = (size_t)nread;
    if (c->in_len + n > c->in_cap) {
        size_t nc = c->in_cap ? c->in_cap : 4096;
        while (nc < c->in_len + n)
            nc *= 2;
        char *ni = realloc(c->in, nc);
        if (!ni) {
            free(buf->base);
            conn_close(c);
            return;
        }
        c->in = ni;
        c->in_cap = nc;
    }
    memcpy(c->in + c->in_len, buf->base, n);
    c->in_len += n;
    free(buf->base);
    if (c->in_len > max_buffered(c->srv)) {
        if (c->st == ST_READ) {
            /* the parser would have stopped this already; belt and braces */
            respond_error(c, 413, "the request is larger than the limit");
            return;
        }
        /* pipelined requests piling up while one is answered: stop reading */
        uv_read_stop(&c->h.stream);
        c->reading = false;
    }
    if (c->st == ST_READ)
        process_input(c);
}

/* ---------------------------------------------------------------- accepting */

static void connection_cb(uv_stream_t *listener, int status)
{
    copse_http_server *s = listener->data;
    if (status < 0 || s->destroying)
        return;
    copse_http_conn *c = calloc(1, sizeof *c);
    if (!c)
        return;
    c->srv = s;
    int rc = listener == (uv_stream_t *)&s->tcp ? uv_tcp_init(s->loop, &c->h.tcp) : uv_pipe_init(s->loop, &c->h.pipe, 0);
    if (rc < 0) {
        free(c);
        return;
    }
    uv_timer_init(s->loop, &c->timer);
    c->h.stream.data = c;
    c->timer.data = c;
    c->open_handles = 2;
    copse__http_parser_init(&c->hp, &s->cfg.limits);
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->n_conns++;
    if (s->h.on_connections)
        s->h.on_connections(s->h.ud, s->n_conns);
    if (uv_accept(listener, &c->h.stream) < 0 || s->n_conns > s->cfg.max_connections) {
        conn_close(c);
        return;
    }
    if (listener == (uv_stream_t *)&s->tcp)
        uv_tcp_nodelay(&c->h.tcp, 1);
    c->st = ST_READ;
    if (uv_read_start(&c->h.stream, alloc_cb, read_cb) < 0) {
        conn_close(c);
        return;
    }
    c->reading = true;
    arm_timer(c);
}

int copse__http_server_create(uv_loop_t *loop, const copse_http_config *cfg, const copse_http_handler *h,
                              copse_http_server **out)
{
    copse_http_server *s = calloc(1, sizeof *s);
    if (!s)
        return -1;
    s->loop = loop;
    s->cfg = cfg ? *cfg : copse__http_default_config();
    s->h = *h;
    *out = s;
    return 0;
}

/* Is a server answering on this socket path? */
static int socket_alive(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_un a;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    memcpy(a.sun_path, path, strlen(path) + 1);
    int alive = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return alive;
}

int copse__http_listen_unix(copse_http_server *s, const char *path, unsigned mode, char *err, size_t err_size)
{
    struct sockaddr_un a;
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof a.sun_path) {
        snprintf(err, err_size, "socket path '%s' is %zu bytes long; a Unix socket path must have 1 to %zu bytes",
                 path, len, sizeof a.sun_path - 1);
        return -1;
    }
    struct stat sb;
    if (lstat(path, &sb) == 0) {
        if (!S_ISSOCK(sb.st_mode)) {
            snprintf(err, err_size, "%s exists and is not a socket; not replacing it", path);
            return -1;
        }
        if (socket_alive(path)) {
            snprintf(err, err_size, "another server is listening on %s", path);
            return -1;
        }
        if (unlink(path) != 0) {
            snprintf(err, err_size, "cannot remove the stale socket %s: %s", path, strerror(errno));
            return -1;
        }
        fprintf(stderr, "copse serve: replaced the stale socket %s\n", path);
    }
    int rc = uv_pipe_init(s->loop, &s->pipe, 0);
    if (rc < 0) {
        snprintf(err, err_size, "uv_pipe_init: %s", uv_strerror(rc));
        return -1;
    }
    s->pipe.data = s;
    s->pipe_open = true;
    s->listener_handles++;
    mode_t old = umask((mode_t)(~mode & 0777));
    rc = uv_pipe_bind(&s->pipe, path);
    umask(old);
    if (rc == 0 && !(s->sock_path = strdup(path)))
        rc = UV_ENOMEM;
    if (rc == 0 && chmod(path, (mode_t)mode) != 0)
        rc = uv_translate_sys_error(errno);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&s->pipe, 128, connection_cb);
    if (rc < 0) {
        snprintf(err, err_size, "cannot listen on %s: %s", path, uv_strerror(rc));
        return -1;
    }
    return 0;
}

int copse__http_listen_tcp(copse_http_server *s, const char *addr, char *err, size_t err_size)
{
    char host[64];
    const char *colon = strrchr(addr, ':');
    char *end = NULL;
    long port = colon ? strtol(colon + 1, &end, 10) : -1;
    if (!colon || (size_t)(colon - addr) >= sizeof host || !end || *end || end == colon + 1 || port < 0 ||
        port > 65535) {
        snprintf(err, err_size, "--listen '%s': expected IPv4ADDRESS:PORT, e.g. 127.0.0.1:8080", addr);
        return -1;
    }
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = 0;
    struct sockaddr_in sa;
    if (uv_ip4_addr(host, (int)port, &sa) != 0) {
        snprintf(err, err_size, "--listen '%s': '%s' is not an IPv4 address", addr, host);
        return -1;
    }
    int rc = uv_tcp_init(s->loop, &s->tcp);
    if (rc < 0) {
        snprintf(err, err_size, "uv_tcp_init: %s", uv_strerror(rc));
        return -1;
    }
    s->tcp.data = s;
    s->tcp_open = true;
    s->listener_handles++;
    rc = uv_tcp_bind(&s->tcp, (const struct sockaddr *)&sa, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&s->tcp, 128, connection_cb);
    if (rc < 0) {
        snprintf(err, err_size, "cannot listen on %s: %s", addr, uv_strerror(rc));
        return -1;
    }
    return 0;
}

void copse__http_stop_listening(copse_http_server *s)
{
    s->draining = true;
    if (s->pipe_open) {
        s->pipe_open = false;
        uv_close((uv_handle_t *)&s->pipe, listener_close_cb);
        if (s->sock_path)
            unlink(s->sock_path);
    }
    if (s->tcp_open) {
        s->tcp_open = false;
        uv_close((uv_handle_t *)&s->tcp, listener_close_cb);
    }
}

void copse__http_close_idle(copse_http_server *s)
{
    for (copse_http_conn *c = s->conns, *n; c; c = n) {
        n = c->next;
        if (c->st == ST_READ && !c->hp.started)
            conn_close(c);
    }
}

void copse__http_server_destroy(copse_http_server *s)
{
    if (!s)
        return;
    s->destroying = true;
    copse__http_stop_listening(s);
    for (copse_http_conn *c = s->conns, *n; c; c = n) {
        n = c->next;
        conn_close(c);
    }
    server_maybe_free(s);
}

int copse__http_open_connections(const copse_http_server *s)
{
    return s->n_conns;
}
