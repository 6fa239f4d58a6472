/*
 * chat.c — chat templates: recognise a template family from its text and
 * render a conversation the way that family's official Jinja template does.
 *
 * Detection looks for each family's distinctive markers, most specific first
 * (see copse__chat_detect). Rendering is one small function per family that
 * appends to a growable buffer; the message list is checked first (roles,
 * order) so a renderer never fails half-way except for lack of memory.
 */
#include "chat.h"

#include <assert.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

/* ---------------------------------------------------------------- names */

static const char *const family_names[] = {
#define COPSE_CHAT_NAME_(name, str) str,
    COPSE_CHAT_FAMILY_MAP(COPSE_CHAT_NAME_)
#undef COPSE_CHAT_NAME_
};

#define N_FAMILIES (sizeof family_names / sizeof family_names[0])

const char *copse__chat_family_name(copse_chat_family f)
{
    if ((unsigned)f >= N_FAMILIES)
        return "unknown";
    return family_names[f];
}

copse_chat_family copse__chat_family_from_name(const char *name)
{
    if (!name)
        return COPSE_CHAT_UNKNOWN;
    for (size_t i = 1; i < N_FAMILIES; i++) {
        const char *a = name, *b = family_names[i];
        while (*a && *b && tolower((unsigned char)*a) == *b) {
            a++;
            b++;
        }
        if (!*a && !*b)
            return (copse_chat_family)i;
    }
    return COPSE_CHAT_UNKNOWN;
}

/* ---------------------------------------------------------------- detection */

/* memmem for a NUL-terminated needle; NULL if absent. */
static const char *find(const char *hay, size_t len, const char *needle)
{
    size_t n = strlen(needle);
    if (!hay || n == 0 || n > len)
        return NULL;
    for (size_t i = 0; i + n <= len; i++)
        if (hay[i] == needle[0] && memcmp(hay + i, needle, n) == 0)
            return hay + i;
    return NULL;
}

static bool has(const char *hay, size_t len, const char *needle)
{
    return find(hay, len, needle) != NULL;
}

/*
 * The order matters where families share markers:
 *   - ChatML, Llama 3 and Gemma have markers no other family uses, so they go
 *     first; a template quoting another family's marker in passing is still
 *     classified by its own turn markers.
 *   - Zephyr's <|user|>/<|assistant|> are shared with Phi-3 (which ends turns
 *     with <|end|>) and GLM-Edge; Zephyr ends turns with the EOS token
 *     (eos_token, or the literal </s>), and a template with <|end|> is not
 *     Zephyr.
 *   - Llama 2 and Mistral both write [INST]; only Llama 2 has the <<SYS>>
 *     block, so that test must come before the plain [INST] test.
 */
copse_chat_family copse__chat_detect(const char *t, size_t len)
{
    if (!t || len == 0)
        return COPSE_CHAT_UNKNOWN;
    if (has(t, len, "<|im_start|>"))
        return COPSE_CHAT_CHATML;
    if (has(t, len, "<|start_header_id|>"))
        return COPSE_CHAT_LLAMA3;
    if (has(t, len, "<start_of_turn>"))
        return COPSE_CHAT_GEMMA;
    if (has(t, len, "<|user|>") && has(t, len, "<|assistant|>") && !has(t, len, "<|end|>") &&
        (has(t, len, "</s>") || has(t, len, "eos_token")))
        return COPSE_CHAT_ZEPHYR;
    if (has(t, len, "[INST]")) {
        if (has(t, len, "<<SYS>>"))
            return COPSE_CHAT_LLAMA2;
        return COPSE_CHAT_MISTRAL;
    }
    return COPSE_CHAT_UNKNOWN;
}

/* ---------------------------------------------------------------- growable text */

typedef struct sbuf {
    char *p;
    size_t len, cap;
    bool oom;
} sbuf;

