/*
 * gguf-writer.h — a small in-memory GGUF writer for tests.
 *
 * Builds GGUF files byte by byte so tests can make both valid files and
 * precisely malformed ones. Nothing is validated here: the writer writes what
 * it is told, and the header counts and magic/version can be overwritten
 * before gw_finish() to produce broken headers.
 *
 *   gguf_writer w;
 *   gw_init(&w, 3);
 *   gw_kv_str(&w, "general.architecture", "llama");
 *   gw_tensor(&w, "tok_embd.weight", 2, (uint64_t[]){64, 10}, COPSE_Q_Q4_0);
 *   size_t size;
 *   uint8_t *file = gw_finish(&w, &size);   // malloc'd; w is freed
 *
 * Layout produced: header, kvs (in call order), tensor infos (in call order),
 * zero padding to w.alignment, tensor data. gw_tensor() places each tensor's
 * data at the next multiple of w.alignment in the data section and fills it
 * with gw_pattern(); no padding follows the last tensor, so every proper
 * prefix of a file is missing some tensor data. Add all kvs before tensors if
 * you use gw_pos().
 *
 * Test-only code: allocation failure aborts.
 */
#ifndef COPSE_TEST_GGUF_WRITER_H
#define COPSE_TEST_GGUF_WRITER_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "quant.h"

/* ---------------------------------------------------------------- byte buffer */

typedef struct gw_buf {
    uint8_t *p;
    size_t n, cap;
} gw_buf;

static inline void gw_bytes(gw_buf *b, const void *p, size_t n)
{
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n)
            cap *= 2;
        b->p = realloc(b->p, cap);
        if (!b->p) {
            fprintf(stderr, "gguf-writer: out of memory\n");
            abort();
        }
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->n, p, n);
    b->n += n;
}

static inline void gw_u8(gw_buf *b, uint8_t v)
{
    gw_bytes(b, &v, 1);
}

static inline void gw_u16(gw_buf *b, uint16_t v)
{
    uint8_t x[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    gw_bytes(b, x, 2);
}

static inline void gw_u32(gw_buf *b, uint32_t v)
{
    uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    gw_bytes(b, x, 4);
}

static inline void gw_u64(gw_buf *b, uint64_t v)
{
    gw_u32(b, (uint32_t)v);
    gw_u32(b, (uint32_t)(v >> 32));
}

static inline void gw_f32(gw_buf *b, float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    gw_u32(b, u);
}

static inline void gw_f64(gw_buf *b, double d)
{
    uint64_t u;
    memcpy(&u, &d, 8);
    gw_u64(b, u);
}

/* A GGUF string: u64 length, bytes. */
static inline void gw_strn(gw_buf *b, const char *s, size_t n)
{
    gw_u64(b, n);
    gw_bytes(b, s, n);
}

static inline void gw_str(gw_buf *b, const char *s)
{
    gw_strn(b, s, strlen(s));
}

static inline void gw_zeros(gw_buf *b, size_t n)
{
    static const uint8_t z[64];
    while (n) {
        size_t k = n < sizeof z ? n : sizeof z;
        gw_bytes(b, z, k);
        n -= k;
    }
}

/* ---------------------------------------------------------------- writer */

typedef struct gguf_writer {
    uint32_t magic;     /* COPSE_GGUF_MAGIC */
    uint32_t version;
    uint64_t n_kv;      /* counted by the helpers; may be overwritten before gw_finish */
    uint64_t n_tensors; /* likewise */
    uint32_t alignment; /* placement of tensor data; does NOT write general.alignment */
    gw_buf kv, ti, data;
} gguf_writer;

#define GW_HEADER_BYTES 24

static inline void gw_init(gguf_writer *w, uint32_t version)
{
    memset(w, 0, sizeof *w);
    w->magic = COPSE_GGUF_MAGIC;
    w->version = version;
    w->alignment = COPSE_GGUF_DEFAULT_ALIGNMENT;
}

static inline void gw_free(gguf_writer *w)
{
    free(w->kv.p);
    free(w->ti.p);
    free(w->data.p);
    memset(w, 0, sizeof *w);
}

/* Absolute file offset of the next byte written to w->kv (or, after the kvs,
 * to w->ti). */
static inline size_t gw_pos(const gguf_writer *w)
{
    return GW_HEADER_BYTES + w->kv.n + w->ti.n;
}

/* Key and value type of a new kv; the caller writes the value into w->kv. */
static inline gw_buf *gw_key(gguf_writer *w, const char *key, uint32_t type)
{
    gw_str(&w->kv, key);
    gw_u32(&w->kv, type);
    w->n_kv++;
    return &w->kv;
}

static inline void gw_kv_u8(gguf_writer *w, const char *k, uint8_t v) { gw_u8(gw_key(w, k, COPSE_GGUF_UINT8), v); }
static inline void gw_kv_i8(gguf_writer *w, const char *k, int8_t v) { gw_u8(gw_key(w, k, COPSE_GGUF_INT8), (uint8_t)v); }
static inline void gw_kv_u16(gguf_writer *w, const char *k, uint16_t v) { gw_u16(gw_key(w, k, COPSE_GGUF_UINT16), v); }
static inline void gw_kv_i16(gguf_writer *w, const char *k, int16_t v) { gw_u16(gw_key(w, k, COPSE_GGUF_INT16), (uint16_t)v); }
static inline void gw_kv_u32(gguf_writer *w, const char *k, uint32_t v) { gw_u32(gw_key(w, k, COPSE_GGUF_UINT32), v); }
static inline void gw_kv_i32(gguf_writer *w, const char *k, int32_t v) { gw_u32(gw_key(w, k, COPSE_GGUF_INT32), (uint32_t)v); }
static inline void gw_kv_u64(gguf_writer *w, const char *k, uint64_t v) { gw_u64(gw_key(w, k, COPSE_GGUF_UINT64), v); }
static inline void gw_kv_i64(gguf_writer *w, const char *k, int64_t v) { gw_u64(gw_key(w, k, COPSE_GGUF_INT64), (uint64_t)v); }
static inline void gw_kv_f32(gguf_writer *w, const char *k, float v) { gw_f32(gw_key(w, k, COPSE_GGUF_FLOAT32), v); }
static inline void gw_kv_f64(gguf_writer *w, const char *k, double v) { gw_f64(gw_key(w, k, COPSE_GGUF_FLOAT64), v); }
static inline void gw_kv_bool(gguf_writer *w, const char *k, int v) { gw_u8(gw_key(w, k, COPSE_GGUF_BOOL), (uint8_t)v); }
static inline void gw_kv_str(gguf_writer *w, const char *k, const char *v) { gw_str(gw_key(w, k, COPSE_GGUF_STRING), v); }

/* Array header (element type, count); the caller writes the n elements into w->kv. */
static inline gw_buf *gw_kv_arr(gguf_writer *w, const char *key, uint32_t elem_type, uint64_t n)
{
    gw_buf *b = gw_key(w, key, COPSE_GGUF_ARRAY);
    gw_u32(b, elem_type);
    gw_u64(b, n);
    return b;
}

static inline void gw_kv_arr_str(gguf_writer *w, const char *key, const char *const *s, size_t n)
{
    gw_buf *b = gw_kv_arr(w, key, COPSE_GGUF_STRING, n);
    for (size_t i = 0; i < n; i++)
        gw_str(b, s[i]);
}

/* A tensor info with whatever values are given (no data is added). */
static inline void gw_tensor_info(gguf_writer *w, const char *name, uint32_t n_dims,
                                  const uint64_t *ne, uint32_t type, uint64_t offset)
{
    gw_str(&w->ti, name);
    gw_u32(&w->ti, n_dims);
    for (uint32_t d = 0; d < n_dims; d++)
        gw_u64(&w->ti, ne[d]);
    gw_u32(&w->ti, type);
    gw_u64(&w->ti, offset);
    w->n_tensors++;
}

/* The byte the writer puts at data-section offset i. */
static inline uint8_t gw_pattern(uint64_t i)
{
    return (uint8_t)(i * 131u + (i >> 8) * 7u + 1u);
}

/* Appends n pattern bytes to the data section. */
static inline void gw_data(gguf_writer *w, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++)
        gw_u8(&w->data, gw_pattern(w->data.n));
}

