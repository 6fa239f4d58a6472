/*
 * test-tokenizer.c — the tokenizers, without Python.
 *
 *   synthetic vocabularies (always): GGUF files built in memory check the
 *     validation of every vocabulary field (errors name the key), the BPE
 *     and SentencePiece merge rules, byte fallback, special tokens, ENOSPACE.
 *   real models (skipped when absent from $COPSE_MODEL_DIR / ~/.cache/copse):
 *     encodings taken from the Hugging Face reference (tests/model/reftok.py),
 *     round trips, special parsing on/off, BOS/EOS flags, EOG tokens,
 *     streaming decode of characters split over byte tokens, invalid UTF-8,
 *     100 KB inputs in well under a second.
 */
#include <time.h>

#include "test.h"
#include "gguf.h"
#include "model.h"
#include "tokenizer.h"

#define MAX_IDS 64

/* Encoding 100 KB of one repeated character must stay well under a second
 * (optimized builds take ~0.1 s); sanitizer builds are allowed more. */
#if defined(__SANITIZE_ADDRESS__)
#define TIME_LIMIT_100KB 5.0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TIME_LIMIT_100KB 5.0
#endif
#endif
#ifndef TIME_LIMIT_100KB
#define TIME_LIMIT_100KB 0.5
#endif

/* ---------------------------------------------------------------- a GGUF writer */

typedef struct gbuf {
    uint8_t *p;
    size_t n, cap;
    uint64_t n_kv;
} gbuf;

