/*
 * tokenizer.c — tokenizers from GGUF metadata: vocabulary, validation,
 * special tokens and the encode driver (decoding: tokenizer-decode.c).
 *
 * The two model families (byte-level BPE in tokenizer-bpe.c, SentencePiece
 * BPE in tokenizer-spm.c) share everything here. Encoding runs in three steps:
 *
 *   1. Invalid UTF-8 is replaced by U+FFFD, one per maximal invalid subpart
 *      (the policy of Python's errors="replace" and of Rust's
 *      from_utf8_lossy), so the regexes and the merge loops only ever see
 *      valid UTF-8 and the result equals the reference tokenizer run on the
 *      replaced text.
 *   2. Added tokens are cut out of the text, leftmost-longest, as the Hugging
 *      Face tokenizers library does: USER_DEFINED tokens always (they are
 *      ordinary text pieces, like SentencePiece's user-defined symbols and
 *      HF's non-special added tokens), CONTROL/UNKNOWN tokens only with
 *      COPSE_TOKENIZE_PARSE_SPECIAL. As in HF, a control token's text that is
 *      not parsed stays plain text and matching resumes after it.
 *   3. Each stretch of plain text between them goes to the family's encoder.
 */
#include "tokenizer-impl.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

/* ---------------------------------------------------------------- small helpers */

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 0x100000001b3ull;
    }
    return h ^ (h >> 29);
}

/* Smallest power of two >= 2n (at least 16), or 0 on overflow. */
static size_t table_size_for(size_t n)
{
    size_t sz = 16;
    while (sz < 2 * n) {
        if (sz > SIZE_MAX / 4)
            return 0;
        sz <<= 1;
    }
    return sz;
}

copse_status copse__tok_reserve(void **p, size_t *cap, size_t need)
{
    if (need <= *cap)
        return COPSE_OK;
    size_t n = *cap ? *cap : 256;
    while (n < need) {
        if (n > SIZE_MAX / 2)
            return COPSE_ENOMEM;
        n *= 2;
    }
    void *q = realloc(*p, n);
    if (!q)
        return COPSE_ENOMEM;
    *p = q;
    *cap = n;
    return COPSE_OK;
}

/* ---------------------------------------------------------------- merge queue (binary heap) */

static bool cand_before(const tok_cand *a, const tok_cand *b)
{
    if (a->prio != b->prio)
        return a->prio < b->prio;
    return a->left < b->left;
}

copse_status copse__tok_heap_push(tok_scratch *sc, const tok_cand *c)
{
    if (sc->heap_n == sc->heap_cap) {
        size_t bytes = sc->heap_cap * sizeof *sc->heap;
        void *p = sc->heap;
        if (sc->heap_cap > SIZE_MAX / (2 * sizeof *sc->heap))
            return COPSE_ENOMEM;
        copse_status st = copse__tok_reserve(&p, &bytes, (sc->heap_cap + 1) * sizeof *sc->heap);
        if (st != COPSE_OK)
            return st;
        sc->heap = p;
        sc->heap_cap = bytes / sizeof *sc->heap;
    }
    size_t i = sc->heap_n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!cand_before(c, &sc->heap[parent]))
            break;
        sc->heap[i] = sc->heap[parent];
        i = parent;
    }
    sc->heap[i] = *c;
    return COPSE_OK;
}

bool copse__tok_heap_pop(tok_scratch *sc, tok_cand *out)
{
    if (sc->heap_n == 0)
        return false;
    *out = sc->heap[0];
    tok_cand last = sc->heap[--sc->heap_n];
    size_t n = sc->heap_n, i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const tok_cand *best = &last;
        if (l < n && cand_before(&sc->heap[l], best)) {
            m = l;
            best = &sc->heap[l];
        }
        if (r < n && cand_before(&sc->heap[r], best))
            m = r;
        if (m == i)
            break;
        sc->heap[i] = sc->heap[m];
        i = m;
    }
    if (n > 0)
        sc->heap[i] = last;
    return true;
}

/* ---------------------------------------------------------------- UTF-8 */

