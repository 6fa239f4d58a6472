/*
 * api.h — the OpenAI-compatible API: routing, request validation and the
 * JSON of responses and errors (internal). No I/O and no engine: the
 * fuzz target runs parse -> route -> validation through these functions.
 *
 * Requests are validated into a copse_api_completion, whose strings point
 * into the parsed cJSON tree it owns; it may be handed to another thread
 * and freed there (copse__api_completion_free).
 *
 * Errors use OpenAI's shape:
 *   {"error": {"message": "...", "type": "invalid_request_error",
 *              "param": "max_tokens" | null, "code": null}}
 */
#ifndef COPSE_SERVER_API_H
#define COPSE_SERVER_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "chat.h"
#include "copse.h"
#include "sampling.h"

#define COPSE_API_MAX_STOP 4
#define COPSE_API_MAX_STOP_LEN 256
#define COPSE_API_MAX_LOGPROBS 5

/* ---------------------------------------------------------------- routing */

typedef enum copse_api_route {
    COPSE_ROUTE_NONE = 0,
    COPSE_ROUTE_COMPLETIONS,
    COPSE_ROUTE_CHAT,
    COPSE_ROUTE_MODELS,
    COPSE_ROUTE_HEALTH,
    COPSE_ROUTE_METRICS,
} copse_api_route;

const char *copse__api_route_name(copse_api_route r); /* "completions", ..., "other" */

/* The route for a method (enum http_method) and path. Returns 200 with
 * *route set, 404 for an unknown path, 405 for a known path with the wrong
 * method (*route is then the path's route). */
int copse__api_route_find(int method, const char *path, size_t len, copse_api_route *route);

/* ---------------------------------------------------------------- errors */

typedef struct copse_api_error {
    int status;        /* HTTP status */
    const char *type;  /* "invalid_request_error", "not_found_error", ... */
    char param[64];    /* the offending field, "" if none */
    char message[320];
} copse_api_error;

void copse__api_error_set(copse_api_error *e, int status, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* The JSON body of an error (malloc'ed, NUL-terminated; NULL on no memory). */
char *copse__api_error_json(const copse_api_error *e);

/* ---------------------------------------------------------------- requests */

/* What validation needs to know about the server. */
typedef struct copse_api_limits {
    int32_t n_vocab;          /* token ids in prompts must be below it */
    int32_t max_context;      /* prompt + max_tokens must not exceed it (checked after tokenizing) */
    const char *const *drafters; /* the engine's drafter specs, bit i = drafters[i] */
    int32_t n_drafters;
    uint32_t default_drafters;   /* bits used when a request says nothing */
    int32_t max_nodes;        /* upper bound of speculative.max_nodes */
    int32_t max_messages;     /* chat messages */
} copse_api_limits;

typedef struct copse_api_completion {
    bool chat;
    bool stream;
    bool include_usage;       /* stream_options.include_usage (usage is always in the final chunk) */
    /* completions: the prompt as text, or as token ids */
    const char *prompt;       /* NULL when prompt_tokens is used */
    size_t prompt_len;
    copse_token *prompt_tokens; /* malloc'ed */
    int32_t n_prompt_tokens;
    /* chat */
    copse_chat_msg *msgs;     /* malloc'ed [n_msgs]; strings in the tree or in owned */
    int32_t n_msgs;
    char **owned;             /* joined content parts, malloc'ed [n_msgs] (NULL entries) */
    /* generation */
    int32_t max_tokens;
    copse_sampling_params sampling;
    bool seed_given;          /* else the caller picks a fresh seed */
    const char *stop[COPSE_API_MAX_STOP];
    size_t stop_len[COPSE_API_MAX_STOP];
    int32_t n_stop;
    int32_t logprobs;         /* 0: none; else top alternatives (chat: logprobs=true, top_logprobs) */
    bool want_logprobs;
    uint32_t drafters;        /* engine drafter bits; 0: plain decoding */
    int32_t max_nodes;        /* 0: engine default */
    cJSON *root;              /* the parsed body; owns the strings above */
} copse_api_completion;

/* Parse and validate a completion (chat = false) or chat completion body.
 * Returns 0, or -1 with *err set (400 naming the field; 503 on no memory).
 * On failure *out holds nothing to free; on success free it with
 * copse__api_completion_free. */
int copse__api_completion_parse(const char *body, size_t len, bool chat, const copse_api_limits *lim,
                                copse_api_completion *out, copse_api_error *err);
void copse__api_completion_free(copse_api_completion *c);

/* ---------------------------------------------------------------- responses */

/* Text made safe for JSON: invalid UTF-8 bytes become U+FFFD (malloc'ed). */
char *copse__api_utf8_sanitize(const char *s, size_t len, size_t *out_len);

/* What a response needs besides the text. */
typedef struct copse_api_result {
    const char *id;           /* "cmpl-..." / "chatcmpl-..." */
    const char *model;
    int64_t created;          /* unix seconds */
    const char *finish;       /* "stop", "length", or NULL (more to come) */
    int32_t prompt_tokens, completion_tokens;
    bool usage;               /* add "usage" */
} copse_api_result;

/* A whole (non-streamed) response; logprobs (may be NULL) is moved into it.
 * Returns malloc'ed JSON or NULL on no memory. */
char *copse__api_response_json(bool chat, const copse_api_result *r, const char *text, size_t len, cJSON *logprobs);
/* One streamed chunk. first: the chat chunk carries the assistant role. */
char *copse__api_chunk_json(bool chat, const copse_api_result *r, const char *text, size_t len, bool first,
                            cJSON *logprobs);
/* GET /v1/models */
char *copse__api_models_json(const char *model, int64_t created);

#endif /* COPSE_SERVER_API_H */
