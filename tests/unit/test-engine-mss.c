/*
 * test-engine-mss.c — speculative sampling through the whole engine is
 * lossless: a chi-square goodness-of-fit test on a 16-token random llama
 * model (argv[1], `copse random-model --shape tiny --vocab 16`).
 *
 * Each sample is one request (its own seed) that emits three tokens: x1
 * sampled after the prompt's prefill, then x2 and x3 from speculative steps
 * (the ngram drafter proposes trees rooted at x1 from the prompt, whose
 * tokens each have three different successors, so trees have width up to
 * the drafter's max_branch). The exact target distributions come from the
 * forward pass run directly: p(x1), p(x2 | x1), p(x3 | x1 x2) after the
 * request's temperature. Tested: the joint of (x1, x2) and the joint of
 * (x2, x3) (x1 summed out), at temperature 0.7 and 1.0, tree width 1 and 3.
 * The same test must reject a deliberately wrong verifier (no residual after
 * rejections), so it is known to have power.
 *
 * Two drafters: ngram (deterministic, one-hot q) and model:DRAFT (argv[2],
 * the model's first layer: its children are sampled from its q and carry
 * it). The wrong verifiers: no residual (for ngram) and one that ignores q
 * (for the model drafter).
 *
 * Thresholds: tests/unit/stats.h (false alarm 1e-6 per statistic, cells
 * with expected count below 5 pooled).
 */
#include <stdlib.h>
#include <string.h>

#include "backend-impl.h"
#include "engine.h"
#include "forward.h"
#include "gguf.h"
#include "sampling.h"
#include "stats.h"
#include "test.h"

#define V 16
#define N_PROMPT 24
#define N_SAMPLES 4000
/* the wrong verifiers' runs: twice the samples. Their effect depends on
 * the drafts' probabilities under the random prompt; at one seed in CI
 * (COPSE_TEST_SEED=1882544317413114) ngram width 1 at 4000 samples stayed
 * just below the critical value (chi2 110.5, critical 120.3), so the power
 * check is made at 8000 */
#define N_POWER (2 * N_SAMPLES)

static copse_gguf *g_model;
static copse_forward *g_fwd;
static copse_sampler *g_sampler;
static copse_token prompt[N_PROMPT];

/* Processed target distribution after ctx[0 .. n) at temperature t. */
static void target_probs(const copse_token *ctx, int32_t n, float t, double *out)
{
    copse_kvcache *kv = copse__forward_kv(g_fwd);
    int32_t seq;
    CHECK_STATUS(copse__kvcache_seq_add(kv, &seq), COPSE_OK);
    float logits[V];
    int32_t first = 0, lr = n - 1;
    copse_fwd_batch b = {.n_tokens = n, .tokens = ctx, .n_seqs = 1, .seq = &seq, .first = &first, .n_new = &n,
                         .n_logits = 1, .logit_rows = &lr};
    char err[256];
    CHECK_STATUS(copse__forward_run(g_fwd, &b, logits, err, sizeof err), COPSE_OK);
    copse__kvcache_seq_free(kv, seq);
    copse_sampling_params sp = copse__sampling_default_params();
    sp.temperature = t;
    copse_sampling_dist d;
    CHECK_STATUS(copse__sampling_probs(g_sampler, &sp, logits, NULL, 0, &d), COPSE_OK);
    float dense[V];
    copse__sampling_dist_to_dense(&d, dense, V);
    for (int i = 0; i < V; i++)
        out[i] = dense[i];
}

typedef struct sample {
    copse_token x[3];
    int32_t n;
} sample;

/* Run n requests; fills samples, returns accepted nodes in total. */
static char model_spec[4096];

