/*
 * ocl-backend.c — the OpenCL backend's registration, device discovery,
 * contexts and buffers.
 *
 * Devices: every device of every platform, numbered in platform order then
 * device order (opencl:0, opencl:1, ...). No platform (no ICD, or the ICD
 * loader finds no vendor file) means zero devices, and the reason is kept:
 * get_proc("status_text") returns it for `copse info --devices` and for
 * the error of `--backend opencl`.
 *
 * Buffers: device memory (cl_mem), no host pointer; upload and download
 * are blocking transfers on the device's own in-order transfer queue, not
 * ordered with a compute queue's pending work (synchronize the queue
 * first, as the forward pass does). Allocation is checked against the
 * device's largest allocation and its memory (or COPSE_OPENCL_MEM_LIMIT
 * bytes, a knob for testing exhaustion): beyond them buffer_alloc returns
 * COPSE_ENOMEM with a message in get_proc("dev_last_error").
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ocl-impl.h"

/* ---------------------------------------------------------------- errors */

const char *copse__ocl_errname(cl_int e)
{
    switch (e) {
#define E_(x) \
    case x: return #x;
        E_(CL_SUCCESS) E_(CL_DEVICE_NOT_FOUND) E_(CL_DEVICE_NOT_AVAILABLE) E_(CL_COMPILER_NOT_AVAILABLE)
        E_(CL_MEM_OBJECT_ALLOCATION_FAILURE) E_(CL_OUT_OF_RESOURCES) E_(CL_OUT_OF_HOST_MEMORY)
        E_(CL_BUILD_PROGRAM_FAILURE) E_(CL_INVALID_VALUE) E_(CL_INVALID_DEVICE) E_(CL_INVALID_BINARY)
        E_(CL_INVALID_BUILD_OPTIONS) E_(CL_INVALID_PROGRAM) E_(CL_INVALID_KERNEL_NAME) E_(CL_INVALID_KERNEL_ARGS)
        E_(CL_INVALID_ARG_INDEX) E_(CL_INVALID_ARG_VALUE) E_(CL_INVALID_ARG_SIZE) E_(CL_INVALID_WORK_GROUP_SIZE)
        E_(CL_INVALID_WORK_ITEM_SIZE) E_(CL_INVALID_GLOBAL_WORK_SIZE) E_(CL_INVALID_BUFFER_SIZE)
        E_(CL_INVALID_MEM_OBJECT) E_(CL_INVALID_COMMAND_QUEUE) E_(CL_INVALID_CONTEXT) E_(CL_INVALID_PLATFORM)
        E_(CL_INVALID_OPERATION) E_(CL_INVALID_EVENT) E_(CL_LINK_PROGRAM_FAILURE)
        E_(CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST) E_(CL_MISALIGNED_SUB_BUFFER_OFFSET)
#undef E_
    case -1001: return "CL_PLATFORM_NOT_FOUND_KHR";
    default: return "unknown OpenCL error";
    }
}

copse_status copse__ocl_status(cl_int e)
{
    switch (e) {
    case CL_SUCCESS: return COPSE_OK;
    case CL_MEM_OBJECT_ALLOCATION_FAILURE:
    case CL_OUT_OF_RESOURCES:
    case CL_OUT_OF_HOST_MEMORY:
    case CL_INVALID_BUFFER_SIZE: return COPSE_ENOMEM;
    default: return COPSE_EIO;
    }
}

copse_status copse__ocl_fail(ocl_dev *d, copse_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->last_error, sizeof d->last_error, fmt, ap);
    va_end(ap);
    return st;
}

/* ---------------------------------------------------------------- discovery */

#define OCL_MAX_DEVICES 16

static struct {
    pthread_once_t once;
    size_t n;
    ocl_dev devs[OCL_MAX_DEVICES];
    char status[256]; /* why there are no devices, else "" */
} g_ocl = {.once = PTHREAD_ONCE_INIT};

static copse_backend_reg ocl_reg;
static const copse_backend_dev_i ocl_dev_i;

static void dev_str(cl_device_id id, cl_device_info what, char *out, size_t n)
{
    out[0] = 0;
    if (clGetDeviceInfo(id, what, n, out, NULL) != CL_SUCCESS)
        snprintf(out, n, "?");
    out[n - 1] = 0;
}

