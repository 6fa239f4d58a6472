/*
 * tokenizer-bpe.c — byte-level BPE ("gpt2" GGUF tokenizers).
 *
 * A fragment of text is cut into pieces by the pre-tokenizer regexes chosen
 * from tokenizer.ggml.pre (each regex splits the pieces the previous one made;
 * text between matches is a piece too). Each piece's bytes become symbols —
 * the tokens of the 256 characters of the GPT-2 byte alphabet — and adjacent
 * symbols merge by tokenizer.ggml.merges rank, lowest rank first and leftmost
 * first among equals, through a priority queue with lazy invalidation, so a
 * piece of n bytes costs O(n log n).
 */
#include "tokenizer-impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

/* ---------------------------------------------------------------- the byte alphabet */

/* GPT-2 maps printable bytes to themselves and the other 68 bytes (0-32,
 * 127-160, 173) to U+0100.. in order. */
static uint32_t byte_to_cp(uint8_t b)
{
    if (b <= 32)
        return 256u + b;
    if (b >= 127 && b <= 160)
        return 289u + (b - 127u);
    if (b == 173)
        return 323u;
    return b;
}

static int cp_to_byte(uint32_t cp)
{
    if (cp < 256)
        return byte_to_cp((uint8_t)cp) == cp ? (int)cp : -1;
    if (cp <= 288)
        return (int)(cp - 256);
    if (cp <= 322)
        return (int)(cp - 289 + 127);
    if (cp == 323)
        return 173;
    return -1;
}

int copse__bpe_char_byte(const char *s, size_t n, size_t *clen)
{
    const uint8_t *u = (const uint8_t *)s;
    *clen = 1;
    if (u[0] < 0x80)
        return cp_to_byte(u[0]);
    /* the alphabet only has code points below U+0144: two-byte sequences */
    if (u[0] >= 0xC2 && u[0] <= 0xDF && n >= 2 && (u[1] & 0xC0) == 0x80) {
        *clen = 2;
        return cp_to_byte(((uint32_t)(u[0] & 0x1F) << 6) | (u[1] & 0x3F));
    }
    size_t k = tok_utf8_len(u[0]);
    *clen = k <= n ? k : 1;
    return -1;
}

static size_t utf8_encode(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    out[0] = (char)(0xC0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3F));
    return 2; /* the alphabet never needs more */
}

/* ---------------------------------------------------------------- pre-tokenizers */

/* White_Space as the reference regex engine (Oniguruma) reads \s; PCRE2's own
 * \s also takes U+180E, so the classes are spelled out. */
#define WS "\\t\\n\\x{0B}\\f\\r\\x{85}\\p{Z}"
#define NOT_FOLLOWED_BY_NON_WS "(?![^" WS "])"

#define RE_GPT2                                                                        \
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" WS "\\p{L}\\p{N}]+|[" WS "]+" \
    NOT_FOLLOWED_BY_NON_WS "|[" WS "]+"

#define RE_LLAMA3_LIKE(NUM)                                                             \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|" NUM " ?[^" WS         \
    "\\p{L}\\p{N}]+[\\r\\n]*|[" WS "]*[\\r\\n]+|[" WS "]+" NOT_FOLLOWED_BY_NON_WS "|[" WS \
    "]+"

static const char *const RES_GPT2[] = {RE_GPT2};
static const char *const RES_DIGITS_GPT2[] = {"\\p{N}", RE_GPT2};
static const char *const RES_LLAMA3[] = {RE_LLAMA3_LIKE("\\p{N}{1,3}|")};
static const char *const RES_QWEN2[] = {RE_LLAMA3_LIKE("\\p{N}|")};
static const char *const RES_DEEPSEEK_CODER[] = {
    "[\\r\\n]",
    "[" WS "]?\\p{L}+",
    "[" WS "]?\\p{P}+",
    "[\\x{4E00}-\\x{9FA5}\\x{0800}-\\x{4E00}\\x{AC00}-\\x{D7FF}]+",
    "\\p{N}",
};
static const char *const RES_DEEPSEEK_V3[] = {
    "\\p{N}{1,3}",
    "[\\x{4E00}-\\x{9FA5}\\x{3040}-\\x{309F}\\x{30A0}-\\x{30FF}]+",
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\\r\\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+|"
    " ?[\\p{P}\\p{S}]+[\\r\\n]*|[" WS "]*[\\r\\n]+|[" WS "]+" NOT_FOLLOWED_BY_NON_WS "|[" WS "]+",
};