static uint64_t run_engine(const char *spec, float t, int32_t width, copse_verify_fault fault, sample *samples,
                           int n, uint64_t *proposed)
{
    const char *specs[] = {spec};
    copse_engine_params ep = copse__engine_default_params();
    ep.max_running = 64;
    ep.step_tokens = 1024;
    ep.max_waiting = n;
    ep.drafters = specs;
    ep.n_drafters = 1;
    ep.spec_nodes = 8;
    ep.spec_depth = 2;
    ep.max_branch = width;
    ep.adaptive = false;
    ep.verify_fault = fault;
    ep.gguf = g_model;
    copse_engine *e = NULL;
    char err[256];
    CHECK_STATUS(copse__engine_create(g_fwd, &ep, &e, err, sizeof err), COPSE_OK);
    if (!e)
        return 0;
    for (int i = 0; i < n; i++) {
        copse_request_params rp = copse__request_default_params();
        rp.prompt = prompt;
        rp.n_prompt = N_PROMPT;
        rp.max_tokens = 3;
        rp.sampling = copse__sampling_default_params();
        rp.sampling.temperature = t;
        rp.sampling.seed = 0x5eed0000ull + (uint64_t)i;
        rp.drafters = 1;
        samples[i].n = 0;
        uint64_t id;
        CHECK_STATUS(copse__engine_submit(e, &rp, &samples[i], &id, err, sizeof err), COPSE_OK);
    }
    uint64_t accepted = 0;
    *proposed = 0;
    while (!copse__engine_idle(e)) {
        const copse_engine_event *ev;
        int32_t n_ev;
        copse_status st = copse__engine_step(e, &ev, &n_ev, err, sizeof err);
        CHECK_STATUS(st, COPSE_OK);
        if (st != COPSE_OK)
            break;
        for (int32_t k = 0; k < n_ev; k++) {
            sample *s = ev[k].ud;
            for (int32_t j = 0; j < ev[k].n_tokens && s->n < 3; j++)
                s->x[s->n++] = ev[k].tokens[j];
            if (ev[k].finish != COPSE_FINISH_NONE) {
                accepted += ev[k].accepted;
                *proposed += ev[k].proposed;
            }
        }
    }
    copse__engine_destroy(e);
    return accepted;
}

static double p1[V], p2[V][V], p3[V][V][V];

static void exact(float t)
{
    copse_token ctx[N_PROMPT + 2];
    memcpy(ctx, prompt, sizeof prompt);
    target_probs(ctx, N_PROMPT, t, p1);
    for (int a = 0; a < V; a++) {
        ctx[N_PROMPT] = a;
        target_probs(ctx, N_PROMPT + 1, t, p2[a]);
        for (int b = 0; b < V; b++) {
            ctx[N_PROMPT + 1] = b;
            target_probs(ctx, N_PROMPT + 2, t, p3[a][b]);
        }
    }
}

/* The two statistics of a run of n samples; returns the larger ratio
 * stat / critical. */
