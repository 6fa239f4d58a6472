/*
 * test-gguf.c — the GGUF reader (core/gguf.c).
 *
 * Valid v2/v3 files with every metadata type, string and nested arrays and
 * tensors of several quant types and alignments are built in memory
 * (gguf-writer.h) and read back through every accessor. Then the malformed
 * corpus: every proper prefix of each valid file, a table of hand-made bad
 * files (each must fail with COPSE_EFORMAT and a message naming the field),
 * and random byte flips (fresh seed each run; must be OK or EFORMAT, never a
 * crash). Finally the real test models, when present.
 *
 * If $COPSE_GGUF_SEED_DIR is set, the valid sample files are written there as
 * a seed corpus for tests/fuzz/fuzz-gguf.c.
 */
#include <errno.h>
#include <stdbool.h>
#include <sys/stat.h>

#include "test.h"

#include "copse.h"
#include "gguf-writer.h"
#include "gguf.h"
#include "quant.h"

/* err contains the substring want (prints both on failure). */
#define CHECK_CONTAINS(err, want)                                                          \
    do {                                                                                   \
        const char *e_ = (err), *w_ = (want);                                              \
        test_checks_++;                                                                    \
        if (!strstr(e_, w_)) {                                                             \
            test_failures_++;                                                              \
            fprintf(stderr, "%s:%d: \"%s\" does not contain \"%s\"\n", __FILE__, __LINE__,  \
                    e_, w_);                                                               \
        }                                                                                  \
    } while (0)

static uint32_t load_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* ---------------------------------------------------------------- the sample file */

typedef struct tensor_spec {
    const char *name;
    uint32_t n_dims;
    uint64_t ne[4];
    uint32_t type;
} tensor_spec;

static const tensor_spec sample_tensors[] = {
    {"tok_embd.weight", 2, {64, 3}, COPSE_Q_Q4_0},
    {"blk.0.attn_q.weight", 2, {256, 2}, COPSE_Q_Q4_K},
    {"blk.0.ffn_down.weight", 3, {256, 1, 1}, COPSE_Q_Q6_K},
    {"output_norm.weight", 1, {7}, COPSE_Q_F32},
    {"x.4d", 4, {2, 3, 4, 5}, COPSE_Q_F16},
    {"blk.0.attn_k.weight", 2, {32, 2}, COPSE_Q_Q8_0},
    {"blk.0.attn_v.weight", 1, {64}, COPSE_Q_Q4_1},
    {"bf", 1, {3}, COPSE_Q_BF16},
    {"k5", 1, {256}, COPSE_Q_Q5_K},
};
#define N_SAMPLE_TENSORS (sizeof sample_tensors / sizeof sample_tensors[0])

static const char *const sample_tokens[] = {"<s>", "", "a\nb", "hello", "\xe2\x96\x81the"};

/* A valid file with every kv type. alignment != 32 is written as general.alignment. */
static uint8_t *build_sample(uint32_t version, uint32_t alignment, size_t *size)
{
    gguf_writer w;
    gw_init(&w, version);
    w.alignment = alignment;
    gw_kv_str(&w, "general.architecture", "llama");
    if (alignment != COPSE_GGUF_DEFAULT_ALIGNMENT)
        gw_kv_u32(&w, "general.alignment", alignment);
    gw_kv_u8(&w, "t.u8", 200);
    gw_kv_i8(&w, "t.i8", -100);
    gw_kv_u16(&w, "t.u16", 60000);
    gw_kv_i16(&w, "t.i16", -30000);
    gw_kv_u32(&w, "t.u32", 4000000000u);
    gw_kv_i32(&w, "t.i32", -2000000000);
    gw_kv_u64(&w, "t.u64", (1ull << 40) + 5);
    gw_kv_i64(&w, "t.i64", -(1ll << 40));
    gw_kv_f32(&w, "t.f32", 1.5f);
    gw_kv_f64(&w, "t.f64", -2.25);
    gw_kv_bool(&w, "t.bool", 1);
    gw_kv_bool(&w, "t.false", 0);
    gw_kv_str(&w, "t.str", "hello");
    gw_kv_str(&w, "t.empty", "");
    gw_kv_f64(&w, "t.f64big", 1e300);
    gw_kv_i64(&w, "t.i32min", INT32_MIN);
    gw_kv_i64(&w, "t.i32min-1", (int64_t)INT32_MIN - 1);
    gw_kv_u64(&w, "t.u32max", UINT32_MAX);

    gw_buf *b = gw_kv_arr(&w, "t.arr.u8", COPSE_GGUF_UINT8, 3);
    gw_u8(b, 1), gw_u8(b, 2), gw_u8(b, 255);
    b = gw_kv_arr(&w, "t.arr.i8", COPSE_GGUF_INT8, 3);
    gw_u8(b, 0xff), gw_u8(b, 127), gw_u8(b, 0x80);
    b = gw_kv_arr(&w, "t.arr.u16", COPSE_GGUF_UINT16, 2);
    gw_u16(b, 65535), gw_u16(b, 7);
    b = gw_kv_arr(&w, "t.arr.i16", COPSE_GGUF_INT16, 2);
    gw_u16(b, (uint16_t)-32768), gw_u16(b, 300);
    b = gw_kv_arr(&w, "t.arr.u32", COPSE_GGUF_UINT32, 2);
    gw_u32(b, 4000000000u), gw_u32(b, 9);
    b = gw_kv_arr(&w, "t.arr.i32", COPSE_GGUF_INT32, 3);
    gw_u32(b, (uint32_t)-5), gw_u32(b, 6), gw_u32(b, (uint32_t)INT32_MIN);
    b = gw_kv_arr(&w, "t.arr.f32", COPSE_GGUF_FLOAT32, 3);
    gw_f32(b, 0.5f), gw_f32(b, -1.0f), gw_f32(b, 3.75f);
    b = gw_kv_arr(&w, "t.arr.u64", COPSE_GGUF_UINT64, 2);
    gw_u64(b, 1ull << 50), gw_u64(b, 11);
    b = gw_kv_arr(&w, "t.arr.i64", COPSE_GGUF_INT64, 2);
    gw_u64(b, (uint64_t)-(1ll << 50)), gw_u64(b, 12);
    b = gw_kv_arr(&w, "t.arr.f64", COPSE_GGUF_FLOAT64, 2);
    gw_f64(b, -0.125), gw_f64(b, 1e10);
    b = gw_kv_arr(&w, "t.arr.bool", COPSE_GGUF_BOOL, 3);
    gw_u8(b, 1), gw_u8(b, 0), gw_u8(b, 1);
    gw_kv_arr(&w, "t.arr.empty", COPSE_GGUF_UINT32, 0);
    gw_kv_arr(&w, "t.arr.nostr", COPSE_GGUF_STRING, 0);
    gw_kv_arr_str(&w, "tokenizer.ggml.tokens", sample_tokens,
                  sizeof sample_tokens / sizeof sample_tokens[0]);
    /* [[1, 2, 3], ["x", "yz"], []] */
    b = gw_kv_arr(&w, "t.arr.nested", COPSE_GGUF_ARRAY, 3);
    gw_u32(b, COPSE_GGUF_UINT32), gw_u64(b, 3), gw_u32(b, 1), gw_u32(b, 2), gw_u32(b, 3);
    gw_u32(b, COPSE_GGUF_STRING), gw_u64(b, 2), gw_str(b, "x"), gw_str(b, "yz");
    gw_u32(b, COPSE_GGUF_ARRAY), gw_u64(b, 0);

    for (size_t i = 0; i < N_SAMPLE_TENSORS; i++) {
        const tensor_spec *t = &sample_tensors[i];
        gw_tensor(&w, t->name, t->n_dims, t->ne, t->type);
    }
    return gw_finish(&w, size);
}

