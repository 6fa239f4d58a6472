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
#include "chat.h"
#include "commands.h"
#include "copse.h"
#include "forward.h"
#include "model.h"
#include "sampling.h"
#include "spec/engine.h"
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
    const char *draft; /* drafter spec for speculative decoding, or NULL */
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
            "      --draft SPEC        speculative decoding with a drafter: ngram, suffix,\n"
            "                          layerskip:N (the model's first N layers), model:FILE (a small\n"
            "                          GGUF with the same vocabulary, e.g. from 'copse slice')\n"
            "                          (default: none); acceptance stats go to standard error\n");
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
            o->draft = v;
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
    copse_sampler *sampler;
    copse_chat_format *fmt;
    copse_spec_engine *spec; /* NULL: plain decoding */
    int32_t seq;
    uint32_t n_vocab, max_tokens, ctx;
    copse_token *history; /* every token in the KV cache, in order [ctx] */
    uint32_t n_history;
    float *logits;        /* [n_vocab] */
    double prompt_s, gen_s;
    uint64_t prompt_tokens, gen_tokens;
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
    s->ctx = o->ctx ? (uint32_t)o->ctx : (hp.n_ctx_train < 4096 ? hp.n_ctx_train : 4096);
    fp.max_ctx = s->ctx;
    fp.max_tokens = s->max_tokens = 256;
    copse_backend_reg *cpu = copse__backend_find("cpu");
    if (copse__forward_create(g, cpu->iface.dev_get(cpu, 0), &fp, &s->fwd, err, sizeof err) != COPSE_OK) {
        fprintf(stderr, "copse run: %s\n", err);
        return -1;
    }
    s->n_vocab = copse__forward_hparams(s->fwd)->n_vocab;
    if ((int32_t)s->n_vocab != copse__tokenizer_n_vocab(s->tok)) {
        fprintf(stderr, "copse run: the output head has %u rows but the vocabulary %d tokens\n", s->n_vocab,
                copse__tokenizer_n_vocab(s->tok));
        return -1;
    }
    if (copse__sampler_create((int32_t)s->n_vocab, &s->sampler, err, sizeof err) != COPSE_OK ||
        copse__sampling_validate(&o->sp, err, sizeof err) != COPSE_OK) {
        fprintf(stderr, "copse run: %s\n", err);
        return -1;
    }
    if (o->chat) {
        char note[256];
        if (copse__chat_format_from_gguf(g, &s->fmt, note, sizeof note) != COPSE_OK) {
            fprintf(stderr, "copse run: out of memory\n");
            return -1;
        }
        if (note[0])
            fprintf(stderr, "copse: %s\n", note);
    }
    s->history = calloc(s->ctx, sizeof *s->history);
    s->logits = malloc(sizeof(float) * s->n_vocab);
    if (!s->history || !s->logits || copse__kvcache_seq_add(copse__forward_kv(s->fwd), &s->seq) != COPSE_OK) {
        fprintf(stderr, "copse run: out of memory\n");
        return -1;
    }
    if (o->draft) {
        copse_spec_params sp = copse__spec_default_params();
        sp.sampling = o->sp;
        sp.max_len = s->ctx;
        sp.target_gguf = g;
        sp.n_threads = o->threads;
        if (copse__spec_create(s->fwd, s->seq, o->draft, &sp, &s->spec, err, sizeof err) != COPSE_OK) {
            fprintf(stderr, "copse run: --draft %s: %s\n", o->draft, err);
            return -1;
        }
    }
    fprintf(stderr, "copse: %s, %u layers, width %u, vocabulary %u; context %u; ready in %.2fs\n", hp.arch,
            hp.n_layer, hp.n_embd, hp.n_vocab, s->ctx, now_s() - t0);
    return 0;
}

static void session_close(session *s)
{
    copse__spec_destroy(s->spec);
    copse__chat_format_destroy(s->fmt);
    copse__sampler_destroy(s->sampler);
    copse__forward_destroy(s->fwd);
    copse_model_destroy(s->model);
    free(s->history);
    free(s->logits);
}

/* Feed tokens after the cached history, in chunks; leaves the logits of the
 * last one in s->logits. Returns 0 or -1 (message printed). */
