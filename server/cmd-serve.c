/*
 * cmd-serve.c — `copse serve`: load a model, start the engine thread and
 * serve the OpenAI-compatible API on a Unix socket (and optionally on a
 * loopback TCP port) until SIGINT/SIGTERM.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "backend-impl.h"
#include "chat.h"
#include "commands.h"
#include "copse.h"
#include "engine.h"
#include "forward.h"
#include "model.h"
#include "serve.h"
#include "tokenizer.h"

typedef struct serve_opts {
    const char *model;
    const char *drafters[COPSE_ENGINE_MAX_DRAFTERS];
    int n_drafters;
    int no_draft; /* --no-draft: plain decoding only */
    const char *socket;
    unsigned socket_mode;
    const char *listen;
    int max_batch, max_queue, threads, ctx, step_tokens, spec_nodes, spec_depth;
    uint64_t kv_mem;
    double grace_s;
    copse_http_config http;
    bool quiet;
} serve_opts;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: copse serve -m MODEL [options]\n"
            "\n"
            "Serves the OpenAI-compatible API (/v1/completions, /v1/chat/completions, /v1/models,\n"
            "/health, /metrics) over HTTP/1.1 on a Unix socket. SIGINT/SIGTERM stop it gracefully.\n"
            "\n"
            "  -m, --model FILE        GGUF model (llama family)\n"
            "      --draft SPEC        a drafter requests may use (repeatable): ngram, suffix,\n"
            "                          layerskip:N, model:FILE; all are used unless a request's\n"
            "                          \"speculative\" object says otherwise (default: ngram and suffix)\n"
            "      --no-draft          no speculative decoding\n"
            "      --socket PATH       Unix socket (default $XDG_RUNTIME_DIR/copse.sock, else ./copse.sock)\n"
            "      --socket-mode MODE  its permissions, octal (default 0600)\n"
            "      --listen ADDR:PORT  also listen on TCP, e.g. 127.0.0.1:8080\n"
            "      --max-batch N       requests decoded together (default 16)\n"
            "      --max-queue N       requests waiting beyond those; more get 429 (default 256)\n"
            "      --kv-mem SIZE       KV cache budget, e.g. 512M, 2G (default 512M)\n"
            "  -c, --ctx N             longest sequence, prompt + output (default 2048 or the model's)\n"
            "      --step-tokens N     most tokens in one engine step (default 512)\n"
            "      --spec-nodes N      default draft tree size per request and step (default 16)\n"
            "  -t, --threads N         CPU threads (default: all cores)\n"
            "      --max-body SIZE     request body limit (default 1M)\n"
            "      --max-header SIZE   request line + headers limit (default 16K)\n"
            "      --header-timeout S  seconds for a request's headers to arrive (default 10)\n"
            "      --request-timeout S seconds for a whole request to arrive (default 30)\n"
            "      --idle-timeout S    seconds an idle keep-alive connection is kept (default 60)\n"
            "      --write-timeout S   seconds a client may leave its response unread (default 30)\n"
            "      --max-connections N (default 1024)\n"
            "      --grace S           seconds in-flight requests may finish after SIGTERM (default 10)\n"
            "  -q, --quiet             no per-request log lines\n");
}

/* "512M", "2G", "4096", "16K" -> bytes. */
static int parse_size(const char *opt, const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    double mul = 1;
    if (*end == 'K' || *end == 'k')
        mul = 1024.0, end++;
    else if (*end == 'M' || *end == 'm')
        mul = 1024.0 * 1024, end++;
    else if (*end == 'G' || *end == 'g')
        mul = 1024.0 * 1024 * 1024, end++;
    if (*end == 'B' || *end == 'b' || (*end == 'i' && end[1] == 'B'))
        end += *end == 'i' ? 2 : 1;
    if (errno || end == s || *end || !(v > 0) || v * mul > 1e15) {
        fprintf(stderr, "copse serve: %s: '%s' is not a size (e.g. 512M, 2G)\n", opt, s);
        return -1;
    }
    *out = (uint64_t)(v * mul);
    return 0;
}