/* ---------------------------------------------------------------- walking a parsed file */

static bool inside(const void *p, uint64_t n, const uint8_t *base, size_t size)
{
    const uint8_t *b = p;
    return b >= base && b <= base + size && n <= (uint64_t)(base + size - b);
}

/* Calls every accessor on every kv and tensor of a file that opened, checking
 * that everything points inside the buffer. Used on the valid samples and on
 * byte-flipped files that still parse. */
static void walk(const copse_gguf *g, const uint8_t *base, size_t size)
{
    char key[256];
    CHECK(copse__gguf_file_size(g) == size);
    CHECK(copse__gguf_version(g) == 2 || copse__gguf_version(g) == 3);
    uint32_t a = copse__gguf_alignment(g);
    CHECK(a != 0 && (a & (a - 1)) == 0);
    CHECK(copse__gguf_data_offset(g) % a == 0);
    CHECK(copse__gguf_kv_at(g, copse__gguf_n_kv(g)) == NULL);
    CHECK(copse__gguf_tensor_at(g, copse__gguf_n_tensors(g)) == NULL);

    for (size_t i = 0; i < copse__gguf_n_kv(g); i++) {
        const copse_gguf_kv *kv = copse__gguf_kv_at(g, i);
        CHECK(inside(kv->key.ptr, kv->key.len, base, size));
        CHECK(kv->type < COPSE_GGUF_TYPE_COUNT);
        CHECK(strcmp(copse__gguf_type_name(kv->type), "?") != 0);
        if (kv->key.len < sizeof key && !memchr(kv->key.ptr, 0, kv->key.len)) {
            memcpy(key, kv->key.ptr, kv->key.len);
            key[kv->key.len] = '\0';
            CHECK(copse__gguf_find(g, key) == kv);
            CHECK(copse__str_eq(kv->key, key));
            uint32_t u32;
            uint64_t u64;
            int32_t i32;
            float f;
            bool bo;
            copse_str s;
            const copse_gguf_array *arr;
            (void)copse__gguf_get_u32(g, key, &u32);
            (void)copse__gguf_get_u64(g, key, &u64);
            (void)copse__gguf_get_i32(g, key, &i32);
            (void)copse__gguf_get_f32(g, key, &f);
            (void)copse__gguf_get_bool(g, key, &bo);
            CHECK((copse__gguf_get_str(g, key, &s) == COPSE_OK) == (kv->type == COPSE_GGUF_STRING));
            CHECK((copse__gguf_get_arr(g, key, COPSE_GGUF_TYPE_COUNT, &arr) == COPSE_OK) ==
                  (kv->type == COPSE_GGUF_ARRAY));
        }
        if (kv->type == COPSE_GGUF_STRING)
            CHECK(inside(kv->v.str.ptr, kv->v.str.len, base, size));
        if (kv->type != COPSE_GGUF_ARRAY)
            continue;
        const copse_gguf_array *arr = &kv->v.arr;
        CHECK(arr->type < COPSE_GGUF_TYPE_COUNT);
        if (arr->type == COPSE_GGUF_STRING) {
            CHECK(arr->strs != NULL);
            for (uint64_t j = 0; j < arr->n; j++)
                CHECK(inside(arr->strs[j].ptr, arr->strs[j].len, base, size));
        } else if (arr->type != COPSE_GGUF_ARRAY) {
            CHECK(arr->strs == NULL);
            double sum = 0;
            for (uint64_t j = 0; j < arr->n; j++) {
                sum += copse__gguf_arr_f32(arr, j);
                sum += (double)copse__gguf_arr_i64(arr, j);
            }
            (void)sum;
        }
    }
    for (size_t i = 0; i < copse__gguf_n_tensors(g); i++) {
        const copse_gguf_tensor *t = copse__gguf_tensor_at(g, i);
        CHECK(inside(t->name.ptr, t->name.len, base, size));
        CHECK(inside(t->data, t->nbytes, base, size));
        CHECK((const uint8_t *)t->data == base + copse__gguf_data_offset(g) + t->offset);
        CHECK(t->n_dims >= 1 && t->n_dims <= COPSE_GGUF_MAX_DIMS);
        CHECK(t->offset % a == 0);
        if (t->name.len < sizeof key && !memchr(t->name.ptr, 0, t->name.len)) {
            memcpy(key, t->name.ptr, t->name.len);
            key[t->name.len] = '\0';
            CHECK(copse__gguf_find_tensor(g, key) == t);
        }
    }
}

/* ---------------------------------------------------------------- valid files */

