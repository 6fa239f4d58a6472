/*
 * sse.c — Server-Sent Events framing (see sse.h).
 */
#include "sse.h"

#include <stdlib.h>
#include <string.h>

char *copse__sse_event(const char *json, size_t *len)
{
    size_t n = strlen(json);
    char *s = malloc(n + 9);
    if (!s)
        return NULL;
    memcpy(s, "data: ", 6);
    memcpy(s + 6, json, n);
    memcpy(s + 6 + n, "\n\n", 3);
    *len = n + 8;
    return s;
}

const char *copse__sse_done(size_t *len)
{
    static const char done[] = "data: [DONE]\n\n";
    *len = sizeof done - 1;
    return done;
}