static int parse_num(const char *opt, const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "copse serve: %s: '%s' is not a number in [%g, %g]\n", opt, s, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

/* Returns 0, 1 on --help, -1 on a bad option. */
static int parse_args(int argc, char **argv, serve_opts *o, char *default_socket, size_t ds_size)
{
    memset(o, 0, sizeof *o);
    o->socket_mode = 0600;
    o->max_batch = 16;
    o->max_queue = 256;
    o->step_tokens = 512;
    o->kv_mem = 512ull << 20;
    o->grace_s = 10;
    o->http = copse__http_default_config();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        double x;
        uint64_t sz;
#define NEEDS_VALUE_()                                                   \
    do {                                                                 \
        if (!v) {                                                        \
            fprintf(stderr, "copse serve: %s needs a value\n", a);       \
            return -1;                                                   \
        }                                                                \
        i++;                                                             \
    } while (0)
#define NUM_(lo, hi)                              \
    do {                                          \
        NEEDS_VALUE_();                           \
        if (parse_num(a, v, (lo), (hi), &x) != 0) \
            return -1;                            \
    } while (0)
#define SIZE_()                                \
    do {                                       \
        NEEDS_VALUE_();                        \
        if (parse_size(a, v, &sz) != 0)        \
            return -1;                         \
    } while (0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 1;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            NEEDS_VALUE_();
            o->model = v;
        } else if (!strcmp(a, "--no-draft")) {
            o->no_draft = 1;
        } else if (!strcmp(a, "--draft")) {
            NEEDS_VALUE_();
            if (o->n_drafters == COPSE_ENGINE_MAX_DRAFTERS) {
                fprintf(stderr, "copse serve: at most %d --draft options\n", COPSE_ENGINE_MAX_DRAFTERS);
                return -1;
            }
            o->drafters[o->n_drafters++] = v;
        } else if (!strcmp(a, "--socket")) {
            NEEDS_VALUE_();
            o->socket = v;
        } else if (!strcmp(a, "--socket-mode")) {
            NEEDS_VALUE_();
            char *end;
            errno = 0;
            unsigned long m = strtoul(v, &end, 8);
            if (errno || end == v || *end || m > 0777) {
                fprintf(stderr, "copse serve: --socket-mode: '%s' is not an octal mode (e.g. 0600)\n", v);
                return -1;
            }
            o->socket_mode = (unsigned)m;
        } else if (!strcmp(a, "--listen")) {
            NEEDS_VALUE_();
            o->listen = v;
        } else if (!strcmp(a, "--max-batch")) {
            NUM_(1, 256);
            o->max_batch = (int)x;
        } else if (!strcmp(a, "--max-queue")) {
            NUM_(0, 1 << 20);
            o->max_queue = (int)x;
        } else if (!strcmp(a, "--kv-mem")) {
            SIZE_();
            o->kv_mem = sz;
        } else if (!strcmp(a, "-c") || !strcmp(a, "--ctx")) {
            NUM_(16, 1 << 20);
            o->ctx = (int)x;
        } else if (!strcmp(a, "--step-tokens")) {
            NUM_(1, 1 << 16);
            o->step_tokens = (int)x;
        } else if (!strcmp(a, "--spec-nodes")) {
            NUM_(1, 256);
            o->spec_nodes = (int)x;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            NUM_(0, 1024);
            o->threads = (int)x;
        } else if (!strcmp(a, "--max-body")) {
            SIZE_();
            o->http.limits.max_body_bytes = (size_t)sz;
        } else if (!strcmp(a, "--max-header")) {
            SIZE_();
            o->http.limits.max_header_bytes = (size_t)sz;
        } else if (!strcmp(a, "--header-timeout")) {
            NUM_(0.01, 86400);
            o->http.header_timeout_ms = (uint64_t)(x * 1000);
        } else if (!strcmp(a, "--request-timeout")) {
            NUM_(0.01, 86400);
            o->http.request_timeout_ms = (uint64_t)(x * 1000);
        } else if (!strcmp(a, "--idle-timeout")) {
            NUM_(0.01, 86400);
            o->http.idle_timeout_ms = (uint64_t)(x * 1000);
        } else if (!strcmp(a, "--write-timeout")) {
            NUM_(0.01, 86400);
            o->http.write_timeout_ms = (uint64_t)(x * 1000);
        } else if (!strcmp(a, "--max-connections")) {
            NUM_(1, 1 << 20);
            o->http.max_connections = (int)x;
        } else if (!strcmp(a, "--grace")) {
            NUM_(0, 3600);
            o->grace_s = x;
        } else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
            o->quiet = true;
        } else {
            fprintf(stderr, "copse serve: unknown option '%s' (see --help)\n", a);
            return -1;
        }
#undef SIZE_
#undef NUM_
#undef NEEDS_VALUE_
    }
    if (!o->model) {
        fprintf(stderr, "copse serve: no model given (-m MODEL)\n");
        return -1;
    }
    if (o->no_draft && o->n_drafters) {
        fprintf(stderr, "copse serve: --no-draft and --draft exclude each other\n");
        return -1;
    }
    if (!o->no_draft && !o->n_drafters) { /* speculation is on by default, model-free */
        o->drafters[o->n_drafters++] = "ngram";
        o->drafters[o->n_drafters++] = "suffix";
    }
    if (!o->socket) {
        const char *dir = getenv("XDG_RUNTIME_DIR");
        snprintf(default_socket, ds_size, "%s/copse.sock", dir && dir[0] ? dir : ".");
        o->socket = default_socket;
    }
    return 0;
}

