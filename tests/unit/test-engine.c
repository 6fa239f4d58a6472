/*
 * test-engine.c — the multi-request engine on a tiny random llama model
 * (argv[1], made by `copse random-model --shape tiny` at build time).
 *
 * 1. Lossless, greedy: for 50 prompts, speculative greedy output equals
 *    plain greedy output (computed here with the forward pass directly,
 *    not through the engine) bit for bit, for 128 new tokens, with every
 *    drafter alone (ngram, suffix, layerskip:1, model:DRAFT.gguf — argv[2],
 *    the model's first layer made by `copse slice`) and merged, one request at a time and in batches of 8
 *    mixed-length requests (the adaptive budget on; alone with the full
 *    budget every step); plain requests through the engine too.
 * 2. KV correctness: after many steps with rejections, every running
 *    request's cache equals the cache built by plain prefill of the same
 *    committed tokens (exactly: the CPU backend is batch-invariant).
 * 2b. The backend verify op against the host verifier: identical tokens for
 *    greedy and seeded sampled requests (engine with and without
 *    verify_on_host).
 * 3. Admission, queueing, cancellation, preemption under a small KV budget,
 *    bad requests and bad engine parameters.
 */
#include <stdlib.h>
#include <string.h>

#include "backend-impl.h"
#include "engine.h"
#include "forward.h"
#include "gguf.h"
#include "test.h"

#define N_PROMPTS 50
#define N_NEW 128

/* --quick (the unit suite, also run under ASan): fewer prompts and tokens;
 * the full run (50 x 128) is the test 'engine-full' of the spec suite. */
static int n_prompts = N_PROMPTS, n_new = N_NEW;
#define MAX_PROMPT 96

static copse_gguf *g_model;
/* --backend NAME: the device the forward passes run on (default cpu); any
 * other backend's plain greedy output must also equal the CPU backend's */
static const char *backend_name = "cpu";
/* drafters (bits of specs[]) the backend can run: layerskip and model
 * drafts need attention_scratch_base */
static uint32_t drafters_ok = 15;
static int32_t n_vocab;

typedef struct prompt {
    copse_token t[MAX_PROMPT];
    int32_t n;
} prompt;

static prompt prompts[N_PROMPTS];
static copse_token ref[N_PROMPTS][N_NEW];

static copse_forward *make_forward(uint32_t max_seqs, uint64_t kv_mem)
{
    copse_forward_params p = copse__forward_default_params();
    p.n_threads = 2;
    p.max_tokens = 512;
    p.max_seqs = max_seqs;
    p.max_ctx = 512;
    p.kv_mem = kv_mem;
    copse_backend_reg *reg = copse__backend_find(backend_name);
    copse_forward *f = NULL;
    char err[256];
    if (!reg || reg->iface.dev_count(reg) == 0) {
        fprintf(stderr, "skip: no backend '%s' with a device in this build\n", backend_name);
        exit(TEST_SKIP);
    }
    if (copse__forward_create(g_model, reg->iface.dev_get(reg, 0), &p, &f, err, sizeof err) != COPSE_OK) {
        fprintf(stderr, "forward: %s\n", err);
        exit(1);
    }
    return f;
}

/* Prompts that give drafters something to find: random tokens from a small
 * alphabet with repeated segments, and a few plain random ones. */
static void make_prompts(uint64_t seed)
{
    uint64_t s = seed;
    for (int i = 0; i < N_PROMPTS; i++) {
        prompt *p = &prompts[i];
        p->n = 1 + (int32_t)(test_rand(&s) % MAX_PROMPT);
        int32_t alphabet = i % 5 == 0 ? n_vocab : 8 + (int32_t)(test_rand(&s) % 24);
        for (int32_t j = 0; j < p->n; j++) {
            if (j >= 8 && test_rand(&s) % 3 == 0) {
                int32_t back = 1 + (int32_t)(test_rand(&s) % (uint64_t)(j < 16 ? j : 16));
                p->t[j] = p->t[j - back];
            } else {
                p->t[j] = (copse_token)(test_rand(&s) % (uint64_t)alphabet);
            }
        }
    }
}

