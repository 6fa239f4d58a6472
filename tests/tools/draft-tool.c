/*
 * draft-tool.c — checks of the model drafters (layerskip:N, model:FILE) on a
 * real model, run by tests/model/test_drafters.py:
 *
 *   draft-tool MODEL SLICED8 TMPDIR
 *
 * SLICED8 is `copse slice MODEL --layers 8`. Oracles: the sliced model run as
 * a plain model (its logits, its greedy continuations), plain greedy decoding
 * of MODEL, and a plain prefill of the committed tokens (KV contents). Prints
 * "ok ..." / "FAIL ..." lines; exit 0 when all pass, 1 otherwise.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend-impl.h"
#include "forward.h"
#include "gguf-write.h"
#include "gguf.h"
#include "quant.h"
#include "spec/drafter.h"
#include "spec/drafters/drafters-impl.h"
#include "spec/engine.h"
#include "spec/tree.h"

#define SLICE_LAYERS 8
#define MAX_CTX 512
#define LAST_ONLY 0xffffffffu /* prefill(): n_layers value asking for the last row's logits only */

static int failures;
static uint32_t V;
static copse_backend_dev *dev;

#define CHECK(cond, ...)                       \
    do {                                       \
        printf((cond) ? "ok   " : "FAIL ");    \
        printf(__VA_ARGS__);                   \
        printf("\n");                          \
        if (!(cond))                           \
            failures++;                        \
        fflush(stdout);                        \
    } while (0)

/* Token ids of test prompts (SmolLM2's vocabulary): a repetitive one, code,
 * a plain question. */
static const copse_token P0[] = {504, 2644, 2643, 335, 260, 1171, 30, 378, 2644, 2643, 335, 260, 1171, 30, 378};
static const copse_token P1[] = {1604, 803, 24, 81, 28, 278, 727, 76, 94, 333, 1003, 253, 1232, 278, 76, 94};
static const copse_token P2[] = {504, 3575, 282, 4649, 314};
static const struct {
    const copse_token *ids;
    int32_t n;
} prompts[] = {{P0, 15}, {P1, 16}, {P2, 5}};

/* ---------------------------------------------------------------- helpers */

static copse_forward *make_forward(const copse_gguf *g)
{
    copse_forward_params fp = copse__forward_default_params();
    fp.max_seqs = 4;
    fp.max_ctx = MAX_CTX;
    fp.max_tokens = 128;
    copse_forward *f = NULL;
    char err[256];
    if (copse__forward_create(g, dev, &fp, &f, err, sizeof err) != COPSE_OK) {
        fprintf(stderr, "draft-tool: forward: %s\n", err);
        exit(1);
    }
    return f;
}

/* Prefill ids as a new sequence of f (first n_layers, 0 all); logits of every
 * row into out (may be NULL). Returns the sequence id. */
static int32_t prefill(copse_forward *f, const copse_token *ids, int32_t n, uint32_t n_layers, float *out)
{
    int32_t seq;
    if (copse__kvcache_seq_add(copse__forward_kv(f), &seq) != COPSE_OK) {
        fprintf(stderr, "draft-tool: no free KV sequence\n");
        exit(1);
    }
    if (n == 0)
        return seq;
    int32_t rows[128], first = 0, n_logits = out ? n : 0;
    for (int32_t i = 0; i < n; i++)
        rows[i] = i;
    if (n_layers == LAST_ONLY) { /* logits of the last token only */
        n_layers = 0;
        rows[0] = n - 1;
        n_logits = out ? 1 : 0;
    }
    copse_fwd_batch b = {.n_tokens = n, .tokens = ids, .n_seqs = 1, .seq = &seq, .first = &first, .n_new = &n,
                         .n_logits = n_logits, .logit_rows = rows, .n_layers = n_layers};
    char err[256];
    if (copse__forward_run(f, &b, out, err, sizeof err) != COPSE_OK) {
        fprintf(stderr, "draft-tool: prefill: %s\n", err);
        exit(1);
    }
    copse__kvcache_commit(copse__forward_kv(f), seq, (uint32_t)n);
    return seq;
}

/* Logits of the last token of ids under f (a throwaway sequence). */
static void last_logits(copse_forward *f, const copse_token *ids, int32_t n, float *out, float *scratch)
{
    (void)scratch;
    int32_t seq = prefill(f, ids, n, LAST_ONLY, out);
    copse__kvcache_seq_free(copse__forward_kv(f), seq);
}

