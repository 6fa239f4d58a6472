/*
 * error.h — writing error messages into caller buffers (internal).
 */
#ifndef COPSE_CORE_ERROR_H
#define COPSE_CORE_ERROR_H

#include <stddef.h>

#include "copse.h"

#if defined(__GNUC__)
#define COPSE_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define COPSE_PRINTF(a, b)
#endif

/* printf-style message into err[0..err_size) (err may be NULL); returns status,
 * so callers write `return copse__errorf(err, n, COPSE_EFORMAT, "...", ...);`. */
copse_status copse__errorf(char *err, size_t err_size, copse_status status, const char *fmt, ...)
    COPSE_PRINTF(4, 5);

#endif /* COPSE_CORE_ERROR_H */
