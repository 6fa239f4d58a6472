/* GGUF writer: what it writes, the reader reads back the same. */
#include <stdlib.h>

#include "gguf-write.h"
#include "gguf.h"
#include "quant.h"
#include "test.h"

typedef struct pattern {
    uint64_t seed;
} pattern;

/* Byte b of tensor i is a hash of (seed, i, b): the reader can check every byte. */
static uint8_t byte_at(uint64_t seed, size_t i, uint64_t b)
{
    uint64_t s = seed ^ (i << 40) ^ b;
    return (uint8_t)(test_rand(&s) >> 56);
}

static copse_status fill(void *ud, size_t i, uint64_t offset, void *buf, size_t n)
{
    const pattern *p = ud;
    for (size_t j = 0; j < n; j++)
        ((uint8_t *)buf)[j] = byte_at(p->seed, i, offset + j);
    return COPSE_OK;
}

static copse_status fail_fill(void *ud, size_t i, uint64_t offset, void *buf, size_t n)
{
    (void)ud, (void)i, (void)offset, (void)buf, (void)n;
    return COPSE_EIO;
}

int main(void)
{
    uint64_t seed = test_seed();
    char path[] = "/tmp/copse-test-gguf-write-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);

    copse_gguf_writer *w;
    CHECK_STATUS(copse__gguf_writer_create(&w), COPSE_OK);
    CHECK_STATUS(copse__gguf_writer_add_str(w, "general.architecture", "llama"), COPSE_OK);
    CHECK_STATUS(copse__gguf_writer_add_u32(w, "llama.block_count", 7), COPSE_OK);
    CHECK_STATUS(copse__gguf_writer_add_f32(w, "llama.rope.freq_base", 12345.5f), COPSE_OK);
    CHECK_STATUS(copse__gguf_writer_add_bool(w, "x.flag", 1), COPSE_OK);
    /* tensors of block types whose sizes do not divide the writer's chunk */
    const struct { const char *name; uint32_t type; uint64_t ne0, ne1; } ts[] = {
        {"a", COPSE_Q_F32, 5, 1},
        {"b", COPSE_Q_Q4_0, 64, 3},
        {"c", COPSE_Q_Q4_1, 32 * 1000, 70},   /* 2.2 MB: several chunks */
        {"d", COPSE_Q_Q8_0, 96, 5},
        {"e", COPSE_Q_F16, 3, 3},
    };
    const size_t nt = sizeof ts / sizeof ts[0];
    for (size_t i = 0; i < nt; i++)
        CHECK_STATUS(copse__gguf_writer_add_tensor(w, ts[i].name, ts[i].type, ts[i].ne0, ts[i].ne1), COPSE_OK);
    CHECK_STATUS(copse__gguf_writer_add_tensor(w, "bad", COPSE_Q_Q4_0, 33, 1), COPSE_EINVAL);
    pattern p = {.seed = seed};
    char err[256];
    CHECK_STATUS(copse__gguf_writer_finish(w, path, fill, &p, NULL, err, sizeof err), COPSE_OK);

    copse_gguf *g = NULL;
    CHECK_STATUS(copse__gguf_open(path, &g, err, sizeof err), COPSE_OK);
    if (g) {
        copse_str s;
        uint32_t u;
        float f;
        bool b;
        CHECK_STATUS(copse__gguf_get_str(g, "general.architecture", &s), COPSE_OK);
        CHECK(copse__str_eq(s, "llama"));
        CHECK_STATUS(copse__gguf_get_u32(g, "llama.block_count", &u), COPSE_OK);
        CHECK_INT_EQ(u, 7);
        CHECK_STATUS(copse__gguf_get_f32(g, "llama.rope.freq_base", &f), COPSE_OK);
        CHECK(f == 12345.5f);
        CHECK_STATUS(copse__gguf_get_bool(g, "x.flag", &b), COPSE_OK);
        CHECK(b);
        CHECK_INT_EQ(copse__gguf_n_tensors(g), nt);
        for (size_t i = 0; i < nt; i++) {
            const copse_gguf_tensor *t = copse__gguf_find_tensor(g, ts[i].name);
            CHECK(t != NULL);
            if (!t)
                continue;
            CHECK_INT_EQ(t->type, ts[i].type);
            CHECK_INT_EQ(t->ne[0], ts[i].ne0);
            CHECK_INT_EQ(t->ne[1], ts[i].ne1);
            uint64_t bad = 0;
            for (uint64_t j = 0; j < t->nbytes; j++)
                bad += ((const uint8_t *)t->data)[j] != byte_at(seed, i, j);
            CHECK_INT_EQ(bad, 0);
        }

        /* copying every entry of an open file (arrays included) gives the same metadata */
        copse_gguf_writer *w2;
        CHECK_STATUS(copse__gguf_writer_create(&w2), COPSE_OK);
        for (size_t i = 0; i < copse__gguf_n_kv(g); i++)
            CHECK_STATUS(copse__gguf_writer_add_kv(w2, copse__gguf_kv_at(g, i)), COPSE_OK);
        char path2[] = "/tmp/copse-test-gguf-write-XXXXXX";
        close(mkstemp(path2));
        CHECK_STATUS(copse__gguf_writer_finish(w2, path2, fill, &p, NULL, err, sizeof err), COPSE_OK);
        copse_gguf *g2 = NULL;
        CHECK_STATUS(copse__gguf_open(path2, &g2, err, sizeof err), COPSE_OK);
        if (g2) {
            CHECK_INT_EQ(copse__gguf_n_kv(g2), copse__gguf_n_kv(g));
            CHECK_STATUS(copse__gguf_get_f32(g2, "llama.rope.freq_base", &f), COPSE_OK);
            CHECK(f == 12345.5f);
        }
        copse__gguf_close(g2);
        copse__gguf_writer_destroy(w2);
        remove(path2);
    }
    copse__gguf_close(g);
    copse__gguf_writer_destroy(w);

    /* a failing data source: an error naming the path, and no file left behind */
    CHECK_STATUS(copse__gguf_writer_create(&w), COPSE_OK);
    CHECK_STATUS(copse__gguf_writer_add_tensor(w, "a", COPSE_Q_F32, 4, 1), COPSE_OK);
    CHECK_STATUS(copse__gguf_writer_finish(w, path, fail_fill, NULL, NULL, err, sizeof err), COPSE_EIO);
    CHECK(strstr(err, path) != NULL);
    CHECK(access(path, F_OK) != 0);
    CHECK_STATUS(copse__gguf_writer_finish(w, "/nonexistent-dir/x.gguf", fill, &p, NULL, err, sizeof err),
                 COPSE_EIO);
    CHECK(strstr(err, "/nonexistent-dir/x.gguf") != NULL);
    copse__gguf_writer_destroy(w);
    remove(path);
    return test_exit();
}
