/*
 * copse.h — the one public header of copse.
 *
 * Opaque handles, status codes, parameter structs and prototypes; nothing else.
 *
 * Conventions
 *   - Functions return a copse_status: 0 is success, negative values are errors.
 *     copse_strerror() gives a sentence, copse_err_name() the symbolic name.
 *   - Constructors take an out-parameter and, where the failure needs
 *     explaining (a malformed file, say), an error buffer that receives a
 *     NUL-terminated message naming what was wrong. The buffer may be NULL.
 *   - Every object has one lifecycle pair: copse_<object>_create/_destroy.
 *     _destroy accepts NULL.
 *   - Strings are UTF-8 and passed with explicit lengths where they may hold NUL.
 */
#ifndef COPSE_H
#define COPSE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(COPSE_BUILDING) && defined(__GNUC__)
#define COPSE_API __attribute__((visibility("default")))
#else
#define COPSE_API
#endif

/* ---------------------------------------------------------------- status */

/* X(name, value, message): the one list every status-related table is made from. */
#define COPSE_STATUS_MAP(X)                                                   \
    X(OK, 0, "success")                                                       \
    X(EINVAL, -1, "invalid argument")                                         \
    X(ENOMEM, -2, "out of memory")                                            \
    X(EIO, -3, "input/output error")                                          \
    X(EFORMAT, -4, "malformed input")                                         \
    X(EUNSUPPORTED, -5, "not supported")                                      \
    X(ENOTFOUND, -6, "not found")                                             \
    X(ERANGE, -7, "value out of range")                                       \
    X(ENOSPACE, -8, "output buffer too small")                                \
    X(ENODEV, -9, "no such device or backend")                                \
    X(EBUSY, -10, "busy, try again later")

typedef enum copse_status {
#define COPSE_STATUS_ENUM_(name, value, msg) COPSE_##name = (value),
    COPSE_STATUS_MAP(COPSE_STATUS_ENUM_)
#undef COPSE_STATUS_ENUM_
} copse_status;

/* A sentence for a status ("malformed input"); "unknown status" otherwise. */
COPSE_API const char *copse_strerror(int status);
/* The symbolic name of a status ("COPSE_EFORMAT"); "COPSE_UNKNOWN" otherwise. */
COPSE_API const char *copse_err_name(int status);

/* The library version as "MAJOR.MINOR.PATCH". */
COPSE_API const char *copse_version(void);

/* ---------------------------------------------------------------- model */

typedef int32_t copse_token;

/* A loaded GGUF model: its metadata, weights (views into the mapped file) and
 * tokenizer. Immutable after creation; safe to share between threads. */
typedef struct copse_model copse_model;

typedef struct copse_model_params {
    int use_mmap;        /* 1: map the file read-only (default); 0: read it into memory */
    int load_tokenizer;  /* 1: build the tokenizer from the file's metadata (default) */
} copse_model_params;

COPSE_API copse_model_params copse_model_default_params(void);

/* Open and validate a GGUF file. On failure *out is NULL and err (if not NULL)
 * names the offending field. */
COPSE_API copse_status copse_model_create(const char *path, const copse_model_params *params,
                                          copse_model **out, char *err, size_t err_size);
COPSE_API void copse_model_destroy(copse_model *model);

/* ---------------------------------------------------------------- tokens */

enum {
    COPSE_TOKENIZE_ADD_SPECIAL = 1 << 0,   /* add BOS/EOS as the model's flags say */
    COPSE_TOKENIZE_PARSE_SPECIAL = 1 << 1, /* text like "<|im_start|>" becomes its special token */
};

/* Encode UTF-8 text (any bytes: invalid sequences are handled as the model's
 * tokenizer does) into ids[0..cap). *n_out receives the number of tokens
 * needed; COPSE_ENOSPACE if that exceeds cap. */
COPSE_API copse_status copse_tokenize(const copse_model *model, const char *text, size_t len,
                                      int flags, copse_token *ids, size_t cap, size_t *n_out);

/* Decode ids into bytes (UTF-8 for well-formed output). *n_out receives the
 * number of bytes needed; COPSE_ENOSPACE if that exceeds cap. Control tokens
 * are rendered as their text only when render_special is non-zero. */
COPSE_API copse_status copse_detokenize(const copse_model *model, const copse_token *ids, size_t n,
                                        int render_special, char *out, size_t cap, size_t *n_out);

COPSE_API int32_t copse_model_n_vocab(const copse_model *model);
COPSE_API copse_token copse_model_bos(const copse_model *model); /* -1 if none */
COPSE_API copse_token copse_model_eos(const copse_model *model); /* -1 if none */

#ifdef __cplusplus
}
#endif

#endif /* COPSE_H */