static void put(gbuf *b, const void *s, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 256;
        b->p = realloc(b->p, b->cap);
        if (!b->p)
            abort();
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
}
static void put_u32(gbuf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(gbuf *b, uint64_t v) { put(b, &v, 8); }
static void put_str(gbuf *b, const char *s)
{
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}
static void kv_key(gbuf *b, const char *key, uint32_t type)
{
    put_str(b, key);
    put_u32(b, type);
    b->n_kv++;
}
static void kv_str(gbuf *b, const char *key, const char *v)
{
    kv_key(b, key, COPSE_GGUF_STRING);
    put_str(b, v);
}
static void kv_u32(gbuf *b, const char *key, uint32_t v)
{
    kv_key(b, key, COPSE_GGUF_UINT32);
    put_u32(b, v);
}
static void kv_bool(gbuf *b, const char *key, bool v)
{
    kv_key(b, key, COPSE_GGUF_BOOL);
    uint8_t u = v;
    put(b, &u, 1);
}
static void kv_strs(gbuf *b, const char *key, const char *const *v, size_t n)
{
    kv_key(b, key, COPSE_GGUF_ARRAY);
    put_u32(b, COPSE_GGUF_STRING);
    put_u64(b, n);
    for (size_t i = 0; i < n; i++)
        put_str(b, v[i]);
}
static void kv_i32s(gbuf *b, const char *key, const int32_t *v, size_t n)
{
    kv_key(b, key, COPSE_GGUF_ARRAY);
    put_u32(b, COPSE_GGUF_INT32);
    put_u64(b, n);
    put(b, v, 4 * n);
}
static void kv_f32s(gbuf *b, const char *key, const float *v, size_t n)
{
    kv_key(b, key, COPSE_GGUF_ARRAY);
    put_u32(b, COPSE_GGUF_FLOAT32);
    put_u64(b, n);
    put(b, v, 4 * n);
}

/* The finished file: header + the kvs collected in body. With
 * $COPSE_TOKENIZER_SEED_DIR set, each file is also written there as a seed for
 * fuzz-tokenizer. */
static gbuf finish(gbuf *body)
{
    gbuf f = {0};
    put_u32(&f, COPSE_GGUF_MAGIC);
    put_u32(&f, 3);
    put_u64(&f, 0);
    put_u64(&f, body->n_kv);
    put(&f, body->p, body->n);
    uint8_t zero[32] = {0};
    put(&f, zero, 32 - f.n % 32);
    free(body->p);
    const char *dir = getenv("COPSE_TOKENIZER_SEED_DIR");
    if (dir && *dir) {
        static int n_seed;
        char path[4096];
        snprintf(path, sizeof path, "%.3000s/gguf-%03d", dir, n_seed++);
        FILE *out = fopen(path, "wb");
        if (out) {
            fwrite(f.p, 1, f.n, out);
            fclose(out);
        }
    }
    return f;
}

/* Open a tokenizer from body; the returned gguf must be closed by the caller. */
static copse_status open_tok(gbuf *body, copse_gguf **g, copse_tokenizer **tok, char *err,
                             size_t es, gbuf *file)
{
    *file = finish(body);
    *tok = NULL;
    copse_status st = copse__gguf_open_memory(file->p, file->n, g, err, es);
    if (st != COPSE_OK) {
        fprintf(stderr, "gguf: %s\n", err);
        return st;
    }
    st = copse__tokenizer_create(*g, tok, err, es);
    if (st != COPSE_OK) {
        copse__gguf_close(*g);
        *g = NULL;
    }
    return st;
}

/* ---------------------------------------------------------------- helpers */

static size_t enc(const copse_tokenizer *tok, const char *s, size_t len, int flags,
                  copse_token *ids)
{
    size_t n = 0;
    copse_status st = copse__tokenizer_encode(tok, s, len, flags, ids, MAX_IDS, &n);
    CHECK_STATUS(st, COPSE_OK);
    return st == COPSE_OK ? n : 0;
}

static void check_ids(const char *what, const copse_token *got, size_t n, const copse_token *want,
                      size_t nw)
{
    test_checks_++;
    if (n == nw && memcmp(got, want, n * sizeof *got) == 0)
        return;
    test_failures_++;
    fprintf(stderr, "%s: ids differ\n  got :", what);
    for (size_t i = 0; i < n; i++)
        fprintf(stderr, " %d", (int)got[i]);
    fprintf(stderr, "\n  want:");
    for (size_t i = 0; i < nw; i++)
        fprintf(stderr, " %d", (int)want[i]);
    fprintf(stderr, "\n");
}

#define EXPECT_IDS(tok, text, flags, ...)                                          \
    do {                                                                           \
        static const copse_token want_[] = {__VA_ARGS__};                          \
        copse_token got_[MAX_IDS];                                                 \
        size_t n_ = enc(tok, text, strlen(text), flags, got_);                     \
        check_ids(text, got_, n_, want_, sizeof want_ / sizeof want_[0]);          \
    } while (0)

/* decode(ids) must give exactly s (len bytes). */
static void check_roundtrip(const copse_tokenizer *tok, const char *s, size_t len, int flags,
                            bool render)
{
    size_t n = 0;
    copse_status st = copse__tokenizer_encode(tok, s, len, flags, NULL, 0, &n);
    CHECK(st == COPSE_OK || st == COPSE_ENOSPACE);
    copse_token *ids = malloc((n + 1) * sizeof *ids);
    char *out = malloc(len + 16);
    CHECK_STATUS(copse__tokenizer_encode(tok, s, len, flags, ids, n, &n), COPSE_OK);
    size_t m = 0;
    CHECK_STATUS(copse__tokenizer_decode(tok, ids, n, render, out, len + 16, &m), COPSE_OK);
    test_checks_++;
    if (m != len || memcmp(out, s, len) != 0) {
        test_failures_++;
        fprintf(stderr, "round trip of %.60s... (%zu bytes) gave %zu bytes\n", s, len, m);
    }
    free(ids);
    free(out);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---------------------------------------------------------------- synthetic BPE */

/* Byte-level pieces: "Ġ" is the space byte. */
static const char *const BPE_TOKENS[] = {
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "a", "b", "c", "Ġ", "ab", "Ġab", "abc",
    "1", "2", "<tag>", "Ã", "©",
};
static const char *const BPE_MERGES[] = {"a b", "Ġ ab", "ab c"};
static const int32_t BPE_TYPES[] = {3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 4, 1, 1};
#define N_BPE (sizeof BPE_TOKENS / sizeof BPE_TOKENS[0])

static void bpe_body(gbuf *b, const char *pre)
{
    kv_str(b, "tokenizer.ggml.model", "gpt2");
    if (pre)
        kv_str(b, "tokenizer.ggml.pre", pre);
    kv_strs(b, "tokenizer.ggml.tokens", BPE_TOKENS, N_BPE);
    kv_i32s(b, "tokenizer.ggml.token_type", BPE_TYPES, N_BPE);
    kv_strs(b, "tokenizer.ggml.merges", BPE_MERGES, 3);
    kv_u32(b, "tokenizer.ggml.bos_token_id", 1);
    kv_u32(b, "tokenizer.ggml.eos_token_id", 2);
}

static void test_synthetic_bpe(void)
{
    gbuf body = {0}, file;
    copse_gguf *g;
    copse_tokenizer *tok;
    char err[256];
    bpe_body(&body, "no-such-pre");
    kv_bool(&body, "tokenizer.ggml.add_bos_token", true);
    if (open_tok(&body, &g, &tok, err, sizeof err, &file) != COPSE_OK) {
        CHECK(!"synthetic BPE tokenizer");
        fprintf(stderr, "  %s\n", err);
        free(file.p);
        return;
    }
    CHECK_STR_EQ(copse__tokenizer_pre_name(tok), "default"); /* unknown pre -> gpt2 regex */
    CHECK_INT_EQ(copse__tokenizer_type(tok), COPSE_VOCAB_BPE);
    CHECK_INT_EQ(copse__tokenizer_n_vocab(tok), (int)N_BPE);
    EXPECT_IDS(tok, "ab ab", 0, 7, 8);
    EXPECT_IDS(tok, "abc", 0, 9);
    EXPECT_IDS(tok, "abcab", 0, 9, 7); /* one \p{L}+ piece: (a b) first, then (ab c) */
    EXPECT_IDS(tok, "ba", 0, 4, 3);
    EXPECT_IDS(tok, "a1", 0, 3, 10);
    EXPECT_IDS(tok, "xa", 0, 3); /* x has no byte token: dropped, as the reference does */
    EXPECT_IDS(tok, "\xc3\xa9", 0, 13, 14); /* é as its two byte-level characters */
    EXPECT_IDS(tok, "<|im_start|>ab", COPSE_TOKENIZE_PARSE_SPECIAL, 1, 7);
    EXPECT_IDS(tok, "<|im_start|>ab", COPSE_TOKENIZE_PARSE_SPECIAL | COPSE_TOKENIZE_ADD_SPECIAL, 1, 1, 7);
    EXPECT_IDS(tok, "<tag>ab", 0, 12, 7); /* user-defined: always matched */
    EXPECT_IDS(tok, "", COPSE_TOKENIZE_ADD_SPECIAL, 1);
    copse_token none[1];
    CHECK_INT_EQ(enc(tok, "", 0, COPSE_TOKENIZE_PARSE_SPECIAL, none), 0);
    CHECK(copse__tokenizer_is_eog(tok, 2));  /* eos */
    CHECK(copse__tokenizer_is_eog(tok, 0));  /* <|endoftext|> */
    CHECK(!copse__tokenizer_is_eog(tok, 1));
    CHECK_INT_EQ(copse__tokenizer_eot(tok), 2); /* <|im_end|> found by text */
    CHECK_INT_EQ(copse__tokenizer_find(tok, "Ġab", strlen("Ġab")), 8);
    CHECK_INT_EQ(copse__tokenizer_find(tok, "zz", 2), -1);
    CHECK_INT_EQ(copse__tokenizer_kind(tok, 12), COPSE_TOKEN_USER_DEFINED);

    /* ENOSPACE: the count is still right and the prefix is written */
    copse_token ids[4] = {-1, -1, -1, -1};
    size_t n = 0;
    CHECK_STATUS(copse__tokenizer_encode(tok, "ab ab ab", 8, 0, ids, 2, &n), COPSE_ENOSPACE);
    CHECK_INT_EQ(n, 3);
    CHECK_INT_EQ(ids[0], 7);
    CHECK_INT_EQ(ids[1], 8);
    CHECK_INT_EQ(ids[2], -1);
    CHECK_STATUS(copse__tokenizer_encode(tok, "ab", 2, 0, NULL, 0, &n), COPSE_ENOSPACE);
    CHECK_INT_EQ(n, 1);

    /* decode: byte-level mapping undone, control tokens only when rendered */
    copse_token d[] = {1, 7, 8, 13, 14};
    char out[64];
    CHECK_STATUS(copse__tokenizer_decode(tok, d, 5, false, out, sizeof out, &n), COPSE_OK);
    CHECK_INT_EQ(n, 7);
    CHECK(n == 7 && memcmp(out, "ab ab\xc3\xa9", 7) == 0);
    CHECK_STATUS(copse__tokenizer_decode(tok, d, 5, true, out, sizeof out, &n), COPSE_OK);
    CHECK_INT_EQ(n, 19);
    CHECK_STATUS(copse__tokenizer_decode(tok, d, 5, true, out, 3, &n), COPSE_ENOSPACE);
    CHECK_INT_EQ(n, 19);
    copse_token bad = (copse_token)N_BPE;
    CHECK_STATUS(copse__tokenizer_decode(tok, &bad, 1, true, out, sizeof out, &n), COPSE_ERANGE);
    CHECK_INT_EQ(copse__tokenizer_token_bytes(tok, 8, false, out, sizeof out), 3);

    copse__tokenizer_destroy(tok);
    copse__gguf_close(g);
    free(file.p);
}

/* ---------------------------------------------------------------- synthetic SentencePiece */

static void test_synthetic_spm(void)
{
    /* "▁" pieces; scores decide the merge order: "bc" (-1) beats "ab" (-2) */
    static const char *const toks[] = {"<unk>", "<s>", "</s>", "▁", "a", "b", "c", "ab", "bc",
                                       "▁a", "<0x7A>", "<0xC3>", "<0xA9>"};
    static const int32_t types[] = {2, 3, 3, 1, 1, 1, 1, 1, 1, 1, 6, 6, 6};
    static const float scores[] = {0, 0, 0, -5, -6, -7, -8, -2, -1, -3, 0, 0, 0};
    gbuf body = {0}, file;
    copse_gguf *g;
    copse_tokenizer *tok;
    char err[256];
    kv_str(&body, "tokenizer.ggml.model", "llama");
    kv_strs(&body, "tokenizer.ggml.tokens", toks, 13);
    kv_i32s(&body, "tokenizer.ggml.token_type", types, 13);
    kv_f32s(&body, "tokenizer.ggml.scores", scores, 13);
    kv_u32(&body, "tokenizer.ggml.bos_token_id", 1);
    kv_u32(&body, "tokenizer.ggml.eos_token_id", 2);
    kv_u32(&body, "tokenizer.ggml.unknown_token_id", 0);
    kv_bool(&body, "tokenizer.ggml.add_eos_token", true);
    if (open_tok(&body, &g, &tok, err, sizeof err, &file) != COPSE_OK) {
        CHECK(!"synthetic SPM tokenizer");
        fprintf(stderr, "  %s\n", err);
        free(file.p);
        return;
    }
    CHECK_INT_EQ(copse__tokenizer_type(tok), COPSE_VOCAB_SPM);
    CHECK(copse__tokenizer_add_bos(tok)); /* SentencePiece default */
    CHECK(copse__tokenizer_add_eos(tok));
    /* add_space_prefix defaults to true: "abc" -> "▁abc"; bc merges first */
    EXPECT_IDS(tok, "abc", 0, 9, 8);
    EXPECT_IDS(tok, "abc", COPSE_TOKENIZE_ADD_SPECIAL, 1, 9, 8, 2);
    EXPECT_IDS(tok, "z", 0, 3, 10);      /* byte fallback */
    EXPECT_IDS(tok, "\xc3\xa9", 0, 3, 11, 12);
    EXPECT_IDS(tok, "q", 0, 3, 0);       /* no byte token: unknown */
    EXPECT_IDS(tok, "<s>a", 0, 3, 0, 0, 0, 4); /* control text stays plain without parsing */
    EXPECT_IDS(tok, "<s>a", COPSE_TOKENIZE_PARSE_SPECIAL, 1, 4); /* prefix only at text start */
    /* decode: the prefix space is stripped once */
    copse_token d[] = {1, 9, 8, 3, 7};
    char out[32];
    size_t n;
    CHECK_STATUS(copse__tokenizer_decode(tok, d, 5, false, out, sizeof out, &n), COPSE_OK);
    CHECK(n == 6 && memcmp(out, "abc ab", 6) == 0);
    CHECK_INT_EQ(n, 6);
    copse_detok_stream s;
    copse__detok_stream_init(tok, &s);
    CHECK_INT_EQ(copse__detok_stream_push(tok, &s, 1, false, out, sizeof out), 0);
    CHECK_INT_EQ(copse__detok_stream_push(tok, &s, 9, false, out, sizeof out), 1); /* "a" */
    CHECK_INT_EQ(copse__detok_stream_push(tok, &s, 3, false, out, sizeof out), 1); /* " " */
    copse__tokenizer_destroy(tok);
    copse__gguf_close(g);
    free(file.p);
}

/* ---------------------------------------------------------------- malformed metadata */

static void expect_error(gbuf *body, copse_status want, const char *needle)
{
    gbuf file;
    copse_gguf *g;
    copse_tokenizer *tok;
    char err[256] = "";
    copse_status st = open_tok(body, &g, &tok, err, sizeof err, &file);
    CHECK_STATUS(st, want);
    test_checks_++;
    if (!strstr(err, needle)) {
        test_failures_++;
        fprintf(stderr, "error '%s' does not name '%s'\n", err, needle);
    }
    if (st == COPSE_OK) {
        copse__tokenizer_destroy(tok);
        copse__gguf_close(g);
    }
    free(file.p);
}

static void test_malformed(void)
{
    gbuf b = {0};
    kv_strs(&b, "tokenizer.ggml.tokens", BPE_TOKENS, N_BPE);
    expect_error(&b, COPSE_EFORMAT, "tokenizer.ggml.model");

    b = (gbuf){0};
    kv_str(&b, "tokenizer.ggml.model", "bert");
    expect_error(&b, COPSE_EUNSUPPORTED, "tokenizer.ggml.model");

    b = (gbuf){0};
    kv_str(&b, "tokenizer.ggml.model", "gpt2");
    expect_error(&b, COPSE_EFORMAT, "tokenizer.ggml.tokens");

    b = (gbuf){0};
    kv_str(&b, "tokenizer.ggml.model", "gpt2");
    kv_strs(&b, "tokenizer.ggml.tokens", BPE_TOKENS, N_BPE);
    kv_i32s(&b, "tokenizer.ggml.token_type", BPE_TYPES, N_BPE - 1);
    expect_error(&b, COPSE_EFORMAT, "tokenizer.ggml.token_type");

    b = (gbuf){0};
    kv_str(&b, "tokenizer.ggml.model", "gpt2");
    kv_strs(&b, "tokenizer.ggml.tokens", BPE_TOKENS, N_BPE);
    int32_t bad_types[N_BPE];
    memcpy(bad_types, BPE_TYPES, sizeof bad_types);
    bad_types[4] = 9;
    kv_i32s(&b, "tokenizer.ggml.token_type", bad_types, N_BPE);
    expect_error(&b, COPSE_EFORMAT, "token_type[4]");

    b = (gbuf){0};
    bpe_body(&b, "gpt2");
    kv_u32(&b, "tokenizer.ggml.padding_token_id", 1000);
    expect_error(&b, COPSE_EFORMAT, "tokenizer.ggml.padding_token_id");

    b = (gbuf){0};
    kv_str(&b, "tokenizer.ggml.model", "gpt2");
    kv_strs(&b, "tokenizer.ggml.tokens", BPE_TOKENS, N_BPE);
    expect_error(&b, COPSE_EFORMAT, "tokenizer.ggml.merges");

    static const char *const bad_merge[] = {"a b", "ab"};
    b = (gbuf){0};
    kv_str(&b, "tokenizer.ggml.model", "gpt2");
    kv_strs(&b, "tokenizer.ggml.tokens", BPE_TOKENS, N_BPE);
    kv_strs(&b, "tokenizer.ggml.merges", bad_merge, 2);
    expect_error(&b, COPSE_EFORMAT, "tokenizer.ggml.merges[1]");

    static const char *const unknown_merge[] = {"a b", "b c"}; /* "bc" is not a token */
    b = (gbuf){0};
    kv_str(&b, "tokenizer.ggml.model", "gpt2");
    kv_strs(&b, "tokenizer.ggml.tokens", BPE_TOKENS, N_BPE);
    kv_strs(&b, "tokenizer.ggml.merges", unknown_merge, 2);
    expect_error(&b, COPSE_EFORMAT, "tokenizer.ggml.merges[1]");

    b = (gbuf){0};
    kv_str(&b, "tokenizer.ggml.model", "llama");
    kv_strs(&b, "tokenizer.ggml.tokens", BPE_TOKENS, N_BPE);
    expect_error(&b, COPSE_EFORMAT, "tokenizer.ggml.scores");

    b = (gbuf){0};
    bpe_body(&b, "gpt2");
    kv_u32(&b, "tokenizer.ggml.add_bos_token", 1);
    expect_error(&b, COPSE_EFORMAT, "tokenizer.ggml.add_bos_token");
}

/* ---------------------------------------------------------------- real models */

static copse_model *open_model(const char *name)
{
    const char *dir = test_model_dir();
    if (!dir)
        return NULL;
    char path[4096];
    snprintf(path, sizeof path, "%.3000s/%.200s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "skip: %s not found\n", path);
        return NULL;
    }
    fclose(f);
    copse_model_params p = copse_model_default_params();
    copse_model *m = NULL;
    char err[512];
    copse_status st = copse_model_create(path, &p, &m, err, sizeof err);
    CHECK_STATUS(st, COPSE_OK);
    if (st != COPSE_OK)
        fprintf(stderr, "%s: %s\n", path, err);
    return m;
}

/* Stream-decode ids; the concatenation must equal the whole decode and
 * nothing may be emitted in the middle of a character. */
static void check_stream(const copse_tokenizer *tok, const copse_token *ids, size_t n,
                         const int *want_sizes)
{
    copse_detok_stream s;
    copse__detok_stream_init(tok, &s);
    char all[512], piece[64];
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        int k = copse__detok_stream_push(tok, &s, ids[i], true, piece, sizeof piece);
        CHECK(k >= 0);
        if (want_sizes)
            CHECK_INT_EQ(k, want_sizes[i]);
        if (k > 0 && w + (size_t)k <= sizeof all) {
            memcpy(all + w, piece, (size_t)k);
            w += (size_t)k;
        }
    }
    int k = copse__detok_stream_flush(&s, piece, sizeof piece);
    CHECK_INT_EQ(k, 0);
    char whole[512];
    size_t m = 0;
    CHECK_STATUS(copse__tokenizer_decode(tok, ids, n, true, whole, sizeof whole, &m), COPSE_OK);
    CHECK(m == w && memcmp(all, whole, m) == 0);
}

static void common_model_checks(const copse_tokenizer *tok, uint64_t *seed)
{
    static const char *const texts[] = {
        "Hello world", "  leading and trailing  ", "tabs\tand\nnewlines\r\n\n", "12345 3.14159",
        "café naïve Ελληνικά Русский العربية हिन्दी 中文 日本語 한국어",
        "emoji 😀👍🏽👨‍👩‍👧‍👦🏳️‍🌈", "e\xcc\x81 combining", "def f(x):\n    return x ** 2\n",
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        check_roundtrip(tok, texts[i], strlen(texts[i]), 0, false);
        check_roundtrip(tok, texts[i], strlen(texts[i]), COPSE_TOKENIZE_PARSE_SPECIAL, true);
    }

    /* invalid UTF-8 never breaks anything, and means U+FFFD */
    copse_token a[MAX_IDS], b[MAX_IDS];
    size_t na = enc(tok, "x\xff" "y", 3, 0, a);
    size_t nb = enc(tok, "x\xef\xbf\xbdy", 5, 0, b);
    check_ids("invalid byte as U+FFFD", a, na, b, nb);
    na = enc(tok, "\xe2\x82", 2, 0, a); /* truncated: one U+FFFD */
    nb = enc(tok, "\xef\xbf\xbd", 3, 0, b);
    check_ids("truncated sequence as one U+FFFD", a, na, b, nb);
    char junk[4096];
    size_t ids_cap = 3 * sizeof junk + 16;
    copse_token *ids = malloc(ids_cap * sizeof *ids);
    for (int round = 0; round < 200; round++) {
        size_t len = test_rand(seed) % sizeof junk;
        for (size_t i = 0; i < len; i++)
            junk[i] = (char)test_rand(seed);
        size_t n = 0;
        CHECK_STATUS(copse__tokenizer_encode(tok, junk, len, round & 3, ids, ids_cap, &n),
                     COPSE_OK);
        char *out = malloc(4 * len + 64);
        size_t m;
        CHECK_STATUS(copse__tokenizer_decode(tok, ids, n, true, out, 4 * len + 64, &m), COPSE_OK);
        free(out);
    }
    free(ids);

    /* long inputs: 100 KB of one character, in well under a second each */
    static const char *const units[] = {"a", " ", "\n", "7", "😀", "ab", "!", "\xff"};
    double slowest = 0;
    size_t big = 100 * 1024;
    char *text = malloc(big + 4);
    copse_token *out_ids = malloc((3 * big + 8) * sizeof *out_ids);
    for (size_t u = 0; u < sizeof units / sizeof units[0]; u++) {
        size_t ul = strlen(units[u]), len = 0;
        while (len + ul <= big) {
            memcpy(text + len, units[u], ul);
            len += ul;
        }
        double t0 = now_s();
        size_t n = 0;
        CHECK_STATUS(copse__tokenizer_encode(tok, text, len, 0, out_ids, 3 * big + 8, &n), COPSE_OK);
        double dt = now_s() - t0;
        test_checks_++;
        if (dt > TIME_LIMIT_100KB) {
            test_failures_++;
            fprintf(stderr, "100 KB of '%s' took %.3f s (limit %.1f s)\n", units[u], dt,
                    TIME_LIMIT_100KB);
        }
        if (dt > slowest)
            slowest = dt;
        if (units[u][0] != '\xff')
            check_roundtrip(tok, text, len, 0, false);
    }
    free(text);
    free(out_ids);
    fprintf(stderr, "slowest 100 KB single-character input: %.3f s\n", slowest);
}

static void test_smollm2(uint64_t *seed)
{
    copse_model *m = open_model("SmolLM2-135M-Instruct.Q4_1.gguf");
    if (!m)
        return;
    const copse_tokenizer *tok = copse__model_tokenizer(m);
    CHECK_STR_EQ(copse__tokenizer_pre_name(tok), "smollm");
    CHECK_INT_EQ(copse__tokenizer_n_vocab(tok), 49152);
    CHECK_INT_EQ(copse__tokenizer_bos(tok), 1);
    CHECK_INT_EQ(copse__tokenizer_eos(tok), 2);
    CHECK(!copse__tokenizer_add_bos(tok));
    CHECK(copse__tokenizer_is_eog(tok, 2));  /* <|im_end|> */
    CHECK(copse__tokenizer_is_eog(tok, 0));  /* <|endoftext|> */
    CHECK(!copse__tokenizer_is_eog(tok, 1)); /* <|im_start|> */

    /* expected ids from the Hugging Face reference (tests/model/reftok.py) */
    int both = COPSE_TOKENIZE_ADD_SPECIAL | COPSE_TOKENIZE_PARSE_SPECIAL;
    EXPECT_IDS(tok, "Hello world", both, 19556, 905);
    EXPECT_IDS(tok, "12345 abc 2024", both, 33, 34, 35, 36, 37, 43239, 216, 34, 32, 34, 36);
    EXPECT_IDS(tok, "<|im_start|>user\nHi<|im_end|>", both, 1, 4093, 198, 26843, 2);
    EXPECT_IDS(tok, "<|im_start|>user\nHi<|im_end|>", 0, 44, 108, 306, 79, 3738, 108, 46, 4093,
               198, 26843, 44, 108, 306, 79, 486, 108, 46);
    EXPECT_IDS(tok, "h\xc3\xa9llo \xf0\x9f\x98\x80", both, 88, 2756, 31394, 40303, 218);
    EXPECT_IDS(tok, "  indented\n\n\ttab", 0, 216, 641, 6574, 1116, 197, 15999);

    /* "😀" in four byte tokens: nothing comes out until the last one */
    copse_token bytes[4];
    static const char *const alpha[] = {"ð", "Ł", "ĺ", "Ģ"}; /* bytes F0 9F 98 80 */
    for (int i = 0; i < 4; i++)
        bytes[i] = copse__tokenizer_find(tok, alpha[i], strlen(alpha[i]));
    CHECK(bytes[0] >= 0 && bytes[1] >= 0 && bytes[2] >= 0 && bytes[3] >= 0);
    static const int sizes[] = {0, 0, 0, 4};
    if (bytes[0] >= 0 && bytes[1] >= 0 && bytes[2] >= 0 && bytes[3] >= 0)
        check_stream(tok, bytes, 4, sizes);
    copse_token real[MAX_IDS];
    size_t n = enc(tok, "a😀b 👨‍👩‍👧 done", strlen("a😀b 👨‍👩‍👧 done"), 0, real);
    check_stream(tok, real, n, NULL);

    /* a stray continuation byte becomes U+FFFD; a partial tail is flushed as one */
    copse_detok_stream s;
    char out[64];
    copse__detok_stream_init(tok, &s);
    CHECK_INT_EQ(copse__detok_stream_push(tok, &s, bytes[1], true, out, sizeof out), 3);
    CHECK(memcmp(out, "\xef\xbf\xbd", 3) == 0);
    CHECK_INT_EQ(copse__detok_stream_push(tok, &s, bytes[0], true, out, sizeof out), 0);
    CHECK_INT_EQ(copse__detok_stream_push(tok, &s, bytes[1], true, out, sizeof out), 0);
    CHECK_INT_EQ(copse__detok_stream_push(tok, &s, 88, true, out, sizeof out), 4); /* FFFD + "h" */
    CHECK(memcmp(out, "\xef\xbf\xbdh", 4) == 0);
    CHECK_INT_EQ(copse__detok_stream_push(tok, &s, bytes[0], true, out, sizeof out), 0);
    CHECK_INT_EQ(copse__detok_stream_push(tok, &s, bytes[1], true, out, 1), COPSE_ENOSPACE);
    CHECK_INT_EQ(copse__detok_stream_flush(&s, out, sizeof out), 3);
    CHECK_INT_EQ(copse__detok_stream_flush(&s, out, sizeof out), 0);

    common_model_checks(tok, seed);
    copse_model_destroy(m);
}

static void test_gemma3(uint64_t *seed)
{
    copse_model *m = open_model("gemma-3-270m-q4_k_m.gguf");
    if (!m)
        return;
    const copse_tokenizer *tok = copse__model_tokenizer(m);
    CHECK_INT_EQ(copse__tokenizer_type(tok), COPSE_VOCAB_SPM);
    CHECK_INT_EQ(copse__tokenizer_n_vocab(tok), 262144);
    CHECK_INT_EQ(copse__tokenizer_bos(tok), 2);
    CHECK(copse__tokenizer_add_bos(tok));
    copse_token eot = copse__tokenizer_find(tok, "<end_of_turn>", 13);
    CHECK_INT_EQ(eot, 106);
    CHECK_INT_EQ(copse__tokenizer_eot(tok), 106);
    CHECK(copse__tokenizer_is_eog(tok, 106));
    CHECK(copse__tokenizer_is_eog(tok, 1));

    int both = COPSE_TOKENIZE_ADD_SPECIAL | COPSE_TOKENIZE_PARSE_SPECIAL;
    EXPECT_IDS(tok, "Hello world", both, 2, 9259, 1902);
    EXPECT_IDS(tok, "Hello world", 0, 9259, 1902);
    EXPECT_IDS(tok, "12345 abc 2024", both, 2, 236770, 236778, 236800, 236812, 236810, 13334,
               236743, 236778, 236771, 236778, 236812);
    EXPECT_IDS(tok, "<start_of_turn>user\nHi<end_of_turn>", both, 2, 105, 2364, 107, 10979, 106);
    EXPECT_IDS(tok, "<start_of_turn>user\nHi<end_of_turn>", 0, 236820, 3041, 236779, 1340, 236779,
               887, 236813, 2364, 107, 10979, 236820, 643, 236779, 1340, 236779, 887, 236813);
    EXPECT_IDS(tok, "h\xc3\xa9llo \xf0\x9f\x98\x80", both, 2, 236754, 7869, 844, 163543);
    EXPECT_IDS(tok, "  indented\n\n\ttab", both, 2, 138, 724, 16764, 108, 255968, 4823);

    /* byte-fallback tokens of "😀": held until complete */
    copse_token bytes[4];
    static const char *const names[] = {"<0xF0>", "<0x9F>", "<0x98>", "<0x80>"};
    for (int i = 0; i < 4; i++)
        bytes[i] = copse__tokenizer_find(tok, names[i], 6);
    static const int sizes[] = {0, 0, 0, 4};
    CHECK(bytes[0] >= 0 && bytes[3] >= 0);
    if (bytes[0] >= 0 && bytes[1] >= 0 && bytes[2] >= 0 && bytes[3] >= 0)
        check_stream(tok, bytes, 4, sizes);

    common_model_checks(tok, seed);
    copse_model_destroy(m);
}

int main(void)
{
    uint64_t seed = test_seed();
    test_synthetic_bpe();
    test_synthetic_spm();
    test_malformed();
    test_smollm2(&seed);
    test_gemma3(&seed);
    return test_exit();
}