size_t copse__tok_utf8_char(const uint8_t *s, size_t n, size_t *bad, bool *truncated)
{
    uint8_t c = s[0];
    *truncated = false;
    *bad = 1;
    if (c < 0x80)
        return 1;
    size_t need;
    uint8_t lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
        need = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 3;
        if (c == 0xE0)
            lo = 0xA0;
        if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 4;
        if (c == 0xF0)
            lo = 0x90;
        if (c == 0xF4)
            hi = 0x8F;
    } else {
        return 0;
    }
    for (size_t k = 1; k < need; k++) {
        if (k >= n) {
            *bad = k;
            *truncated = true;
            return 0;
        }
        if (s[k] < lo || s[k] > hi) {
            *bad = k;
            return 0;
        }
        lo = 0x80;
        hi = 0xBF;
    }
    return need;
}

/* Length of s with every maximal invalid subpart replaced by U+FFFD; *valid
 * tells whether s was well-formed already. */
static size_t utf8_sanitized_len(const uint8_t *s, size_t n, bool *valid)
{
    size_t out = 0, i = 0;
    *valid = true;
    while (i < n) {
        size_t bad;
        bool trunc;
        size_t k = copse__tok_utf8_char(s + i, n - i, &bad, &trunc);
        if (k) {
            out += k;
            i += k;
        } else {
            *valid = false;
            out += TOK_REPLACEMENT_LEN;
            i += bad;
        }
    }
    return out;
}

static void utf8_sanitize(const uint8_t *s, size_t n, char *out)
{
    size_t i = 0, w = 0;
    while (i < n) {
        size_t bad;
        bool trunc;
        size_t k = copse__tok_utf8_char(s + i, n - i, &bad, &trunc);
        if (k) {
            memcpy(out + w, s + i, k);
            w += k;
            i += k;
        } else {
            memcpy(out + w, TOK_REPLACEMENT, TOK_REPLACEMENT_LEN);
            w += TOK_REPLACEMENT_LEN;
            i += bad;
        }
    }
}

/* ---------------------------------------------------------------- piece table */

copse_token copse__tok_lookup(const copse_tokenizer *tok, const char *s, size_t len)
{
    size_t i = (size_t)hash_bytes(s, len) & tok->piece_mask;
    for (;;) {
        int32_t id = tok->piece_ht[i];
        if (id < 0)
            return -1;
        copse_str p = tok->pieces[id];
        if (p.len == len && (len == 0 || memcmp(p.ptr, s, len) == 0))
            return id;
        i = (i + 1) & tok->piece_mask;
    }
}

/* Insert every piece; a piece that occurs twice maps to its last id, as in
 * the reference (a dict built in id order). */
static copse_status build_piece_table(copse_tokenizer *tok)
{
    size_t sz = table_size_for((size_t)tok->n_vocab);
    if (!sz || !(tok->piece_ht = malloc(sz * sizeof *tok->piece_ht)))
        return COPSE_ENOMEM;
    memset(tok->piece_ht, 0xff, sz * sizeof *tok->piece_ht);
    tok->piece_mask = sz - 1;
    for (int32_t id = 0; id < tok->n_vocab; id++) {
        copse_str p = tok->pieces[id];
        size_t i = (size_t)hash_bytes(p.ptr, (size_t)p.len) & tok->piece_mask;
        for (;;) {
            int32_t old = tok->piece_ht[i];
            if (old < 0 || (tok->pieces[old].len == p.len &&
                            (p.len == 0 || memcmp(tok->pieces[old].ptr, p.ptr, (size_t)p.len) == 0))) {
                tok->piece_ht[i] = id;
                break;
            }
            i = (i + 1) & tok->piece_mask;
        }
    }
    return COPSE_OK;
}

/* ---------------------------------------------------------------- special-token trie */

static size_t edge_slot(const copse_tokenizer *tok, uint32_t node, uint8_t byte)
{
    uint64_t h = ((uint64_t)node << 8 | byte) * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 20) & tok->trie_mask;
}

static int64_t trie_child(const copse_tokenizer *tok, uint32_t node, uint8_t byte)
{
    size_t i = edge_slot(tok, node, byte);
    for (;;) {
        const tok_trie_edge *e = &tok->trie_edges[i];
        if (e->node == UINT32_MAX)
            return -1;
        if (e->node == node && e->byte == byte)
            return e->child;
        i = (i + 1) & tok->trie_mask;
    }
}