/* Plain greedy decoding of n_gen tokens after ids[0, n) into out. */
static void greedy(copse_forward *f, const copse_token *ids, int32_t n, int32_t n_gen, copse_token *out, float *l)
{
    int32_t seq = prefill(f, ids, n, LAST_ONLY, l);
    char err[256];
    for (int32_t i = 0; i < n_gen; i++) {
        copse_token t = -1;
        for (uint32_t v = 0; v < V; v++)
            if (t < 0 || l[v] > l[t])
                t = (copse_token)v;
        out[i] = t;
        int32_t first = 0, one = 1, row = 0;
        copse_fwd_batch b = {.n_tokens = 1, .tokens = &out[i], .n_seqs = 1, .seq = &seq, .first = &first,
                             .n_new = &one, .n_logits = 1, .logit_rows = &row};
        if (copse__forward_run(f, &b, l, err, sizeof err) != COPSE_OK) {
            fprintf(stderr, "draft-tool: decode: %s\n", err);
            exit(1);
        }
        copse__kvcache_commit(copse__forward_kv(f), seq, 1);
    }
    copse__kvcache_seq_free(copse__forward_kv(f), seq);
}

static double softmax_p(const float *l, copse_token t)
{
    double mx = -INFINITY, z = 0.0;
    for (uint32_t i = 0; i < V; i++)
        mx = l[i] > mx ? l[i] : mx;
    for (uint32_t i = 0; i < V; i++)
        z += exp((double)l[i] - mx);
    return exp((double)l[t] - mx) / z;
}

static copse_token argmax_in(const float *l, const uint8_t *allowed)
{
    copse_token best = -1;
    for (uint32_t i = 0; i < V; i++)
        if ((!allowed || allowed[i]) && (best < 0 || l[i] > l[best]))
            best = (copse_token)i;
    return best;
}

static copse_drafter_params dparams(copse_forward *target, const copse_gguf *g)
{
    copse_drafter_params p = copse__drafter_default_params();
    p.n_vocab = (int32_t)V;
    p.max_seqs = 4;
    p.max_nodes = 32;
    p.max_depth = 8;
    p.target = target;
    p.target_gguf = g;
    p.n_threads = 0;
    p.draft_max_ctx = MAX_CTX;
    return p;
}

static copse_drafter *make_drafter(const char *spec, const copse_drafter_params *p)
{
    copse_drafter *d = NULL;
    char err[512];
    if (copse__drafter_create(spec, p, &d, err, sizeof err) != COPSE_OK) {
        fprintf(stderr, "draft-tool: drafter %s: %s\n", spec, err);
        exit(1);
    }
    return d;
}

/* ---------------------------------------------------------------- checks */

/* The sliced model's logits equal the target's first-8-layers draft logits. */
static void check_slice_logits(copse_forward *f, copse_forward *fs)
{
    for (size_t k = 0; k < sizeof prompts / sizeof prompts[0]; k++) {
        const int32_t n = prompts[k].n;
        float *a = malloc(sizeof *a * (size_t)n * V), *b = malloc(sizeof *b * (size_t)n * V);
        int32_t s1 = prefill(f, prompts[k].ids, n, SLICE_LAYERS, a);
        int32_t s2 = prefill(fs, prompts[k].ids, n, 0, b);
        double worst = 0.0;
        for (size_t i = 0; i < (size_t)n * V; i++) {
            double d = fabs((double)a[i] - b[i]) / (fabs((double)b[i]) + 1e-3);
            worst = d > worst ? d : worst;
        }
        CHECK(worst <= 1e-5, "prompt %zu: sliced model logits == layerskip:%d logits (max rel diff %.3g)", k,
              SLICE_LAYERS, worst);
        copse__kvcache_seq_free(copse__forward_kv(f), s1);
        copse__kvcache_seq_free(copse__forward_kv(fs), s2);
        free(a);
        free(b);
    }
}

/* layerskip:8 greedy chains equal greedy decoding of the sliced model, with
 * and without a reduced vocabulary. */
