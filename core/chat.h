/*
 * chat.h — chat templates (internal).
 *
 * copse does not run Jinja. It recognises the common template families from
 * the text of tokenizer.chat_template and renders a message list with its own
 * code for each family, reproducing what the family's official template
 * renders (with Hugging Face's Jinja settings: trim_blocks, lstrip_blocks):
 *
 *   chatml   <|im_start|>ROLE\nCONTENT<|im_end|>\n ...  <|im_start|>assistant\n
 *            (Qwen, SmolLM, ...; no BOS text). A default system prompt that
 *            the template inserts when the conversation has none (SmolLM2,
 *            Qwen2) is taken from the template text: see copse_chat_format.
 *   llama3   BOS <|start_header_id|>ROLE<|end_header_id|>\n\nTRIM(CONTENT)<|eot_id|> ...
 *            <|start_header_id|>assistant<|end_header_id|>\n\n   (Meta-Llama-3-Instruct)
 *   llama2   BOS[INST] <<SYS>>\nSYSTEM\n<</SYS>>\n\nUSER [/INST] ASSISTANT EOS ...
 *            (Llama-2-chat; the first user turn is stripped together with the
 *            system block; no generation prompt: the text ends with [/INST])
 *   mistral  BOS [INST] SYSTEM\n\nUSER [/INST] ASSISTANT EOS [INST] ... [/INST]
 *            (Mistral's tokenizer-V1 format: Mistral 7B Instruct v0.1/v0.2,
 *            Mixtral 8x7B; the system prompt is prepended to the first user
 *            message; no generation prompt)
 *   gemma    BOS<start_of_turn>user\nSYSTEM\n\nTRIM(USER)<end_of_turn>\n
 *            <start_of_turn>model\nTRIM(ASSISTANT)<end_of_turn>\n ... <start_of_turn>model\n
 *            (Gemma 3; the system prompt is folded into the first user turn)
 *   zephyr   <|system|>\nCONTENT EOS\n<|user|>\n... <|assistant|>\n   (Zephyr, TinyLlama-chat)
 *
 * TRIM is Jinja's trim / Python's str.strip(): Unicode white space at both ends.
 * llama2, mistral and gemma accept one optional leading system message, then
 * strictly alternating user/assistant messages starting with user, as their
 * official templates demand (they raise an exception otherwise).
 *
 * The rendered text contains the BOS text where the template writes it, so it
 * must be tokenized with special tokens parsed and WITHOUT adding another BOS.
 *
 * Threading: all functions are reentrant; a copse_chat_format is immutable
 * after creation.
 */
#ifndef COPSE_CORE_CHAT_H
#define COPSE_CORE_CHAT_H

#include <stdbool.h>
#include <stddef.h>

#include "copse.h"
#include "gguf.h"

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

/* The family used when a model's template is missing or not recognised. */
#define COPSE_CHAT_FALLBACK COPSE_CHAT_CHATML

typedef struct copse_chat_msg {
    const char *role;    /* "system", "user", "assistant" */
    const char *content; /* UTF-8, NUL-terminated */
} copse_chat_msg;

const char *copse__chat_family_name(copse_chat_family f);
/* Family by name ("chatml", case-insensitive); COPSE_CHAT_UNKNOWN if none. */
copse_chat_family copse__chat_family_from_name(const char *name);

/* Recognise a template from its text (may be NULL/empty: UNKNOWN). */
copse_chat_family copse__chat_detect(const char *tmpl, size_t len);

/* Render messages in family f. bos/eos are the model's BOS/EOS token texts
 * (may be ""; NULL counts as ""). With add_generation_prompt, the text ends
 * with the opening of an assistant turn (llama2 and mistral have none). On
 * success *out is a malloc'ed NUL-terminated string the caller frees. Unknown
 * roles for a family, or UNKNOWN itself, give COPSE_EINVAL / COPSE_EUNSUPPORTED
 * with err saying why. */
copse_status copse__chat_render(copse_chat_family f, const copse_chat_msg *msgs, size_t n,
                                bool add_generation_prompt, const char *bos, const char *eos,
                                char **out, char *err, size_t err_size);

/* ---------------------------------------------------------------- a model's format */

/* How one model writes its chat turns: the family plus the details of its
 * template that the family's renderer honours. */
typedef struct copse_chat_format {
    copse_chat_family family; /* never UNKNOWN */
    bool fallback;            /* true if family was not recognised from a template */
    bool has_template;        /* the model carries a template text */
    char *default_system;     /* chatml: system prompt the template inserts when the
                               * conversation has none; NULL if none */
    char *bos;                /* BOS / EOS token texts ("" if the model has none) */
    char *eos;
} copse_chat_format;

/* Pick the format for a template text (tmpl may be NULL: no template) of a
 * model of architecture arch (general.architecture; may be NULL). The family
 * is the detected one; otherwise, for a model without a template whose
 * architecture implies a family (gemma*), that one; otherwise
 * COPSE_CHAT_FALLBACK. When it is not the detected one, note (may be NULL)
 * receives a sentence naming the family used, e.g. "chat template not
 * recognised; using chatml"; else note is "". bos/eos may be NULL ("").
 * Fails only with COPSE_ENOMEM. */
copse_status copse__chat_format_create(const char *tmpl, size_t tmpl_len, const char *arch,
                                       const char *bos, const char *eos, copse_chat_format **out,
                                       char *note, size_t note_size);

/* The same from a GGUF file's tokenizer.chat_template, general.architecture and
 * the texts of tokenizer.ggml.bos/eos_token_id in tokenizer.ggml.tokens. */
copse_status copse__chat_format_from_gguf(const copse_gguf *g, copse_chat_format **out,
                                          char *note, size_t note_size);

void copse__chat_format_destroy(copse_chat_format *fmt);

/* Render with the format's family, default system prompt and BOS/EOS texts.
 * Same contract as copse__chat_render. */
copse_status copse__chat_format_render(const copse_chat_format *fmt, const copse_chat_msg *msgs,
                                       size_t n, bool add_generation_prompt, char **out, char *err,
                                       size_t err_size);

#endif /* COPSE_CORE_CHAT_H */
