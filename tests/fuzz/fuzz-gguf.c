/*
 * fuzz-gguf.c — libFuzzer target for the GGUF reader (core/gguf.c).
 *
 * Opens the input with copse__gguf_open_memory() and, when it parses, walks
 * every kv (array elements included) and every tensor through every accessor
 * and getter, touching each byte the reader hands out so ASan sees any
 * pointer that strays outside the input. Malformed inputs must fail with
 * COPSE_EFORMAT and a message; anything else aborts.
 *
 * Build: CC=clang meson setup build-fuzz -Dfuzz=enabled -Db_sanitize=address,undefined
 *        -Db_lundef=false && ninja -C build-fuzz tests/fuzz-gguf
 * Seeds: COPSE_GGUF_SEED_DIR=corpus build-fuzz/tests/test-gguf writes valid samples.
 * Run:   ./build-fuzz/tests/fuzz-gguf -max_len=4096 corpus
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Aborts (a finding) unless cond holds. */
#define REQUIRE(cond)                                                         \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "fuzz-gguf: %s:%d: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                          \
        }                                                                     \
    } while (0)

/* Sums the bytes of a span (so ASan checks each one) after checking that it
 * lies inside the input. */
static unsigned touch(const void *p, uint64_t n, const uint8_t *base, size_t size)
{
    const uint8_t *b = p;
    REQUIRE(n == 0 || (b >= base && b <= base + size && n <= (uint64_t)(base + size - b)));
    unsigned sum = 0;
    for (uint64_t i = 0; i < n; i++)
        sum += b[i];
    return sum;
}

/* Every typed getter on one key; checks the type rules of gguf.h. */
static void get_all(const copse_gguf *g, const char *key, const copse_gguf_kv *kv)
{
    uint32_t u32;
    uint64_t u64;
    int32_t i32;
    float f;
    bool b;
    copse_str s;
    const copse_gguf_array *arr;
    copse_status st;

    REQUIRE(copse__gguf_find(g, key) == kv);
    REQUIRE(copse__str_eq(kv->key, key));
    st = copse__gguf_get_u32(g, key, &u32);
    REQUIRE(st == COPSE_OK || st == COPSE_EFORMAT);
    st = copse__gguf_get_u64(g, key, &u64);
    REQUIRE(st == COPSE_OK || st == COPSE_EFORMAT);
    if (kv->type == COPSE_GGUF_UINT64)
        REQUIRE(st == COPSE_OK && u64 == kv->v.u64);
    st = copse__gguf_get_i32(g, key, &i32);
    REQUIRE(st == COPSE_OK || st == COPSE_EFORMAT);
    if (kv->type == COPSE_GGUF_INT32 || kv->type == COPSE_GGUF_INT16 || kv->type == COPSE_GGUF_INT8)
        REQUIRE(st == COPSE_OK && i32 == kv->v.i64);
    st = copse__gguf_get_f32(g, key, &f);
    REQUIRE(st == COPSE_OK || st == COPSE_EFORMAT);
    st = copse__gguf_get_bool(g, key, &b);
    REQUIRE((st == COPSE_OK) == (kv->type == COPSE_GGUF_BOOL));
    st = copse__gguf_get_str(g, key, &s);
    REQUIRE((st == COPSE_OK) == (kv->type == COPSE_GGUF_STRING));
    st = copse__gguf_get_arr(g, key, COPSE_GGUF_TYPE_COUNT, &arr);
    REQUIRE((st == COPSE_OK) == (kv->type == COPSE_GGUF_ARRAY));
    if (st == COPSE_OK) {
        REQUIRE(arr == &kv->v.arr);
        st = copse__gguf_get_arr(g, key, arr->type, &arr);
        REQUIRE(st == COPSE_OK);
    }
}