/* ---------------------------------------------------------------- signals */

typedef struct sig_ctx {
    uv_signal_t sigint, sigterm;
    copse_server *srv;
    bool open;
} sig_ctx;

static void signal_cb(uv_signal_t *h, int signum)
{
    sig_ctx *sc = h->data;
    fprintf(stderr, "copse serve: %s\n", signum == SIGINT ? "interrupted" : "terminated");
    copse__server_shutdown(sc->srv);
    /* the signal handles must not keep the loop alive once the server is closed */
    uv_unref((uv_handle_t *)&sc->sigint);
    uv_unref((uv_handle_t *)&sc->sigterm);
}

/* ---------------------------------------------------------------- the command */

static const char *base_name(const char *path, char *buf, size_t cap)
{
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    snprintf(buf, cap, "%s", b);
    size_t n = strlen(buf);
    if (n > 5 && !strcmp(buf + n - 5, ".gguf"))
        buf[n - 5] = 0;
    return buf;
}

int copse__cmd_serve(int argc, char **argv)
{
    serve_opts o;
    char default_socket[4096];
    int pr = parse_args(argc, argv, &o, default_socket, sizeof default_socket);
    if (pr != 0)
        return pr > 0 ? 0 : 2;
    signal(SIGPIPE, SIG_IGN); /* a client that goes away is an EPIPE, not a signal */

    char err[512];
    int rc = 1;
    copse_model *model = NULL;
    copse_forward *fwd = NULL;
    copse_engine *engine = NULL;
    copse_chat_format *fmt = NULL;
    copse_server *srv = NULL;
    copse_token *eos = NULL;
    uv_loop_t loop;
    bool loop_open = false;
    sig_ctx sc = {0};

    copse_model_params mp = copse_model_default_params();
    if (copse_model_create(o.model, &mp, &model, err, sizeof err) != COPSE_OK) {
        fprintf(stderr, "copse serve: %s\n", err);
        goto done;
    }
    const copse_gguf *g = copse__model_gguf(model);
    const copse_tokenizer *tok = copse__model_tokenizer(model);
    copse_hparams hp;
    if (copse__hparams_load(g, &hp, err, sizeof err) != COPSE_OK) {
        fprintf(stderr, "copse serve: %s: %s\n", o.model, err);
        goto done;
    }
    copse_forward_params fp = copse__forward_default_params();
    fp.n_threads = o.threads;
    fp.max_seqs = (uint32_t)o.max_batch;
    fp.max_ctx = o.ctx ? (uint32_t)o.ctx : (hp.n_ctx_train < 2048 ? hp.n_ctx_train : 2048);
    fp.max_tokens = (uint32_t)o.step_tokens;
    fp.kv_mem = o.kv_mem;
    copse_backend_reg *cpu = copse__backend_find("cpu");
    if (copse__forward_create(g, cpu->iface.dev_get(cpu, 0), &fp, &fwd, err, sizeof err) != COPSE_OK) {
        fprintf(stderr, "copse serve: %s\n", err);
        goto done;
    }
    char note[256];
    if (copse__chat_format_from_gguf(g, &fmt, note, sizeof note) != COPSE_OK) {
        fprintf(stderr, "copse serve: out of memory\n");
        goto done;
    }
    if (note[0])
        fprintf(stderr, "copse serve: %s\n", note);

    /* the end-of-generation set */
    const int32_t n_vocab = copse__tokenizer_n_vocab(tok);
    eos = malloc(sizeof *eos * 64);
    int32_t n_eos = eos ? copse__tokenizer_eog_list(tok, eos, 64) : 0;
    copse_engine_params ep = copse__engine_default_params();
    ep.max_running = o.max_batch;
    ep.max_waiting = o.max_queue;
    ep.step_tokens = o.step_tokens;
    ep.drafters = o.drafters;
    ep.gguf = g;
    ep.n_drafters = o.n_drafters;
    if (o.spec_nodes)
        ep.spec_nodes = o.spec_nodes;
    ep.n_threads = o.threads;
    ep.eos = eos;
    ep.n_eos = n_eos;
    if (copse__engine_create(fwd, &ep, &engine, err, sizeof err) != COPSE_OK) {
        fprintf(stderr, "copse serve: %s\n", err);
        goto done;
    }

    if (uv_loop_init(&loop) != 0) {
        fprintf(stderr, "copse serve: cannot start the event loop\n");
        goto done;
    }
    loop_open = true;
    char name[256];
    copse_serve_config cfg = {
        .model_name = base_name(o.model, name, sizeof name),
        .limits = {.n_vocab = n_vocab,
                   .max_context = (int32_t)fp.max_ctx,
                   .drafters = o.drafters,
                   .n_drafters = o.n_drafters,
                   .default_drafters = o.n_drafters ? (1u << o.n_drafters) - 1 : 0,
                   .max_nodes = 256,
                   .max_messages = 1024},
        .grace_s = o.grace_s,
        .log_requests = !o.quiet,
    };
    if (copse__server_create(&loop, engine, tok, fmt, &o.http, &cfg, &srv, err, sizeof err) != 0) {
        fprintf(stderr, "copse serve: %s\n", err);
        goto done;
    }
    if (copse__server_listen_unix(srv, o.socket, o.socket_mode, err, sizeof err) != 0 ||
        (o.listen && copse__server_listen_tcp(srv, o.listen, err, sizeof err) != 0)) {
        fprintf(stderr, "copse serve: %s\n", err);
        copse__server_shutdown(srv); /* nothing in flight: closes at once */
        uv_run(&loop, UV_RUN_DEFAULT);
        goto done;
    }
    sc.srv = srv;
    uv_signal_init(&loop, &sc.sigint);
    uv_signal_init(&loop, &sc.sigterm);
    sc.sigint.data = sc.sigterm.data = &sc;
    sc.open = true;
    uv_signal_start(&sc.sigint, signal_cb, SIGINT);
    uv_signal_start(&sc.sigterm, signal_cb, SIGTERM);

    fprintf(stderr, "copse serve: %s (%s, %u layers, vocabulary %d, context %u, chat %s); batch %d; drafters:",
            cfg.model_name, hp.arch, hp.n_layer, n_vocab, fp.max_ctx, copse__chat_family_name(fmt->family),
            o.max_batch);
    for (int i = 0; i < o.n_drafters; i++)
        fprintf(stderr, " %s", o.drafters[i]);
    fprintf(stderr, "%s\ncopse serve: listening on %s%s%s\n", o.n_drafters ? "" : " none", o.socket,
            o.listen ? " and " : "", o.listen ? o.listen : "");
    uv_run(&loop, UV_RUN_DEFAULT);
    fprintf(stderr, "copse serve: stopped\n");
    rc = 0;

done:
    if (sc.open) {
        uv_close((uv_handle_t *)&sc.sigint, NULL);
        uv_close((uv_handle_t *)&sc.sigterm, NULL);
    }
    if (loop_open) {
        uv_run(&loop, UV_RUN_DEFAULT);
        if (uv_loop_close(&loop) != 0)
            fprintf(stderr, "copse serve: the event loop still had open handles at exit\n");
    }
    copse__server_free(srv);
    copse__engine_destroy(engine);
    copse__chat_format_destroy(fmt);
    copse__forward_destroy(fwd);
    copse_model_destroy(model);
    free(eos);
    return rc;
}
