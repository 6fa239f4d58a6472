/*
 * cmd-bench.c — `copse bench decode`: prefill and decode speed of a model on
 * the CPU backend or a device (--backend), the memory-bandwidth floor (host
 * read or device copy bandwidth), and the verification cost
 * curve (the time of one forward pass over n new tokens, relative to n = 1).
 *
 * Every number is a median over --runs repetitions. Token ids are random:
 * speed does not depend on them.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backend-impl.h"
#include "backend-select.h"
#include "commands.h"
#include "copse.h"
#include "forward.h"
#include "gguf.h"
#include "json-writer.h"
#include "quant.h"

typedef struct bench_opts {
    const char *model;
    int prompt_tokens;
    int gen_tokens;
    int threads;
    int runs;
    int json;
    const char *backend; /* --backend NAME[:N], NULL: cpu */
} bench_opts;

static void usage(FILE *f)
{
    fprintf(f, "usage: copse bench decode -m MODEL [--prompt-tokens N] [--gen-tokens N] [--threads N]\n"
               "                          [--runs R] [--json] [--backend NAME[:N]]\n\n"
               "Measures on the CPU backend, or the device --backend names (medians of R runs,\n"
               "default 3):\n"
               "  prefill      tokens/s of one forward pass over N prompt tokens (default 512)\n"
               "  decode       tokens/s generating --gen-tokens (default 64) one at a time, at context\n"
               "               depth 0 and at depth N\n"
               "  floor        decode tokens/s if every step only streamed its weights (and KV) once\n"
               "               at the memory bandwidth measured here (host: read bandwidth with the\n"
               "               threads; a device backend: its device-to-device copy bandwidth)\n"
               "  verify cost  time of one pass over n = 1, 2, 4, 8, 16, 32, 64 new tokens at depth N,\n"
               "               logits for all n (left where the backend computed them, as the\n"
               "               engine leaves them for the verify op), relative to n = 1\n"
               "--json prints one JSON object instead of the table.\n");
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* ---------------------------------------------------------------- memory bandwidth */

typedef struct bw_part {
    const uint64_t *p;
    size_t n;
    uint64_t sum;
} bw_part;

static void *bw_read(void *arg)
{
    bw_part *b = arg;
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (size_t i = 0; i + 4 <= b->n; i += 4) {
        s0 += b->p[i];
        s1 += b->p[i + 1];
        s2 += b->p[i + 2];
        s3 += b->p[i + 3];
    }
    b->sum = s0 + s1 + s2 + s3;
    return NULL;
}

/* Read bandwidth in bytes/s with n threads over a buffer far larger than
 * the caches (best of 3). */
static double measure_bandwidth(int n_threads)
{
    const size_t bytes = (size_t)1 << 30, words = bytes / 8;
    uint64_t *buf = malloc(bytes);
    if (!buf)
        return 0;
    for (size_t i = 0; i < words; i++)
        buf[i] = i;
    double best = 0;
    pthread_t th[64];
    bw_part parts[64];
    if (n_threads > 64)
        n_threads = 64;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = now_s();
        for (int t = 0; t < n_threads; t++) {
            parts[t] = (bw_part){.p = buf + words / (size_t)n_threads * (size_t)t, .n = words / (size_t)n_threads};
            pthread_create(&th[t], NULL, bw_read, &parts[t]);
        }
        uint64_t sum = 0;
        for (int t = 0; t < n_threads; t++) {
            pthread_join(th[t], NULL);
            sum += parts[t].sum;
        }
        double dt = now_s() - t0;
        if (sum == 42) /* keep the reads */
            fprintf(stderr, " ");
        if (bytes / dt > best)
            best = bytes / dt;
    }
    free(buf);
    return best;
}

/* ---------------------------------------------------------------- timed passes */

typedef struct bench {
    copse_forward *f;
    int32_t seq;
    uint32_t n_vocab;
    copse_token *ids;   /* random prompt ids */
    int32_t *rows;      /* 0, 1, 2, ... */
} bench;

/* One forward pass over ids[0..n) after the cached tokens; commits them.
 * logits for the last `n_logits` tokens, not downloaded from a device (the
 * engine verifies there). Returns seconds, or -1 on error. */