static void check_chains(copse_forward *f, copse_forward *fs, const copse_gguf *g, int32_t draft_vocab)
{
    copse_drafter_params p = dparams(f, g);
    p.draft_width = 1;
    p.max_branch = 1;
    p.draft_vocab = draft_vocab;
    copse_drafter *d = make_drafter("layerskip:8", &p);
    uint8_t *allowed = NULL;
    if (draft_vocab) {
        int32_t *ids = malloc(sizeof *ids * (size_t)draft_vocab);
        allowed = calloc(V, 1);
        copse__draft_vocab_ids(g, (int32_t)V, draft_vocab, ids);
        for (int32_t i = 0; i < draft_vocab; i++)
            allowed[ids[i]] = 1;
        free(ids);
    }
    copse_tree *t;
    copse__tree_create(32, 8, 0, &t);
    float *l = malloc(sizeof *l * V), *scratch = malloc(sizeof *scratch * 128 * V);
    int restricted = 0;
    for (size_t k = 0; k < sizeof prompts / sizeof prompts[0]; k++) {
        const int32_t n = prompts[k].n, depth = 6;
        int32_t seq = prefill(f, prompts[k].ids, n - 1, 0, NULL);
        d->iface.seq_begin(d, seq, prompts[k].ids, n - 1, MAX_CTX);
        copse_status st = d->iface.propose(d, seq, prompts[k].ids, n, depth, depth, t);
        copse__kvcache_truncate(copse__forward_kv(f), seq, (uint32_t)(n - 1));
        /* reference: greedy continuation of the sliced model */
        copse_token path[64];
        memcpy(path, prompts[k].ids, sizeof *path * (size_t)n);
        int ok = st == COPSE_OK && copse__tree_size(t) == depth;
        for (int32_t i = 0; ok && i < depth; i++) {
            last_logits(fs, path, n + i, l, scratch);
            path[n + i] = argmax_in(l, allowed);
            restricted += path[n + i] != argmax_in(l, NULL);
            const copse_tree_node *nd = copse__tree_node(t, i);
            ok = nd->token == path[n + i] && nd->parent == i - 1 && nd->n_q == 0;
            if (!ok)
                printf("  depth %d: drafted %d, reference %d\n", i + 1, nd->token, path[n + i]);
        }
        CHECK(ok, "prompt %zu: layerskip:8%s chain of %d == the sliced model's greedy continuation", k,
              draft_vocab ? " (reduced vocabulary)" : "", depth);
        d->iface.seq_end(d, seq);
        copse__kvcache_seq_free(copse__forward_kv(f), seq);
    }
    if (draft_vocab)
        CHECK(restricted > 0, "the reduced vocabulary changed %d of the reference's choices (the check bites)",
              restricted);
    free(l);
    free(scratch);
    free(allowed);
    copse__tree_destroy(t);
    copse__drafter_destroy(d);
}

/* Greedy trees: every node's p is the sliced model's probability of its
 * token after its path, first children are that distribution's argmax;
 * layerskip:8 and model:SLICED draft the same trees; one propose_batch over
 * all prompts gives the same trees as one propose each. */
