/*
 * cmd-run.c — `copse run`: generate text from one prompt (or a chat) and
 * stream it to standard output as it is generated.
 *
 * Standard output carries only the generated text (the prompt is not echoed),
 * so it can be piped. Progress, speeds and errors go to standard error.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backend-impl.h"
#include "backend-select.h"
#include "chat.h"
#include "commands.h"
#include "copse.h"
#include "forward.h"
#include "model.h"
#include "engine.h"
#include "sampling.h"
#include "spec/tree.h"
#include "tokenizer.h"

typedef struct run_opts {
    const char *model;
    const char *prompt;
    const char *system;
    int chat;
    int n_predict;
    int threads;
    int ctx;
    int add_bos; /* -1: the model's flag */
    const char *drafts[COPSE_ENGINE_MAX_DRAFTERS]; /* drafter specs, merged into one tree */
    int n_drafts;
    int spec_nodes, spec_depth;
    int speedup; /* with drafters: also run plain decoding and report the speed-up */
    int fixed_budget; /* --no-adaptive */
    const char *backend; /* --backend NAME[:N], NULL: cpu */
    copse_sampling_params sp;
} run_opts;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: copse run -m MODEL [-p PROMPT | --chat] [options]\n"
            "\n"
            "Generates text and streams it to standard output (the prompt is not echoed).\n"
            "Without -p the prompt is read from standard input. With --chat the prompt is a\n"
            "user message formatted with the model's chat template; --chat without -p holds a\n"
            "conversation, one user message per input line.\n"
            "\n"
            "  -m, --model FILE        GGUF model (llama family)\n"
            "  -p, --prompt TEXT       the prompt\n"
            "      --chat              apply the chat template\n"
            "      --system TEXT       system message (chat mode)\n"
            "  -n, --n-predict N       tokens to generate, at least 1 (default 128; stops earlier at end of turn)\n"
            "      --temp T            temperature, 0 = greedy (default 0.8)\n"
            "      --top-k K           (default 40; 0 = off)\n"
            "      --top-p P           (default 0.95; 1 = off)\n"
            "      --min-p P           (default 0.05; 0 = off)\n"
            "      --repeat-penalty R  (default 1.0 = off)\n"
            "      --frequency-penalty F, --presence-penalty P   (default 0)\n"
            "      --seed S            sampling seed (default: from the clock)\n"
            "  -t, --threads N         CPU threads (default: all cores)\n"
            "  -c, --ctx N             context length (default: 4096 or the model's, if smaller)\n"
            "      --no-bos            do not add BOS even if the model asks for it\n"
            "      --draft SPEC        speculative decoding with a drafter: ngram, suffix, layerskip:N (the\n"
            "                          model's first N layers), model:FILE (a small GGUF with the same\n"
            "                          vocabulary, e.g. from 'copse slice'); repeat to merge several\n"
            "                          drafters' trees (default: none).\n"
            "                          Acceptance per drafter goes to standard error, and the speed-up over\n"
            "                          plain decoding of the same prompt, measured in the same process\n"
            "      --spec-nodes N      draft tree node budget per step (default 16)\n"
            "      --spec-depth D      draft tree depth limit (default 8)\n"
            "      --no-adaptive       propose the full node budget every step (default: the budget follows\n"
            "                          the recent acceptance and pauses while drafts do not pay)\n"
            "      --no-speedup        with --draft: skip the plain-decoding comparison\n"
            "      --backend NAME[:N]  compute device, e.g. cpu, opencl, opencl:1 (default cpu;\n"
            "                          see copse info --devices)\n");
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int parse_num(const char *opt, const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "copse run: %s: '%s' is not a number in [%.10g, %.10g]\n", opt, s, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

/* Returns 0 on success, 1 on --help, -1 on a bad option. */
static int parse_args(int argc, char **argv, run_opts *o)
{
    memset(o, 0, sizeof *o);
    o->n_predict = 128;
    o->ctx = 0;
    o->add_bos = -1;
    o->spec_nodes = 16;
    o->spec_depth = 8;
    o->speedup = 1;
    o->sp = copse__sampling_default_params();
    o->sp.temperature = 0.8f;
    o->sp.top_k = 40;
    o->sp.top_p = 0.95f;
    o->sp.min_p = 0.05f;
    o->sp.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        double x;
#define NEEDS_VALUE_()                                                   \
    do {                                                                 \
        if (!v) {                                                        \
            fprintf(stderr, "copse run: %s needs a value\n", a);         \
            return -1;                                                   \
        }                                                                \
        i++;                                                             \
    } while (0)
#define NUM_(lo, hi)                                     \
    do {                                                 \
        NEEDS_VALUE_();                                  \
        if (parse_num(a, v, (lo), (hi), &x) != 0)        \
            return -1;                                   \
    } while (0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 1;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            NEEDS_VALUE_();
            o->model = v;
        } else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) {
            NEEDS_VALUE_();
            o->prompt = v;
        } else if (!strcmp(a, "--system")) {
            NEEDS_VALUE_();
            o->system = v;
        } else if (!strcmp(a, "--draft")) {
            NEEDS_VALUE_();
            if (o->n_drafts == COPSE_ENGINE_MAX_DRAFTERS) {
                fprintf(stderr, "copse run: at most %d --draft options\n", COPSE_ENGINE_MAX_DRAFTERS);
                return -1;
            }
            o->drafts[o->n_drafts++] = v;
        } else if (!strcmp(a, "--spec-nodes")) {
            NUM_(1, COPSE_TREE_MAX_NODES);
            o->spec_nodes = (int)x;
        } else if (!strcmp(a, "--spec-depth")) {
            NUM_(1, COPSE_TREE_MAX_DEPTH);
            o->spec_depth = (int)x;
        } else if (!strcmp(a, "--backend")) {
            NEEDS_VALUE_();
            o->backend = v;
        } else if (!strcmp(a, "--no-adaptive")) {
            o->fixed_budget = 1;
        } else if (!strcmp(a, "--no-speedup")) {
            o->speedup = 0;
        } else if (!strcmp(a, "--chat")) {
            o->chat = 1;
        } else if (!strcmp(a, "--no-bos")) {
            o->add_bos = 0;
        } else if (!strcmp(a, "-n") || !strcmp(a, "--n-predict")) {
            NUM_(1, 1 << 20);
            o->n_predict = (int)x;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            NUM_(0, 1024);
            o->threads = (int)x;
        } else if (!strcmp(a, "-c") || !strcmp(a, "--ctx")) {
            NUM_(16, 1 << 20);
            o->ctx = (int)x;
        } else if (!strcmp(a, "--temp")) {
            NUM_(0, 100);
            o->sp.temperature = (float)x;
        } else if (!strcmp(a, "--top-k")) {
            NUM_(0, 1 << 30);
            o->sp.top_k = (int32_t)x;
        } else if (!strcmp(a, "--top-p")) {
            NUM_(1e-9, 1);
            o->sp.top_p = (float)x;
        } else if (!strcmp(a, "--min-p")) {
            NUM_(0, 1);
            o->sp.min_p = (float)x;
        } else if (!strcmp(a, "--repeat-penalty")) {
            NUM_(1e-3, 100);
            o->sp.repetition_penalty = (float)x;
        } else if (!strcmp(a, "--frequency-penalty")) {
            NUM_(-2, 2);
            o->sp.frequency_penalty = (float)x;
        } else if (!strcmp(a, "--presence-penalty")) {
            NUM_(-2, 2);
            o->sp.presence_penalty = (float)x;
        } else if (!strcmp(a, "--seed")) {
            NUM_(0, 18446744073709551615.0);
            o->sp.seed = (uint64_t)x;
        } else {
            fprintf(stderr, "copse run: unknown option '%s' (see --help)\n", a);
            return -1;
        }
#undef NUM_
#undef NEEDS_VALUE_
    }
    if (!o->model) {
        fprintf(stderr, "copse run: no model given (-m MODEL)\n");
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- the session */

typedef struct session {
    const run_opts *o;
    copse_model *model;
    const copse_tokenizer *tok;
    copse_forward *fwd;
    copse_engine *eng;
    copse_chat_format *fmt;
    uint32_t drafter_mask; /* all of --draft: merged into one tree */
    int32_t ctx;
    /* totals over the run */
    double prompt_s, gen_s;
    uint64_t prompt_tokens, gen_tokens;
    uint64_t proposed, accepted, spec_steps;
} session;

/* Touch every page of the weights so the first tokens are not slowed by page
 * faults, showing progress on a terminal. */
static void prefault(const copse_gguf *g)
{
    const uint64_t total = copse__gguf_file_size(g);
    const copse_gguf_tensor *t0 = copse__gguf_n_tensors(g) ? copse__gguf_tensor_at(g, 0) : NULL;
    if (!t0)
        return;
    const volatile unsigned char *base = (const unsigned char *)t0->data - t0->offset;
    const uint64_t n = total - copse__gguf_data_offset(g);
    const int tty = isatty(STDERR_FILENO);
    unsigned sum = 0;
    int shown = -1;
    for (uint64_t off = 0; off < n; off += 4096) {
        sum += base[off];
        int pct = (int)(off * 100 / n);
        if (tty && pct != shown && pct % 5 == 0) {
            fprintf(stderr, "\rloading weights %3d%%", pct);
            shown = pct;
        }
    }
    if (tty)
        fprintf(stderr, "\rloading weights 100%%\n");
    (void)sum;
}

static int session_open(session *s, const run_opts *o)
{
    memset(s, 0, sizeof *s);
    s->o = o;
    char err[512];
    double t0 = now_s();
    fprintf(stderr, "copse: loading %s\n", o->model);
    copse_model_params mp = copse_model_default_params();
    copse_status st = copse_model_create(o->model, &mp, &s->model, err, sizeof err);
    if (st != COPSE_OK) {
        fprintf(stderr, "copse run: %s\n", err);
        return -1;
    }
    const copse_gguf *g = copse__model_gguf(s->model);
    s->tok = copse__model_tokenizer(s->model);
    prefault(g);

    copse_hparams hp;
    if (copse__hparams_load(g, &hp, err, sizeof err) != COPSE_OK) {
        fprintf(stderr, "copse run: %s: %s\n", o->model, err);
        return -1;
    }
    copse_forward_params fp = copse__forward_default_params();
    fp.n_threads = o->threads;
    fp.max_seqs = 1;
    s->ctx = o->ctx ? o->ctx : (hp.n_ctx_train < 4096 ? (int32_t)hp.n_ctx_train : 4096);
    fp.max_ctx = (uint32_t)s->ctx;
    fp.max_tokens = 256;
    copse_backend_dev *dev = copse__backend_select(o->backend ? o->backend : "cpu", "copse run");
    if (!dev)
        return -1;
    if (copse__forward_create(g, dev, &fp, &s->fwd, err, sizeof err) != COPSE_OK) {
        const char *detail = copse__backend_dev_error(dev);
        fprintf(stderr, "copse run: %s%s%s\n", err, detail[0] ? "\n" : "", detail);
        return -1;
    }
    if ((int32_t)copse__forward_hparams(s->fwd)->n_vocab != copse__tokenizer_n_vocab(s->tok)) {
        fprintf(stderr, "copse run: the output head has %u rows but the vocabulary %d tokens\n",
                copse__forward_hparams(s->fwd)->n_vocab, copse__tokenizer_n_vocab(s->tok));
        return -1;
    }
    if (copse__sampling_validate(&o->sp, err, sizeof err) != COPSE_OK) {
        fprintf(stderr, "copse run: %s\n", err);
        return -1;
    }
    copse_token eos[64];
    copse_engine_params ep = copse__engine_default_params();
    ep.max_running = 1;
    ep.step_tokens = 256;
    ep.drafters = o->drafts;
    ep.gguf = g;
    ep.n_drafters = o->n_drafts;
    ep.spec_nodes = o->spec_nodes;
    ep.spec_depth = o->spec_depth;
    ep.n_threads = o->threads;
    ep.adaptive = !o->fixed_budget;
    ep.eos = eos;
    ep.n_eos = copse__tokenizer_eog_list(s->tok, eos, 64);
    if (copse__engine_create(s->fwd, &ep, &s->eng, err, sizeof err) != COPSE_OK) {
        fprintf(stderr, "copse run: %s\n", err);
        return -1;
    }
    s->drafter_mask = o->n_drafts ? (1u << o->n_drafts) - 1 : 0;
    if (o->chat) {
        char note[256];
        if (copse__chat_format_from_gguf(g, &s->fmt, note, sizeof note) != COPSE_OK) {
            fprintf(stderr, "copse run: out of memory\n");
            return -1;
        }
        if (note[0])
            fprintf(stderr, "copse: %s\n", note);
    }
    fprintf(stderr, "copse: %s, %u layers, width %u, vocabulary %u; context %d; ready in %.2fs\n", hp.arch,
            hp.n_layer, hp.n_embd, hp.n_vocab, s->ctx, now_s() - t0);
    return 0;
}

static void session_close(session *s)
{
    copse__engine_destroy(s->eng);
    copse__chat_format_destroy(s->fmt);
    copse__forward_destroy(s->fwd);
    copse_model_destroy(s->model);
}

/* Tokenize a prompt; *ids malloc'ed. Returns its length, or -1 (message printed). */
static int32_t tokenize(session *s, const char *text, int add_special, copse_token **ids)
{
    size_t n = 0;
    int flags = COPSE_TOKENIZE_PARSE_SPECIAL | (add_special ? COPSE_TOKENIZE_ADD_SPECIAL : 0);
    copse__tokenizer_encode(s->tok, text, strlen(text), flags, NULL, 0, &n);
    *ids = malloc(sizeof **ids * (n ? n : 1));
    if (!*ids || copse__tokenizer_encode(s->tok, text, strlen(text), flags, *ids, n, &n) != COPSE_OK) {
        fprintf(stderr, "copse run: cannot tokenize the prompt\n");
        return -1;
    }
    if (n == 0) {
        fprintf(stderr, "copse run: the prompt is empty\n");
        return -1;
    }
    if (n >= (size_t)s->ctx) {
        fprintf(stderr, "copse run: the prompt has %zu tokens but the context holds %d (see --ctx)\n", n, s->ctx);
        return -1;
    }
    return (int32_t)n;
}

/* Append text to a growing reply buffer (reply may be NULL: nothing kept). */
static int append(char **reply, size_t *rlen, size_t *rcap, const char *piece, size_t w)
{
    if (!reply)
        return 0;
    if (*rlen + w + 1 > *rcap) {
        *rcap = (*rlen + w + 1) * 2;
        char *nr = realloc(*reply, *rcap);
        if (!nr)
            return -1;
        *reply = nr;
    }
    memcpy(*reply + *rlen, piece, w);
    *rlen += w;
    (*reply)[*rlen] = 0;
    return 0;
}

typedef struct gen_result {
    double prompt_s, gen_s;     /* time to the first token; after it */
    int32_t n_prompt, n_gen;
    uint64_t proposed, accepted, spec_steps;
    copse_finish finish;
} gen_result;

/* Generate from prompt tokens through the engine, streaming the text to
 * standard output when `print`; the text is appended to *reply when reply is
 * not NULL. drafters: the engine drafter mask (0: plain decoding). */
static int generate(session *s, const copse_token *ids, int32_t n, uint32_t drafters, int print, char **reply,
                    gen_result *gr)
{
    memset(gr, 0, sizeof *gr);
    char err[512];
    copse_request_params rp = copse__request_default_params();
    rp.prompt = ids;
    rp.n_prompt = n;
    rp.max_tokens = s->o->n_predict;
    rp.sampling = s->o->sp;
    rp.drafters = drafters;
    uint64_t id;
    if (copse__engine_submit(s->eng, &rp, NULL, &id, err, sizeof err) != COPSE_OK) {
        fprintf(stderr, "copse run: %s\n", err);
        return -1;
    }
    copse_detok_stream ds;
    copse__detok_stream_init(s->tok, &ds);
    size_t rlen = 0, rcap = 0;
    char piece[512];
    int rc = 0;
    double t0 = now_s(), t_first = 0;
    while (!copse__engine_idle(s->eng)) {
        const copse_engine_event *ev;
        int32_t n_ev;
        if (copse__engine_step(s->eng, &ev, &n_ev, err, sizeof err) != COPSE_OK) {
            fprintf(stderr, "\ncopse run: %s\n", err);
            return -1;
        }
        for (int32_t k = 0; k < n_ev; k++) {
            const copse_engine_event *e = &ev[k];
            if (e->n_tokens && t_first == 0)
                t_first = now_s();
            for (int32_t i = 0; i < e->n_tokens; i++) {
                if (copse__tokenizer_is_eog(s->tok, e->tokens[i]))
                    continue;
                int w = copse__detok_stream_push(s->tok, &ds, e->tokens[i], false, piece, sizeof piece);
                if (w > 0) {
                    if (print) {
                        fwrite(piece, 1, (size_t)w, stdout);
                        fflush(stdout);
                    }
                    if (append(reply, &rlen, &rcap, piece, (size_t)w) != 0)
                        rc = -1;
                }
            }
            gr->n_gen = e->n_generated;
            gr->proposed = e->proposed;
            gr->accepted = e->accepted;
            gr->spec_steps = e->spec_steps;
            if (e->finish == COPSE_FINISH_ERROR) {
                fprintf(stderr, "\ncopse run: %s\n", e->error);
                rc = -1;
            }
            if (e->finish != COPSE_FINISH_NONE)
                gr->finish = e->finish;
        }
    }
    int w = copse__detok_stream_flush(&ds, piece, sizeof piece);
    if (w > 0) {
        if (print)
            fwrite(piece, 1, (size_t)w, stdout);
        if (append(reply, &rlen, &rcap, piece, (size_t)w) != 0)
            rc = -1;
    }
    fflush(stdout);
    double t1 = now_s();
    if (t_first == 0)
        t_first = t1;
    gr->n_prompt = n;
    gr->prompt_s = t_first - t0;
    gr->gen_s = t1 - t_first;
    return rc;
}

static void account(session *s, const gen_result *gr)
{
    s->prompt_tokens += (uint64_t)gr->n_prompt;
    s->prompt_s += gr->prompt_s;
    s->gen_tokens += (uint64_t)gr->n_gen;
    s->gen_s += gr->gen_s;
    s->proposed += gr->proposed;
    s->accepted += gr->accepted;
    s->spec_steps += gr->spec_steps;
}

/* Per-drafter acceptance, then the request's totals. */
static void print_spec_stats(const session *s)
{
    for (int32_t i = 0; i < copse__engine_n_drafters(s->eng); i++) {
        copse_drafter_stats d = copse__engine_drafter_stats(s->eng, i);
        fprintf(stderr,
                "copse: draft %s: steps %llu, proposed %llu, accepted %llu (%.1f%%), mean accepted length %.2f, "
                "drafting %.3fs\n",
                d.spec, (unsigned long long)d.steps, (unsigned long long)d.proposed, (unsigned long long)d.accepted,
                d.proposed ? 100.0 * (double)d.accepted / (double)d.proposed : 0.0,
                d.steps ? (double)d.accepted / (double)d.steps : 0.0, d.draft_s);
    }
    copse_engine_stats es = copse__engine_stats(s->eng);
    fprintf(stderr,
            "copse: %llu steps (%llu speculative), accepted %llu of %llu proposed; time in forward %.3fs, "
            "drafting %.3fs, verifying %.3fs\n",
            (unsigned long long)es.steps, (unsigned long long)s->spec_steps, (unsigned long long)s->accepted,
            (unsigned long long)s->proposed, es.forward_s, es.draft_s, es.verify_s);
}

static char *read_all(FILE *f)
{
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap);
    size_t r;
    while (buf && (r = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += r;
        if (cap - len < 2) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                return NULL;
            }
            buf = nb;
            cap *= 2;
        }
    }
    if (buf)
        buf[len] = 0;
    return buf;
}

