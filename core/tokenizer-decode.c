/*
 * tokenizer-decode.c — from token ids back to bytes: one token's bytes, a
 * whole decode, and the streaming decoder that holds back incomplete UTF-8.
 *
 * Byte-level BPE pieces are mapped back through the GPT-2 byte alphabet;
 * SentencePiece pieces turn U+2581 into spaces and <0xXX> byte tokens into
 * their byte. Control tokens give nothing unless render_special. With
 * add_space_prefix, the first byte of the output is dropped when it is the
 * space the encoder put there (the reference's Strip decoder).
 */
#include "tokenizer-impl.h"

#include <assert.h>
#include <string.h>

/* ---------------------------------------------------------------- decode */

/* Byte writer: drops the first `skip` bytes, stores up to cap, counts all. */
typedef struct byte_out {
    char *p;
    size_t cap, n, skip;
} byte_out;

static void out_byte(byte_out *o, char c)
{
    if (o->skip) {
        o->skip--;
        return;
    }
    if (o->n < o->cap)
        o->p[o->n] = c;
    o->n++;
}

static void out_bytes(byte_out *o, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out_byte(o, s[i]);
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* "<0xXX>" -> XX, else -1. */
static int byte_piece_value(copse_str p)
{
    if (p.len != 6 || memcmp(p.ptr, "<0x", 3) != 0 || p.ptr[5] != '>')
        return -1;
    int hi = hex_digit(p.ptr[3]), lo = hex_digit(p.ptr[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

static void token_bytes_into(const copse_tokenizer *tok, copse_token id, bool render_special,
                             byte_out *o)
{
    uint8_t kind = tok->kinds[id];
    copse_str p = tok->pieces[id];
    if ((kind == COPSE_TOKEN_CONTROL || kind == COPSE_TOKEN_UNKNOWN) && !render_special)
        return;
    if (tok->type == COPSE_VOCAB_BPE) {
        /* each character of the piece stands for one byte; a piece with a
         * character outside the byte alphabet is output as it is (as the
         * reference's ByteLevel decoder does) */
        size_t cl;
        for (uint64_t k = 0; k < p.len; k += cl)
            if (copse__bpe_char_byte(p.ptr + k, (size_t)(p.len - k), &cl) < 0) {
                out_bytes(o, p.ptr, (size_t)p.len);
                return;
            }
        for (uint64_t k = 0; k < p.len; k += cl)
            out_byte(o, (char)copse__bpe_char_byte(p.ptr + k, (size_t)(p.len - k), &cl));
        return;
    }
    /* SentencePiece */
    if (kind == COPSE_TOKEN_BYTE) {
        int v = byte_piece_value(p);
        if (v >= 0) {
            out_byte(o, (char)v);
            return;
        }
    }
    for (uint64_t k = 0; k < p.len;) {
        if (p.len - k >= 3 && (uint8_t)p.ptr[k] == 0xE2 && (uint8_t)p.ptr[k + 1] == 0x96 &&
            (uint8_t)p.ptr[k + 2] == 0x81) {
            out_byte(o, ' ');
            k += 3;
        } else {
            out_byte(o, p.ptr[k++]);
        }
    }
}

size_t copse__tokenizer_token_bytes(const copse_tokenizer *tok, copse_token id, bool render_special,
                                    char *out, size_t cap)
{
    assert(id >= 0 && id < tok->n_vocab);
    byte_out o = {.p = out, .cap = out ? cap : 0};
    token_bytes_into(tok, id, render_special, &o);
    return o.n;
}

/* The first byte a token decodes to, -1 if it decodes to nothing. */
static int token_first_byte(const copse_tokenizer *tok, copse_token id, bool render_special)
{
    char c;
    byte_out o = {.p = &c, .cap = 1};
    token_bytes_into(tok, id, render_special, &o);
    return o.n ? (uint8_t)c : -1;
}

copse_status copse__tokenizer_decode(const copse_tokenizer *tok, const copse_token *ids, size_t n,
                                     bool render_special, char *out, size_t cap, size_t *n_out)
{
    *n_out = 0;
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= tok->n_vocab)
            return COPSE_ERANGE;
    byte_out o = {.p = out, .cap = out ? cap : 0};
    /* SentencePiece with a prefix space: drop the first output byte if it is
     * the space the encoder added (the reference's Strip decoder) */
    bool strip = tok->type == COPSE_VOCAB_SPM && tok->add_space_prefix;
    for (size_t i = 0; i < n; i++) {
        if (strip) {
            int c = token_first_byte(tok, ids[i], render_special);
            if (c >= 0) {
                o.skip = c == ' ';
                strip = false;
            }
        }
        token_bytes_into(tok, ids[i], render_special, &o);
    }
    *n_out = o.n;
    return o.n > o.cap ? COPSE_ENOSPACE : COPSE_OK;
}

/* ---------------------------------------------------------------- streaming decode */

void copse__detok_stream_init(const copse_tokenizer *tok, copse_detok_stream *s)
{
    memset(s, 0, sizeof *s);
    s->at_start = tok->type == COPSE_VOCAB_SPM && tok->add_space_prefix;
}

/* out doubles as scratch: the raw bytes (pending + token) are assembled in it
 * first, so cap must hold them, and the output, in which each invalid subpart
 * grows to 3 bytes; 64 covers any token of up to 56 well-formed bytes. On
 * COPSE_ENOSPACE the stream is unchanged and the push can be retried. */
int copse__detok_stream_push(const copse_tokenizer *tok, copse_detok_stream *s, copse_token id,
                             bool render_special, char *out, size_t cap)
{
    if (id < 0 || id >= tok->n_vocab)
        return COPSE_ERANGE;
    size_t np = s->n_pending;
    size_t skip = 0;
    bool leaves_start = false;
    if (s->at_start) {
        int c = token_first_byte(tok, id, render_special);
        if (c < 0)
            return 0;
        skip = c == ' ';
        leaves_start = true;
    }
    byte_out probe = {.skip = skip};
    token_bytes_into(tok, id, render_special, &probe);
    size_t raw = np + probe.n;
    if (raw > cap || raw > INT32_MAX / 4)
        return COPSE_ENOSPACE;
    if (!out)
        return COPSE_ENOSPACE;
    /* raw bytes: pending, then this token's */
    memcpy(out, s->pending, np);
    byte_out o = {.p = out + np, .cap = cap - np, .skip = skip};
    token_bytes_into(tok, id, render_special, &o);

    /* how long is the output, and which tail is an incomplete character? */
    const uint8_t *u = (const uint8_t *)out;
    size_t need = 0, i = 0, tail = 0;
    bool any_bad = false;
    while (i < raw) {
        size_t bad;
        bool trunc;
        size_t k = copse__tok_utf8_char(u + i, raw - i, &bad, &trunc);
        if (k) {
            need += k;
            i += k;
        } else if (trunc) {
            tail = raw - i; /* at most 3 bytes, all at the end */
            break;
        } else {
            need += TOK_REPLACEMENT_LEN;
            i += bad;
            any_bad = true;
        }
    }
    size_t body = raw - tail;
    if (need > cap)
        return COPSE_ENOSPACE; /* state untouched; out is scratch */

    /* commit: hold the tail, expand invalid bytes to U+FFFD if any */
    uint8_t held[4];
    memcpy(held, u + body, tail);
    if (any_bad) {
        /* move the body to the end of out, then rewrite it forwards; each
         * remaining input byte gives at least one output byte, so the writer
         * never overtakes the reader */
        size_t from = cap - body;
        memmove(out + from, out, body);
        size_t r = 0, w = 0;
        while (r < body) {
            size_t bad;
            bool trunc;
            size_t k = copse__tok_utf8_char(u + from + r, body - r, &bad, &trunc);
            if (k) {
                memmove(out + w, out + from + r, k);
                w += k;
                r += k;
            } else {
                memcpy(out + w, TOK_REPLACEMENT, TOK_REPLACEMENT_LEN);
                w += TOK_REPLACEMENT_LEN;
                r += bad;
            }
        }
        assert(w == need);
    }
    memcpy(s->pending, held, tail);
    s->n_pending = (uint32_t)tail;
    if (leaves_start)
        s->at_start = false;
    return (int)need;
}

int copse__detok_stream_flush(copse_detok_stream *s, char *out, size_t cap)
{
    if (s->n_pending == 0)
        return 0;
    if (!out || cap < TOK_REPLACEMENT_LEN)
        return COPSE_ENOSPACE;
    memcpy(out, TOK_REPLACEMENT, TOK_REPLACEMENT_LEN);
    s->n_pending = 0;
    return (int)TOK_REPLACEMENT_LEN;
}
