/*
 * engine-thread.c — the engine on its own thread (see engine-thread.h).
 */
#include "engine-thread.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---------------------------------------------------------------- state */

typedef struct et_cmd {
    struct et_cmd *next;
    void *cookie;
    copse_api_completion *c; /* submit; NULL: cancel */
} et_cmd;

/* A request as the engine thread sees it. */
typedef struct et_req {
    struct et_req *next;
    void *cookie;
    uint64_t id;
    copse_et *t;
    copse_api_completion *c;  /* owns the stop strings */
    size_t max_stop;          /* longest stop string (0: none) */
    bool done;                /* its end message was sent */
    /* the emitted text not yet sent (it might start a stop string) */
    copse_detok_stream ds;
    char *pending;
    size_t pending_len, pending_cap;
    int32_t n_out;            /* tokens covered by sent messages */
    int32_t text_offset;      /* bytes of text sent (completions logprobs) */
    /* the stop_cb's look-ahead within one step */
    uint64_t look_step;
    copse_detok_stream look_ds;
    char look[2 * COPSE_API_MAX_STOP_LEN];
    size_t look_len;
} et_req;

struct copse_et {
    copse_engine *engine;
    const copse_tokenizer *tok;
    const copse_chat_format *fmt;
    int32_t n_vocab;
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* under mu */
    bool stop;
    et_cmd *inbox_head, *inbox_tail;
    copse_et_msg *out_head, *out_tail;
    copse_metrics_engine stats;
    /* loop side */
    uv_async_t async;
    copse_et_msg_cb cb;
    void *ud;
    /* engine thread only */
    et_req *reqs;
    uint64_t step_no;
    uint64_t seed_state;
};

void copse__et_msg_free(copse_et_msg *m)
{
    if (!m)
        return;
    free(m->text);
    cJSON_Delete(m->logprobs);
    free(m);
}

/* ---------------------------------------------------------------- outbox */

static copse_et_msg *msg_new(et_req *r)
{
    copse_et_msg *m = calloc(1, sizeof *m);
    if (m)
        m->cookie = r->cookie;
    return m;
}

static void post(copse_et *t, copse_et_msg *m)
{
    pthread_mutex_lock(&t->mu);
    if (t->out_tail)
        t->out_tail->next = m;
    else
        t->out_head = m;
    t->out_tail = m;
    pthread_mutex_unlock(&t->mu);
}

static void async_cb(uv_async_t *h)
{
    copse_et *t = h->data;
    pthread_mutex_lock(&t->mu);
    copse_et_msg *m = t->out_head;
    t->out_head = t->out_tail = NULL;
    pthread_mutex_unlock(&t->mu);
    while (m) {
        copse_et_msg *next = m->next;
        m->next = NULL;
        t->cb(t->ud, m);
        m = next;
    }
}

/* An end message for an error. If no memory is left for it, the request's
 * end is lost and its connection waits for the shutdown. */
static void post_error(copse_et *t, void *cookie, int status, const char *param, const char *msg)
{
    copse_et_msg *m = calloc(1, sizeof *m);
    if (!m) {
        fprintf(stderr, "copse serve: out of memory reporting an error: %s\n", msg);
        return;
    }
    m->cookie = cookie;
    m->end = true;
    m->http_status = status;
    snprintf(m->error, sizeof m->error, "%s", msg);
    snprintf(m->error_param, sizeof m->error_param, "%s", param ? param : "");
    post(t, m);
}

/* ---------------------------------------------------------------- text */

static bool eog(const copse_et *t, copse_token tok)
{
    return copse__tokenizer_is_eog(t->tok, tok);
}

/* The first stop string in s[0..n): its offset, or -1. */
static long find_stop(const copse_api_completion *c, const char *s, size_t n)
{
    long best = -1;
    for (int32_t i = 0; i < c->n_stop; i++) {
        size_t k = c->stop_len[i];
        for (size_t at = 0; at + k <= n; at++)
            if (!memcmp(s + at, c->stop[i], k)) {
                if (best < 0 || (long)at < best)
                    best = (long)at;
                break;
            }
    }
    return best;
}

/* The text of one token (empty for end-of-generation and control tokens). */
static int piece_of(const copse_et *t, copse_detok_stream *ds, copse_token tok, char *buf, size_t cap)
{
    if (eog(t, tok))
        return 0;
    int w = copse__detok_stream_push(t->tok, ds, tok, false, buf, cap);
    return w > 0 ? w : 0;
}