static int chat_turn(session *s, copse_chat_msg *msgs, size_t n, char **reply)
{
    char *text = NULL, err[256];
    if (copse__chat_format_render(s->fmt, msgs, n, true, &text, err, sizeof err) != COPSE_OK) {
        fprintf(stderr, "copse run: %s\n", err);
        return -1;
    }
    /* the rendered text carries BOS where the template writes it */
    copse_token *ids = NULL;
    int32_t nt = tokenize(s, text, 0, &ids);
    free(text);
    int rc = -1;
    if (nt > 0) {
        gen_result gr;
        rc = generate(s, ids, nt, s->drafter_mask, 1, reply, &gr);
        account(s, &gr);
    }
    free(ids);
    return rc;
}

static int run_chat(session *s)
{
    const run_opts *o = s->o;
    size_t cap = 16, n = 0;
    copse_chat_msg *msgs = calloc(cap, sizeof *msgs);
    char **owned = calloc(cap, sizeof *owned);
    int rc = 0;
    if (!msgs || !owned)
        return -1;
    if (o->system)
        msgs[n++] = (copse_chat_msg){.role = "system", .content = o->system};
    if (o->prompt) {
        msgs[n++] = (copse_chat_msg){.role = "user", .content = o->prompt};
        rc = chat_turn(s, msgs, n, NULL);
        printf("\n");
    } else {
        char line[8192];
        const int tty = isatty(STDIN_FILENO);
        while (rc == 0) {
            if (tty)
                fprintf(stderr, "> ");
            if (!fgets(line, sizeof line, stdin))
                break;
            line[strcspn(line, "\n")] = 0;
            if (!line[0])
                continue;
            if (n + 2 > cap) {
                cap *= 2;
                copse_chat_msg *nm = realloc(msgs, cap * sizeof *msgs);
                char **no = realloc(owned, cap * sizeof *owned);
                if (!nm || !no) {
                    free(nm ? nm : msgs);
                    free(no ? no : owned);
                    return -1;
                }
                msgs = nm;
                owned = no;
            }
            owned[n] = strdup(line);
            msgs[n] = (copse_chat_msg){.role = "user", .content = owned[n]};
            n++;
            char *reply = NULL;
            rc = chat_turn(s, msgs, n, &reply);
            printf("\n");
            owned[n] = reply ? reply : strdup("");
            msgs[n] = (copse_chat_msg){.role = "assistant", .content = owned[n]};
            n++;
        }
    }
    for (size_t i = 0; i < n; i++)
        free(owned[i]);
    free(owned);
    free(msgs);
    return rc;
}