/* Plain greedy decoding with the forward pass alone: prefill, then one token
 * per call, argmax (lowest id on ties). */
static void plain_greedy(copse_forward *f, const prompt *p, copse_token *out, int32_t count)
{
    copse_kvcache *kv = copse__forward_kv(f);
    int32_t seq;
    CHECK_STATUS(copse__kvcache_seq_add(kv, &seq), COPSE_OK);
    float *logits = malloc((size_t)n_vocab * sizeof *logits);
    copse_token cur[MAX_PROMPT];
    memcpy(cur, p->t, sizeof cur[0] * (size_t)p->n);
    int32_t n = p->n;
    for (int32_t k = 0; k < count; k++) {
        int32_t first = 0, lr = n - 1;
        copse_fwd_batch b = {.n_tokens = n, .tokens = cur, .n_seqs = 1, .seq = &seq, .first = &first,
                             .n_new = &n, .n_logits = 1, .logit_rows = &lr};
        char err[256];
        copse_status st = copse__forward_run(f, &b, logits, err, sizeof err);
        CHECK_STATUS(st, COPSE_OK);
        if (st != COPSE_OK)
            break;
        copse__kvcache_commit(kv, seq, (uint32_t)n);
        copse_token t = 0;
        for (int32_t v = 1; v < n_vocab; v++)
            if (logits[v] > logits[t])
                t = v;
        out[k] = t;
        cur[0] = t;
        n = 1;
    }
    free(logits);
    copse__kvcache_seq_free(kv, seq);
}

static char model_spec[4096];
static const char *specs[] = {"ngram", "suffix", "layerskip:1", model_spec};

static copse_engine *make_engine_eos(copse_forward *f, int32_t max_running, int32_t step_tokens, bool adaptive,
                                     bool verify_on_host, const copse_token *eos, int32_t n_eos)
{
    copse_engine_params ep = copse__engine_default_params();
    ep.verify_on_host = verify_on_host;
    ep.eos = eos;
    ep.n_eos = n_eos;
    ep.adaptive = adaptive;
    ep.max_running = max_running;
    ep.step_tokens = step_tokens;
    ep.drafters = specs;
    ep.n_drafters = 4;
    ep.gguf = g_model;
    ep.spec_nodes = 16;
    ep.spec_depth = 8;
    copse_engine *e = NULL;
    char err[256];
    copse_status st = copse__engine_create(f, &ep, &e, err, sizeof err);
    if (st != COPSE_OK) {
        fprintf(stderr, "engine: %s\n", err);
        exit(1);
    }
    return e;
}

static copse_engine *make_engine(copse_forward *f, int32_t max_running, int32_t step_tokens, bool adaptive)
{
    return make_engine_eos(f, max_running, step_tokens, adaptive, false, NULL, 0);
}

typedef struct outbuf {
    copse_token t[N_NEW];
    int32_t n;
    copse_finish finish;
} outbuf;

/* Run prompts [first, first + n) through the engine at once with drafter
 * mask `mask`; returns the total proposed/accepted in *acc. */
static void run_batch_sp(copse_engine *e, int first, int n, uint32_t mask, const copse_sampling_params *sp,
                         outbuf *out, uint64_t *proposed, uint64_t *accepted)
{
    for (int i = 0; i < n; i++) {
        copse_request_params rp = copse__request_default_params();
        rp.prompt = prompts[first + i].t;
        rp.n_prompt = prompts[first + i].n;
        rp.max_tokens = n_new;
        rp.sampling.temperature = 0.0f;
        if (sp) {
            rp.sampling = sp[i];
            rp.ignore_eos = i % 4 == 3;
        }
        rp.drafters = mask;
        uint64_t id;
        char err[256];
        out[i].n = 0;
        out[i].finish = COPSE_FINISH_NONE;
        CHECK_STATUS(copse__engine_submit(e, &rp, &out[i], &id, err, sizeof err), COPSE_OK);
    }
    int guard = 0;
    while (!copse__engine_idle(e) && guard++ < 100000) {
        const copse_engine_event *ev;
        int32_t n_ev;
        char err[256];
        copse_status st = copse__engine_step(e, &ev, &n_ev, err, sizeof err);
        CHECK_STATUS(st, COPSE_OK);
        if (st != COPSE_OK) {
            fprintf(stderr, "step: %s\n", err);
            return;
        }
        for (int32_t k = 0; k < n_ev; k++) {
            outbuf *o = ev[k].ud;
            for (int32_t j = 0; j < ev[k].n_tokens && o->n < N_NEW; j++)
                o->t[o->n++] = ev[k].tokens[j];
            CHECK(o->n == ev[k].n_generated);
            if (ev[k].finish != COPSE_FINISH_NONE) {
                o->finish = ev[k].finish;
                *proposed += ev[k].proposed;
                *accepted += ev[k].accepted;
            }
        }
    }
    CHECK(copse__engine_idle(e));
}