/* stop_cb: does the text so far, with this token, complete a stop string?
 * Runs on the engine thread inside copse__engine_step, once per emitted
 * token in order; the committed state is copied at the first call of each
 * step. */
static bool stop_cb(void *ud, copse_token tok, int32_t index)
{
    (void)index;
    et_req *r = ud;
    copse_et *t = r->t;
    if (r->done)
        return true;
    if (r->look_step != t->step_no) {
        r->look_step = t->step_no;
        r->look_ds = r->ds;
        size_t keep = r->pending_len < r->max_stop ? r->pending_len : r->max_stop;
        memcpy(r->look, r->pending + r->pending_len - keep, keep);
        r->look_len = keep;
    }
    char piece[4096];
    int w = piece_of(t, &r->look_ds, tok, piece, sizeof piece);
    size_t wl = (size_t)w;
    /* a piece longer than the window only matters by its tail */
    if (wl > r->max_stop + COPSE_API_MAX_STOP_LEN) {
        size_t cut = wl - r->max_stop;
        memmove(piece, piece + cut, wl - cut);
        wl -= cut;
        r->look_len = 0;
    }
    if (r->look_len + wl > sizeof r->look) {
        size_t drop = r->look_len + wl - sizeof r->look;
        memmove(r->look, r->look + drop, r->look_len - drop);
        r->look_len -= drop;
    }
    memcpy(r->look + r->look_len, piece, wl);
    r->look_len += wl;
    return find_stop(r->c, r->look, r->look_len) >= 0;
}

static int pending_append(et_req *r, const char *s, size_t n)
{
    if (r->pending_len + n + 1 > r->pending_cap) {
        size_t nc = (r->pending_len + n + 1) * 2;
        char *np = realloc(r->pending, nc);
        if (!np)
            return -1;
        r->pending = np;
        r->pending_cap = nc;
    }
    memcpy(r->pending + r->pending_len, s, n);
    r->pending_len += n;
    return 0;
}

/* Move pending[0..n) into m's text. */
static int take_text(et_req *r, copse_et_msg *m, size_t n)
{
    if (n == 0)
        return 0;
    m->text = malloc(n + 1);
    if (!m->text)
        return -1;
    memcpy(m->text, r->pending, n);
    m->text[n] = 0;
    m->text_len = n;
    memmove(r->pending, r->pending + n, r->pending_len - n);
    r->pending_len -= n;
    r->text_offset += (int32_t)n;
    return 0;
}

/* ---------------------------------------------------------------- logprobs */

static cJSON *token_text(const copse_et *t, copse_token id, cJSON **bytes_out)
{
    char buf[256];
    size_t n = copse__tokenizer_token_bytes(t->tok, id, true, buf, sizeof buf);
    if (n > sizeof buf)
        n = sizeof buf;
    if (bytes_out) {
        cJSON *b = cJSON_CreateArray();
        for (size_t i = 0; b && i < n; i++)
            cJSON_AddItemToArray(b, cJSON_CreateNumber((unsigned char)buf[i]));
        *bytes_out = b;
    }
    char *s = copse__api_utf8_sanitize(buf, n, NULL);
    cJSON *j = cJSON_CreateString(s ? s : "");
    free(s);
    return j;
}

static cJSON *chat_logprob_item(const copse_et *t, copse_token id, float lp)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *bytes = NULL;
    cJSON_AddItemToObject(o, "token", token_text(t, id, &bytes));
    cJSON_AddNumberToObject(o, "logprob", lp);
    cJSON_AddItemToObject(o, "bytes", bytes);
    return o;
}