static void check_trees(copse_forward *f, copse_forward *fs, const copse_gguf *g, const char *sliced)
{
    copse_drafter_params p = dparams(f, g);
    copse_drafter *ls = make_drafter("layerskip:8", &p);
    char spec[600];
    snprintf(spec, sizeof spec, "model:%s", sliced);
    copse_drafter *dm = make_drafter(spec, &p);
    const int32_t np = (int32_t)(sizeof prompts / sizeof prompts[0]);
    copse_tree *t1[3], *t2[3], *t3[3];
    for (int i = 0; i < np; i++) {
        copse__tree_create(32, 8, 0, &t1[i]);
        copse__tree_create(32, 8, 0, &t2[i]);
        copse__tree_create(32, 8, 0, &t3[i]);
    }
    int32_t seqs[3], n_ctx[3], budget[3], depth[3];
    const copse_token *ctx[3];
    for (int i = 0; i < np; i++) {
        seqs[i] = prefill(f, prompts[i].ids, prompts[i].n - 1, 0, NULL);
        ctx[i] = prompts[i].ids;
        n_ctx[i] = prompts[i].n;
        budget[i] = 16;
        depth[i] = 5;
        ls->iface.seq_begin(ls, seqs[i], ctx[i], n_ctx[i] - 1, MAX_CTX);
        dm->iface.seq_begin(dm, seqs[i], ctx[i], n_ctx[i] - 1, MAX_CTX);
    }
    copse_kvcache *kv = copse__forward_kv(f);
    int ok = 1;
    for (int i = 0; i < np; i++) {
        ok &= ls->iface.propose(ls, seqs[i], ctx[i], n_ctx[i], budget[i], depth[i], t1[i]) == COPSE_OK;
        copse__kvcache_truncate(kv, seqs[i], (uint32_t)(n_ctx[i] - 1));
    }
    ok &= ls->iface.propose_batch(ls, np, seqs, ctx, n_ctx, budget, depth, t2) == COPSE_OK;
    for (int i = 0; i < np; i++)
        copse__kvcache_truncate(kv, seqs[i], (uint32_t)(n_ctx[i] - 1));
    ok &= dm->iface.propose_batch(dm, np, seqs, ctx, n_ctx, budget, depth, t3) == COPSE_OK;
    CHECK(ok, "layerskip:8 propose, propose_batch and model:SLICED propose_batch succeed");

    float *l = malloc(sizeof *l * V), *scratch = malloc(sizeof *scratch * 128 * V);
    for (int i = 0; i < np; i++) {
        char verr[256];
        const int32_t sz = copse__tree_size(t1[i]);
        CHECK(copse__tree_validate(t1[i], verr, sizeof verr) == COPSE_OK && sz == 16 && copse__tree_depth(t1[i]) >= 2,
              "prompt %d: a valid tree of 16 nodes, depth %d", i, copse__tree_depth(t1[i]));
        int same_batch = copse__tree_size(t2[i]) == sz, same_model = copse__tree_size(t3[i]) == sz;
        for (int32_t k = 0; k < sz && (same_batch || same_model); k++) {
            const copse_tree_node *a = copse__tree_node(t1[i], k), *b = copse__tree_node(t2[i], k),
                                  *c = copse__tree_node(t3[i], k);
            same_batch &= a->token == b->token && a->parent == b->parent && a->p == b->p;
            same_model &= a->token == c->token && a->parent == c->parent && fabsf(a->p - c->p) <= 1e-6f;
        }
        CHECK(same_batch, "prompt %d: propose_batch over %d sequences == one propose each", i, np);
        CHECK(same_model, "prompt %d: model:SLICED tree == layerskip:8 tree", i);
        /* every node against the sliced model run as a plain model */
        double worst = 0.0;
        int first_ok = 1;
        copse_token path[128];
        memcpy(path, ctx[i], sizeof *path * (size_t)n_ctx[i]);
        for (int32_t k = 0; k < sz; k++) {
            const copse_tree_node *nd = copse__tree_node(t1[i], k);
            int32_t dpt = copse__tree_path(t1[i], nd->parent, path + n_ctx[i]);
            last_logits(fs, path, n_ctx[i] + dpt, l, scratch);
            double pr = softmax_p(l, nd->token);
            double rel = fabs(pr - nd->p) / pr;
            worst = rel > worst ? rel : worst;
            if (copse__tree_first_child(t1[i], nd->parent) == k) {
                copse_token best = argmax_in(l, NULL);
                first_ok &= nd->token == best || softmax_p(l, best) - pr <= 1e-6;
            }
        }
        CHECK(worst <= 1e-4, "prompt %d: node probabilities == the sliced model's (max rel diff %.3g)", i, worst);
        CHECK(first_ok, "prompt %d: every first child is the sliced model's argmax", i);
    }
    /* model:FILE keeps exactly ctx (committed + pending) after a propose */
    copse_kvcache *dkv = copse__forward_kv(copse__draft_model_forward(dm));
    int kv_ok = 1;
    for (int i = 0; i < np; i++)
        kv_ok &= copse__kvcache_seq_len(dkv, copse__draft_model_kvseq(dm, seqs[i])) == (uint32_t)n_ctx[i];
    CHECK(kv_ok, "model:SLICED holds committed + pending tokens after propose");
    for (int i = 0; i < np; i++) {
        ls->iface.seq_end(ls, seqs[i]);
        dm->iface.seq_end(dm, seqs[i]);
        copse__kvcache_seq_free(kv, seqs[i]);
        copse__tree_destroy(t1[i]);
        copse__tree_destroy(t2[i]);
        copse__tree_destroy(t3[i]);
    }
    free(l);
    free(scratch);
    copse__drafter_destroy(ls);
    copse__drafter_destroy(dm);
}

