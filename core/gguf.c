/*
 * gguf.c — reader for GGUF v2 and v3 files.
 *
 * Layout of a GGUF file (all integers little-endian):
 *
 *   header       magic "GGUF" (u32), version (u32), tensor count (u64), kv count (u64)
 *   kv pairs     key (string), value type (u32), value
 *   tensor infos name (string), n_dims (u32), ne[n_dims] (u64), type (u32), offset (u64)
 *   padding      to general.alignment (default 32)
 *   tensor data  each tensor at data start + offset; offsets are multiples of the alignment
 *
 * A string is a u64 byte length followed by the bytes (no NUL). An array value
 * is an element type (u32), an element count (u64) and the elements.
 *
 * Everything is checked once, in copse__gguf_open*(): every length and count is
 * compared with the bytes that remain BEFORE anything is allocated or read, so
 * a hostile header cannot make us allocate much more than the file's own size
 * nor read outside it. After a successful open the accessors are plain lookups.
 * Errors name the field at fault ("kv 17 'tokenizer.ggml.tokens': string 5
 * length 99999 past end of file ...").
 */
#include "gguf.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bytes.h"
#include "error.h"
#include "quant.h"

#define MAX_ARRAY_DEPTH 8 /* nested arrays deeper than this are refused */
#define NAME_SHOWN 64     /* bytes of a key or tensor name shown in messages */

/* Smallest encodings, used to bound counts by the bytes that remain. */
#define MIN_KV_BYTES 13     /* key length (8) + type (4) + 1-byte value */
#define MIN_TENSOR_BYTES 32 /* name length (8) + n_dims (4) + ne[0] (8) + type (4) + offset (8) */
#define MIN_STRING_BYTES 8  /* the length field */
#define MIN_ARRAY_BYTES 12  /* element type (4) + count (8) */

/* A hash index over names: open addressing, slots hold entry index + 1. */
typedef struct name_index {
    size_t *slots;
    size_t mask; /* slot count - 1; slot count is a power of two */
} name_index;

struct copse_gguf {
    const uint8_t *base; /* the mapping or the borrowed buffer */
    uint64_t size;
    bool mapped;         /* base came from mmap and is unmapped on close */
    uint32_t version;
    uint32_t alignment;
    uint64_t data_offset;
    size_t n_kv;
    copse_gguf_kv *kvs;
    size_t n_tensors;
    copse_gguf_tensor *tensors;
    name_index kv_index;
    name_index tensor_index;
};

/* ---------------------------------------------------------------- small helpers */

/* Byte size of one element of a fixed-size metadata type; 0 for STRING/ARRAY. */
static const uint8_t type_sizes[COPSE_GGUF_TYPE_COUNT] = {
    [COPSE_GGUF_UINT8] = 1,  [COPSE_GGUF_INT8] = 1,    [COPSE_GGUF_UINT16] = 2,
    [COPSE_GGUF_INT16] = 2,  [COPSE_GGUF_UINT32] = 4,  [COPSE_GGUF_INT32] = 4,
    [COPSE_GGUF_FLOAT32] = 4, [COPSE_GGUF_BOOL] = 1,   [COPSE_GGUF_STRING] = 0,
    [COPSE_GGUF_ARRAY] = 0,  [COPSE_GGUF_UINT64] = 8,  [COPSE_GGUF_INT64] = 8,
    [COPSE_GGUF_FLOAT64] = 8,
};

static const char *const type_names[COPSE_GGUF_TYPE_COUNT] = {
    [COPSE_GGUF_UINT8] = "uint8",    [COPSE_GGUF_INT8] = "int8",
    [COPSE_GGUF_UINT16] = "uint16",  [COPSE_GGUF_INT16] = "int16",
    [COPSE_GGUF_UINT32] = "uint32",  [COPSE_GGUF_INT32] = "int32",
    [COPSE_GGUF_FLOAT32] = "float32", [COPSE_GGUF_BOOL] = "bool",
    [COPSE_GGUF_STRING] = "string",  [COPSE_GGUF_ARRAY] = "array",
    [COPSE_GGUF_UINT64] = "uint64",  [COPSE_GGUF_INT64] = "int64",
    [COPSE_GGUF_FLOAT64] = "float64",
};

const char *copse__gguf_type_name(uint32_t type)
{
    return type < COPSE_GGUF_TYPE_COUNT ? type_names[type] : "?";
}

bool copse__str_eq(copse_str s, const char *c)
{
    size_t n = strlen(c);
    return s.len == n && (n == 0 || memcmp(s.ptr, c, n) == 0);
}

/* Writes s into buf as a quoted-safe excerpt: at most NAME_SHOWN bytes, with
 * non-printable bytes, quotes and backslashes as \xNN, and "..." if cut. */