/* Logprobs of tokens[0..n) of an event, in the request's shape. */
static cJSON *build_logprobs(et_req *r, const copse_engine_event *ev, int32_t n)
{
    copse_et *t = r->t;
    if (!r->c->want_logprobs || !ev->logprobs || n == 0)
        return NULL;
    if (r->c->chat) {
        cJSON *arr = cJSON_CreateArray();
        for (int32_t i = 0; i < n; i++) {
            const copse_token_logprob *lp = &ev->logprobs[i];
            cJSON *it = chat_logprob_item(t, lp->token, lp->logprob);
            cJSON *top = cJSON_AddArrayToObject(it, "top_logprobs");
            for (int32_t k = 0; k < lp->n_top && k < r->c->logprobs; k++)
                cJSON_AddItemToArray(top, chat_logprob_item(t, lp->top[k], lp->top_logprob[k]));
            cJSON_AddItemToArray(arr, it);
        }
        return arr;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON *toks = cJSON_AddArrayToObject(o, "tokens");
    cJSON *lps = cJSON_AddArrayToObject(o, "token_logprobs");
    cJSON *tops = cJSON_AddArrayToObject(o, "top_logprobs");
    cJSON *offs = cJSON_AddArrayToObject(o, "text_offset");
    int32_t off = r->text_offset + (int32_t)r->pending_len;
    for (int32_t i = 0; i < n; i++) {
        const copse_token_logprob *lp = &ev->logprobs[i];
        cJSON_AddItemToArray(toks, token_text(t, lp->token, NULL));
        cJSON_AddItemToArray(lps, cJSON_CreateNumber(lp->logprob));
        cJSON *top = cJSON_CreateObject();
        for (int32_t k = 0; k < lp->n_top && k < r->c->logprobs; k++) {
            cJSON *s = token_text(t, lp->top[k], NULL);
            if (cJSON_IsString(s) && !cJSON_GetObjectItemCaseSensitive(top, s->valuestring))
                cJSON_AddNumberToObject(top, s->valuestring, lp->top_logprob[k]);
            cJSON_Delete(s);
        }
        cJSON_AddItemToArray(tops, top);
        cJSON_AddItemToArray(offs, cJSON_CreateNumber(off));
    }
    return o;
}

/* ---------------------------------------------------------------- requests */

static void req_free(copse_et *t, et_req *r)
{
    for (et_req **p = &t->reqs; *p; p = &(*p)->next)
        if (*p == r) {
            *p = r->next;
            break;
        }
    copse__api_completion_free(r->c);
    free(r->c);
    free(r->pending);
    free(r);
}

static et_req *req_find(copse_et *t, void *cookie)
{
    for (et_req *r = t->reqs; r; r = r->next)
        if (r->cookie == cookie)
            return r;
    return NULL;
}

static uint64_t next_seed(copse_et *t)
{
    uint64_t z = (t->seed_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Tokenize the prompt (chat: render the template first). Returns a
 * malloc'ed id list or NULL after posting the error. */
static copse_token *tokenize(copse_et *t, void *cookie, const copse_api_completion *c, int32_t *n_out)
{
    if (c->prompt_tokens) {
        copse_token *ids = malloc(sizeof *ids * (size_t)c->n_prompt_tokens);
        if (!ids) {
            post_error(t, cookie, 503, NULL, "out of memory");
            return NULL;
        }
        memcpy(ids, c->prompt_tokens, sizeof *ids * (size_t)c->n_prompt_tokens);
        *n_out = c->n_prompt_tokens;
        return ids;
    }
    char *rendered = NULL, err[256];
    const char *text = c->prompt;
    size_t len = c->prompt_len;
    int flags = COPSE_TOKENIZE_PARSE_SPECIAL;
    if (c->chat) {
        copse_status st = copse__chat_format_render(t->fmt, c->msgs, (size_t)c->n_msgs, true, &rendered, err, sizeof err);
        if (st != COPSE_OK) {
            post_error(t, cookie, st == COPSE_ENOMEM ? 503 : 400, "messages", err);
            return NULL;
        }
        text = rendered;
        len = strlen(rendered);
    } else {
        flags |= COPSE_TOKENIZE_ADD_SPECIAL; /* as `copse run` does */
    }
    size_t n = 0;
    copse__tokenizer_encode(t->tok, text, len, flags, NULL, 0, &n);
    copse_token *ids = malloc(sizeof *ids * (n ? n : 1));
    if (!ids || copse__tokenizer_encode(t->tok, text, len, flags, ids, n, &n) != COPSE_OK) {
        free(ids);
        free(rendered);
        post_error(t, cookie, 503, NULL, "cannot tokenize the prompt (out of memory)");
        return NULL;
    }
    free(rendered);
    if (n == 0) {
        free(ids);
        post_error(t, cookie, 400, "prompt", "prompt: the prompt is empty (no tokens)");
        return NULL;
    }
    *n_out = (int32_t)n;
    return ids;
}

static void do_submit(copse_et *t, void *cookie, copse_api_completion *c)
{
    int32_t n_prompt = 0;
    copse_token *ids = tokenize(t, cookie, c, &n_prompt);
    et_req *r = ids ? calloc(1, sizeof *r) : NULL;
    if (!r) {
        if (ids)
            post_error(t, cookie, 503, NULL, "out of memory");
        free(ids);
        copse__api_completion_free(c);
        free(c);
        return;
    }
    r->cookie = cookie;
    r->t = t;
    r->c = c;
    for (int32_t i = 0; i < c->n_stop; i++)
        if (c->stop_len[i] > r->max_stop)
            r->max_stop = c->stop_len[i];
    r->look_step = UINT64_MAX;
    copse__detok_stream_init(t->tok, &r->ds);

    copse_request_params rp = copse__request_default_params();
    rp.prompt = ids;
    rp.n_prompt = n_prompt;
    rp.max_tokens = c->max_tokens;
    rp.sampling = c->sampling;
    if (!c->seed_given)
        rp.sampling.seed = next_seed(t);
    rp.drafters = c->drafters;
    rp.spec_nodes = c->max_nodes;
    if (c->want_logprobs)
        rp.top_logprobs = c->logprobs > 0 ? c->logprobs : 1;
    if (c->n_stop) {
        rp.stop_cb = stop_cb;
        rp.stop_ud = r;
    }
    char err[256] = "";
    uint64_t id = 0;
    copse_status st = copse__engine_submit(t->engine, &rp, r, &id, err, sizeof err);
    free(ids);
    if (st != COPSE_OK) {
        int status = st == COPSE_EBUSY ? 429 : st == COPSE_ENOMEM ? 503 : 400;
        char msg[300];
        if (st == COPSE_EBUSY)
            snprintf(msg, sizeof msg, "the server is busy (request queue full); retry later");
        else if (st == COPSE_ERANGE)
            snprintf(msg, sizeof msg, "the prompt (%d tokens) does not fit the model's context%s%s", n_prompt,
                     err[0] ? ": " : "", err);
        else
            snprintf(msg, sizeof msg, "%s", err[0] ? err : copse_strerror(st));
        post_error(t, cookie, status, st == COPSE_ERANGE ? (c->chat ? "messages" : "prompt") : NULL, msg);
        copse__api_completion_free(c);
        free(c);
        free(r);
        return;
    }
    r->id = id;
    r->next = t->reqs;
    t->reqs = r;
    copse_et_msg *m = msg_new(r);
    if (m) {
        m->started = true;
        m->n_prompt = n_prompt;
        post(t, m);
    }
}

static void do_cancel(copse_et *t, void *cookie)
{
    et_req *r = req_find(t, cookie);
    if (!r || r->done)
        return;
    copse__engine_cancel(t->engine, r->id);
    copse_et_msg *m = msg_new(r);
    r->done = true;
    if (m) {
        m->end = true;
        m->finish = "cancelled";
        m->n_generated = r->n_out;
        post(t, m);
    }
    /* r stays until the engine reports the cancellation */
}

static const char *finish_name(copse_finish f)
{
    switch (f) {
    case COPSE_FINISH_STOP: return "stop";
    case COPSE_FINISH_LENGTH: return "length";
    case COPSE_FINISH_CANCELLED: return "cancelled";
    default: return NULL;
    }
}

/* One engine event -> one message. */
static void on_event(copse_et *t, const copse_engine_event *ev)
{
    et_req *r = ev->ud;
    if (r->done) {
        if (ev->finish != COPSE_FINISH_NONE)
            req_free(t, r);
        return;
    }
    char piece[4096];
    bool stopped = false;
    long stop_at = -1;
    int32_t used = 0;
    for (int32_t i = 0; i < ev->n_tokens && !stopped; i++) {
        int w = piece_of(t, &r->ds, ev->tokens[i], piece, sizeof piece);
        used++;
        if (w > 0 && pending_append(r, piece, (size_t)w))
            goto oom;
        if (r->c->n_stop && (stop_at = find_stop(r->c, r->pending, r->pending_len)) >= 0)
            stopped = true;
    }
    const bool ending = stopped || ev->finish != COPSE_FINISH_NONE;
    if (ending && !stopped && ev->finish != COPSE_FINISH_ERROR) {
        int w = copse__detok_stream_flush(&r->ds, piece, sizeof piece);
        if (w > 0 && pending_append(r, piece, (size_t)w))
            goto oom;
        if (r->c->n_stop && (stop_at = find_stop(r->c, r->pending, r->pending_len)) >= 0)
            stopped = true;
    }
    copse_et_msg *m = msg_new(r);
    if (!m)
        goto oom;
    m->logprobs = build_logprobs(r, ev, used);
    size_t n_send;
    if (stopped) {
        n_send = (size_t)stop_at;
    } else if (ending) {
        n_send = r->pending_len;
    } else {
        /* hold back what could still begin a stop string, cut at a character start */
        n_send = r->max_stop && r->pending_len >= r->max_stop ? r->pending_len - (r->max_stop - 1)
                 : r->max_stop                                 ? 0
                                                               : r->pending_len;
        while (n_send > 0 && n_send < r->pending_len && ((unsigned char)r->pending[n_send] & 0xc0) == 0x80)
            n_send--;
    }
    if (take_text(r, m, n_send)) {
        copse__et_msg_free(m);
        goto oom;
    }
    r->n_out += used;
    m->n_tokens = used;
    m->n_prompt = ev->n_prompt;
    m->n_generated = r->n_out;
    m->proposed = ev->proposed;
    m->accepted = ev->accepted;
    m->spec_steps = ev->spec_steps;
    if (ending) {
        m->end = true;
        r->done = true;
        if (stopped) {
            m->finish = "stop";
        } else if (ev->finish == COPSE_FINISH_ERROR) {
            m->http_status = 500;
            snprintf(m->error, sizeof m->error, "generation failed: %s", ev->error && ev->error[0] ? ev->error : copse_strerror(ev->status));
        } else {
            m->finish = finish_name(ev->finish);
        }
    }
    post(t, m);
    if (ending) {
        if (ev->finish == COPSE_FINISH_NONE)
            copse__engine_cancel(t->engine, r->id); /* a stop string the engine did not see */
        else
            req_free(t, r);
    }
    return;
oom:
    fprintf(stderr, "copse serve: out of memory; ending request %llu\n", (unsigned long long)r->id);
    post_error(t, r->cookie, 503, NULL, "out of memory");
    r->done = true;
    if (ev->finish == COPSE_FINISH_NONE)
        copse__engine_cancel(t->engine, r->id);
    else
        req_free(t, r);
}

/* ---------------------------------------------------------------- the thread */

static void publish_stats(copse_et *t)
{
    copse_metrics_engine s;
    memset(&s, 0, sizeof s);
    copse_engine_stats es = copse__engine_stats(t->engine);
    s.running = es.running;
    s.waiting = es.waiting;
    s.steps = es.steps;
    s.preempted = es.preempted;
    s.kv_blocks_total = es.kv.blocks_total;
    s.kv_blocks_used = es.kv.blocks_used;
    s.kv_blocks_free = es.kv.blocks_free;
    int32_t nd = copse__engine_n_drafters(t->engine);
    s.n_drafters = nd < COPSE_METRICS_MAX_DRAFTERS ? nd : COPSE_METRICS_MAX_DRAFTERS;
    for (int32_t i = 0; i < s.n_drafters; i++) {
        copse_drafter_stats d = copse__engine_drafter_stats(t->engine, i);
        snprintf(s.drafters[i].name, sizeof s.drafters[i].name, "%s", d.spec ? d.spec : "?");
        s.drafters[i].steps = d.steps;
        s.drafters[i].proposed = d.proposed;
        s.drafters[i].accepted = d.accepted;
        s.drafters[i].accepted_steps = d.accepted_steps;
    }
    pthread_mutex_lock(&t->mu);
    t->stats = s;
    pthread_mutex_unlock(&t->mu);
}

static void *thread_main(void *arg)
{
    copse_et *t = arg;
    pthread_mutex_lock(&t->mu);
    for (;;) {
        while (!t->stop && !t->inbox_head && copse__engine_idle(t->engine))
            pthread_cond_wait(&t->cv, &t->mu);
        if (t->stop)
            break;
        et_cmd *cmd = t->inbox_head;
        t->inbox_head = t->inbox_tail = NULL;
        pthread_mutex_unlock(&t->mu);

        while (cmd) {
            et_cmd *next = cmd->next;
            if (cmd->c)
                do_submit(t, cmd->cookie, cmd->c);
            else
                do_cancel(t, cmd->cookie);
            free(cmd);
            cmd = next;
        }
        publish_stats(t); /* cancellations free KV blocks at once */
        uv_async_send(&t->async);

        /* one step, also when idle: it reports cancellations */
        const copse_engine_event *evs = NULL;
        int32_t n_evs = 0;
        char err[256] = "";
        t->step_no++;
        copse_status st = copse__engine_step(t->engine, &evs, &n_evs, err, sizeof err);
        if (st != COPSE_OK)
            fprintf(stderr, "copse serve: engine step failed: %s\n", err[0] ? err : copse_strerror(st));
        for (int32_t i = 0; i < n_evs; i++)
            on_event(t, &evs[i]);
        publish_stats(t);
        uv_async_send(&t->async);
        pthread_mutex_lock(&t->mu);
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

/* ---------------------------------------------------------------- API */

int copse__et_create(uv_loop_t *loop, copse_engine *engine, const copse_tokenizer *tok, const copse_chat_format *fmt,
                     copse_et_msg_cb cb, void *ud, copse_et **out, char *err, size_t err_size)
{
    *out = NULL;
    copse_et *t = calloc(1, sizeof *t);
    if (!t) {
        snprintf(err, err_size, "out of memory");
        return -1;
    }
    t->engine = engine;
    t->tok = tok;
    t->fmt = fmt;
    t->cb = cb;
    t->ud = ud;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    t->seed_state = (uint64_t)ts.tv_sec * 1000000007ull ^ (uint64_t)ts.tv_nsec;
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
    int rc = uv_async_init(loop, &t->async, async_cb);
    if (rc) {
        snprintf(err, err_size, "uv_async_init: %s", uv_strerror(rc));
        pthread_cond_destroy(&t->cv);
        pthread_mutex_destroy(&t->mu);
        free(t);
        return -1;
    }
    t->async.data = t;
    publish_stats(t);
    if (pthread_create(&t->thread, NULL, thread_main, t) != 0) {
        snprintf(err, err_size, "cannot start the engine thread");
        copse__et_destroy(t);
        return -1;
    }
    t->thread_started = true;
    *out = t;
    return 0;
}

static void async_close_cb(uv_handle_t *h)
{
    copse_et *t = h->data;
    pthread_cond_destroy(&t->cv);
    pthread_mutex_destroy(&t->mu);
    free(t);
}

void copse__et_destroy(copse_et *t)
{
    if (!t)
        return;
    pthread_mutex_lock(&t->mu);
    t->stop = true;
    pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);
    if (t->thread_started)
        pthread_join(t->thread, NULL);
    while (t->reqs)
        req_free(t, t->reqs);
    for (et_cmd *c = t->inbox_head, *n; c; c = n) {
        n = c->next;
        copse__api_completion_free(c->c);
        free(c->c);
        free(c);
    }
    for (copse_et_msg *m = t->out_head, *n; m; m = n) {
        n = m->next;
        copse__et_msg_free(m);
    }
    t->inbox_head = t->inbox_tail = NULL;
    t->out_head = t->out_tail = NULL;
    uv_close((uv_handle_t *)&t->async, async_close_cb);
}

static void push_cmd(copse_et *t, void *cookie, copse_api_completion *c)
{
    et_cmd *cmd = calloc(1, sizeof *cmd);
    if (!cmd) {
        if (!c) { /* a cancel: the request runs to its end instead */
            fprintf(stderr, "copse serve: out of memory queueing a cancellation\n");
            return;
        }
        /* a submit: answer at once; the engine never sees it */
        copse__api_completion_free(c);
        free(c);
        post_error(t, cookie, 503, NULL, "out of memory");
        uv_async_send(&t->async);
        return;
    }
    cmd->cookie = cookie;
    cmd->c = c;
    pthread_mutex_lock(&t->mu);
    if (t->inbox_tail)
        t->inbox_tail->next = cmd;
    else
        t->inbox_head = cmd;
    t->inbox_tail = cmd;
    pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

void copse__et_submit(copse_et *t, void *cookie, copse_api_completion *c)
{
    push_cmd(t, cookie, c);
}

void copse__et_cancel(copse_et *t, void *cookie)
{
    push_cmd(t, cookie, NULL);
}

void copse__et_stats(copse_et *t, copse_metrics_engine *out)
{
    pthread_mutex_lock(&t->mu);
    *out = t->stats;
    pthread_mutex_unlock(&t->mu);
}