static void discover(void)
{
    cl_uint np = 0;
    cl_int e = clGetPlatformIDs(0, NULL, &np);
    if (e != CL_SUCCESS || np == 0) {
        snprintf(g_ocl.status, sizeof g_ocl.status,
                 "no OpenCL platform found (clGetPlatformIDs: %s; is an ICD such as pocl-opencl-icd installed, "
                 "and OCL_ICD_VENDORS unset or pointing at its .icd files?)",
                 e != CL_SUCCESS ? copse__ocl_errname(e) : "0 platforms");
        return;
    }
    cl_platform_id plats[8];
    if (np > 8)
        np = 8;
    if ((e = clGetPlatformIDs(np, plats, NULL)) != CL_SUCCESS) {
        snprintf(g_ocl.status, sizeof g_ocl.status, "clGetPlatformIDs: %s", copse__ocl_errname(e));
        return;
    }
    for (cl_uint p = 0; p < np && g_ocl.n < OCL_MAX_DEVICES; p++) {
        cl_device_id ids[OCL_MAX_DEVICES];
        cl_uint nd = 0;
        if (clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, OCL_MAX_DEVICES, ids, &nd) != CL_SUCCESS)
            continue;
        if (nd > OCL_MAX_DEVICES)
            nd = OCL_MAX_DEVICES;
        for (cl_uint i = 0; i < nd && g_ocl.n < OCL_MAX_DEVICES; i++) {
            ocl_dev *d = &g_ocl.devs[g_ocl.n];
            memset(d, 0, sizeof *d);
            d->index = (int)g_ocl.n;
            d->platform = plats[p];
            d->id = ids[i];
            dev_str(ids[i], CL_DEVICE_NAME, d->name, sizeof d->name);
            dev_str(ids[i], CL_DEVICE_VENDOR, d->vendor, sizeof d->vendor);
            dev_str(ids[i], CL_DRIVER_VERSION, d->driver, sizeof d->driver);
            dev_str(ids[i], CL_DEVICE_VERSION, d->version, sizeof d->version);
            clGetPlatformInfo(plats[p], CL_PLATFORM_NAME, sizeof d->platform_name, d->platform_name, NULL);
            clGetPlatformInfo(plats[p], CL_PLATFORM_VERSION, sizeof d->platform_version, d->platform_version, NULL);
            d->platform_name[sizeof d->platform_name - 1] = 0;
            d->platform_version[sizeof d->platform_version - 1] = 0;
            clGetDeviceInfo(ids[i], CL_DEVICE_TYPE, sizeof d->type, &d->type, NULL);
            clGetDeviceInfo(ids[i], CL_DEVICE_GLOBAL_MEM_SIZE, sizeof d->mem_total, &d->mem_total, NULL);
            clGetDeviceInfo(ids[i], CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof d->max_alloc, &d->max_alloc, NULL);
            clGetDeviceInfo(ids[i], CL_DEVICE_MAX_COMPUTE_UNITS, sizeof d->compute_units, &d->compute_units, NULL);
            cl_device_fp_config fp = 0;
            d->fp64 = clGetDeviceInfo(ids[i], CL_DEVICE_DOUBLE_FP_CONFIG, sizeof fp, &fp, NULL) == CL_SUCCESS && fp;
            fp = 0;
            clGetDeviceInfo(ids[i], CL_DEVICE_SINGLE_FP_CONFIG, sizeof fp, &fp, NULL);
            d->correct_div = (fp & CL_FP_CORRECTLY_ROUNDED_DIVIDE_SQRT) != 0;
            d->mem_limit = d->mem_total;
            const char *lim = getenv("COPSE_OPENCL_MEM_LIMIT");
            if (lim && *lim)
                d->mem_limit = strtoull(lim, NULL, 0);
            pthread_mutex_init(&d->lock, NULL);
            d->base.iface = ocl_dev_i;
            d->base.reg = &ocl_reg;
            d->base.ctx = d;
            g_ocl.n++;
        }
    }
    if (g_ocl.n == 0)
        snprintf(g_ocl.status, sizeof g_ocl.status, "%u OpenCL platform%s but no device", np, np == 1 ? "" : "s");
}

static void ensure_discovered(void)
{
    pthread_once(&g_ocl.once, discover);
}

/* ---------------------------------------------------------------- device open */