#define RES(a) a, (int)(sizeof a / sizeof a[0])

/* tokenizer.ggml.pre values (the names llama.cpp's converter writes). */
static const struct pre_def {
    const char *name;
    const char *const *re;
    int n_re;
    bool ignore_merges;
} PRE_DEFS[] = {
    {"default", RES(RES_GPT2), false},
    {"gpt2", RES(RES_GPT2), false},
    {"mpt", RES(RES_GPT2), false},
    {"olmo", RES(RES_GPT2), false},
    {"jais", RES(RES_GPT2), false},
    {"smollm", RES(RES_DIGITS_GPT2), false},
    {"starcoder", RES(RES_DIGITS_GPT2), false},
    {"refact", RES(RES_DIGITS_GPT2), false},
    {"command-r", RES(RES_DIGITS_GPT2), false},
    {"codeshell", RES(RES_DIGITS_GPT2), false},
    {"exaone", RES(RES_DIGITS_GPT2), false},
    {"minerva-7b", RES(RES_DIGITS_GPT2), false},
    {"llama3", RES(RES_LLAMA3), true},
    {"llama-v3", RES(RES_LLAMA3), true},
    {"llama-bpe", RES(RES_LLAMA3), true},
    {"falcon3", RES(RES_LLAMA3), true},
    {"pixtral", RES(RES_LLAMA3), true},
    {"qwen2", RES(RES_QWEN2), false},
    {"stablelm2", RES(RES_QWEN2), false},
    {"deepseek-r1-qwen", RES(RES_QWEN2), false},
    {"megrez", RES(RES_QWEN2), false},
    {"deepseek-coder", RES(RES_DEEPSEEK_CODER), false},
    {"deepseek-v3", RES(RES_DEEPSEEK_V3), false},
};

/* ---------------------------------------------------------------- merges table */

static size_t pair_slot(const copse_tokenizer *tok, int32_t a, int32_t b)
{
    uint64_t h = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 17) & tok->merge_mask;
}

static const tok_merge *merge_find(const copse_tokenizer *tok, int32_t a, int32_t b)
{
    size_t i = pair_slot(tok, a, b);
    for (;;) {
        const tok_merge *m = &tok->merges[i];
        if (m->left < 0)
            return NULL;
        if (m->left == a && m->right == b)
            return m;
        i = (i + 1) & tok->merge_mask;
    }
}

static copse_status load_merges(copse_tokenizer *tok, const copse_gguf *g, char *err,
                                size_t err_size)
{
    const copse_gguf_array *arr;
    copse_status st = copse__gguf_get_arr(g, "tokenizer.ggml.merges", COPSE_GGUF_STRING, &arr);
    if (st != COPSE_OK)
        return copse__errorf(err, err_size, COPSE_EFORMAT, "tokenizer.ggml.merges: %s",
                             st == COPSE_ENOTFOUND ? "missing (byte-level BPE needs merges)"
                                                   : "not an array of strings");
    if (arr->n > INT32_MAX / 4 || (arr->n && !arr->strs))
        return copse__errorf(err, err_size, COPSE_EFORMAT, "tokenizer.ggml.merges: %llu entries",
                             (unsigned long long)arr->n);
    size_t sz = 16;
    while (sz < 2 * (size_t)arr->n)
        sz <<= 1;
    if (!(tok->merges = malloc(sz * sizeof *tok->merges)))
        return copse__errorf(err, err_size, COPSE_ENOMEM, "out of memory");
    for (size_t i = 0; i < sz; i++)
        tok->merges[i] = (tok_merge){.left = -1, .right = -1};
    tok->merge_mask = sz - 1;

    void *joined = NULL;
    size_t joined_cap = 0;
    for (uint64_t r = 0; r < arr->n; r++) {
        copse_str m = arr->strs[r];
        const char *sp = m.len > 1 ? memchr(m.ptr + 1, ' ', (size_t)m.len - 1) : NULL;
        int shown = (int)(m.len > 60 ? 60 : m.len);
        if (!sp || sp == m.ptr + m.len - 1) {
            st = copse__errorf(err, err_size, COPSE_EFORMAT,
                               "tokenizer.ggml.merges[%llu]: '%.*s' is not two pieces separated by a space",
                               (unsigned long long)r, shown, m.ptr);
            goto done;
        }
        size_t la = (size_t)(sp - m.ptr), lb = (size_t)m.len - la - 1;
        if ((st = copse__tok_reserve(&joined, &joined_cap, la + lb)) != COPSE_OK) {
            st = copse__errorf(err, err_size, st, "out of memory");
            goto done;
        }
        memcpy(joined, m.ptr, la);
        memcpy((char *)joined + la, sp + 1, lb);
        copse_token a = copse__tok_lookup(tok, m.ptr, la);
        copse_token b = copse__tok_lookup(tok, sp + 1, lb);
        copse_token c = copse__tok_lookup(tok, joined, la + lb);
        if (a < 0 || b < 0 || c < 0) {
            st = copse__errorf(err, err_size, COPSE_EFORMAT,
                               "tokenizer.ggml.merges[%llu]: '%.*s' uses or makes a piece that is not in "
                               "tokenizer.ggml.tokens",
                               (unsigned long long)r, shown, m.ptr);
            goto done;
        }
        size_t i = pair_slot(tok, a, b);
        while (tok->merges[i].left >= 0 && !(tok->merges[i].left == a && tok->merges[i].right == b))
            i = (i + 1) & tok->merge_mask;
        if (tok->merges[i].left < 0) /* a repeated pair keeps its first rank */
            tok->merges[i] = (tok_merge){.left = a, .right = b, .rank = (int32_t)r, .result = c};
    }
    st = COPSE_OK;
done:
    free(joined);
    return st;
}