static const char *show_name(char *buf, size_t buf_size, copse_str s)
{
    size_t o = 0;
    uint64_t i;
    for (i = 0; i < s.len && i < NAME_SHOWN; i++) {
        unsigned char c = (unsigned char)s.ptr[i];
        if (o + 5 >= buf_size)
            break;
        if (c < 0x20 || c >= 0x7f || c == '\'' || c == '\\')
            o += (size_t)snprintf(buf + o, buf_size - o, "\\x%02x", c);
        else
            buf[o++] = (char)c;
    }
    if (i < s.len && o + 4 < buf_size) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o] = '\0';
    return buf;
}

/* FNV-1a, 64-bit. */
static uint64_t hash_bytes(const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* ---------------------------------------------------------------- name index */

static bool index_init(name_index *ix, size_t n)
{
    size_t cap = 8;
    while (cap < n * 2) /* n is bounded by the file size, so this cannot overflow */
        cap *= 2;
    ix->slots = calloc(cap, sizeof *ix->slots);
    ix->mask = cap - 1;
    return ix->slots != NULL;
}

/* Index of the entry whose name is (p, n), or SIZE_MAX. name_at returns the
 * name of entry i. */
static size_t index_lookup(const name_index *ix, const void *p, size_t n,
                           copse_str (*name_at)(const copse_gguf *, size_t), const copse_gguf *g)
{
    if (!ix->slots)
        return SIZE_MAX;
    for (size_t s = (size_t)hash_bytes(p, n) & ix->mask;; s = (s + 1) & ix->mask) {
        size_t e = ix->slots[s];
        if (e == 0)
            return SIZE_MAX;
        copse_str name = name_at(g, e - 1);
        if (name.len == n && (n == 0 || memcmp(name.ptr, p, n) == 0))
            return e - 1;
    }
}

/* Adds entry i named `name`; returns the index of an earlier entry with the
 * same name (and adds nothing) or SIZE_MAX. */
static size_t index_insert(name_index *ix, copse_str name, size_t i,
                           copse_str (*name_at)(const copse_gguf *, size_t), const copse_gguf *g)
{
    size_t s = (size_t)hash_bytes(name.ptr, (size_t)name.len) & ix->mask;
    for (;; s = (s + 1) & ix->mask) {
        size_t e = ix->slots[s];
        if (e == 0)
            break;
        copse_str other = name_at(g, e - 1);
        if (other.len == name.len && (name.len == 0 || memcmp(other.ptr, name.ptr, name.len) == 0))
            return e - 1;
    }
    ix->slots[s] = i + 1;
    return SIZE_MAX;
}

static copse_str kv_name(const copse_gguf *g, size_t i)
{
    return g->kvs[i].key;
}

static copse_str tensor_name(const copse_gguf *g, size_t i)
{
    return g->tensors[i].name;
}

/* ---------------------------------------------------------------- parser */

/* The read cursor, plus what is being read (for messages). */
typedef struct parser {
    const uint8_t *base;
    uint64_t size;
    uint64_t pos;
    char ctx[256]; /* "header", "kv 3 'general.name'", "tensor 'output.weight'" */
    char *err;
    size_t err_size;
} parser;

/* Fails with COPSE_EFORMAT: "<ctx>: <message>". */
static copse_status fail(parser *p, const char *fmt, ...) COPSE_PRINTF(2, 3);

static copse_status fail(parser *p, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return copse__errorf(p->err, p->err_size, COPSE_EFORMAT, "%s: %s", p->ctx, msg);
}

static uint64_t remaining(const parser *p)
{
    return p->size - p->pos;
}

/* Takes n bytes at the cursor, or fails naming `what`. */
static copse_status take(parser *p, uint64_t n, const char *what, const uint8_t **out)
{
    if (n > remaining(p))
        return fail(p, "%s (%llu bytes at offset %llu) past end of file (size %llu)", what,
                    (unsigned long long)n, (unsigned long long)p->pos,
                    (unsigned long long)p->size);
    *out = p->base + p->pos;
    p->pos += n;
    return COPSE_OK;
}

static copse_status read_u32(parser *p, const char *what, uint32_t *v)
{
    const uint8_t *b = NULL;
    copse_status st = take(p, 4, what, &b);
    if (st == COPSE_OK)
        *v = copse__rd_u32(b);
    return st;
}

static copse_status read_u64(parser *p, const char *what, uint64_t *v)
{
    const uint8_t *b = NULL;
    copse_status st = take(p, 8, what, &b);
    if (st == COPSE_OK)
        *v = copse__rd_u64(b);
    return st;
}

/* A string: u64 length, then the bytes. `what` names it ("key", "string 5"). */
static copse_status read_str(parser *p, const char *what, copse_str *s)
{
    char w[64];
    uint64_t len;
    snprintf(w, sizeof w, "%s length", what);
    copse_status st = read_u64(p, w, &len);
    if (st != COPSE_OK)
        return st;
    if (len > remaining(p))
        return fail(p, "%s length %llu past end of file (offset %llu, size %llu)", what,
                    (unsigned long long)len, (unsigned long long)p->pos,
                    (unsigned long long)p->size);
    s->ptr = (const char *)(p->base + p->pos);
    s->len = len;
    p->pos += len;
    return COPSE_OK;
}

/* Checks that the n bools at b are 0 or 1 (the spec calls anything else invalid). */
static copse_status check_bools(parser *p, const uint8_t *b, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++)
        if (b[i] > 1)
            return fail(p, "bool %llu has value %u (must be 0 or 1)", (unsigned long long)i,
                        b[i]);
    return COPSE_OK;
}

