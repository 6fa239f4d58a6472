/*
 * cmd-info.c — `copse info`: what a GGUF model file holds, and which
 * backends and devices this copse can use.
 *
 *   copse info [--kv] [--tensors] [--json] MODEL.gguf
 *   copse info --devices [--json]
 *
 * The summary covers the file (size, GGUF version, alignment), the
 * architecture and its hyperparameters (every `<arch>.*` key, whatever the
 * architecture), the tensors by quant type, the vocabulary and its special
 * tokens, and the chat template family copse will use. --kv dumps every
 * metadata key, --tensors every tensor; --json writes the same as one JSON
 * object. A file that does not validate gives the reader's message (naming
 * the field at fault) on stderr and exit status 1.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend-impl.h"
#include "backend-select.h"
#include "chat.h"
#include "commands.h"
#include "json-writer.h"
#include "copse.h"
#include "gguf.h"
#include "model.h"
#include "quant.h"
#include "tokenizer.h"

#define ARRAY_HEAD 8     /* array items shown in summaries */
#define STRING_SHOWN 160 /* bytes of a long string shown in text output */

typedef struct info_opts {
    const char *path;
    bool kv, tensors, json, devices;
} info_opts;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: copse info [OPTIONS] MODEL.gguf\n"
            "       copse info --devices [--json]\n"
            "\n"
            "Show what a GGUF model holds: file, architecture and hyperparameters,\n"
            "tensors by quant type, vocabulary and special tokens, chat template.\n"
            "\n"
            "options:\n"
            "  --kv        also list every metadata key (arrays: type, length, first items)\n"
            "  --tensors   also list every tensor (name, type, shape, bytes, offset)\n"
            "  --json      write JSON instead of text\n"
            "  --devices   list the backends and devices instead of a model\n"
            "  -h, --help  show this help\n");
}

/* ---------------------------------------------------------------- text output helpers */

/* "90.9 MiB" */
static const char *human_bytes(uint64_t n, char *buf, size_t cap)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)n;
    size_t u = 0;
    while (v >= 1024.0 && u + 1 < sizeof units / sizeof units[0]) {
        v /= 1024.0;
        u++;
    }
    if (u == 0)
        snprintf(buf, cap, "%" PRIu64 " B", n);
    else
        snprintf(buf, cap, "%.2f %s", v, units[u]);
    return buf;
}

/* A string between double quotes, control characters and invalid bytes
 * escaped, at most `max` bytes of it (0: all) then "… (N bytes)". */
static void print_quoted(FILE *f, const char *s, uint64_t len, size_t max)
{
    const unsigned char *p = (const unsigned char *)s;
    uint64_t shown = max && len > max ? max : len;
    fputc('"', f);
    for (uint64_t i = 0; i < shown;) {
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
        else if (c < 0x20 || c == 0x7f || k == 0)
            fprintf(f, "\\x%02x", c);
        else {
            fwrite(p + i, 1, k, f);
            i += k;
            continue;
        }
        i++;
    }
    fputc('"', f);
    if (shown < len)
        fprintf(f, "… (%" PRIu64 " bytes)", len);
}

/* A float as a person reads it: whole numbers in full (rope bases like
 * 1000000), others to float32 precision in the shortest form (1e-05). */
static void print_float(FILE *f, double v)
{
    if (v == (double)(int64_t)v && v > -1e15 && v < 1e15)
        fprintf(f, "%" PRId64, (int64_t)v);
    else
        fprintf(f, "%g", v);
}

/* One scalar metadata value, as text. */
static void print_scalar(FILE *f, const copse_gguf_kv *kv, size_t max_str)
{
    switch (kv->type) {
    case COPSE_GGUF_UINT8:
    case COPSE_GGUF_UINT16:
    case COPSE_GGUF_UINT32:
    case COPSE_GGUF_UINT64: fprintf(f, "%" PRIu64, kv->v.u64); break;
    case COPSE_GGUF_INT8:
    case COPSE_GGUF_INT16:
    case COPSE_GGUF_INT32:
    case COPSE_GGUF_INT64: fprintf(f, "%" PRId64, kv->v.i64); break;
    case COPSE_GGUF_FLOAT32:
    case COPSE_GGUF_FLOAT64: print_float(f, kv->v.f64); break;
    case COPSE_GGUF_BOOL: fputs(kv->v.u64 ? "true" : "false", f); break;
    case COPSE_GGUF_STRING: print_quoted(f, kv->v.str.ptr, kv->v.str.len, max_str); break;
    default: fputs("?", f); break;
    }
}

