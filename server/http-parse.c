/*
 * http-parse.c — HTTP/1.1 request parsing with limits (see http-parse.h).
 */
#include "http-parse.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

copse_http_limits copse__http_default_limits(void)
{
    return (copse_http_limits){.max_header_bytes = 16 * 1024, .max_headers = 64, .max_body_bytes = 1 << 20};
}

/* ---------------------------------------------------------------- callbacks */

static copse_http_parser *hp_of(http_parser *p)
{
    return p->data;
}

/* Stop the parser with an HTTP status; the callback returns nonzero. */
static int fail(copse_http_parser *hp, int status, const char *msg)
{
    if (!hp->err_status) {
        hp->err_status = status;
        snprintf(hp->err_msg, sizeof hp->err_msg, "%s", msg);
    }
    return 1;
}

static int append(char **buf, size_t *len, size_t *cap, const char *at, size_t n)
{
    if (*len + n + 1 > *cap) {
        size_t nc = *cap ? *cap : 256;
        while (nc < *len + n + 1)
            nc *= 2;
        char *nb = realloc(*buf, nc);
        if (!nb)
            return -1;
        *buf = nb;
        *cap = nc;
    }
    memcpy(*buf + *len, at, n);
    *len += n;
    (*buf)[*len] = 0;
    return 0;
}

static int count_header_bytes(copse_http_parser *hp, size_t n)
{
    hp->header_bytes += n;
    if (hp->header_bytes > hp->lim.max_header_bytes)
        return fail(hp, 431, "the request line and headers are larger than the limit");
    return 0;
}