static void check_sample_kvs(const copse_gguf *g)
{
    uint32_t u32 = 0;
    uint64_t u64 = 0;
    int32_t i32 = 0;
    float f = 0;
    bool bo = false;
    copse_str s = {0};
    const copse_gguf_array *arr = NULL;

    CHECK_STATUS(copse__gguf_get_str(g, "general.architecture", &s), COPSE_OK);
    CHECK(copse__str_eq(s, "llama"));
    CHECK(!copse__str_eq(s, "llam"));
    CHECK(!copse__str_eq(s, "llamas"));

    /* The union holds each value, extended. */
    CHECK_INT_EQ(copse__gguf_find(g, "t.u8")->v.u64, 200);
    CHECK_INT_EQ(copse__gguf_find(g, "t.i8")->v.i64, -100);
    CHECK_INT_EQ(copse__gguf_find(g, "t.u16")->v.u64, 60000);
    CHECK_INT_EQ(copse__gguf_find(g, "t.i16")->v.i64, -30000);
    CHECK_INT_EQ(copse__gguf_find(g, "t.u32")->v.u64, 4000000000u);
    CHECK_INT_EQ(copse__gguf_find(g, "t.i32")->v.i64, -2000000000);
    CHECK_INT_EQ(copse__gguf_find(g, "t.u64")->v.u64, (1ull << 40) + 5);
    CHECK_INT_EQ(copse__gguf_find(g, "t.i64")->v.i64, -(1ll << 40));
    CHECK(copse__gguf_find(g, "t.f32")->v.f64 == 1.5);
    CHECK(copse__gguf_find(g, "t.f64")->v.f64 == -2.25);
    CHECK_INT_EQ(copse__gguf_find(g, "t.bool")->v.u64, 1);
    CHECK_INT_EQ(copse__gguf_find(g, "t.u8")->type, COPSE_GGUF_UINT8);
    CHECK_INT_EQ(copse__gguf_find(g, "t.f64")->type, COPSE_GGUF_FLOAT64);

    /* Missing keys: every getter says ENOTFOUND. */
    CHECK(copse__gguf_find(g, "missing") == NULL);
    CHECK(copse__gguf_find(g, "t.u") == NULL);
    CHECK(copse__gguf_find(g, "") == NULL);
    CHECK_STATUS(copse__gguf_get_u32(g, "missing", &u32), COPSE_ENOTFOUND);
    CHECK_STATUS(copse__gguf_get_u64(g, "missing", &u64), COPSE_ENOTFOUND);
    CHECK_STATUS(copse__gguf_get_i32(g, "missing", &i32), COPSE_ENOTFOUND);
    CHECK_STATUS(copse__gguf_get_f32(g, "missing", &f), COPSE_ENOTFOUND);
    CHECK_STATUS(copse__gguf_get_bool(g, "missing", &bo), COPSE_ENOTFOUND);
    CHECK_STATUS(copse__gguf_get_str(g, "missing", &s), COPSE_ENOTFOUND);
    CHECK_STATUS(copse__gguf_get_arr(g, "missing", COPSE_GGUF_TYPE_COUNT, &arr), COPSE_ENOTFOUND);

    /* Integer getters: any integer type, range-checked. */
    CHECK_STATUS(copse__gguf_get_u32(g, "t.u8", &u32), COPSE_OK);
    CHECK_INT_EQ(u32, 200);
    CHECK_STATUS(copse__gguf_get_u32(g, "t.u32", &u32), COPSE_OK);
    CHECK_INT_EQ(u32, 4000000000u);
    CHECK_STATUS(copse__gguf_get_u32(g, "t.u32max", &u32), COPSE_OK);
    CHECK_INT_EQ(u32, UINT32_MAX);
    CHECK_STATUS(copse__gguf_get_u32(g, "t.i8", &u32), COPSE_EFORMAT);
    CHECK_STATUS(copse__gguf_get_u32(g, "t.u64", &u32), COPSE_EFORMAT);
    CHECK_STATUS(copse__gguf_get_u32(g, "t.bool", &u32), COPSE_EFORMAT);
    CHECK_STATUS(copse__gguf_get_u32(g, "t.f32", &u32), COPSE_EFORMAT);
    CHECK_STATUS(copse__gguf_get_u32(g, "t.str", &u32), COPSE_EFORMAT);
    CHECK_STATUS(copse__gguf_get_u64(g, "t.u64", &u64), COPSE_OK);
    CHECK_INT_EQ(u64, (1ull << 40) + 5);
    CHECK_STATUS(copse__gguf_get_u64(g, "t.u16", &u64), COPSE_OK);
    CHECK_INT_EQ(u64, 60000);
    CHECK_STATUS(copse__gguf_get_u64(g, "t.i64", &u64), COPSE_EFORMAT);
    CHECK_STATUS(copse__gguf_get_i32(g, "t.i8", &i32), COPSE_OK);
    CHECK_INT_EQ(i32, -100);
    CHECK_STATUS(copse__gguf_get_i32(g, "t.i16", &i32), COPSE_OK);
    CHECK_INT_EQ(i32, -30000);
    CHECK_STATUS(copse__gguf_get_i32(g, "t.i32", &i32), COPSE_OK);
    CHECK_INT_EQ(i32, -2000000000);
    CHECK_STATUS(copse__gguf_get_i32(g, "t.i32min", &i32), COPSE_OK);
    CHECK_INT_EQ(i32, INT32_MIN);
    CHECK_STATUS(copse__gguf_get_i32(g, "t.i32min-1", &i32), COPSE_EFORMAT);
    CHECK_STATUS(copse__gguf_get_i32(g, "t.u32", &i32), COPSE_EFORMAT);
    CHECK_STATUS(copse__gguf_get_i32(g, "t.i64", &i32), COPSE_EFORMAT);
    CHECK_STATUS(copse__gguf_get_i32(g, "t.u16", &i32), COPSE_OK);
    CHECK_INT_EQ(i32, 60000);

    /* get_f32: floats and integers. */
    CHECK_STATUS(copse__gguf_get_f32(g, "t.f32", &f), COPSE_OK);
    CHECK(f == 1.5f);
    CHECK_STATUS(copse__gguf_get_f32(g, "t.f64", &f), COPSE_OK);
    CHECK(f == -2.25f);
    CHECK_STATUS(copse__gguf_get_f32(g, "t.u16", &f), COPSE_OK);
    CHECK(f == 60000.0f);
    CHECK_STATUS(copse__gguf_get_f32(g, "t.i16", &f), COPSE_OK);
    CHECK(f == -30000.0f);
    CHECK_STATUS(copse__gguf_get_f32(g, "t.f64big", &f), COPSE_EFORMAT);
    CHECK_STATUS(copse__gguf_get_f32(g, "t.bool", &f), COPSE_EFORMAT);
    CHECK_STATUS(copse__gguf_get_f32(g, "t.str", &f), COPSE_EFORMAT);

    CHECK_STATUS(copse__gguf_get_bool(g, "t.bool", &bo), COPSE_OK);
    CHECK(bo == true);
    CHECK_STATUS(copse__gguf_get_bool(g, "t.false", &bo), COPSE_OK);
    CHECK(bo == false);
    CHECK_STATUS(copse__gguf_get_bool(g, "t.u8", &bo), COPSE_EFORMAT);

    CHECK_STATUS(copse__gguf_get_str(g, "t.str", &s), COPSE_OK);
    CHECK(copse__str_eq(s, "hello"));
    CHECK_STATUS(copse__gguf_get_str(g, "t.empty", &s), COPSE_OK);
    CHECK_INT_EQ(s.len, 0);
    CHECK(copse__str_eq(s, ""));
    CHECK_STATUS(copse__gguf_get_str(g, "t.u8", &s), COPSE_EFORMAT);
    CHECK_STATUS(copse__gguf_get_str(g, "t.arr.u8", &s), COPSE_EFORMAT);

    /* Arrays: element type must match unless TYPE_COUNT. */
    CHECK_STATUS(copse__gguf_get_arr(g, "t.str", COPSE_GGUF_TYPE_COUNT, &arr), COPSE_EFORMAT);
    CHECK_STATUS(copse__gguf_get_arr(g, "t.arr.f32", COPSE_GGUF_UINT32, &arr), COPSE_EFORMAT);
    CHECK_STATUS(copse__gguf_get_arr(g, "t.arr.f32", COPSE_GGUF_TYPE_COUNT, &arr), COPSE_OK);
    CHECK_STATUS(copse__gguf_get_arr(g, "t.arr.f32", COPSE_GGUF_FLOAT32, &arr), COPSE_OK);
    CHECK_INT_EQ(arr->n, 3);
    CHECK(arr->strs == NULL);
    CHECK(copse__gguf_arr_f32(arr, 0) == 0.5f);
    CHECK(copse__gguf_arr_f32(arr, 1) == -1.0f);
    CHECK(copse__gguf_arr_f32(arr, 2) == 3.75f);
    CHECK_INT_EQ(copse__gguf_arr_i64(arr, 2), 3);

    static const struct {
        const char *key;
        copse_gguf_type type;
        int n;
        int64_t v[3];
    } int_arrays[] = {
        {"t.arr.u8", COPSE_GGUF_UINT8, 3, {1, 2, 255}},
        {"t.arr.i8", COPSE_GGUF_INT8, 3, {-1, 127, -128}},
        {"t.arr.u16", COPSE_GGUF_UINT16, 2, {65535, 7}},
        {"t.arr.i16", COPSE_GGUF_INT16, 2, {-32768, 300}},
        {"t.arr.u32", COPSE_GGUF_UINT32, 2, {4000000000, 9}},
        {"t.arr.i32", COPSE_GGUF_INT32, 3, {-5, 6, INT32_MIN}},
        {"t.arr.u64", COPSE_GGUF_UINT64, 2, {1ll << 50, 11}},
        {"t.arr.i64", COPSE_GGUF_INT64, 2, {-(1ll << 50), 12}},
        {"t.arr.bool", COPSE_GGUF_BOOL, 3, {1, 0, 1}},
        {"t.arr.empty", COPSE_GGUF_UINT32, 0, {0}},
    };
    for (size_t k = 0; k < sizeof int_arrays / sizeof int_arrays[0]; k++) {
        CHECK_STATUS(copse__gguf_get_arr(g, int_arrays[k].key, int_arrays[k].type, &arr), COPSE_OK);
        if (!arr)
            continue;
        CHECK_INT_EQ(arr->n, int_arrays[k].n);
        for (int j = 0; j < int_arrays[k].n && (uint64_t)j < arr->n; j++) {
            CHECK_INT_EQ(copse__gguf_arr_i64(arr, (uint64_t)j), int_arrays[k].v[j]);
            CHECK(copse__gguf_arr_f32(arr, (uint64_t)j) == (float)int_arrays[k].v[j]);
        }
    }
    CHECK_STATUS(copse__gguf_get_arr(g, "t.arr.f64", COPSE_GGUF_FLOAT64, &arr), COPSE_OK);
    CHECK(copse__gguf_arr_f32(arr, 0) == -0.125f);
    CHECK(copse__gguf_arr_f32(arr, 1) == 1e10f);
    CHECK_INT_EQ(copse__gguf_arr_i64(arr, 1), 10000000000ll);

    size_t n_tok = sizeof sample_tokens / sizeof sample_tokens[0];
    CHECK_STATUS(copse__gguf_get_arr(g, "tokenizer.ggml.tokens", COPSE_GGUF_STRING, &arr), COPSE_OK);
    CHECK_INT_EQ(arr->n, n_tok);
    CHECK(arr->strs != NULL);
    for (size_t j = 0; j < n_tok && arr->strs; j++)
        CHECK(copse__str_eq(arr->strs[j], sample_tokens[j]));
    CHECK_STATUS(copse__gguf_get_arr(g, "t.arr.nostr", COPSE_GGUF_STRING, &arr), COPSE_OK);
    CHECK_INT_EQ(arr->n, 0);

    /* Nested arrays are exposed as a raw span of elements. */
    CHECK_STATUS(copse__gguf_get_arr(g, "t.arr.nested", COPSE_GGUF_ARRAY, &arr), COPSE_OK);
    CHECK_INT_EQ(arr->n, 3);
    CHECK(arr->strs == NULL);
    CHECK_INT_EQ(load_le32(arr->data), COPSE_GGUF_UINT32);
}