static void sb_append(sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_puts(sbuf *b, const char *s)
{
    sb_append(b, s, strlen(s));
}

/* ---------------------------------------------------------------- white space */

/* Length of the UTF-8 white-space character at s[0..n) (as Python's
 * str.isspace(), which Jinja's trim and str.strip() use), or 0 if none. */
static size_t space_len(const unsigned char *s, size_t n)
{
    if (n == 0)
        return 0;
    unsigned c = s[0];
    if (c == ' ' || (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x1f))
        return 1;
    if (c == 0xc2 && n >= 2 && (s[1] == 0x85 || s[1] == 0xa0))
        return 2; /* U+0085, U+00A0 */
    if (n < 3)
        return 0;
    unsigned cp = ((c & 0x0fu) << 12) | ((s[1] & 0x3fu) << 6) | (s[2] & 0x3fu);
    if ((c & 0xf0) != 0xe0 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80)
        return 0;
    if (cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 ||
        cp == 0x202f || cp == 0x205f || cp == 0x3000)
        return 3;
    return 0;
}

/* Append s with leading and trailing white space removed. */
static void sb_trimmed(sbuf *b, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s), k;
    while ((k = space_len(p, n)) > 0) {
        p += k;
        n -= k;
    }
    /* From the end: try each possible start of a last character. */
    for (bool again = true; again && n > 0;) {
        again = false;
        for (size_t w = 1; w <= 3 && w <= n; w++) {
            if (space_len(p + n - w, w) == w) {
                n -= w;
                again = true;
                break;
            }
        }
    }
    sb_append(b, (const char *)p, n);
}

/* ---------------------------------------------------------------- checks */

typedef enum role { ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT, ROLE_BAD } role;

static role role_of(const char *r)
{
    if (!r)
        return ROLE_BAD;
    if (!strcmp(r, "system"))
        return ROLE_SYSTEM;
    if (!strcmp(r, "user"))
        return ROLE_USER;
    if (!strcmp(r, "assistant"))
        return ROLE_ASSISTANT;
    return ROLE_BAD;
}

/* Every message has a known role and content; families whose official template
 * demands it get the "optional system, then user/assistant alternating from
 * user" rule. */
static copse_status check_messages(copse_chat_family f, const copse_chat_msg *msgs, size_t n,
                                   char *err, size_t err_size)
{
    const char *fam = copse__chat_family_name(f);
    if (!msgs || n == 0)
        return copse__errorf(err, err_size, COPSE_EINVAL, "no messages to render");
    for (size_t i = 0; i < n; i++) {
        if (!msgs[i].role)
            return copse__errorf(err, err_size, COPSE_EINVAL, "message %zu has no role", i);
        if (role_of(msgs[i].role) == ROLE_BAD)
            return copse__errorf(err, err_size, COPSE_EINVAL,
                                 "message %zu: role '%.64s' is not supported by the %s template "
                                 "(want system, user or assistant)",
                                 i, msgs[i].role, fam);
        if (!msgs[i].content)
            return copse__errorf(err, err_size, COPSE_EINVAL, "message %zu has no content", i);
    }
    if (f == COPSE_CHAT_LLAMA2 || f == COPSE_CHAT_MISTRAL || f == COPSE_CHAT_GEMMA) {
        size_t first = role_of(msgs[0].role) == ROLE_SYSTEM ? 1 : 0;
        for (size_t i = first; i < n; i++) {
            role want = (i - first) % 2 == 0 ? ROLE_USER : ROLE_ASSISTANT;
            if (role_of(msgs[i].role) != want)
                return copse__errorf(err, err_size, COPSE_EINVAL,
                                     "message %zu: the %s template wants one optional leading "
                                     "system message, then user and assistant messages "
                                     "alternating from user (got '%s', want '%s')",
                                     i, fam, msgs[i].role,
                                     want == ROLE_USER ? "user" : "assistant");
        }
    }
    return COPSE_OK;
}

/* ---------------------------------------------------------------- renderers */

/* What a renderer gets besides the messages. */
typedef struct render_ctx {
    const copse_chat_msg *m;
    size_t n;
    bool gen;                   /* add_generation_prompt */
    const char *bos, *eos;      /* never NULL */
    const char *default_system; /* chatml only; NULL if none */
} render_ctx;

static void render_chatml(sbuf *b, const render_ctx *c)
{
    if (c->default_system && role_of(c->m[0].role) != ROLE_SYSTEM) {
        sb_puts(b, "<|im_start|>system\n");
        sb_puts(b, c->default_system);
        sb_puts(b, "<|im_end|>\n");
    }
    for (size_t i = 0; i < c->n; i++) {
        sb_puts(b, "<|im_start|>");
        sb_puts(b, c->m[i].role);
        sb_puts(b, "\n");
        sb_puts(b, c->m[i].content);
        sb_puts(b, "<|im_end|>\n");
    }
    if (c->gen)
        sb_puts(b, "<|im_start|>assistant\n");
}

