/*
 * json-writer.c — a small streaming, pretty-printing JSON writer for the CLI.
 */
#include "json-writer.h"

#include <inttypes.h>
#include <string.h>

/* Length of the well-formed UTF-8 character at s[0..n), 0 if not one. */
size_t copse__utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t need;
    unsigned lo = 0x80, hi = 0xbf;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        need = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        need = 3;
        if (c == 0xe0)
            lo = 0xa0;
        if (c == 0xed)
            hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        need = 4;
        if (c == 0xf0)
            lo = 0x90;
        if (c == 0xf4)
            hi = 0x8f;
    } else
        return 0;
    if (n < need)
        return 0;
    for (size_t k = 1; k < need; k++) {
        if (s[k] < lo || s[k] > hi)
            return 0;
        lo = 0x80;
        hi = 0xbf;
    }
    return need;
}


static void json_string(FILE *f, const char *s, uint64_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    fputc('"', f);
    for (uint64_t i = 0; i < len;) {
        unsigned c = p[i];
        size_t k = copse__utf8_len(p + i, (size_t)(len - i));
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c == '\n')
            fputs("\\n", f);
        else if (c == '\t')
            fputs("\\t", f);
        else if (c == '\r')
            fputs("\\r", f);
        else if (c < 0x20 || c == 0x7f)
            fprintf(f, "\\u%04x", c);
        else if (k == 0)
            fputs("\\ufffd", f); /* invalid UTF-8 byte */
        else {
            fwrite(p + i, 1, k, f);
            i += k;
            continue;
        }
        i++;
    }
    fputc('"', f);
}

/* Separator, line break and indent before an item, then the key if any. */
void copse__jw_item(copse_jw *w, const char *key)
{
    if (w->depth > 0 && !w->first[w->depth])
        fputc(',', w->f);
    if (w->depth > 0) {
        if (w->inline_from && w->depth >= w->inline_from)
            fputs(w->first[w->depth] ? "" : " ", w->f);
        else
            fprintf(w->f, "\n%*s", 2 * w->depth, "");
    }
    w->first[w->depth] = false;
    if (key) {
        json_string(w->f, key, strlen(key));
        fputs(": ", w->f);
    }
}

void copse__jw_open(copse_jw *w, const char *key, char c, bool inline_items)
{
    copse__jw_item(w, key);
    fputc(c, w->f);
    if (w->depth + 1 < (int)(sizeof w->first / sizeof w->first[0]))
        w->depth++;
    w->first[w->depth] = true;
    if (inline_items && !w->inline_from)
        w->inline_from = w->depth;
}

void copse__jw_close(copse_jw *w, char c)
{
    bool empty = w->first[w->depth];
    bool was_inline = w->inline_from && w->depth >= w->inline_from;
    if (w->inline_from == w->depth)
        w->inline_from = 0;
    w->depth--;
    if (!empty && !was_inline)
        fprintf(w->f, "\n%*s", 2 * w->depth, "");
    fputc(c, w->f);
    if (w->depth == 0)
        fputc('\n', w->f);
}

void copse__jw_str(copse_jw *w, const char *key, const char *s, uint64_t len)
{
    copse__jw_item(w, key);
    json_string(w->f, s, len);
}

void copse__jw_cstr(copse_jw *w, const char *key, const char *s)
{
    if (!s) {
        copse__jw_item(w, key);
        fputs("null", w->f);
        return;
    }
    copse__jw_str(w, key, s, strlen(s));
}

void copse__jw_u64(copse_jw *w, const char *key, uint64_t v)
{
    copse__jw_item(w, key);
    fprintf(w->f, "%" PRIu64, v);
}

void copse__jw_i64(copse_jw *w, const char *key, int64_t v)
{
    copse__jw_item(w, key);
    fprintf(w->f, "%" PRId64, v);
}

void copse__jw_f64(copse_jw *w, const char *key, double v, bool single)
{
    copse__jw_item(w, key);
    if (v != v || v - v != 0) /* NaN or infinity: not JSON numbers */
        fputs("null", w->f);
    else
        fprintf(w->f, single ? "%.9g" : "%.17g", v);
}

void copse__jw_bool(copse_jw *w, const char *key, bool v)
{
    copse__jw_item(w, key);
    fputs(v ? "true" : "false", w->f);
}