static bool is_added_kind(uint8_t kind)
{
    return kind == COPSE_TOKEN_CONTROL || kind == COPSE_TOKEN_UNKNOWN ||
           kind == COPSE_TOKEN_USER_DEFINED;
}

/* A trie of the texts of all added tokens (control, unknown, user-defined). */
static copse_status build_trie(copse_tokenizer *tok)
{
    size_t total = 1;
    for (int32_t id = 0; id < tok->n_vocab; id++)
        if (is_added_kind(tok->kinds[id])) {
            if (tok->pieces[id].len > UINT32_MAX - total)
                return COPSE_ERANGE;
            total += (size_t)tok->pieces[id].len;
        }
    size_t sz = table_size_for(total);
    if (!sz)
        return COPSE_ENOMEM;
    tok->trie_edges = malloc(sz * sizeof *tok->trie_edges);
    tok->node_token = malloc(total * sizeof *tok->node_token);
    if (!tok->trie_edges || !tok->node_token)
        return COPSE_ENOMEM;
    for (size_t i = 0; i < sz; i++)
        tok->trie_edges[i].node = UINT32_MAX;
    tok->trie_mask = sz - 1;
    tok->node_token[0] = -1;
    tok->n_nodes = 1;
    for (int32_t id = 0; id < tok->n_vocab; id++) {
        copse_str p = tok->pieces[id];
        if (!is_added_kind(tok->kinds[id]) || p.len == 0)
            continue;
        uint32_t node = 0;
        for (uint64_t k = 0; k < p.len; k++) {
            uint8_t b = (uint8_t)p.ptr[k];
            int64_t child = trie_child(tok, node, b);
            if (child < 0) {
                size_t i = edge_slot(tok, node, b);
                while (tok->trie_edges[i].node != UINT32_MAX)
                    i = (i + 1) & tok->trie_mask;
                child = tok->n_nodes++;
                tok->node_token[child] = -1;
                tok->trie_edges[i] = (tok_trie_edge){.node = node, .child = (uint32_t)child, .byte = b};
            }
            node = (uint32_t)child;
        }
        if (tok->node_token[node] < 0) /* the first of duplicate texts wins */
            tok->node_token[node] = id;
    }
    return COPSE_OK;
}

/* The longest added token that starts at s[0..n), -1 if none. */
static copse_token trie_match(const copse_tokenizer *tok, const char *s, size_t n, size_t *mlen)
{
    uint32_t node = 0;
    copse_token best = -1;
    for (size_t k = 0; k < n; k++) {
        int64_t child = trie_child(tok, node, (uint8_t)s[k]);
        if (child < 0)
            break;
        node = (uint32_t)child;
        if (tok->node_token[node] >= 0) {
            best = tok->node_token[node];
            *mlen = k + 1;
        }
    }
    return best;
}

/* ---------------------------------------------------------------- metadata */

/* An optional token id under key: -1 when absent (or stored as -1 /
 * UINT32_MAX, the usual "none"); otherwise it must name a token. */
static copse_status read_token_id(const copse_gguf *g, const char *key, int32_t n_vocab,
                                  copse_token *out, char *err, size_t err_size)
{
    *out = -1;
    const copse_gguf_kv *kv = copse__gguf_find(g, key);
    if (!kv)
        return COPSE_OK;
    int64_t v;
    switch (kv->type) {
    case COPSE_GGUF_UINT8:
    case COPSE_GGUF_UINT16:
    case COPSE_GGUF_UINT32:
    case COPSE_GGUF_UINT64:
        if ((kv->type == COPSE_GGUF_UINT32 && kv->v.u64 == UINT32_MAX) || kv->v.u64 == UINT64_MAX)
            return COPSE_OK;
        v = kv->v.u64 > INT64_MAX ? INT64_MAX : (int64_t)kv->v.u64;
        break;
    case COPSE_GGUF_INT8:
    case COPSE_GGUF_INT16:
    case COPSE_GGUF_INT32:
    case COPSE_GGUF_INT64:
        v = kv->v.i64;
        if (v == -1)
            return COPSE_OK;
        break;
    default:
        return copse__errorf(err, err_size, COPSE_EFORMAT, "%s: expected an integer token id, got %s",
                             key, copse__gguf_type_name(kv->type));
    }
    if (v < 0 || v >= n_vocab)
        return copse__errorf(err, err_size, COPSE_EFORMAT,
                             "%s: token id %lld out of range (the vocabulary has %d tokens)", key,
                             (long long)v, (int)n_vocab);
    *out = (copse_token)v;
    return COPSE_OK;
}

