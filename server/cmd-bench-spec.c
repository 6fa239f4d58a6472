/*
 * cmd-bench-spec.c — `copse bench spec`: speculative decoding against plain
 * decoding on a workload of categorized chat prompts.
 *
 * Every prompt (a user message, rendered with the model's chat template)
 * runs greedily once as plain decoding and once per drafter configuration
 * (each --draft alone, then all of them merged), one request at a time,
 * in this order, so each ratio is measured side by side in one process.
 * Each configuration has its own engine over the one forward state. Per category and configuration it reports tokens per
 * decoding step (plain decoding: 1), accepted draft nodes per speculative
 * step, and the wall speed-up of generation (first token to last) over
 * plain decoding; it also checks that every output equals the plain one.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend-impl.h"
#include "chat.h"
#include "commands.h"
#include "engine.h"
#include "forward.h"
#include "json-writer.h"
#include "model.h"
#include "tokenizer.h"

#define MAX_PROMPTS 256
#define MAX_CATS 16
#define MAX_CONFIGS (COPSE_ENGINE_MAX_DRAFTERS + 2)

typedef struct item {
    char *category;
    char *text; /* the user message */
} item;

typedef struct tally {
    double gen_s;
    uint64_t tokens, dec_steps, spec_steps, accepted, proposed;
    int prompts, mismatches;
} tally;

static void usage(FILE *f)
{
    fprintf(f, "usage: copse bench spec -m MODEL --workload FILE [--draft SPEC ...] [-n N] [--spec-nodes N]\n"
               "                        [--spec-depth D] [--no-adaptive] [--limit K] [-t THREADS] [--json]\n\n"
               "Runs each prompt of the workload (lines 'category<TAB>user message', '\\n' for newlines,\n"
               "'#' comments) greedily as plain decoding and with each drafter configuration (every\n"
               "--draft alone, then all merged; default: ngram and suffix), N new tokens each (default\n"
               "128), and reports per category: tokens per decoding step, accepted draft nodes per\n"
               "speculative step, and the generation speed-up over plain decoding measured in this run.\n");
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Read the workload; returns the number of items or -1 (message printed). */
static int read_workload(const char *path, item *items, int cap)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "copse bench spec: cannot open %s\n", path);
        return -1;
    }
    char line[16384];
    int n = 0, lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        line[strcspn(line, "\r\n")] = 0;
        if (!line[0] || line[0] == '#')
            continue;
        char *tab = strchr(line, '\t');
        if (!tab || tab == line || !tab[1]) {
            fprintf(stderr, "copse bench spec: %s:%d: expected 'category<TAB>message'\n", path, lineno);
            fclose(f);
            return -1;
        }
        if (n == cap) {
            fprintf(stderr, "copse bench spec: %s: more than %d prompts\n", path, cap);
            fclose(f);
            return -1;
        }
        *tab = 0;
        items[n].category = strdup(line);
        char *t = items[n].text = strdup(tab + 1);
        if (!items[n].category || !t) {
            fclose(f);
            return -1;
        }
        /* unescape \n, \t and \\ in place */
        char *w = t;
        for (const char *r = t; *r; r++) {
            if (r[0] == '\\' && (r[1] == 'n' || r[1] == 't' || r[1] == '\\')) {
                *w++ = r[1] == 'n' ? '\n' : r[1] == 't' ? '\t' : '\\';
                r++;
            } else {
                *w++ = *r;
            }
        }
        *w = 0;
        n++;
    }
    fclose(f);
    return n;
}

typedef struct run_out {
    copse_token *toks;
    int32_t n, cap;
    double gen_s;
    uint64_t dec_steps, spec_steps, accepted, proposed;
} run_out;