/* ---------------------------------------------------------------- set-up */

copse_status copse__bpe_init(copse_tokenizer *tok, const copse_gguf *g, char *err, size_t err_size)
{
    /* pre-tokenizer: unknown or absent names fall back to the GPT-2 regex */
    const struct pre_def *def = &PRE_DEFS[0];
    copse_str pre;
    copse_status st = copse__gguf_get_str(g, "tokenizer.ggml.pre", &pre);
    if (st == COPSE_OK) {
        for (size_t i = 0; i < sizeof PRE_DEFS / sizeof PRE_DEFS[0]; i++)
            if (copse__str_eq(pre, PRE_DEFS[i].name)) {
                def = &PRE_DEFS[i];
                break;
            }
    } else if (st != COPSE_ENOTFOUND) {
        return copse__errorf(err, err_size, COPSE_EFORMAT, "tokenizer.ggml.pre: not a string");
    }
    tok->pre_name = def->name;
    tok->ignore_merges = def->ignore_merges;
    for (int i = 0; i < def->n_re; i++) {
        int code;
        PCRE2_SIZE at;
        tok->re[i] = pcre2_compile((PCRE2_SPTR)def->re[i], PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_UCP, &code, &at, NULL);
        if (!tok->re[i]) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(code, msg, sizeof msg);
            return copse__errorf(err, err_size, COPSE_EUNSUPPORTED,
                                 "tokenizer.ggml.pre '%s': regex %d does not compile at %zu: %s",
                                 def->name, i, (size_t)at, (const char *)msg);
        }
        tok->n_re = i + 1;
        (void)pcre2_jit_compile(tok->re[i], PCRE2_JIT_COMPLETE); /* interpreter if unavailable */
    }

    if ((st = load_merges(tok, g, err, err_size)) != COPSE_OK)
        return st;

    for (int b = 0; b < 256; b++) {
        char enc[2];
        size_t n = utf8_encode(byte_to_cp((uint8_t)b), enc);
        tok->byte_token[b] = copse__tok_lookup(tok, enc, n);
    }
    return COPSE_OK;
}

void copse__bpe_free(copse_tokenizer *tok)
{
    for (int i = 0; i < tok->n_re; i++)
        pcre2_code_free(tok->re[i]);
    tok->n_re = 0;
    free(tok->merges);
    tok->merges = NULL;
}

/* ---------------------------------------------------------------- merge loop */

typedef struct bpe_sym {
    int32_t id; /* token, -1 for a byte outside the vocabulary, -2 once merged away */
    int32_t prev, next;
} bpe_sym;

static copse_status try_pair(const copse_tokenizer *tok, const bpe_sym *syms, int32_t l, int32_t r,
                             tok_scratch *sc)
{
    if (l < 0 || r < 0 || syms[l].id < 0 || syms[r].id < 0)
        return COPSE_OK;
    const tok_merge *m = merge_find(tok, syms[l].id, syms[r].id);
    if (!m)
        return COPSE_OK;
    tok_cand c = {.prio = m->rank, .left = l, .right = r, .check_a = syms[l].id,
                  .check_b = syms[r].id, .result = m->result};
    return copse__tok_heap_push(sc, &c);
}

