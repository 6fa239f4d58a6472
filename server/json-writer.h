/*
 * json-writer.h — a small streaming, pretty-printing JSON writer for the CLI
 * (internal). Strings are escaped; invalid UTF-8 bytes become U+FFFD;
 * NaN and infinities become null.
 *
 * Usage: copse_jw w = {.f = stdout}; copse__jw_open(&w, NULL, '{', false);
 * copse__jw_u64(&w, "n", 3); ... copse__jw_close(&w, '}');
 */
#ifndef COPSE_SERVER_JSON_WRITER_H
#define COPSE_SERVER_JSON_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* A small pretty-printing JSON writer: values are written under a key inside
 * objects (key != NULL) or bare inside arrays (key == NULL). Containers opened
 * "inline" keep their items on one line. */
typedef struct copse_jw {
    FILE *f;
    int depth;
    bool first[32];
    int inline_from; /* depth at and above which items stay on one line; 0: none */
} copse_jw;

/* Length of the well-formed UTF-8 character at s[0..n), 0 if not one. */
size_t copse__utf8_len(const unsigned char *s, size_t n);

/* Separator, line break and indent before an item, then the key if any. */
void copse__jw_item(copse_jw *w, const char *key);
/* Open an object ('{') or array ('['); inline_items keeps its items on one line. */
void copse__jw_open(copse_jw *w, const char *key, char c, bool inline_items);
void copse__jw_close(copse_jw *w, char c);
void copse__jw_str(copse_jw *w, const char *key, const char *s, uint64_t len);
void copse__jw_cstr(copse_jw *w, const char *key, const char *s); /* NULL: null */
void copse__jw_u64(copse_jw *w, const char *key, uint64_t v);
void copse__jw_i64(copse_jw *w, const char *key, int64_t v);
/* single: print with float precision (9 digits), else double (17). */
void copse__jw_f64(copse_jw *w, const char *key, double v, bool single);
void copse__jw_bool(copse_jw *w, const char *key, bool v);

#endif /* COPSE_SERVER_JSON_WRITER_H */