static void run_batch(copse_engine *e, int first, int n, uint32_t mask, outbuf *out, uint64_t *proposed,
                      uint64_t *accepted)
{
    run_batch_sp(e, first, n, mask, NULL, out, proposed, accepted);
}

/* The backend verify op against the host verifier: the same requests
 * through an engine that uses the op and one forced to the host path
 * (verify_on_host) give identical tokens and finish reasons — greedy and
 * seeded sampling (temperature only: the op's cases; with top-k: the host
 * path inside the same batches), plain and with one-hot drafters (ngram,
 * suffix), with end-of-generation tokens that cut paths in the middle. */
static void test_verify_op_vs_host(copse_forward *f)
{
    if (!copse__forward_has_verify(f)) {
        fprintf(stderr, "skip verify op vs host: the backend has no verify op\n");
        return;
    }
    const copse_token eos[] = {3, 5};
    /* the full budget every step: the adaptive one follows measured times,
     * and a sampled token depends on the tree it was verified with */
    copse_engine *eo = make_engine_eos(f, 8, 512, false, false, eos, 2);
    copse_engine *eh = make_engine_eos(f, 8, 512, false, true, eos, 2);
    /* plain and the one-hot drafters; the model drafters' sampled trees
     * differ between two engines even on the host path, so they are left
     * to the greedy test above */
    static const uint32_t masks[] = {0, 1, 2, 3};
    copse_sampling_params sp[8];
    outbuf oo[8], oh[8];
    int compared = 0, mismatches = 0;
    uint64_t acc_o = 0, acc_h = 0;
    for (size_t m = 0; m < sizeof masks / sizeof masks[0]; m++) {
        for (int i = 0; i < n_prompts; i += 8) {
            int n = n_prompts - i < 8 ? n_prompts - i : 8;
            for (int k = 0; k < 8; k++) {
                sp[k] = copse__sampling_default_params();
                sp[k].seed = 1000u * (uint64_t)(i + k) + m;
                sp[k].temperature = k % 3 == 0 ? 0.0f : (k % 3 == 1 ? 0.7f : 1.3f);
                if (k == 5)
                    sp[k].top_k = 8; /* not the op's: the host path in the same step */
            }
            uint64_t p0 = 0;
            run_batch_sp(eo, i, n, masks[m], sp, oo, &p0, &acc_o);
            run_batch_sp(eh, i, n, masks[m], sp, oh, &p0, &acc_h);
            for (int k = 0; k < n; k++) {
                compared++;
                if (oo[k].n != oh[k].n || oo[k].finish != oh[k].finish ||
                    memcmp(oo[k].t, oh[k].t, sizeof oo[k].t[0] * (size_t)oo[k].n) != 0) {
                    mismatches++;
                    fprintf(stderr, "verify op vs host: mask %u prompt %d (T=%g): %d tokens (%s) vs %d (%s)\n",
                            masks[m], i + k, (double)sp[k].temperature, oo[k].n, copse__finish_name(oo[k].finish),
                            oh[k].n, copse__finish_name(oh[k].finish));
                }
            }
        }
    }
    CHECK_INT_EQ(mismatches, 0);
    CHECK(acc_o == acc_h);
    fprintf(stderr, "verify op vs host: %d requests identical (accepted %llu nodes)\n", compared - mismatches,
            (unsigned long long)acc_o);
    copse__engine_destroy(eo);
    copse__engine_destroy(eh);
}

