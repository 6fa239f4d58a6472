/*
 * dequant-tool.c — dump the reference dequantization of GGUF tensors, for the
 * Python cross-check against the `gguf` package (tests/model/test_dequant.py).
 *
 *   dequant-tool MODEL.gguf -
 *       Every tensor, in file order, to stdout as a stream of records:
 *         "tensor <index> <type> <n_elements> <name_len>\n" <name> "\n"
 *         <n_elements float32, little-endian>
 *       A tensor whose type has no dequantizer gives the same header with
 *       "skip" instead of "tensor" and no data. The stream ends with
 *       "end <n_tensors>\n".
 *
 *   dequant-tool MODEL.gguf OUT_DIR
 *       The same as files: OUT_DIR/<index>.f32 (raw float32 LE) per tensor,
 *       and OUT_DIR/index.tsv with "index\ttype\tn_elements\tname" lines.
 *
 *   dequant-tool --raw TYPE N IN.bin OUT.bin|-
 *       Dequantize N elements of TYPE (a name such as "q4_k", or a number)
 *       from a raw block buffer whose size must be exactly the row size.
 *
 * Memory stays bounded: tensors are converted in chunks of about 64K elements.
 * Exit status: 0 ok, 1 error, 2 usage.
 */
#include "gguf.h"
#include "quant.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK_ELEMS 65536

/* ---------------------------------------------------------------- output */

/* Write n floats as little-endian float32, whatever the host order. */
static int write_f32_le(FILE *f, const float *x, size_t n, unsigned char *scratch)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], sizeof u);
        scratch[4 * i + 0] = (unsigned char)(u);
        scratch[4 * i + 1] = (unsigned char)(u >> 8);
        scratch[4 * i + 2] = (unsigned char)(u >> 16);
        scratch[4 * i + 3] = (unsigned char)(u >> 24);
    }
    return fwrite(scratch, 4, n, f) == n ? 0 : -1;
}

/* Buffers for one chunk. */
typedef struct chunk_bufs {
    float *y;
    unsigned char *bytes;
} chunk_bufs;

/* Dequantize n elements of `type` from src to f, chunk by chunk. */
static int dequant_stream(uint32_t type, const unsigned char *src, uint64_t n, FILE *f, chunk_bufs *b,
                          const char *what)
{
    const copse_qtype_traits *t = copse__qtype_traits(type);
    uint64_t chunk = CHUNK_ELEMS / t->block_size * t->block_size;
    if (chunk == 0)
        chunk = t->block_size;
    while (n > 0) {
        uint64_t m = n < chunk ? n : chunk;
        copse_status st = copse__dequantize_row(type, src, b->y, (int64_t)m);
        if (st != COPSE_OK) {
            fprintf(stderr, "dequant-tool: %s: %s\n", what, copse_strerror(st));
            return -1;
        }
        if (write_f32_le(f, b->y, (size_t)m, b->bytes) != 0) {
            fprintf(stderr, "dequant-tool: %s: write failed: %s\n", what, strerror(errno));
            return -1;
        }
        src += m / t->block_size * t->type_size;
        n -= m;
    }
    return 0;
}

static int alloc_bufs(chunk_bufs *b)
{
    /* Largest block is 256 elements, so a chunk never exceeds CHUNK_ELEMS. */
    b->y = malloc(CHUNK_ELEMS * sizeof(float));
    b->bytes = malloc(CHUNK_ELEMS * 4);
    if (!b->y || !b->bytes) {
        fprintf(stderr, "dequant-tool: out of memory\n");
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- GGUF mode */

/* Elements of a tensor, or 0 with *ok false on overflow. */
static uint64_t tensor_elems(const copse_gguf_tensor *t, int *ok)
{
    uint64_t n = 1;
    *ok = 1;
    for (uint32_t d = 0; d < COPSE_GGUF_MAX_DIMS; d++) {
        if (t->ne[d] != 0 && n > UINT64_MAX / t->ne[d]) {
            *ok = 0;
            return 0;
        }
        n *= t->ne[d];
    }
    return n;
}

static int run_gguf(const char *path, const char *out)
{
    char err[512];
    copse_gguf *g = NULL;
    copse_status st = copse__gguf_open(path, &g, err, sizeof err);
    if (st != COPSE_OK) {
        fprintf(stderr, "dequant-tool: %s (%s)\n", err, copse_err_name(st));
        return 1;
    }

    int to_stdout = strcmp(out, "-") == 0;
    FILE *index = NULL;
    chunk_bufs b = {0};
    int rc = 1;
    if (alloc_bufs(&b) != 0)
        goto done;
    if (!to_stdout) {
        char p[4096];
        snprintf(p, sizeof p, "%s/index.tsv", out);
        index = fopen(p, "w");
        if (!index) {
            fprintf(stderr, "dequant-tool: %s: %s\n", p, strerror(errno));
            goto done;
        }
    }

    size_t nt = copse__gguf_n_tensors(g);
    for (size_t i = 0; i < nt; i++) {
        const copse_gguf_tensor *t = copse__gguf_tensor_at(g, i);
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)(t->name.len < 200 ? t->name.len : 200), t->name.ptr);

        int ok;
        uint64_t n = tensor_elems(t, &ok);
        uint64_t bytes = 0;
        const copse_qtype_traits *tr = copse__qtype_traits(t->type);
        if (!ok || !copse__qtype_row_bytes(t->type, n, &bytes) || bytes > t->nbytes ||
            (tr && t->ne[0] % tr->block_size != 0)) {
            fprintf(stderr, "dequant-tool: tensor '%s': shape does not fit type %s / size %" PRIu64 "\n",
                    name, copse__qtype_name(t->type), t->nbytes);
            goto done;
        }
        int can = tr && tr->can_dequantize;

        if (to_stdout) {
            printf("%s %zu %" PRIu32 " %" PRIu64 " %" PRIu64 "\n", can ? "tensor" : "skip", i, t->type, n,
                   t->name.len);
            fwrite(t->name.ptr, 1, (size_t)t->name.len, stdout);
            putchar('\n');
            if (can && dequant_stream(t->type, t->data, n, stdout, &b, name) != 0)
                goto done;
        } else {
            fprintf(index, "%zu\t%s\t%" PRIu64 "\t%s\n", i, copse__qtype_name(t->type), n, name);
            if (!can) {
                fprintf(stderr, "dequant-tool: tensor '%s': no dequantizer for %s, skipped\n", name,
                        copse__qtype_name(t->type));
                continue;
            }
            char p[4096];
            snprintf(p, sizeof p, "%s/%zu.f32", out, i);
            FILE *f = fopen(p, "wb");
            if (!f) {
                fprintf(stderr, "dequant-tool: %s: %s\n", p, strerror(errno));
                goto done;
            }
            int r = dequant_stream(t->type, t->data, n, f, &b, name);
            if (fclose(f) != 0 || r != 0)
                goto done;
        }
    }
    if (to_stdout)
        printf("end %zu\n", nt);
    rc = 0;

done:
    if (to_stdout && fflush(stdout) != 0)
        rc = 1;
    if (index && fclose(index) != 0)
        rc = 1;
    free(b.y);
    free(b.bytes);
    copse__gguf_close(g);
    return rc;
}

