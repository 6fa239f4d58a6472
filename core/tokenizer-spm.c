/*
 * tokenizer-spm.c — SentencePiece BPE ("llama" GGUF tokenizers).
 *
 * The fragment is normalized (spaces become U+2581 "▁", and with
 * add_space_prefix one more is put in front), split into UTF-8 characters,
 * and adjacent symbols merge while their concatenation is a piece of the
 * vocabulary: the merge whose result has the highest score goes first, the
 * leftmost among equal scores (SentencePiece's BPE encoder). Symbols that are
 * not pieces at the end fall back to their bytes as <0xXX> tokens, or to the
 * unknown token when the vocabulary has no byte tokens. There is no
 * pre-splitting at whitespace, like the reference (no pre-tokenizer).
 */
#include "tokenizer-impl.h"

#include <stdlib.h>
#include <string.h>

typedef struct spm_sym {
    int32_t start, len; /* bytes in the normalized buffer; len 0 once merged away */
    int32_t prev, next;
} spm_sym;

static copse_status try_pair(const copse_tokenizer *tok, const char *norm, const spm_sym *syms,
                             int32_t l, int32_t r, tok_scratch *sc)
{
    if (l < 0 || r < 0)
        return COPSE_OK;
    size_t len = (size_t)syms[l].len + (size_t)syms[r].len;
    if (len > tok->max_piece_len)
        return COPSE_OK;
    copse_token id = copse__tok_lookup(tok, norm + syms[l].start, len);
    if (id < 0 || !(tok->flags[id] & TOK_FLAG_MERGEABLE))
        return COPSE_OK;
    tok_cand c = {.prio = -(double)tok->scores[id], .left = l, .right = r,
                  .check_a = (int32_t)len, .result = id};
    return copse__tok_heap_push(sc, &c);
}

/* A leftover symbol: its own token, else its bytes, else unknown. */
static void emit_symbol(const copse_tokenizer *tok, const char *s, size_t len, tok_sink *out)
{
    copse_token id = copse__tok_lookup(tok, s, len);
    if (id >= 0 && (tok->flags[id] & TOK_FLAG_MERGEABLE)) {
        tok_sink_push(out, id);
        return;
    }
    bool bytes_ok = true;
    for (size_t i = 0; i < len; i++)
        bytes_ok = bytes_ok && tok->byte_token[(uint8_t)s[i]] >= 0;
    if (bytes_ok) {
        for (size_t i = 0; i < len; i++)
            tok_sink_push(out, tok->byte_token[(uint8_t)s[i]]);
    } else if (tok->unk >= 0) {
        tok_sink_push(out, tok->unk);
    }
}

copse_status copse__spm_encode(const copse_tokenizer *tok, const char *text, size_t len,
                               bool prefix_space, tok_scratch *sc, tok_sink *out)
{
    static const char SPACE_MARK[3] = {(char)0xE2, (char)0x96, (char)0x81}; /* U+2581 */
    copse_status st;

    /* normalize: ' ' -> U+2581 (at most 3 bytes per input byte, +3 for the prefix) */
    if (len > (TOK_MAX_INPUT - 3) / 3)
        return COPSE_ERANGE;
    if ((st = copse__tok_reserve((void **)&sc->buf, &sc->buf_cap, 3 * len + 3)) != COPSE_OK)
        return st;
    char *norm = sc->buf;
    size_t n = 0;
    if (prefix_space) {
        memcpy(norm, SPACE_MARK, 3);
        n = 3;
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(norm + n, SPACE_MARK, 3);
            n += 3;
        } else {
            norm[n++] = text[i];
        }
    }

    /* one symbol per character (the input is well-formed UTF-8) */
    if ((st = copse__tok_reserve(&sc->syms, &sc->syms_bytes, n * sizeof(spm_sym))) != COPSE_OK)
        return st;
    spm_sym *syms = sc->syms;
    int32_t n_sym = 0;
    for (size_t i = 0; i < n;) {
        size_t cl = tok_utf8_len((uint8_t)norm[i]);
        if (cl > n - i)
            cl = n - i;
        syms[n_sym] = (spm_sym){.start = (int32_t)i, .len = (int32_t)cl, .prev = n_sym - 1,
                                .next = n_sym + 1};
        n_sym++;
        i += cl;
    }
    if (n_sym == 0)
        return COPSE_OK;
    syms[n_sym - 1].next = -1;

    sc->heap_n = 0;
    for (int32_t i = 0; i + 1 < n_sym; i++)
        if ((st = try_pair(tok, norm, syms, i, i + 1, sc)) != COPSE_OK)
            return st;
    tok_cand c;
    while (copse__tok_heap_pop(sc, &c)) {
        spm_sym *l = &syms[c.left], *r = &syms[c.right];
        /* symbols only grow or vanish, so an unchanged total length means
         * the pair is still the one this candidate was made for */
        if (l->len == 0 || r->len == 0 || l->next != c.right || l->len + r->len != c.check_a)
            continue;
        l->len += r->len;
        l->next = r->next;
        if (r->next >= 0)
            syms[r->next].prev = c.left;
        r->len = 0;
        if ((st = try_pair(tok, norm, syms, l->prev, c.left, sc)) != COPSE_OK ||
            (st = try_pair(tok, norm, syms, c.left, l->next, sc)) != COPSE_OK)
            return st;
    }
    for (int32_t i = 0; i >= 0; i = syms[i].next)
        emit_symbol(tok, norm + syms[i].start, (size_t)syms[i].len, out);
    return COPSE_OK;
}