static copse_status zero_fill(void *ud, size_t i, uint64_t offset, void *buf, size_t n)
{
    (void)ud;
    (void)i;
    (void)offset;
    memset(buf, 0, n);
    return COPSE_OK;
}

static void check_errors(copse_forward *f, const copse_gguf *g, const char *tmpdir, const char *sliced)
{
    copse_drafter_params p = dparams(f, g);
    copse_drafter *d = NULL;
    char err[512] = "";
    copse_status st = copse__drafter_create("layerskip:30", &p, &d, err, sizeof err);
    CHECK(st == COPSE_EINVAL && d == NULL && strstr(err, "layerskip:30") && strstr(err, "30 layers"),
          "layerskip:30 on a 30-layer model: COPSE_EINVAL naming N and the layer count (%s)", err);
    err[0] = 0;
    st = copse__drafter_create("layerskip:31", &p, &d, err, sizeof err);
    CHECK(st == COPSE_EINVAL && d == NULL, "layerskip:31: COPSE_EINVAL (%s)", err);

    /* draft models whose vocabulary differs: one token changed, one missing */
    copse_gguf *gs = NULL;
    copse__gguf_open(sliced, &gs, err, sizeof err);
    const copse_gguf_array *toks = NULL;
    copse__gguf_get_arr(gs, "tokenizer.ggml.tokens", COPSE_GGUF_STRING, &toks);
    copse_str *strs = malloc(sizeof *strs * (size_t)toks->n);
    for (int variant = 0; variant < 2; variant++) {
        memcpy(strs, toks->strs, sizeof *strs * (size_t)toks->n);
        strs[100] = (copse_str){.ptr = "<copse-changed>", .len = 15};
        char path[600];
        snprintf(path, sizeof path, "%s/mismatch%d.gguf", tmpdir, variant);
        copse_gguf_writer *w;
        copse__gguf_writer_create(&w);
        for (size_t i = 0; i < copse__gguf_n_kv(gs); i++) {
            copse_gguf_kv kv = *copse__gguf_kv_at(gs, i);
            if (copse__str_eq(kv.key, "general.alignment"))
                continue;
            if (copse__str_eq(kv.key, "tokenizer.ggml.tokens")) {
                kv.v.arr.strs = variant == 0 ? strs : toks->strs;
                kv.v.arr.n = variant == 0 ? toks->n : toks->n - 1;
            }
            copse__gguf_writer_add_kv(w, &kv);
        }
        /* tensors: only their shapes matter before the check; keep one */
        copse__gguf_writer_add_tensor(w, "output_norm.weight", COPSE_Q_F32, 576, 1);
        st = copse__gguf_writer_finish(w, path, zero_fill, NULL, NULL, err, sizeof err);
        copse__gguf_writer_destroy(w);
        if (st != COPSE_OK) {
            CHECK(0, "write %s: %s", path, err);
            continue;
        }
        char spec[700];
        snprintf(spec, sizeof spec, "model:%s", path);
        err[0] = 0;
        st = copse__drafter_create(spec, &p, &d, err, sizeof err);
        if (variant == 0) {
            char want[256];
            snprintf(want, sizeof want, "'%.*s' (target)", (int)toks->strs[100].len, toks->strs[100].ptr);
            CHECK(st == COPSE_EINVAL && d == NULL && strstr(err, "token 100") && strstr(err, "<copse-changed>") &&
                      strstr(err, want),
                  "one token changed: COPSE_EINVAL naming token 100 and both strings (%s)", err);
        } else {
            CHECK(st == COPSE_EINVAL && d == NULL && strstr(err, "vocabulary of"),
                  "one token fewer: COPSE_EINVAL naming both sizes (%s)", err);
        }
    }
    free(strs);
    copse__gguf_close(gs);
    err[0] = 0;
    st = copse__drafter_create("model:/nonexistent/draft.gguf", &p, &d, err, sizeof err);
    CHECK(st != COPSE_OK && d == NULL && strstr(err, "/nonexistent/draft.gguf"), "missing draft file: %s (%s)",
          copse_strerror(st), err);
}

/* The stepper with a model drafter emits exactly plain greedy decoding;
 * after steps with rejections a draft model's own cache equals a plain
 * prefill (on ref, the draft model's own weights) of the tokens it holds. */