static void check_sample(const copse_gguf *g, const uint8_t *buf, size_t size, uint32_t version,
                         uint32_t alignment)
{
    CHECK_INT_EQ(copse__gguf_version(g), version);
    CHECK_INT_EQ(copse__gguf_file_size(g), size);
    CHECK_INT_EQ(copse__gguf_alignment(g), alignment);
    CHECK_INT_EQ(copse__gguf_n_kv(g), 34 + (alignment != COPSE_GGUF_DEFAULT_ALIGNMENT));
    CHECK_INT_EQ(copse__gguf_n_tensors(g), N_SAMPLE_TENSORS);
    CHECK(copse__str_eq(copse__gguf_kv_at(g, 0)->key, "general.architecture"));
    check_sample_kvs(g);

    uint64_t data_offset = copse__gguf_data_offset(g);
    CHECK(data_offset % alignment == 0);
    CHECK(data_offset <= size);
    for (size_t i = 0; i < N_SAMPLE_TENSORS; i++) {
        const tensor_spec *want = &sample_tensors[i];
        const copse_gguf_tensor *t = copse__gguf_tensor_at(g, i);
        CHECK(t == copse__gguf_find_tensor(g, want->name));
        CHECK(copse__str_eq(t->name, want->name));
        CHECK_INT_EQ(t->n_dims, want->n_dims);
        CHECK_INT_EQ(t->type, want->type);
        uint64_t n = 1, row;
        for (uint32_t d = 0; d < COPSE_GGUF_MAX_DIMS; d++) {
            CHECK_INT_EQ(t->ne[d], d < want->n_dims ? want->ne[d] : 1);
            n *= d ? t->ne[d] : 1;
        }
        CHECK(copse__qtype_row_bytes(want->type, want->ne[0], &row));
        CHECK_INT_EQ(t->nbytes, row * n);
        CHECK_INT_EQ(t->offset % alignment, 0);
        CHECK((const uint8_t *)t->data == buf + data_offset + t->offset);
        bool same = true;
        for (uint64_t j = 0; j < t->nbytes; j++)
            same &= ((const uint8_t *)t->data)[j] == gw_pattern(t->offset + j);
        CHECK(same);
    }
    CHECK(copse__gguf_find_tensor(g, "missing") == NULL);
    CHECK(copse__gguf_find_tensor(g, "bf.") == NULL);
    walk(g, buf, size);
}

/* Opens a copy of buf[0..size) in an exactly-sized allocation, so that ASan
 * sees any read past the end. */
static copse_status open_copy(const uint8_t *buf, size_t size, char *err, size_t err_size,
                              void (*on_ok)(const copse_gguf *, const uint8_t *, size_t))
{
    uint8_t *copy = malloc(size ? size : 1);
    memcpy(copy, buf, size);
    copse_gguf *g = NULL;
    err[0] = '\0';
    copse_status st = copse__gguf_open_memory(copy, size, &g, err, err_size);
    if (st == COPSE_OK) {
        CHECK(g != NULL);
        if (on_ok)
            on_ok(g, copy, size);
    } else {
        CHECK(g == NULL);
        CHECK(err[0] != '\0');
    }
    copse__gguf_close(g);
    free(copy);
    return st;
}

static const uint32_t sample_alignments[] = {32, 1, 8, 64, 4096};

static void test_valid_samples(void)
{
    char err[512];
    for (uint32_t version = 2; version <= 3; version++) {
        for (size_t k = 0; k < sizeof sample_alignments / sizeof sample_alignments[0]; k++) {
            uint32_t al = sample_alignments[k];
            size_t size;
            uint8_t *buf = build_sample(version, al, &size);
            copse_gguf *g = NULL;
            copse_status st = copse__gguf_open_memory(buf, size, &g, err, sizeof err);
            CHECK_STATUS(st, COPSE_OK);
            if (st != COPSE_OK)
                fprintf(stderr, "  v%u align %u: %s\n", version, al, err);
            else
                check_sample(g, buf, size, version, al);
            copse__gguf_close(g);
            free(buf);
        }
    }
}