static void test_lossless_greedy(copse_forward *f)
{
    copse_engine *e1 = make_engine(f, 1, 512, false);
    copse_engine *e8 = make_engine(f, 8, 512, true);
    static const uint32_t masks[] = {0, 1, 2, 3, 4, 8, 15};
    static const char *const names[] = {"plain", "ngram", "suffix", "ngram+suffix", "layerskip:1", "model:slice",
                                        "all four"};
    outbuf out[8];
    uint64_t all_accepted = 0;
    for (size_t m = 0; m < sizeof masks / sizeof masks[0]; m++) {
        if (masks[m] & ~drafters_ok) {
            fprintf(stderr, "greedy %-12s skipped: %s's attention cannot append to scratch\n", names[m],
                    backend_name);
            continue;
        }
        for (int batched = 0; batched < 2; batched++) {
            copse_engine *e = batched ? e8 : e1;
            int per = batched ? 8 : 1;
            int mismatches = 0;
            uint64_t proposed = 0, accepted = 0;
            for (int i = 0; i < n_prompts; i += per) {
                int n = n_prompts - i < per ? n_prompts - i : per;
                run_batch(e, i, n, masks[m], out, &proposed, &accepted);
                for (int k = 0; k < n; k++) {
                    CHECK_INT_EQ(out[k].n, n_new);
                    CHECK_INT_EQ(out[k].finish, COPSE_FINISH_LENGTH);
                    if (memcmp(out[k].t, ref[i + k], sizeof ref[0][0] * (size_t)n_new) != 0) {
                        mismatches++;
                        int j = 0;
                        while (j < n_new && out[k].t[j] == ref[i + k][j])
                            j++;
                        fprintf(stderr, "%s %s: prompt %d differs at token %d: %d vs %d\n", names[m],
                                batched ? "batch8" : "single", i + k, j, out[k].t[j], ref[i + k][j]);
                    }
                }
            }
            CHECK_INT_EQ(mismatches, 0);
            fprintf(stderr, "greedy %-13s %-6s: %d prompts x %d tokens identical; proposed %llu accepted %llu\n",
                    names[m], batched ? "batch8" : "single", n_prompts - mismatches, n_new,
                    (unsigned long long)proposed, (unsigned long long)accepted);
            all_accepted += accepted;
        }
    }
    CHECK(all_accepted > 0); /* the drafters found something: acceptances and rejections both ran */
    copse_engine_stats st = copse__engine_stats(e8);
    CHECK_INT_EQ(st.kv.n_seqs, 0);
    CHECK_INT_EQ(st.kv.blocks_used, 0);
    copse_drafter_stats ds = copse__engine_drafter_stats(e8, 0);
    CHECK(ds.proposed >= ds.accepted);
    CHECK(ds.steps > 0);
    copse__engine_destroy(e1);
    copse__engine_destroy(e8);
}

/* Compare every committed KV entry of engine request `id` with a fresh
 * plain prefill of its committed tokens. */