/* ---------------------------------------------------------------- raw mode */

/* A type by name ("q4_k") or number; UINT32_MAX if neither. */
static uint32_t parse_type(const char *s)
{
    for (uint32_t ty = 0; ty < COPSE_Q_TYPE_LIMIT; ty++)
        if (copse__qtype_traits(ty) && strcmp(copse__qtype_name(ty), s) == 0)
            return ty;
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *s == '\0' || *end != '\0' || v >= COPSE_Q_TYPE_LIMIT || !copse__qtype_traits((uint32_t)v))
        return UINT32_MAX;
    return (uint32_t)v;
}

static int run_raw(const char *type_s, const char *n_s, const char *in_path, const char *out_path)
{
    uint32_t type = parse_type(type_s);
    if (type == UINT32_MAX) {
        fprintf(stderr, "dequant-tool: unknown type '%s'\n", type_s);
        return 2;
    }
    char *end;
    errno = 0;
    unsigned long long n = strtoull(n_s, &end, 10);
    uint64_t bytes;
    if (errno || *n_s == '\0' || *end != '\0' || n > INT64_MAX || !copse__qtype_row_bytes(type, n, &bytes)) {
        fprintf(stderr, "dequant-tool: bad element count '%s' for %s\n", n_s, copse__qtype_name(type));
        return 2;
    }

    int rc = 1;
    unsigned char *in = NULL;
    FILE *fo = NULL;
    chunk_bufs b = {0};
    FILE *fi = fopen(in_path, "rb");
    if (!fi) {
        fprintf(stderr, "dequant-tool: %s: %s\n", in_path, strerror(errno));
        return 1;
    }
    if (bytes > SIZE_MAX || !(in = malloc(bytes ? (size_t)bytes : 1)) || alloc_bufs(&b) != 0) {
        fprintf(stderr, "dequant-tool: out of memory\n");
        goto done;
    }
    if (fread(in, 1, (size_t)bytes, fi) != bytes || fgetc(fi) != EOF) {
        fprintf(stderr, "dequant-tool: %s: size is not %" PRIu64 " bytes\n", in_path, bytes);
        goto done;
    }
    fo = strcmp(out_path, "-") == 0 ? stdout : fopen(out_path, "wb");
    if (!fo) {
        fprintf(stderr, "dequant-tool: %s: %s\n", out_path, strerror(errno));
        goto done;
    }
    if (dequant_stream(type, in, n, fo, &b, in_path) != 0)
        goto done;
    rc = 0;

done:
    if (fo && (fo == stdout ? fflush(fo) : fclose(fo)) != 0)
        rc = 1;
    fclose(fi);
    free(in);
    free(b.y);
    free(b.bytes);
    return rc;
}

/* ---------------------------------------------------------------- main */

int main(int argc, char **argv)
{
    if (argc == 6 && strcmp(argv[1], "--raw") == 0)
        return run_raw(argv[2], argv[3], argv[4], argv[5]);
    if (argc == 3 && argv[1][0] != '-')
        return run_gguf(argv[1], argv[2]);
    fprintf(stderr,
            "usage: dequant-tool MODEL.gguf OUT_DIR|-\n"
            "       dequant-tool --raw TYPE N IN.bin OUT.bin|-\n");
    return 2;
}
