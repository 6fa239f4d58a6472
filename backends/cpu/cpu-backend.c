/*
 * cpu-backend.c — the CPU backend's registration, device and host buffers.
 *
 * The CPU is always present. Its device reports the ISA features detected at
 * run time; kernels are picked from those (cpu-kernels.h: the kernel tables)
 * and run on queues (cpu-queue.h: thread pool and ops).
 *
 * Buffers are plain host memory: buffer_alloc owns a 64-byte aligned block;
 * buffer_from_host borrows the caller's memory (no copy; the caller keeps it
 * alive and frees it after the buffer).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../backend-impl.h"
#include "cpu-features.h"
#include "cpu-queue.h"

/* ---------------------------------------------------------------- buffers */

static void cpu_buffer_free(copse_backend_buffer *buf)
{
    if (!buf)
        return;
    free(buf->ctx);
    free(buf);
}

static void *cpu_buffer_host_ptr(copse_backend_buffer *buf)
{
    return buf->ctx;
}

static copse_status cpu_buffer_upload(copse_backend_buffer *buf, size_t offset, const void *src, size_t n)
{
    if (offset > buf->size || n > buf->size - offset)
        return COPSE_ERANGE;
    memcpy((char *)buf->ctx + offset, src, n);
    return COPSE_OK;
}

static copse_status cpu_buffer_download(copse_backend_buffer *buf, size_t offset, void *dst, size_t n)
{
    if (offset > buf->size || n > buf->size - offset)
        return COPSE_ERANGE;
    memcpy(dst, (const char *)buf->ctx + offset, n);
    return COPSE_OK;
}

static const copse_backend_buffer_i cpu_buffer_i = {
    .free = cpu_buffer_free,
    .host_ptr = cpu_buffer_host_ptr,
    .upload = cpu_buffer_upload,
    .download = cpu_buffer_download,
};

/* A borrowed buffer frees only its wrapper. */
static void cpu_host_buffer_free(copse_backend_buffer *buf)
{
    free(buf);
}

static const copse_backend_buffer_i cpu_host_buffer_i = {
    .free = cpu_host_buffer_free,
    .host_ptr = cpu_buffer_host_ptr,
    .upload = cpu_buffer_upload,
    .download = cpu_buffer_download,
};

/* ---------------------------------------------------------------- device */

#define CPU_BUFFER_ALIGN 64

static copse_status cpu_buffer_alloc(copse_backend_dev *dev, size_t size, copse_backend_buffer **out)
{
    *out = NULL;
    copse_backend_buffer *buf = calloc(1, sizeof *buf);
    if (!buf)
        return COPSE_ENOMEM;
    size_t rounded = (size + CPU_BUFFER_ALIGN - 1) / CPU_BUFFER_ALIGN * CPU_BUFFER_ALIGN;
    if (rounded < size || (buf->ctx = aligned_alloc(CPU_BUFFER_ALIGN, rounded ? rounded : CPU_BUFFER_ALIGN)) == NULL) {
        free(buf);
        return COPSE_ENOMEM;
    }
    buf->iface = cpu_buffer_i;
    buf->dev = dev;
    buf->size = size;
    *out = buf;
    return COPSE_OK;
}

static copse_status cpu_buffer_from_host(copse_backend_dev *dev, void *ptr, size_t size,
                                         copse_backend_buffer **out)
{
    *out = NULL;
    if (!ptr && size)
        return COPSE_EINVAL;
    copse_backend_buffer *buf = calloc(1, sizeof *buf);
    if (!buf)
        return COPSE_ENOMEM;
    buf->iface = cpu_host_buffer_i;
    buf->dev = dev;
    buf->size = size;
    buf->ctx = ptr;
    *out = buf;
    return COPSE_OK;
}

static copse_status cpu_queue_create(copse_backend_dev *dev, int n_threads, copse_backend_queue **out)
{
    return copse__cpu_queue_create(dev, n_threads, NULL, out);
}

static void cpu_get_props(const copse_backend_dev *dev, copse_dev_props *p)
{
    (void)dev;
    memset(p, 0, sizeof *p);
    p->kind = COPSE_DEV_CPU;
    char model[96];
    copse__cpu_model_name(model, sizeof model);
    snprintf(p->name, sizeof p->name, "cpu: %s", model);
    copse__cpu_features_string(copse__cpu_features(), p->features, sizeof p->features);
    long pages = sysconf(_SC_PHYS_PAGES), avail = sysconf(_SC_AVPHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    if (pages > 0 && psz > 0)
        p->memory_total = (uint64_t)pages * (uint64_t)psz;
    if (avail > 0 && psz > 0)
        p->memory_free = (uint64_t)avail * (uint64_t)psz;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    p->compute_units = n > 0 ? (int)n : 1;
}

/* ---------------------------------------------------------------- registration */

static copse_backend_reg cpu_reg;

static copse_backend_dev cpu_dev = {
    .iface =
        {
            .get_props = cpu_get_props,
            .buffer_alloc = cpu_buffer_alloc,
            .buffer_from_host = cpu_buffer_from_host,
            .queue_create = cpu_queue_create,
        },
    .reg = &cpu_reg,
    .ctx = NULL,
};

static size_t cpu_dev_count(copse_backend_reg *reg)
{
    (void)reg;
    return 1;
}

static copse_backend_dev *cpu_dev_get(copse_backend_reg *reg, size_t i)
{
    (void)reg;
    return i == 0 ? &cpu_dev : NULL;
}

static copse_backend_reg cpu_reg = {
    .api_version = COPSE_BACKEND_API_VERSION,
    .name = "cpu",
    .iface = {.dev_count = cpu_dev_count, .dev_get = cpu_dev_get, .get_proc = NULL},
    .ctx = NULL,
};

copse_backend_reg *copse_backend_cpu_reg(void)
{
    return &cpu_reg;
}