static void check_stepper(copse_forward *f, const copse_gguf *g, const char *spec, const char *label,
                          copse_forward *ref, size_t first_prompt, size_t n_prompts, int32_t draft_vocab)
{
    const int32_t n_gen = 10;
    float *l = malloc(sizeof *l * V);
    const uint32_t kvd = copse__forward_hparams(f)->n_head_kv * copse__forward_hparams(f)->head_dim;
    float *k1 = malloc(sizeof *k1 * kvd), *v1 = malloc(sizeof *v1 * kvd), *k2 = malloc(sizeof *k2 * kvd),
          *v2 = malloc(sizeof *v2 * kvd);
    for (size_t k = first_prompt; k < first_prompt + n_prompts; k++) {
        const copse_token *ids = prompts[k].ids;
        const int32_t n = prompts[k].n;
        /* plain greedy */
        copse_token plain[64];
        memcpy(plain, ids, sizeof *plain * (size_t)n);
        greedy(f, ids, n, n_gen, plain + n, l);
        int32_t seq = prefill(f, ids, n - 1, 0, NULL);
        copse_spec_params sp = copse__spec_default_params();
        sp.sampling.temperature = 0.0f;
        sp.budget = 6;
        sp.max_depth = 3;
        sp.max_len = MAX_CTX;
        sp.target_gguf = g;
        sp.draft_vocab = draft_vocab;
        copse_spec_engine *e = NULL;
        char err[512];
        copse_status st = copse__spec_create(f, seq, spec, &sp, &e, err, sizeof err);
        if (st == COPSE_OK)
            st = copse__spec_begin(e, ids, (uint32_t)(n - 1), ids[n - 1], err, sizeof err);
        copse_token got[64];
        int32_t n_got = 0;
        while (st == COPSE_OK && n_got < n_gen) {
            const copse_token *toks;
            int32_t nt;
            copse_verify_stop stop;
            st = copse__spec_step(e, NULL, NULL, n_gen - n_got, &toks, &nt, &stop, err, sizeof err);
            for (int32_t i = 0; st == COPSE_OK && i < nt; i++)
                got[n_got++] = toks[i];
        }
        int same = st == COPSE_OK && n_got == n_gen && !memcmp(got, plain + n, sizeof *got * (size_t)n_gen);
        copse_spec_stats stats = st == COPSE_OK ? copse__spec_stats(e) : (copse_spec_stats){0};
        CHECK(same, "prompt %zu: --draft %s output == plain greedy (%llu steps, %llu of %llu accepted)%s%s", k, label,
              (unsigned long long)stats.steps, (unsigned long long)stats.accepted, (unsigned long long)stats.proposed,
              st ? ": " : "", st ? err : "");
        if (ref && st == COPSE_OK) {
            copse_drafter *d = copse__spec_drafter(e);
            copse_forward *fd = copse__draft_model_forward(d);
            int32_t dseq = copse__draft_model_kvseq(d, seq);
            uint32_t len = copse__kvcache_seq_len(copse__forward_kv(fd), dseq), n_comm;
            const copse_token *comm = copse__spec_committed(e, &n_comm);
            int ok = stats.accepted < stats.proposed && len > (uint32_t)n && len <= n_comm + 1;
            copse_token held[128];
            memcpy(held, comm, sizeof *held * n_comm);
            held[n_comm] = copse__spec_pending(e);
            int32_t rseq = prefill(ref, held, (int32_t)len, 0, NULL);
            double worst = 0.0;
            const uint32_t n_layer = copse__forward_hparams(fd)->n_layer;
            for (uint32_t layer = 0; ok && layer < n_layer; layer++)
                for (uint32_t pos = 0; ok && pos < len; pos++) {
                    ok = copse__forward_kv_read(fd, layer, copse__kvcache_slot(copse__forward_kv(fd), dseq, pos), k1,
                                                v1) == COPSE_OK &&
                         copse__forward_kv_read(ref, layer, copse__kvcache_slot(copse__forward_kv(ref), rseq, pos), k2,
                                                v2) == COPSE_OK;
                    for (uint32_t i = 0; ok && i < kvd; i++) {
                        double dk = fabs((double)k1[i] - k2[i]), dv = fabs((double)v1[i] - v2[i]);
                        worst = dk > worst ? dk : worst;
                        worst = dv > worst ? dv : worst;
                    }
                }
            CHECK(ok && worst == 0.0,
                  "prompt %zu: after %llu steps with rejections the draft model's KV (%u tokens, %u layers) == a "
                  "plain prefill (max diff %.3g)",
                  k, (unsigned long long)stats.steps, len, n_layer, worst);
            copse__kvcache_seq_free(copse__forward_kv(ref), rseq);
        }
        copse__spec_destroy(e);
        copse__kvcache_seq_free(copse__forward_kv(f), seq);
    }
    free(l);
    free(k1);
    free(v1);
    free(k2);
    free(v2);
}

