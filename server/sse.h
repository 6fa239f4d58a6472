/*
 * sse.h — Server-Sent Events framing for streamed completions (internal).
 */
#ifndef COPSE_SERVER_SSE_H
#define COPSE_SERVER_SSE_H

#include <stddef.h>

/* "data: JSON\n\n" (malloc'ed; NULL on no memory). json holds no newline
 * (cJSON's unformatted output escapes them). */
char *copse__sse_event(const char *json, size_t *len);
/* The stream's end marker, "data: [DONE]\n\n". */
const char *copse__sse_done(size_t *len);

#endif /* COPSE_SERVER_SSE_H */