static copse_status read_bool(const copse_gguf *g, const char *key, bool dflt, bool *out, char *err,
                              size_t err_size)
{
    copse_status st = copse__gguf_get_bool(g, key, out);
    if (st == COPSE_ENOTFOUND) {
        *out = dflt;
        return COPSE_OK;
    }
    if (st != COPSE_OK)
        return copse__errorf(err, err_size, COPSE_EFORMAT, "%s: expected a bool", key);
    return COPSE_OK;
}

/* Texts of control tokens that end a turn, whatever the model calls EOS. */
static const char *const EOG_TEXTS[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>",
    "<EOT>", "<|return|>", "<|call|>", "<|end_of_text|>", "<｜end▁of▁sentence｜>",
};

/* Candidates for the end-of-turn token when the file names none, in order. */
static const char *const EOT_TEXTS[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<EOT>",
};

static copse_token find_cstr(const copse_tokenizer *tok, const char *s)
{
    return copse__tok_lookup(tok, s, strlen(s));
}

/* ---------------------------------------------------------------- create / destroy */

copse_status copse__tokenizer_create(const copse_gguf *g, copse_tokenizer **out, char *err,
                                     size_t err_size)
{
    copse_status st;
    *out = NULL;
    copse_tokenizer *tok = calloc(1, sizeof *tok);
    if (!tok)
        return copse__errorf(err, err_size, COPSE_ENOMEM, "out of memory");
    tok->pre_name = "default";

    /* model family */
    copse_str model;
    st = copse__gguf_get_str(g, "tokenizer.ggml.model", &model);
    if (st != COPSE_OK) {
        st = copse__errorf(err, err_size, st == COPSE_ENOTFOUND ? COPSE_EFORMAT : st,
                           "tokenizer.ggml.model: %s", st == COPSE_ENOTFOUND ? "missing" : "not a string");
        goto fail;
    }
    if (copse__str_eq(model, "gpt2")) {
        tok->type = COPSE_VOCAB_BPE;
    } else if (copse__str_eq(model, "llama")) {
        tok->type = COPSE_VOCAB_SPM;
    } else {
        st = copse__errorf(err, err_size, COPSE_EUNSUPPORTED,
                           "tokenizer.ggml.model: '%.*s' is not supported (only 'gpt2' and 'llama')",
                           (int)(model.len > 64 ? 64 : model.len), model.ptr);
        goto fail;
    }

    /* pieces */
    const copse_gguf_array *arr;
    st = copse__gguf_get_arr(g, "tokenizer.ggml.tokens", COPSE_GGUF_STRING, &arr);
    if (st != COPSE_OK) {
        st = copse__errorf(err, err_size, COPSE_EFORMAT, "tokenizer.ggml.tokens: %s",
                           st == COPSE_ENOTFOUND ? "missing" : "not an array of strings");
        goto fail;
    }
    if (arr->n == 0 || arr->n > INT32_MAX / 4 || !arr->strs) {
        st = copse__errorf(err, err_size, COPSE_EFORMAT,
                           "tokenizer.ggml.tokens: %llu tokens (want 1 .. %d)",
                           (unsigned long long)arr->n, INT32_MAX / 4);
        goto fail;
    }
    tok->n_vocab = (int32_t)arr->n;
    tok->pieces = arr->strs;
    for (int32_t i = 0; i < tok->n_vocab; i++)
        if (tok->pieces[i].len > tok->max_piece_len)
            tok->max_piece_len = (size_t)tok->pieces[i].len;

    tok->kinds = malloc((size_t)tok->n_vocab);
    tok->flags = calloc((size_t)tok->n_vocab, 1);
    if (!tok->kinds || !tok->flags) {
        st = copse__errorf(err, err_size, COPSE_ENOMEM, "out of memory");
        goto fail;
    }

    /* token types (optional: all normal) */
    st = copse__gguf_get_arr(g, "tokenizer.ggml.token_type", COPSE_GGUF_TYPE_COUNT, &arr);
    if (st == COPSE_ENOTFOUND) {
        memset(tok->kinds, COPSE_TOKEN_NORMAL, (size_t)tok->n_vocab);
    } else if (st != COPSE_OK || arr->type == COPSE_GGUF_STRING || arr->type == COPSE_GGUF_ARRAY ||
               arr->type == COPSE_GGUF_FLOAT32 || arr->type == COPSE_GGUF_FLOAT64 ||
               arr->type == COPSE_GGUF_BOOL) {
        st = copse__errorf(err, err_size, COPSE_EFORMAT,
                           "tokenizer.ggml.token_type: not an array of integers");
        goto fail;
    } else if (arr->n != (uint64_t)tok->n_vocab) {
        st = copse__errorf(err, err_size, COPSE_EFORMAT,
                           "tokenizer.ggml.token_type: %llu entries for %d tokens",
                           (unsigned long long)arr->n, (int)tok->n_vocab);
        goto fail;
    } else {
        for (int32_t i = 0; i < tok->n_vocab; i++) {
            int64_t k = copse__gguf_arr_i64(arr, (uint64_t)i);
            if (k < COPSE_TOKEN_UNDEFINED || k > COPSE_TOKEN_BYTE) {
                st = copse__errorf(err, err_size, COPSE_EFORMAT,
                                   "tokenizer.ggml.token_type[%d]: unknown type %lld", (int)i,
                                   (long long)k);
                goto fail;
            }
            tok->kinds[i] = (uint8_t)k;
        }
    }
    for (int32_t i = 0; i < tok->n_vocab; i++) {
        uint8_t k = tok->kinds[i];
        if (k == COPSE_TOKEN_NORMAL || k == COPSE_TOKEN_USER_DEFINED || k == COPSE_TOKEN_UNDEFINED)
            tok->flags[i] |= TOK_FLAG_MERGEABLE;
    }

    /* scores (SentencePiece only; required there) */
    if (tok->type == COPSE_VOCAB_SPM) {
        st = copse__gguf_get_arr(g, "tokenizer.ggml.scores", COPSE_GGUF_FLOAT32, &arr);
        if (st != COPSE_OK) {
            st = copse__errorf(err, err_size, COPSE_EFORMAT, "tokenizer.ggml.scores: %s",
                               st == COPSE_ENOTFOUND ? "missing (SentencePiece needs scores)"
                                                     : "not an array of float32");
            goto fail;
        }
        if (arr->n != (uint64_t)tok->n_vocab) {
            st = copse__errorf(err, err_size, COPSE_EFORMAT,
                               "tokenizer.ggml.scores: %llu entries for %d tokens",
                               (unsigned long long)arr->n, (int)tok->n_vocab);
            goto fail;
        }
        if (!(tok->scores = malloc((size_t)tok->n_vocab * sizeof *tok->scores))) {
            st = copse__errorf(err, err_size, COPSE_ENOMEM, "out of memory");
            goto fail;
        }
        for (int32_t i = 0; i < tok->n_vocab; i++) {
            float s = copse__gguf_arr_f32(arr, (uint64_t)i);
            if (s != s) {
                st = copse__errorf(err, err_size, COPSE_EFORMAT, "tokenizer.ggml.scores[%d]: NaN",
                                   (int)i);
                goto fail;
            }
            tok->scores[i] = s;
        }
    }

    if ((st = build_piece_table(tok)) != COPSE_OK || (st = build_trie(tok)) != COPSE_OK) {
        st = copse__errorf(err, err_size, st, "tokenizer.ggml.tokens: cannot build lookup tables: %s",
                           copse_strerror(st));
        goto fail;
    }

    /* special ids */
    static const struct {
        const char *key;
        size_t off;
    } id_keys[] = {
        {"tokenizer.ggml.bos_token_id", offsetof(copse_tokenizer, bos)},
        {"tokenizer.ggml.eos_token_id", offsetof(copse_tokenizer, eos)},
        {"tokenizer.ggml.eot_token_id", offsetof(copse_tokenizer, eot)},
        {"tokenizer.ggml.eom_token_id", offsetof(copse_tokenizer, eom)},
        {"tokenizer.ggml.unknown_token_id", offsetof(copse_tokenizer, unk)},
        {"tokenizer.ggml.padding_token_id", offsetof(copse_tokenizer, pad)},
    };
    for (size_t i = 0; i < sizeof id_keys / sizeof id_keys[0]; i++) {
        copse_token *dst = (copse_token *)((char *)tok + id_keys[i].off);
        st = read_token_id(g, id_keys[i].key, tok->n_vocab, dst, err, err_size);
        if (st != COPSE_OK)
            goto fail;
    }
    if (tok->eot < 0) {
        for (size_t i = 0; i < sizeof EOT_TEXTS / sizeof EOT_TEXTS[0] && tok->eot < 0; i++) {
            copse_token id = find_cstr(tok, EOT_TEXTS[i]);
            if (id >= 0 && tok->kinds[id] == COPSE_TOKEN_CONTROL)
                tok->eot = id;
        }
    }
    if (tok->unk < 0 && tok->type == COPSE_VOCAB_SPM) {
        copse_token id = find_cstr(tok, "<unk>");
        if (id >= 0)
            tok->unk = id;
    }

    /* end-of-generation set */
    if (tok->eos >= 0)
        tok->flags[tok->eos] |= TOK_FLAG_EOG;
    if (tok->eot >= 0)
        tok->flags[tok->eot] |= TOK_FLAG_EOG;
    if (tok->eom >= 0)
        tok->flags[tok->eom] |= TOK_FLAG_EOG;
    for (size_t i = 0; i < sizeof EOG_TEXTS / sizeof EOG_TEXTS[0]; i++) {
        copse_token id = find_cstr(tok, EOG_TEXTS[i]);
        if (id >= 0 && tok->kinds[id] == COPSE_TOKEN_CONTROL)
            tok->flags[id] |= TOK_FLAG_EOG;
    }

    /* flags */
    bool spm = tok->type == COPSE_VOCAB_SPM;
    if ((st = read_bool(g, "tokenizer.ggml.add_bos_token", spm, &tok->add_bos, err, err_size)) ||
        (st = read_bool(g, "tokenizer.ggml.add_eos_token", false, &tok->add_eos, err, err_size)) ||
        (st = read_bool(g, "tokenizer.ggml.add_space_prefix", spm, &tok->add_space_prefix, err,
                        err_size)))
        goto fail;

    /* the family's own tables */
    if (tok->type == COPSE_VOCAB_BPE) {
        if ((st = copse__bpe_init(tok, g, err, err_size)) != COPSE_OK)
            goto fail;
    } else {
        for (int b = 0; b < 256; b++) {
            char name[8];
            snprintf(name, sizeof name, "<0x%02X>", b);
            tok->byte_token[b] = find_cstr(tok, name);
        }
    }

    *out = tok;
    return COPSE_OK;
fail:
    copse__tokenizer_destroy(tok);
    return st;
}

