/*
 * fuzz-tokenizer.c — libFuzzer target for the tokenizers (core/tokenizer*.c).
 *
 * The model is loaded once, in LLVMFuzzerInitialize, from $COPSE_FUZZ_MODEL
 * (default: SmolLM2-135M-Instruct.Q4_1.gguf in $COPSE_MODEL_DIR or
 * ~/.cache/copse). Each input is used twice:
 *
 *   as text:  encoded with every flag combination; every id must be in range
 *             and the count bounded by the input size; where the vocabulary
 *             can spell every byte, decode(encode(x)) must equal x with
 *             invalid UTF-8 replaced by U+FFFD (the documented policy);
 *             the streaming decoder must agree with the whole decode.
 *   as ids:   little-endian u32s taken modulo the vocabulary size, decoded
 *             whole and streamed; the stream must equal the decode with
 *             invalid UTF-8 replaced.
 *   as GGUF:  an input that starts with "GGUF" is also opened as a file and,
 *             when it parses, a tokenizer is built from its metadata (which
 *             must either work or fail with COPSE_EFORMAT/EUNSUPPORTED and a
 *             message) and used on a few strings. Seeds: run test-tokenizer
 *             with COPSE_TOKENIZER_SEED_DIR=DIR to get its synthetic files.
 *
 * Build: CC=clang meson setup build-fuzz -Dfuzz=enabled -Db_sanitize=address,undefined
 *        -Db_lundef=false && ninja -C build-fuzz tests/fuzz-tokenizer
 * Run:   ./build-fuzz/tests/fuzz-tokenizer -max_len=4096 -max_total_time=60
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "model.h"
#include "tokenizer.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(cond)                                                                   \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            fprintf(stderr, "fuzz-tokenizer: %s:%d: %s\n", __FILE__, __LINE__, #cond);  \
            abort();                                                                    \
        }                                                                               \
    } while (0)

/* The harness's one piece of state: the model, loaded once. */
static copse_model *g_model;
static const copse_tokenizer *g_tok;
static bool g_spellable[256]; /* byte b has a token (byte-level char or <0xXX>) */

/* ---------------------------------------------------------------- an independent UTF-8 replacer */

/* Writes s with each maximal invalid subpart replaced by U+FFFD (out needs
 * 3n bytes); returns the length. Written apart from the library on purpose. */
static size_t replace_invalid(const uint8_t *s, size_t n, uint8_t *out)
{
    size_t w = 0;
    for (size_t i = 0; i < n;) {
        uint8_t c = s[i];
        size_t need = c < 0x80 ? 1
                    : (c >= 0xC2 && c <= 0xDF) ? 2
                    : (c >= 0xE0 && c <= 0xEF) ? 3
                    : (c >= 0xF0 && c <= 0xF4) ? 4
                    : 0;
        size_t k = 1; /* bytes of the sequence that are fine so far */
        while (need && k < need) {
            uint8_t lo = 0x80, hi = 0xBF;
            if (k == 1) {
                lo = c == 0xE0 ? 0xA0 : c == 0xF0 ? 0x90 : 0x80;
                hi = c == 0xED ? 0x9F : c == 0xF4 ? 0x8F : 0xBF;
            }
            if (i + k >= n || s[i + k] < lo || s[i + k] > hi)
                break;
            k++;
        }
        if (need && k == need) {
            memcpy(out + w, s + i, need);
            w += need;
        } else {
            memcpy(out + w, "\xef\xbf\xbd", 3);
            w += 3;
        }
        i += k;
    }
    return w;
}

/* ---------------------------------------------------------------- set-up */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char path[4096];
    const char *env = getenv("COPSE_FUZZ_MODEL");
    if (env && *env) {
        snprintf(path, sizeof path, "%s", env);
    } else {
        const char *dir = getenv("COPSE_MODEL_DIR");
        if (dir && *dir)
            snprintf(path, sizeof path, "%.3000s/SmolLM2-135M-Instruct.Q4_1.gguf", dir);
        else
            snprintf(path, sizeof path, "%.3000s/.cache/copse/SmolLM2-135M-Instruct.Q4_1.gguf",
                     getenv("HOME") ? getenv("HOME") : ".");
    }
    copse_model_params p = copse_model_default_params();
    char err[512];
    if (copse_model_create(path, &p, &g_model, err, sizeof err) != COPSE_OK) {
        fprintf(stderr, "fuzz-tokenizer: cannot load %s: %s\n", path, err);
        exit(1);
    }
    g_tok = copse__model_tokenizer(g_model);
    /* which bytes can be spelled? (byte-level alphabet or <0xXX> tokens) */
    int n_spellable = 0;
    for (int b = 0; b < 256; b++) {
        char name[8];
        size_t len;
        if (copse__tokenizer_type(g_tok) == COPSE_VOCAB_BPE) {
            unsigned cp = b <= 32 ? 256u + b : (b >= 127 && b <= 160) ? 289u + (b - 127) : b == 173 ? 323u : (unsigned)b;
            if (cp < 0x80) {
                name[0] = (char)cp;
                len = 1;
            } else {
                name[0] = (char)(0xC0 | (cp >> 6));
                name[1] = (char)(0x80 | (cp & 0x3F));
                len = 2;
            }
        } else {
            len = (size_t)snprintf(name, sizeof name, "<0x%02X>", b);
        }
        g_spellable[b] = copse__tokenizer_find(g_tok, name, len) >= 0;
        n_spellable += g_spellable[b];
    }
    fprintf(stderr, "fuzz-tokenizer: %s, %d tokens, %d of 256 bytes spellable\n", path,
            (int)copse__tokenizer_n_vocab(g_tok), n_spellable);
    return 0;
}

