/*
 * api.c — routes, request validation and response JSON of the OpenAI API
 * (see api.h).
 */
#include "api.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <http_parser.h>

#include "json-writer.h" /* copse__utf8_len */

/* ---------------------------------------------------------------- routing */

const char *copse__api_route_name(copse_api_route r)
{
    switch (r) {
    case COPSE_ROUTE_COMPLETIONS: return "completions";
    case COPSE_ROUTE_CHAT: return "chat_completions";
    case COPSE_ROUTE_MODELS: return "models";
    case COPSE_ROUTE_HEALTH: return "health";
    case COPSE_ROUTE_METRICS: return "metrics";
    default: return "other";
    }
}

int copse__api_route_find(int method, const char *path, size_t len, copse_api_route *route)
{
    static const struct {
        const char *path;
        int method;
        copse_api_route route;
    } table[] = {
        {"/v1/completions", HTTP_POST, COPSE_ROUTE_COMPLETIONS},
        {"/v1/chat/completions", HTTP_POST, COPSE_ROUTE_CHAT},
        {"/v1/models", HTTP_GET, COPSE_ROUTE_MODELS},
        {"/health", HTTP_GET, COPSE_ROUTE_HEALTH},
        {"/metrics", HTTP_GET, COPSE_ROUTE_METRICS},
    };
    *route = COPSE_ROUTE_NONE;
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        if (strlen(table[i].path) != len || memcmp(table[i].path, path, len) != 0)
            continue;
        *route = table[i].route;
        /* HEAD is answered like GET without a body by the caller */
        if (method == table[i].method || (table[i].method == HTTP_GET && method == HTTP_HEAD))
            return 200;
        return 405;
    }
    return 404;
}

/* ---------------------------------------------------------------- errors */

void copse__api_error_set(copse_api_error *e, int status, const char *param, const char *fmt, ...)
{
    e->status = status;
    e->type = status == 404   ? "not_found_error"
              : status == 429 ? "rate_limit_error"
              : status >= 500 ? "server_error"
                              : "invalid_request_error";
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
}

char *copse__api_error_json(const copse_api_error *e)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *o = cJSON_AddObjectToObject(root, "error");
    if (!o)
        goto fail;
    size_t n;
    char *msg = copse__api_utf8_sanitize(e->message, strlen(e->message), &n);
    if (!msg)
        goto fail;
    cJSON_AddStringToObject(o, "message", msg);
    free(msg);
    cJSON_AddStringToObject(o, "type", e->type ? e->type : "invalid_request_error");
    if (e->param[0])
        cJSON_AddStringToObject(o, "param", e->param);
    else
        cJSON_AddNullToObject(o, "param");
    cJSON_AddNullToObject(o, "code");
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
fail:
    cJSON_Delete(root);
    return NULL;
}

/* ---------------------------------------------------------------- field readers */

/* Each returns 1 if the field is present (and valid), 0 if absent or null,
 * -1 after setting *err. */

static const cJSON *field(const cJSON *obj, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    return v && !cJSON_IsNull(v) ? v : NULL;
}

static int get_number(const cJSON *obj, const char *name, double lo, double hi, double *out, copse_api_error *err)
{
    const cJSON *v = field(obj, name);
    if (!v)
        return 0;
    if (!cJSON_IsNumber(v)) {
        copse__api_error_set(err, 400, name, "%s: must be a number", name);
        return -1;
    }
    double x = v->valuedouble;
    if (!isfinite(x) || x < lo || x > hi) {
        copse__api_error_set(err, 400, name, "%s: must be a number in [%g, %g]", name, lo, hi);
        return -1;
    }
    *out = x;
    return 1;
}

static int get_int(const cJSON *obj, const char *name, double lo, double hi, int64_t *out, copse_api_error *err)
{
    const cJSON *v = field(obj, name);
    if (!v)
        return 0;
    double x = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    if (!cJSON_IsNumber(v) || !isfinite(x) || x != floor(x)) {
        copse__api_error_set(err, 400, name, "%s: must be an integer", name);
        return -1;
    }
    if (x < lo || x > hi) {
        copse__api_error_set(err, 400, name, "%s: must be an integer in [%.0f, %.0f]", name, lo, hi);
        return -1;
    }
    *out = (int64_t)x;
    return 1;
}

