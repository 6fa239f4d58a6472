/*
 * test-server.c — the server's pure parts: HTTP request parsing with limits
 * (whole, byte by byte, pipelined, chunked), routing, request validation
 * into engine parameters, response and error JSON, SSE framing, metrics.
 */
#include <http_parser.h>

#include "api.h"
#include "http-parse.h"
#include "metrics.h"
#include "sse.h"
#include "test.h"

/* ---------------------------------------------------------------- HTTP parsing */

typedef struct parsed {
    int n_requests;
    int method[8];
    char path[8][64];
    char body[8][256];
    size_t body_len[8];
    bool keep_alive[8];
    int error; /* HTTP status of an error, 0 if none */
} parsed;

/* Feed data in pieces of `step` bytes (0: whole), collecting requests. */
static parsed parse_all(const char *data, size_t len, size_t step, const copse_http_limits *lim)
{
    parsed out;
    memset(&out, 0, sizeof out);
    copse_http_parser hp;
    copse__http_parser_init(&hp, lim);
    /* the connection layer keeps unparsed bytes; emulate it with an input window */
    size_t fed = 0, at = 0;
    while (at < len || fed < len) {
        if (step == 0)
            fed = len;
        else if (fed < len)
            fed = fed + step < len ? fed + step : len;
        bool progress = true;
        while (at < fed && progress) {
            size_t used = 0;
            copse_http_result r = copse__http_parser_feed(&hp, data + at, fed - at, &used);
            at += used;
            if (r == COPSE_HTTP_ERROR) {
                out.error = hp.err_status;
                copse__http_parser_free(&hp);
                return out;
            }
            if (r == COPSE_HTTP_REQUEST) {
                int i = out.n_requests++;
                if (i < 8) {
                    const char *p;
                    size_t pl;
                    copse__http_request_path(&hp, &p, &pl);
                    snprintf(out.path[i], sizeof out.path[i], "%.*s", (int)pl, p);
                    out.method[i] = hp.method;
                    out.body_len[i] = hp.body_len;
                    memcpy(out.body[i], hp.body ? hp.body : "", hp.body_len < 255 ? hp.body_len : 255);
                    out.keep_alive[i] = hp.keep_alive;
                }
                copse__http_parser_reset(&hp);
            } else {
                progress = used > 0;
            }
        }
        if (fed == len && at < len && !progress)
            break;
    }
    copse__http_parser_free(&hp);
    return out;
}

