/*
 * gguf-write.c — a streaming GGUF v3 writer.
 */
#include "gguf-write.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "quant.h"

#define WRITE_ALIGNMENT 32u

typedef struct tensor_info {
    char *name;
    uint32_t type;
    uint64_t ne[2];
    uint64_t nbytes;
    uint64_t offset;
} tensor_info;

struct copse_gguf_writer {
    uint8_t *meta; /* serialized key/value pairs */
    size_t meta_len, meta_cap;
    uint64_t n_kv;
    tensor_info *tensors;
    size_t n_tensors, tensors_cap;
    uint64_t data_size;
};

copse_status copse__gguf_writer_create(copse_gguf_writer **out)
{
    *out = calloc(1, sizeof **out);
    return *out ? COPSE_OK : COPSE_ENOMEM;
}

void copse__gguf_writer_destroy(copse_gguf_writer *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n_tensors; i++)
        free(w->tensors[i].name);
    free(w->tensors);
    free(w->meta);
    free(w);
}

/* ---------------------------------------------------------------- serialized metadata */

static copse_status put(copse_gguf_writer *w, const void *p, size_t n)
{
    if (w->meta_len + n > w->meta_cap) {
        size_t cap = w->meta_cap ? w->meta_cap : 4096;
        while (cap < w->meta_len + n)
            cap *= 2;
        uint8_t *m = realloc(w->meta, cap);
        if (!m)
            return COPSE_ENOMEM;
        w->meta = m;
        w->meta_cap = cap;
    }
    memcpy(w->meta + w->meta_len, p, n);
    w->meta_len += n;
    return COPSE_OK;
}

static void le_bytes(uint8_t *b, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        b[i] = (uint8_t)(v >> (8 * i));
}

static copse_status put_uint(copse_gguf_writer *w, uint64_t v, int n)
{
    uint8_t b[8];
    le_bytes(b, v, n);
    return put(w, b, (size_t)n);
}

static copse_status put_str(copse_gguf_writer *w, const char *s, uint64_t len)
{
    copse_status st = put_uint(w, len, 8);
    return st ? st : put(w, s, (size_t)len);
}

static copse_status put_key(copse_gguf_writer *w, const char *key, copse_gguf_type type)
{
    copse_status st = put_str(w, key, strlen(key));
    if (!st)
        st = put_uint(w, (uint64_t)type, 4);
    if (!st)
        w->n_kv++;
    return st;
}

copse_status copse__gguf_writer_add_u32(copse_gguf_writer *w, const char *key, uint32_t v)
{
    copse_status st = put_key(w, key, COPSE_GGUF_UINT32);
    return st ? st : put_uint(w, v, 4);
}

copse_status copse__gguf_writer_add_f32(copse_gguf_writer *w, const char *key, float v)
{
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    copse_status st = put_key(w, key, COPSE_GGUF_FLOAT32);
    return st ? st : put_uint(w, bits, 4);
}

copse_status copse__gguf_writer_add_bool(copse_gguf_writer *w, const char *key, int v)
{
    copse_status st = put_key(w, key, COPSE_GGUF_BOOL);
    return st ? st : put_uint(w, v ? 1 : 0, 1);
}

copse_status copse__gguf_writer_add_str(copse_gguf_writer *w, const char *key, const char *v)
{
    copse_status st = put_key(w, key, COPSE_GGUF_STRING);
    return st ? st : put_str(w, v, strlen(v));
}

/* Bytes of one element of a fixed-size metadata type; 0 for strings/arrays. */
static int scalar_size(copse_gguf_type t)
{
    switch (t) {
    case COPSE_GGUF_UINT8:
    case COPSE_GGUF_INT8:
    case COPSE_GGUF_BOOL:
        return 1;
    case COPSE_GGUF_UINT16:
    case COPSE_GGUF_INT16:
        return 2;
    case COPSE_GGUF_UINT32:
    case COPSE_GGUF_INT32:
    case COPSE_GGUF_FLOAT32:
        return 4;
    case COPSE_GGUF_UINT64:
    case COPSE_GGUF_INT64:
    case COPSE_GGUF_FLOAT64:
        return 8;
    default:
        return 0;
    }
}

copse_status copse__gguf_writer_add_kv(copse_gguf_writer *w, const copse_gguf_kv *kv)
{
    char key[512];
    if (kv->key.len >= sizeof key)
        return COPSE_ERANGE;
    memcpy(key, kv->key.ptr, (size_t)kv->key.len);
    key[kv->key.len] = 0;
    copse_status st = put_key(w, key, kv->type);
    if (st)
        return st;
    int sz = scalar_size(kv->type);
    if (sz) {
        uint64_t v = kv->v.u64;
        if (kv->type == COPSE_GGUF_FLOAT32) {
            float f = (float)kv->v.f64;
            uint32_t b;
            memcpy(&b, &f, sizeof b);
            v = b;
        } else if (kv->type == COPSE_GGUF_FLOAT64) {
            memcpy(&v, &kv->v.f64, sizeof v);
        } else if (kv->type == COPSE_GGUF_INT8 || kv->type == COPSE_GGUF_INT16 || kv->type == COPSE_GGUF_INT32 ||
                   kv->type == COPSE_GGUF_INT64) {
            v = (uint64_t)kv->v.i64;
        }
        return put_uint(w, v, sz);
    }
    if (kv->type == COPSE_GGUF_STRING)
        return put_str(w, kv->v.str.ptr, kv->v.str.len);
    /* array */
    const copse_gguf_array *a = &kv->v.arr;
    if ((st = put_uint(w, (uint64_t)a->type, 4)) || (st = put_uint(w, a->n, 8)))
        return st;
    if (a->type == COPSE_GGUF_STRING) {
        for (uint64_t i = 0; i < a->n && !st; i++)
            st = put_str(w, a->strs[i].ptr, a->strs[i].len);
        return st;
    }
    int esz = scalar_size(a->type);
    if (!esz)
        return COPSE_EUNSUPPORTED; /* nested arrays */
    return put(w, a->data, (size_t)(a->n * (uint64_t)esz)); /* already little-endian in the file */
}

