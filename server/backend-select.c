/*
 * backend-select.c — `--backend NAME[:N]`: find a registered backend's device.
 */
#include "backend-select.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *copse__backend_status_text(copse_backend_reg *reg)
{
    if (!reg || !reg->iface.get_proc)
        return "";
    copse_backend_status_text_fn fn =
        (copse_backend_status_text_fn)(uintptr_t)reg->iface.get_proc(reg, "status_text");
    const char *s = fn ? fn(reg) : NULL;
    return s ? s : "";
}

const char *copse__backend_dev_error(copse_backend_dev *dev)
{
    if (!dev || !dev->reg || !dev->reg->iface.get_proc)
        return "";
    copse_backend_dev_last_error_fn fn =
        (copse_backend_dev_last_error_fn)(uintptr_t)dev->reg->iface.get_proc(dev->reg, "dev_last_error");
    const char *s = fn ? fn(dev) : NULL;
    return s ? s : "";
}

/* "cpu:0, opencl:0, ..." — every device of every backend. */
static void list_devices(char *out, size_t n)
{
    size_t at = 0;
    out[0] = 0;
    for (size_t i = 0; i < copse__backend_count(); i++) {
        copse_backend_reg *r = copse__backend_get(i);
        size_t nd = r ? r->iface.dev_count(r) : 0;
        for (size_t d = 0; d < nd && at < n; d++) {
            int w = snprintf(out + at, n - at, "%s%s:%zu", at ? ", " : "", r->name, d);
            if (w < 0)
                break;
            at += (size_t)w;
        }
    }
}

copse_backend_dev *copse__backend_select(const char *spec, const char *who)
{
    char name[64];
    const char *colon = strchr(spec, ':');
    size_t len = colon ? (size_t)(colon - spec) : strlen(spec);
    long index = 0;
    if (len == 0 || len >= sizeof name) {
        fprintf(stderr, "%s: --backend '%s': expected NAME or NAME:N (e.g. cpu, opencl:0)\n", who, spec);
        return NULL;
    }
    memcpy(name, spec, len);
    name[len] = 0;
    if (colon) {
        char *end;
        errno = 0;
        index = strtol(colon + 1, &end, 10);
        if (errno || end == colon + 1 || *end || index < 0) {
            fprintf(stderr, "%s: --backend '%s': '%s' is not a device number\n", who, spec, colon + 1);
            return NULL;
        }
    }
    char avail[512];
    copse_backend_reg *r = copse__backend_find(name);
    if (!r) {
        char built[256];
        size_t at = 0;
        built[0] = 0;
        for (size_t i = 0; i < copse__backend_count() && at < sizeof built; i++) {
            copse_backend_reg *b = copse__backend_get(i);
            int w = b ? snprintf(built + at, sizeof built - at, "%s%s", at ? ", " : "", b->name) : 0;
            at += w > 0 ? (size_t)w : 0;
        }
        fprintf(stderr, "%s: --backend '%s': no backend named '%s' in this build (built in: %s)\n", who, spec, name,
                built);
        return NULL;
    }
    size_t n = r->iface.dev_count(r);
    if (n == 0) {
        const char *why = copse__backend_status_text(r);
        list_devices(avail, sizeof avail);
        fprintf(stderr, "%s: --backend '%s': the %s backend has no device%s%s (available: %s)\n", who, spec, name,
                why[0] ? ": " : "", why, avail[0] ? avail : "none");
        return NULL;
    }
    if ((size_t)index >= n) {
        fprintf(stderr, "%s: --backend '%s': the %s backend has %zu device%s (%s:0 .. %s:%zu)\n", who, spec, name, n,
                n == 1 ? "" : "s", name, name, n - 1);
        return NULL;
    }
    return r->iface.dev_get(r, (size_t)index);
}
