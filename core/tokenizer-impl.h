/*
 * tokenizer-impl.h — what the tokenizer's source files share (internal to
 * core/tokenizer*.c; nothing else includes it).
 *
 *   tokenizer.c        vocabulary, validation, special tokens, encode driver
 *   tokenizer-decode.c token bytes, decode and the streaming decoder
 *   tokenizer-bpe.c    byte-level BPE: pre-tokenizer regexes and the merge loop
 *   tokenizer-spm.c    SentencePiece BPE: the score-ordered merge loop
 *
 * Everything in struct copse_tokenizer is written once in create and only
 * read afterwards; per-call working memory lives in a tok_scratch owned by
 * the calling encode.
 */
#ifndef COPSE_CORE_TOKENIZER_IMPL_H
#define COPSE_CORE_TOKENIZER_IMPL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "tokenizer.h"

/* Inputs longer than this are refused (COPSE_ERANGE): symbol indices are int32. */
#define TOK_MAX_INPUT ((size_t)1 << 30)

/* At most this many pre-tokenizer regexes, applied one after another. */
#define TOK_MAX_REGEX 6

/* Per-token flag bits (tok->flags). */
enum {
    TOK_FLAG_EOG = 1 << 0,      /* ends generation */
    TOK_FLAG_MERGEABLE = 1 << 1, /* may be the result of a merge / a plain text piece */
};

/* (left, right) -> (rank, result) for byte-level BPE merges. */
typedef struct tok_merge {
    int32_t left, right; /* -1 marks an empty slot */
    int32_t rank, result;
} tok_merge;

/* Special-token trie: edges (node, byte) -> child in an open-addressed table. */
typedef struct tok_trie_edge {
    uint32_t node; /* UINT32_MAX marks an empty slot */
    uint32_t child;
    uint8_t byte;
} tok_trie_edge;

struct copse_tokenizer {
    copse_vocab_type type;
    const char *pre_name; /* static string */
    int32_t n_vocab;
    const copse_str *pieces; /* borrowed from the GGUF file */
    uint8_t *kinds;          /* copse_token_kind per token */
    uint8_t *flags;          /* TOK_FLAG_* per token */
    float *scores;           /* SPM: per-token score; NULL for BPE */
    size_t max_piece_len;

    /* piece -> id (open addressing, power-of-two size; -1 empty) */
    int32_t *piece_ht;
    size_t piece_mask;

    /* special-token trie; node 0 is the root; node_token[n] is the token that
     * ends at node n or -1 */
    tok_trie_edge *trie_edges;
    size_t trie_mask;
    int32_t *node_token;
    uint32_t n_nodes;

    /* BPE: merges and byte alphabet */
    tok_merge *merges;
    size_t merge_mask;
    int32_t byte_token[256]; /* BPE: token of byte b's alphabet char; SPM: <0xXX> token */
    pcre2_code *re[TOK_MAX_REGEX];
    int n_re;
    bool ignore_merges; /* a piece that is itself a token is not merged (llama3) */

    copse_token bos, eos, eot, eom, unk, pad;
    bool add_bos, add_eos, add_space_prefix;
};

/* ---------------------------------------------------------------- output sink */

/* Collects ids up to cap and counts all of them. */
typedef struct tok_sink {
    copse_token *ids;
    size_t cap;
    size_t n;
} tok_sink;

static inline void tok_sink_push(tok_sink *s, copse_token id)
{
    if (s->n < s->cap)
        s->ids[s->n] = id;
    s->n++;
}

/* ---------------------------------------------------------------- merge queue */

/* A candidate merge of symbols left and right. Lower prio pops first, ties
 * by smaller left index (the leftmost pair wins, as in both references). */
typedef struct tok_cand {
    double prio;
    int32_t left, right;
    int32_t check_a, check_b; /* staleness check, meaning depends on the family */
    int32_t result;
} tok_cand;

/* Per-encode working memory, grown on demand and freed at the end of encode. */
typedef struct tok_scratch {
    void *syms;
    size_t syms_bytes;
    tok_cand *heap;
    size_t heap_n, heap_cap;
    char *buf;
    size_t buf_cap;
} tok_scratch;

/* Make sure scratch buffer *p (capacity *cap bytes) holds need bytes. */
copse_status copse__tok_reserve(void **p, size_t *cap, size_t need);
copse_status copse__tok_heap_push(tok_scratch *sc, const tok_cand *c);
bool copse__tok_heap_pop(tok_scratch *sc, tok_cand *out);

/* ---------------------------------------------------------------- shared lookups */

/* Token id of an exact piece, -1 if none (same as copse__tokenizer_find). */
copse_token copse__tok_lookup(const copse_tokenizer *tok, const char *s, size_t len);

/* U+FFFD, which replaces each maximal invalid UTF-8 subpart. */
#define TOK_REPLACEMENT "\xef\xbf\xbd"
#define TOK_REPLACEMENT_LEN 3

/* Classify the sequence at s[0..n) (n >= 1). Returns its length if it is a
 * complete well-formed character; otherwise 0, with *bad the length of the
 * maximal invalid subpart (>= 1) and *truncated set when that subpart is a
 * well-formed prefix cut short by the end of the input. */
size_t copse__tok_utf8_char(const uint8_t *s, size_t n, size_t *bad, bool *truncated);

/* Length of the UTF-8 sequence that starts with byte c (1 for invalid leads). */
static inline size_t tok_utf8_len(uint8_t c)
{
    if (c < 0x80)
        return 1;
    if (c >= 0xF0 && c <= 0xF4)
        return 4;
    if (c >= 0xE0 && c <= 0xEF)
        return 3;
    if (c >= 0xC2 && c <= 0xDF)
        return 2;
    return 1;
}

/* ---------------------------------------------------------------- families */

/* Byte-level BPE set-up (merges, byte alphabet, regexes) and encode of one
 * raw-text fragment (valid UTF-8). */
copse_status copse__bpe_init(copse_tokenizer *tok, const copse_gguf *g, char *err, size_t err_size);
void copse__bpe_free(copse_tokenizer *tok);
copse_status copse__bpe_encode(const copse_tokenizer *tok, const char *text, size_t len,
                               tok_scratch *sc, tok_sink *out);
/* The byte that the UTF-8 character at s[0..n) stands for in the byte-level
 * alphabet, or -1 if it is not one of the 256 (or not well-formed); *clen
 * receives the character's length (>= 1). */
int copse__bpe_char_byte(const char *s, size_t n, size_t *clen);

/* SentencePiece encode of one raw-text fragment; prefix_space adds U+2581. */
copse_status copse__spm_encode(const copse_tokenizer *tok, const char *text, size_t len,
                               bool prefix_space, tok_scratch *sc, tok_sink *out);

#endif /* COPSE_CORE_TOKENIZER_IMPL_H */