static int feed(session *s, const copse_token *ids, uint32_t n)
{
    char err[512];
    if (s->n_history + n > s->ctx) {
        fprintf(stderr, "\ncopse run: context full (%u tokens)\n", s->ctx);
        return -1;
    }
    for (uint32_t at = 0; at < n;) {
        int32_t m = (int32_t)(n - at < s->max_tokens ? n - at : s->max_tokens);
        int32_t first = 0, last = m - 1;
        copse_fwd_batch b = {.n_tokens = m, .tokens = ids + at, .n_seqs = 1, .seq = &s->seq, .first = &first,
                             .n_new = &m, .n_logits = 1, .logit_rows = &last};
        if (copse__forward_run(s->fwd, &b, s->logits, err, sizeof err) != COPSE_OK) {
            fprintf(stderr, "\ncopse run: %s\n", err);
            return -1;
        }
        copse__kvcache_commit(copse__forward_kv(s->fwd), s->seq, (uint32_t)m);
        memcpy(s->history + s->n_history, ids + at, sizeof *ids * (size_t)m);
        s->n_history += (uint32_t)m;
        at += (uint32_t)m;
    }
    return 0;
}

/* Process the text of a prompt: keep the cached tokens it shares as a
 * prefix, drop the rest from the KV cache, feed the new ones. */
static int prompt(session *s, const char *text, int add_special)
{
    size_t n = 0;
    int flags = COPSE_TOKENIZE_PARSE_SPECIAL | (add_special ? COPSE_TOKENIZE_ADD_SPECIAL : 0);
    copse__tokenizer_encode(s->tok, text, strlen(text), flags, NULL, 0, &n);
    copse_token *ids = malloc(sizeof *ids * (n ? n : 1));
    if (!ids || copse__tokenizer_encode(s->tok, text, strlen(text), flags, ids, n, &n) != COPSE_OK) {
        free(ids);
        fprintf(stderr, "copse run: cannot tokenize the prompt\n");
        return -1;
    }
    if (n > s->ctx) {
        fprintf(stderr, "copse run: the prompt has %zu tokens but the context holds %u (see --ctx)\n", n, s->ctx);
        free(ids);
        return -1;
    }
    uint32_t keep = 0;
    while (keep < s->n_history && keep < n && s->history[keep] == ids[keep])
        keep++;
    if (keep == n && keep > 0) /* re-feed the last token to get its logits */
        keep--;
    copse__kvcache_truncate(copse__forward_kv(s->fwd), s->seq, keep);
    s->n_history = keep;
    double t0 = now_s();
    int rc = n == 0 ? 0 : feed(s, ids + keep, (uint32_t)(n - keep));
    s->prompt_s += now_s() - t0;
    s->prompt_tokens += n - keep;
    free(ids);
    if (n == 0) {
        fprintf(stderr, "copse run: the prompt is empty\n");
        return -1;
    }
    return rc;
}

/* Detokenize one generated token to standard output (and *reply). */
static int emit_token(session *s, copse_detok_stream *ds, copse_token t, char **reply, size_t *rlen, size_t *rcap)
{
    char piece[512];
    int w = copse__detok_stream_push(s->tok, ds, t, false, piece, sizeof piece);
    if (w > 0) {
        fwrite(piece, 1, (size_t)w, stdout);
        fflush(stdout);
        if (reply) {
            if (*rlen + (size_t)w + 1 > *rcap) {
                *rcap = (*rlen + (size_t)w + 1) * 2;
                char *nr = realloc(*reply, *rcap);
                if (!nr)
                    return -1;
                *reply = nr;
            }
            memcpy(*reply + *rlen, piece, (size_t)w);
            *rlen += (size_t)w;
            (*reply)[*rlen] = 0;
        }
    }
    return 0;
}

static bool spec_stop_cb(void *ud, copse_token t, int32_t index)
{
    (void)index;
    const session *s = ud;
    return copse__tokenizer_is_eog(s->tok, t);
}

/* Speculative generation after the first token t0 (emitted, not in the KV
 * cache, not end-of-generation): steps the engine until n_predict tokens
 * are out or one ends the generation, then leaves the session as plain
 * decoding would (every emitted token in the cache, an end-of-generation
 * token only in chat mode). */
