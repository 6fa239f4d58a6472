/* gguf.c — GGUF reader (placeholder until the reader lands). */
#include "gguf.h"

#include "error.h"

copse_status copse__gguf_open(const char *path, copse_gguf **out, char *err, size_t err_size)
{
    *out = NULL;
    return copse__errorf(err, err_size, COPSE_EUNSUPPORTED, "%s: GGUF reader not built yet", path);
}

void copse__gguf_close(copse_gguf *g)
{
    (void)g;
}
