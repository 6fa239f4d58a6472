/*
 * forward-tool.c — run copse's forward pass on token ids, for comparison with
 * the NumPy reference (tests/model/test_forward.py).
 *
 *   forward-tool MODEL --dump FILE [--chunk N] [--threads N] IDS...
 *       Logits for every position of IDS, fed in chunks of N tokens (default:
 *       all at once), written to FILE as float32 [len(IDS), n_vocab].
 *   forward-tool MODEL --greedy N [--threads N] IDS...
 *       Prefill IDS, then greedy-decode N tokens one at a time; prints the ids.
 *   forward-tool MODEL --batch-check [--threads N] IDS...
 * --kv-f16 makes the KV cache float16 (default float32).
 *       Runs IDS as one sequence alone and again side by side with two other
 *       sequences in one ragged batch (and token by token); exits 1 unless the
 *       logits of IDS are bit-identical in every arrangement.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend-impl.h"
#include "forward.h"
#include "gguf.h"
#include "quant.h"

static int fail(const char *what, const char *err)
{
    fprintf(stderr, "forward-tool: %s: %s\n", what, err);
    return 1;
}

/* Feed ids[0..n) of KV sequence seq in chunks; logits of every position into out. */
static int run_chunks(copse_forward *f, int32_t seq, const copse_token *ids, int32_t n, int32_t chunk, float *out)
{
    const uint32_t V = copse__forward_hparams(f)->n_vocab;
    int32_t *rows = malloc(sizeof *rows * (size_t)chunk);
    char err[256];
    for (int32_t at = 0; at < n; at += chunk) {
        int32_t m = n - at < chunk ? n - at : chunk;
        for (int32_t i = 0; i < m; i++)
            rows[i] = i;
        int32_t first = 0;
        copse_fwd_batch b = {.n_tokens = m, .tokens = ids + at, .n_seqs = 1, .seq = &seq, .first = &first,
                             .n_new = &m, .n_logits = m, .logit_rows = rows};
        if (copse__forward_run(f, &b, out + (size_t)at * V, err, sizeof err) != COPSE_OK) {
            free(rows);
            return fail("forward", err);
        }
        copse__kvcache_commit(copse__forward_kv(f), seq, (uint32_t)m);
    }
    free(rows);
    return 0;
}

static int argmax(const float *x, uint32_t n)
{
    uint32_t best = 0;
    for (uint32_t i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return (int)best;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: forward-tool MODEL (--dump FILE [--chunk N] | --greedy N | --batch-check) "
                        "[--threads N] IDS...\n");
        return 2;
    }
    const char *model = argv[1], *dump = NULL;
    int greedy = -1, chunk = 0, threads = 0, batch_check = 0, kv_f16 = 0;
    copse_token *ids = calloc((size_t)argc, sizeof *ids);
    int32_t n = 0;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--dump") && i + 1 < argc)
            dump = argv[++i];
        else if (!strcmp(argv[i], "--chunk") && i + 1 < argc)
            chunk = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--greedy") && i + 1 < argc)
            greedy = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch-check"))
            batch_check = 1;
        else if (!strcmp(argv[i], "--kv-f16"))
            kv_f16 = 1;
        else
            ids[n++] = atoi(argv[i]);
    }
    if (n == 0)
        return fail("arguments", "no token ids");
    if (chunk <= 0)
        chunk = n;

    char err[512];
    copse_gguf *g;
    if (copse__gguf_open(model, &g, err, sizeof err) != COPSE_OK)
        return fail(model, err);
    copse_forward_params p = copse__forward_default_params();
    p.n_threads = threads;
    if (kv_f16)
        p.kv_type = COPSE_Q_F16;
    p.max_tokens = (uint32_t)(3 * n + 8);
    p.max_seqs = 4;
    p.max_ctx = (uint32_t)(n + (greedy > 0 ? greedy : 0) + 16);
    copse_backend_reg *cpu = copse__backend_find("cpu");
    copse_forward *f;
    if (copse__forward_create(g, cpu->iface.dev_get(cpu, 0), &p, &f, err, sizeof err) != COPSE_OK)
        return fail("create", err);
    const uint32_t V = copse__forward_hparams(f)->n_vocab;
    copse_kvcache *kv = copse__forward_kv(f);
    int rc = 0;
    int32_t seq;
    copse__kvcache_seq_add(kv, &seq);
    float *logits = malloc(sizeof(float) * V * (size_t)(3 * n + 8));

    if (dump) {
        if ((rc = run_chunks(f, seq, ids, n, chunk, logits)) == 0) {
            FILE *out = fopen(dump, "wb");
            if (!out || fwrite(logits, sizeof(float) * V, (size_t)n, out) != (size_t)n)
                rc = fail(dump, "cannot write");
            if (out)
                fclose(out);
        }
    } else if (greedy >= 0) {
        if ((rc = run_chunks(f, seq, ids, n, chunk, logits)) == 0) {
            copse_token t = argmax(logits + (size_t)(n - 1) * V, V);
            for (int i = 0; i < greedy && rc == 0; i++) {
                printf("%s%d", i ? " " : "", t);
                rc = run_chunks(f, seq, &t, 1, 1, logits);
                t = argmax(logits, V);
            }
            printf("\n");
        }
    } else if (batch_check) {
        /* alone, all at once */
        float *alone = malloc(sizeof(float) * V * (size_t)n);
        rc = run_chunks(f, seq, ids, n, n, alone);
        /* token by token */
        int32_t seq2;
        copse__kvcache_seq_add(kv, &seq2);
        if (rc == 0 && (rc = run_chunks(f, seq2, ids, n, 1, logits)) == 0 &&
            memcmp(alone, logits, sizeof(float) * V * (size_t)n) != 0)
            rc = fail("batch-check", "token-by-token logits differ from the one-call logits");
        /* side by side: a reversed copy, ids, and a short prefix, in one ragged batch */
        int32_t s3[3];
        copse__kvcache_seq_free(kv, seq);
        copse__kvcache_seq_free(kv, seq2);
        for (int i = 0; i < 3; i++)
            copse__kvcache_seq_add(kv, &s3[i]);
        copse_token *all = malloc(sizeof *all * (size_t)(3 * n));
        int32_t k = n / 2 + 1;
        for (int32_t i = 0; i < n; i++)
            all[i] = ids[n - 1 - i];
        memcpy(all + n, ids, sizeof *ids * (size_t)n);
        memcpy(all + 2 * n, ids, sizeof *ids * (size_t)k);
        int32_t first[3] = {0, n, 2 * n}, n_new[3] = {n, n, k}, total = 2 * n + k;
        int32_t *rows = malloc(sizeof *rows * (size_t)n);
        for (int32_t i = 0; i < n; i++)
            rows[i] = n + i;
        copse_fwd_batch b = {.n_tokens = total, .tokens = all, .n_seqs = 3, .seq = s3, .first = first,
                             .n_new = n_new, .n_logits = n, .logit_rows = rows};
        if (rc == 0 && copse__forward_run(f, &b, logits, err, sizeof err) != COPSE_OK)
            rc = fail("forward (batch)", err);
        else if (rc == 0 && memcmp(alone, logits, sizeof(float) * V * (size_t)n) != 0)
            rc = fail("batch-check", "logits in a ragged batch of 3 sequences differ from the logits alone");
        if (rc == 0)
            printf("batch-check: %d tokens bit-identical alone, token by token and in a batch of 3\n", n);
        free(rows);
        free(all);
        free(alone);
    }
    free(logits);
    free(ids);
    copse__forward_destroy(f);
    copse__gguf_close(g);
    return rc;
}
