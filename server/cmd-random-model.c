/*
 * cmd-random-model.c — `copse random-model`: write a llama-shaped GGUF with
 * random weights, for benchmarks of model shapes we cannot download.
 *
 * Speed does not depend on weight values, so random weights measure decode,
 * prefill and verification costs faithfully; acceptance rates of speculative
 * decoding do depend on them and need real models.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "copse.h"
#include "gguf-write.h"
#include "quant.h"

typedef struct shape {
    const char *name;
    uint32_t n_embd, n_ff, n_layer, n_head, n_head_kv, n_vocab;
    int tied;
    float rope_theta;
} shape;

/* Shapes of published models (their config files), for benchmarks. */
static const shape shapes[] = {
    {"smollm2-135m", 576, 1536, 30, 9, 3, 49152, 1, 100000.0f},
    {"smollm2-360m", 960, 2560, 32, 15, 5, 49152, 1, 100000.0f},
    {"smollm2-1.7b", 2048, 8192, 24, 32, 32, 49152, 1, 130000.0f},
    {"llama-1b", 2048, 8192, 16, 32, 8, 128256, 1, 500000.0f},
    {"llama-8b", 4096, 14336, 32, 32, 8, 128256, 0, 500000.0f},
    /* not a published model: small enough for exhaustive tests (e.g. many
     * speculative steps, chi-square tests of sampling on a small vocabulary) */
    {"tiny", 64, 128, 2, 4, 2, 512, 1, 10000.0f},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: copse random-model --shape NAME --type TYPE -o FILE [--seed S] [--layers N] [--vocab V]\n\n"
               "Writes a llama-architecture GGUF of a known shape with random weights (placeholder\n"
               "vocabulary '<tN>', no tokenizer),\n"
               "for benchmarks. TYPE: q4_0, q4_1, q8_0, f16 or f32 (all matrices; norms are f32).\n"
               "--layers N keeps only the first N layers; --vocab V (2 .. 1048576) replaces the vocabulary size.\n\nshapes:\n");
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        fprintf(f, "  %-14s width %u, ffn %u, %u layers, %u/%u heads, vocabulary %u%s\n", shapes[i].name,
                shapes[i].n_embd, shapes[i].n_ff, shapes[i].n_layer, shapes[i].n_head, shapes[i].n_head_kv,
                shapes[i].n_vocab, shapes[i].tied ? ", tied head" : "");
}

/* ---------------------------------------------------------------- random blocks */

typedef struct gen {
    uint32_t type;
    uint64_t seed;
    const uint32_t *types; /* per tensor */
} gen;

static uint64_t mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void put_fp16(uint8_t *p, float v)
{
    uint16_t h = copse__f32_to_fp16(v);
    p[0] = (uint8_t)h;
    p[1] = (uint8_t)(h >> 8);
}

/* Bytes [offset, offset+n) of tensor i (whole blocks, as the writer
 * promises): random quants with scales that give weights of about +-0.03, or
 * about 1.0 for norm vectors (f32). */
static copse_status fill(void *ud, size_t i, uint64_t offset, void *out, size_t n)
{
    const gen *g = ud;
    uint8_t *b = out;
    const uint32_t type = g->types[i];
    uint64_t s = mix(g->seed ^ (i * 0x9e3779b97f4a7c15ull) ^ offset);
    for (size_t j = 0; j + 8 <= n; j += 8) {
        uint64_t r = mix(s + j);
        memcpy(b + j, &r, 8);
    }
    for (size_t j = n & ~(size_t)7; j < n; j++)
        b[j] = (uint8_t)mix(s ^ j);
    const copse_qtype_traits *t = copse__qtype_traits(type);
    if (type == COPSE_Q_F32) {
        for (size_t j = 0; j + 4 <= n; j += 4) {
            float v = 1.0f + ((float)(b[j] % 64) - 32.0f) / 1024.0f;
            memcpy(b + j, &v, 4);
        }
        return COPSE_OK;
    }
    if (type == COPSE_Q_F16) {
        for (size_t j = 0; j + 2 <= n; j += 2)
            put_fp16(b + j, ((float)b[j] - 127.5f) / 4096.0f);
        return COPSE_OK;
    }
    /* block formats: offset is a multiple of the block size, chunks are whole blocks */
    if (offset % t->type_size != 0 || n % t->type_size != 0)
        return COPSE_EINVAL;
    for (size_t j = 0; j < n; j += t->type_size) {
        put_fp16(b + j, 0.004f);
        if (type == COPSE_Q_Q4_1)
            put_fp16(b + j + 2, -0.03f);
    }
    return COPSE_OK;
}

