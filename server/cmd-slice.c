/*
 * cmd-slice.c — `copse slice MODEL --layers N -o OUT.gguf`: write a copy of a
 * model that keeps its first N blocks (a draft model for model:FILE, or a
 * small test model). Everything that is not a block tensor (embeddings,
 * final norm, output head) is kept, and so is all metadata, with
 * `<arch>.block_count` set to N. Tensor data is copied as it is (no
 * requantization), streamed from the mapped input.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "commands.h"
#include "copse.h"
#include "gguf-write.h"
#include "gguf.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: copse slice MODEL --layers N -o OUT.gguf\n\n"
               "Writes a copy of MODEL with only its first N layers (blocks): a draft model for\n"
               "'--draft model:OUT.gguf' that shares the model's vocabulary, or a small test model.\n"
               "Embeddings, the final norm, the output head and all metadata are kept\n"
               "(<arch>.block_count becomes N); tensor data is copied unchanged.\n");
}

/* The block index of a tensor named "blk.<i>.<...>", or -1. */
static long block_of(copse_str name)
{
    if (name.len < 6 || memcmp(name.ptr, "blk.", 4) != 0)
        return -1;
    long v = 0;
    uint64_t i = 4;
    for (; i < name.len && name.ptr[i] >= '0' && name.ptr[i] <= '9'; i++) {
        v = v * 10 + (name.ptr[i] - '0');
        if (v > 1000000)
            return -1;
    }
    return (i > 4 && i < name.len && name.ptr[i] == '.') ? v : -1;
}

typedef struct slice_src {
    const copse_gguf_tensor **kept;
} slice_src;

static copse_status copy_data(void *ud, size_t i, uint64_t offset, void *buf, size_t n)
{
    const slice_src *s = ud;
    memcpy(buf, (const unsigned char *)s->kept[i]->data + offset, n);
    return COPSE_OK;
}

static void show_progress(uint64_t done, uint64_t total)
{
    if (isatty(STDERR_FILENO))
        fprintf(stderr, "\rwriting %3d%%", total ? (int)(done * 100 / total) : 100);
}

int copse__cmd_slice(int argc, char **argv)
{
    const char *in = NULL, *out = NULL;
    long layers = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if ((!strcmp(a, "--layers") || !strcmp(a, "-o")) && i + 1 < argc) {
            const char *v = argv[++i];
            if (a[1] == 'o') {
                out = v;
            } else {
                char *end;
                layers = strtol(v, &end, 10);
                if (!*v || *end || layers < 0 || layers > 1000000)
                    layers = 0; /* reported below as out of range */
            }
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "copse slice: unknown or incomplete option '%s'\n\n", a);
            usage(stderr);
            return 2;
        } else if (!in) {
            in = a;
        } else {
            fprintf(stderr, "copse slice: unexpected argument '%s'\n\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!in || !out || layers < 0) {
        fprintf(stderr, "copse slice: need MODEL, --layers N and -o OUT.gguf\n\n");
        usage(stderr);
        return 2;
    }

    char err[512] = "";
    copse_gguf *g = NULL;
    copse_status st = copse__gguf_open(in, &g, err, sizeof err);
    if (st != COPSE_OK) {
        fprintf(stderr, "copse slice: cannot read %s: %s\n", in, err[0] ? err : copse_strerror(st));
        return 1;
    }
    struct stat si, so;
    if (stat(in, &si) == 0 && stat(out, &so) == 0 && si.st_dev == so.st_dev && si.st_ino == so.st_ino) {
        fprintf(stderr, "copse slice: the output %s is the input model\n", out);
        copse__gguf_close(g);
        return 1;
    }
    copse_str arch;
    char key[96];
    uint32_t n_layer = 0;
    if (copse__gguf_get_str(g, "general.architecture", &arch) != COPSE_OK || arch.len == 0 || arch.len > 64) {
        fprintf(stderr, "copse slice: %s: metadata 'general.architecture' missing or bad\n", in);
        copse__gguf_close(g);
        return 1;
    }
    snprintf(key, sizeof key, "%.*s.block_count", (int)arch.len, arch.ptr);
    if (copse__gguf_get_u32(g, key, &n_layer) != COPSE_OK || n_layer == 0) {
        fprintf(stderr, "copse slice: %s: metadata '%s' missing or bad\n", in, key);
        copse__gguf_close(g);
        return 1;
    }
    if (layers < 1 || layers > (long)n_layer) {
        fprintf(stderr, "copse slice: --layers must be 1..%u (the model has %u layers)\n", n_layer, n_layer);
        copse__gguf_close(g);
        return 1;
    }

    copse_gguf_writer *w = NULL;
    const size_t n_t = copse__gguf_n_tensors(g);
    slice_src src = {.kept = calloc(n_t ? n_t : 1, sizeof *src.kept)};
    if (!src.kept || copse__gguf_writer_create(&w) != COPSE_OK) {
        fprintf(stderr, "copse slice: out of memory\n");
        free(src.kept);
        copse__gguf_close(g);
        return 1;
    }
    /* metadata: all of it, block_count changed; the writer sets its own alignment */
    st = COPSE_OK;
    for (size_t i = 0; i < copse__gguf_n_kv(g) && st == COPSE_OK; i++) {
        const copse_gguf_kv *kv = copse__gguf_kv_at(g, i);
        if (copse__str_eq(kv->key, key))
            st = copse__gguf_writer_add_u32(w, key, (uint32_t)layers);
        else if (!copse__str_eq(kv->key, "general.alignment"))
            st = copse__gguf_writer_add_kv(w, kv);
    }
    /* tensors: every non-block tensor, blocks below N */
    size_t n_kept = 0;
    for (size_t i = 0; i < n_t && st == COPSE_OK; i++) {
        const copse_gguf_tensor *t = copse__gguf_tensor_at(g, i);
        long b = block_of(t->name);
        if (b >= layers)
            continue;
        if (t->ne[2] != 1 || t->ne[3] != 1 || t->name.len >= 256) {
            snprintf(err, sizeof err, "tensor '%.*s': more than 2 dimensions or a long name are not supported",
                     (int)(t->name.len > 64 ? 64 : t->name.len), t->name.ptr);
            st = COPSE_EUNSUPPORTED;
            break;
        }
        char name[256];
        memcpy(name, t->name.ptr, (size_t)t->name.len);
        name[t->name.len] = 0;
        src.kept[n_kept++] = t;
        st = copse__gguf_writer_add_tensor(w, name, t->type, t->ne[0], t->ne[1]);
    }
    if (st == COPSE_OK)
        st = copse__gguf_writer_finish(w, out, copy_data, &src, show_progress, err, sizeof err);
    if (isatty(STDERR_FILENO))
        fprintf(stderr, "\n");
    copse__gguf_writer_destroy(w);
    free(src.kept);
    copse__gguf_close(g);
    if (st != COPSE_OK) {
        fprintf(stderr, "copse slice: %s\n", err[0] ? err : copse_strerror(st));
        return 1;
    }
    fprintf(stderr, "copse: wrote %s (%ld of %u layers, %zu tensors)\n", out, layers, n_layer, n_kept);
    return 0;
}