static int get_bool(const cJSON *obj, const char *name, bool *out, copse_api_error *err)
{
    const cJSON *v = field(obj, name);
    if (!v)
        return 0;
    if (!cJSON_IsBool(v)) {
        copse__api_error_set(err, 400, name, "%s: must be a boolean", name);
        return -1;
    }
    *out = cJSON_IsTrue(v);
    return 1;
}

/* ---------------------------------------------------------------- request parts */

static int parse_stop(const cJSON *root, copse_api_completion *c, copse_api_error *err)
{
    const cJSON *v = field(root, "stop");
    if (!v)
        return 0;
    const cJSON *items[COPSE_API_MAX_STOP];
    int n = 0;
    if (cJSON_IsString(v)) {
        items[n++] = v;
    } else if (cJSON_IsArray(v)) {
        const cJSON *it;
        cJSON_ArrayForEach(it, v)
        {
            if (n == COPSE_API_MAX_STOP) {
                copse__api_error_set(err, 400, "stop", "stop: at most %d stop sequences", COPSE_API_MAX_STOP);
                return -1;
            }
            if (!cJSON_IsString(it)) {
                copse__api_error_set(err, 400, "stop", "stop: every item must be a string");
                return -1;
            }
            items[n++] = it;
        }
    } else {
        copse__api_error_set(err, 400, "stop", "stop: must be a string or an array of strings");
        return -1;
    }
    for (int i = 0; i < n; i++) {
        size_t len = strlen(items[i]->valuestring);
        if (len == 0 || len > COPSE_API_MAX_STOP_LEN) {
            copse__api_error_set(err, 400, "stop", "stop: each stop sequence must have 1 to %d bytes",
                                 COPSE_API_MAX_STOP_LEN);
            return -1;
        }
        c->stop[c->n_stop] = items[i]->valuestring;
        c->stop_len[c->n_stop++] = len;
    }
    return 1;
}

static int parse_speculative(const cJSON *root, const copse_api_limits *lim, copse_api_completion *c,
                             copse_api_error *err)
{
    c->drafters = lim->default_drafters;
    const cJSON *v = field(root, "speculative");
    if (!v)
        return 0;
    if (!cJSON_IsObject(v)) {
        copse__api_error_set(err, 400, "speculative", "speculative: must be an object");
        return -1;
    }
    bool enabled = true;
    if (get_bool(v, "enabled", &enabled, err) < 0) {
        snprintf(err->param, sizeof err->param, "speculative.enabled");
        return -1;
    }
    const cJSON *d = field(v, "drafters");
    if (d) {
        if (!cJSON_IsArray(d)) {
            copse__api_error_set(err, 400, "speculative.drafters",
                                 "speculative.drafters: must be an array of drafter names");
            return -1;
        }
        uint32_t bits = 0;
        const cJSON *it;
        cJSON_ArrayForEach(it, d)
        {
            if (!cJSON_IsString(it)) {
                copse__api_error_set(err, 400, "speculative.drafters",
                                     "speculative.drafters: every item must be a string");
                return -1;
            }
            int32_t k = 0;
            while (k < lim->n_drafters && strcmp(lim->drafters[k], it->valuestring) != 0)
                k++;
            if (k == lim->n_drafters) {
                char avail[160] = "";
                size_t at = 0;
                for (int32_t j = 0; j < lim->n_drafters && at < sizeof avail; j++)
                    at += (size_t)snprintf(avail + at, sizeof avail - at, "%s%s", j ? ", " : "", lim->drafters[j]);
                copse__api_error_set(err, 400, "speculative.drafters",
                                     "speculative.drafters: '%.64s' is not one of this server's drafters (%s)",
                                     it->valuestring, lim->n_drafters ? avail : "none: start with --draft");
                return -1;
            }
            bits |= 1u << k;
        }
        c->drafters = bits;
    }
    if (!enabled)
        c->drafters = 0;
    int64_t nodes;
    int r = get_int(v, "max_nodes", 1, lim->max_nodes > 0 ? lim->max_nodes : 64, &nodes, err);
    if (r < 0) {
        char msg[sizeof err->message];
        snprintf(msg, sizeof msg, "speculative.%.300s", err->message);
        snprintf(err->message, sizeof err->message, "%s", msg);
        snprintf(err->param, sizeof err->param, "speculative.max_nodes");
        return -1;
    }
    if (r > 0)
        c->max_nodes = (int32_t)nodes;
    return 1;
}