static double pass(bench *b, const copse_token *ids, int32_t n, int32_t n_logits, int commit)
{
    char err[256];
    int32_t first = 0;
    copse_fwd_batch batch = {.n_tokens = n, .tokens = ids, .n_seqs = 1, .seq = &b->seq, .first = &first,
                             .n_new = &n, .n_logits = n_logits, .logit_rows = b->rows + (n - n_logits)};
    double t0 = now_s();
    if (copse__forward_run(b->f, &batch, NULL, err, sizeof err) != COPSE_OK) {
        fprintf(stderr, "copse bench: %s\n", err);
        return -1;
    }
    double dt = now_s() - t0;
    copse_kvcache *kv = copse__forward_kv(b->f);
    if (commit)
        copse__kvcache_commit(kv, b->seq, (uint32_t)n);
    else
        copse__kvcache_truncate(kv, b->seq, copse__kvcache_seq_len(kv, b->seq));
    return dt;
}

static void reset(bench *b, uint32_t len)
{
    copse__kvcache_truncate(copse__forward_kv(b->f), b->seq, len);
}

/* Decode tokens/s: n_gen single-token passes after a cache of `depth` tokens. */
static double decode_rate(bench *b, int depth, int n_gen)
{
    reset(b, 0);
    if (depth > 0 && pass(b, b->ids, depth, 1, 1) < 0)
        return -1;
    double total = 0;
    copse_token t = b->ids[depth];
    for (int i = 0; i < n_gen; i++) {
        double dt = pass(b, &t, 1, 1, 1);
        if (dt < 0)
            return -1;
        total += dt;
        t = (copse_token)((uint32_t)(t * 2654435761u + 1u) % b->n_vocab);
    }
    return n_gen / total;
}