static void render_llama3(sbuf *b, const render_ctx *c)
{
    sb_puts(b, c->bos);
    for (size_t i = 0; i < c->n; i++) {
        sb_puts(b, "<|start_header_id|>");
        sb_puts(b, c->m[i].role);
        sb_puts(b, "<|end_header_id|>\n\n");
        sb_trimmed(b, c->m[i].content);
        sb_puts(b, "<|eot_id|>");
    }
    if (c->gen)
        sb_puts(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

/* Llama 2: the system block joins the first user message and the whole is
 * stripped, so white space before the system text or after the user text
 * goes, but not between them. */
static void render_llama2(sbuf *b, const render_ctx *c)
{
    size_t first = role_of(c->m[0].role) == ROLE_SYSTEM ? 1 : 0;
    for (size_t i = first; i < c->n; i++) {
        if (role_of(c->m[i].role) == ROLE_USER) {
            sb_puts(b, c->bos);
            sb_puts(b, "[INST] ");
            if (i == first && first == 1) {
                sbuf joined = {0};
                sb_puts(&joined, "<<SYS>>\n");
                sb_puts(&joined, c->m[0].content);
                sb_puts(&joined, "\n<</SYS>>\n\n");
                sb_puts(&joined, c->m[i].content);
                if (joined.oom)
                    b->oom = true;
                else
                    sb_trimmed(b, joined.p);
                free(joined.p);
            } else {
                sb_trimmed(b, c->m[i].content);
            }
            sb_puts(b, " [/INST]");
        } else { /* assistant */
            sb_puts(b, " ");
            sb_trimmed(b, c->m[i].content);
            sb_puts(b, " ");
            sb_puts(b, c->eos);
        }
    }
}

static void render_mistral(sbuf *b, const render_ctx *c)
{
    size_t first = role_of(c->m[0].role) == ROLE_SYSTEM ? 1 : 0;
    sb_puts(b, c->bos);
    for (size_t i = first; i < c->n; i++) {
        if (role_of(c->m[i].role) == ROLE_USER) {
            sb_puts(b, " [INST] ");
            if (i == first && first == 1) {
                sb_puts(b, c->m[0].content);
                sb_puts(b, "\n\n");
            }
            sb_puts(b, c->m[i].content);
            sb_puts(b, " [/INST]");
        } else { /* assistant */
            sb_puts(b, " ");
            sb_puts(b, c->m[i].content);
            sb_puts(b, c->eos);
        }
    }
}

static void render_gemma(sbuf *b, const render_ctx *c)
{
    size_t first = role_of(c->m[0].role) == ROLE_SYSTEM ? 1 : 0;
    sb_puts(b, c->bos);
    for (size_t i = first; i < c->n; i++) {
        bool user = role_of(c->m[i].role) == ROLE_USER;
        sb_puts(b, user ? "<start_of_turn>user\n" : "<start_of_turn>model\n");
        if (i == first && first == 1) {
            sb_puts(b, c->m[0].content); /* not trimmed, as in the template */
            sb_puts(b, "\n\n");
        }
        sb_trimmed(b, c->m[i].content);
        sb_puts(b, "<end_of_turn>\n");
    }
    if (c->gen)
        sb_puts(b, "<start_of_turn>model\n");
}

static void render_zephyr(sbuf *b, const render_ctx *c)
{
    for (size_t i = 0; i < c->n; i++) {
        sb_puts(b, "<|");
        sb_puts(b, c->m[i].role);
        sb_puts(b, "|>\n");
        sb_puts(b, c->m[i].content);
        sb_puts(b, c->eos);
        sb_puts(b, "\n");
    }
    if (c->gen)
        sb_puts(b, "<|assistant|>\n");
}

static copse_status render(copse_chat_family f, const render_ctx *c, char **out, char *err,
                           size_t err_size)
{
    if (!out)
        return copse__errorf(err, err_size, COPSE_EINVAL, "no output pointer given");
    *out = NULL;
    void (*fn)(sbuf *, const render_ctx *) = NULL;
    switch (f) {
    case COPSE_CHAT_CHATML: fn = render_chatml; break;
    case COPSE_CHAT_LLAMA2: fn = render_llama2; break;
    case COPSE_CHAT_LLAMA3: fn = render_llama3; break;
    case COPSE_CHAT_MISTRAL: fn = render_mistral; break;
    case COPSE_CHAT_GEMMA: fn = render_gemma; break;
    case COPSE_CHAT_ZEPHYR: fn = render_zephyr; break;
    case COPSE_CHAT_UNKNOWN: break;
    }
    if (!fn)
        return copse__errorf(err, err_size, COPSE_EUNSUPPORTED,
                             "cannot render a chat in an unknown template family "
                             "(choose one of chatml, llama2, llama3, mistral, gemma, zephyr)");
    copse_status st = check_messages(f, c->m, c->n, err, err_size);
    if (st != COPSE_OK)
        return st;
    sbuf b = {0};
    sb_append(&b, "", 0); /* an empty rendering is still a string */
    fn(&b, c);
    if (b.oom) {
        free(b.p);
        return copse__errorf(err, err_size, COPSE_ENOMEM, "out of memory rendering a chat");
    }
    *out = b.p;
    return COPSE_OK;
}

copse_status copse__chat_render(copse_chat_family f, const copse_chat_msg *msgs, size_t n,
                                bool add_generation_prompt, const char *bos, const char *eos,
                                char **out, char *err, size_t err_size)
{
    render_ctx c = {
        .m = msgs,
        .n = n,
        .gen = add_generation_prompt,
        .bos = bos ? bos : "",
        .eos = eos ? eos : "",
        .default_system = NULL,
    };
    return render(f, &c, out, err, err_size);
}

/* ---------------------------------------------------------------- default system prompt */

/*
 * ChatML templates such as SmolLM2's and Qwen2's write a fixed system turn
 * when the conversation does not start with one:
 *
 *   {% if loop.first and messages[0]['role'] != 'system' %}
 *   {{ '<|im_start|>system\nYou are a helpful AI assistant ...<|im_end|>\n' }}
 *
 * Find "<|im_start|>system", a newline (raw, or the escape \n), then literal
 * text up to "<|im_end|>". A quote or brace before that means the text is an
 * expression (messages[0]['content']), not a fixed prompt: try the next one.
 * Jinja string escapes in the literal are undone. Returns a malloc'ed string,
 * NULL if there is none (or no memory).
 */
static char *find_default_system(const char *t, size_t len)
{
    static const char head[] = "<|im_start|>system";
    static const char tail[] = "<|im_end|>";
    const char *end = t + len;
    for (const char *p = find(t, len, head); p; p = find(p + 1, (size_t)(end - p - 1), head)) {
        const char *q = p + sizeof head - 1;
        if (q < end && *q == '\n')
            q++;
        else if (end - q >= 2 && q[0] == '\\' && q[1] == 'n')
            q += 2;
        else
            continue;
        sbuf b = {0};
        bool ok = false;
        while (q < end) {
            if ((size_t)(end - q) >= sizeof tail - 1 && !memcmp(q, tail, sizeof tail - 1)) {
                ok = b.len > 0;
                break;
            }
            char ch = *q;
            if (ch == '\'' || ch == '"' || ch == '{' || ch == '}')
                break;
            if (ch == '\\' && end - q >= 2) {
                char e = q[1];
                char lit = e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' : e;
                sb_append(&b, &lit, 1);
                q += 2;
                continue;
            }
            sb_append(&b, q, 1);
            q++;
        }
        if (ok && !b.oom)
            return b.p;
        free(b.p);
    }
    return NULL;
}

/* ---------------------------------------------------------------- a model's format */

static char *dup_str(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        if (n)
            memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

/* A family implied by the architecture, for models without a template. */
static copse_chat_family family_of_arch(const char *arch)
{
    if (arch && !strncmp(arch, "gemma", 5))
        return COPSE_CHAT_GEMMA;
    return COPSE_CHAT_UNKNOWN;
}

copse_status copse__chat_format_create(const char *tmpl, size_t tmpl_len, const char *arch,
                                       const char *bos, const char *eos, copse_chat_format **out,
                                       char *note, size_t note_size)
{
    assert(out);
    if (note && note_size)
        note[0] = '\0';
    *out = NULL;
    copse_chat_format *fmt = calloc(1, sizeof *fmt);
    if (!fmt)
        goto fail;
    fmt->has_template = tmpl && tmpl_len > 0;
    fmt->family = copse__chat_detect(tmpl, tmpl_len);
    if (fmt->family == COPSE_CHAT_UNKNOWN) {
        fmt->fallback = true;
        copse_chat_family hint = fmt->has_template ? COPSE_CHAT_UNKNOWN : family_of_arch(arch);
        if (hint != COPSE_CHAT_UNKNOWN) {
            fmt->family = hint;
            copse__errorf(note, note_size, COPSE_OK,
                          "model has no chat template; using %s (from architecture '%.64s')",
                          copse__chat_family_name(hint), arch);
        } else {
            fmt->family = COPSE_CHAT_FALLBACK;
            copse__errorf(note, note_size, COPSE_OK, "%s; using %s",
                          fmt->has_template ? "chat template not recognised"
                                            : "model has no chat template",
                          copse__chat_family_name(COPSE_CHAT_FALLBACK));
        }
    } else if (fmt->family == COPSE_CHAT_CHATML) {
        fmt->default_system = find_default_system(tmpl, tmpl_len);
    }
    fmt->bos = dup_str(bos ? bos : "", bos ? strlen(bos) : 0);
    fmt->eos = dup_str(eos ? eos : "", eos ? strlen(eos) : 0);
    if (!fmt->bos || !fmt->eos)
        goto fail;
    *out = fmt;
    return COPSE_OK;
fail:
    copse__chat_format_destroy(fmt);
    return copse__errorf(note, note_size, COPSE_ENOMEM, "out of memory");
}

/* Text of the token whose id is stored under key, or "" if there is none. */
static char *token_text(const copse_gguf *g, const char *key)
{
    uint32_t id;
    const copse_gguf_array *toks;
    if (copse__gguf_get_u32(g, key, &id) == COPSE_OK &&
        copse__gguf_get_arr(g, "tokenizer.ggml.tokens", COPSE_GGUF_STRING, &toks) == COPSE_OK &&
        toks->strs && id < toks->n)
        return dup_str(toks->strs[id].ptr, (size_t)toks->strs[id].len);
    return dup_str("", 0);
}

copse_status copse__chat_format_from_gguf(const copse_gguf *g, copse_chat_format **out,
                                          char *note, size_t note_size)
{
    copse_str tmpl = {NULL, 0}, arch_s = {NULL, 0};
    (void)copse__gguf_get_str(g, "tokenizer.chat_template", &tmpl);
    char *arch = NULL;
    if (copse__gguf_get_str(g, "general.architecture", &arch_s) == COPSE_OK)
        arch = dup_str(arch_s.ptr, (size_t)arch_s.len);
    char *bos = token_text(g, "tokenizer.ggml.bos_token_id");
    char *eos = token_text(g, "tokenizer.ggml.eos_token_id");
    copse_status st;
    if (!bos || !eos || (arch_s.ptr && !arch)) {
        *out = NULL;
        st = copse__errorf(note, note_size, COPSE_ENOMEM, "out of memory");
    } else {
        st = copse__chat_format_create(tmpl.ptr, (size_t)tmpl.len, arch, bos, eos, out, note,
                                       note_size);
    }
    free(arch);
    free(bos);
    free(eos);
    return st;
}

void copse__chat_format_destroy(copse_chat_format *fmt)
{
    if (!fmt)
        return;
    free(fmt->default_system);
    free(fmt->bos);
    free(fmt->eos);
    free(fmt);
}

copse_status copse__chat_format_render(const copse_chat_format *fmt, const copse_chat_msg *msgs,
                                       size_t n, bool add_generation_prompt, char **out, char *err,
                                       size_t err_size)
{
    render_ctx c = {
        .m = msgs,
        .n = n,
        .gen = add_generation_prompt,
        .bos = fmt->bos,
        .eos = fmt->eos,
        .default_system = fmt->family == COPSE_CHAT_CHATML ? fmt->default_system : NULL,
    };
    return render(fmt->family, &c, out, err, err_size);
}
