/*
 * drafter.c — drafter parameters, spec parsing and the registry of drafters
 * by name (see drafter.h), plus the budget clamp every drafter applies.
 */
#include "spec/drafters/drafters-impl.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

/* ---------------------------------------------------------------- shared helpers */

void copse__drafter_clamp(const copse_drafter_params *p, const copse_tree *tree, int32_t *budget,
                          int32_t *max_depth)
{
    int32_t cap = p->max_nodes;
    if (copse__tree_capacity(tree) < cap)
        cap = copse__tree_capacity(tree);
    if (*budget > cap)
        *budget = cap;
    if (*budget < 0)
        *budget = 0;
    if (*max_depth > p->max_depth)
        *max_depth = p->max_depth;
    if (*max_depth < 0)
        *max_depth = 0;
}

/* ---------------------------------------------------------------- parameters */

copse_drafter_params copse__drafter_default_params(void)
{
    return (copse_drafter_params){
        .n_vocab = 0,
        .max_seqs = 64,
        .max_nodes = 64,
        .max_depth = 16,
        .bit = 1,
        .max_branch = 8,
        .ngram_min_n = 1,
        .ngram_max_n = 4,
        .suffix_pool_tokens = 16384,
        .suffix_max_docs = 1024,
        .suffix_depth = 24,
        .suffix_max_match = 8,
        .draft_width = 4,
        .draft_q_top = 64,
        .draft_max_tokens = 128,
    };
}

copse_status copse__drafter_params_validate(const copse_drafter_params *p, char *err, size_t err_size)
{
#define RANGE_(field, lo, hi)                                                                          \
    do {                                                                                               \
        if (p->field < (lo) || p->field > (hi))                                                        \
            return copse__errorf(err, err_size, COPSE_EINVAL, "drafter params: " #field                 \
                                 " = %lld, want %lld..%lld", (long long)p->field, (long long)(lo),     \
                                 (long long)(hi));                                                     \
    } while (0)
    RANGE_(n_vocab, 1, INT32_MAX);
    RANGE_(max_seqs, 1, 1 << 16);
    RANGE_(max_nodes, 1, COPSE_TREE_MAX_NODES);
    RANGE_(max_depth, 1, COPSE_TREE_MAX_DEPTH);
    RANGE_(max_branch, 1, 256);
    RANGE_(ngram_max_n, 1, COPSE__NGRAM_MAX_N);
    RANGE_(ngram_min_n, 1, p->ngram_max_n);
    RANGE_(suffix_pool_tokens, 1, 1 << 22);
    RANGE_(suffix_max_docs, 1, 1 << 20);
    RANGE_(suffix_depth, 2, 64);
    RANGE_(suffix_max_match, 1, p->suffix_depth - 1);
    RANGE_(draft_vocab, 0, INT32_MAX);
    RANGE_(draft_width, 1, 64);
    RANGE_(draft_q_top, 1, 1 << 20);
    RANGE_(n_threads, 0, 4096);
#undef RANGE_
    if (p->draft_max_ctx > (1u << 28) || p->draft_max_tokens < 1 || p->draft_max_tokens > (1u << 16))
        return copse__errorf(err, err_size, COPSE_EINVAL,
                             "drafter params: draft_max_ctx = %u (want <= 2^28) or draft_max_tokens = %u (want 1..65536)",
                             p->draft_max_ctx, p->draft_max_tokens);
    /* The pool's node store: 28 bytes per node plus 8 of hash table. */
    if ((int64_t)p->suffix_pool_tokens * p->suffix_depth > (int64_t)1 << 26)
        return copse__errorf(err, err_size, COPSE_EINVAL,
                             "drafter params: suffix_pool_tokens * suffix_depth = %lld nodes, want <= 2^26",
                             (long long)p->suffix_pool_tokens * p->suffix_depth);
    if (p->bit == 0)
        return copse__errorf(err, err_size, COPSE_EINVAL, "drafter params: bit must be non-zero");
    return COPSE_OK;
}

/* ---------------------------------------------------------------- registry */

typedef enum { ARG_NONE, ARG_COUNT, ARG_FILE } spec_arg;

typedef struct drafter_entry {
    const char *name;
    copse_drafter_kind kind;
    spec_arg arg;
    const char *usage;
    copse_status (*create)(const copse_drafter_spec *s, const copse_drafter_params *p, copse_drafter **out,
                           char *err, size_t err_size);
} drafter_entry;

static copse_status create_ngram(const copse_drafter_spec *s, const copse_drafter_params *p, copse_drafter **out,
                                 char *err, size_t err_size)
{
    (void)s;
    return copse__ngram_create(p, out, err, err_size);
}

static copse_status create_suffix(const copse_drafter_spec *s, const copse_drafter_params *p,
                                  copse_drafter **out, char *err, size_t err_size)
{
    (void)s;
    return copse__suffix_create(p, out, err, err_size);
}