void copse__tokenizer_destroy(copse_tokenizer *tok)
{
    if (!tok)
        return;
    copse__bpe_free(tok);
    free(tok->kinds);
    free(tok->flags);
    free(tok->scores);
    free(tok->piece_ht);
    free(tok->trie_edges);
    free(tok->node_token);
    free(tok);
}

/* ---------------------------------------------------------------- accessors */

copse_vocab_type copse__tokenizer_type(const copse_tokenizer *tok) { return tok->type; }
const char *copse__tokenizer_pre_name(const copse_tokenizer *tok) { return tok->pre_name; }
int32_t copse__tokenizer_n_vocab(const copse_tokenizer *tok) { return tok->n_vocab; }
copse_token copse__tokenizer_bos(const copse_tokenizer *tok) { return tok->bos; }
copse_token copse__tokenizer_eos(const copse_tokenizer *tok) { return tok->eos; }
copse_token copse__tokenizer_eot(const copse_tokenizer *tok) { return tok->eot; }
copse_token copse__tokenizer_unk(const copse_tokenizer *tok) { return tok->unk; }
copse_token copse__tokenizer_pad(const copse_tokenizer *tok) { return tok->pad; }
bool copse__tokenizer_add_bos(const copse_tokenizer *tok) { return tok->add_bos; }
bool copse__tokenizer_add_eos(const copse_tokenizer *tok) { return tok->add_eos; }

