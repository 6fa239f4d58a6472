/*
 * fuzz-server.c — libFuzzer target for the server's request path:
 * HTTP parsing (http-parse.c) -> routing -> JSON validation (api.c) ->
 * the error or response JSON, exactly as `copse serve` runs them, without
 * sockets or a model.
 *
 * Each input is parsed as a stream of pipelined requests, twice: whole and
 * in pieces whose sizes come from the input's first byte; both must see
 * the same requests and both fail or neither. Invariants: errors carry a
 * status in the documented set and a message; a valid completion has a
 * prompt (text or in-vocabulary tokens) or messages, max_tokens in range,
 * valid sampling parameters; every JSON the server would write parses.
 *
 * Build: CC=clang meson setup build-fuzz -Dfuzz=enabled -Db_sanitize=address,undefined
 *        -Db_lundef=false && ninja -C build-fuzz tests/fuzz-server
 * Run:   ./build-fuzz/tests/fuzz-server -max_len=8192 -max_total_time=60
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "http-parse.h"
#include "sampling.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(cond)                                                                   \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            fprintf(stderr, "fuzz-server: %s:%d: %s does not hold\n", __FILE__, __LINE__, #cond); \
            abort();                                                                    \
        }                                                                               \
    } while (0)

static const char *const drafters[] = {"ngram", "suffix"};

static void require_json(char *s)
{
    REQUIRE(s != NULL);
    cJSON *j = cJSON_Parse(s);
    REQUIRE(j != NULL);
    cJSON_Delete(j);
    free(s);
}

/* One request: route and validate; returns a small summary for comparing runs. */
static uint32_t handle(const copse_http_parser *hp)
{
    const char *path;
    size_t plen;
    copse__http_request_path(hp, &path, &plen);
    copse_api_route route;
    int st = copse__api_route_find(hp->method, path, plen, &route);
    REQUIRE(st == 200 || st == 404 || st == 405);
    if (st != 200 || (route != COPSE_ROUTE_COMPLETIONS && route != COPSE_ROUTE_CHAT))
        return (uint32_t)st << 8 | (uint32_t)route;
    copse_api_limits lim = {.n_vocab = 49152,
                            .max_context = 2048,
                            .drafters = drafters,
                            .n_drafters = 2,
                            .default_drafters = 3,
                            .max_nodes = 64,
                            .max_messages = 64};
    copse_api_completion c;
    copse_api_error e;
    const bool chat = route == COPSE_ROUTE_CHAT;
    if (copse__api_completion_parse(hp->body, hp->body_len, chat, &lim, &c, &e) != 0) {
        REQUIRE(e.status == 400 || e.status == 503);
        REQUIRE(e.message[0] != 0);
        require_json(copse__api_error_json(&e));
        return 400u << 8 | (uint32_t)route;
    }
    REQUIRE(c.chat == chat);
    if (chat) {
        REQUIRE(c.n_msgs >= 1 && c.n_msgs <= lim.max_messages);
        for (int32_t i = 0; i < c.n_msgs; i++)
            REQUIRE(c.msgs[i].role && c.msgs[i].content);
    } else if (c.prompt_tokens) {
        REQUIRE(c.n_prompt_tokens >= 1 && c.n_prompt_tokens <= lim.max_context);
        for (int32_t i = 0; i < c.n_prompt_tokens; i++)
            REQUIRE(c.prompt_tokens[i] >= 0 && c.prompt_tokens[i] < lim.n_vocab);
    } else {
        REQUIRE(c.prompt != NULL);
    }
    REQUIRE(c.max_tokens >= 1 && c.max_tokens <= lim.max_context);
    REQUIRE(c.n_stop >= 0 && c.n_stop <= COPSE_API_MAX_STOP);
    for (int32_t i = 0; i < c.n_stop; i++)
        REQUIRE(c.stop_len[i] >= 1 && c.stop_len[i] <= COPSE_API_MAX_STOP_LEN);
    REQUIRE(c.logprobs >= 0 && c.logprobs <= COPSE_API_MAX_LOGPROBS);
    REQUIRE((c.drafters & ~3u) == 0);
    REQUIRE(c.max_nodes >= 0 && c.max_nodes <= lim.max_nodes);
    char err[256];
    REQUIRE(copse__sampling_validate(&c.sampling, err, sizeof err) == COPSE_OK);
    /* the responses the server would write around this request */
    copse_api_result r = {.id = "cmpl-x", .model = "m", .created = 1, .finish = "stop", .usage = true};
    const char *text = c.prompt ? c.prompt : "x";
    size_t tlen = c.prompt ? c.prompt_len : 1;
    require_json(copse__api_response_json(chat, &r, text, tlen, NULL));
    require_json(copse__api_chunk_json(chat, &r, text, tlen, true, NULL));
    copse__api_completion_free(&c);
    return 200u << 8 | (uint32_t)route;
}

/* Parse data as pipelined requests fed in pieces of `piece` bytes (0: whole).
 * Writes up to 64 summaries; returns their number, negated-1 on an error status. */
static int run(const uint8_t *data, size_t size, size_t piece, uint32_t *out, int *err_status)
{
    copse_http_limits lim = copse__http_default_limits();
    lim.max_header_bytes = 2048;
    lim.max_body_bytes = 4096;
    copse_http_parser hp;
    copse__http_parser_init(&hp, &lim);
    int n = 0;
    *err_status = 0;
    size_t at = 0, avail = 0;
    while (at < size) {
        avail = piece ? (avail + piece < size ? avail + piece : size) : size;
        while (at < avail) {
            size_t used = 0;
            copse_http_result res = copse__http_parser_feed(&hp, (const char *)data + at, avail - at, &used);
            REQUIRE(used <= avail - at);
            at += used;
            if (res == COPSE_HTTP_ERROR) {
                *err_status = hp.err_status;
                REQUIRE(hp.err_status >= 400 && hp.err_status < 600 && hp.err_msg[0]);
                copse__http_parser_free(&hp);
                return n;
            }
            if (res == COPSE_HTTP_REQUEST) {
                REQUIRE(hp.body_len <= lim.max_body_bytes);
                uint32_t s = handle(&hp);
                if (n < 64)
                    out[n] = s;
                n++;
                copse__http_parser_reset(&hp);
                continue;
            }
            REQUIRE(at == avail); /* MORE consumes everything */
            break;
        }
    }
    copse__http_parser_free(&hp);
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const size_t piece = 1 + data[0] % 17;
    data++;
    size--;
    uint32_t a[64], b[64];
    int ea, eb;
    int na = run(data, size, 0, a, &ea);
    int nb = run(data, size, piece, b, &eb);
    REQUIRE(na == nb);
    /* both fail or neither; which limit or syntax error is reported first may
     * differ (http-parser reports data callbacks at the end of each piece) */
    REQUIRE((ea == 0) == (eb == 0));
    for (int i = 0; i < na && i < 64; i++)
        REQUIRE(a[i] == b[i]);
    return 0;
}
