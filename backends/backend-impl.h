/*
 * backend-impl.h — the interface every backend implements (internal).
 *
 * Three levels: registration -> device -> queue, plus buffers. Every object is
 * { interface by value, owner, void *ctx }. Entries marked (optional) may be
 * NULL; the core then supplies a fallback or reports COPSE_EUNSUPPORTED.
 *
 * This is the foundation sketch: registration, devices and buffers are real;
 * the compute ops (embed, rms_norm, rope, add, swiglu, matmul, kv_store,
 * attention, verify, kv_commit) join the queue interface with the CPU
 * inference work, each with a CPU scalar reference.
 *
 * Threading: registration and device queries are thread-safe. A queue is used
 * by one thread at a time; work on one queue runs in submission order.
 */
#ifndef COPSE_BACKEND_IMPL_H
#define COPSE_BACKEND_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "copse.h"

#define COPSE_BACKEND_API_VERSION 1

typedef struct copse_backend_reg copse_backend_reg;
typedef struct copse_backend_dev copse_backend_dev;
typedef struct copse_backend_buffer copse_backend_buffer;

/* ---------------------------------------------------------------- device */

typedef enum copse_dev_kind {
    COPSE_DEV_CPU,
    COPSE_DEV_GPU,
    COPSE_DEV_ACCEL,
} copse_dev_kind;

typedef struct copse_dev_props {
    char name[128];        /* "cpu: Intel(R) Xeon(R) ...", "cuda:0 NVIDIA H100" */
    char features[256];    /* space-separated, e.g. "avx2 avx512f avx512vnni" */
    copse_dev_kind kind;
    uint64_t memory_total; /* bytes; 0 if unknown */
    uint64_t memory_free;  /* bytes; 0 if unknown */
    int compute_units;     /* cores / SMs / CUs */
} copse_dev_props;

typedef struct copse_backend_buffer_i {
    void (*free)(copse_backend_buffer *buf);
    /* Host pointer if the memory is host-visible, else NULL. (optional) */
    void *(*host_ptr)(copse_backend_buffer *buf);
    copse_status (*upload)(copse_backend_buffer *buf, size_t offset, const void *src, size_t n);
    copse_status (*download)(copse_backend_buffer *buf, size_t offset, void *dst, size_t n);
} copse_backend_buffer_i;

struct copse_backend_buffer {
    copse_backend_buffer_i iface;
    copse_backend_dev *dev; /* owner */
    size_t size;
    void *ctx;
};

typedef struct copse_backend_dev_i {
    void (*get_props)(const copse_backend_dev *dev, copse_dev_props *out);
    copse_status (*buffer_alloc)(copse_backend_dev *dev, size_t size, copse_backend_buffer **out);
} copse_backend_dev_i;

struct copse_backend_dev {
    copse_backend_dev_i iface;
    copse_backend_reg *reg; /* owner */
    void *ctx;
};

/* ---------------------------------------------------------------- registration */

typedef struct copse_backend_reg_i {
    size_t (*dev_count)(copse_backend_reg *reg);
    copse_backend_dev *(*dev_get)(copse_backend_reg *reg, size_t i);
    /* Backend-specific knobs by name (e.g. "cpu.n_threads"), instead of new
     * vtable slots. (optional) */
    void *(*get_proc)(copse_backend_reg *reg, const char *name);
} copse_backend_reg_i;

struct copse_backend_reg {
    int api_version; /* COPSE_BACKEND_API_VERSION */
    const char *name; /* "cpu", "cuda", "hip", "opencl" */
    copse_backend_reg_i iface;
    void *ctx;
};

/* Each backend folder exports exactly one of these. */
copse_backend_reg *copse_backend_cpu_reg(void);

/* ---------------------------------------------------------------- core registry */

/* Registered backends, CPU last (the fallback). */
size_t copse__backend_count(void);
copse_backend_reg *copse__backend_get(size_t i);
/* By name ("cpu"); NULL if not built in. */
copse_backend_reg *copse__backend_find(const char *name);

#endif /* COPSE_BACKEND_IMPL_H */