/* One greedy request through the engine. Returns 0 or -1. */
static int run_one(copse_engine *e, const copse_token *ids, int32_t n, int n_new, uint32_t mask, run_out *o)
{
    copse_request_params rp = copse__request_default_params();
    rp.prompt = ids;
    rp.n_prompt = n;
    rp.max_tokens = n_new;
    rp.sampling.temperature = 0.0f;
    rp.drafters = mask;
    uint64_t id;
    char err[256];
    if (copse__engine_submit(e, &rp, NULL, &id, err, sizeof err) != COPSE_OK) {
        fprintf(stderr, "copse bench spec: %s\n", err);
        return -1;
    }
    o->n = 0;
    o->dec_steps = 0;
    double t_first = 0;
    while (!copse__engine_idle(e)) {
        const copse_engine_event *ev;
        int32_t n_ev;
        if (copse__engine_step(e, &ev, &n_ev, err, sizeof err) != COPSE_OK) {
            fprintf(stderr, "copse bench spec: %s\n", err);
            return -1;
        }
        for (int32_t k = 0; k < n_ev; k++) {
            if (ev[k].finish == COPSE_FINISH_ERROR) {
                fprintf(stderr, "copse bench spec: %s\n", ev[k].error);
                return -1;
            }
            if (ev[k].n_tokens) {
                if (t_first == 0)
                    t_first = now_s();
                else
                    o->dec_steps++;
            }
            for (int32_t j = 0; j < ev[k].n_tokens && o->n < o->cap; j++)
                o->toks[o->n++] = ev[k].tokens[j];
            o->spec_steps = ev[k].spec_steps;
            o->accepted = ev[k].accepted;
            o->proposed = ev[k].proposed;
        }
    }
    o->gen_s = t_first > 0 ? now_s() - t_first : 0;
    return 0;
}