/* A valid tensor: info plus pattern data at the next aligned offset. Returns
 * the offset (relative to the data section). ne has n_dims entries. */
static inline uint64_t gw_tensor(gguf_writer *w, const char *name, uint32_t n_dims,
                                 const uint64_t *ne, uint32_t type)
{
    uint64_t n = 1, nbytes = 0;
    for (uint32_t d = 1; d < n_dims; d++)
        n *= ne[d];
    if (!copse__qtype_row_bytes(type, ne[0], &nbytes)) {
        fprintf(stderr, "gguf-writer: bad tensor %s\n", name);
        abort();
    }
    nbytes *= n;
    size_t pad = (w->alignment - w->data.n % w->alignment) % w->alignment;
    gw_zeros(&w->data, pad);
    uint64_t offset = w->data.n;
    gw_data(w, nbytes);
    gw_tensor_info(w, name, n_dims, ne, type, offset);
    return offset;
}

/* Absolute file offset where the data section will start. */
static inline size_t gw_data_start(const gguf_writer *w)
{
    size_t end = gw_pos(w);
    return (end + w->alignment - 1) / w->alignment * w->alignment;
}

/* The file: header, kvs, tensor infos, padding, data. Returns a malloc'd
 * buffer of *size bytes and frees the writer's buffers. */
static inline uint8_t *gw_finish(gguf_writer *w, size_t *size)
{
    gw_buf f = {0};
    gw_u32(&f, w->magic);
    gw_u32(&f, w->version);
    gw_u64(&f, w->n_tensors);
    gw_u64(&f, w->n_kv);
    gw_bytes(&f, w->kv.p, w->kv.n);
    gw_bytes(&f, w->ti.p, w->ti.n);
    if (w->data.n) {
        gw_zeros(&f, gw_data_start(w) - f.n);
        gw_bytes(&f, w->data.p, w->data.n);
    }
    *size = f.n;
    gw_free(w);
    return f.p;
}

#endif /* COPSE_TEST_GGUF_WRITER_H */