/* An array value (element type, count, elements) at the cursor, validated and
 * stepped over. depth is the number of enclosing arrays. For a top-level
 * array of strings the string table is built (malloc'd into arr->strs; the
 * caller owns it even on failure). */
static copse_status read_array(parser *p, copse_gguf_array *arr, int depth)
{
    uint32_t type;
    uint64_t n;
    copse_status st = read_u32(p, "array element type", &type);
    if (st != COPSE_OK)
        return st;
    if (type >= COPSE_GGUF_TYPE_COUNT)
        return fail(p, "unknown array element type %u", type);
    if ((st = read_u64(p, "array element count", &n)) != COPSE_OK)
        return st;
    arr->type = (copse_gguf_type)type;
    arr->n = n;
    arr->data = p->base + p->pos;
    arr->strs = NULL;

    if (type_sizes[type] != 0) {
        uint64_t size = type_sizes[type];
        if (n > remaining(p) / size)
            return fail(p,
                        "array of %llu %s (%llu bytes each) past end of file "
                        "(offset %llu, size %llu)",
                        (unsigned long long)n, type_names[type], (unsigned long long)size,
                        (unsigned long long)p->pos, (unsigned long long)p->size);
        if (type == COPSE_GGUF_BOOL && (st = check_bools(p, arr->data, n)) != COPSE_OK)
            return st;
        p->pos += n * size;
        return COPSE_OK;
    }

    if (type == COPSE_GGUF_STRING) {
        if (n > remaining(p) / MIN_STRING_BYTES)
            return fail(p, "array of %llu strings past end of file (offset %llu, size %llu)",
                        (unsigned long long)n, (unsigned long long)p->pos,
                        (unsigned long long)p->size);
        copse_str *strs = NULL;
        if (depth == 0) {
            /* n <= file size / 8, so the product cannot overflow a size_t
             * that can hold the file size. */
            strs = malloc(n ? (size_t)n * sizeof *strs : 1);
            if (!strs)
                return copse__errorf(p->err, p->err_size, COPSE_ENOMEM,
                                     "%s: out of memory for %llu strings", p->ctx,
                                     (unsigned long long)n);
            arr->strs = strs;
        }
        for (uint64_t i = 0; i < n; i++) {
            char what[40];
            copse_str s;
            snprintf(what, sizeof what, "string %llu", (unsigned long long)i);
            if ((st = read_str(p, what, &s)) != COPSE_OK)
                return st;
            if (strs)
                strs[i] = s;
        }
        return COPSE_OK;
    }

    /* Nested arrays: each element is itself an array. */
    if (depth + 1 >= MAX_ARRAY_DEPTH)
        return fail(p, "arrays nested deeper than %d", MAX_ARRAY_DEPTH);
    if (n > remaining(p) / MIN_ARRAY_BYTES)
        return fail(p, "array of %llu arrays past end of file (offset %llu, size %llu)",
                    (unsigned long long)n, (unsigned long long)p->pos,
                    (unsigned long long)p->size);
    size_t ctx_len = strlen(p->ctx);
    for (uint64_t i = 0; i < n; i++) {
        copse_gguf_array inner;
        snprintf(p->ctx + ctx_len, sizeof p->ctx - ctx_len, ": array %llu", (unsigned long long)i);
        if ((st = read_array(p, &inner, depth + 1)) != COPSE_OK)
            return st;
    }
    p->ctx[ctx_len] = '\0';
    return COPSE_OK;
}

