/*
 * registry.c — the fixed table of backends built into this copse, CPU last.
 */
#include <string.h>

#include "backend-impl.h"

typedef copse_backend_reg *(*reg_fn)(void);

static const reg_fn backend_table[] = {
    /* device backends go first, each under #if COPSE_HAVE_<B> */
#if COPSE_HAVE_OPENCL
    copse_backend_opencl_reg,
#endif
#if COPSE_HAVE_CUDA
    copse_backend_cuda_reg,
#endif
#if COPSE_HAVE_HIP
    copse_backend_hip_reg,
#endif
    /* the CUDA kernels on a CPU simulator: tests only, never picked unless named */
#if COPSE_HAVE_GPUSIM
    copse_backend_gpusim_reg,
#endif
    copse_backend_cpu_reg,
};

size_t copse__backend_count(void)
{
    return sizeof backend_table / sizeof backend_table[0];
}

copse_backend_reg *copse__backend_get(size_t i)
{
    return i < copse__backend_count() ? backend_table[i]() : NULL;
}

copse_backend_reg *copse__backend_find(const char *name)
{
    for (size_t i = 0; i < copse__backend_count(); i++) {
        copse_backend_reg *r = backend_table[i]();
        if (r && strcmp(r->name, name) == 0)
            return r;
    }
    return NULL;
}