/* A header alone (no kvs, no tensors) is a valid file; so is one with only kvs. */
static void test_minimal(void)
{
    char err[256];
    gguf_writer w;
    size_t size;
    gw_init(&w, 3);
    uint8_t *buf = gw_finish(&w, &size);
    CHECK_INT_EQ(size, GW_HEADER_BYTES);
    copse_gguf *g = NULL;
    CHECK_STATUS(copse__gguf_open_memory(buf, size, &g, err, sizeof err), COPSE_OK);
    if (g) {
        CHECK_INT_EQ(copse__gguf_n_kv(g), 0);
        CHECK_INT_EQ(copse__gguf_n_tensors(g), 0);
        CHECK(copse__gguf_find(g, "general.architecture") == NULL);
        CHECK(copse__gguf_find_tensor(g, "x") == NULL);
        CHECK(copse__gguf_kv_at(g, 0) == NULL);
    }
    copse__gguf_close(g);
    free(buf);

    gw_init(&w, 2);
    gw_kv_str(&w, "general.architecture", "gemma3");
    buf = gw_finish(&w, &size);
    CHECK_STATUS(copse__gguf_open_memory(buf, size, &g, err, sizeof err), COPSE_OK);
    copse__gguf_close(g);
    free(buf);

    /* Empty input, NULL or not. */
    CHECK_STATUS(copse__gguf_open_memory(NULL, 0, &g, err, sizeof err), COPSE_EFORMAT);
    CHECK(g == NULL);
    CHECK_CONTAINS(err, "header: magic");
    CHECK_STATUS(copse__gguf_open_memory("", 0, &g, NULL, 0), COPSE_EFORMAT);
}

static void test_type_names(void)
{
    static const char *const names[] = {"uint8",  "int8",   "uint16", "int16", "uint32",
                                        "int32",  "float32", "bool",  "string", "array",
                                        "uint64", "int64",  "float64"};
    for (uint32_t t = 0; t < COPSE_GGUF_TYPE_COUNT; t++)
        CHECK_STR_EQ(copse__gguf_type_name(t), names[t]);
    CHECK_STR_EQ(copse__gguf_type_name(COPSE_GGUF_TYPE_COUNT), "?");
    CHECK_STR_EQ(copse__gguf_type_name(UINT32_MAX), "?");
    copse_str s = {"abc", 2};
    CHECK(copse__str_eq(s, "ab"));
    CHECK(!copse__str_eq(s, "abc"));
    CHECK(!copse__str_eq(s, "a"));
    CHECK(copse__str_eq((copse_str){"", 0}, ""));
}

/* ---------------------------------------------------------------- files on disk */

static void test_open_path(void)
{
    char err[512];
    char path[] = "/tmp/copse-test-gguf-XXXXXX";
    size_t size;
    uint8_t *buf = build_sample(3, 64, &size);
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0) {
        free(buf);
        return;
    }
    CHECK_INT_EQ(write(fd, buf, size), (long long)size);
    close(fd);

    copse_gguf *g = NULL;
    CHECK_STATUS(copse__gguf_open(path, &g, err, sizeof err), COPSE_OK);
    if (g) {
        const copse_gguf_tensor *t0 = copse__gguf_tensor_at(g, 0);
        const uint8_t *base = (const uint8_t *)t0->data - copse__gguf_data_offset(g) - t0->offset;
        check_sample(g, base, size, 3, 64);
    }
    copse__gguf_close(g);

    /* The same file cut short: EFORMAT, message starts with the path. */
    CHECK_INT_EQ(truncate(path, (off_t)(size - 1)), 0);
    CHECK_STATUS(copse__gguf_open(path, &g, err, sizeof err), COPSE_EFORMAT);
    CHECK(strncmp(err, path, strlen(path)) == 0);
    CHECK_CONTAINS(err, "past end of file");
    /* Empty file. */
    CHECK_INT_EQ(truncate(path, 0), 0);
    CHECK_STATUS(copse__gguf_open(path, &g, err, sizeof err), COPSE_EFORMAT);
    CHECK_CONTAINS(err, "magic");
    unlink(path);
    free(buf);

    CHECK_STATUS(copse__gguf_open(path, &g, err, sizeof err), COPSE_EIO);
    CHECK(g == NULL);
    CHECK_CONTAINS(err, path);
    CHECK_CONTAINS(err, strerror(ENOENT));
    CHECK_STATUS(copse__gguf_open("/tmp", &g, err, sizeof err), COPSE_EIO);
    CHECK_CONTAINS(err, "/tmp");
    CHECK_STATUS(copse__gguf_open("/nonexistent/x.gguf", &g, NULL, 0), COPSE_EIO);
}

/* ---------------------------------------------------------------- truncation */

/* Every proper prefix of every valid sample fails with EFORMAT; growing the
 * prefix a byte at a time is also the "fed one byte at a time" test. */
static void test_truncation(void)
{
    char err[512];
    for (uint32_t version = 2; version <= 3; version++) {
        for (size_t k = 0; k < sizeof sample_alignments / sizeof sample_alignments[0]; k++) {
            if (version == 2 && sample_alignments[k] == 4096)
                continue; /* long runs of padding; v3 covers it */
            size_t size;
            uint8_t *buf = build_sample(version, sample_alignments[k], &size);
            size_t bad = 0;
            for (size_t n = 0; n < size; n++) {
                copse_status st = open_copy(buf, n, err, sizeof err, NULL);
                if (st != COPSE_EFORMAT && bad++ < 5)
                    fprintf(stderr, "  prefix %zu of %zu: %s (%s)\n", n, size, copse_err_name(st),
                            err);
            }
            CHECK_INT_EQ(bad, 0);
            CHECK_STATUS(open_copy(buf, size, err, sizeof err, walk), COPSE_OK);
            free(buf);
        }
    }
}

/* ---------------------------------------------------------------- malformed files */

static const uint64_t ne32[] = {32}, ne64[] = {64};