static void show_progress(uint64_t done, uint64_t total)
{
    static int last = -1;
    int pct = total ? (int)(done * 100 / total) : 100;
    if (pct != last && isatty(STDERR_FILENO))
        fprintf(stderr, "\rwriting %3d%%", pct);
    last = pct;
}

int copse__cmd_random_model(int argc, char **argv)
{
    const char *shape_name = NULL, *type_name = NULL, *out = NULL;
    uint64_t seed = 1;
    long layers = 0, vocab = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (!v) {
            fprintf(stderr, "copse random-model: %s: missing value or unknown option (see --help)\n", a);
            return 2;
        }
        if (!strcmp(a, "--shape"))
            shape_name = v;
        else if (!strcmp(a, "--type"))
            type_name = v;
        else if (!strcmp(a, "-o") || !strcmp(a, "--output"))
            out = v;
        else if (!strcmp(a, "--seed"))
            seed = strtoull(v, NULL, 0);
        else if (!strcmp(a, "--layers"))
            layers = strtol(v, NULL, 10);
        else if (!strcmp(a, "--vocab"))
            vocab = strtol(v, NULL, 10);
        else {
            fprintf(stderr, "copse random-model: unknown option '%s' (see --help)\n", a);
            return 2;
        }
        i++;
    }
    const shape *sh = NULL;
    for (size_t i = 0; shape_name && i < sizeof shapes / sizeof shapes[0]; i++)
        if (!strcmp(shapes[i].name, shape_name))
            sh = &shapes[i];
    uint32_t type = UINT32_MAX;
    static const uint32_t allowed[] = {COPSE_Q_Q4_0, COPSE_Q_Q4_1, COPSE_Q_Q8_0, COPSE_Q_F16, COPSE_Q_F32};
    for (size_t i = 0; type_name && i < sizeof allowed / sizeof allowed[0]; i++)
        if (!strcmp(copse__qtype_name(allowed[i]), type_name))
            type = allowed[i];
    if (!sh || type == UINT32_MAX || !out || layers < 0 || layers > (long)(sh ? sh->n_layer : 0) ||
        (vocab != 0 && (vocab < 2 || vocab > (1L << 20)))) {
        fprintf(stderr, "copse random-model: need --shape (one of the list), --type and -o; --layers at most the "
                        "shape's; --vocab in [2, 1048576]\n\n");
        usage(stderr);
        return 2;
    }
    shape custom = *sh;
    if (vocab)
        custom.n_vocab = (uint32_t)vocab;
    sh = &custom;
    const uint32_t n_layer = layers ? (uint32_t)layers : sh->n_layer;
    const uint32_t hd = sh->n_embd / sh->n_head;

    copse_gguf_writer *w;
    if (copse__gguf_writer_create(&w) != COPSE_OK)
        return 1;
    char name[96];
    copse_status st = COPSE_OK;
    st = st ? st : copse__gguf_writer_add_str(w, "general.architecture", "llama");
    snprintf(name, sizeof name, "random %s %s", sh->name, type_name);
    st = st ? st : copse__gguf_writer_add_str(w, "general.name", name);
#define U32_(key, v) st = st ? st : copse__gguf_writer_add_u32(w, "llama." key, (v))
    U32_("block_count", n_layer);
    U32_("context_length", 8192);
    U32_("embedding_length", sh->n_embd);
    U32_("feed_forward_length", sh->n_ff);
    U32_("attention.head_count", sh->n_head);
    U32_("attention.head_count_kv", sh->n_head_kv);
    U32_("rope.dimension_count", hd);
    U32_("vocab_size", sh->n_vocab);