static int on_message_begin(http_parser *p)
{
    hp_of(p)->started = true;
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    copse_http_parser *hp = hp_of(p);
    if (count_header_bytes(hp, n))
        return 1;
    if (append(&hp->url, &hp->url_len, &hp->url_cap, at, n))
        return fail(hp, 503, "out of memory");
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    copse_http_parser *hp = hp_of(p);
    if (count_header_bytes(hp, n))
        return 1;
    if (hp->in_value || hp->n_headers == 0) { /* a new header starts */
        if (++hp->n_headers > hp->lim.max_headers)
            return fail(hp, 431, "too many headers");
        if (count_header_bytes(hp, 4))
            return 1;
        hp->field_len = 0;
        hp->in_value = false;
        hp->tracked = 0;
    }
    for (size_t i = 0; i < n && hp->field_len + 1 < sizeof hp->field; i++) {
        char c = at[i];
        hp->field[hp->field_len++] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
    }
    hp->field[hp->field_len] = 0;
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    copse_http_parser *hp = hp_of(p);
    if (count_header_bytes(hp, n))
        return 1;
    if (!hp->in_value) {
        hp->in_value = true;
        hp->tracked = !strcmp(hp->field, "expect") ? 1 : 0;
        if (hp->tracked)
            hp->expect_len = 0;
    }
    if (hp->tracked == 1)
        for (size_t i = 0; i < n && hp->expect_len + 1 < sizeof hp->expect; i++) {
            char c = at[i];
            hp->expect[hp->expect_len++] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
            hp->expect[hp->expect_len] = 0;
        }
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    copse_http_parser *hp = hp_of(p);
    hp->headers_complete = true;
    const bool chunked = (p->flags & F_CHUNKED) != 0;
    const bool has_length = p->content_length != ULLONG_MAX && !chunked;
    if (p->upgrade)
        return fail(hp, 400, "protocol upgrades are not supported");
    if (has_length && p->content_length > hp->lim.max_body_bytes) {
        char msg[128];
        snprintf(msg, sizeof msg, "the request body (%llu bytes) is larger than the limit (%zu bytes)",
                 (unsigned long long)p->content_length, hp->lim.max_body_bytes);
        return fail(hp, 413, msg);
    }
    if (!has_length && !chunked &&
        (p->method == HTTP_POST || p->method == HTTP_PUT || p->method == HTTP_PATCH))
        return fail(hp, 411, "a request with a body needs Content-Length or chunked transfer coding");
    if (hp->expect_len) {
        if (strcmp(hp->expect, "100-continue") != 0)
            return fail(hp, 417, "only 'Expect: 100-continue' is supported");
        hp->expect_continue = true;
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    copse_http_parser *hp = hp_of(p);
    if (hp->body_len + n > hp->lim.max_body_bytes) {
        char msg[128];
        snprintf(msg, sizeof msg, "the request body is larger than the limit (%zu bytes)", hp->lim.max_body_bytes);
        return fail(hp, 413, msg);
    }
    if (append(&hp->body, &hp->body_len, &hp->body_cap, at, n))
        return fail(hp, 503, "out of memory");
    return 0;
}

static int on_message_complete(http_parser *p)
{
    copse_http_parser *hp = hp_of(p);
    hp->complete = true;
    hp->method = (int)p->method;
    hp->keep_alive = http_should_keep_alive(p) != 0;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---------------------------------------------------------------- API */

void copse__http_parser_init(copse_http_parser *hp, const copse_http_limits *lim)
{
    memset(hp, 0, sizeof *hp);
    hp->lim = lim ? *lim : copse__http_default_limits();
    http_parser_init(&hp->p, HTTP_REQUEST);
    hp->p.data = hp;
}

void copse__http_parser_free(copse_http_parser *hp)
{
    free(hp->url);
    free(hp->body);
    hp->url = hp->body = NULL;
    hp->url_cap = hp->body_cap = 0;
}

void copse__http_parser_reset(copse_http_parser *hp)
{
    hp->url_len = hp->body_len = 0;
    if (hp->url)
        hp->url[0] = 0;
    if (hp->body)
        hp->body[0] = 0;
    hp->header_bytes = 0;
    hp->n_headers = 0;
    hp->field_len = 0;
    hp->field[0] = 0;
    hp->in_value = false;
    hp->tracked = 0;
    hp->expect_len = 0;
    hp->expect[0] = 0;
    hp->started = hp->headers_complete = hp->complete = hp->expect_continue = false;
    hp->method = 0;
    hp->keep_alive = false;
    /* a large body's buffer is not kept for the next request */
    if (hp->body_cap > 64 * 1024) {
        free(hp->body);
        hp->body = NULL;
        hp->body_cap = 0;
    }
    http_parser_pause(&hp->p, 0);
}

copse_http_result copse__http_parser_feed(copse_http_parser *hp, const char *data, size_t len, size_t *used)
{
    *used = 0;
    if (hp->err_status)
        return COPSE_HTTP_ERROR;
    if (len == 0)
        return COPSE_HTTP_MORE; /* end of input is the caller's business */
    size_t n = http_parser_execute(&hp->p, &settings, data, len);
    *used = n;
    enum http_errno e = HTTP_PARSER_ERRNO(&hp->p);
    if (hp->err_status)
        return COPSE_HTTP_ERROR;
    if (e == HPE_PAUSED && hp->complete)
        return COPSE_HTTP_REQUEST;
    if (e != HPE_OK) {
        char msg[160];
        snprintf(msg, sizeof msg, "malformed HTTP request: %s", http_errno_description(e));
        fail(hp, e == HPE_HEADER_OVERFLOW ? 431 : 400, msg);
        return COPSE_HTTP_ERROR;
    }
    if (hp->complete) /* completed without the pause taking hold */
        return COPSE_HTTP_REQUEST;
    return COPSE_HTTP_MORE;
}

void copse__http_request_path(const copse_http_parser *hp, const char **path, size_t *len)
{
    const char *u = hp->url ? hp->url : "";
    size_t n = hp->url_len;
    const char *q = memchr(u, '?', n);
    *path = u;
    *len = q ? (size_t)(q - u) : n;
}

const char *copse__http_status_text(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Unknown";
    }
}