static void bad_magic(gguf_writer *w) { w->magic = 0x12345678; }
static void bad_v0(gguf_writer *w) { w->version = 0; }
static void bad_v1(gguf_writer *w) { w->version = 1; }
static void bad_v4(gguf_writer *w) { w->version = 4; }
static void bad_vmax(gguf_writer *w) { w->version = 0xFFFFFFFFu; }
static void bad_big_endian(gguf_writer *w) { w->version = 0x03000000u; }
static void bad_kv_count(gguf_writer *w) { gw_kv_u32(w, "a", 1); w->n_kv = 1ull << 60; }
static void bad_kv_count_max(gguf_writer *w) { w->n_kv = UINT64_MAX; }
static void bad_tensor_count(gguf_writer *w) { w->n_tensors = 1ull << 60; }
static void bad_tensor_count_after_kvs(gguf_writer *w)
{
    gw_kv_arr(w, "pad", COPSE_GGUF_UINT8, 64);
    gw_zeros(&w->kv, 64);
    w->n_tensors = 2; /* fits the whole file, not what is left after the kvs */
}
static void bad_key_len(gguf_writer *w) { gw_u64(&w->kv, 1ull << 63); gw_zeros(&w->kv, 32); w->n_kv = 1; }
static void bad_key_len_past_end(gguf_writer *w) { gw_u64(&w->kv, 20); gw_bytes(&w->kv, "general.", 8); gw_zeros(&w->kv, 8); w->n_kv = 1; }
static void bad_kv_type(gguf_writer *w) { gw_u32(gw_key(w, "x", 13), 0); }
static void bad_kv_type_max(gguf_writer *w) { gw_u32(gw_key(w, "x", 0xFFFFFFFFu), 0); }
static void bad_str_len(gguf_writer *w)
{
    gw_buf *b = gw_key(w, "general.name", COPSE_GGUF_STRING);
    gw_u64(b, 99999);
    gw_bytes(b, "abcdefghijklmnop", 16);
}
static void bad_str_len_huge(gguf_writer *w) { gw_u64(gw_key(w, "general.name", COPSE_GGUF_STRING), UINT64_MAX); }
static void bad_strarr_len(gguf_writer *w)
{
    gw_kv_u32(w, "general.alignment", 32);
    gw_buf *b = gw_kv_arr(w, "tokenizer.ggml.tokens", COPSE_GGUF_STRING, 10);
    for (int i = 0; i < 5; i++)
        gw_str(b, "tok");
    gw_u64(b, 99999);
    gw_zeros(b, 64);
}
static void bad_strarr_n(gguf_writer *w) { gw_kv_arr(w, "tokenizer.ggml.tokens", COPSE_GGUF_STRING, 1ull << 62); gw_zeros(&w->kv, 32); }
static void bad_arr_n(gguf_writer *w) { gw_kv_arr(w, "scores", COPSE_GGUF_UINT32, 1ull << 62); gw_zeros(&w->kv, 32); }
static void bad_arr_n_max(gguf_writer *w) { gw_kv_arr(w, "scores", COPSE_GGUF_FLOAT64, UINT64_MAX); gw_zeros(&w->kv, 32); }
static void bad_arr_type(gguf_writer *w) { gw_u32(gw_kv_arr(w, "x", 13, 1), 0); }
static void bad_nested_n(gguf_writer *w) { gw_kv_arr(w, "x", COPSE_GGUF_ARRAY, 1ull << 61); gw_zeros(&w->kv, 32); }
static void bad_nested_type(gguf_writer *w)
{
    gw_buf *b = gw_kv_arr(w, "x", COPSE_GGUF_ARRAY, 2);
    gw_u32(b, COPSE_GGUF_UINT8), gw_u64(b, 1), gw_u8(b, 5);
    gw_u32(b, 99), gw_u64(b, 1), gw_u32(b, 0);
}
static void bad_nested_str(gguf_writer *w)
{
    gw_buf *b = gw_kv_arr(w, "x", COPSE_GGUF_ARRAY, 1);
    gw_u32(b, COPSE_GGUF_STRING), gw_u64(b, 2), gw_str(b, "ok"), gw_u64(b, 1000);
    gw_zeros(b, 8);
}
static void bad_nested_deep(gguf_writer *w)
{
    gw_buf *b = gw_kv_arr(w, "deep", COPSE_GGUF_ARRAY, 1);
    for (int d = 0; d < 20; d++)
        gw_u32(b, COPSE_GGUF_ARRAY), gw_u64(b, 1);
    gw_zeros(b, 64);
}
static void bad_bool(gguf_writer *w) { gw_u8(gw_key(w, "b", COPSE_GGUF_BOOL), 2); }
static void bad_bool_arr(gguf_writer *w)
{
    gw_buf *b = gw_kv_arr(w, "b", COPSE_GGUF_BOOL, 3);
    gw_u8(b, 0), gw_u8(b, 1), gw_u8(b, 7);
}
static void bad_dup_key(gguf_writer *w)
{
    gw_kv_str(w, "general.name", "a");
    gw_kv_u32(w, "x", 1);
    gw_kv_str(w, "general.name", "b");
}
static void bad_align_0(gguf_writer *w) { gw_kv_u32(w, "general.alignment", 0); }
static void bad_align_3(gguf_writer *w) { gw_kv_u32(w, "general.alignment", 3); }
static void bad_align_type(gguf_writer *w) { gw_kv_u64(w, "general.alignment", 32); }
static void bad_align_str(gguf_writer *w) { gw_kv_str(w, "general.alignment", "32"); }
static void bad_tensor_type(gguf_writer *w) { gw_tensor_info(w, "t", 1, ne32, 99, 0); gw_data(w, 256); }
static void bad_tensor_type_gap(gguf_writer *w) { gw_tensor_info(w, "t", 1, ne32, 4, 0); gw_data(w, 256); }
static void bad_ndims_0(gguf_writer *w) { gw_tensor_info(w, "t", 0, ne32, COPSE_Q_F32, 0); gw_data(w, 256); }
static void bad_ndims_5(gguf_writer *w)
{
    gw_tensor_info(w, "t", 5, (const uint64_t[]){1, 1, 1, 1, 1}, COPSE_Q_F32, 0);
    gw_data(w, 256);
}
static void bad_ne_zero(gguf_writer *w) { gw_tensor_info(w, "t", 2, (const uint64_t[]){32, 0}, COPSE_Q_F32, 0); gw_data(w, 256); }
static void bad_ne_overflow(gguf_writer *w)
{
    gw_tensor_info(w, "t", 3, (const uint64_t[]){1ull << 32, 1ull << 32, 1ull << 32}, COPSE_Q_F32, 0);
    gw_data(w, 256);
}
static void bad_ne_huge(gguf_writer *w) { gw_tensor_info(w, "t", 1, (const uint64_t[]){UINT64_MAX}, COPSE_Q_I8, 0); gw_data(w, 256); }
static void bad_bytes_overflow(gguf_writer *w)
{
    gw_tensor_info(w, "t", 2, (const uint64_t[]){1ull << 61, 2}, COPSE_Q_F32, 0);
    gw_data(w, 256);
}
static void bad_block(gguf_writer *w) { gw_tensor_info(w, "t", 1, (const uint64_t[]){33}, COPSE_Q_Q4_0, 0); gw_data(w, 256); }
static void bad_block_k(gguf_writer *w) { gw_tensor_info(w, "t", 2, (const uint64_t[]){128, 2}, COPSE_Q_Q4_K, 0); gw_data(w, 256); }
static void bad_misaligned(gguf_writer *w) { gw_tensor_info(w, "t", 1, ne32, COPSE_Q_I8, 16); gw_data(w, 256); }
static void bad_misaligned_64(gguf_writer *w)
{
    gw_kv_u32(w, "general.alignment", 64);
    w->alignment = 64;
    gw_tensor_info(w, "t", 1, ne32, COPSE_Q_I8, 32);
    gw_data(w, 256);
}
static void bad_offset(gguf_writer *w)
{
    gw_tensor(w, "token_embd.weight", 1, ne32, COPSE_Q_F32);
    gw_tensor_info(w, "blk.3.attn_q.weight", 1, ne32, COPSE_Q_F32, 1ull << 40);
}
static void bad_offset_max(gguf_writer *w)
{
    gw_tensor(w, "a", 1, ne32, COPSE_Q_F32);
    gw_tensor_info(w, "b", 1, ne32, COPSE_Q_F32, UINT64_MAX - 31);
}
static void bad_size(gguf_writer *w) { gw_tensor_info(w, "t", 1, ne64, COPSE_Q_F32, 0); gw_data(w, 255); }
static void bad_overlap(gguf_writer *w)
{
    gw_tensor(w, "a", 1, ne64, COPSE_Q_F32); /* [0, 256) */
    gw_tensor(w, "b", 1, ne32, COPSE_Q_F32); /* [256, 384) */
    gw_tensor_info(w, "c", 1, ne32, COPSE_Q_F32, 224);
}
static void bad_overlap_same(gguf_writer *w)
{
    gw_tensor(w, "a", 1, ne32, COPSE_Q_F32);
    gw_tensor_info(w, "b", 1, ne32, COPSE_Q_F32, 0);
}
static void bad_dup_tensor(gguf_writer *w)
{
    gw_tensor(w, "output.weight", 1, ne32, COPSE_Q_F32);
    gw_tensor(w, "x", 1, ne32, COPSE_Q_F32);
    gw_tensor(w, "output.weight", 1, ne32, COPSE_Q_F32);
}
static void bad_tensor_name(gguf_writer *w) { gw_u64(&w->ti, 1ull << 40); gw_zeros(&w->ti, 64); w->n_tensors = 1; }
static void bad_name_escaped(gguf_writer *w) { gw_u32(gw_key(w, "a\x01'b\\", 13), 0); }
static void bad_name_long(gguf_writer *w)
{
    char key[300];
    memset(key, 'k', sizeof key - 1);
    key[sizeof key - 1] = '\0';
    gw_u32(gw_key(w, key, 13), 0);
}