/* ---------------------------------------------------------------- checks */

/* Decode ids (render as given) into a fresh buffer; returns its length. */
static uint8_t *decode_all(const copse_token *ids, size_t n, bool render, size_t *len)
{
    size_t need = 0;
    copse_status st = copse__tokenizer_decode(g_tok, ids, n, render, NULL, 0, &need);
    REQUIRE(st == COPSE_OK || st == COPSE_ENOSPACE);
    uint8_t *out = malloc(need + 1);
    REQUIRE(out);
    size_t got = 0;
    REQUIRE(copse__tokenizer_decode(g_tok, ids, n, render, (char *)out, need, &got) == COPSE_OK);
    REQUIRE(got == need);
    /* a buffer one byte short must say ENOSPACE and still count right */
    if (need > 0) {
        REQUIRE(copse__tokenizer_decode(g_tok, ids, n, render, (char *)out, need - 1, &got) ==
                COPSE_ENOSPACE);
        REQUIRE(got == need);
        REQUIRE(copse__tokenizer_decode(g_tok, ids, n, render, (char *)out, need, &got) == COPSE_OK);
    }
    *len = need;
    return out;
}

/* The streamed decode must equal the whole decode with invalid UTF-8 replaced. */
static void check_stream(const copse_token *ids, size_t n, bool render, const uint8_t *whole,
                         size_t whole_len)
{
    uint8_t *want = malloc(3 * whole_len + 1);
    uint8_t *got = malloc(3 * whole_len + 16);
    REQUIRE(want && got);
    size_t want_len = replace_invalid(whole, whole_len, want), w = 0;
    copse_detok_stream s;
    copse__detok_stream_init(g_tok, &s);
    char piece[4096];
    for (size_t i = 0; i < n; i++) {
        int k = copse__detok_stream_push(g_tok, &s, ids[i], render, piece, sizeof piece);
        REQUIRE(k >= 0);
        REQUIRE(w + (size_t)k <= want_len);
        memcpy(got + w, piece, (size_t)k);
        w += (size_t)k;
    }
    int k = copse__detok_stream_flush(&s, piece, sizeof piece);
    REQUIRE(k >= 0 && w + (size_t)k <= want_len);
    memcpy(got + w, piece, (size_t)k);
    w += (size_t)k;
    REQUIRE(w == want_len && memcmp(got, want, w) == 0);
    free(want);
    free(got);
}

