/*
 * tokenizer.h — tokenizers built from GGUF metadata (internal).
 *
 * Two families:
 *   - byte-level BPE (tokenizer.ggml.model = "gpt2"): text is split by the
 *     pre-tokenizer regex chosen from tokenizer.ggml.pre (PCRE2, Unicode
 *     properties), each piece's bytes mapped to the GPT-2 byte alphabet, then
 *     merged by tokenizer.ggml.merges rank.
 *   - SentencePiece BPE (tokenizer.ggml.model = "llama"): spaces become U+2581,
 *     pairs merge by tokenizer.ggml.scores, unknown bytes fall back to <0xXX>.
 * Special/control tokens (tokenizer.ggml.token_type) are matched in the text
 * only with COPSE_TOKENIZE_PARSE_SPECIAL.
 *
 * Threading: a copse_tokenizer is immutable after creation and may be used by
 * many threads at once; encode/decode keep their state on the caller's side.
 */
#ifndef COPSE_CORE_TOKENIZER_H
#define COPSE_CORE_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "copse.h"
#include "gguf.h"

typedef enum copse_vocab_type {
    COPSE_VOCAB_BPE, /* byte-level BPE, "gpt2" */
    COPSE_VOCAB_SPM, /* SentencePiece BPE, "llama" */
} copse_vocab_type;

/* Token attributes, from tokenizer.ggml.token_type (numbered as in GGUF). */
typedef enum copse_token_kind {
    COPSE_TOKEN_UNDEFINED = 0,
    COPSE_TOKEN_NORMAL = 1,
    COPSE_TOKEN_UNKNOWN = 2,
    COPSE_TOKEN_CONTROL = 3,
    COPSE_TOKEN_USER_DEFINED = 4,
    COPSE_TOKEN_UNUSED = 5,
    COPSE_TOKEN_BYTE = 6,
} copse_token_kind;

typedef struct copse_tokenizer copse_tokenizer;

/* Build from a validated GGUF file (which must outlive the tokenizer: pieces
 * are borrowed). COPSE_EFORMAT/COPSE_EUNSUPPORTED with err naming the key. */
copse_status copse__tokenizer_create(const copse_gguf *g, copse_tokenizer **out, char *err,
                                     size_t err_size);
void copse__tokenizer_destroy(copse_tokenizer *tok);

copse_vocab_type copse__tokenizer_type(const copse_tokenizer *tok);
const char *copse__tokenizer_pre_name(const copse_tokenizer *tok); /* e.g. "smollm", "default" */
int32_t copse__tokenizer_n_vocab(const copse_tokenizer *tok);
copse_token copse__tokenizer_bos(const copse_tokenizer *tok); /* -1 if none */
copse_token copse__tokenizer_eos(const copse_tokenizer *tok); /* -1 if none */
copse_token copse__tokenizer_eot(const copse_tokenizer *tok); /* end of turn, -1 if none */
copse_token copse__tokenizer_unk(const copse_tokenizer *tok);
copse_token copse__tokenizer_pad(const copse_tokenizer *tok);
bool copse__tokenizer_add_bos(const copse_tokenizer *tok);
bool copse__tokenizer_add_eos(const copse_tokenizer *tok);
copse_token_kind copse__tokenizer_kind(const copse_tokenizer *tok, copse_token id);
/* True for tokens that end generation (EOS, EOT, and control tokens the model marks so). */
bool copse__tokenizer_is_eog(const copse_tokenizer *tok, copse_token id);
/* The end-of-generation tokens in id order, at most cap of them; returns
 * how many were written. */
int32_t copse__tokenizer_eog_list(const copse_tokenizer *tok, copse_token *out, int32_t cap);

/* The stored piece of a token (as in the vocabulary: "Ġthe", "▁the", "<0x0A>").
 * id must be in range. */
copse_str copse__tokenizer_piece(const copse_tokenizer *tok, copse_token id);

/* Find a token by its exact piece; -1 if none. */
copse_token copse__tokenizer_find(const copse_tokenizer *tok, const char *piece, size_t len);

/* Encode text[0..len) (any bytes). flags: COPSE_TOKENIZE_*. Writes up to cap
 * ids; *n_out is the number needed; COPSE_ENOSPACE if it exceeds cap. */
copse_status copse__tokenizer_encode(const copse_tokenizer *tok, const char *text, size_t len,
                                     int flags, copse_token *ids, size_t cap, size_t *n_out);

/* The bytes a single token stands for when decoded (byte-level mapping undone,
 * U+2581 -> space, <0xXX> -> that byte). Control tokens give "" unless
 * render_special. Writes up to cap bytes; returns the number needed. */
size_t copse__tokenizer_token_bytes(const copse_tokenizer *tok, copse_token id, bool render_special,
                                    char *out, size_t cap);

/* Decode a whole id list into out (up to cap bytes); *n_out the number needed.
 * SPM: the leading space the encoder added is removed, as the reference does. */
copse_status copse__tokenizer_decode(const copse_tokenizer *tok, const copse_token *ids, size_t n,
                                     bool render_special, char *out, size_t cap, size_t *n_out);

/* Streaming decoder: feed one token at a time, get only complete UTF-8
 * characters back; bytes of a partial multi-byte sequence are held until the
 * sequence completes (or proves invalid, then they are emitted as U+FFFD). */
typedef struct copse_detok_stream {
    uint8_t pending[8];
    uint32_t n_pending;
    bool at_start; /* SPM: strip the leading space of the first piece */
} copse_detok_stream;

void copse__detok_stream_init(const copse_tokenizer *tok, copse_detok_stream *s);
/* Returns the number of bytes written to out (cap >= 64 always suffices for one token
 * of up to 56 bytes; longer pieces need more); COPSE_ENOSPACE as a negative value if not. */
int copse__detok_stream_push(const copse_tokenizer *tok, copse_detok_stream *s, copse_token id,
                             bool render_special, char *out, size_t cap);
/* Flush held bytes at end of stream (as U+FFFD). Returns bytes written. */
int copse__detok_stream_flush(copse_detok_stream *s, char *out, size_t cap);

#endif /* COPSE_CORE_TOKENIZER_H */