/* One scalar or array value of `type` into kv->v. */
static copse_status read_value(parser *p, copse_gguf_kv *kv)
{
    const uint8_t *b = NULL;
    copse_status st;
    uint32_t type = kv->type;

    if (type == COPSE_GGUF_STRING)
        return read_str(p, "value string", &kv->v.str);
    if (type == COPSE_GGUF_ARRAY)
        return read_array(p, &kv->v.arr, 0);

    if ((st = take(p, type_sizes[type], "value", &b)) != COPSE_OK)
        return st;
    switch (type) {
    case COPSE_GGUF_UINT8: kv->v.u64 = b[0]; break;
    case COPSE_GGUF_INT8: kv->v.i64 = (int8_t)b[0]; break;
    case COPSE_GGUF_UINT16: kv->v.u64 = copse__rd_u16(b); break;
    case COPSE_GGUF_INT16: kv->v.i64 = (int16_t)copse__rd_u16(b); break;
    case COPSE_GGUF_UINT32: kv->v.u64 = copse__rd_u32(b); break;
    case COPSE_GGUF_INT32: kv->v.i64 = (int32_t)copse__rd_u32(b); break;
    case COPSE_GGUF_UINT64: kv->v.u64 = copse__rd_u64(b); break;
    case COPSE_GGUF_INT64: kv->v.i64 = (int64_t)copse__rd_u64(b); break;
    case COPSE_GGUF_FLOAT32: kv->v.f64 = copse__f32_from_bits(copse__rd_u32(b)); break;
    case COPSE_GGUF_FLOAT64: kv->v.f64 = copse__f64_from_bits(copse__rd_u64(b)); break;
    case COPSE_GGUF_BOOL:
        if (b[0] > 1)
            return fail(p, "bool value %u (must be 0 or 1)", b[0]);
        kv->v.u64 = b[0];
        break;
    default: assert(0); break;
    }
    return COPSE_OK;
}

static copse_status read_header(parser *p, copse_gguf *g, uint64_t *n_tensors, uint64_t *n_kv)
{
    uint32_t magic, version;
    copse_status st;
    snprintf(p->ctx, sizeof p->ctx, "header");
    if ((st = read_u32(p, "magic", &magic)) != COPSE_OK)
        return st;
    if (magic != COPSE_GGUF_MAGIC)
        return fail(p, "bad magic 0x%08x (not a GGUF file)", magic);
    if ((st = read_u32(p, "version", &version)) != COPSE_OK)
        return st;
    if (version == 1)
        return fail(p, "GGUF version 1 is not supported (only versions 2 and 3)");
    if (version == 0x02000000u || version == 0x03000000u)
        return fail(p, "big-endian GGUF (version field 0x%08x) is not supported", version);
    if (version != 2 && version != 3)
        return fail(p, "unknown GGUF version %u (supported: 2 and 3)", version);
    g->version = version;
    if ((st = read_u64(p, "tensor count", n_tensors)) != COPSE_OK ||
        (st = read_u64(p, "kv count", n_kv)) != COPSE_OK)
        return st;
    /* Fail fast on counts the file cannot hold, before anything is allocated. */
    if (*n_kv > remaining(p) / MIN_KV_BYTES)
        return fail(p, "kv count %llu too large for file size %llu", (unsigned long long)*n_kv,
                    (unsigned long long)p->size);
    if (*n_tensors > remaining(p) / MIN_TENSOR_BYTES)
        return fail(p, "tensor count %llu too large for file size %llu",
                    (unsigned long long)*n_tensors, (unsigned long long)p->size);
    return COPSE_OK;
}

static copse_status read_kvs(parser *p, copse_gguf *g)
{
    copse_status st;
    for (size_t i = 0; i < g->n_kv; i++) {
        copse_gguf_kv *kv = &g->kvs[i];
        char shown[NAME_SHOWN * 4 + 8];
        uint32_t type;

        snprintf(p->ctx, sizeof p->ctx, "kv %zu", i);
        if ((st = read_str(p, "key", &kv->key)) != COPSE_OK)
            return st;
        snprintf(p->ctx, sizeof p->ctx, "kv %zu '%s'", i,
                 show_name(shown, sizeof shown, kv->key));
        size_t first = index_insert(&g->kv_index, kv->key, i, kv_name, g);
        if (first != SIZE_MAX)
            return fail(p, "duplicate key (first at kv %zu)", first);
        if ((st = read_u32(p, "value type", &type)) != COPSE_OK)
            return st;
        if (type >= COPSE_GGUF_TYPE_COUNT)
            return fail(p, "unknown value type %u", type);
        kv->type = (copse_gguf_type)type;
        if ((st = read_value(p, kv)) != COPSE_OK)
            return st;
    }
    return COPSE_OK;
}

/* general.alignment, if present: a uint32 that is a nonzero power of two. */
static copse_status read_alignment(parser *p, copse_gguf *g)
{
    g->alignment = COPSE_GGUF_DEFAULT_ALIGNMENT;
    size_t i = index_lookup(&g->kv_index, "general.alignment", 17, kv_name, g);
    if (i == SIZE_MAX)
        return COPSE_OK;
    const copse_gguf_kv *kv = &g->kvs[i];
    snprintf(p->ctx, sizeof p->ctx, "kv %zu 'general.alignment'", i);
    if (kv->type != COPSE_GGUF_UINT32)
        return fail(p, "type %s, must be uint32", type_names[kv->type]);
    uint64_t a = kv->v.u64;
    if (a == 0 || (a & (a - 1)) != 0)
        return fail(p, "%llu is not a nonzero power of two", (unsigned long long)a);
    g->alignment = (uint32_t)a;
    return COPSE_OK;
}