static int parse_prompt(const cJSON *root, const copse_api_limits *lim, copse_api_completion *c, copse_api_error *err)
{
    const cJSON *v = field(root, "prompt");
    if (!v) {
        copse__api_error_set(err, 400, "prompt", "prompt: required");
        return -1;
    }
    if (cJSON_IsArray(v) && cJSON_GetArraySize(v) == 1 &&
        (cJSON_IsString(v->child) || cJSON_IsArray(v->child)))
        v = v->child; /* ["text"] or [[ids]]: one prompt */
    if (cJSON_IsString(v)) {
        c->prompt = v->valuestring;
        c->prompt_len = strlen(v->valuestring);
        return 0;
    }
    if (!cJSON_IsArray(v)) {
        copse__api_error_set(err, 400, "prompt", "prompt: must be a string or an array of token ids");
        return -1;
    }
    int n = cJSON_GetArraySize(v);
    if (n == 0) {
        copse__api_error_set(err, 400, "prompt", "prompt: the token array is empty");
        return -1;
    }
    if (n > lim->max_context) {
        copse__api_error_set(err, 400, "prompt", "prompt: %d tokens do not fit the context (%d)", n,
                             lim->max_context);
        return -1;
    }
    c->prompt_tokens = malloc(sizeof *c->prompt_tokens * (size_t)n);
    if (!c->prompt_tokens) {
        copse__api_error_set(err, 503, NULL, "out of memory");
        return -1;
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, v)
    {
        double x = cJSON_IsNumber(it) ? it->valuedouble : -1;
        if (!(x >= 0 && x < lim->n_vocab && x == floor(x))) {
            copse__api_error_set(err, 400, "prompt",
                                 "prompt: must be a string or an array of token ids in [0, %d); only one prompt "
                                 "per request is supported",
                                 lim->n_vocab);
            return -1;
        }
        c->prompt_tokens[c->n_prompt_tokens++] = (copse_token)x;
    }
    return 0;
}

static int parse_messages(const cJSON *root, const copse_api_limits *lim, copse_api_completion *c,
                          copse_api_error *err)
{
    const cJSON *v = field(root, "messages");
    if (!v || !cJSON_IsArray(v) || cJSON_GetArraySize(v) == 0) {
        copse__api_error_set(err, 400, "messages", "messages: required, a non-empty array of messages");
        return -1;
    }
    int n = cJSON_GetArraySize(v);
    if (n > lim->max_messages) {
        copse__api_error_set(err, 400, "messages", "messages: at most %d messages", lim->max_messages);
        return -1;
    }
    c->msgs = calloc((size_t)n, sizeof *c->msgs);
    c->owned = calloc((size_t)n, sizeof *c->owned);
    if (!c->msgs || !c->owned) {
        copse__api_error_set(err, 503, NULL, "out of memory");
        return -1;
    }
    c->n_msgs = n; /* entries fill in below; freed by count */
    const cJSON *m;
    int i = 0;
    cJSON_ArrayForEach(m, v)
    {
        char param[64];
        snprintf(param, sizeof param, "messages[%d]", i);
        if (!cJSON_IsObject(m)) {
            copse__api_error_set(err, 400, param, "%s: must be an object with role and content", param);
            return -1;
        }
        const cJSON *role = field(m, "role");
        const char *r = cJSON_IsString(role) ? role->valuestring : "";
        if (!strcmp(r, "developer"))
            r = "system";
        if (strcmp(r, "system") != 0 && strcmp(r, "user") != 0 && strcmp(r, "assistant") != 0) {
            snprintf(param, sizeof param, "messages[%d].role", i);
            copse__api_error_set(err, 400, param, "%s: must be \"system\", \"user\" or \"assistant\"", param);
            return -1;
        }
        const cJSON *content = field(m, "content");
        snprintf(param, sizeof param, "messages[%d].content", i);
        const char *text = NULL;
        if (!content && !strcmp(r, "assistant")) {
            text = "";
        } else if (cJSON_IsString(content)) {
            text = content->valuestring;
        } else if (cJSON_IsArray(content)) {
            /* content parts: only {"type": "text", "text": "..."} */
            size_t total = 0;
            const cJSON *part;
            cJSON_ArrayForEach(part, content)
            {
                const cJSON *type = field(part, "type");
                const cJSON *t = field(part, "text");
                if (!cJSON_IsString(type) || strcmp(type->valuestring, "text") != 0 || !cJSON_IsString(t)) {
                    copse__api_error_set(err, 400, param, "%s: only text parts ({\"type\": \"text\", \"text\": ...}) are supported",
                                         param);
                    return -1;
                }
                total += strlen(t->valuestring);
            }
            char *joined = malloc(total + 1);
            if (!joined) {
                copse__api_error_set(err, 503, NULL, "out of memory");
                return -1;
            }
            size_t at = 0;
            cJSON_ArrayForEach(part, content)
            {
                const char *t = field(part, "text")->valuestring;
                size_t k = strlen(t);
                memcpy(joined + at, t, k);
                at += k;
            }
            joined[at] = 0;
            c->owned[i] = joined;
            text = joined;
        } else {
            copse__api_error_set(err, 400, param, "%s: must be a string or an array of text parts", param);
            return -1;
        }
        c->msgs[i] = (copse_chat_msg){.role = r, .content = text};
        i++;
    }
    return 0;
}