#undef U32_
    st = st ? st : copse__gguf_writer_add_f32(w, "llama.rope.freq_base", sh->rope_theta);
    st = st ? st : copse__gguf_writer_add_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);

    /* a placeholder vocabulary ("<t0>", "<t1>", ...; no tokenizer model):
     * enough for drafters that check that two models share a vocabulary */
    char *tok_text = malloc((size_t)sh->n_vocab * 12);
    copse_str *tok_strs = malloc(sizeof *tok_strs * sh->n_vocab);
    if (!tok_text || !tok_strs) {
        free(tok_text);
        free(tok_strs);
        copse__gguf_writer_destroy(w);
        return 1;
    }
    for (uint32_t t = 0, at = 0; t < sh->n_vocab; t++) {
        int len = snprintf(tok_text + at, 12, "<t%u>", t);
        tok_strs[t] = (copse_str){.ptr = tok_text + at, .len = (uint64_t)len};
        at += (uint32_t)len;
    }
    copse_gguf_kv tokens = {.key = {.ptr = "tokenizer.ggml.tokens", .len = 21}, .type = COPSE_GGUF_ARRAY};
    tokens.v.arr = (copse_gguf_array){.type = COPSE_GGUF_STRING, .n = sh->n_vocab, .strs = tok_strs};
    st = st ? st : copse__gguf_writer_add_kv(w, &tokens);

    /* tensor list and each one's type */
    size_t n_tensors = 2 + (sh->tied ? 0 : 1) + 9 * (size_t)n_layer, k = 0;
    uint32_t *types = calloc(n_tensors, sizeof *types);
    if (!types) {
        free(tok_text);
        free(tok_strs);
        copse__gguf_writer_destroy(w);
        return 1;
    }
#define T_(nm, ty, ne0, ne1)                                                        \
    do {                                                                            \
        types[k++] = (ty);                                                          \
        st = st ? st : copse__gguf_writer_add_tensor(w, (nm), (ty), (ne0), (ne1)); \
    } while (0)
    T_("token_embd.weight", type, sh->n_embd, sh->n_vocab);
    T_("output_norm.weight", COPSE_Q_F32, sh->n_embd, 1);
    if (!sh->tied)
        T_("output.weight", type, sh->n_embd, sh->n_vocab);
    for (uint32_t l = 0; l < n_layer; l++) {
        static const char *const names[9] = {"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                                             "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"};
        const uint64_t ne[9][2] = {
            {sh->n_embd, 1},
            {sh->n_embd, (uint64_t)sh->n_head * hd},
            {sh->n_embd, (uint64_t)sh->n_head_kv * hd},
            {sh->n_embd, (uint64_t)sh->n_head_kv * hd},
            {(uint64_t)sh->n_head * hd, sh->n_embd},
            {sh->n_embd, 1},
            {sh->n_embd, sh->n_ff},
            {sh->n_embd, sh->n_ff},
            {sh->n_ff, sh->n_embd},
        };
        for (int j = 0; j < 9; j++) {
            snprintf(name, sizeof name, "blk.%u.%s.weight", l, names[j]);
            T_(name, (j == 0 || j == 5) ? COPSE_Q_F32 : type, ne[j][0], ne[j][1]);
        }
    }
#undef T_
    char err[512] = "";
    gen g = {.type = type, .seed = seed, .types = types};
    if (st == COPSE_OK)
        st = copse__gguf_writer_finish(w, out, fill, &g, show_progress, err, sizeof err);
    if (isatty(STDERR_FILENO))
        fprintf(stderr, "\n");
    free(types);
    free(tok_text);
    free(tok_strs);
    copse__gguf_writer_destroy(w);
    if (st != COPSE_OK) {
        fprintf(stderr, "copse random-model: %s\n", err[0] ? err : copse_strerror(st));
        return 1;
    }
    fprintf(stderr, "copse: wrote %s (%s, %s, %u layers)\n", out, sh->name, type_name, n_layer);
    return 0;
}