static copse_status create_layerskip(const copse_drafter_spec *s, const copse_drafter_params *p,
                                     copse_drafter **out, char *err, size_t err_size)
{
    return copse__layerskip_create(p, s->layers, out, err, err_size);
}

static copse_status create_model(const copse_drafter_spec *s, const copse_drafter_params *p, copse_drafter **out,
                                 char *err, size_t err_size)
{
    return copse__draft_model_create(p, s->file, out, err, err_size);
}

static const drafter_entry drafter_table[] = {
    {"ngram", COPSE_DRAFTER_NGRAM, ARG_NONE, "ngram", create_ngram},
    {"suffix", COPSE_DRAFTER_SUFFIX, ARG_NONE, "suffix", create_suffix},
    {"layerskip", COPSE_DRAFTER_LAYERSKIP, ARG_COUNT, "layerskip:N", create_layerskip},
    {"model", COPSE_DRAFTER_MODEL, ARG_FILE, "model:FILE", create_model},
};
#define N_DRAFTERS (sizeof drafter_table / sizeof drafter_table[0])

/* The entry and argument of a spec, or a status with a message. */
static copse_status parse_spec(const char *spec, const drafter_entry **entry, copse_drafter_spec *out, char *err,
                               size_t err_size)
{
    if (!spec || !*spec)
        return copse__errorf(err, err_size, COPSE_EINVAL,
                             "empty drafter spec (want ngram, suffix, layerskip:N or model:FILE)");
    const char *colon = strchr(spec, ':');
    size_t name_len = colon ? (size_t)(colon - spec) : strlen(spec);
    const char *arg = colon ? colon + 1 : NULL;
    const drafter_entry *e = NULL;
    for (size_t i = 0; i < N_DRAFTERS; i++)
        if (strlen(drafter_table[i].name) == name_len && memcmp(drafter_table[i].name, spec, name_len) == 0)
            e = &drafter_table[i];
    if (!e) {
        if (name_len == 4 && memcmp(spec, "none", 4) == 0)
            return copse__errorf(err, err_size, COPSE_EINVAL,
                                 "'none' is not a drafter: it is the selector's no-speculation arm");
        return copse__errorf(err, err_size, COPSE_EINVAL,
                             "unknown drafter '%.*s' (want ngram, suffix, layerskip:N or model:FILE)",
                             (int)(name_len > 64 ? 64 : name_len), spec);
    }
    memset(out, 0, sizeof *out);
    out->kind = e->kind;
    switch (e->arg) {
    case ARG_NONE:
        if (arg)
            return copse__errorf(err, err_size, COPSE_EINVAL, "drafter '%s' takes no argument (got '%s')",
                                 e->name, spec);
        break;
    case ARG_COUNT: {
        if (!arg || !*arg)
            return copse__errorf(err, err_size, COPSE_EINVAL, "drafter '%s' needs a layer count: %s", e->name,
                                 e->usage);
        long v = 0;
        for (const char *c = arg; *c; c++) {
            if (*c < '0' || *c > '9' || v > 100000)
                return copse__errorf(err, err_size, COPSE_EINVAL,
                                     "drafter '%s': bad layer count '%s' (want an integer 1..100000)", e->name,
                                     arg);
            v = v * 10 + (*c - '0');
        }
        if (v < 1 || v > 100000)
            return copse__errorf(err, err_size, COPSE_EINVAL,
                                 "drafter '%s': bad layer count '%s' (want an integer 1..100000)", e->name, arg);
        out->layers = (int32_t)v;
        break;
    }
    case ARG_FILE:
        if (!arg || !*arg)
            return copse__errorf(err, err_size, COPSE_EINVAL, "drafter '%s' needs a file: %s", e->name, e->usage);
        out->file = arg;
        break;
    }
    *entry = e;
    return COPSE_OK;
}

copse_status copse__drafter_parse(const char *spec, copse_drafter_spec *out, char *err, size_t err_size)
{
    const drafter_entry *e = NULL;
    return parse_spec(spec, &e, out, err, err_size);
}

copse_status copse__drafter_create(const char *spec, const copse_drafter_params *p, copse_drafter **out,
                                   char *err, size_t err_size)
{
    *out = NULL;
    const drafter_entry *e = NULL;
    copse_drafter_spec s;
    copse_status st = parse_spec(spec, &e, &s, err, err_size);
    if (st != COPSE_OK)
        return st;
    st = copse__drafter_params_validate(p, err, err_size);
    if (st != COPSE_OK)
        return st;
    return e->create(&s, p, out, err, err_size);
}

void copse__drafter_destroy(copse_drafter *d)
{
    if (d)
        d->iface.destroy(d);
}