/* ---------------------------------------------------------------- the request */

void copse__api_completion_free(copse_api_completion *c)
{
    if (!c)
        return;
    if (c->owned)
        for (int32_t i = 0; i < c->n_msgs; i++)
            free(c->owned[i]);
    free(c->owned);
    free(c->msgs);
    free(c->prompt_tokens);
    cJSON_Delete(c->root);
    memset(c, 0, sizeof *c);
}

static int check_utf8(const char *s, size_t len, copse_api_error *err)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        if (p[i] == 0) {
            copse__api_error_set(err, 400, NULL, "the request body contains a NUL byte at offset %zu", i);
            return -1;
        }
        size_t k = copse__utf8_len(p + i, len - i);
        if (k == 0) {
            copse__api_error_set(err, 400, NULL, "the request body is not valid UTF-8 (byte offset %zu)", i);
            return -1;
        }
        i += k;
    }
    return 0;
}

static int parse_body(const char *body, size_t len, bool chat, const copse_api_limits *lim, copse_api_completion *c,
                      copse_api_error *err)
{
    if (len == 0) {
        copse__api_error_set(err, 400, NULL, "the request body is empty; expected a JSON object");
        return -1;
    }
    if (check_utf8(body, len, err))
        return -1;
    const char *end = NULL;
    c->root = cJSON_ParseWithLengthOpts(body, len, &end, false);
    if (!c->root) {
        const char *at = cJSON_GetErrorPtr();
        size_t off = at && at >= body && at <= body + len ? (size_t)(at - body) : 0;
        copse__api_error_set(err, 400, NULL, "the request body is not valid JSON (near byte %zu)", off);
        return -1;
    }
    for (const char *p = end; p && p < body + len; p++)
        if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n') {
            copse__api_error_set(err, 400, NULL, "the request body has data after the JSON value (byte %zu)",
                                 (size_t)(p - body));
            return -1;
        }
    const cJSON *root = c->root;
    if (!cJSON_IsObject(root)) {
        copse__api_error_set(err, 400, NULL, "the request body must be a JSON object");
        return -1;
    }

    const cJSON *model = field(root, "model");
    if (model && !cJSON_IsString(model)) {
        copse__api_error_set(err, 400, "model", "model: must be a string");
        return -1;
    }
    if (chat ? parse_messages(root, lim, c, err) : parse_prompt(root, lim, c, err))
        return -1;

    if (get_bool(root, "stream", &c->stream, err) < 0)
        return -1;
    const cJSON *so = field(root, "stream_options");
    if (so) {
        if (!cJSON_IsObject(so)) {
            copse__api_error_set(err, 400, "stream_options", "stream_options: must be an object");
            return -1;
        }
        if (get_bool(so, "include_usage", &c->include_usage, err) < 0) {
            snprintf(err->param, sizeof err->param, "stream_options.include_usage");
            return -1;
        }
    }

    int64_t i64;
    double d;
    int r;
    c->max_tokens = chat ? 256 : 16;
    const int max_new = lim->max_context > 1 ? lim->max_context : 1;
    if ((r = get_int(root, "max_tokens", 1, max_new, &i64, err)) < 0)
        return -1;
    if (r)
        c->max_tokens = (int32_t)i64;
    if (chat) {
        if ((r = get_int(root, "max_completion_tokens", 1, max_new, &i64, err)) < 0)
            return -1;
        if (r)
            c->max_tokens = (int32_t)i64;
    }

    copse_sampling_params *sp = &c->sampling;
    *sp = copse__sampling_default_params();
    if ((r = get_number(root, "temperature", 0, 2, &d, err)) < 0)
        return -1;
    sp->temperature = r ? (float)d : 1.0f;
    if ((r = get_number(root, "top_p", 0, 1, &d, err)) < 0)
        return -1;
    if (r && d <= 0) {
        copse__api_error_set(err, 400, "top_p", "top_p: must be in (0, 1]");
        return -1;
    }
    if (r)
        sp->top_p = (float)d;
    if ((r = get_int(root, "top_k", -1, 1 << 30, &i64, err)) < 0)
        return -1;
    if (r)
        sp->top_k = i64 < 0 ? 0 : (int32_t)i64;
    if ((r = get_number(root, "min_p", 0, 1, &d, err)) < 0)
        return -1;
    if (r)
        sp->min_p = (float)d;
    if ((r = get_number(root, "frequency_penalty", -2, 2, &d, err)) < 0)
        return -1;
    if (r)
        sp->frequency_penalty = (float)d;
    if ((r = get_number(root, "presence_penalty", -2, 2, &d, err)) < 0)
        return -1;
    if (r)
        sp->presence_penalty = (float)d;
    if ((r = get_number(root, "repetition_penalty", 0.01, 10, &d, err)) < 0)
        return -1;
    if (r)
        sp->repetition_penalty = (float)d;
    if ((r = get_int(root, "seed", -9007199254740992.0, 9007199254740992.0, &i64, err)) < 0)
        return -1;
    if (r) {
        sp->seed = (uint64_t)i64;
        c->seed_given = true;
    }

    if ((r = get_int(root, "n", 1, 1, &i64, err)) < 0) {
        copse__api_error_set(err, 400, "n", "n: only n = 1 is supported");
        return -1;
    }
    if ((r = get_int(root, "best_of", 1, 1, &i64, err)) < 0) {
        copse__api_error_set(err, 400, "best_of", "best_of: only best_of = 1 is supported");
        return -1;
    }
    bool echo = false;
    if (get_bool(root, "echo", &echo, err) < 0)
        return -1;
    if (echo) {
        copse__api_error_set(err, 400, "echo", "echo: not supported");
        return -1;
    }
    if (field(root, "suffix")) {
        copse__api_error_set(err, 400, "suffix", "suffix: not supported");
        return -1;
    }
    const cJSON *tools = field(root, "tools");
    if (tools && !(cJSON_IsArray(tools) && cJSON_GetArraySize(tools) == 0)) {
        copse__api_error_set(err, 400, "tools", "tools: not supported");
        return -1;
    }
    if (parse_stop(root, c, err) < 0)
        return -1;

    if (chat) {
        bool lp = false;
        if (get_bool(root, "logprobs", &lp, err) < 0)
            return -1;
        if ((r = get_int(root, "top_logprobs", 0, COPSE_API_MAX_LOGPROBS, &i64, err)) < 0)
            return -1;
        c->want_logprobs = lp;
        c->logprobs = lp ? (r ? (int32_t)i64 : 0) : 0;
        if (r && !lp && i64 > 0) {
            copse__api_error_set(err, 400, "top_logprobs", "top_logprobs: needs logprobs = true");
            return -1;
        }
    } else {
        if ((r = get_int(root, "logprobs", 0, COPSE_API_MAX_LOGPROBS, &i64, err)) < 0)
            return -1;
        c->want_logprobs = r > 0;
        c->logprobs = r ? (int32_t)i64 : 0;
    }
    if (parse_speculative(root, lim, c, err) < 0)
        return -1;
    return 0;
}

