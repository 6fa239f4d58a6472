/*
 * engine-thread.h — the engine on its own thread, talking to the libuv
 * loop through an inbox and an outbox (internal).
 *
 * The loop thread submits validated requests and cancels them; it never
 * blocks on the engine. The engine thread drains the inbox under a mutex,
 * runs copse__engine_step, turns each event into a message (text already
 * detokenized, stop strings matched and trimmed), appends the messages to
 * the outbox and wakes the loop with uv_async_send. Messages are delivered
 * on the loop thread, in order, through the callback given at creation.
 *
 * Every submitted request gets exactly one message with end = true (after
 * zero or more others), also when the submit fails, when it is cancelled,
 * and at destroy for requests still in flight (none are then delivered).
 * A cookie (the loop's handle of the request) must stay unique among the
 * requests in flight.
 *
 * Text: tokens become text with the streaming UTF-8 detokenizer. With stop
 * strings, text that might be the start of a stop string is held back until
 * it cannot be; a completed stop string ends the request (the engine stops
 * at once through the request's stop_cb) and is not part of the output.
 */
#ifndef COPSE_SERVER_ENGINE_THREAD_H
#define COPSE_SERVER_ENGINE_THREAD_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "api.h"
#include "chat.h"
#include "engine.h"
#include "metrics.h"
#include "tokenizer.h"

typedef struct copse_et copse_et;

typedef struct copse_et_msg {
    struct copse_et_msg *next;
    void *cookie;
    bool started;        /* the request was admitted (the first message only) */
    char *text;          /* new text (malloc'ed, may be NULL) */
    size_t text_len;
    int32_t n_tokens;    /* tokens this message covers */
    cJSON *logprobs;     /* chat: array of content items; completions: an object; or NULL */
    bool end;            /* the last message of the request */
    const char *finish;  /* end: "stop", "length", "cancelled"; NULL on error */
    int http_status;     /* end on error: the status to answer (400, 429, 500, 503) */
    char error[320];     /* end on error */
    char error_param[32];
    int32_t n_prompt, n_generated;
    uint64_t proposed, accepted, spec_steps;
} copse_et_msg;

/* Called on the loop thread for each message; the callee owns m and frees
 * it with copse__et_msg_free. */
typedef void (*copse_et_msg_cb)(void *ud, copse_et_msg *m);

void copse__et_msg_free(copse_et_msg *m);

/* Start the engine thread. The engine, tokenizer and chat format are
 * borrowed and used only on that thread (the tokenizer and format are
 * immutable) until copse__et_destroy. Returns 0, or -1 with err set. */
int copse__et_create(uv_loop_t *loop, copse_engine *engine, const copse_tokenizer *tok, const copse_chat_format *fmt,
                     copse_et_msg_cb cb, void *ud, copse_et **out, char *err, size_t err_size);
/* Stop and join the thread; requests in flight are dropped without
 * messages; undelivered messages are freed. Closes the async handle: run
 * the loop afterwards until it is closed. NULL-safe. */
void copse__et_destroy(copse_et *t);

/* Hand a request over (c is moved: the engine thread frees it). */
void copse__et_submit(copse_et *t, void *cookie, copse_api_completion *c);
/* Cancel: the engine frees the request's KV blocks at once; its end
 * message (finish "cancelled") follows unless it had already ended. */
void copse__et_cancel(copse_et *t, void *cookie);

/* The latest snapshot of the engine's figures (thread-safe). */
void copse__et_stats(copse_et *t, copse_metrics_engine *out);

#endif /* COPSE_SERVER_ENGINE_THREAD_H */
