/*
 * tokenize-tool.c — tokenize many strings in one process, for the reference
 * comparison in tests/model/test_tokenizer.py.
 *
 * usage: tokenize-tool MODEL.gguf < requests
 *
 * First output line: "# n_vocab=N type=bpe|spm pre=NAME bos=B eos=E add_bos=0|1 add_eos=0|1".
 * Each input line is "FLAGS HEX": FLAGS the COPSE_TOKENIZE_* bits in decimal,
 * HEX the text's bytes in hexadecimal (empty for ""). Each answer is one line:
 *
 *   IDS<TAB>DEC0<TAB>DEC1<TAB>STREAM
 *
 * IDS the ids separated by spaces; DEC0 / DEC1 the hex of the decode of those
 * ids without / with special tokens rendered; STREAM the hex of the streaming
 * decoder's output (special tokens rendered, flushed at the end). A line that
 * cannot be tokenized answers "ERROR <status name>".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static void put_hex(const char *s, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        putchar(digits[(unsigned char)s[i] >> 4]);
        putchar(digits[(unsigned char)s[i] & 15]);
    }
}

/* Decode ids (growing the buffer as needed) and print the hex. */
static int print_decode(const copse_tokenizer *tok, const copse_token *ids, size_t n, bool render,
                        char **buf, size_t *cap)
{
    size_t need;
    copse_status st = copse__tokenizer_decode(tok, ids, n, render, *buf, *cap, &need);
    if (st == COPSE_ENOSPACE) {
        char *nb = realloc(*buf, need);
        if (!nb)
            return -1;
        *buf = nb;
        *cap = need;
        st = copse__tokenizer_decode(tok, ids, n, render, *buf, *cap, &need);
    }
    if (st != COPSE_OK)
        return -1;
    put_hex(*buf, need);
    return 0;
}

static int print_stream(const copse_tokenizer *tok, const copse_token *ids, size_t n)
{
    char piece[4096];
    copse_detok_stream s;
    copse__detok_stream_init(tok, &s);
    for (size_t i = 0; i < n; i++) {
        int k = copse__detok_stream_push(tok, &s, ids[i], true, piece, sizeof piece);
        if (k < 0)
            return -1;
        put_hex(piece, (size_t)k);
    }
    int k = copse__detok_stream_flush(&s, piece, sizeof piece);
    if (k < 0)
        return -1;
    put_hex(piece, (size_t)k);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s MODEL.gguf < requests\n", argv[0]);
        return 2;
    }
    copse_model_params mp = copse_model_default_params();
    copse_model *model;
    char err[512];
    copse_status st = copse_model_create(argv[1], &mp, &model, err, sizeof err);
    if (st != COPSE_OK) {
        fprintf(stderr, "%s: %s\n", argv[1], err);
        return 1;
    }
    const copse_tokenizer *tok = copse__model_tokenizer(model);
    printf("# n_vocab=%d type=%s pre=%s bos=%d eos=%d add_bos=%d add_eos=%d\n",
           (int)copse__tokenizer_n_vocab(tok),
           copse__tokenizer_type(tok) == COPSE_VOCAB_BPE ? "bpe" : "spm",
           copse__tokenizer_pre_name(tok), (int)copse__tokenizer_bos(tok),
           (int)copse__tokenizer_eos(tok), copse__tokenizer_add_bos(tok),
           copse__tokenizer_add_eos(tok));
    fflush(stdout);

    char *line = NULL, *text = NULL, *dec = NULL;
    size_t line_cap = 0, text_cap = 0, dec_cap = 0, ids_cap = 0;
    copse_token *ids = NULL;
    int rc = 0;
    while (getline(&line, &line_cap, stdin) >= 0) {
        char *p = line;
        int flags = (int)strtol(p, &p, 10);
        if (*p == ' ')
            p++;
        size_t hex_len = strcspn(p, "\r\n");
        if (hex_len / 2 + 1 > text_cap) {
            text_cap = hex_len / 2 + 1;
            if (!(text = realloc(text, text_cap)))
                return 1;
        }
        size_t n = 0;
        for (size_t i = 0; i + 2 <= hex_len; i += 2) {
            int hi = hexval(p[i]), lo = hexval(p[i + 1]);
            if (hi < 0 || lo < 0)
                break;
            text[n++] = (char)(hi * 16 + lo);
        }
        size_t n_ids;
        st = copse__tokenizer_encode(tok, text, n, flags, ids, ids_cap, &n_ids);
        if (st == COPSE_ENOSPACE) {
            ids_cap = n_ids;
            if (!(ids = realloc(ids, ids_cap * sizeof *ids)))
                return 1;
            st = copse__tokenizer_encode(tok, text, n, flags, ids, ids_cap, &n_ids);
        }
        if (st != COPSE_OK) {
            printf("ERROR %s\n", copse_err_name(st));
            continue;
        }
        for (size_t i = 0; i < n_ids; i++)
            printf(i ? " %d" : "%d", (int)ids[i]);
        putchar('\t');
        if (print_decode(tok, ids, n_ids, false, &dec, &dec_cap) != 0)
            rc = 1;
        putchar('\t');
        if (print_decode(tok, ids, n_ids, true, &dec, &dec_cap) != 0)
            rc = 1;
        putchar('\t');
        if (print_stream(tok, ids, n_ids) != 0)
            rc = 1;
        putchar('\n');
        fflush(stdout);
    }
    free(line);
    free(text);
    free(dec);
    free(ids);
    copse_model_destroy(model);
    return rc;
}
