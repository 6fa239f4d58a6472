/*
 * ocl-program.c — building the kernel programs of a device, with an on-disk
 * cache of program binaries.
 *
 * Each kernel file (kernels/NAME.cl, embedded at build time by embed-cl.py) is
 * one program: common.cl's text followed by the file's. Sources can be
 * replaced for development or testing: COPSE_OPENCL_KERNEL_DIR=DIR reads
 * DIR/<file>.cl instead of the embedded text where such a file exists, and
 * COPSE_OPENCL_INJECT_BUILD_ERROR=1 appends a syntax error to matmul.cl
 * (to test the failure path). A build failure names the file and the
 * device and carries the compiler's log.
 *
 * Cache: $COPSE_OPENCL_CACHE_DIR, else $XDG_CACHE_HOME/copse/opencl, else
 * ~/.cache/copse/opencl; COPSE_OPENCL_CACHE=0 turns it off. An entry is
 * keyed by a 64-bit FNV-1a hash of the device name, vendor, device and
 * driver versions, platform version, build options and the full source
 * text; it holds a magic, the binary's size and hash, and the binary. An
 * entry that is short, has a wrong magic, size or hash, or that the
 * driver refuses, is ignored, and the program is built from source and
 * the entry rewritten (written to a temporary file, then renamed).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ocl-impl.h"
#include "ocl-sources.h"

static const char *const prog_files[OCL_PROG_COUNT] = {"elementwise.cl", "matmul.cl", "attention.cl"};

#define CACHE_MAGIC "COPSECLB"

/* ---------------------------------------------------------------- hashing */

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static uint64_t fnv_str(uint64_t h, const char *s)
{
    return fnv(h, s, strlen(s) + 1);
}

#define FNV_INIT 0xcbf29ce484222325ull

/* ---------------------------------------------------------------- sources */

static const copse_ocl_source *embedded(const char *name)
{
    for (size_t i = 0; i < copse__ocl_n_sources; i++)
        if (strcmp(copse__ocl_sources[i].name, name) == 0)
            return &copse__ocl_sources[i];
    return NULL;
}

/* The text of a kernel file: from COPSE_OPENCL_KERNEL_DIR if it has the
 * file, else embedded. malloc'ed; NULL if missing or out of memory. */
static char *load_text(const char *name)
{
    const char *dir = getenv("COPSE_OPENCL_KERNEL_DIR");
    if (dir && *dir) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, name);
        FILE *f = fopen(path, "rb");
        if (f) {
            char *buf = NULL;
            long n = -1;
            if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
                (buf = malloc((size_t)n + 1)) != NULL && fread(buf, 1, (size_t)n, f) == (size_t)n) {
                buf[n] = 0;
                fclose(f);
                return buf;
            }
            free(buf);
            fclose(f);
            return NULL;
        }
    }
    const copse_ocl_source *s = embedded(name);
    return s ? strdup(s->text) : NULL;
}

/* common.cl + the file (+ an injected error); malloc'ed. */
static char *program_source(const char *name)
{
    char *common = load_text("common.cl"), *body = load_text(name);
    const char *inject = getenv("COPSE_OPENCL_INJECT_BUILD_ERROR");
    const char *bad = inject && strcmp(inject, "1") == 0 && strcmp(name, "matmul.cl") == 0
                          ? "\n__kernel void injected_error(void) { this is not OpenCL C }\n"
                          : "";
    char *src = NULL;
    if (common && body) {
        size_t n = strlen(common) + strlen(body) + strlen(bad) + 64;
        src = malloc(n);
        if (src)
            snprintf(src, n, "%s\n#line 1\n%s%s", common, body, bad);
    }
    free(common);
    free(body);
    return src;
}

/* ---------------------------------------------------------------- cache files */

static int cache_dir(char *out, size_t n)
{
    const char *c = getenv("COPSE_OPENCL_CACHE");
    if (c && strcmp(c, "0") == 0)
        return -1;
    const char *e = getenv("COPSE_OPENCL_CACHE_DIR");
    if (e && *e)
        return snprintf(out, n, "%s", e) < (int)n ? 0 : -1;
    const char *x = getenv("XDG_CACHE_HOME");
    if (x && *x)
        return snprintf(out, n, "%s/copse/opencl", x) < (int)n ? 0 : -1;
    const char *h = getenv("HOME");
    if (h && *h)
        return snprintf(out, n, "%s/.cache/copse/opencl", h) < (int)n ? 0 : -1;
    return -1;
}

static void mkdir_p(const char *dir)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", dir);
    for (char *p = tmp + 1; *p; p++) {
        if (*p == '/') {
            *p = 0;
            mkdir(tmp, 0755);
            *p = '/';
        }
    }
    mkdir(tmp, 0755);
}