static copse_status read_tensor_info(parser *p, copse_gguf *g, size_t i)
{
    copse_gguf_tensor *t = &g->tensors[i];
    char shown[NAME_SHOWN * 4 + 8];
    copse_status st;

    snprintf(p->ctx, sizeof p->ctx, "tensor %zu", i);
    if ((st = read_str(p, "name", &t->name)) != COPSE_OK)
        return st;
    snprintf(p->ctx, sizeof p->ctx, "tensor '%s'", show_name(shown, sizeof shown, t->name));
    size_t first = index_insert(&g->tensor_index, t->name, i, tensor_name, g);
    if (first != SIZE_MAX)
        return fail(p, "duplicate tensor name (tensors %zu and %zu)", first, i);

    if ((st = read_u32(p, "n_dims", &t->n_dims)) != COPSE_OK)
        return st;
    if (t->n_dims < 1 || t->n_dims > COPSE_GGUF_MAX_DIMS)
        return fail(p, "n_dims %u out of range [1, %d]", t->n_dims, COPSE_GGUF_MAX_DIMS);
    uint64_t n_elems = 1;
    for (uint32_t d = 0; d < COPSE_GGUF_MAX_DIMS; d++) {
        t->ne[d] = 1;
        if (d >= t->n_dims)
            continue;
        char what[16];
        snprintf(what, sizeof what, "ne[%u]", d);
        if ((st = read_u64(p, what, &t->ne[d])) != COPSE_OK)
            return st;
        if (t->ne[d] == 0)
            return fail(p, "ne[%u] is 0", d);
        /* ggml counts elements in int64_t, so the product must fit one. */
        if (t->ne[d] > (uint64_t)INT64_MAX / n_elems)
            return fail(p, "element count overflows (ne[%u] = %llu)", d,
                        (unsigned long long)t->ne[d]);
        n_elems *= t->ne[d];
    }
    if ((st = read_u32(p, "type", &t->type)) != COPSE_OK)
        return st;
    const copse_qtype_traits *tr = copse__qtype_traits(t->type);
    if (!tr)
        return fail(p, "unknown tensor type %u", t->type);
    uint64_t row_bytes;
    if (t->ne[0] % tr->block_size != 0)
        return fail(p, "ne[0] = %llu is not a multiple of the %s block size %u",
                    (unsigned long long)t->ne[0], tr->name, tr->block_size);
    if (!copse__qtype_row_bytes(t->type, t->ne[0], &row_bytes) ||
        n_elems / t->ne[0] > UINT64_MAX / row_bytes)
        return fail(p, "byte size overflows");
    t->nbytes = row_bytes * (n_elems / t->ne[0]);
    if ((st = read_u64(p, "data offset", &t->offset)) != COPSE_OK)
        return st;
    if (t->offset % g->alignment != 0)
        return fail(p, "data offset %llu is not a multiple of the alignment %u",
                    (unsigned long long)t->offset, g->alignment);
    return COPSE_OK;
}

/* Orders tensor spans by offset (for the overlap check). */
typedef struct span {
    uint64_t begin, end;
    size_t i;
} span;