/* Sampled drafts: the root's child is a draw from the q it carries
 * (chi-square over many seeds), q is the processed draft distribution cut
 * to draft_q_top tokens, and the stepper runs MSS on such trees. */
static void check_sampled(copse_forward *f, const copse_gguf *g)
{
    copse_drafter_params p = dparams(f, g);
    p.draft_vocab = 512;
    p.draft_q_top = 48;
    copse_drafter *d = make_drafter("layerskip:8", &p);
    copse_tree *t;
    copse__tree_create(8, 8, 8 * d->q_per_node, &t);
    const copse_token *ids = prompts[2].ids;
    const int32_t n = prompts[2].n;
    int32_t seq = prefill(f, ids, n - 1, 0, NULL);
    d->iface.seq_begin(d, seq, ids, n - 1, MAX_CTX);
    copse_sampling_params sp = copse__sampling_default_params();
    sp.temperature = 1.5f;
    enum { N_DRAWS = 600 };
    copse_token q_ids[64];
    float q_p[64];
    int32_t q_n = 0, counts[64] = {0};
    int ok = 1;
    for (int r = 0; r < N_DRAWS && ok; r++) {
        sp.seed = 1000u + (uint64_t)r;
        ok = d->iface.seq_sampling(d, seq, &sp) == COPSE_OK &&
             d->iface.propose(d, seq, ids, n, 1, 1, t) == COPSE_OK && copse__tree_size(t) == 1;
        copse__kvcache_truncate(copse__forward_kv(f), seq, (uint32_t)(n - 1));
        if (!ok)
            break;
        const copse_tree_node *nd = copse__tree_node(t, 0);
        ok = nd->n_q == 1;
        if (!ok)
            break;
        copse_tree_q q = copse__tree_get_q(t, nd->q[0]);
        if (r == 0) {
            double sum = 0.0;
            for (int32_t i = 0; i < q.n; i++)
                sum += q.p[i];
            ok = q.n >= 2 && q.n <= 48 && fabs(sum - 1.0) < 1e-4;
            q_n = q.n;
            memcpy(q_ids, q.ids, sizeof *q_ids * (size_t)q.n);
            memcpy(q_p, q.p, sizeof *q_p * (size_t)q.n);
        } else {
            ok = q.n == q_n && !memcmp(q.ids, q_ids, sizeof *q_ids * (size_t)q_n) &&
                 !memcmp(q.p, q_p, sizeof *q_p * (size_t)q_n);
        }
        int32_t at = -1;
        for (int32_t i = 0; i < q_n; i++)
            if (q_ids[i] == nd->token)
                at = i;
        ok = ok && at >= 0 && fabsf(q_p[at] - nd->p) <= 1e-6f * q_p[at] + 1e-9f;
        if (ok)
            counts[at]++;
    }
    CHECK(ok, "sampled root children carry their q (sums to 1, <= draft_q_top tokens, same q for every seed)");
    /* chi-square: tokens expected >= 5 times alone, the rest pooled */
    double chi = 0.0, pool_e = 0.0, pool_o = 0.0;
    int df = 0;
    for (int32_t i = 0; i < q_n; i++) {
        double e = (double)q_p[i] * N_DRAWS;
        if (e >= 5.0) {
            chi += (counts[i] - e) * (counts[i] - e) / e;
            df++;
        } else {
            pool_e += e;
            pool_o += counts[i];
        }
    }
    if (pool_e > 0.0) {
        chi += (pool_o - pool_e) * (pool_o - pool_e) / pool_e;
        df++;
    }
    df -= 1;
    /* about the 0.999 quantile of chi-square(df) (Wilson-Hilferty) */
    double z = 3.09, a = 2.0 / (9.0 * (df > 0 ? df : 1)), crit = (df > 0 ? df : 1) * pow(1.0 - a + z * sqrt(a), 3.0);
    CHECK(ok && df >= 2 && chi < crit, "sampled children follow q: chi-square %.1f < %.1f (%d dof, %d draws)", chi,
          crit, df, N_DRAWS);
    d->iface.seq_end(d, seq);
    copse__kvcache_seq_free(copse__forward_kv(f), seq);
    copse__tree_destroy(t);
    copse__drafter_destroy(d);

    /* the stepper with sampling (MSS) on sampled layerskip trees */
    seq = prefill(f, ids, n - 1, 0, NULL);
    copse_spec_params spp = copse__spec_default_params();
    spp.sampling.temperature = 0.8f;
    spp.sampling.seed = 7;
    spp.budget = 6;
    spp.max_depth = 3;
    spp.max_len = MAX_CTX;
    spp.target_gguf = g;
    spp.draft_vocab = 4096;
    copse_spec_engine *e = NULL;
    char err[512] = "";
    copse_status st = copse__spec_create(f, seq, "layerskip:28", &spp, &e, err, sizeof err);
    if (st == COPSE_OK)
        st = copse__spec_begin(e, ids, (uint32_t)(n - 1), ids[n - 1], err, sizeof err);
    int32_t emitted = 0;
    while (st == COPSE_OK && emitted < 10) {
        const copse_token *toks;
        int32_t nt;
        copse_verify_stop stop;
        st = copse__spec_step(e, NULL, NULL, 10 - emitted, &toks, &nt, &stop, err, sizeof err);
        emitted += st == COPSE_OK ? nt : 0;
    }
    copse_spec_stats ss = st == COPSE_OK ? copse__spec_stats(e) : (copse_spec_stats){0};
    CHECK(st == COPSE_OK && emitted == 10 && ss.proposed > 0 && ss.accepted > 0,
          "stepper at temperature 0.8 (MSS) with sampled layerskip:28 drafts: %d tokens, %llu of %llu accepted%s%s", emitted,
          (unsigned long long)ss.accepted, (unsigned long long)ss.proposed, st ? ": " : "", st ? err : "");
    copse__spec_destroy(e);
    copse__kvcache_seq_free(copse__forward_kv(f), seq);
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: draft-tool MODEL SLICED8 TMPDIR\n");
        return 2;
    }
    char err[512];
    copse_gguf *g = NULL, *gs = NULL;
    if (copse__gguf_open(argv[1], &g, err, sizeof err) != COPSE_OK ||
        copse__gguf_open(argv[2], &gs, err, sizeof err) != COPSE_OK) {
        fprintf(stderr, "draft-tool: %s\n", err);
        return 1;
    }
    copse_backend_reg *cpu = copse__backend_find("cpu");
    dev = cpu->iface.dev_get(cpu, 0);
    copse_forward *f = make_forward(g), *fs = make_forward(gs);
    V = copse__forward_hparams(f)->n_vocab;
    const char *only = getenv("DRAFT_TOOL_ONLY");
