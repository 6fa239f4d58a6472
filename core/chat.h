/*
 * chat.h — chat templates (internal).
 *
 * copse does not run Jinja. It recognises the common template families from
 * the text of tokenizer.chat_template and renders a message list with its own
 * code for each family.
 */
#ifndef COPSE_CORE_CHAT_H
#define COPSE_CORE_CHAT_H

#include <stdbool.h>
#include <stddef.h>

#include "copse.h"

#define COPSE_CHAT_FAMILY_MAP(X)                 \
    X(UNKNOWN, "unknown")                        \
    X(CHATML, "chatml")                          \
    X(LLAMA2, "llama2")                          \
    X(LLAMA3, "llama3")                          \
    X(MISTRAL, "mistral")                        \
    X(GEMMA, "gemma")                            \
    X(ZEPHYR, "zephyr")

typedef enum copse_chat_family {
#define COPSE_CHAT_ENUM_(name, str) COPSE_CHAT_##name,
    COPSE_CHAT_FAMILY_MAP(COPSE_CHAT_ENUM_)
#undef COPSE_CHAT_ENUM_
} copse_chat_family;

typedef struct copse_chat_msg {
    const char *role;    /* "system", "user", "assistant" */
    const char *content; /* UTF-8, NUL-terminated */
} copse_chat_msg;

const char *copse__chat_family_name(copse_chat_family f);
/* Family by name ("chatml"); COPSE_CHAT_UNKNOWN if none. */
copse_chat_family copse__chat_family_from_name(const char *name);

/* Recognise a template from its text (may be NULL/empty: UNKNOWN). */
copse_chat_family copse__chat_detect(const char *tmpl, size_t len);

/* Render messages in family f. bos/eos are the model's BOS/EOS token texts
 * (may be ""). With add_generation_prompt, the text ends with the opening of an
 * assistant turn. On success *out is a malloc'ed NUL-terminated string the
 * caller frees. Unknown roles for a family, or UNKNOWN itself, give
 * COPSE_EINVAL / COPSE_EUNSUPPORTED with err saying why. */
copse_status copse__chat_render(copse_chat_family f, const copse_chat_msg *msgs, size_t n,
                                bool add_generation_prompt, const char *bos, const char *eos,
                                char **out, char *err, size_t err_size);

#endif /* COPSE_CORE_CHAT_H */
