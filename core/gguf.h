/*
 * gguf.h — reader for GGUF v2 and v3 files (internal).
 *
 * The file is memory-mapped read-only (or, for fuzzing and tests, a caller's
 * buffer is borrowed). Everything is validated when the file is opened: every
 * count, length, offset, type and shape is checked against the file size
 * before it is used, so after copse__gguf_open() succeeds all accessors are
 * plain lookups that cannot read outside the mapping.
 *
 * Strings (copse_str) point into the mapping and are NOT NUL-terminated.
 * They live as long as the copse_gguf.
 *
 * Threading: a copse_gguf is immutable after open; any number of threads may
 * read it at once.
 */
#ifndef COPSE_CORE_GGUF_H
#define COPSE_CORE_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "copse.h"

#define COPSE_GGUF_MAGIC 0x46554747u /* "GGUF" little-endian */
#define COPSE_GGUF_DEFAULT_ALIGNMENT 32u
#define COPSE_GGUF_MAX_DIMS 4

/* Metadata value types, numbered as in the GGUF specification. */
typedef enum copse_gguf_type {
    COPSE_GGUF_UINT8 = 0,
    COPSE_GGUF_INT8 = 1,
    COPSE_GGUF_UINT16 = 2,
    COPSE_GGUF_INT16 = 3,
    COPSE_GGUF_UINT32 = 4,
    COPSE_GGUF_INT32 = 5,
    COPSE_GGUF_FLOAT32 = 6,
    COPSE_GGUF_BOOL = 7,
    COPSE_GGUF_STRING = 8,
    COPSE_GGUF_ARRAY = 9,
    COPSE_GGUF_UINT64 = 10,
    COPSE_GGUF_INT64 = 11,
    COPSE_GGUF_FLOAT64 = 12,
    COPSE_GGUF_TYPE_COUNT
} copse_gguf_type;

typedef struct copse_str {
    const char *ptr; /* into the mapping, not NUL-terminated */
    uint64_t len;
} copse_str;

/* One metadata value. Arrays are not nested in practice but the format allows
 * it; nested arrays are validated and exposed as raw element spans. */
typedef struct copse_gguf_array {
    copse_gguf_type type;   /* element type */
    uint64_t n;             /* element count */
    const uint8_t *data;    /* first element in the mapping (fixed-size types) */
    const copse_str *strs;  /* for STRING arrays: n entries, built at open; else NULL */
} copse_gguf_array;

typedef struct copse_gguf_kv {
    copse_str key;
    copse_gguf_type type;
    union {
        uint64_t u64;  /* UINT8/16/32/64 and BOOL (0/1), zero-extended */
        int64_t i64;   /* INT8/16/32/64, sign-extended */
        double f64;    /* FLOAT32/64 */
        copse_str str; /* STRING */
        copse_gguf_array arr;
    } v;
} copse_gguf_kv;

typedef struct copse_gguf_tensor {
    copse_str name;
    uint32_t n_dims;
    uint64_t ne[COPSE_GGUF_MAX_DIMS]; /* ne[0] is the innermost (row) length; unused dims are 1 */
    uint32_t type;                    /* a copse_qtype (see quant.h) */
    uint64_t offset;                  /* relative to the start of the data section */
    uint64_t nbytes;                  /* validated: data + nbytes <= end of file */
    const void *data;                 /* into the mapping */
} copse_gguf_tensor;

typedef struct copse_gguf copse_gguf;

/* Open and validate a file. On failure returns COPSE_EIO (cannot open/map),
 * COPSE_EFORMAT (malformed; err names the field, e.g.
 * "tensor 'blk.3.attn_q.weight': data offset 123 past end of file (size 456)")
 * or COPSE_ENOMEM. err may be NULL. */
copse_status copse__gguf_open(const char *path, copse_gguf **out, char *err, size_t err_size);

/* The same over a caller's buffer, which must outlive the copse_gguf. */
copse_status copse__gguf_open_memory(const void *data, size_t size, copse_gguf **out, char *err,
                                     size_t err_size);

void copse__gguf_close(copse_gguf *g);

uint32_t copse__gguf_version(const copse_gguf *g);
uint64_t copse__gguf_file_size(const copse_gguf *g);
uint32_t copse__gguf_alignment(const copse_gguf *g);
uint64_t copse__gguf_data_offset(const copse_gguf *g); /* start of the tensor data section */

size_t copse__gguf_n_kv(const copse_gguf *g);
const copse_gguf_kv *copse__gguf_kv_at(const copse_gguf *g, size_t i);
/* NULL if absent. Key comparison is exact (byte-wise). */
const copse_gguf_kv *copse__gguf_find(const copse_gguf *g, const char *key);

/* Typed getters. COPSE_ENOTFOUND if absent; COPSE_EFORMAT if present with an
 * incompatible type or (for integers) a value that does not fit. Integer
 * getters accept any integer type; get_f32 accepts floats and integers. */
copse_status copse__gguf_get_u32(const copse_gguf *g, const char *key, uint32_t *out);
copse_status copse__gguf_get_u64(const copse_gguf *g, const char *key, uint64_t *out);
copse_status copse__gguf_get_i32(const copse_gguf *g, const char *key, int32_t *out);
copse_status copse__gguf_get_f32(const copse_gguf *g, const char *key, float *out);
copse_status copse__gguf_get_bool(const copse_gguf *g, const char *key, bool *out);
copse_status copse__gguf_get_str(const copse_gguf *g, const char *key, copse_str *out);
/* The array under key, which must have element type `type` (or any type if
 * type == COPSE_GGUF_TYPE_COUNT). */
copse_status copse__gguf_get_arr(const copse_gguf *g, const char *key, copse_gguf_type type,
                                 const copse_gguf_array **out);

size_t copse__gguf_n_tensors(const copse_gguf *g);
const copse_gguf_tensor *copse__gguf_tensor_at(const copse_gguf *g, size_t i);
const copse_gguf_tensor *copse__gguf_find_tensor(const copse_gguf *g, const char *name);

/* Element i of a fixed-size numeric array, converted. The caller guarantees i < arr->n. */
float copse__gguf_arr_f32(const copse_gguf_array *arr, uint64_t i);
int64_t copse__gguf_arr_i64(const copse_gguf_array *arr, uint64_t i);

/* Name of a metadata type ("uint32", "string", ...), "?" if out of range. */
const char *copse__gguf_type_name(uint32_t type);

/* True if s equals the NUL-terminated string c. */
bool copse__str_eq(copse_str s, const char *c);

#endif /* COPSE_CORE_GGUF_H */