static void check_kv_equal(copse_engine *e, copse_forward *f, uint64_t id, int *checked)
{
    int32_t seq, n;
    const copse_token *toks;
    if (copse__engine_debug_request(e, id, &seq, &toks, &n) != COPSE_OK)
        return; /* finished already */
    copse_kvcache *kv = copse__forward_kv(f);
    CHECK_INT_EQ(copse__kvcache_seq_len(kv, seq), n);
    int32_t ref_seq;
    CHECK_STATUS(copse__kvcache_seq_add(kv, &ref_seq), COPSE_OK);
    int32_t first = 0, lr = n - 1;
    copse_fwd_batch b = {.n_tokens = n, .tokens = toks, .n_seqs = 1, .seq = &ref_seq, .first = &first,
                         .n_new = &n, .n_logits = 1, .logit_rows = &lr};
    float *logits = malloc((size_t)n_vocab * sizeof *logits);
    char err[256];
    CHECK_STATUS(copse__forward_run(f, &b, logits, err, sizeof err), COPSE_OK);
    copse__kvcache_commit(kv, ref_seq, (uint32_t)n);
    const copse_hparams *hp = copse__forward_hparams(f);
    const int32_t kv_dim = (int32_t)(hp->n_head_kv * hp->head_dim);
    float *k1 = malloc(4 * (size_t)kv_dim * sizeof(float)), *v1 = k1 + kv_dim, *k2 = v1 + kv_dim, *v2 = k2 + kv_dim;
    int bad = 0;
    for (uint32_t l = 0; l < hp->n_layer; l++)
        for (int32_t pos = 0; pos < n; pos++) {
            int32_t s1 = copse__kvcache_slot(kv, seq, (uint32_t)pos), s2 = copse__kvcache_slot(kv, ref_seq, (uint32_t)pos);
            CHECK_STATUS(copse__forward_kv_read(f, (int32_t)l, s1, k1, v1), COPSE_OK);
            CHECK_STATUS(copse__forward_kv_read(f, (int32_t)l, s2, k2, v2), COPSE_OK);
            if (memcmp(k1, k2, (size_t)kv_dim * sizeof(float)) || memcmp(v1, v2, (size_t)kv_dim * sizeof(float))) {
                if (bad++ < 3)
                    fprintf(stderr, "request %llu: KV of layer %u position %d differs from plain prefill\n",
                            (unsigned long long)id, l, pos);
            }
        }
    CHECK_INT_EQ(bad, 0);
    (*checked)++;
    free(k1);
    free(logits);
    copse__kvcache_seq_free(kv, ref_seq);
}

static void test_kv_correct(copse_forward *f)
{
    copse_engine *e = make_engine(f, 8, 512, false);
    uint64_t ids[8];
    for (int i = 0; i < 8; i++) {
        copse_request_params rp = copse__request_default_params();
        rp.prompt = prompts[i * 3].t;
        rp.n_prompt = prompts[i * 3].n;
        rp.max_tokens = 400;
        rp.sampling.temperature = i % 2 ? 0.0f : 0.8f; /* MSS rejections too */
        rp.sampling.seed = 1000 + (uint64_t)i;
        rp.drafters = 1u + (uint32_t)(i % 3 == 0) * 2u;
        char err[256];
        CHECK_STATUS(copse__engine_submit(e, &rp, NULL, &ids[i], err, sizeof err), COPSE_OK);
    }
    uint64_t proposed = 0, accepted = 0;
    int checked = 0;
    /* 2 rounds on a device backend: on the simulator a check is slow */
    const int rounds = strcmp(backend_name, "cpu") == 0 ? 4 : 2;
    for (int round = 0; round < rounds; round++) {
        for (int s = 0; s < 15; s++) {
            const copse_engine_event *ev;
            int32_t n_ev;
            char err[256];
            CHECK_STATUS(copse__engine_step(e, &ev, &n_ev, err, sizeof err), COPSE_OK);
            for (int32_t k = 0; k < n_ev; k++)
                if (ev[k].finish == COPSE_FINISH_NONE) {
                    proposed = ev[k].proposed > proposed ? ev[k].proposed : proposed;
                    accepted = ev[k].accepted > accepted ? ev[k].accepted : accepted;
                }
        }
        for (int i = 0; i < 8; i++)
            check_kv_equal(e, f, ids[i], &checked);
    }
    fprintf(stderr, "KV: %d sequence checks equal to plain prefill (max proposed %llu, accepted %llu)\n", checked,
            (unsigned long long)proposed, (unsigned long long)accepted);
    CHECK(checked >= 4 * rounds); /* half the requests or more still running at each round */
    CHECK(proposed > accepted); /* there were rejections */
    for (int i = 0; i < 8; i++)
        copse__engine_cancel(e, ids[i]);
    const copse_engine_event *ev;
    int32_t n_ev;
    char err[256];
    CHECK_STATUS(copse__engine_step(e, &ev, &n_ev, err, sizeof err), COPSE_OK);
    int cancelled = 0;
    for (int32_t k = 0; k < n_ev; k++)
        cancelled += ev[k].finish == COPSE_FINISH_CANCELLED;
    CHECK(cancelled >= 1);
    CHECK(copse__engine_idle(e));
    CHECK_INT_EQ(copse__engine_stats(e).kv.blocks_used, 0);
    copse__engine_destroy(e);
}