copse_status copse__ocl_dev_open(ocl_dev *d)
{
    pthread_mutex_lock(&d->lock);
    if (d->opened) {
        copse_status st = d->open_status;
        pthread_mutex_unlock(&d->lock);
        return st;
    }
    d->opened = true;
    cl_int e;
    cl_context_properties props[] = {CL_CONTEXT_PLATFORM, (cl_context_properties)d->platform, 0};
    d->ctx = clCreateContext(props, 1, &d->id, NULL, NULL, &e);
    copse_status st = COPSE_OK;
    if (!d->ctx) {
        st = copse__ocl_fail(d, copse__ocl_status(e), "opencl:%d %s: clCreateContext: %s", d->index, d->name,
                             copse__ocl_errname(e));
        goto done;
    }
    d->xfer = clCreateCommandQueue(d->ctx, d->id, 0, &e);
    if (!d->xfer) {
        st = copse__ocl_fail(d, copse__ocl_status(e), "opencl:%d %s: clCreateCommandQueue: %s", d->index, d->name,
                             copse__ocl_errname(e));
        goto done;
    }
    st = copse__ocl_build_programs(d);
done:
    d->open_status = st;
    pthread_mutex_unlock(&d->lock);
    return st;
}

/* ---------------------------------------------------------------- buffers */

static void ocl_buffer_free(copse_backend_buffer *buf)
{
    if (!buf)
        return;
    ocl_buffer *b = buf->ctx;
    pthread_mutex_lock(&b->dev->lock);
    b->dev->allocated -= buf->size;
    pthread_mutex_unlock(&b->dev->lock);
    clReleaseMemObject(b->mem);
    free(b);
    free(buf);
}

static copse_status ocl_buffer_upload(copse_backend_buffer *buf, size_t offset, const void *src, size_t n)
{
    if (offset > buf->size || n > buf->size - offset)
        return COPSE_ERANGE;
    if (n == 0)
        return COPSE_OK;
    ocl_buffer *b = buf->ctx;
    cl_int e = clEnqueueWriteBuffer(b->dev->xfer, b->mem, CL_TRUE, offset, n, src, 0, NULL, NULL);
    if (e != CL_SUCCESS) {
        pthread_mutex_lock(&b->dev->lock);
        copse__ocl_fail(b->dev, 0, "upload of %zu bytes: %s", n, copse__ocl_errname(e));
        pthread_mutex_unlock(&b->dev->lock);
    }
    return copse__ocl_status(e);
}

static copse_status ocl_buffer_download(copse_backend_buffer *buf, size_t offset, void *dst, size_t n)
{
    if (offset > buf->size || n > buf->size - offset)
        return COPSE_ERANGE;
    if (n == 0)
        return COPSE_OK;
    ocl_buffer *b = buf->ctx;
    cl_int e = clEnqueueReadBuffer(b->dev->xfer, b->mem, CL_TRUE, offset, n, dst, 0, NULL, NULL);
    if (e != CL_SUCCESS) {
        pthread_mutex_lock(&b->dev->lock);
        copse__ocl_fail(b->dev, 0, "download of %zu bytes: %s", n, copse__ocl_errname(e));
        pthread_mutex_unlock(&b->dev->lock);
    }
    return copse__ocl_status(e);
}

static const copse_backend_buffer_i ocl_buffer_i = {
    .free = ocl_buffer_free,
    .host_ptr = NULL,
    .upload = ocl_buffer_upload,
    .download = ocl_buffer_download,
};