/* The cached binary for key, malloc'ed, or NULL (absent or corrupt). */
static unsigned char *cache_read(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    unsigned char hdr[24];
    unsigned char *bin = NULL;
    if (fread(hdr, 1, sizeof hdr, f) != sizeof hdr || memcmp(hdr, CACHE_MAGIC, 8) != 0)
        goto bad;
    uint64_t n, h;
    memcpy(&n, hdr + 8, 8);
    memcpy(&h, hdr + 16, 8);
    if (n == 0 || n > ((uint64_t)1 << 30))
        goto bad;
    bin = malloc((size_t)n);
    if (!bin || fread(bin, 1, (size_t)n, f) != (size_t)n || fgetc(f) != EOF || fnv(FNV_INIT, bin, (size_t)n) != h)
        goto bad;
    fclose(f);
    *size = (size_t)n;
    return bin;
bad:
    free(bin);
    fclose(f);
    return NULL;
}

static void cache_write(const char *dir, const char *path, const unsigned char *bin, size_t n)
{
    mkdir_p(dir);
    char tmp[4300];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f)
        return;
    uint64_t n64 = n, h = fnv(FNV_INIT, bin, n);
    int ok = fwrite(CACHE_MAGIC, 1, 8, f) == 8 && fwrite(&n64, 8, 1, f) == 1 && fwrite(&h, 8, 1, f) == 1 &&
             fwrite(bin, 1, n, f) == n;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path) != 0)
        remove(tmp);
}

/* ---------------------------------------------------------------- building */

static char *build_log(ocl_dev *d, cl_program p)
{
    size_t n = 0;
    if (clGetProgramBuildInfo(p, d->id, CL_PROGRAM_BUILD_LOG, 0, NULL, &n) != CL_SUCCESS)
        return NULL;
    char *log = malloc(n + 1);
    if (log && clGetProgramBuildInfo(p, d->id, CL_PROGRAM_BUILD_LOG, n, log, NULL) != CL_SUCCESS)
        log[0] = 0;
    if (log)
        log[n] = 0;
    return log;
}

static copse_status build_one(ocl_dev *d, int which, const char *opts)
{
    const char *name = prog_files[which];
    char *src = program_source(name);
    if (!src)
        return copse__ocl_fail(d, COPSE_ENOMEM, "opencl: kernel file %s: cannot read its source%s", name,
                               getenv("COPSE_OPENCL_KERNEL_DIR") ? " (from COPSE_OPENCL_KERNEL_DIR)" : "");
    uint64_t key = FNV_INIT;
    key = fnv_str(key, d->name);
    key = fnv_str(key, d->vendor);
    key = fnv_str(key, d->version);
    key = fnv_str(key, d->driver);
    key = fnv_str(key, d->platform_version);
    key = fnv_str(key, opts);
    key = fnv_str(key, src);
    char dir[4096], path[4200];
    const bool cache = cache_dir(dir, sizeof dir) == 0;
    if (cache)
        snprintf(path, sizeof path, "%s/%.*s-%016llx.bin", dir, (int)(strlen(name) - 3), name,
                 (unsigned long long)key);

    cl_int e;
    cl_program p = NULL;
    if (cache) {
        size_t n = 0;
        unsigned char *bin = cache_read(path, &n);
        if (bin) {
            const unsigned char *bp = bin;
            cl_int bs;
            p = clCreateProgramWithBinary(d->ctx, 1, &d->id, &n, &bp, &bs, &e);
            if (p && (bs != CL_SUCCESS || clBuildProgram(p, 1, &d->id, opts, NULL, NULL) != CL_SUCCESS)) {
                clReleaseProgram(p);
                p = NULL;
            }
            free(bin);
        }
    }
    if (!p) {
        const char *s = src;
        p = clCreateProgramWithSource(d->ctx, 1, &s, NULL, &e);
        if (!p) {
            free(src);
            return copse__ocl_fail(d, copse__ocl_status(e), "opencl: kernel file %s: clCreateProgramWithSource: %s",
                                   name, copse__ocl_errname(e));
        }
        e = clBuildProgram(p, 1, &d->id, opts, NULL, NULL);
        if (e != CL_SUCCESS) {
            char *log = build_log(d, p);
            copse__ocl_fail(d, COPSE_EIO, "opencl: kernel file %s failed to build for %s (%s): %s; build log:\n%s",
                            name, d->name, d->driver, copse__ocl_errname(e), log && *log ? log : "(empty)");
            free(log);
            clReleaseProgram(p);
            free(src);
            return COPSE_EIO;
        }
        size_t n = 0;
        if (cache && clGetProgramInfo(p, CL_PROGRAM_BINARY_SIZES, sizeof n, &n, NULL) == CL_SUCCESS && n > 0) {
            unsigned char *bin = malloc(n);
            if (bin && clGetProgramInfo(p, CL_PROGRAM_BINARIES, sizeof bin, &bin, NULL) == CL_SUCCESS)
                cache_write(dir, path, bin, n);
            free(bin);
        }
    }
    free(src);
    d->prog[which] = p;
    return COPSE_OK;
}

copse_status copse__ocl_build_programs(ocl_dev *d)
{
    /* no -cl-mad-enable or fast-math: the kernels follow exact orders */
    const char *opts = d->correct_div ? "-cl-std=CL1.2 -cl-fp32-correctly-rounded-divide-sqrt" : "-cl-std=CL1.2";
    for (int i = 0; i < OCL_PROG_COUNT; i++) {
        copse_status st = build_one(d, i, opts);
        if (st != COPSE_OK)
            return st;
    }
    return COPSE_OK;
}