int copse__api_completion_parse(const char *body, size_t len, bool chat, const copse_api_limits *lim,
                                copse_api_completion *out, copse_api_error *err)
{
    memset(out, 0, sizeof *out);
    memset(err, 0, sizeof *err);
    out->chat = chat;
    if (parse_body(body, len, chat, lim, out, err) != 0) {
        copse__api_completion_free(out);
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- responses */

char *copse__api_utf8_sanitize(const char *s, size_t len, size_t *out_len)
{
    char *o = malloc(len * 3 + 1);
    if (!o)
        return NULL;
    size_t at = 0;
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        size_t k = p[i] ? copse__utf8_len(p + i, len - i) : 0;
        if (k == 0) {
            memcpy(o + at, "\xef\xbf\xbd", 3);
            at += 3;
            i++;
        } else {
            memcpy(o + at, p + i, k);
            at += k;
            i += k;
        }
    }
    o[at] = 0;
    if (out_len)
        *out_len = at;
    return o;
}

static void add_usage(cJSON *root, const copse_api_result *r)
{
    cJSON *u = cJSON_AddObjectToObject(root, "usage");
    if (!u)
        return;
    cJSON_AddNumberToObject(u, "prompt_tokens", r->prompt_tokens);
    cJSON_AddNumberToObject(u, "completion_tokens", r->completion_tokens);
    cJSON_AddNumberToObject(u, "total_tokens", (double)r->prompt_tokens + r->completion_tokens);
}

static cJSON *response_head(bool chat, bool chunk, const copse_api_result *r)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "id", r->id);
    cJSON_AddStringToObject(root, "object",
                            chat ? (chunk ? "chat.completion.chunk" : "chat.completion") : "text_completion");
    cJSON_AddNumberToObject(root, "created", (double)r->created);
    cJSON_AddStringToObject(root, "model", r->model);
    cJSON_AddNullToObject(root, "system_fingerprint");
    return root;
}