/* Element i of an array, as text. */
static void print_elem(FILE *f, const copse_gguf_array *a, uint64_t i)
{
    switch (a->type) {
    case COPSE_GGUF_STRING: print_quoted(f, a->strs[i].ptr, a->strs[i].len, 48); break;
    case COPSE_GGUF_FLOAT32:
    case COPSE_GGUF_FLOAT64: print_float(f, (double)copse__gguf_arr_f32(a, i)); break;
    case COPSE_GGUF_BOOL: fputs(copse__gguf_arr_i64(a, i) ? "true" : "false", f); break;
    case COPSE_GGUF_UINT64: fprintf(f, "%" PRIu64, (uint64_t)copse__gguf_arr_i64(a, i)); break;
    case COPSE_GGUF_ARRAY: fputs("[...]", f); break;
    default: fprintf(f, "%" PRId64, copse__gguf_arr_i64(a, i)); break;
    }
}

/* A value: scalars as they are, arrays as "[a, b, …] (array of N uint32)". */
static void print_value(FILE *f, const copse_gguf_kv *kv, size_t max_str)
{
    if (kv->type != COPSE_GGUF_ARRAY) {
        print_scalar(f, kv, max_str);
        return;
    }
    const copse_gguf_array *a = &kv->v.arr;
    fputc('[', f);
    uint64_t shown = a->n < ARRAY_HEAD ? a->n : ARRAY_HEAD;
    for (uint64_t i = 0; i < shown; i++) {
        if (i)
            fputs(", ", f);
        print_elem(f, a, i);
    }
    if (shown < a->n)
        fputs(", …", f);
    fprintf(f, "] (%" PRIu64 " × %s)", a->n, copse__gguf_type_name(a->type));
}

/* "uint32", "array[string]" */
static const char *kv_type_name(const copse_gguf_kv *kv, char *buf, size_t cap)
{
    if (kv->type != COPSE_GGUF_ARRAY)
        return copse__gguf_type_name(kv->type);
    snprintf(buf, cap, "array[%s]", copse__gguf_type_name(kv->v.arr.type));
    return buf;
}

/* The key as a NUL-terminated string (keys are short; longer ones are cut). */
static const char *key_cstr(copse_str k, char *buf, size_t cap)
{
    size_t n = k.len < cap - 1 ? (size_t)k.len : cap - 1;
    memcpy(buf, k.ptr, n);
    buf[n] = '\0';
    return buf;
}

static bool has_prefix(copse_str s, const char *prefix)
{
    size_t n = strlen(prefix);
    return s.len >= n && memcmp(s.ptr, prefix, n) == 0;
}

/* ---------------------------------------------------------------- metadata as JSON */

/* Element i of an array as a JSON value. */
static void jw_elem(copse_jw *w, const copse_gguf_array *a, uint64_t i)
{
    switch (a->type) {
    case COPSE_GGUF_STRING: copse__jw_str(w, NULL, a->strs[i].ptr, a->strs[i].len); break;
    case COPSE_GGUF_FLOAT32: copse__jw_f64(w, NULL, copse__gguf_arr_f32(a, i), true); break;
    case COPSE_GGUF_FLOAT64: copse__jw_f64(w, NULL, copse__gguf_arr_f32(a, i), false); break;
    case COPSE_GGUF_BOOL: copse__jw_bool(w, NULL, copse__gguf_arr_i64(a, i) != 0); break;
    case COPSE_GGUF_UINT64: copse__jw_u64(w, NULL, (uint64_t)copse__gguf_arr_i64(a, i)); break;
    case COPSE_GGUF_ARRAY: copse__jw_item(w, NULL); fputs("null", w->f); break;
    default: copse__jw_i64(w, NULL, copse__gguf_arr_i64(a, i)); break;
    }
}

/* A metadata value. Arrays of at most `whole` items are written whole;
 * longer ones as {"type", "n", "head": first items}. */
static void jw_value(copse_jw *w, const char *key, const copse_gguf_kv *kv, uint64_t whole)
{
    switch (kv->type) {
    case COPSE_GGUF_UINT8:
    case COPSE_GGUF_UINT16:
    case COPSE_GGUF_UINT32:
    case COPSE_GGUF_UINT64: copse__jw_u64(w, key, kv->v.u64); return;
    case COPSE_GGUF_INT8:
    case COPSE_GGUF_INT16:
    case COPSE_GGUF_INT32:
    case COPSE_GGUF_INT64: copse__jw_i64(w, key, kv->v.i64); return;
    case COPSE_GGUF_FLOAT32: copse__jw_f64(w, key, kv->v.f64, true); return;
    case COPSE_GGUF_FLOAT64: copse__jw_f64(w, key, kv->v.f64, false); return;
    case COPSE_GGUF_BOOL: copse__jw_bool(w, key, kv->v.u64 != 0); return;
    case COPSE_GGUF_STRING: copse__jw_str(w, key, kv->v.str.ptr, kv->v.str.len); return;
    default: break;
    }
    const copse_gguf_array *a = &kv->v.arr;
    if (a->n <= whole) {
        copse__jw_open(w, key, '[', true);
        for (uint64_t i = 0; i < a->n; i++)
            jw_elem(w, a, i);
        copse__jw_close(w, ']');
        return;
    }
    copse__jw_open(w, key, '{', false);
    copse__jw_cstr(w, "type", copse__gguf_type_name(a->type));
    copse__jw_u64(w, "n", a->n);
    copse__jw_open(w, "head", '[', true);
    for (uint64_t i = 0; i < ARRAY_HEAD && i < a->n; i++)
        jw_elem(w, a, i);
    copse__jw_close(w, ']');
    copse__jw_close(w, '}');
}