#define RUN_(name, call)                      \
    if (!only || strstr(only, name)) {        \
        call;                                 \
    }
    RUN_("slice", check_slice_logits(f, fs));
    RUN_("chain", check_chains(f, fs, g, 0));
    RUN_("vocab", check_chains(f, fs, g, 300));
    RUN_("tree", check_trees(f, fs, g, argv[2]));
    RUN_("errors", check_errors(f, g, argv[3], argv[2]));
    char spec[600];
    snprintf(spec, sizeof spec, "model:%s", argv[2]);
    RUN_("stepper", check_stepper(f, g, "layerskip:8", "layerskip:8", NULL, 0, 2, 0));
    RUN_("stepper", check_stepper(f, g, spec, "model:SLICED8 (reduced head)", fs, 1, 2, 4096));
    /* drafts good enough to be accepted: the target's 28 layers; the target
     * itself as the draft model (its KV compared on all 30 layers) */
    RUN_("stepper", check_stepper(f, g, "layerskip:28", "layerskip:28 (reduced head)", NULL, 0, 1, 8192));
    snprintf(spec, sizeof spec, "model:%s", argv[1]);
    RUN_("stepper", check_stepper(f, g, spec, "model:MODEL", f, 0, 1, 0));
    RUN_("sampled", check_sampled(f, g));
#undef RUN_
    copse__forward_destroy(f);
    copse__forward_destroy(fs);
    copse__gguf_close(g);
    copse__gguf_close(gs);
    printf("%s: %d failure(s)\n", failures ? "FAIL" : "ok", failures);
    return failures ? 1 : 0;
}