int copse__cmd_bench(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "spec"))
        return copse__cmd_bench_spec(argc, argv);
    if (argc < 2 || strcmp(argv[1], "decode") != 0) {
        if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
            usage(stdout);
            return 0;
        }
        fprintf(stderr, "copse bench: expected a workload ('decode' or 'spec')\n\n");
        usage(stderr);
        return 2;
    }
    bench_opts o = {.prompt_tokens = 512, .gen_tokens = 64, .threads = 0, .runs = 3};
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            o.json = 1;
            continue;
        }
        if (!v) {
            fprintf(stderr, "copse bench: %s: missing value or unknown option (see --help)\n", a);
            return 2;
        }
        char *end;
        long x = strtol(v, &end, 10);
        if (!strcmp(a, "-m") || !strcmp(a, "--model"))
            o.model = v;
        else if (!strcmp(a, "--backend"))
            o.backend = v;
        else if (*end || x < 0 || x > 1 << 16) {
            fprintf(stderr, "copse bench: %s: '%s' is not a count\n", a, v);
            return 2;
        } else if (!strcmp(a, "--prompt-tokens"))
            o.prompt_tokens = (int)x;
        else if (!strcmp(a, "--gen-tokens"))
            o.gen_tokens = (int)x;
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads"))
            o.threads = (int)x;
        else if (!strcmp(a, "--runs"))
            o.runs = (int)x;
        else {
            fprintf(stderr, "copse bench: unknown option '%s' (see --help)\n", a);
            return 2;
        }
        i++;
    }
    if (!o.model || o.prompt_tokens < 1 || o.gen_tokens < 1 || o.runs < 1) {
        fprintf(stderr, "copse bench: need -m MODEL, and counts of at least 1\n");
        return 2;
    }
    int threads = o.threads ? o.threads : (int)sysconf(_SC_NPROCESSORS_ONLN);

    char err[512];
    copse_gguf *g;
    if (copse__gguf_open(o.model, &g, err, sizeof err) != COPSE_OK) {
        fprintf(stderr, "copse bench: %s\n", err);
        return 1;
    }
    enum { MAX_VERIFY = 64, N_VERIFY = 7 };
    copse_forward_params fp = copse__forward_default_params();
    fp.n_threads = threads;
    fp.max_seqs = 1;
    fp.max_tokens = (uint32_t)(o.prompt_tokens > MAX_VERIFY ? o.prompt_tokens : MAX_VERIFY);
    fp.max_ctx = (uint32_t)(o.prompt_tokens + o.gen_tokens + MAX_VERIFY + 16);
    copse_backend_dev *dev = copse__backend_select(o.backend ? o.backend : "cpu", "copse bench");
    bench b = {0};
    int rc = 1;
    if (!dev) {
        copse__gguf_close(g);
        return 1;
    }
    if (copse__forward_create(g, dev, &fp, &b.f, err, sizeof err) != COPSE_OK) {
        const char *detail = copse__backend_dev_error(dev);
        fprintf(stderr, "copse bench: %s%s%s\n", err, detail[0] ? "\n" : "", detail);
        copse__gguf_close(g);
        return 1;
    }
    const copse_hparams *hp = copse__forward_hparams(b.f);
    b.n_vocab = hp->n_vocab;
    /* prompt ids, also the verify passes' new tokens (ids 1 .. MAX_VERIFY) */
    const int n_ids = (o.prompt_tokens > MAX_VERIFY ? o.prompt_tokens : MAX_VERIFY) + 1;
    b.ids = malloc(sizeof *b.ids * (size_t)n_ids);
    b.rows = malloc(sizeof *b.rows * fp.max_tokens);
    if (!b.ids || !b.rows || copse__kvcache_seq_add(copse__forward_kv(b.f), &b.seq) != COPSE_OK) {
        fprintf(stderr, "copse bench: out of memory\n");
        goto done;
    }
    for (int i = 0; i < n_ids; i++)
        b.ids[i] = (copse_token)((uint32_t)(i * 2654435761u + 12345u) % hp->n_vocab);
    for (uint32_t i = 0; i < fp.max_tokens; i++)
        b.rows[i] = (int32_t)i;

    /* bytes one decode step must read: every weight (the embedding table only
     * when it is also the output head) plus the KV entries at the depth */
    uint64_t weight_bytes = 0;
    for (size_t i = 0; i < copse__gguf_n_tensors(g); i++) {
        const copse_gguf_tensor *t = copse__gguf_tensor_at(g, i);
        if (!copse__str_eq(t->name, "token_embd.weight") || hp->tied_output)
            weight_bytes += t->nbytes;
    }
    const uint64_t kv_per_token =
        2ull * hp->n_layer * hp->n_head_kv * hp->head_dim * (fp.kv_type == COPSE_Q_F16 ? 2 : 4);
    const uint64_t depth = (uint64_t)o.prompt_tokens;

    /* a device backend measures its own memory; the CPU the host's */
    copse_backend_copy_bandwidth_fn dev_bw = NULL;
    if (dev->reg->iface.get_proc)
        dev_bw = (copse_backend_copy_bandwidth_fn)(uintptr_t)dev->reg->iface.get_proc(dev->reg, "copy_bandwidth");
    if (!o.json)
        fprintf(stderr, "copse bench: measuring memory bandwidth (%s)\n", dev_bw ? "device copy" : "host read");
    const double bw = dev_bw ? dev_bw(dev) : measure_bandwidth(threads);
    if (bw <= 0) {
        fprintf(stderr, "copse bench: could not measure the memory bandwidth\n");
        goto done;
    }

    double *t = malloc(sizeof *t * (size_t)o.runs);
    double prefill, decode0, decode_d, verify[N_VERIFY];
    static const int verify_n[N_VERIFY] = {1, 2, 4, 8, 16, 32, 64};
    if (!o.json)
        fprintf(stderr, "copse bench: prefill\n");
    pass(&b, b.ids, 8, 1, 0); /* warm up */
    for (int r = 0; r < o.runs; r++) {
        reset(&b, 0);
        double dt = pass(&b, b.ids, o.prompt_tokens, 1, 1);
        if (dt < 0)
            goto done_t;
        t[r] = o.prompt_tokens / dt;
    }
    prefill = median(t, o.runs);
    if (!o.json)
        fprintf(stderr, "copse bench: decode\n");
    for (int r = 0; r < o.runs; r++)
        if ((t[r] = decode_rate(&b, 0, o.gen_tokens)) < 0)
            goto done_t;
    decode0 = median(t, o.runs);
    for (int r = 0; r < o.runs; r++)
        if ((t[r] = decode_rate(&b, o.prompt_tokens, o.gen_tokens)) < 0)
            goto done_t;
    decode_d = median(t, o.runs);
    if (!o.json)
        fprintf(stderr, "copse bench: verification cost curve\n");
    reset(&b, 0);
    if (pass(&b, b.ids, o.prompt_tokens, 1, 1) < 0)
        goto done_t;
    for (int k = 0; k < N_VERIFY; k++) {
        const int reps = o.runs < 5 ? 5 : o.runs;
        double *tv = malloc(sizeof *tv * (size_t)reps);
        for (int r = 0; r < reps; r++) {
            /* n fresh tokens at depth, logits for all of them, then dropped */
            tv[r] = pass(&b, b.ids + 1, verify_n[k], verify_n[k], 0);
            if (tv[r] < 0) {
                free(tv);
                goto done_t;
            }
        }
        verify[k] = median(tv, reps);
        free(tv);
    }

    const double floor0 = bw / (double)weight_bytes, floor_d = bw / (double)(weight_bytes + kv_per_token * depth);
    if (o.json) {
        copse_jw w = {.f = stdout};
        char key[16];
        copse__jw_open(&w, NULL, '{', false);
        copse__jw_cstr(&w, "model", o.model);
        copse__jw_cstr(&w, "backend", o.backend ? o.backend : "cpu");
        copse__jw_i64(&w, "threads", threads);
        copse__jw_i64(&w, "prompt_tokens", o.prompt_tokens);
        copse__jw_i64(&w, "gen_tokens", o.gen_tokens);
        copse__jw_i64(&w, "runs", o.runs);
        copse__jw_f64(&w, "bandwidth_gb_s", bw / 1e9, true);
        copse__jw_cstr(&w, "bandwidth_kind", dev_bw ? "device copy" : "host read");
        copse__jw_u64(&w, "weight_bytes", weight_bytes);
        copse__jw_f64(&w, "prefill_tok_s", prefill, true);
        copse__jw_f64(&w, "decode_tok_s", decode0, true);
        copse__jw_f64(&w, "floor_decode_tok_s", floor0, true);
        copse__jw_i64(&w, "decode_depth", o.prompt_tokens);
        copse__jw_f64(&w, "decode_tok_s_at_depth", decode_d, true);
        copse__jw_f64(&w, "floor_decode_tok_s_at_depth", floor_d, true);
        copse__jw_i64(&w, "verify_depth", o.prompt_tokens);
        copse__jw_open(&w, "verify_ms", '{', true);
        for (int k = 0; k < N_VERIFY; k++) {
            snprintf(key, sizeof key, "%d", verify_n[k]);
            copse__jw_f64(&w, key, verify[k] * 1e3, true);
        }
        copse__jw_close(&w, '}');
        copse__jw_open(&w, "verify_cost_ratio", '{', true);
        for (int k = 0; k < N_VERIFY; k++) {
            snprintf(key, sizeof key, "%d", verify_n[k]);
            copse__jw_f64(&w, key, verify[k] / verify[0], true);
        }
        copse__jw_close(&w, '}');
        copse__jw_close(&w, '}');
    } else {
        printf("model       %s\n", o.model);
        printf("backend     %s\n", o.backend ? o.backend : "cpu");
        printf("threads     %d\n", threads);
        printf("bandwidth   %.1f GB/s (%s, measured)\n", bw / 1e9, dev_bw ? "device copy" : "host read");
        printf("weights     %.1f MiB read per decode step\n", weight_bytes / 1048576.0);
        printf("prefill     %8.1f tokens/s (%d tokens)\n", prefill, o.prompt_tokens);
        printf("decode      %8.1f tokens/s at depth 0   (floor %.1f, %3.0f%%)\n", decode0, floor0,
               100 * decode0 / floor0);
        printf("decode      %8.1f tokens/s at depth %d (floor %.1f, %3.0f%%)\n", decode_d, o.prompt_tokens, floor_d,
               100 * decode_d / floor_d);
        printf("verify at depth %d: n, ms, cost relative to n = 1\n", o.prompt_tokens);
        for (int k = 0; k < N_VERIFY; k++)
            printf("  %2d  %8.2f  %5.2fx\n", verify_n[k], verify[k] * 1e3, verify[k] / verify[0]);
    }
    rc = 0;
done_t:
    free(t);
done:
    free(b.ids);
    free(b.rows);
    copse__forward_destroy(b.f);
    copse__gguf_close(g);
    return rc;
}
