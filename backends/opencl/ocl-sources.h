/*
 * ocl-sources.h — the OpenCL C sources embedded at build time (internal).
 *
 * meson runs embed-cl.py over the backends/opencl/kernels files; entry 0 is
 * common.cl (prepended to every other file when it is built), the others
 * are built as one program each.
 */
#ifndef COPSE_OCL_SOURCES_H
#define COPSE_OCL_SOURCES_H

#include <stddef.h>

typedef struct copse_ocl_source {
    const char *name; /* file name, e.g. "matmul.cl" */
    const char *text; /* NUL-terminated */
    size_t len;
} copse_ocl_source;

extern const copse_ocl_source copse__ocl_sources[];
extern const size_t copse__ocl_n_sources;

#endif /* COPSE_OCL_SOURCES_H */