int copse__cmd_bench_spec(int argc, char **argv)
{
    const char *model = NULL, *workload = NULL;
    const char *drafts[COPSE_ENGINE_MAX_DRAFTERS];
    int n_drafts = 0, n_new = 128, nodes = 16, depth = 8, adaptive = 1, limit = 0, threads = 0, json = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            json = 1;
            continue;
        } else if (!strcmp(a, "--no-adaptive")) {
            adaptive = 0;
            continue;
        }
        if (!v) {
            fprintf(stderr, "copse bench spec: %s: missing value or unknown option (see --help)\n", a);
            return 2;
        }
        i++;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            model = v;
            continue;
        } else if (!strcmp(a, "--workload")) {
            workload = v;
            continue;
        } else if (!strcmp(a, "--draft")) {
            if (n_drafts == COPSE_ENGINE_MAX_DRAFTERS) {
                fprintf(stderr, "copse bench spec: at most %d --draft options\n", COPSE_ENGINE_MAX_DRAFTERS);
                return 2;
            }
            drafts[n_drafts++] = v;
            continue;
        }
        char *end;
        long x = strtol(v, &end, 10);
        if (*end || x < 0 || x > 1 << 16) {
            fprintf(stderr, "copse bench spec: %s: '%s' is not a count\n", a, v);
            return 2;
        }
        if (!strcmp(a, "-n"))
            n_new = (int)x;
        else if (!strcmp(a, "--spec-nodes"))
            nodes = (int)x;
        else if (!strcmp(a, "--spec-depth"))
            depth = (int)x;
        else if (!strcmp(a, "--limit"))
            limit = (int)x;
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads"))
            threads = (int)x;
        else {
            fprintf(stderr, "copse bench spec: unknown option '%s' (see --help)\n", a);
            return 2;
        }
    }
    if (!model || !workload || n_new < 1) {
        fprintf(stderr, "copse bench spec: need -m MODEL and --workload FILE (see --help)\n");
        return 2;
    }
    if (!n_drafts) {
        drafts[n_drafts++] = "ngram";
        drafts[n_drafts++] = "suffix";
    }
    static item items[MAX_PROMPTS];
    int n_items = read_workload(workload, items, MAX_PROMPTS);
    if (n_items <= 0)
        return 1;
    if (limit && limit < n_items)
        n_items = limit;

    char err[512];
    copse_model *m = NULL;
    copse_model_params mp = copse_model_default_params();
    if (copse_model_create(model, &mp, &m, err, sizeof err) != COPSE_OK) {
        fprintf(stderr, "copse bench spec: %s\n", err);
        return 1;
    }
    const copse_gguf *g = copse__model_gguf(m);
    const copse_tokenizer *tok = copse__model_tokenizer(m);
    copse_forward_params fp = copse__forward_default_params();
    fp.n_threads = threads;
    fp.max_seqs = 1;
    fp.max_ctx = 2048;
    fp.max_tokens = 256;
    copse_backend_reg *cpu = copse__backend_find("cpu");
    copse_forward *f = NULL;
    /* one engine per configuration: drafters that learn across requests (the
     * suffix pool) only see earlier prompts of their own configuration, never
     * another configuration's output for the same prompt */
    copse_engine *eng[MAX_CONFIGS] = {0};
    copse_chat_format *fmt = NULL;
    int rc = 1;
    copse_token eos[64];
    copse_engine_params ep = copse__engine_default_params();
    ep.max_running = 1;
    ep.step_tokens = 256;
    ep.drafters = drafts;
    ep.gguf = g;
    ep.n_drafters = n_drafts;
    ep.spec_nodes = nodes;
    ep.spec_depth = depth;
    ep.adaptive = adaptive;
    ep.n_threads = threads;
    ep.eos = eos;
    ep.n_eos = copse__tokenizer_eog_list(tok, eos, 64);
    char note[256];
    if (copse__forward_create(g, cpu->iface.dev_get(cpu, 0), &fp, &f, err, sizeof err) != COPSE_OK) {
        fprintf(stderr, "copse bench spec: %s\n", err);
        goto out;
    }
    for (int c = 0; c < 1 + n_drafts + (n_drafts > 1); c++)
        if (copse__engine_create(f, &ep, &eng[c], err, sizeof err) != COPSE_OK) {
            fprintf(stderr, "copse bench spec: %s\n", err);
            goto out;
        }
    if (copse__chat_format_from_gguf(g, &fmt, note, sizeof note) != COPSE_OK)
        goto out;

    /* configurations: 0 plain, 1..n each drafter, n+1 all merged */
    int n_cfg = 1 + n_drafts + (n_drafts > 1);
    uint32_t masks[MAX_CONFIGS];
    char names[MAX_CONFIGS][128];
    masks[0] = 0;
    snprintf(names[0], sizeof names[0], "plain");
    for (int d = 0; d < n_drafts; d++) {
        masks[1 + d] = 1u << d;
        snprintf(names[1 + d], sizeof names[0], "%s", drafts[d]);
    }
    if (n_drafts > 1) {
        masks[n_cfg - 1] = (1u << n_drafts) - 1;
        snprintf(names[n_cfg - 1], sizeof names[0], "merged");
    }
    const char *cats[MAX_CATS];
    int n_cats = 0;
    static tally tl[MAX_CATS + 1][MAX_CONFIGS]; /* last row: all categories */
    run_out ro[MAX_CONFIGS];
    for (int c = 0; c < n_cfg; c++) {
        ro[c].cap = n_new + 64;
        ro[c].toks = malloc(sizeof *ro[c].toks * (size_t)ro[c].cap);
        if (!ro[c].toks)
            goto out;
    }
    for (int i = 0; i < n_items; i++) {
        int ci = 0;
        while (ci < n_cats && strcmp(cats[ci], items[i].category))
            ci++;
        if (ci == n_cats) {
            if (n_cats == MAX_CATS) {
                fprintf(stderr, "copse bench spec: more than %d categories\n", MAX_CATS);
                goto out;
            }
            cats[n_cats++] = items[i].category;
        }
        copse_chat_msg msg = {.role = "user", .content = items[i].text};
        char *text = NULL;
        if (copse__chat_format_render(fmt, &msg, 1, true, &text, err, sizeof err) != COPSE_OK) {
            fprintf(stderr, "copse bench spec: %s\n", err);
            goto out;
        }
        size_t nt = 0;
        copse__tokenizer_encode(tok, text, strlen(text), COPSE_TOKENIZE_PARSE_SPECIAL, NULL, 0, &nt);
        copse_token *ids = malloc(sizeof *ids * (nt ? nt : 1));
        if (!ids || copse__tokenizer_encode(tok, text, strlen(text), COPSE_TOKENIZE_PARSE_SPECIAL, ids, nt, &nt) !=
                        COPSE_OK) {
            free(ids);
            free(text);
            goto out;
        }
        free(text);
        for (int c = 0; c < n_cfg; c++)
            if (run_one(eng[c], ids, (int32_t)nt, n_new, masks[c], &ro[c]) != 0) {
                free(ids);
                goto out;
            }
        free(ids);
        for (int c = 0; c < n_cfg; c++) {
            int same = ro[c].n == ro[0].n && !memcmp(ro[c].toks, ro[0].toks, sizeof *ro[0].toks * (size_t)ro[0].n);
            tally *rows[2] = {&tl[ci][c], &tl[MAX_CATS][c]};
            for (int k = 0; k < 2; k++) {
                rows[k]->gen_s += ro[c].gen_s;
                rows[k]->tokens += (uint64_t)(ro[c].n > 0 ? ro[c].n - 1 : 0);
                rows[k]->dec_steps += ro[c].dec_steps;
                rows[k]->spec_steps += ro[c].spec_steps;
                rows[k]->accepted += ro[c].accepted;
                rows[k]->proposed += ro[c].proposed;
                rows[k]->prompts++;
                rows[k]->mismatches += !same;
            }
        }
        if (!json)
            fprintf(stderr, "\r%d/%d prompts", i + 1, n_items);
    }
    if (!json)
        fprintf(stderr, "\n");

    if (json) {
        copse_jw jw = {.f = stdout};
        copse__jw_open(&jw, NULL, '{', false);
        copse__jw_cstr(&jw, "model", model);
        copse__jw_cstr(&jw, "workload", workload);
        copse__jw_i64(&jw, "new_tokens", n_new);
        copse__jw_i64(&jw, "spec_nodes", nodes);
        copse__jw_i64(&jw, "spec_depth", depth);
        copse__jw_bool(&jw, "adaptive", adaptive);
        copse__jw_open(&jw, "results", '[', false);
        for (int ci = 0; ci <= n_cats; ci++) {
            int row = ci == n_cats ? MAX_CATS : ci;
            for (int c = 0; c < n_cfg; c++) {
                const tally *t = &tl[row][c];
                copse__jw_open(&jw, NULL, '{', true);
                copse__jw_cstr(&jw, "category", ci == n_cats ? "all" : cats[ci]);
                copse__jw_cstr(&jw, "config", names[c]);
                copse__jw_i64(&jw, "prompts", t->prompts);
                copse__jw_f64(&jw, "tokens_per_step", t->dec_steps ? (double)t->tokens / (double)t->dec_steps : 0,
                              true);
                copse__jw_f64(&jw, "accepted_per_spec_step",
                              t->spec_steps ? (double)t->accepted / (double)t->spec_steps : 0, true);
                copse__jw_f64(&jw, "speedup", t->gen_s > 0 ? tl[row][0].gen_s / t->gen_s : 0, true);
                copse__jw_f64(&jw, "gen_tokens_per_s", t->gen_s > 0 ? (double)t->tokens / t->gen_s : 0, true);
                copse__jw_i64(&jw, "mismatches", t->mismatches);
                copse__jw_close(&jw, '}');
            }
        }
        copse__jw_close(&jw, ']');
        copse__jw_close(&jw, '}');
        fputc('\n', stdout);
    } else {
        printf("%-10s %-10s %7s %11s %12s %9s %9s %6s\n", "category", "config", "prompts", "tokens/step",
               "accepted/spec", "tokens/s", "speed-up", "same");
        for (int ci = 0; ci <= n_cats; ci++) {
            int row = ci == n_cats ? MAX_CATS : ci;
            for (int c = 0; c < n_cfg; c++) {
                const tally *t = &tl[row][c];
                printf("%-10s %-10s %7d %11.2f %12.2f %9.1f %8.2fx %6s\n", ci == n_cats ? "all" : cats[ci], names[c],
                       t->prompts, t->dec_steps ? (double)t->tokens / (double)t->dec_steps : 0.0,
                       t->spec_steps ? (double)t->accepted / (double)t->spec_steps : 0.0,
                       t->gen_s > 0 ? (double)t->tokens / t->gen_s : 0.0,
                       t->gen_s > 0 ? tl[row][0].gen_s / t->gen_s : 0.0, t->mismatches ? "NO" : "yes");
            }
        }
    }
    rc = 0;
    for (int ci = 0; ci < MAX_CONFIGS; ci++)
        if (tl[MAX_CATS][ci].mismatches) {
            fprintf(stderr, "copse bench spec: %d outputs of %s differ from plain decoding\n",
                    tl[MAX_CATS][ci].mismatches, names[ci]);
            rc = 1;
        }
out:
    for (int c = 0; c < MAX_CONFIGS; c++)
        if (c < 1 + n_drafts + (n_drafts > 1))
            free(ro[c].toks);
    for (int i = 0; i < MAX_PROMPTS; i++) {
        free(items[i].category);
        free(items[i].text);
    }
    copse__chat_format_destroy(fmt);
    for (int c = 0; c < MAX_CONFIGS; c++)
        copse__engine_destroy(eng[c]);
    copse__forward_destroy(f);
    copse_model_destroy(m);
    return rc;
}