static void fuzz_text(const uint8_t *data, size_t size)
{
    int32_t n_vocab = copse__tokenizer_n_vocab(g_tok);
    uint8_t *clean = malloc(3 * size + 1);
    REQUIRE(clean);
    size_t clean_len = replace_invalid(data, size, clean);
    /* the round trip is exact when every byte can be spelled and no BOS/EOS is added */
    bool exact = true;
    for (size_t i = 0; i < clean_len; i++)
        exact = exact && g_spellable[clean[i]];
    bool adds = copse__tokenizer_add_bos(g_tok) || copse__tokenizer_add_eos(g_tok);
    if (copse__tokenizer_type(g_tok) == COPSE_VOCAB_SPM) {
        /* SentencePiece cannot tell a typed U+2581 from a space: both decode to ' ' */
        size_t w = 0;
        for (size_t i = 0; i < clean_len;) {
            if (i + 3 <= clean_len && !memcmp(clean + i, "\xe2\x96\x81", 3)) {
                clean[w++] = ' ';
                i += 3;
            } else {
                clean[w++] = clean[i++];
            }
        }
        clean_len = w;
    }
    for (int flags = 0; flags < 4; flags++) {
        size_t n = 0;
        copse_status st = copse__tokenizer_encode(g_tok, (const char *)data, size, flags, NULL, 0, &n);
        REQUIRE(st == COPSE_OK || st == COPSE_ENOSPACE);
        REQUIRE(n <= 3 * size + 4);
        copse_token *ids = malloc((n + 1) * sizeof *ids);
        REQUIRE(ids);
        size_t n2 = 0;
        REQUIRE(copse__tokenizer_encode(g_tok, (const char *)data, size, flags, ids, n, &n2) == COPSE_OK);
        REQUIRE(n2 == n);
        for (size_t i = 0; i < n; i++)
            REQUIRE(ids[i] >= 0 && ids[i] < n_vocab);

        size_t len;
        uint8_t *dec = decode_all(ids, n, true, &len);
        if (exact && !(adds && (flags & COPSE_TOKENIZE_ADD_SPECIAL)))
            REQUIRE(len == clean_len && memcmp(dec, clean, len) == 0);
        check_stream(ids, n, true, dec, len);
        free(dec);
        dec = decode_all(ids, n, false, &len);
        if (exact && !(flags & COPSE_TOKENIZE_PARSE_SPECIAL)) /* no control token made */
            REQUIRE(len == clean_len && memcmp(dec, clean, len) == 0);
        check_stream(ids, n, false, dec, len);
        free(dec);
        free(ids);
    }
    free(clean);
}

static void fuzz_ids(const uint8_t *data, size_t size)
{
    size_t n = size / 4;
    copse_token *ids = malloc((n + 1) * sizeof *ids);
    REQUIRE(ids);
    uint32_t n_vocab = (uint32_t)copse__tokenizer_n_vocab(g_tok);
    for (size_t i = 0; i < n; i++) {
        uint32_t v;
        memcpy(&v, data + 4 * i, 4);
        ids[i] = (copse_token)(v % n_vocab);
    }
    for (int render = 0; render < 2; render++) {
        size_t len;
        uint8_t *dec = decode_all(ids, n, render, &len);
        check_stream(ids, n, render, dec, len);
        free(dec);
    }
    free(ids);
}

/* Build a tokenizer from a fuzzed GGUF file and give it some work. */
static void fuzz_gguf(const uint8_t *data, size_t size)
{
    copse_gguf *g;
    char err[256] = "";
    if (copse__gguf_open_memory(data, size, &g, err, sizeof err) != COPSE_OK)
        return;
    copse_tokenizer *tok = NULL;
    err[0] = '\0';
    copse_status st = copse__tokenizer_create(g, &tok, err, sizeof err);
    if (st != COPSE_OK) {
        REQUIRE(st == COPSE_EFORMAT || st == COPSE_EUNSUPPORTED || st == COPSE_ENOMEM);
        REQUIRE(err[0] != '\0');
        REQUIRE(tok == NULL);
    } else {
        static const char *const texts[] = {"", "ab ab", "Hello world 123", "<|im_start|>x<s>",
                                            "\xff\xfe abc \xe2\x82", "  \n\n\t x"};
        int32_t n_vocab = copse__tokenizer_n_vocab(tok);
        for (size_t t = 0; t < sizeof texts / sizeof texts[0]; t++) {
            copse_token ids[256];
            size_t n = 0;
            st = copse__tokenizer_encode(tok, texts[t], strlen(texts[t]), 3, ids, 256, &n);
            REQUIRE(st == COPSE_OK || st == COPSE_ENOSPACE);
            for (size_t i = 0; i < n && i < 256; i++)
                REQUIRE(ids[i] >= 0 && ids[i] < n_vocab);
            char out[4096];
            size_t m;
            st = copse__tokenizer_decode(tok, ids, n < 256 ? n : 256, true, out, sizeof out, &m);
            REQUIRE(st == COPSE_OK || st == COPSE_ENOSPACE);
            copse_detok_stream s;
            copse__detok_stream_init(tok, &s);
            for (size_t i = 0; i < n && i < 256; i++)
                (void)copse__detok_stream_push(tok, &s, ids[i], true, out, sizeof out);
        }
        for (int32_t id = 0; id < n_vocab && id < 4096; id++) {
            char out[64];
            (void)copse__tokenizer_token_bytes(tok, id, true, out, sizeof out);
            (void)copse__tokenizer_is_eog(tok, id);
        }
        copse__tokenizer_destroy(tok);
    }
    copse__gguf_close(g);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size >= 4 && memcmp(data, "GGUF", 4) == 0)
        fuzz_gguf(data, size);
    fuzz_text(data, size);
    fuzz_ids(data, size);
    return 0;
}