static copse_status ocl_buffer_alloc(copse_backend_dev *dev, size_t size, copse_backend_buffer **out)
{
    *out = NULL;
    ocl_dev *d = ocl_dev_of(dev);
    copse_status st = copse__ocl_dev_open(d);
    if (st != COPSE_OK)
        return st;
    size_t alloc = size ? size : 64; /* zero-size cl_mem objects are invalid */
    pthread_mutex_lock(&d->lock);
    if (alloc > d->max_alloc) {
        st = copse__ocl_fail(d, COPSE_ENOMEM,
                             "opencl:%d: a buffer of %zu bytes exceeds the device's largest allocation (%llu bytes)",
                             d->index, size, (unsigned long long)d->max_alloc);
    } else if (d->allocated + alloc > d->mem_limit) {
        st = copse__ocl_fail(d, COPSE_ENOMEM,
                             "opencl:%d: out of device memory: %zu bytes wanted, %llu of %llu in use%s", d->index,
                             size, (unsigned long long)d->allocated, (unsigned long long)d->mem_limit,
                             getenv("COPSE_OPENCL_MEM_LIMIT") ? " (limit from COPSE_OPENCL_MEM_LIMIT)" : "");
    }
    if (st != COPSE_OK) {
        pthread_mutex_unlock(&d->lock);
        return st;
    }
    cl_int e;
    cl_mem mem = clCreateBuffer(d->ctx, CL_MEM_READ_WRITE, alloc, NULL, &e);
    if (!mem) {
        st = copse__ocl_fail(d, copse__ocl_status(e), "opencl:%d: clCreateBuffer(%zu bytes): %s", d->index, size,
                             copse__ocl_errname(e));
        pthread_mutex_unlock(&d->lock);
        return st;
    }
    d->allocated += size;
    pthread_mutex_unlock(&d->lock);
    copse_backend_buffer *buf = calloc(1, sizeof *buf);
    ocl_buffer *b = calloc(1, sizeof *b);
    if (!buf || !b) {
        free(buf);
        free(b);
        clReleaseMemObject(mem);
        pthread_mutex_lock(&d->lock);
        d->allocated -= size;
        pthread_mutex_unlock(&d->lock);
        return COPSE_ENOMEM;
    }
    b->mem = mem;
    b->dev = d;
    buf->iface = ocl_buffer_i;
    buf->dev = dev;
    buf->size = size;
    buf->ctx = b;
    *out = buf;
    return COPSE_OK;
}

/* ---------------------------------------------------------------- device */

static void ocl_get_props(const copse_backend_dev *dev, copse_dev_props *p)
{
    const ocl_dev *d = ocl_dev_of(dev);
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%.80s (%.40s)", d->name, d->platform_name);
    snprintf(p->features, sizeof p->features, "%s; driver %s;%s%s", d->version, d->driver, d->fp64 ? " fp64" : "",
             d->correct_div ? " correctly-rounded-div" : "");
    p->kind = (d->type & CL_DEVICE_TYPE_GPU) ? COPSE_DEV_GPU : (d->type & CL_DEVICE_TYPE_CPU) ? COPSE_DEV_CPU
                                                                                                : COPSE_DEV_ACCEL;
    p->memory_total = d->mem_limit;
    p->memory_free = d->mem_limit > d->allocated ? d->mem_limit - d->allocated : 0;
    p->compute_units = (int)d->compute_units;
}

static const copse_backend_dev_i ocl_dev_i = {
    .get_props = ocl_get_props,
    .buffer_alloc = ocl_buffer_alloc,
    .buffer_from_host = NULL,
    .queue_create = copse__ocl_queue_create,
};

/* ---------------------------------------------------------------- registration */

static size_t ocl_dev_count(copse_backend_reg *reg)
{
    (void)reg;
    ensure_discovered();
    return g_ocl.n;
}

static copse_backend_dev *ocl_dev_get(copse_backend_reg *reg, size_t i)
{
    (void)reg;
    ensure_discovered();
    return i < g_ocl.n ? &g_ocl.devs[i].base : NULL;
}

static const char *ocl_status_text(copse_backend_reg *reg)
{
    (void)reg;
    ensure_discovered();
    return g_ocl.status;
}

static const char *ocl_dev_last_error(copse_backend_dev *dev)
{
    return ocl_dev_of(dev)->last_error;
}

static void *ocl_get_proc(copse_backend_reg *reg, const char *name)
{
    (void)reg;
    if (strcmp(name, "status_text") == 0)
        return (void *)(uintptr_t)ocl_status_text;
    if (strcmp(name, "dev_last_error") == 0)
        return (void *)(uintptr_t)ocl_dev_last_error;
    return NULL;
}

static copse_backend_reg ocl_reg = {
    .api_version = COPSE_BACKEND_API_VERSION,
    .name = "opencl",
    .iface = {.dev_count = ocl_dev_count, .dev_get = ocl_dev_get, .get_proc = ocl_get_proc},
    .ctx = NULL,
};

copse_backend_reg *copse_backend_opencl_reg(void)
{
    return &ocl_reg;
}