copse_token_kind copse__tokenizer_kind(const copse_tokenizer *tok, copse_token id)
{
    if (id < 0 || id >= tok->n_vocab)
        return COPSE_TOKEN_UNDEFINED;
    return (copse_token_kind)tok->kinds[id];
}

bool copse__tokenizer_is_eog(const copse_tokenizer *tok, copse_token id)
{
    return id >= 0 && id < tok->n_vocab && (tok->flags[id] & TOK_FLAG_EOG);
}

copse_str copse__tokenizer_piece(const copse_tokenizer *tok, copse_token id)
{
    assert(id >= 0 && id < tok->n_vocab);
    return tok->pieces[id];
}

copse_token copse__tokenizer_find(const copse_tokenizer *tok, const char *piece, size_t len)
{
    return copse__tok_lookup(tok, piece, len);
}

/* ---------------------------------------------------------------- encode */

static copse_status encode_fragment(const copse_tokenizer *tok, const char *s, size_t n,
                                    bool at_text_start, tok_scratch *sc, tok_sink *out)
{
    if (n == 0)
        return COPSE_OK;
    if (tok->type == COPSE_VOCAB_BPE)
        return copse__bpe_encode(tok, s, n, sc, out);
    return copse__spm_encode(tok, s, n, tok->add_space_prefix && at_text_start, sc, out);
}