static int span_cmp(const void *a, const void *b)
{
    const span *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

/* Every tensor's data inside the file, none overlapping another. */
static copse_status check_tensor_data(parser *p, copse_gguf *g)
{
    char shown[NAME_SHOWN * 4 + 8], shown2[NAME_SHOWN * 4 + 8];
    uint64_t room = g->data_offset <= g->size ? g->size - g->data_offset : 0;
    for (size_t i = 0; i < g->n_tensors; i++) {
        copse_gguf_tensor *t = &g->tensors[i];
        snprintf(p->ctx, sizeof p->ctx, "tensor '%s'", show_name(shown, sizeof shown, t->name));
        if (t->offset > room || t->nbytes > room - t->offset)
            return fail(p,
                        "data offset %llu + %llu bytes past end of file "
                        "(data section at %llu, size %llu)",
                        (unsigned long long)t->offset, (unsigned long long)t->nbytes,
                        (unsigned long long)g->data_offset, (unsigned long long)g->size);
        t->data = p->base + g->data_offset + t->offset;
    }
    if (g->n_tensors < 2)
        return COPSE_OK;

    span *spans = malloc(g->n_tensors * sizeof *spans);
    if (!spans)
        return copse__errorf(p->err, p->err_size, COPSE_ENOMEM, "out of memory");
    for (size_t i = 0; i < g->n_tensors; i++)
        spans[i] = (span){g->tensors[i].offset, g->tensors[i].offset + g->tensors[i].nbytes, i};
    qsort(spans, g->n_tensors, sizeof *spans, span_cmp);
    copse_status st = COPSE_OK;
    for (size_t k = 1; k < g->n_tensors && st == COPSE_OK; k++) {
        if (spans[k].begin < spans[k - 1].end) {
            snprintf(p->ctx, sizeof p->ctx, "tensor '%s'",
                     show_name(shown, sizeof shown, g->tensors[spans[k].i].name));
            st = fail(p, "data [%llu, %llu) overlaps tensor '%s' [%llu, %llu)",
                      (unsigned long long)spans[k].begin, (unsigned long long)spans[k].end,
                      show_name(shown2, sizeof shown2, g->tensors[spans[k - 1].i].name),
                      (unsigned long long)spans[k - 1].begin,
                      (unsigned long long)spans[k - 1].end);
        }
    }
    free(spans);
    return st;
}

/* Parses and validates the whole file held in g->base[0..g->size). */
static copse_status parse(copse_gguf *g, char *err, size_t err_size)
{
    parser p = {.base = g->base, .size = g->size, .err = err, .err_size = err_size};
    uint64_t n_tensors, n_kv;
    copse_status st;

    if ((st = read_header(&p, g, &n_tensors, &n_kv)) != COPSE_OK)
        return st;

    /* The counts are bounded by the file size (read_header), so these
     * allocations are at most a small multiple of it. */
    g->n_kv = (size_t)n_kv;
    g->kvs = calloc(g->n_kv ? g->n_kv : 1, sizeof *g->kvs);
    if (!g->kvs || !index_init(&g->kv_index, g->n_kv))
        return copse__errorf(err, err_size, COPSE_ENOMEM, "out of memory for %zu kvs", g->n_kv);
    if ((st = read_kvs(&p, g)) != COPSE_OK)
        return st;
    if ((st = read_alignment(&p, g)) != COPSE_OK)
        return st;

    snprintf(p.ctx, sizeof p.ctx, "header");
    if (n_tensors > remaining(&p) / MIN_TENSOR_BYTES)
        return fail(&p, "tensor count %llu too large for the %llu bytes after the kvs",
                    (unsigned long long)n_tensors, (unsigned long long)remaining(&p));
    g->n_tensors = (size_t)n_tensors;
    g->tensors = calloc(g->n_tensors ? g->n_tensors : 1, sizeof *g->tensors);
    if (!g->tensors || !index_init(&g->tensor_index, g->n_tensors))
        return copse__errorf(err, err_size, COPSE_ENOMEM, "out of memory for %zu tensors",
                             g->n_tensors);
    for (size_t i = 0; i < g->n_tensors; i++)
        if ((st = read_tensor_info(&p, g, i)) != COPSE_OK)
            return st;

    /* The data section starts at the next multiple of the alignment; pos is
     * at most the file size, so this cannot overflow. */
    g->data_offset = (p.pos + g->alignment - 1) / g->alignment * g->alignment;
    return check_tensor_data(&p, g);
}

/* ---------------------------------------------------------------- open / close */

static const uint8_t empty_file[1]; /* base for empty inputs, so no NULL arithmetic */

copse_status copse__gguf_open_memory(const void *data, size_t size, copse_gguf **out, char *err,
                                     size_t err_size)
{
    assert(out && (data || size == 0));
    *out = NULL;
    copse_gguf *g = calloc(1, sizeof *g);
    if (!g)
        return copse__errorf(err, err_size, COPSE_ENOMEM, "out of memory");
    g->base = size ? data : empty_file;
    g->size = size;
    copse_status st = parse(g, err, err_size);
    if (st != COPSE_OK)
        goto fail;
    *out = g;
    return COPSE_OK;
fail:
    copse__gguf_close(g);
    return st;
}

copse_status copse__gguf_open(const char *path, copse_gguf **out, char *err, size_t err_size)
{
    assert(path && out);
    *out = NULL;
    copse_status st;
    copse_gguf *g = NULL;
    struct stat sb;

    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        st = copse__errorf(err, err_size, COPSE_EIO, "%s: cannot open: %s", path, strerror(errno));
        goto fail;
    }
    if (fstat(fd, &sb) != 0) {
        st = copse__errorf(err, err_size, COPSE_EIO, "%s: cannot stat: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(sb.st_mode)) {
        st = copse__errorf(err, err_size, COPSE_EIO, "%s: not a regular file", path);
        goto fail;
    }
    if ((uint64_t)sb.st_size > SIZE_MAX) {
        st = copse__errorf(err, err_size, COPSE_EIO, "%s: file too large to map (%lld bytes)",
                           path, (long long)sb.st_size);
        goto fail;
    }
    g = calloc(1, sizeof *g);
    if (!g) {
        st = copse__errorf(err, err_size, COPSE_ENOMEM, "out of memory");
        goto fail;
    }
    g->size = (uint64_t)sb.st_size;
    g->base = empty_file;
    if (g->size > 0) {
        void *m = mmap(NULL, (size_t)g->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            st = copse__errorf(err, err_size, COPSE_EIO, "%s: cannot mmap: %s", path,
                               strerror(errno));
            goto fail;
        }
        g->base = m;
        g->mapped = true;
    }
    close(fd);
    fd = -1;

    if ((st = parse(g, err, err_size)) != COPSE_OK) {
        /* Prefix the path so the message says which file was malformed. */
        if (err && err_size > 0) {
            char msg[768];
            snprintf(msg, sizeof msg, "%s", err);
            copse__errorf(err, err_size, st, "%s: %s", path, msg);
        }
        goto fail;
    }
    *out = g;
    return COPSE_OK;
fail:
    if (fd >= 0)
        close(fd);
    copse__gguf_close(g);
    return st;
}

void copse__gguf_close(copse_gguf *g)
{
    if (!g)
        return;
    if (g->kvs) {
        for (size_t i = 0; i < g->n_kv; i++)
            if (g->kvs[i].type == COPSE_GGUF_ARRAY)
                free((void *)g->kvs[i].v.arr.strs);
        free(g->kvs);
    }
    free(g->tensors);
    free(g->kv_index.slots);
    free(g->tensor_index.slots);
    if (g->mapped)
        munmap((void *)g->base, (size_t)g->size);
    free(g);
}

/* ---------------------------------------------------------------- accessors */

uint32_t copse__gguf_version(const copse_gguf *g)
{
    return g->version;
}

uint64_t copse__gguf_file_size(const copse_gguf *g)
{
    return g->size;
}

uint32_t copse__gguf_alignment(const copse_gguf *g)
{
    return g->alignment;
}

uint64_t copse__gguf_data_offset(const copse_gguf *g)
{
    return g->data_offset;
}

size_t copse__gguf_n_kv(const copse_gguf *g)
{
    return g->n_kv;
}

const copse_gguf_kv *copse__gguf_kv_at(const copse_gguf *g, size_t i)
{
    return i < g->n_kv ? &g->kvs[i] : NULL;
}

const copse_gguf_kv *copse__gguf_find(const copse_gguf *g, const char *key)
{
    size_t i = index_lookup(&g->kv_index, key, strlen(key), kv_name, g);
    return i == SIZE_MAX ? NULL : &g->kvs[i];
}

size_t copse__gguf_n_tensors(const copse_gguf *g)
{
    return g->n_tensors;
}

const copse_gguf_tensor *copse__gguf_tensor_at(const copse_gguf *g, size_t i)
{
    return i < g->n_tensors ? &g->tensors[i] : NULL;
}

const copse_gguf_tensor *copse__gguf_find_tensor(const copse_gguf *g, const char *name)
{
    size_t i = index_lookup(&g->tensor_index, name, strlen(name), tensor_name, g);
    return i == SIZE_MAX ? NULL : &g->tensors[i];
}

/* ---------------------------------------------------------------- typed getters */

static bool is_unsigned(copse_gguf_type t)
{
    return t == COPSE_GGUF_UINT8 || t == COPSE_GGUF_UINT16 || t == COPSE_GGUF_UINT32 ||
           t == COPSE_GGUF_UINT64;
}

static bool is_signed(copse_gguf_type t)
{
    return t == COPSE_GGUF_INT8 || t == COPSE_GGUF_INT16 || t == COPSE_GGUF_INT32 ||
           t == COPSE_GGUF_INT64;
}

/* The integer under key, as a sign and magnitude that covers both u64 and i64. */
static copse_status get_int(const copse_gguf *g, const char *key, bool *neg, uint64_t *mag)
{
    const copse_gguf_kv *kv = copse__gguf_find(g, key);
    if (!kv)
        return COPSE_ENOTFOUND;
    if (is_unsigned(kv->type)) {
        *neg = false;
        *mag = kv->v.u64;
        return COPSE_OK;
    }
    if (is_signed(kv->type)) {
        *neg = kv->v.i64 < 0;
        *mag = *neg ? 0 - (uint64_t)kv->v.i64 : (uint64_t)kv->v.i64;
        return COPSE_OK;
    }
    return COPSE_EFORMAT;
}

copse_status copse__gguf_get_u32(const copse_gguf *g, const char *key, uint32_t *out)
{
    bool neg;
    uint64_t mag;
    copse_status st = get_int(g, key, &neg, &mag);
    if (st != COPSE_OK)
        return st;
    if (neg || mag > UINT32_MAX)
        return COPSE_EFORMAT;
    *out = (uint32_t)mag;
    return COPSE_OK;
}

copse_status copse__gguf_get_u64(const copse_gguf *g, const char *key, uint64_t *out)
{
    bool neg;
    uint64_t mag;
    copse_status st = get_int(g, key, &neg, &mag);
    if (st != COPSE_OK)
        return st;
    if (neg)
        return COPSE_EFORMAT;
    *out = mag;
    return COPSE_OK;
}

copse_status copse__gguf_get_i32(const copse_gguf *g, const char *key, int32_t *out)
{
    bool neg;
    uint64_t mag;
    copse_status st = get_int(g, key, &neg, &mag);
    if (st != COPSE_OK)
        return st;
    if (neg ? mag > (uint64_t)INT32_MAX + 1 : mag > INT32_MAX)
        return COPSE_EFORMAT;
    *out = neg ? (int32_t)(0 - (int64_t)(mag - 1) - 1) : (int32_t)mag;
    return COPSE_OK;
}

copse_status copse__gguf_get_f32(const copse_gguf *g, const char *key, float *out)
{
    const copse_gguf_kv *kv = copse__gguf_find(g, key);
    if (!kv)
        return COPSE_ENOTFOUND;
    if (kv->type == COPSE_GGUF_FLOAT32 || kv->type == COPSE_GGUF_FLOAT64) {
        double d = kv->v.f64;
        /* A finite double beyond float range does not fit; inf and NaN pass. */
        if (d == d && (d > FLT_MAX || d < -FLT_MAX) && d - d == 0.0)
            return COPSE_EFORMAT;
        *out = (float)d;
        return COPSE_OK;
    }
    if (is_unsigned(kv->type)) {
        *out = (float)kv->v.u64;
        return COPSE_OK;
    }
    if (is_signed(kv->type)) {
        *out = (float)kv->v.i64;
        return COPSE_OK;
    }
    return COPSE_EFORMAT;
}

copse_status copse__gguf_get_bool(const copse_gguf *g, const char *key, bool *out)
{
    const copse_gguf_kv *kv = copse__gguf_find(g, key);
    if (!kv)
        return COPSE_ENOTFOUND;
    if (kv->type != COPSE_GGUF_BOOL)
        return COPSE_EFORMAT;
    *out = kv->v.u64 != 0;
    return COPSE_OK;
}

copse_status copse__gguf_get_str(const copse_gguf *g, const char *key, copse_str *out)
{
    const copse_gguf_kv *kv = copse__gguf_find(g, key);
    if (!kv)
        return COPSE_ENOTFOUND;
    if (kv->type != COPSE_GGUF_STRING)
        return COPSE_EFORMAT;
    *out = kv->v.str;
    return COPSE_OK;
}

copse_status copse__gguf_get_arr(const copse_gguf *g, const char *key, copse_gguf_type type,
                                 const copse_gguf_array **out)
{
    const copse_gguf_kv *kv = copse__gguf_find(g, key);
    if (!kv)
        return COPSE_ENOTFOUND;
    if (kv->type != COPSE_GGUF_ARRAY || (type != COPSE_GGUF_TYPE_COUNT && kv->v.arr.type != type))
        return COPSE_EFORMAT;
    *out = &kv->v.arr;
    return COPSE_OK;
}

/* ---------------------------------------------------------------- array elements */

/* A float truncated toward zero, saturated to the int64 range (NaN gives 0),
 * since an out-of-range float-to-integer conversion is undefined in C. */
static int64_t f64_to_i64(double d)
{
    if (d != d)
        return 0;
    if (d >= 9223372036854775808.0)
        return INT64_MAX;
    if (d < -9223372036854775808.0)
        return INT64_MIN;
    return (int64_t)d;
}

float copse__gguf_arr_f32(const copse_gguf_array *arr, uint64_t i)
{
    const uint8_t *d = arr->data;
    assert(i < arr->n);
    switch (arr->type) {
    case COPSE_GGUF_FLOAT32: return copse__f32_from_bits(copse__rd_u32(d + 4 * i));
    case COPSE_GGUF_FLOAT64: return (float)copse__f64_from_bits(copse__rd_u64(d + 8 * i));
    case COPSE_GGUF_UINT64: return (float)copse__rd_u64(d + 8 * i);
    default: return (float)copse__gguf_arr_i64(arr, i);
    }
}

int64_t copse__gguf_arr_i64(const copse_gguf_array *arr, uint64_t i)
{
    const uint8_t *d = arr->data;
    assert(i < arr->n);
    switch (arr->type) {
    case COPSE_GGUF_UINT8:
    case COPSE_GGUF_BOOL: return d[i];
    case COPSE_GGUF_INT8: return (int8_t)d[i];
    case COPSE_GGUF_UINT16: return copse__rd_u16(d + 2 * i);
    case COPSE_GGUF_INT16: return (int16_t)copse__rd_u16(d + 2 * i);
    case COPSE_GGUF_UINT32: return copse__rd_u32(d + 4 * i);
    case COPSE_GGUF_INT32: return (int32_t)copse__rd_u32(d + 4 * i);
    case COPSE_GGUF_UINT64:
    case COPSE_GGUF_INT64: return (int64_t)copse__rd_u64(d + 8 * i);
    case COPSE_GGUF_FLOAT32: return f64_to_i64(copse__f32_from_bits(copse__rd_u32(d + 4 * i)));
    case COPSE_GGUF_FLOAT64: return f64_to_i64(copse__f64_from_bits(copse__rd_u64(d + 8 * i)));
    default: assert(!"copse__gguf_arr_i64: not a numeric array"); return 0;
    }
}