static const struct bad_case {
    const char *what;
    void (*build)(gguf_writer *w);
    const char *want; /* substring of the message */
} bad_cases[] = {
    {"bad magic", bad_magic, "header: bad magic 0x12345678 (not a GGUF file)"},
    {"version 0", bad_v0, "header: unknown GGUF version 0"},
    {"version 1", bad_v1, "header: GGUF version 1 is not supported"},
    {"version 4", bad_v4, "header: unknown GGUF version 4"},
    {"version max", bad_vmax, "header: unknown GGUF version 4294967295"},
    {"big-endian", bad_big_endian, "header: big-endian GGUF"},
    {"kv count 2^60", bad_kv_count, "header: kv count 1152921504606846976 too large"},
    {"kv count max", bad_kv_count_max, "header: kv count"},
    {"tensor count 2^60", bad_tensor_count, "header: tensor count 1152921504606846976 too large"},
    {"tensor count after kvs", bad_tensor_count_after_kvs, "header: tensor count 2 too large for the 0 bytes after the kvs"},
    {"key length 2^63", bad_key_len, "kv 0: key length 9223372036854775808 past end of file"},
    {"key past end", bad_key_len_past_end, "kv 0: key length 20 past end of file"},
    {"kv type 13", bad_kv_type, "kv 0 'x': unknown value type 13"},
    {"kv type max", bad_kv_type_max, "kv 0 'x': unknown value type 4294967295"},
    {"string past end", bad_str_len, "kv 0 'general.name': value string length 99999 past end of file"},
    {"string length max", bad_str_len_huge, "kv 0 'general.name': value string length 18446744073709551615"},
    {"string array past end", bad_strarr_len, "kv 1 'tokenizer.ggml.tokens': string 5 length 99999 past end of file"},
    {"string array count", bad_strarr_n, "kv 0 'tokenizer.ggml.tokens': array of 4611686018427387904 strings past end of file"},
    {"array count", bad_arr_n, "kv 0 'scores': array of 4611686018427387904 uint32"},
    {"array count max", bad_arr_n_max, "kv 0 'scores': array of 18446744073709551615 float64"},
    {"array type 13", bad_arr_type, "kv 0 'x': unknown array element type 13"},
    {"nested count", bad_nested_n, "kv 0 'x': array of 2305843009213693952 arrays"},
    {"nested type", bad_nested_type, "kv 0 'x': array 1: unknown array element type 99"},
    {"nested string", bad_nested_str, "kv 0 'x': array 0: string 1 length 1000 past end of file"},
    {"nested too deep", bad_nested_deep, "kv 0 'deep': array 0: array 0: array 0: array 0: array 0: array 0: array 0: arrays nested deeper than 8"},
    {"bool 2", bad_bool, "kv 0 'b': bool value 2"},
    {"bool array 7", bad_bool_arr, "kv 0 'b': bool 2 has value 7"},
    {"duplicate key", bad_dup_key, "kv 2 'general.name': duplicate key (first at kv 0)"},
    {"alignment 0", bad_align_0, "'general.alignment': 0 is not a nonzero power of two"},
    {"alignment 3", bad_align_3, "'general.alignment': 3 is not a nonzero power of two"},
    {"alignment uint64", bad_align_type, "'general.alignment': type uint64, must be uint32"},
    {"alignment string", bad_align_str, "'general.alignment': type string, must be uint32"},
    {"tensor type 99", bad_tensor_type, "tensor 't': unknown tensor type 99"},
    {"tensor type 4", bad_tensor_type_gap, "tensor 't': unknown tensor type 4"},
    {"n_dims 0", bad_ndims_0, "tensor 't': n_dims 0 out of range"},
    {"n_dims 5", bad_ndims_5, "tensor 't': n_dims 5 out of range"},
    {"ne 0", bad_ne_zero, "tensor 't': ne[1] is 0"},
    {"ne overflow", bad_ne_overflow, "tensor 't': element count overflows (ne[1] = 4294967296)"},
    {"ne max", bad_ne_huge, "tensor 't': element count overflows (ne[0]"},
    {"bytes overflow", bad_bytes_overflow, "tensor 't': byte size overflows"},
    {"block size", bad_block, "tensor 't': ne[0] = 33 is not a multiple of the q4_0 block size 32"},
    {"block size k", bad_block_k, "ne[0] = 128 is not a multiple of the q4_k block size 256"},
    {"misaligned", bad_misaligned, "tensor 't': data offset 16 is not a multiple of the alignment 32"},
    {"misaligned 64", bad_misaligned_64, "data offset 32 is not a multiple of the alignment 64"},
    {"offset past end", bad_offset, "tensor 'blk.3.attn_q.weight': data offset 1099511627776 + 128 bytes past end of file"},
    {"offset max", bad_offset_max, "tensor 'b': data offset 18446744073709551584 + 128 bytes past end of file"},
    {"size past end", bad_size, "tensor 't': data offset 0 + 256 bytes past end of file"},
    {"overlap", bad_overlap, "tensor 'c': data [224, 352) overlaps tensor 'a' [0, 256)"},
    {"overlap same offset", bad_overlap_same, "overlaps tensor"},
    {"duplicate tensor", bad_dup_tensor, "tensor 'output.weight': duplicate tensor name (tensors 0 and 2)"},
    {"tensor name length", bad_tensor_name, "tensor 0: name length 1099511627776 past end of file"},
    {"key escaped", bad_name_escaped, "kv 0 'a\\x01\\x27b\\x5c': unknown value type 13"},
    {"key long", bad_name_long, "kv 0 'kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk...': unknown"},
};