/* A KV budget for about 3 requests: requests queue and are preempted, and
 * every output is still the plain greedy one. */
static void test_small_kv(void)
{
    const copse_hparams *hp;
    copse_forward *probe = make_forward(2, 0);
    hp = copse__forward_hparams(probe);
    uint64_t per_token = 2ull * hp->n_layer * hp->n_head_kv * hp->head_dim * sizeof(float);
    copse__forward_destroy(probe);
    copse_forward *f = make_forward(8, per_token * 16 * 20); /* 20 blocks of 16 tokens */
    copse_engine *e = make_engine(f, 8, 64, true);
    outbuf out[8];
    uint64_t proposed = 0, accepted = 0;
    run_batch(e, 0, 8, 3, out, &proposed, &accepted);
    for (int k = 0; k < 8 && k < n_prompts; k++) { /* (prompts past n_prompts have no reference) */
        int same = out[k].n == n_new && !memcmp(out[k].t, ref[k], sizeof ref[0][0] * (size_t)n_new);
        if (!same)
            fprintf(stderr, "small KV: prompt %d (%d tokens) finish %s, %d tokens\n", k, prompts[k].n,
                    copse__finish_name(out[k].finish), out[k].n);
        CHECK(same || out[k].finish == COPSE_FINISH_ERROR);
    }
    copse_engine_stats st = copse__engine_stats(e);
    fprintf(stderr, "small KV: %llu preemptions, %llu steps\n", (unsigned long long)st.preempted,
            (unsigned long long)st.steps);
    CHECK(st.preempted > 0);
    CHECK_INT_EQ(st.kv.blocks_used, 0);
    copse__engine_destroy(e);
    copse__forward_destroy(f);
}

