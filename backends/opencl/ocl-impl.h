/*
 * ocl-impl.h — the OpenCL backend's internal objects (shared by its files).
 *
 * Discovery is lazy: the registration is a static object, and the first
 * dev_count / dev_get call enumerates every platform's devices (any type).
 * A device's context, its transfer queue and its programs are made on first
 * use (the first buffer or queue), under the device's lock; a failure there
 * is kept (with its message) and returned again by every later use.
 *
 * Programs: one per kernel file (common.cl prepended), built once per
 * device, their binaries cached on disk (ocl-program.c). Kernel objects are
 * per queue (clSetKernelArg is not thread-safe on a shared kernel).
 */
#ifndef COPSE_OCL_IMPL_H
#define COPSE_OCL_IMPL_H

#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "../backend-impl.h"

/* The kernel files built as programs (entry 0 of the embedded sources is
 * common.cl, prepended to each). */
enum { OCL_PROG_ELEMENTWISE, OCL_PROG_MATMUL, OCL_PROG_ATTENTION, OCL_PROG_COUNT };

typedef struct ocl_dev {
    copse_backend_dev base;
    int index; /* opencl:N */
    cl_platform_id platform;
    cl_device_id id;
    char name[128], vendor[96], driver[64], version[96], platform_name[96], platform_version[96];
    cl_device_type type;
    cl_ulong mem_total, max_alloc;
    cl_uint compute_units;
    bool fp64, correct_div;

    pthread_mutex_t lock;
    bool opened;             /* context, transfer queue and programs tried */
    copse_status open_status;
    cl_context ctx;
    cl_command_queue xfer;   /* buffer uploads and downloads */
    cl_program prog[OCL_PROG_COUNT];
    uint64_t mem_limit;      /* device memory (or COPSE_OPENCL_MEM_LIMIT) */
    uint64_t allocated;      /* bytes in live buffers, under lock */
    char last_error[4096];   /* the last failure's message, under lock */
} ocl_dev;

typedef struct ocl_buffer {
    cl_mem mem;
    ocl_dev *dev;
} ocl_buffer;

static inline ocl_dev *ocl_dev_of(const copse_backend_dev *d)
{
    return (ocl_dev *)d->ctx;
}

static inline cl_mem ocl_mem_of(const copse_backend_buffer *b)
{
    return ((const ocl_buffer *)b->ctx)->mem;
}

/* Name of an OpenCL error code ("CL_OUT_OF_RESOURCES"). */
const char *copse__ocl_errname(cl_int e);
/* The copse status for an OpenCL error (allocation failures: ENOMEM). */
copse_status copse__ocl_status(cl_int e);
/* Record a failure message on the device (printf style); returns st. */
copse_status copse__ocl_fail(ocl_dev *d, copse_status st, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Make the context, transfer queue and programs of a device (once). */
copse_status copse__ocl_dev_open(ocl_dev *d);

/* Build (or load from the on-disk cache) the programs of an opened device's
 * context into d->prog. Errors name the kernel file and carry the build log
 * (in d->last_error). Called with d->lock held. */
copse_status copse__ocl_build_programs(ocl_dev *d);

/* The queue of a device (ocl-queue.c). */
copse_status copse__ocl_queue_create(copse_backend_dev *dev, int n_threads, copse_backend_queue **out);

#endif /* COPSE_OCL_IMPL_H */