static void test_malformed(void)
{
    char err[1024];
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        const struct bad_case *c = &bad_cases[i];
        gguf_writer w;
        size_t size;
        gw_init(&w, 3);
        c->build(&w);
        uint8_t *buf = gw_finish(&w, &size);
        copse_status st = open_copy(buf, size, err, sizeof err, NULL);
        CHECK_STATUS(st, COPSE_EFORMAT);
        CHECK_CONTAINS(err, c->want);
        if (st != COPSE_EFORMAT || !strstr(err, c->want))
            fprintf(stderr, "  in case '%s'\n", c->what);
        /* Its prefixes are malformed too, and must not crash either. */
        for (size_t n = 0; n < size; n++)
            CHECK_STATUS(open_copy(buf, n, err, sizeof err, NULL), COPSE_EFORMAT);
        free(buf);
    }
}

/* A small error buffer truncates the message but stays NUL-terminated. */
static void test_small_err_buffer(void)
{
    char err[8];
    memset(err, 'x', sizeof err);
    gguf_writer w;
    size_t size;
    gw_init(&w, 3);
    w.magic = 0;
    uint8_t *buf = gw_finish(&w, &size);
    copse_gguf *g;
    CHECK_STATUS(copse__gguf_open_memory(buf, size, &g, err, sizeof err), COPSE_EFORMAT);
    CHECK(memchr(err, 0, sizeof err) != NULL);
    CHECK_STATUS(copse__gguf_open_memory(buf, size, &g, err, 0), COPSE_EFORMAT);
    free(buf);
}

/* ---------------------------------------------------------------- random byte flips */

static void test_byte_flips(void)
{
    char err[512];
    uint64_t seed = test_seed();
    size_t n_ok = 0, n_bad = 0, n_other = 0;
    for (int iter = 0; iter < 3000; iter++) {
        uint32_t version = 2 + (uint32_t)(test_rand(&seed) % 2);
        uint32_t al = sample_alignments[test_rand(&seed) % 4]; /* the small ones */
        size_t size;
        uint8_t *buf = build_sample(version, al, &size);
        int flips = 1 + (int)(test_rand(&seed) % 4);
        for (int f = 0; f < flips; f++) {
            size_t pos = (size_t)(test_rand(&seed) % size);
            switch (test_rand(&seed) % 4) {
            case 0: buf[pos] ^= (uint8_t)(1u << (test_rand(&seed) % 8)); break;
            case 1: buf[pos] = 0xff; break;
            case 2: buf[pos] = 0; break;
            default: buf[pos] = (uint8_t)test_rand(&seed); break;
            }
        }
        copse_status st = open_copy(buf, size, err, sizeof err, walk);
        if (st == COPSE_OK)
            n_ok++;
        else if (st == COPSE_EFORMAT)
            n_bad++;
        else if (n_other++ < 5)
            fprintf(stderr, "  flip iteration %d: %s (%s)\n", iter, copse_err_name(st), err);
        free(buf);
    }
    CHECK_INT_EQ(n_other, 0);
    CHECK(n_bad > 0);
    fprintf(stderr, "byte flips: %zu still valid, %zu malformed\n", n_ok, n_bad);
}

/* ---------------------------------------------------------------- real models */

static void check_model(const char *dir, const char *file, const char *arch)
{
    char path[4096], err[512];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    struct stat sb;
    if (stat(path, &sb) != 0) {
        fprintf(stderr, "skip: %s not found\n", path);
        return;
    }
    copse_gguf *g = NULL;
    copse_status st = copse__gguf_open(path, &g, err, sizeof err);
    CHECK_STATUS(st, COPSE_OK);
    if (st != COPSE_OK) {
        fprintf(stderr, "  %s\n", err);
        return;
    }
    CHECK_INT_EQ(copse__gguf_version(g), 3);
    CHECK_INT_EQ(copse__gguf_file_size(g), sb.st_size);
    copse_str s = {0};
    CHECK_STATUS(copse__gguf_get_str(g, "general.architecture", &s), COPSE_OK);
    CHECK(copse__str_eq(s, arch));
    size_t n = copse__gguf_n_tensors(g);
    CHECK(n > 0);
    const copse_gguf_array *tokens = NULL;
    CHECK_STATUS(copse__gguf_get_arr(g, "tokenizer.ggml.tokens", COPSE_GGUF_STRING, &tokens), COPSE_OK);
    CHECK(tokens && tokens->n > 1000 && tokens->strs);

    /* Every tensor's data lies inside the file; compare its first bytes with
     * what stdio reads at the same file offset. */
    FILE *fp = fopen(path, "rb");
    CHECK(fp != NULL);
    uint64_t size = copse__gguf_file_size(g), total = 0;
    for (size_t i = 0; i < n && fp; i++) {
        const copse_gguf_tensor *t = copse__gguf_tensor_at(g, i);
        uint64_t at = copse__gguf_data_offset(g) + t->offset;
        CHECK(at + t->nbytes <= size);
        CHECK(t->nbytes > 0);
        total += t->nbytes;
        uint8_t want[16];
        size_t k = t->nbytes < sizeof want ? (size_t)t->nbytes : sizeof want;
        CHECK(fseek(fp, (long)at, SEEK_SET) == 0 && fread(want, 1, k, fp) == k);
        CHECK(memcmp(want, t->data, k) == 0);
    }
    if (fp)
        fclose(fp);
    CHECK(total <= size);
    fprintf(stderr, "%s: %zu kvs, %zu tensors, %llu data bytes, alignment %u\n", file,
            copse__gguf_n_kv(g), n, (unsigned long long)total, copse__gguf_alignment(g));
    copse__gguf_close(g);
}

static void test_real_models(void)
{
    const char *dir = test_model_dir();
    if (!dir) {
        fprintf(stderr, "skip: no model directory\n");
        return;
    }
    check_model(dir, "SmolLM2-135M-Instruct.Q4_1.gguf", "llama");
    check_model(dir, "gemma-3-270m-q4_k_m.gguf", "gemma3");
}

/* ---------------------------------------------------------------- seed corpus */

static void write_seeds(void)
{
    const char *dir = getenv("COPSE_GGUF_SEED_DIR");
    if (!dir || !*dir)
        return;
    mkdir(dir, 0777);
    for (uint32_t version = 2; version <= 3; version++) {
        for (size_t k = 0; k < 3; k++) {
            char path[4096];
            size_t size;
            uint8_t *buf = build_sample(version, sample_alignments[k], &size);
            snprintf(path, sizeof path, "%s/sample-v%u-align%u.gguf", dir, version,
                     sample_alignments[k]);
            FILE *fp = fopen(path, "wb");
            CHECK(fp != NULL);
            if (fp) {
                CHECK(fwrite(buf, 1, size, fp) == size);
                fclose(fp);
            }
            free(buf);
        }
    }
    fprintf(stderr, "seed corpus written to %s\n", dir);
}

/* ---------------------------------------------------------------- main */

int main(void)
{
    test_type_names();
    test_minimal();
    test_valid_samples();
    test_open_path();
    test_truncation();
    test_malformed();
    test_small_err_buffer();
    test_byte_flips();
    test_real_models();
    write_seeds();
    return test_exit();
}
