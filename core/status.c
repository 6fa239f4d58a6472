/*
 * status.c — copse_strerror / copse_err_name, generated from COPSE_STATUS_MAP.
 */
#include "copse.h"

#include "error.h"

#include <stdarg.h>
#include <stdio.h>

COPSE_API const char *copse_strerror(int status)
{
    switch (status) {
#define STRERROR_CASE_(name, value, msg) \
    case COPSE_##name:                  \
        return msg;
        COPSE_STATUS_MAP(STRERROR_CASE_)
#undef STRERROR_CASE_
    }
    return "unknown status";
}

COPSE_API const char *copse_err_name(int status)
{
    switch (status) {
#define ERR_NAME_CASE_(name, value, msg) \
    case COPSE_##name:                  \
        return "COPSE_" #name;
        COPSE_STATUS_MAP(ERR_NAME_CASE_)
#undef ERR_NAME_CASE_
    }
    return "COPSE_UNKNOWN";
}

COPSE_API const char *copse_version(void)
{
    return COPSE_VERSION_STRING;
}

copse_status copse__errorf(char *err, size_t err_size, copse_status status, const char *fmt, ...)
{
    if (err && err_size > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, err_size, fmt, ap);
        va_end(ap);
    }
    return status;
}