static char *finish_json(cJSON *root, const copse_api_result *r)
{
    if (r->usage)
        add_usage(root, r);
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

static cJSON *text_item(const char *text, size_t len)
{
    char *t = copse__api_utf8_sanitize(text ? text : "", text ? len : 0, NULL);
    if (!t)
        return NULL;
    cJSON *s = cJSON_CreateString(t);
    free(t);
    return s;
}

static void add_logprobs(cJSON *choice, bool chat, cJSON *logprobs)
{
    if (!logprobs) {
        cJSON_AddNullToObject(choice, "logprobs");
        return;
    }
    if (chat) {
        cJSON *o = cJSON_AddObjectToObject(choice, "logprobs");
        if (o)
            cJSON_AddItemToObject(o, "content", logprobs);
        else
            cJSON_Delete(logprobs);
    } else {
        cJSON_AddItemToObject(choice, "logprobs", logprobs);
    }
}

char *copse__api_response_json(bool chat, const copse_api_result *r, const char *text, size_t len, cJSON *logprobs)
{
    cJSON *root = response_head(chat, false, r);
    cJSON *choices = cJSON_AddArrayToObject(root, "choices");
    cJSON *choice = cJSON_CreateObject();
    cJSON_AddItemToArray(choices, choice);
    cJSON_AddNumberToObject(choice, "index", 0);
    cJSON *t = text_item(text, len);
    if (!t) {
        cJSON_Delete(logprobs);
        cJSON_Delete(root);
        return NULL;
    }
    if (chat) {
        cJSON *m = cJSON_AddObjectToObject(choice, "message");
        cJSON_AddStringToObject(m, "role", "assistant");
        cJSON_AddItemToObject(m, "content", t);
    } else {
        cJSON_AddItemToObject(choice, "text", t);
    }
    add_logprobs(choice, chat, logprobs);
    cJSON_AddStringToObject(choice, "finish_reason", r->finish ? r->finish : "stop");
    return finish_json(root, r);
}

char *copse__api_chunk_json(bool chat, const copse_api_result *r, const char *text, size_t len, bool first,
                            cJSON *logprobs)
{
    cJSON *root = response_head(chat, true, r);
    cJSON *choices = cJSON_AddArrayToObject(root, "choices");
    cJSON *choice = cJSON_CreateObject();
    cJSON_AddItemToArray(choices, choice);
    cJSON_AddNumberToObject(choice, "index", 0);
    cJSON *t = NULL;
    if (!chat || len || first) {
        t = text_item(text, len);
        if (!t) {
            cJSON_Delete(logprobs);
            cJSON_Delete(root);
            return NULL;
        }
    }
    if (chat) {
        cJSON *delta = cJSON_AddObjectToObject(choice, "delta");
        if (first)
            cJSON_AddStringToObject(delta, "role", "assistant");
        if (t)
            cJSON_AddItemToObject(delta, "content", t);
    } else {
        cJSON_AddItemToObject(choice, "text", t);
    }
    add_logprobs(choice, chat, logprobs);
    if (r->finish)
        cJSON_AddStringToObject(choice, "finish_reason", r->finish);
    else
        cJSON_AddNullToObject(choice, "finish_reason");
    return finish_json(root, r);
}

char *copse__api_models_json(const char *model, int64_t created)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(root, "data");
    cJSON *m = cJSON_CreateObject();
    cJSON_AddItemToArray(data, m);
    cJSON_AddStringToObject(m, "id", model);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", (double)created);
    cJSON_AddStringToObject(m, "owned_by", "copse");
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}