static double score(const sample *s, int n_samples, const char *what)
{
    static long o12[V * V], o23[V * V];
    static double e12[V * V], e23[V * V];
    memset(o12, 0, sizeof o12);
    memset(o23, 0, sizeof o23);
    memset(e12, 0, sizeof e12);
    memset(e23, 0, sizeof e23);
    long n = 0;
    for (int i = 0; i < n_samples; i++) {
        CHECK_INT_EQ(s[i].n, 3);
        if (s[i].n != 3)
            continue;
        o12[s[i].x[0] * V + s[i].x[1]]++;
        o23[s[i].x[1] * V + s[i].x[2]]++;
        n++;
    }
    for (int a = 0; a < V; a++)
        for (int b = 0; b < V; b++) {
            e12[a * V + b] = p1[a] * p2[a][b];
            for (int c = 0; c < V; c++)
                e23[b * V + c] += p1[a] * p2[a][b] * p3[a][b][c];
        }
    int df12, df23;
    double x12 = chi2_pooled(o12, e12, V * V, n, 5.0, &df12);
    double x23 = chi2_pooled(o23, e23, V * V, n, 5.0, &df23);
    fprintf(stderr, "  %s: (x1,x2) chi2 %.1f (df %d, crit %.1f); (x2,x3) chi2 %.1f (df %d, crit %.1f)\n", what, x12,
            df12, chi2_crit(df12), x23, df23, chi2_crit(df23));
    double r12 = x12 / chi2_crit(df12), r23 = x23 / chi2_crit(df23);
    return r12 > r23 ? r12 : r23;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: test-engine-mss MODEL.gguf DRAFT.gguf (a 16-token vocabulary; the draft: its slice)\n");
        return 2;
    }
    snprintf(model_spec, sizeof model_spec, "model:%s", argv[2]);
    char err[256];
    if (copse__gguf_open(argv[1], &g_model, err, sizeof err) != COPSE_OK) {
        fprintf(stderr, "%s: %s\n", argv[1], err);
        return 1;
    }
    copse_forward_params fp = copse__forward_default_params();
    fp.n_threads = 2;
    fp.max_tokens = 1024;
    fp.max_seqs = 65;
    fp.max_ctx = 64;
    copse_backend_reg *cpu = copse__backend_find("cpu");
    if (copse__forward_create(g_model, cpu->iface.dev_get(cpu, 0), &fp, &g_fwd, err, sizeof err) != COPSE_OK) {
        fprintf(stderr, "forward: %s\n", err);
        return 1;
    }
    if (copse__forward_hparams(g_fwd)->n_vocab != V) {
        fprintf(stderr, "%s: the test needs a %d-token vocabulary\n", argv[1], V);
        return 1;
    }
    CHECK_STATUS(copse__sampler_create(V, &g_sampler, err, sizeof err), COPSE_OK);

    /* the prompt follows the model's own likely continuations (one of the
     * three most probable tokens at each position), so the ngram drafter's
     * proposals, taken from the prompt, are often accepted */
    uint64_t rs = test_seed();
    prompt[0] = (copse_token)(test_rand(&rs) % V);
    for (int i = 1; i < N_PROMPT; i++) {
        double p[V];
        target_probs(prompt, i, 1.0f, p);
        int top[3] = {-1, -1, -1};
        for (int k = 0; k < 3; k++)
            for (int v = 0; v < V; v++)
                if (v != top[0] && v != top[1] && (top[k] < 0 || p[v] > p[top[k]]))
                    top[k] = v;
        prompt[i] = (copse_token)top[test_rand(&rs) % 3];
    }

    sample *samples = malloc(sizeof *samples * N_POWER);
    static const float temps[] = {0.7f, 1.0f};
    static const int32_t widths[] = {1, 3};
    /* a deterministic drafter (one-hot q) and one whose drafts are sampled
     * from a real q (the model's first layer as a draft model); the wrong
     * verifier for each: no residual after rejections, and ignoring q */
    const char *const drafters[2] = {"ngram", model_spec};
    static const copse_verify_fault wrong[2] = {COPSE_VERIFY_FAULT_NO_RESIDUAL, COPSE_VERIFY_FAULT_IGNORE_Q};
    static const char *const wrong_name[2] = {"no residual", "ignores q"};
    for (int ti = 0; ti < 2; ti++) {
        exact(temps[ti]);
        for (int di = 0; di < 2; di++)
            for (int wi = 0; wi < 2; wi++) {
                uint64_t proposed = 0;
                uint64_t accepted =
                    run_engine(drafters[di], temps[ti], widths[wi], COPSE_VERIFY_FAULT_NONE, samples, N_SAMPLES,
                               &proposed);
                char what[160];
                snprintf(what, sizeof what, "%s T %.1f width %d (proposed %llu, accepted %llu)",
                         di ? "model:slice" : "ngram", temps[ti], widths[wi], (unsigned long long)proposed,
                         (unsigned long long)accepted);
                double r = score(samples, N_SAMPLES, what);
                CHECK(r < 1.0);
                CHECK(accepted > N_SAMPLES / 100); /* speculation really happened (>= 1% of samples) */
                CHECK(proposed > accepted);        /* and was rejected too */
                if (ti == 1) {
                    proposed = 0;
                    run_engine(drafters[di], temps[ti], widths[wi], wrong[di], samples, N_POWER, &proposed);
                    snprintf(what, sizeof what, "WRONG verifier (%s), %s T %.1f width %d", wrong_name[di],
                             di ? "model:slice" : "ngram", temps[ti], widths[wi]);
                    r = score(samples, N_POWER, what);
                    CHECK(r > 1.0); /* the test has power */
                }
            }
    }
    free(samples);
    copse__sampler_destroy(g_sampler);
    copse__forward_destroy(g_fwd);
    copse__gguf_close(g_model);
    return test_exit();
}