/* One prompt: generate (streamed), then, with drafters and unless
 * --no-speedup, the same request as plain decoding for the speed-up. */
static int run_once(session *s, const char *text)
{
    copse_token *ids = NULL;
    int32_t n = tokenize(s, text, s->o->add_bos != 0, &ids);
    int rc = -1;
    if (n > 0) {
        gen_result spec, plain;
        char *a = NULL, *b = NULL;
        const int compare = s->drafter_mask && s->o->speedup;
        rc = generate(s, ids, n, s->drafter_mask, 1, compare ? &a : NULL, &spec);
        account(s, &spec);
        if (rc == 0 && compare && generate(s, ids, n, 0, 0, &b, &plain) == 0) {
            double sp_tps = spec.gen_s > 0 ? spec.n_gen / spec.gen_s : 0.0;
            double pl_tps = plain.gen_s > 0 ? plain.n_gen / plain.gen_s : 0.0;
            const int same = (a && b && !strcmp(a, b)) || (!a && !b);
            fprintf(stderr,
                    "\ncopse: speed-up over plain decoding: %.2fx (speculative %.1f tokens/s, plain %.1f tokens/s, "
                    "same prompt, same process)%s\n",
                    pl_tps > 0 ? sp_tps / pl_tps : 0.0, sp_tps, pl_tps,
                    s->o->sp.temperature == 0.0f ? (same ? "; outputs identical" : "; OUTPUTS DIFFER") : "");
        }
        free(a);
        free(b);
    }
    free(ids);
    return rc;
}

int copse__cmd_run(int argc, char **argv)
{
    run_opts o;
    int pr = parse_args(argc, argv, &o);
    if (pr != 0)
        return pr > 0 ? 0 : 2;
    session s;
    int rc = session_open(&s, &o);
    if (rc == 0) {
        if (o.chat) {
            rc = run_chat(&s);
        } else {
            char *stdin_text = o.prompt ? NULL : read_all(stdin);
            const char *text = o.prompt ? o.prompt : stdin_text;
            rc = text ? run_once(&s, text) : -1;
            free(stdin_text);
        }
        if (s.prompt_tokens || s.gen_tokens)
            fprintf(stderr, "\ncopse: prompt %llu tokens, %.1f tokens/s; generated %llu tokens, %.1f tokens/s\n",
                    (unsigned long long)s.prompt_tokens, s.prompt_s > 0 ? s.prompt_tokens / s.prompt_s : 0.0,
                    (unsigned long long)s.gen_tokens, s.gen_s > 0 ? s.gen_tokens / s.gen_s : 0.0);
        if (o.n_drafts)
            print_spec_stats(&s);
    }
    session_close(&s);
    return rc == 0 ? 0 : 1;
}