static void test_bad_input(copse_forward *f)
{
    char err[256];
    copse_engine *e = NULL;
    copse_engine_params ep = copse__engine_default_params();
    const char *bad_spec[] = {"telepathy"};
    ep.drafters = bad_spec;
    ep.n_drafters = 1;
    CHECK_STATUS(copse__engine_create(f, &ep, &e, err, sizeof err), COPSE_EINVAL);
    CHECK(strstr(err, "telepathy") != NULL);
    CHECK(e == NULL);
    ep = copse__engine_default_params();
    ep.spec_nodes = 0;
    CHECK_STATUS(copse__engine_create(f, &ep, &e, err, sizeof err), COPSE_EINVAL);
    CHECK(strstr(err, "spec_nodes") != NULL);
    ep.spec_nodes = 1 << 30;
    CHECK_STATUS(copse__engine_create(f, &ep, &e, err, sizeof err), COPSE_EINVAL);
    ep = copse__engine_default_params();
    ep.max_running = 100000;
    CHECK_STATUS(copse__engine_create(f, &ep, &e, err, sizeof err), COPSE_EINVAL);

    e = make_engine(f, 2, 128, true);
    ep.max_waiting = 2;
    copse_request_params rp = copse__request_default_params();
    uint64_t id;
    CHECK_STATUS(copse__engine_submit(e, &rp, NULL, &id, err, sizeof err), COPSE_EINVAL); /* no prompt */
    rp.prompt = prompts[0].t;
    rp.n_prompt = prompts[0].n;
    rp.max_tokens = 0;
    CHECK_STATUS(copse__engine_submit(e, &rp, NULL, &id, err, sizeof err), COPSE_EINVAL);
    CHECK(strstr(err, "max_tokens") != NULL);
    rp.max_tokens = 4;
    rp.drafters = 16; /* no drafter 4 */
    CHECK_STATUS(copse__engine_submit(e, &rp, NULL, &id, err, sizeof err), COPSE_EINVAL);
    rp.drafters = 1;
    rp.spec_nodes = 1 << 20;
    CHECK_STATUS(copse__engine_submit(e, &rp, NULL, &id, err, sizeof err), COPSE_EINVAL);
    CHECK(strstr(err, "spec_nodes") != NULL);
    rp.spec_nodes = 0;
    copse_token bad_tok[2] = {1, n_vocab};
    rp.prompt = bad_tok;
    rp.n_prompt = 2;
    CHECK_STATUS(copse__engine_submit(e, &rp, NULL, &id, err, sizeof err), COPSE_EINVAL);
    rp.prompt = prompts[0].t;
    rp.n_prompt = prompts[0].n;
    rp.sampling.temperature = -1.0f;
    CHECK_STATUS(copse__engine_submit(e, &rp, NULL, &id, err, sizeof err), COPSE_EINVAL);
    rp.sampling.temperature = 0.0f;
    static copse_token long_prompt[600];
    rp.prompt = long_prompt;
    rp.n_prompt = 600;
    CHECK_STATUS(copse__engine_submit(e, &rp, NULL, &id, err, sizeof err), COPSE_ERANGE);
    /* the queue fills: 2 running slots + 256 waiting by default */
    rp.prompt = prompts[0].t;
    rp.n_prompt = prompts[0].n;
    int accepted = 0;
    copse_status st = COPSE_OK;
    while ((st = copse__engine_submit(e, &rp, NULL, &id, err, sizeof err)) == COPSE_OK && accepted < 10000)
        accepted++;
    CHECK_STATUS(st, COPSE_EBUSY);
    CHECK_INT_EQ(accepted, 2 + 256);
    copse__engine_destroy(e); /* with everything queued: no leak */
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: test-engine MODEL.gguf DRAFT.gguf [--quick] [--prompts N] [--new N] [--backend NAME]\n");
        return 2;
    }
    snprintf(model_spec, sizeof model_spec, "model:%s", argv[2]);
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) {
            n_prompts = 12;
            n_new = 40;
        } else if (!strcmp(argv[i], "--prompts") && i + 1 < argc) {
            n_prompts = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--new") && i + 1 < argc) {
            n_new = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--backend") && i + 1 < argc) {
            backend_name = argv[++i];
        } else {
            fprintf(stderr, "test-engine: unknown argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (n_prompts < 1 || n_prompts > N_PROMPTS || n_new < 1 || n_new > N_NEW) {
        fprintf(stderr, "test-engine: --prompts 1..%d, --new 1..%d\n", N_PROMPTS, N_NEW);
        return 2;
    }
    char err[256];
    if (copse__gguf_open(argv[1], &g_model, err, sizeof err) != COPSE_OK) {
        fprintf(stderr, "%s: %s\n", argv[1], err);
        return 1;
    }
    uint64_t seed = test_seed();
    copse_forward *f = make_forward(16, 0);
    n_vocab = (int32_t)copse__forward_hparams(f)->n_vocab;
    make_prompts(seed);
    for (int i = 0; i < n_prompts; i++)
        plain_greedy(f, &prompts[i], ref[i], n_new);
    if (strcmp(backend_name, "cpu") != 0) {
        copse_backend_reg *reg = copse__backend_find(backend_name);
        copse_backend_dev *dev = reg->iface.dev_get(reg, 0);
        copse_backend_queue *q = NULL;
        if (dev->iface.queue_create(dev, 1, &q) == COPSE_OK) {
            if (!q->iface.attention_scratch_base)
                drafters_ok = 3; /* ngram, suffix */
            q->iface.destroy(q);
        }
        /* the device's plain greedy tokens against the CPU backend's */
        const char *dev_name = backend_name;
        backend_name = "cpu";
        copse_forward *fc = make_forward(16, 0);
        backend_name = dev_name;
        for (int i = 0; i < n_prompts; i++) {
            copse_token cref[N_NEW];
            plain_greedy(fc, &prompts[i], cref, n_new);
            int k = 0;
            while (k < n_new && cref[k] == ref[i][k])
                k++;
            CHECK(k == n_new);
            if (k < n_new)
                fprintf(stderr, "  prompt %d (%d tokens): %s token %d is %d, cpu %d\n", i, prompts[i].n, backend_name, k,
                        ref[i][k], cref[k]);
        }
        copse__forward_destroy(fc);
    }

    test_lossless_greedy(f);
    test_verify_op_vs_host(f);
    test_kv_correct(f);
    test_bad_input(f);
    copse__forward_destroy(f);
    test_small_kv();
    copse__gguf_close(g_model);
    return test_exit();
}