/* ---------------------------------------------------------------- facts gathered once */

typedef struct type_stat {
    uint64_t count, bytes, elements;
} type_stat;

/* A special token: its id (-1 if none) and stored text. */
typedef struct special_tok {
    const char *name;
    copse_token id;
    copse_str text;
} special_tok;

#define N_SPECIALS 5

typedef struct model_facts {
    const copse_gguf *g;
    const copse_tokenizer *tok; /* NULL if the tokenizer could not be built */
    char tok_err[1024];         /* why not */
    char arch[128];             /* general.architecture, "" if absent */
    copse_str name;             /* general.name; ptr NULL if absent */
    uint64_t n_tensors, tensor_bytes, n_params;
    type_stat by_type[COPSE_Q_TYPE_LIMIT];
    /* vocabulary */
    const char *vocab_type; /* "bpe" or "spm"; NULL if the model names neither */
    copse_str vocab_model, vocab_pre;
    int64_t n_vocab; /* -1 if unknown */
    special_tok specials[N_SPECIALS];
    int add_bos, add_eos; /* 1, 0, or -1 when unknown */
    /* chat */
    copse_chat_format *chat;
    char chat_note[256];
    uint64_t template_len;
} model_facts;

/* general.file_type: the llama.cpp "mostly X" numbering. */
static const char *file_type_name(uint64_t ft)
{
    static const struct {
        uint32_t v;
        const char *name;
    } names[] = {
        {0, "F32"},      {1, "F16"},      {2, "Q4_0"},     {3, "Q4_1"},    {7, "Q8_0"},
        {8, "Q5_0"},     {9, "Q5_1"},     {10, "Q2_K"},    {11, "Q3_K_S"}, {12, "Q3_K_M"},
        {13, "Q3_K_L"},  {14, "Q4_K_S"},  {15, "Q4_K_M"},  {16, "Q5_K_S"}, {17, "Q5_K_M"},
        {18, "Q6_K"},    {32, "BF16"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (names[i].v == ft)
            return names[i].name;
    return NULL;
}

/* Text of token id from tokenizer.ggml.tokens (empty if out of range). */
static copse_str token_text(const copse_gguf *g, const copse_tokenizer *tok, copse_token id)
{
    copse_str none = {"", 0};
    if (id < 0)
        return none;
    if (tok)
        return id < copse__tokenizer_n_vocab(tok) ? copse__tokenizer_piece(tok, id) : none;
    const copse_gguf_array *a;
    if (copse__gguf_get_arr(g, "tokenizer.ggml.tokens", COPSE_GGUF_STRING, &a) == COPSE_OK &&
        a->strs && (uint64_t)id < a->n)
        return a->strs[id];
    return none;
}

/* A token id straight from the metadata (when there is no tokenizer). */
static copse_token meta_token(const copse_gguf *g, const char *key)
{
    int32_t v;
    if (copse__gguf_get_i32(g, key, &v) == COPSE_OK && v >= 0)
        return v;
    return -1;
}

static int meta_bool(const copse_gguf *g, const char *key)
{
    bool b;
    return copse__gguf_get_bool(g, key, &b) == COPSE_OK ? (int)b : -1;
}

static copse_status gather(const copse_model *m, const char *tok_err, model_facts *mf)
{
    const copse_gguf *g = copse__model_gguf(m);
    memset(mf, 0, sizeof *mf);
    mf->g = g;
    mf->tok = copse__model_tokenizer(m);
    snprintf(mf->tok_err, sizeof mf->tok_err, "%s", tok_err ? tok_err : "");

    copse_str s;
    if (copse__gguf_get_str(g, "general.architecture", &s) == COPSE_OK)
        key_cstr(s, mf->arch, sizeof mf->arch);
    if (copse__gguf_get_str(g, "general.name", &s) == COPSE_OK)
        mf->name = s;

    /* tensors */
    mf->n_tensors = copse__gguf_n_tensors(g);
    for (size_t i = 0; i < mf->n_tensors; i++) {
        const copse_gguf_tensor *t = copse__gguf_tensor_at(g, i);
        uint64_t el = 1;
        for (uint32_t d = 0; d < t->n_dims; d++)
            el *= t->ne[d];
        mf->tensor_bytes += t->nbytes;
        mf->n_params += el;
        if (t->type < COPSE_Q_TYPE_LIMIT) {
            mf->by_type[t->type].count++;
            mf->by_type[t->type].bytes += t->nbytes;
            mf->by_type[t->type].elements += el;
        }
    }

    /* vocabulary: the tokenizer's view when there is one, else the metadata's */
    (void)copse__gguf_get_str(g, "tokenizer.ggml.model", &mf->vocab_model);
    (void)copse__gguf_get_str(g, "tokenizer.ggml.pre", &mf->vocab_pre);
    static const char *const names[N_SPECIALS] = {"bos", "eos", "eot", "unk", "pad"};
    static const char *const keys[N_SPECIALS] = {
        "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.eot_token_id", "tokenizer.ggml.unknown_token_id",
        "tokenizer.ggml.padding_token_id"};
    if (mf->tok) {
        mf->vocab_type = copse__tokenizer_type(mf->tok) == COPSE_VOCAB_BPE ? "bpe" : "spm";
        const char *pre = copse__tokenizer_pre_name(mf->tok);
        if (pre) {
            mf->vocab_pre.ptr = pre;
            mf->vocab_pre.len = strlen(pre);
        }
        mf->n_vocab = copse__tokenizer_n_vocab(mf->tok);
        copse_token ids[N_SPECIALS] = {
            copse__tokenizer_bos(mf->tok), copse__tokenizer_eos(mf->tok),
            copse__tokenizer_eot(mf->tok), copse__tokenizer_unk(mf->tok),
            copse__tokenizer_pad(mf->tok)};
        for (int i = 0; i < N_SPECIALS; i++)
            mf->specials[i] = (special_tok){names[i], ids[i], token_text(g, mf->tok, ids[i])};
        mf->add_bos = copse__tokenizer_add_bos(mf->tok);
        mf->add_eos = copse__tokenizer_add_eos(mf->tok);
    } else {
        mf->vocab_type = NULL;
        if (mf->vocab_model.ptr) {
            if (copse__str_eq(mf->vocab_model, "gpt2"))
                mf->vocab_type = "bpe";
            else if (copse__str_eq(mf->vocab_model, "llama"))
                mf->vocab_type = "spm";
        }
        const copse_gguf_array *a;
        mf->n_vocab = copse__gguf_get_arr(g, "tokenizer.ggml.tokens", COPSE_GGUF_STRING, &a) == COPSE_OK
                          ? (int64_t)a->n
                          : -1;
        for (int i = 0; i < N_SPECIALS; i++) {
            copse_token id = meta_token(g, keys[i]);
            mf->specials[i] = (special_tok){names[i], id, token_text(g, NULL, id)};
        }
        mf->add_bos = meta_bool(g, "tokenizer.ggml.add_bos_token");
        mf->add_eos = meta_bool(g, "tokenizer.ggml.add_eos_token");
    }

    /* chat template */
    copse_str tmpl;
    if (copse__gguf_get_str(g, "tokenizer.chat_template", &tmpl) == COPSE_OK)
        mf->template_len = tmpl.len;
    return copse__chat_format_from_gguf(g, &mf->chat, mf->chat_note, sizeof mf->chat_note);
}

/* ---------------------------------------------------------------- text report */

static void text_file(FILE *f, const info_opts *o, const model_facts *mf)
{
    char hb[32];
    const copse_gguf *g = mf->g;
    fprintf(f, "file\n");
    fprintf(f, "  path                 %s\n", o->path);
    fprintf(f, "  size                 %s (%" PRIu64 " bytes)\n",
            human_bytes(copse__gguf_file_size(g), hb, sizeof hb), copse__gguf_file_size(g));
    fprintf(f, "  gguf version         %" PRIu32 "\n", copse__gguf_version(g));
    fprintf(f, "  alignment            %" PRIu32 "\n", copse__gguf_alignment(g));
    fprintf(f, "  data offset          %" PRIu64 "\n", copse__gguf_data_offset(g));
    fprintf(f, "  metadata keys        %zu\n", copse__gguf_n_kv(g));
}

/* general.* keys (except the architecture, shown first). */
static void text_model(FILE *f, const model_facts *mf)
{
    const copse_gguf *g = mf->g;
    char key[256];
    fprintf(f, "\nmodel\n");
    fprintf(f, "  architecture         %s\n", mf->arch[0] ? mf->arch : "(none)");
    for (size_t i = 0; i < copse__gguf_n_kv(g); i++) {
        const copse_gguf_kv *kv = copse__gguf_kv_at(g, i);
        if (!has_prefix(kv->key, "general.") || copse__str_eq(kv->key, "general.architecture") ||
            copse__str_eq(kv->key, "general.alignment"))
            continue;
        fprintf(f, "  %-20s ", key_cstr(kv->key, key, sizeof key) + strlen("general."));
        print_value(f, kv, STRING_SHOWN);
        if (copse__str_eq(kv->key, "general.file_type") && kv->type != COPSE_GGUF_ARRAY &&
            file_type_name(kv->v.u64))
            fprintf(f, " (%s)", file_type_name(kv->v.u64));
        fputc('\n', f);
    }
}

/* Every <arch>.* key, whatever the architecture. */
static void text_hparams(FILE *f, const model_facts *mf)
{
    const copse_gguf *g = mf->g;
    char prefix[140], key[256];
    snprintf(prefix, sizeof prefix, "%s.", mf->arch);
    fprintf(f, "\nhyperparameters (%s*)\n", mf->arch[0] ? prefix : "");
    size_t shown = 0;
    for (size_t i = 0; mf->arch[0] && i < copse__gguf_n_kv(g); i++) {
        const copse_gguf_kv *kv = copse__gguf_kv_at(g, i);
        if (!has_prefix(kv->key, prefix))
            continue;
        fprintf(f, "  %-36s ", key_cstr(kv->key, key, sizeof key) + strlen(prefix));
        print_value(f, kv, STRING_SHOWN);
        fputc('\n', f);
        shown++;
    }
    if (!shown)
        fprintf(f, "  (none)\n");
}

static void text_tensors(FILE *f, const model_facts *mf)
{
    char hb[32];
    fprintf(f, "\ntensors\n");
    fprintf(f, "  count                %" PRIu64 "\n", mf->n_tensors);
    fprintf(f, "  bytes                %s (%" PRIu64 " bytes)\n",
            human_bytes(mf->tensor_bytes, hb, sizeof hb), mf->tensor_bytes);
    fprintf(f, "  parameters           %" PRIu64 " (%.1f M)\n", mf->n_params,
            (double)mf->n_params / 1e6);
    if (mf->n_params)
        fprintf(f, "  bits per weight      %.2f\n",
                8.0 * (double)mf->tensor_bytes / (double)mf->n_params);
    fprintf(f, "  %-8s %7s %16s %12s %11s\n", "type", "count", "bytes", "(size)", "elements");
    for (uint32_t t = 0; t < COPSE_Q_TYPE_LIMIT; t++) {
        const type_stat *s = &mf->by_type[t];
        if (!s->count)
            continue;
        fprintf(f, "  %-8s %7" PRIu64 " %16" PRIu64 " %12s %11" PRIu64 "\n", copse__qtype_name(t),
                s->count, s->bytes, human_bytes(s->bytes, hb, sizeof hb), s->elements);
    }
}

static void text_vocab(FILE *f, const model_facts *mf)
{
    fprintf(f, "\nvocabulary\n");
    fprintf(f, "  type                 %s", mf->vocab_type ? mf->vocab_type : "(unknown)");
    if (mf->vocab_model.ptr)
        fprintf(f, " (tokenizer.ggml.model \"%.*s\")", (int)mf->vocab_model.len,
                mf->vocab_model.ptr);
    fputc('\n', f);
    fprintf(f, "  pre-tokenizer        %.*s\n", mf->vocab_pre.ptr ? (int)mf->vocab_pre.len : 6,
            mf->vocab_pre.ptr ? mf->vocab_pre.ptr : "(none)");
    if (mf->n_vocab >= 0)
        fprintf(f, "  size                 %" PRId64 " tokens\n", mf->n_vocab);
    else
        fprintf(f, "  size                 (no tokenizer.ggml.tokens)\n");
    for (int i = 0; i < N_SPECIALS; i++) {
        const special_tok *s = &mf->specials[i];
        fprintf(f, "  %-20s ", s->name);
        if (s->id < 0) {
            fputs("(none)\n", f);
            continue;
        }
        fprintf(f, "%-7d ", (int)s->id);
        print_quoted(f, s->text.ptr, s->text.len, 64);
        fputc('\n', f);
    }
    static const char *const tri[] = {"(not set)", "false", "true"};
    fprintf(f, "  add_bos              %s\n", tri[mf->add_bos + 1]);
    fprintf(f, "  add_eos              %s\n", tri[mf->add_eos + 1]);
    if (!mf->tok)
        fprintf(f, "  tokenizer            not usable: %s\n", mf->tok_err);
}

static void text_chat(FILE *f, const model_facts *mf)
{
    const copse_chat_format *c = mf->chat;
    fprintf(f, "\nchat template\n");
    if (mf->template_len)
        fprintf(f, "  template             %" PRIu64 " bytes\n", mf->template_len);
    else
        fprintf(f, "  template             (none in the file)\n");
    fprintf(f, "  family               %s%s\n", copse__chat_family_name(c->family),
            c->fallback ? " (fallback)" : "");
    if (mf->chat_note[0])
        fprintf(f, "  note                 %s\n", mf->chat_note);
    if (c->default_system) {
        fprintf(f, "  default system       ");
        print_quoted(f, c->default_system, strlen(c->default_system), STRING_SHOWN);
        fputc('\n', f);
    }
}

static void text_kv(FILE *f, const copse_gguf *g)
{
    char key[256];
    fprintf(f, "\nmetadata (%zu keys)\n", copse__gguf_n_kv(g));
    for (size_t i = 0; i < copse__gguf_n_kv(g); i++) {
        const copse_gguf_kv *kv = copse__gguf_kv_at(g, i);
        char type[32];
        fprintf(f, "  %-42s %-14s ", key_cstr(kv->key, key, sizeof key),
                kv_type_name(kv, type, sizeof type));
        print_value(f, kv, STRING_SHOWN);
        fputc('\n', f);
    }
}

/* "[576, 49152]" */
static void print_shape(FILE *f, const copse_gguf_tensor *t)
{
    fputc('[', f);
    for (uint32_t d = 0; d < t->n_dims; d++)
        fprintf(f, "%s%" PRIu64, d ? ", " : "", t->ne[d]);
    fputc(']', f);
}

static void text_tensor_list(FILE *f, const copse_gguf *g)
{
    char name[256];
    fprintf(f, "\ntensor list (offsets from the data section at %" PRIu64 ")\n",
            copse__gguf_data_offset(g));
    fprintf(f, "  %5s  %-40s %-6s %-20s %12s %12s\n", "#", "name", "type", "shape", "bytes",
            "offset");
    for (size_t i = 0; i < copse__gguf_n_tensors(g); i++) {
        const copse_gguf_tensor *t = copse__gguf_tensor_at(g, i);
        char shape[96];
        FILE *mem = fmemopen(shape, sizeof shape, "w");
        if (mem) {
            print_shape(mem, t);
            fclose(mem);
        } else {
            snprintf(shape, sizeof shape, "?");
        }
        fprintf(f, "  %5zu  %-40s %-6s %-20s %12" PRIu64 " %12" PRIu64 "\n", i,
                key_cstr(t->name, name, sizeof name), copse__qtype_name(t->type), shape, t->nbytes,
                t->offset);
    }
}

/* ---------------------------------------------------------------- JSON report */

static void json_report(FILE *f, const info_opts *o, const model_facts *mf)
{
    const copse_gguf *g = mf->g;
    char key[256];
    copse_jw w = {.f = f};
    copse__jw_open(&w, NULL, '{', false);

    copse__jw_open(&w, "file", '{', false);
    copse__jw_cstr(&w, "path", o->path);
    copse__jw_u64(&w, "size", copse__gguf_file_size(g));
    copse__jw_u64(&w, "gguf_version", copse__gguf_version(g));
    copse__jw_u64(&w, "alignment", copse__gguf_alignment(g));
    copse__jw_u64(&w, "data_offset", copse__gguf_data_offset(g));
    copse__jw_u64(&w, "n_kv", copse__gguf_n_kv(g));
    copse__jw_close(&w, '}');

    copse__jw_cstr(&w, "architecture", mf->arch[0] ? mf->arch : NULL);
    if (mf->name.ptr)
        copse__jw_str(&w, "name", mf->name.ptr, mf->name.len);
    else
        copse__jw_cstr(&w, "name", NULL);

    copse__jw_open(&w, "general", '{', false);
    for (size_t i = 0; i < copse__gguf_n_kv(g); i++) {
        const copse_gguf_kv *kv = copse__gguf_kv_at(g, i);
        if (has_prefix(kv->key, "general."))
            jw_value(&w, key_cstr(kv->key, key, sizeof key) + strlen("general."), kv, ARRAY_HEAD);
    }
    copse__jw_close(&w, '}');

    char prefix[140];
    snprintf(prefix, sizeof prefix, "%s.", mf->arch);
    copse__jw_open(&w, "hyperparameters", '{', false);
    for (size_t i = 0; mf->arch[0] && i < copse__gguf_n_kv(g); i++) {
        const copse_gguf_kv *kv = copse__gguf_kv_at(g, i);
        if (has_prefix(kv->key, prefix))
            jw_value(&w, key_cstr(kv->key, key, sizeof key) + strlen(prefix), kv, 1024);
    }
    copse__jw_close(&w, '}');

    copse__jw_open(&w, "tensors", '{', false);
    copse__jw_u64(&w, "count", mf->n_tensors);
    copse__jw_u64(&w, "bytes", mf->tensor_bytes);
    copse__jw_u64(&w, "parameters", mf->n_params);
    copse__jw_open(&w, "by_type", '{', false);
    for (uint32_t t = 0; t < COPSE_Q_TYPE_LIMIT; t++) {
        const type_stat *s = &mf->by_type[t];
        if (!s->count)
            continue;
        copse__jw_open(&w, copse__qtype_name(t), '{', true);
        copse__jw_u64(&w, "count", s->count);
        copse__jw_u64(&w, "bytes", s->bytes);
        copse__jw_u64(&w, "elements", s->elements);
        copse__jw_close(&w, '}');
    }
    copse__jw_close(&w, '}');
    copse__jw_close(&w, '}');

    copse__jw_open(&w, "vocab", '{', false);
    copse__jw_cstr(&w, "type", mf->vocab_type);
    if (mf->vocab_model.ptr)
        copse__jw_str(&w, "model", mf->vocab_model.ptr, mf->vocab_model.len);
    else
        copse__jw_cstr(&w, "model", NULL);
    if (mf->vocab_pre.ptr)
        copse__jw_str(&w, "pre", mf->vocab_pre.ptr, mf->vocab_pre.len);
    else
        copse__jw_cstr(&w, "pre", NULL);
    if (mf->n_vocab >= 0)
        copse__jw_i64(&w, "size", mf->n_vocab);
    else
        copse__jw_cstr(&w, "size", NULL);
    copse__jw_open(&w, "special", '{', false);
    for (int i = 0; i < N_SPECIALS; i++) {
        const special_tok *s = &mf->specials[i];
        if (s->id < 0) {
            copse__jw_cstr(&w, s->name, NULL);
            continue;
        }
        copse__jw_open(&w, s->name, '{', true);
        copse__jw_i64(&w, "id", s->id);
        copse__jw_str(&w, "text", s->text.ptr, s->text.len);
        copse__jw_close(&w, '}');
    }
    copse__jw_close(&w, '}');
    if (mf->add_bos >= 0)
        copse__jw_bool(&w, "add_bos", mf->add_bos);
    else
        copse__jw_cstr(&w, "add_bos", NULL);
    if (mf->add_eos >= 0)
        copse__jw_bool(&w, "add_eos", mf->add_eos);
    else
        copse__jw_cstr(&w, "add_eos", NULL);
    copse__jw_cstr(&w, "tokenizer_error", mf->tok ? NULL : mf->tok_err);
    copse__jw_close(&w, '}');

    copse__jw_open(&w, "chat_template", '{', false);
    copse__jw_bool(&w, "present", mf->template_len > 0);
    copse__jw_u64(&w, "bytes", mf->template_len);
    copse__jw_cstr(&w, "family", copse__chat_family_name(mf->chat->family));
    copse__jw_bool(&w, "fallback", mf->chat->fallback);
    copse__jw_cstr(&w, "note", mf->chat_note[0] ? mf->chat_note : NULL);
    copse__jw_cstr(&w, "default_system", mf->chat->default_system);
    copse__jw_close(&w, '}');

    if (o->kv) {
        copse__jw_open(&w, "metadata", '[', false);
        for (size_t i = 0; i < copse__gguf_n_kv(g); i++) {
            const copse_gguf_kv *kv = copse__gguf_kv_at(g, i);
            copse__jw_open(&w, NULL, '{', true);
            copse__jw_str(&w, "key", kv->key.ptr, kv->key.len);
            char type[32];
            copse__jw_cstr(&w, "type", kv_type_name(kv, type, sizeof type));
            jw_value(&w, "value", kv, ARRAY_HEAD);
            copse__jw_close(&w, '}');
        }
        copse__jw_close(&w, ']');
    }
    if (o->tensors) {
        copse__jw_open(&w, "tensor_list", '[', false);
        for (size_t i = 0; i < copse__gguf_n_tensors(g); i++) {
            const copse_gguf_tensor *t = copse__gguf_tensor_at(g, i);
            copse__jw_open(&w, NULL, '{', true);
            copse__jw_str(&w, "name", t->name.ptr, t->name.len);
            copse__jw_cstr(&w, "type", copse__qtype_name(t->type));
            copse__jw_open(&w, "shape", '[', true);
            for (uint32_t d = 0; d < t->n_dims; d++)
                copse__jw_u64(&w, NULL, t->ne[d]);
            copse__jw_close(&w, ']');
            copse__jw_u64(&w, "bytes", t->nbytes);
            copse__jw_u64(&w, "offset", t->offset);
            copse__jw_close(&w, '}');
        }
        copse__jw_close(&w, ']');
    }
    copse__jw_close(&w, '}');
}

/* ---------------------------------------------------------------- devices */

static const char *dev_kind_name(copse_dev_kind k)
{
    switch (k) {
    case COPSE_DEV_CPU: return "cpu";
    case COPSE_DEV_GPU: return "gpu";
    case COPSE_DEV_ACCEL: return "accel";
    }
    return "?";
}

static int cmd_devices(const info_opts *o)
{
    char hb[32], hb2[32];
    copse_jw w = {.f = stdout};
    if (o->json) {
        copse__jw_open(&w, NULL, '{', false);
        copse__jw_open(&w, "backends", '[', false);
    }
    for (size_t i = 0; i < copse__backend_count(); i++) {
        copse_backend_reg *r = copse__backend_get(i);
        if (!r)
            continue;
        size_t n = r->iface.dev_count(r);
        if (o->json) {
            copse__jw_open(&w, NULL, '{', false);
            copse__jw_cstr(&w, "name", r->name);
            copse__jw_i64(&w, "api_version", r->api_version);
            if (n == 0)
                copse__jw_cstr(&w, "status", copse__backend_status_text(r));
            copse__jw_open(&w, "devices", '[', false);
        } else {
            const char *why = n == 0 ? copse__backend_status_text(r) : "";
            printf("backend %s (api %d): %zu device%s%s%s\n", r->name, r->api_version, n,
                   n == 1 ? "" : "s", why[0] ? ": " : "", why);
        }
        for (size_t d = 0; d < n; d++) {
            copse_backend_dev *dev = r->iface.dev_get(r, d);
            if (!dev)
                continue;
            copse_dev_props p;
            dev->iface.get_props(dev, &p);
            if (o->json) {
                copse__jw_open(&w, NULL, '{', false);
                copse__jw_u64(&w, "index", d);
                copse__jw_cstr(&w, "name", p.name);
                copse__jw_cstr(&w, "kind", dev_kind_name(p.kind));
                copse__jw_u64(&w, "memory_total", p.memory_total);
                copse__jw_u64(&w, "memory_free", p.memory_free);
                copse__jw_i64(&w, "compute_units", p.compute_units);
                copse__jw_cstr(&w, "features", p.features);
                copse__jw_close(&w, '}');
            } else {
                printf("  %s:%zu  %s\n", r->name, d, p.name);
                printf("      kind           %s\n", dev_kind_name(p.kind));
                printf("      compute units  %d\n", p.compute_units);
                if (p.memory_total)
                    printf("      memory         %s total, %s free\n",
                           human_bytes(p.memory_total, hb, sizeof hb),
                           human_bytes(p.memory_free, hb2, sizeof hb2));
                if (p.features[0])
                    printf("      features       %s\n", p.features);
            }
        }
        if (o->json) {
            copse__jw_close(&w, ']');
            copse__jw_close(&w, '}');
        }
    }
    if (o->json) {
        copse__jw_close(&w, ']');
        copse__jw_close(&w, '}');
    }
    return 0;
}

/* ---------------------------------------------------------------- the command */

int copse__cmd_info(int argc, char **argv)
{
    info_opts o = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--kv")) {
            o.kv = true;
        } else if (!strcmp(a, "--tensors")) {
            o.tensors = true;
        } else if (!strcmp(a, "--json")) {
            o.json = true;
        } else if (!strcmp(a, "--devices")) {
            o.devices = true;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "copse info: unknown option '%s'\n\n", a);
            usage(stderr);
            return 2;
        } else if (!o.path) {
            o.path = a;
        } else {
            fprintf(stderr, "copse info: one model at a time ('%s' and '%s')\n", o.path, a);
            return 2;
        }
    }
    if (o.devices) {
        if (o.path || o.kv || o.tensors) {
            fprintf(stderr, "copse info: --devices takes no model and no --kv/--tensors\n");
            return 2;
        }
        return cmd_devices(&o);
    }
    if (!o.path) {
        usage(stderr);
        return 2;
    }

    /* Open through the public API. A model whose vocabulary copse cannot
     * build is still shown: open it again without the tokenizer. */
    char err[1024] = "", tok_err[1024] = "";
    copse_model_params p = copse_model_default_params();
    copse_model *m = NULL;
    copse_status st = copse_model_create(o.path, &p, &m, err, sizeof err);
    if (st != COPSE_OK) {
        snprintf(tok_err, sizeof tok_err, "%s", err);
        p.load_tokenizer = 0;
        st = copse_model_create(o.path, &p, &m, err, sizeof err);
    }
    if (st != COPSE_OK) {
        /* The reader's messages usually start with the path already. */
        if (err[0] && !strncmp(err, o.path, strlen(o.path)))
            fprintf(stderr, "copse info: %s\n", err);
        else
            fprintf(stderr, "copse info: %s: %s\n", o.path, err[0] ? err : copse_strerror(st));
        return 1;
    }

    model_facts *mf = malloc(sizeof *mf);
    if (!mf || (st = gather(m, tok_err, mf)) != COPSE_OK) {
        fprintf(stderr, "copse info: %s: %s\n", o.path, copse_strerror(mf ? st : COPSE_ENOMEM));
        free(mf);
        copse_model_destroy(m);
        return 1;
    }
    if (o.json) {
        json_report(stdout, &o, mf);
    } else {
        text_file(stdout, &o, mf);
        text_model(stdout, mf);
        text_hparams(stdout, mf);
        text_tensors(stdout, mf);
        text_vocab(stdout, mf);
        text_chat(stdout, mf);
        if (o.kv)
            text_kv(stdout, mf->g);
        if (o.tensors)
            text_tensor_list(stdout, mf->g);
    }
    int rc = fflush(stdout) == 0 ? 0 : 1;
    copse__chat_format_destroy(mf->chat);
    free(mf);
    copse_model_destroy(m);
    return rc;
}