static int generate_spec(session *s, copse_token t0, int emitted, copse_detok_stream *ds, char **reply,
                         size_t *rlen, size_t *rcap)
{
    char err[512];
    if (copse__spec_begin(s->spec, s->history, s->n_history, t0, err, sizeof err) != COPSE_OK) {
        fprintf(stderr, "\ncopse run: %s\n", err);
        return -1;
    }
    copse_token last = t0;
    int rc = 0;
    while (emitted < s->o->n_predict) {
        const copse_token *toks;
        int32_t n;
        copse_verify_stop stop;
        if (copse__spec_step(s->spec, spec_stop_cb, s, s->o->n_predict - emitted, &toks, &n, &stop, err,
                             sizeof err) != COPSE_OK) {
            fprintf(stderr, "\ncopse run: %s\n", err);
            rc = -1;
            break;
        }
        int done = 0;
        for (int32_t i = 0; i < n && !done; i++) {
            last = toks[i];
            s->gen_tokens++;
            emitted++;
            if (copse__tokenizer_is_eog(s->tok, last))
                done = 1;
            else if (emit_token(s, ds, last, reply, rlen, rcap) != 0)
                return -1;
        }
        if (done || stop != COPSE_VERIFY_CONTINUE)
            break;
    }
    /* the session's view of the cache: the engine's committed tokens */
    uint32_t nc;
    const copse_token *committed = copse__spec_committed(s->spec, &nc);
    memcpy(s->history, committed, sizeof *committed * nc);
    s->n_history = nc;
    if (rc == 0 && (!copse__tokenizer_is_eog(s->tok, last) || s->o->chat) && feed(s, &last, 1) != 0)
        rc = -1;
    return rc;
}

static void print_spec_stats(const session *s)
{
    copse_spec_stats st = copse__spec_stats(s->spec);
    fprintf(stderr,
            "copse: draft %s: steps %llu, proposed %llu, accepted %llu (%.1f%%), mean accepted length %.2f, "
            "tokens/step %.2f\n",
            copse__spec_drafter_name(s->spec), (unsigned long long)st.steps, (unsigned long long)st.proposed,
            (unsigned long long)st.accepted, st.proposed ? 100.0 * (double)st.accepted / (double)st.proposed : 0.0,
            st.steps ? (double)st.accepted / (double)st.steps : 0.0,
            st.steps ? (double)st.emitted / (double)st.steps : 0.0);
}

/* Sample and stream up to n_predict tokens; the generated text is appended to
 * *reply (malloc'ed) when reply is not NULL. */
static int generate(session *s, char **reply)
{
    copse_detok_stream ds;
    copse__detok_stream_init(s->tok, &ds);
    size_t rlen = 0, rcap = 0;
    char piece[512];
    int rc = 0;
    double t0 = now_s();
    for (int i = 0; i < s->o->n_predict; i++) {
        copse_token t;
        copse_status st = copse__sampling_sample_token(s->sampler, &s->o->sp, s->logits, s->history,
                                                       s->n_history, 0, s->n_history, &t);
        if (st != COPSE_OK) {
            fprintf(stderr, "\ncopse run: sampling failed: %s\n", copse__sampler_error(s->sampler));
            rc = -1;
            break;
        }
        s->gen_tokens++;
        if (copse__tokenizer_is_eog(s->tok, t)) {
            /* keep the end-of-turn in the cache: the next chat turn's text starts with it */
            if (s->o->chat && feed(s, &t, 1) != 0)
                rc = -1;
            break;
        }
        if (emit_token(s, &ds, t, reply, &rlen, &rcap) != 0)
            return -1;
        if (s->spec) {
            rc = generate_spec(s, t, i + 1, &ds, reply, &rlen, &rcap);
            break;
        }
        if (feed(s, &t, 1) != 0) {
            rc = -1;
            break;
        }
    }
    int w = copse__detok_stream_flush(&ds, piece, sizeof piece);
    if (w > 0)
        fwrite(piece, 1, (size_t)w, stdout);
    fflush(stdout);
    s->gen_s += now_s() - t0;
    return rc;
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
    int rc = prompt(s, text, 0);
    free(text);
    return rc == 0 ? generate(s, reply) : rc;
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
            int add = o.add_bos != 0;
            rc = text ? prompt(&s, text, add) : -1;
            if (rc == 0)
                rc = generate(&s, NULL);
            free(stdin_text);
        }
        if (s.prompt_tokens || s.gen_tokens)
            fprintf(stderr, "\ncopse: prompt %llu tokens, %.1f tokens/s; generated %llu tokens, %.1f tokens/s\n",
                    (unsigned long long)s.prompt_tokens, s.prompt_s > 0 ? s.prompt_tokens / s.prompt_s : 0.0,
                    (unsigned long long)s.gen_tokens, s.gen_s > 0 ? s.gen_tokens / s.gen_s : 0.0);
        if (s.spec)
            print_spec_stats(&s);
    }
    session_close(&s);
    return rc == 0 ? 0 : 1;
}