/* ---------------------------------------------------------------- tensors */

copse_status copse__gguf_writer_add_tensor(copse_gguf_writer *w, const char *name, uint32_t type, uint64_t ne0,
                                           uint64_t ne1)
{
    uint64_t row;
    if (!copse__qtype_row_bytes(type, ne0, &row) || ne1 == 0 || row > UINT64_MAX / ne1)
        return COPSE_EINVAL;
    if (w->n_tensors == w->tensors_cap) {
        size_t cap = w->tensors_cap ? 2 * w->tensors_cap : 64;
        tensor_info *t = realloc(w->tensors, cap * sizeof *t);
        if (!t)
            return COPSE_ENOMEM;
        w->tensors = t;
        w->tensors_cap = cap;
    }
    tensor_info *t = &w->tensors[w->n_tensors];
    if (!(t->name = strdup(name)))
        return COPSE_ENOMEM;
    t->type = type;
    t->ne[0] = ne0;
    t->ne[1] = ne1;
    t->nbytes = row * ne1;
    t->offset = w->data_size;
    w->data_size = (w->data_size + t->nbytes + WRITE_ALIGNMENT - 1) / WRITE_ALIGNMENT * WRITE_ALIGNMENT;
    w->n_tensors++;
    return COPSE_OK;
}

/* ---------------------------------------------------------------- the file */

static int write_all(FILE *f, const void *p, size_t n)
{
    return n == 0 || fwrite(p, 1, n, f) == n ? 0 : -1; /* p may be NULL when n == 0 */
}

static int write_uint(FILE *f, uint64_t v, int n)
{
    uint8_t b[8];
    le_bytes(b, v, n);
    return write_all(f, b, (size_t)n);
}

static int write_zeros(FILE *f, uint64_t n)
{
    static const uint8_t zeros[WRITE_ALIGNMENT];
    return n ? write_all(f, zeros, (size_t)n) : 0;
}

copse_status copse__gguf_writer_finish(copse_gguf_writer *w, const char *path, copse_gguf_data_cb data_cb, void *ud,
                                       void (*progress)(uint64_t done, uint64_t total), char *err, size_t err_size)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return copse__errorf(err, err_size, COPSE_EIO, "%s: %s", path, strerror(errno));
    copse_status st = COPSE_OK;
    enum { CHUNK = 1 << 20 };
    uint8_t *buf = malloc(CHUNK);
    uint64_t pos = 0;
    int bad = !buf;
    bad = bad || write_uint(f, COPSE_GGUF_MAGIC, 4) || write_uint(f, 3, 4) || write_uint(f, w->n_tensors, 8) ||
          write_uint(f, w->n_kv, 8) || write_all(f, w->meta, w->meta_len);
    pos = 24 + w->meta_len;
    for (size_t i = 0; i < w->n_tensors && !bad; i++) {
        const tensor_info *t = &w->tensors[i];
        size_t len = strlen(t->name);
        bad = write_uint(f, len, 8) || write_all(f, t->name, len) || write_uint(f, t->ne[1] > 1 ? 2 : 1, 4) ||
              write_uint(f, t->ne[0], 8) || (t->ne[1] > 1 && write_uint(f, t->ne[1], 8)) ||
              write_uint(f, t->type, 4) || write_uint(f, t->offset, 8);
        pos += 8 + len + 4 + 8 + (t->ne[1] > 1 ? 8 : 0) + 4 + 8;
    }
    if (!bad)
        bad = write_zeros(f, (WRITE_ALIGNMENT - pos % WRITE_ALIGNMENT) % WRITE_ALIGNMENT);
    uint64_t done = 0;
    for (size_t i = 0; i < w->n_tensors && !bad && st == COPSE_OK; i++) {
        const tensor_info *t = &w->tensors[i];
        /* whole blocks per chunk, so data_cb never sees a split block */
        const size_t step = CHUNK - CHUNK % copse__qtype_traits(t->type)->type_size;
        for (uint64_t off = 0; off < t->nbytes && !bad; off += step) {
            size_t n = (size_t)(t->nbytes - off < step ? t->nbytes - off : step);
            if ((st = data_cb(ud, i, off, buf, n)) != COPSE_OK)
                break;
            bad = write_all(f, buf, n);
            done += n;
            if (progress)
                progress(done, w->data_size);
        }
        if (!bad && st == COPSE_OK)
            bad = write_zeros(f, (WRITE_ALIGNMENT - t->nbytes % WRITE_ALIGNMENT) % WRITE_ALIGNMENT);
    }
    free(buf);
    if (fclose(f) != 0)
        bad = 1;
    if (st != COPSE_OK) {
        remove(path);
        return copse__errorf(err, err_size, st, "%s: tensor data: %s", path, copse_strerror(st));
    }
    if (bad) {
        remove(path);
        return copse__errorf(err, err_size, COPSE_EIO, "%s: write failed: %s", path, strerror(errno));
    }
    return COPSE_OK;
}