copse_status copse__tokenizer_encode(const copse_tokenizer *tok, const char *text, size_t len,
                                     int flags, copse_token *ids, size_t cap, size_t *n_out)
{
    *n_out = 0;
    if (len > TOK_MAX_INPUT)
        return COPSE_ERANGE;
    tok_sink out = {.ids = ids, .cap = ids ? cap : 0, .n = 0};
    tok_scratch sc = {0};
    char *clean = NULL;
    copse_status st = COPSE_OK;

    /* 1. invalid UTF-8 -> U+FFFD */
    bool valid;
    size_t clean_len = len ? utf8_sanitized_len((const uint8_t *)text, len, &valid) : 0;
    const char *s = text;
    if (len && !valid) {
        if (!(clean = malloc(clean_len)))
            return COPSE_ENOMEM;
        utf8_sanitize((const uint8_t *)text, len, clean);
        s = clean;
        len = clean_len;
    }

    if ((flags & COPSE_TOKENIZE_ADD_SPECIAL) && tok->add_bos && tok->bos >= 0)
        tok_sink_push(&out, tok->bos);

    /* 2. cut out added tokens; 3. encode the text between them */
    bool parse_special = (flags & COPSE_TOKENIZE_PARSE_SPECIAL) != 0;
    size_t frag = 0, i = 0;
    while (i < len) {
        size_t mlen = 0;
        copse_token id = trie_match(tok, s + i, len - i, &mlen);
        if (id < 0) {
            i++;
            continue;
        }
        if (tok->kinds[id] != COPSE_TOKEN_USER_DEFINED && !parse_special) {
            i += mlen; /* stays plain text; matching resumes after it */
            continue;
        }
        if ((st = encode_fragment(tok, s + frag, i - frag, frag == 0, &sc, &out)) != COPSE_OK)
            goto done;
        tok_sink_push(&out, id);
        i += mlen;
        frag = i;
    }
    if ((st = encode_fragment(tok, s + frag, len - frag, frag == 0, &sc, &out)) != COPSE_OK)
        goto done;

    if ((flags & COPSE_TOKENIZE_ADD_SPECIAL) && tok->add_eos && tok->eos >= 0)
        tok_sink_push(&out, tok->eos);

    *n_out = out.n;
    st = out.n > out.cap ? COPSE_ENOSPACE : COPSE_OK;
done:
    free(clean);
    free(sc.syms);
    free(sc.heap);
    free(sc.buf);
    return st;
}

int32_t copse__tokenizer_eog_list(const copse_tokenizer *tok, copse_token *out, int32_t cap)
{
    int32_t n = 0, nv = copse__tokenizer_n_vocab(tok);
    for (copse_token t = 0; t < nv && n < cap; t++)
        if (copse__tokenizer_is_eog(tok, t))
            out[n++] = t;
    return n;
}
