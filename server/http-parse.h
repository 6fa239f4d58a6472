/*
 * http-parse.h — HTTP/1.1 request parsing with limits, over libhttp-parser
 * (internal). No I/O: the connection layer (http.c) feeds it bytes, the
 * fuzz target feeds it whole inputs.
 *
 * One request at a time: feed stops after a complete request (the parser
 * is paused there), reports how many bytes it used, and the caller feeds
 * the rest after reset (pipelined requests are answered in order).
 *
 * Limits: the request line plus headers (names, values, and 4 bytes per
 * header for separators) are bounded by max_header_bytes (431), the number
 * of headers by max_headers (431), the body (Content-Length or the sum of
 * the chunks) by max_body_bytes (413). A POST/PUT/PATCH with neither
 * Content-Length nor chunked transfer coding gets 411. Anything the parser
 * rejects gets 400 naming the parser's reason.
 *
 * Ownership: url and body are owned by the parser and valid until the next
 * reset or free.
 */
#ifndef COPSE_SERVER_HTTP_PARSE_H
#define COPSE_SERVER_HTTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <http_parser.h>

typedef struct copse_http_limits {
    size_t max_header_bytes; /* request line + headers. Default 16 KiB */
    int max_headers;         /* Default 64 */
    size_t max_body_bytes;   /* Default 1 MiB */
} copse_http_limits;

copse_http_limits copse__http_default_limits(void);

typedef enum copse_http_result {
    COPSE_HTTP_MORE = 0,    /* all bytes used, request not complete yet */
    COPSE_HTTP_REQUEST = 1, /* a complete request is in the parser */
    COPSE_HTTP_ERROR = 2,   /* see err_status / err_msg; the connection must close */
} copse_http_result;

typedef struct copse_http_parser {
    http_parser p;
    copse_http_limits lim;
    /* the request being parsed */
    char *url;
    size_t url_len, url_cap;
    char *body;
    size_t body_len, body_cap;
    size_t header_bytes;
    int n_headers;
    char field[24]; /* the current header's name, lower case, truncated */
    size_t field_len;
    bool in_value;  /* the last callback was a header value */
    int tracked;    /* the header whose value we are reading: 0 none, 1 expect */
    char expect[24];
    size_t expect_len;
    bool started;          /* a byte of this request was parsed */
    bool headers_complete;
    bool complete;
    bool expect_continue;  /* headers asked for 100-continue (set at headers complete) */
    /* the finished request */
    int method;            /* enum http_method */
    bool keep_alive;
    /* an error */
    int err_status;        /* HTTP status to answer with */
    char err_msg[160];
} copse_http_parser;

/* lim may be NULL (defaults). Allocates nothing until bytes arrive. */
void copse__http_parser_init(copse_http_parser *hp, const copse_http_limits *lim);
void copse__http_parser_free(copse_http_parser *hp);
/* Forget the finished request (keeps buffers) and parse the next. */
void copse__http_parser_reset(copse_http_parser *hp);

/* Parse data[0..len). *used: bytes consumed (all of them for MORE; up to
 * the end of the request for REQUEST). After ERROR the parser is dead. */
copse_http_result copse__http_parser_feed(copse_http_parser *hp, const char *data, size_t len, size_t *used);

/* The request's path without the query string. */
void copse__http_request_path(const copse_http_parser *hp, const char **path, size_t *len);

const char *copse__http_status_text(int status);

#endif /* COPSE_SERVER_HTTP_PARSE_H */