/* Encode one pre-tokenized piece. */
static copse_status bpe_word(const copse_tokenizer *tok, const uint8_t *s, size_t n,
                             tok_scratch *sc, tok_sink *out)
{
    copse_status st;
    if (tok->ignore_merges) {
        if ((st = copse__tok_reserve((void **)&sc->buf, &sc->buf_cap, 2 * n)) != COPSE_OK)
            return st;
        size_t w = 0;
        for (size_t i = 0; i < n; i++)
            w += utf8_encode(byte_to_cp(s[i]), sc->buf + w);
        copse_token id = copse__tok_lookup(tok, sc->buf, w);
        if (id >= 0) {
            tok_sink_push(out, id);
            return COPSE_OK;
        }
    }
    if ((st = copse__tok_reserve(&sc->syms, &sc->syms_bytes, n * sizeof(bpe_sym))) != COPSE_OK)
        return st;
    bpe_sym *syms = sc->syms;
    for (size_t i = 0; i < n; i++)
        syms[i] = (bpe_sym){.id = tok->byte_token[s[i]], .prev = (int32_t)i - 1,
                            .next = i + 1 < n ? (int32_t)i + 1 : -1};
    sc->heap_n = 0;
    for (size_t i = 0; i + 1 < n; i++)
        if ((st = try_pair(tok, syms, (int32_t)i, (int32_t)i + 1, sc)) != COPSE_OK)
            return st;
    tok_cand c;
    while (copse__tok_heap_pop(sc, &c)) {
        bpe_sym *l = &syms[c.left], *r = &syms[c.right];
        if (l->id != c.check_a || l->next != c.right || r->id != c.check_b)
            continue; /* stale */
        l->id = c.result;
        l->next = r->next;
        if (r->next >= 0)
            syms[r->next].prev = c.left;
        r->id = -2;
        if ((st = try_pair(tok, syms, l->prev, c.left, sc)) != COPSE_OK ||
            (st = try_pair(tok, syms, c.left, l->next, sc)) != COPSE_OK)
            return st;
    }
    /* a byte whose alphabet character is not in the vocabulary is dropped, as
     * the reference's BPE (which has no unknown token for byte-level models)
     * does; SmolLM2 lacks a few control characters this way */
    for (int32_t i = 0; i >= 0; i = syms[i].next)
        if (syms[i].id >= 0)
            tok_sink_push(out, syms[i].id);
    return COPSE_OK;
}

/* ---------------------------------------------------------------- pre-tokenize */

/* Split s[0..n) with regex `level` and pass every piece (matches and the text
 * between them) on to the next level; after the last, merge. */
static copse_status split_level(const copse_tokenizer *tok, int level, const char *s, size_t n,
                                pcre2_match_data *md, tok_scratch *sc, tok_sink *out)
{
    if (n == 0)
        return COPSE_OK;
    if (level == tok->n_re)
        return bpe_word(tok, (const uint8_t *)s, n, sc, out);
    copse_status st;
    size_t gap = 0, pos = 0;
    while (pos < n) {
        int rc = pcre2_match(tok->re[level], (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH)
            break;
        if (rc < 0)
            return COPSE_ERANGE; /* a PCRE2 resource limit; cannot happen with these patterns */
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t ms = ov[0], me = ov[1];
        if (me <= ms) { /* empty match (none of the patterns makes one): step one character */
            pos = ms + tok_utf8_len((uint8_t)s[ms]);
            continue;
        }
        if (ms > gap && (st = split_level(tok, level + 1, s + gap, ms - gap, md, sc, out)) != COPSE_OK)
            return st;
        if ((st = split_level(tok, level + 1, s + ms, me - ms, md, sc, out)) != COPSE_OK)
            return st;
        gap = pos = me;
    }
    return split_level(tok, level + 1, s + gap, n - gap, md, sc, out);
}

copse_status copse__bpe_encode(const copse_tokenizer *tok, const char *text, size_t len,
                               tok_scratch *sc, tok_sink *out)
{
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    if (!md)
        return COPSE_ENOMEM;
    copse_status st = split_level(tok, 0, text, len, md, sc, out);
    pcre2_match_data_free(md);
    return st;
}