static void walk(const copse_gguf *g, const uint8_t *base, size_t size)
{
    static char name[1024]; /* libFuzzer runs inputs one at a time */
    volatile unsigned sink = 0;
    volatile double fsink = 0;

    REQUIRE(copse__gguf_version(g) == 2 || copse__gguf_version(g) == 3);
    REQUIRE(copse__gguf_file_size(g) == size);
    uint32_t al = copse__gguf_alignment(g);
    REQUIRE(al != 0 && (al & (al - 1)) == 0);
    REQUIRE(copse__gguf_data_offset(g) % al == 0);
    REQUIRE(copse__gguf_kv_at(g, copse__gguf_n_kv(g)) == NULL);
    REQUIRE(copse__gguf_tensor_at(g, copse__gguf_n_tensors(g)) == NULL);
    (void)copse__gguf_find(g, "general.architecture");
    (void)copse__gguf_find_tensor(g, "output.weight");

    for (size_t i = 0; i < copse__gguf_n_kv(g); i++) {
        const copse_gguf_kv *kv = copse__gguf_kv_at(g, i);
        REQUIRE(kv != NULL && kv->type < COPSE_GGUF_TYPE_COUNT);
        REQUIRE(copse__gguf_type_name(kv->type)[0] != '?');
        sink += touch(kv->key.ptr, kv->key.len, base, size);
        if (kv->key.len < sizeof name && !memchr(kv->key.ptr, 0, kv->key.len)) {
            memcpy(name, kv->key.ptr, kv->key.len);
            name[kv->key.len] = '\0';
            get_all(g, name, kv);
        }
        if (kv->type == COPSE_GGUF_STRING)
            sink += touch(kv->v.str.ptr, kv->v.str.len, base, size);
        if (kv->type != COPSE_GGUF_ARRAY)
            continue;
        const copse_gguf_array *arr = &kv->v.arr;
        REQUIRE(arr->type < COPSE_GGUF_TYPE_COUNT);
        if (arr->type == COPSE_GGUF_STRING) {
            REQUIRE(arr->strs != NULL);
            for (uint64_t j = 0; j < arr->n; j++)
                sink += touch(arr->strs[j].ptr, arr->strs[j].len, base, size);
        } else if (arr->type == COPSE_GGUF_ARRAY) {
            REQUIRE(arr->strs == NULL);
            /* Nested arrays: at least their headers are inside the input. */
            sink += touch(arr->data, arr->n ? 12 : 0, base, size);
        } else {
            REQUIRE(arr->strs == NULL);
            for (uint64_t j = 0; j < arr->n; j++) {
                fsink += copse__gguf_arr_f32(arr, j);
                fsink += (double)copse__gguf_arr_i64(arr, j);
            }
        }
    }

    for (size_t i = 0; i < copse__gguf_n_tensors(g); i++) {
        const copse_gguf_tensor *t = copse__gguf_tensor_at(g, i);
        REQUIRE(t != NULL);
        REQUIRE(t->n_dims >= 1 && t->n_dims <= COPSE_GGUF_MAX_DIMS);
        REQUIRE(t->offset % al == 0);
        REQUIRE((const uint8_t *)t->data == base + copse__gguf_data_offset(g) + t->offset);
        for (int d = 0; d < COPSE_GGUF_MAX_DIMS; d++)
            REQUIRE(t->ne[d] >= 1);
        sink += touch(t->name.ptr, t->name.len, base, size);
        sink += touch(t->data, t->nbytes, base, size);
        if (t->name.len < sizeof name && !memchr(t->name.ptr, 0, t->name.len)) {
            memcpy(name, t->name.ptr, t->name.len);
            name[t->name.len] = '\0';
            REQUIRE(copse__gguf_find_tensor(g, name) == t);
        }
    }
    (void)sink;
    (void)fsink;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512];
    copse_gguf *g = NULL;
    err[0] = '\0';
    copse_status st = copse__gguf_open_memory(data, size, &g, err, sizeof err);
    if (st == COPSE_OK) {
        REQUIRE(g != NULL);
        walk(g, data, size);
    } else {
        REQUIRE(st == COPSE_EFORMAT && g == NULL && err[0] != '\0');
    }
    copse__gguf_close(g);
    return 0;
}