static void test_http_basic(void)
{
    const char *req = "POST /v1/completions?x=1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      "Content-Length: 13\r\n\r\n{\"prompt\":\"a\"}";
    /* 14 body bytes follow but Content-Length says 13: the 14th starts a next request */
    const char *good = "POST /v1/completions?x=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 14\r\n\r\n{\"prompt\":\"a\"}";
    for (size_t step = 0; step <= 7; step++) {
        parsed p = parse_all(good, strlen(good), step, NULL);
        CHECK_INT_EQ(p.n_requests, 1);
        CHECK_INT_EQ(p.error, 0);
        CHECK_STR_EQ(p.path[0], "/v1/completions");
        CHECK_INT_EQ(p.method[0], HTTP_POST);
        CHECK_INT_EQ(p.body_len[0], 14);
        CHECK_STR_EQ(p.body[0], "{\"prompt\":\"a\"}");
        CHECK(p.keep_alive[0]);
    }
    parsed p = parse_all(req, strlen(req), 0, NULL);
    CHECK_INT_EQ(p.n_requests, 1);
    CHECK_INT_EQ(p.error, 400); /* "}" is not a request line */
}

static void test_http_pipelined(void)
{
    const char *reqs = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
                       "POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"
                       "GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n";
    for (size_t step = 0; step <= 5; step++) {
        parsed p = parse_all(reqs, strlen(reqs), step, NULL);
        CHECK_INT_EQ(p.error, 0);
        CHECK_INT_EQ(p.n_requests, 3);
        CHECK_STR_EQ(p.path[0], "/health");
        CHECK_STR_EQ(p.path[1], "/v1/chat/completions");
        CHECK_STR_EQ(p.body[1], "{}");
        CHECK_STR_EQ(p.path[2], "/metrics");
        CHECK(p.keep_alive[0] && p.keep_alive[1]);
        CHECK(!p.keep_alive[2]);
    }
}

static void test_http_chunked(void)
{
    const char *req = "POST /v1/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "4\r\n{\"pr\r\n6\r\nompt\":\r\n4\r\n\"a\"}\r\n0\r\n\r\n";
    for (size_t step = 0; step <= 3; step++) {
        parsed p = parse_all(req, strlen(req), step, NULL);
        CHECK_INT_EQ(p.error, 0);
        CHECK_INT_EQ(p.n_requests, 1);
        CHECK_STR_EQ(p.body[0], "{\"prompt\":\"a\"}");
    }
    /* chunks adding up past the body limit */
    copse_http_limits lim = copse__http_default_limits();
    lim.max_body_bytes = 8;
    parsed p = parse_all(req, strlen(req), 0, &lim);
    CHECK_INT_EQ(p.error, 413);
}

static void test_http_limits(void)
{
    copse_http_limits lim = copse__http_default_limits();
    lim.max_body_bytes = 100;
    lim.max_header_bytes = 200;
    lim.max_headers = 4;
    const char *big_body = "POST /v1/completions HTTP/1.1\r\nContent-Length: 101\r\n\r\n";
    CHECK_INT_EQ(parse_all(big_body, strlen(big_body), 0, &lim).error, 413);
    const char *huge_cl = "POST /v1/completions HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n";
    CHECK_INT_EQ(parse_all(huge_cl, strlen(huge_cl), 0, &lim).error, 400);
    const char *no_len = "POST /v1/completions HTTP/1.1\r\nHost: x\r\n\r\n";
    CHECK_INT_EQ(parse_all(no_len, strlen(no_len), 0, &lim).error, 411);
    const char *neg = "POST /v1/completions HTTP/1.1\r\nContent-Length: -5\r\n\r\n";
    CHECK_INT_EQ(parse_all(neg, strlen(neg), 0, &lim).error, 400);
    const char *two = "POST /v1/completions HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}";
    CHECK_INT_EQ(parse_all(two, strlen(two), 0, &lim).error, 400);
    const char *many = "GET /health HTTP/1.1\r\na: 1\r\nb: 2\r\nc: 3\r\nd: 4\r\ne: 5\r\n\r\n";
    CHECK_INT_EQ(parse_all(many, strlen(many), 0, &lim).error, 431);
    char longhdr[512];
    snprintf(longhdr, sizeof longhdr, "GET /health HTTP/1.1\r\nX-Long: %0300d\r\n\r\n", 0);
    for (size_t step = 0; step <= 2; step++)
        CHECK_INT_EQ(parse_all(longhdr, strlen(longhdr), step, &lim).error, 431);
    char longurl[512];
    snprintf(longurl, sizeof longurl, "GET /%0300d HTTP/1.1\r\n\r\n", 0);
    CHECK_INT_EQ(parse_all(longurl, strlen(longurl), 1, &lim).error, 431);
    const char *garbage = "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";
    CHECK_INT_EQ(parse_all(garbage, strlen(garbage), 0, &lim).error, 400);
    const char *upgrade = "GET /health HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
    CHECK_INT_EQ(parse_all(upgrade, strlen(upgrade), 0, &lim).error, 400);
    const char *expect = "POST /v1/completions HTTP/1.1\r\nContent-Length: 2\r\nExpect: 200-ok\r\n\r\n{}";
    CHECK_INT_EQ(parse_all(expect, strlen(expect), 0, &lim).error, 417);
    /* HTTP/1.0 without keep-alive: close after the response */
    const char *old = "GET /health HTTP/1.0\r\n\r\n";
    parsed p = parse_all(old, strlen(old), 0, &lim);
    CHECK_INT_EQ(p.n_requests, 1);
    CHECK(!p.keep_alive[0]);
}

/* ---------------------------------------------------------------- routing */

static void test_routes(void)
{
    copse_api_route r;
    CHECK_INT_EQ(copse__api_route_find(HTTP_POST, "/v1/completions", 15, &r), 200);
    CHECK_INT_EQ(r, COPSE_ROUTE_COMPLETIONS);
    CHECK_INT_EQ(copse__api_route_find(HTTP_GET, "/v1/completions", 15, &r), 405);
    CHECK_INT_EQ(copse__api_route_find(HTTP_POST, "/v1/chat/completions", 20, &r), 200);
    CHECK_INT_EQ(r, COPSE_ROUTE_CHAT);
    CHECK_INT_EQ(copse__api_route_find(HTTP_GET, "/v1/models", 10, &r), 200);
    CHECK_INT_EQ(copse__api_route_find(HTTP_HEAD, "/health", 7, &r), 200);
    CHECK_INT_EQ(copse__api_route_find(HTTP_DELETE, "/metrics", 8, &r), 405);
    CHECK_INT_EQ(copse__api_route_find(HTTP_GET, "/v1/completion", 14, &r), 404);
    CHECK_INT_EQ(copse__api_route_find(HTTP_GET, "/v1/completionsX", 16, &r), 404);
    CHECK_INT_EQ(copse__api_route_find(HTTP_GET, "", 0, &r), 404);
}

/* ---------------------------------------------------------------- validation */

static const char *const drafters[] = {"ngram", "suffix"};

static copse_api_limits limits(void)
{
    return (copse_api_limits){.n_vocab = 1000,
                              .max_context = 2048,
                              .drafters = drafters,
                              .n_drafters = 2,
                              .default_drafters = 3,
                              .max_nodes = 64,
                              .max_messages = 8};
}

/* Expect a 400 naming `param` ("" for none). */
static void bad(bool chat, const char *body, const char *param)
{
    copse_api_limits lim = limits();
    copse_api_completion c;
    copse_api_error e;
    int rc = copse__api_completion_parse(body, strlen(body), chat, &lim, &c, &e);
    CHECK_INT_EQ(rc, -1);
    CHECK_INT_EQ(e.status, 400);
    if (strcmp(e.param, param) != 0 || !e.message[0])
        fprintf(stderr, "  body %s: param '%s' message '%s'\n", body, e.param, e.message);
    CHECK_STR_EQ(e.param, param);
    char *j = copse__api_error_json(&e);
    CHECK(j && strstr(j, "\"error\":{\"message\":"));
    free(j);
}

static void test_validation_errors(void)
{
    bad(false, "", "");
    bad(false, "{", "");
    bad(false, "[]", "");
    bad(false, "{} x", "");
    bad(false, "{\"prompt\": \"a\xff\"}", "");
    bad(false, "{\"prompt\": \"a\xc0\x80\"}", "");
    bad(false, "{\"prompt\": \"\\ud800\"}", "");
    bad(false, "{}", "prompt");
    bad(false, "{\"prompt\": 5}", "prompt");
    bad(false, "{\"prompt\": []}", "prompt");
    bad(false, "{\"prompt\": [1, 2, 1000]}", "prompt");
    bad(false, "{\"prompt\": [1, -1]}", "prompt");
    bad(false, "{\"prompt\": [1.5]}", "prompt");
    bad(false, "{\"prompt\": [\"a\", \"b\"]}", "prompt");
    bad(false, "{\"prompt\": \"a\", \"model\": 3}", "model");
    bad(false, "{\"prompt\": \"a\", \"max_tokens\": -1}", "max_tokens");
    bad(false, "{\"prompt\": \"a\", \"max_tokens\": 0}", "max_tokens");
    bad(false, "{\"prompt\": \"a\", \"max_tokens\": 1e300}", "max_tokens");
    bad(false, "{\"prompt\": \"a\", \"max_tokens\": 1e999}", "max_tokens");
    bad(false, "{\"prompt\": \"a\", \"max_tokens\": \"5\"}", "max_tokens");
    bad(false, "{\"prompt\": \"a\", \"max_tokens\": 2.5}", "max_tokens");
    bad(false, "{\"prompt\": \"a\", \"temperature\": -0.1}", "temperature");
    bad(false, "{\"prompt\": \"a\", \"temperature\": \"hot\"}", "temperature");
    bad(false, "{\"prompt\": \"a\", \"top_p\": 0}", "top_p");
    bad(false, "{\"prompt\": \"a\", \"top_p\": 1.5}", "top_p");
    bad(false, "{\"prompt\": \"a\", \"top_k\": 1.5}", "top_k");
    bad(false, "{\"prompt\": \"a\", \"min_p\": 2}", "min_p");
    bad(false, "{\"prompt\": \"a\", \"seed\": 1e30}", "seed");
    bad(false, "{\"prompt\": \"a\", \"stream\": 1}", "stream");
    bad(false, "{\"prompt\": \"a\", \"n\": 2}", "n");
    bad(false, "{\"prompt\": \"a\", \"stop\": 5}", "stop");
    bad(false, "{\"prompt\": \"a\", \"stop\": [\"a\", 1]}", "stop");
    bad(false, "{\"prompt\": \"a\", \"stop\": [\"a\", \"b\", \"c\", \"d\", \"e\"]}", "stop");
    bad(false, "{\"prompt\": \"a\", \"stop\": \"\"}", "stop");
    bad(false, "{\"prompt\": \"a\", \"logprobs\": 6}", "logprobs");
    bad(false, "{\"prompt\": \"a\", \"echo\": true}", "echo");
    bad(false, "{\"prompt\": \"a\", \"speculative\": true}", "speculative");
    bad(false, "{\"prompt\": \"a\", \"speculative\": {\"enabled\": 1}}", "speculative.enabled");
    bad(false, "{\"prompt\": \"a\", \"speculative\": {\"drafters\": [\"eagle\"]}}", "speculative.drafters");
    bad(false, "{\"prompt\": \"a\", \"speculative\": {\"drafters\": \"ngram\"}}", "speculative.drafters");
    bad(false, "{\"prompt\": \"a\", \"speculative\": {\"max_nodes\": 0}}", "speculative.max_nodes");
    bad(false, "{\"prompt\": \"a\", \"speculative\": {\"max_nodes\": 65}}", "speculative.max_nodes");
    bad(true, "{\"prompt\": \"a\"}", "messages");
    bad(true, "{\"messages\": []}", "messages");
    bad(true, "{\"messages\": {}}", "messages");
    bad(true, "{\"messages\": [1]}", "messages[0]");
    bad(true, "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"tool\", \"content\": \"b\"}]}",
        "messages[1].role");
    bad(true, "{\"messages\": [{\"role\": \"user\"}]}", "messages[0].content");
    bad(true, "{\"messages\": [{\"role\": \"user\", \"content\": 7}]}", "messages[0].content");
    bad(true, "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image_url\"}]}]}", "messages[0].content");
    bad(true, "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}], \"top_logprobs\": 3}", "top_logprobs");
    bad(true, "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}], \"logprobs\": 1}", "logprobs");
    bad(true, "{\"messages\": [1,2,3,4,5,6,7,8,9]}", "messages");
    /* deep nesting stops in cJSON, not on the stack */
    char deep[4200];
    memset(deep, '[', 4100);
    deep[4100] = 0;
    bad(false, deep, "");
}

static void test_validation_good(void)
{
    copse_api_limits lim = limits();
    copse_api_completion c;
    copse_api_error e;
    const char *body = "{\"model\": \"m\", \"prompt\": \"Hello\", \"max_tokens\": 7, \"temperature\": 0.5, "
                       "\"top_p\": 0.9, \"top_k\": 40, \"min_p\": 0.1, \"seed\": 42, \"stop\": [\"\\n\", \"END\"], "
                       "\"n\": 1, \"logprobs\": 3, \"stream\": true, \"stream_options\": {\"include_usage\": true}, "
                       "\"speculative\": {\"enabled\": true, \"drafters\": [\"suffix\"], \"max_nodes\": 12}, "
                       "\"user\": \"ignored\", \"unknown_field\": [1, 2]}";
    CHECK_INT_EQ(copse__api_completion_parse(body, strlen(body), false, &lim, &c, &e), 0);
    CHECK(!c.chat && c.stream && c.include_usage);
    CHECK_INT_EQ(c.prompt_len, 5);
    CHECK(c.prompt && !memcmp(c.prompt, "Hello", 5));
    CHECK_INT_EQ(c.max_tokens, 7);
    CHECK(c.sampling.temperature == 0.5f && c.sampling.top_p == 0.9f && c.sampling.min_p == 0.1f);
    CHECK_INT_EQ(c.sampling.top_k, 40);
    CHECK_INT_EQ(c.sampling.seed, 42);
    CHECK(c.seed_given);
    CHECK_INT_EQ(c.n_stop, 2);
    CHECK_STR_EQ(c.stop[0], "\n");
    CHECK_STR_EQ(c.stop[1], "END");
    CHECK(c.want_logprobs);
    CHECK_INT_EQ(c.logprobs, 3);
    CHECK_INT_EQ(c.drafters, 2);
    CHECK_INT_EQ(c.max_nodes, 12);
    copse__api_completion_free(&c);

    /* defaults; speculation off; tokens as the prompt */
    body = "{\"prompt\": [[1, 2, 999]], \"speculative\": {\"enabled\": false}, \"temperature\": null}";
    CHECK_INT_EQ(copse__api_completion_parse(body, strlen(body), false, &lim, &c, &e), 0);
    CHECK_INT_EQ(c.n_prompt_tokens, 3);
    CHECK(c.prompt_tokens && c.prompt_tokens[2] == 999);
    CHECK_INT_EQ(c.max_tokens, 16);
    CHECK(c.sampling.temperature == 1.0f);
    CHECK(!c.seed_given && !c.stream && !c.want_logprobs);
    CHECK_INT_EQ(c.drafters, 0);
    copse__api_completion_free(&c);

    body = "{\"prompt\": \"x\"}";
    CHECK_INT_EQ(copse__api_completion_parse(body, strlen(body), false, &lim, &c, &e), 0);
    CHECK_INT_EQ(c.drafters, 3); /* the server's default: all */
    copse__api_completion_free(&c);

    body = "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, "
           "{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"Hi \"}, {\"type\": \"text\", \"text\": \"there\"}]}, "
           "{\"role\": \"assistant\", \"content\": null}, {\"role\": \"developer\", \"content\": \"x\"}], "
           "\"max_completion_tokens\": 5, \"logprobs\": true, \"top_logprobs\": 2, \"stop\": \"!\"}";
    CHECK_INT_EQ(copse__api_completion_parse(body, strlen(body), true, &lim, &c, &e), 0);
    CHECK(c.chat);
    CHECK_INT_EQ(c.n_msgs, 4);
    CHECK_STR_EQ(c.msgs[0].role, "system");
    CHECK_STR_EQ(c.msgs[1].content, "Hi there");
    CHECK_STR_EQ(c.msgs[2].content, "");
    CHECK_STR_EQ(c.msgs[3].role, "system");
    CHECK_INT_EQ(c.max_tokens, 5);
    CHECK(c.want_logprobs);
    CHECK_INT_EQ(c.logprobs, 2);
    CHECK_INT_EQ(c.n_stop, 1);
    copse__api_completion_free(&c);
}

/* ---------------------------------------------------------------- responses */

static void test_responses(void)
{
    copse_api_result r = {.id = "cmpl-1", .model = "m", .created = 5, .finish = "length",
                          .prompt_tokens = 3, .completion_tokens = 2, .usage = true};
    char *j = copse__api_response_json(false, &r, "a\"b\n\xff", 5, NULL);
    CHECK_STR_EQ(j, "{\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":5,\"model\":\"m\","
                    "\"system_fingerprint\":null,\"choices\":[{\"index\":0,\"text\":\"a\\\"b\\n\xef\xbf\xbd\","
                    "\"logprobs\":null,\"finish_reason\":\"length\"}],"
                    "\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}");
    free(j);
    r.finish = NULL;
    r.usage = false;
    j = copse__api_chunk_json(true, &r, "", 0, true, NULL);
    CHECK(j && strstr(j, "\"object\":\"chat.completion.chunk\"") &&
          strstr(j, "\"delta\":{\"role\":\"assistant\",\"content\":\"\"}") && strstr(j, "\"finish_reason\":null"));
    free(j);
    r.finish = "stop";
    j = copse__api_chunk_json(true, &r, "", 0, false, NULL);
    CHECK(j && strstr(j, "\"delta\":{}") && strstr(j, "\"finish_reason\":\"stop\""));
    free(j);
    j = copse__api_models_json("m", 7);
    CHECK_STR_EQ(j, "{\"object\":\"list\",\"data\":[{\"id\":\"m\",\"object\":\"model\",\"created\":7,\"owned_by\":\"copse\"}]}");
    free(j);
    copse_api_error e;
    copse__api_error_set(&e, 404, NULL, "no route for %s", "GET /x");
    j = copse__api_error_json(&e);
    CHECK_STR_EQ(j, "{\"error\":{\"message\":\"no route for GET /x\",\"type\":\"not_found_error\",\"param\":null,\"code\":null}}");
    free(j);
    size_t len;
    char *ev = copse__sse_event("{}", &len);
    CHECK_STR_EQ(ev, "data: {}\n\n");
    CHECK_INT_EQ(len, 10);
    free(ev);
    CHECK_STR_EQ(copse__sse_done(&len), "data: [DONE]\n\n");
}

static void test_metrics(void)
{
    copse_metrics m;
    copse__metrics_init(&m);
    copse__metrics_request(&m, COPSE_ROUTE_CHAT, 200);
    copse__metrics_request(&m, COPSE_ROUTE_CHAT, 200);
    copse__metrics_request(&m, COPSE_ROUTE_NONE, 404);
    copse__histogram_observe(&m.ttft, 0.03, 1);
    copse__histogram_observe(&m.ttft, 100, 2);
    copse_metrics_engine e;
    memset(&e, 0, sizeof e);
    e.kv_blocks_free = 10;
    e.kv_blocks_total = 12;
    e.kv_blocks_used = 2;
    e.n_drafters = 1;
    snprintf(e.drafters[0].name, sizeof e.drafters[0].name, "model:\"x\".gguf");
    e.drafters[0].steps = 4;
    e.drafters[0].accepted = 6;
    size_t len;
    char *t = copse__metrics_render(&m, &e, &len);
    CHECK(t != NULL);
    if (!t)
        return;
    CHECK_INT_EQ(strlen(t), len);
    CHECK(strstr(t, "copse_requests_total{route=\"chat_completions\",status=\"200\"} 2\n"));
    CHECK(strstr(t, "copse_requests_total{route=\"other\",status=\"404\"} 1\n"));
    CHECK(strstr(t, "copse_time_to_first_token_seconds_bucket{le=\"0.025\"} 0\n"));
    CHECK(strstr(t, "copse_time_to_first_token_seconds_bucket{le=\"0.05\"} 1\n"));
    CHECK(strstr(t, "copse_time_to_first_token_seconds_bucket{le=\"60\"} 1\n"));
    CHECK(strstr(t, "copse_time_to_first_token_seconds_bucket{le=\"+Inf\"} 3\n"));
    CHECK(strstr(t, "copse_time_to_first_token_seconds_count 3\n"));
    CHECK(strstr(t, "copse_kv_blocks_free 10\n"));
    CHECK(strstr(t, "copse_drafter_mean_accepted_length{drafter=\"model:\\\"x\\\".gguf\"} 1.5\n"));
    free(t);
}

int main(void)
{
    test_http_basic();
    test_http_pipelined();
    test_http_chunked();
    test_http_limits();
    test_routes();
    test_validation_errors();
    test_validation_good();
    test_responses();
    test_metrics();
    return test_exit();
}
