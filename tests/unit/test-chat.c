/*
 * test-chat.c — chat template detection and rendering.
 *
 * The expected strings below were derived by hand from each family's
 * official Jinja template (rendered with Hugging Face's settings,
 * trim_blocks + lstrip_blocks); tests/model/test_chat_templates.py checks
 * the same renderings against jinja2 itself.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "gguf.h"
#include "test.h"

/* ---------------------------------------------------------------- template snippets */

/* Short but realistic: each is (a trimmed form of) a family's published template. */
static const char T_CHATML[] =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] "
    "+ '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' "
    "}}{% endif %}";

static const char T_SMOLLM2[] =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ "
    "'<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' "
    "}}{% endif %}";

/* Qwen2.5 style: the first system literal is an expression, the second a default. */
static const char T_QWEN[] =
    "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + "
    "messages[0]['content'] + '<|im_end|>\\n' }}{%- else %}{{- '<|im_start|>system\\nYou are "
    "Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}{%- endif %}";

static const char T_LLAMA3[] =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim "
    "+ '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif "
    "%}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";

static const char T_GEMMA[] =
    "{{ bos_token }}\n{%- if messages[0]['role'] == 'system' -%}\n"
    "{%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}\n"
    "{%- set loop_messages = messages[1:] -%}\n{%- else -%}\n"
    "{%- set first_user_prefix = \"\" -%}\n{%- set loop_messages = messages -%}\n{%- endif -%}\n"
    "{%- for message in loop_messages -%}\n"
    "{%- if (message['role'] == 'assistant') -%}{%- set role = \"model\" -%}"
    "{%- else -%}{%- set role = message['role'] -%}{%- endif -%}\n"
    "{{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else \"\") }}"
    "{{ message['content'] | trim }}{{ '<end_of_turn>\\n' }}{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}{{'<start_of_turn>model\\n'}}{%- endif -%}\n";

static const char T_ZEPHYR[] =
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\\n' + "
    "message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ "
    "'<|system|>\\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' "
    "%}\n{{ '<|assistant|>\\n'  + message['content'] + eos_token }}\n{% endif %}\n{% if loop.last "
    "and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}";

/* A Zephyr-style template that writes the EOS text literally. */
static const char T_ZEPHYR_LITERAL[] =
    "{% for message in messages %}{{ '<|' + message['role'] + '|>\\n' + message['content'] + "
    "'</s>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
    "{# roles: <|user|> <|assistant|> <|system|> #}";

static const char T_LLAMA2[] =
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set "
    "system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set "
    "system_message = false %}{% endif %}{% for message in loop_messages %}{% if loop.index0 == 0 "
    "and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
    "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}"
    "{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' "
    "[/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + "
    "eos_token }}{% endif %}{% endfor %}";

static const char T_MISTRAL[] =
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != "
    "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] "
    "' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ "
    "message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles "
    "are supported!') }}{% endif %}{% endfor %}";

static const char T_MISTRAL_TOOLS[] =
    "{{- bos_token }}{%- for message in loop_messages %}{%- if message['role'] == 'user' %}"
    "{%- if tools is not none %}{{- '[AVAILABLE_TOOLS] [' }}{%- endif %}"
    "{{- '[INST] ' + message['content'] + '[/INST]' }}{%- endif %}{%- endfor %}";

/* Phi-3 shares <|user|>/<|assistant|> with Zephyr but ends turns with <|end|>. */
static const char T_PHI3[] =
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') %}{{'<|user|>' + "
    "'\\n' + message['content'] + '<|end|>' + '\\n' + '<|assistant|>' + '\\n'}}{% elif "
    "(message['role'] == 'assistant') %}{{message['content'] + '<|end|>' + '\\n'}}{% endif %}{% "
    "endfor %}{{ eos_token }}";

static const char T_OTHER[] =
    "{% for message in messages %}### {{ message['role'] }}:\\n{{ message['content'] }}\\n{% "
    "endfor %}";

/* ---------------------------------------------------------------- detection */

static void test_detect(void)
{
    static const struct {
        const char *name, *text;
        copse_chat_family want;
    } cases[] = {
        {"chatml", T_CHATML, COPSE_CHAT_CHATML},
        {"smollm2", T_SMOLLM2, COPSE_CHAT_CHATML},
        {"qwen", T_QWEN, COPSE_CHAT_CHATML},
        {"llama3", T_LLAMA3, COPSE_CHAT_LLAMA3},
        {"gemma", T_GEMMA, COPSE_CHAT_GEMMA},
        {"zephyr", T_ZEPHYR, COPSE_CHAT_ZEPHYR},
        {"zephyr literal </s>", T_ZEPHYR_LITERAL, COPSE_CHAT_ZEPHYR},
        {"llama2", T_LLAMA2, COPSE_CHAT_LLAMA2},
        {"mistral", T_MISTRAL, COPSE_CHAT_MISTRAL},
        {"mistral with tools", T_MISTRAL_TOOLS, COPSE_CHAT_MISTRAL},
        {"phi3 is not zephyr", T_PHI3, COPSE_CHAT_UNKNOWN},
        {"other", T_OTHER, COPSE_CHAT_UNKNOWN},
        {"empty", "", COPSE_CHAT_UNKNOWN},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        copse_chat_family got = copse__chat_detect(cases[i].text, strlen(cases[i].text));
        if (got != cases[i].want)
            fprintf(stderr, "detect '%s': got %s, want %s\n", cases[i].name,
                    copse__chat_family_name(got), copse__chat_family_name(cases[i].want));
        CHECK_INT_EQ(got, cases[i].want);
    }
    CHECK_INT_EQ(copse__chat_detect(NULL, 0), COPSE_CHAT_UNKNOWN);
    /* The length bounds the search: a marker past len is not seen. */
    CHECK_INT_EQ(copse__chat_detect(T_CHATML, 10), COPSE_CHAT_UNKNOWN);
}

static void test_names(void)
{
    CHECK_STR_EQ(copse__chat_family_name(COPSE_CHAT_CHATML), "chatml");
    CHECK_STR_EQ(copse__chat_family_name(COPSE_CHAT_ZEPHYR), "zephyr");
    CHECK_STR_EQ(copse__chat_family_name((copse_chat_family)99), "unknown");
    static const char *const names[] = {"chatml", "llama2", "llama3", "mistral", "gemma", "zephyr"};
    for (size_t i = 0; i < 6; i++) {
        copse_chat_family f = copse__chat_family_from_name(names[i]);
        CHECK(f != COPSE_CHAT_UNKNOWN);
        CHECK_STR_EQ(copse__chat_family_name(f), names[i]);
    }
    CHECK_INT_EQ(copse__chat_family_from_name("ChatML"), COPSE_CHAT_CHATML);
    CHECK_INT_EQ(copse__chat_family_from_name("chatm"), COPSE_CHAT_UNKNOWN);
    CHECK_INT_EQ(copse__chat_family_from_name("unknown"), COPSE_CHAT_UNKNOWN);
    CHECK_INT_EQ(copse__chat_family_from_name(""), COPSE_CHAT_UNKNOWN);
    CHECK_INT_EQ(copse__chat_family_from_name(NULL), COPSE_CHAT_UNKNOWN);
}

/* ---------------------------------------------------------------- rendering */

static const copse_chat_msg CONV[] = {
    {"system", "You are terse."},
    {"user", "Hi!"},
    {"assistant", "Hello."},
    {"user", "What is 2+2?"},
};
#define N_CONV (sizeof CONV / sizeof CONV[0])

/* Render and compare; prints both sides on a mismatch. */
static void expect_render(copse_chat_family f, const copse_chat_msg *m, size_t n, bool gen,
                          const char *bos, const char *eos, const char *want)
{
    char *out = NULL, err[256] = "";
    copse_status st = copse__chat_render(f, m, n, gen, bos, eos, &out, err, sizeof err);
    CHECK_STATUS(st, COPSE_OK);
    if (st != COPSE_OK)
        fprintf(stderr, "  %s: %s\n", copse__chat_family_name(f), err);
    CHECK_STR_EQ(out, want);
    free(out);
}

static void test_render_families(void)
{
    expect_render(COPSE_CHAT_CHATML, CONV, N_CONV, true, "<s>", "</s>",
                  "<|im_start|>system\nYou are terse.<|im_end|>\n"
                  "<|im_start|>user\nHi!<|im_end|>\n"
                  "<|im_start|>assistant\nHello.<|im_end|>\n"
                  "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
                  "<|im_start|>assistant\n");
    expect_render(COPSE_CHAT_LLAMA3, CONV, N_CONV, true, "<|begin_of_text|>", "<|eot_id|>",
                  "<|begin_of_text|>"
                  "<|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
                  "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>"
                  "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
                  "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
                  "<|start_header_id|>assistant<|end_header_id|>\n\n");
    expect_render(COPSE_CHAT_LLAMA2, CONV, N_CONV, true, "<s>", "</s>",
                  "<s>[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHi! [/INST] Hello. </s>"
                  "<s>[INST] What is 2+2? [/INST]");
    expect_render(COPSE_CHAT_MISTRAL, CONV, N_CONV, true, "<s>", "</s>",
                  "<s> [INST] You are terse.\n\nHi! [/INST] Hello.</s> [INST] What is 2+2? [/INST]");
    expect_render(COPSE_CHAT_GEMMA, CONV, N_CONV, true, "<bos>", "<eos>",
                  "<bos><start_of_turn>user\nYou are terse.\n\nHi!<end_of_turn>\n"
                  "<start_of_turn>model\nHello.<end_of_turn>\n"
                  "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n"
                  "<start_of_turn>model\n");
    expect_render(COPSE_CHAT_ZEPHYR, CONV, N_CONV, true, "<s>", "</s>",
                  "<|system|>\nYou are terse.</s>\n<|user|>\nHi!</s>\n"
                  "<|assistant|>\nHello.</s>\n<|user|>\nWhat is 2+2?</s>\n<|assistant|>\n");
}

/* Without a generation prompt, and without a system message. */
static void test_render_variants(void)
{
    const copse_chat_msg *m = CONV + 1; /* user, assistant, user */
    size_t n = N_CONV - 1;
    expect_render(COPSE_CHAT_CHATML, m, n, false, "", "",
                  "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n"
                  "<|im_start|>user\nWhat is 2+2?<|im_end|>\n");
    expect_render(COPSE_CHAT_LLAMA3, m, 1, false, "<|begin_of_text|>", "",
                  "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>");
    expect_render(COPSE_CHAT_LLAMA2, m, n, false, "<s>", "</s>",
                  "<s>[INST] Hi! [/INST] Hello. </s><s>[INST] What is 2+2? [/INST]");
    expect_render(COPSE_CHAT_MISTRAL, m, 2, false, "<s>", "</s>",
                  "<s> [INST] Hi! [/INST] Hello.</s>");
    expect_render(COPSE_CHAT_GEMMA, m, 2, false, "<bos>", "",
                  "<bos><start_of_turn>user\nHi!<end_of_turn>\n"
                  "<start_of_turn>model\nHello.<end_of_turn>\n");
    expect_render(COPSE_CHAT_ZEPHYR, m, 1, false, "", "</s>", "<|user|>\nHi!</s>\n");
    /* NULL bos/eos count as "". */
    expect_render(COPSE_CHAT_GEMMA, m, 1, true, NULL, NULL,
                  "<start_of_turn>user\nHi!<end_of_turn>\n<start_of_turn>model\n");
    /* A lone system message: the families that fold it into a user turn
     * render only what precedes the loop. */
    expect_render(COPSE_CHAT_GEMMA, CONV, 1, false, "<bos>", "", "<bos>");
    expect_render(COPSE_CHAT_LLAMA2, CONV, 1, false, "<s>", "</s>", "");
    expect_render(COPSE_CHAT_MISTRAL, CONV, 1, false, "<s>", "</s>", "<s>");
}

/* Which families trim message content, and how (Jinja trim / str.strip()). */
static void test_render_whitespace(void)
{
    static const copse_chat_msg ws[] = {
        {"system", "  Sys  "},
        {"user", "\n Hi \t"},
        {"assistant", " Yo\xc2\xa0"}, /* trailing U+00A0 no-break space */
        {"user", "\xe3\x80\x80Q\xe2\x80\x83"}, /* U+3000 ... U+2003 */
    };
    expect_render(COPSE_CHAT_CHATML, ws, 2, false, "", "",
                  "<|im_start|>system\n  Sys  <|im_end|>\n<|im_start|>user\n\n Hi \t<|im_end|>\n");
    expect_render(COPSE_CHAT_LLAMA3, ws, 4, false, "", "",
                  "<|start_header_id|>system<|end_header_id|>\n\nSys<|eot_id|>"
                  "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                  "<|start_header_id|>assistant<|end_header_id|>\n\nYo<|eot_id|>"
                  "<|start_header_id|>user<|end_header_id|>\n\nQ<|eot_id|>");
    /* Llama 2 strips the joined system block + first user text as a whole. */
    expect_render(COPSE_CHAT_LLAMA2, ws, 4, false, "<s>", "</s>",
                  "<s>[INST] <<SYS>>\n  Sys  \n<</SYS>>\n\n\n Hi [/INST] Yo </s><s>[INST] Q [/INST]");
    /* Mistral V1 does not trim. */
    expect_render(COPSE_CHAT_MISTRAL, ws, 2, false, "<s>", "</s>",
                  "<s> [INST]   Sys  \n\n\n Hi \t [/INST]");
    /* Gemma trims each message but not the folded system text. */
    expect_render(COPSE_CHAT_GEMMA, ws, 4, false, "", "",
                  "<start_of_turn>user\n  Sys  \n\nHi<end_of_turn>\n"
                  "<start_of_turn>model\nYo<end_of_turn>\n"
                  "<start_of_turn>user\nQ<end_of_turn>\n");
    expect_render(COPSE_CHAT_ZEPHYR, ws + 1, 1, false, "", "</s>", "<|user|>\n\n Hi \t</s>\n");
    /* All white space: trims to nothing. */
    static const copse_chat_msg blank[] = {{"user", " \n\t "}};
    expect_render(COPSE_CHAT_LLAMA3, blank, 1, false, "", "",
                  "<|start_header_id|>user<|end_header_id|>\n\n<|eot_id|>");
}

/* ChatML and Zephyr accept any order of known roles, including a late system turn. */
static void test_render_free_order(void)
{
    static const copse_chat_msg m[] = {
        {"user", "a"}, {"user", "b"}, {"system", "c"}, {"assistant", "d"}};
    expect_render(COPSE_CHAT_CHATML, m, 4, false, "", "",
                  "<|im_start|>user\na<|im_end|>\n<|im_start|>user\nb<|im_end|>\n"
                  "<|im_start|>system\nc<|im_end|>\n<|im_start|>assistant\nd<|im_end|>\n");
    expect_render(COPSE_CHAT_ZEPHYR, m, 4, false, "", "</s>",
                  "<|user|>\na</s>\n<|user|>\nb</s>\n<|system|>\nc</s>\n<|assistant|>\nd</s>\n");
}

/* ---------------------------------------------------------------- errors */

static void expect_error(copse_chat_family f, const copse_chat_msg *m, size_t n, copse_status want,
                         const char *err_has)
{
    char *out = (char *)"untouched", err[256] = "";
    copse_status st = copse__chat_render(f, m, n, true, "", "", &out, err, sizeof err);
    CHECK_STATUS(st, want);
    CHECK(out == NULL);
    if (!strstr(err, err_has)) {
        fprintf(stderr, "  error '%s' does not contain '%s'\n", err, err_has);
        CHECK(strstr(err, err_has) != NULL);
    }
}

static void test_errors(void)
{
    static const copse_chat_msg tool[] = {{"user", "x"}, {"tool", "y"}};
    static const copse_chat_msg noct[] = {{"user", NULL}};
    static const copse_chat_msg norole[] = {{NULL, "x"}};
    static const copse_chat_msg two_users[] = {{"user", "a"}, {"user", "b"}};
    static const copse_chat_msg starts_assistant[] = {{"assistant", "a"}, {"user", "b"}};
    static const copse_chat_msg late_system[] = {{"user", "a"}, {"system", "b"}};
    static const copse_chat_msg two_systems[] = {{"system", "a"}, {"system", "b"}, {"user", "c"}};

    for (int f = COPSE_CHAT_CHATML; f <= COPSE_CHAT_ZEPHYR; f++) {
        expect_error((copse_chat_family)f, CONV, 0, COPSE_EINVAL, "no messages");
        expect_error((copse_chat_family)f, NULL, 3, COPSE_EINVAL, "no messages");
        expect_error((copse_chat_family)f, tool, 2, COPSE_EINVAL, "message 1: role 'tool'");
        expect_error((copse_chat_family)f, noct, 1, COPSE_EINVAL, "message 0 has no content");
        expect_error((copse_chat_family)f, norole, 1, COPSE_EINVAL, "message 0 has no role");
    }
    expect_error(COPSE_CHAT_UNKNOWN, CONV, N_CONV, COPSE_EUNSUPPORTED, "unknown template family");
    expect_error((copse_chat_family)42, CONV, N_CONV, COPSE_EUNSUPPORTED, "unknown");

    const copse_chat_family strict[] = {COPSE_CHAT_LLAMA2, COPSE_CHAT_MISTRAL, COPSE_CHAT_GEMMA};
    for (size_t i = 0; i < 3; i++) {
        expect_error(strict[i], two_users, 2, COPSE_EINVAL, "message 1:");
        expect_error(strict[i], starts_assistant, 2, COPSE_EINVAL, "message 0:");
        expect_error(strict[i], late_system, 2, COPSE_EINVAL, "want 'assistant'");
        expect_error(strict[i], two_systems, 3, COPSE_EINVAL, "got 'system', want 'user'");
    }
    /* Misuse with no out pointer is reported, not a crash. */
    CHECK_STATUS(copse__chat_render(COPSE_CHAT_CHATML, CONV, N_CONV, true, "", "", NULL, NULL, 0),
                 COPSE_EINVAL);
}

/* ---------------------------------------------------------------- a model's format */

static copse_chat_format *make_format(const char *tmpl, const char *arch, char *note, size_t cap)
{
    copse_chat_format *fmt = NULL;
    CHECK_STATUS(copse__chat_format_create(tmpl, tmpl ? strlen(tmpl) : 0, arch, "<s>", "</s>",
                                           &fmt, note, cap),
                 COPSE_OK);
    return fmt;
}

static void test_format(void)
{
    char note[256];
    copse_chat_format *fmt;

    fmt = make_format(T_LLAMA3, "llama", note, sizeof note);
    CHECK_INT_EQ(fmt->family, COPSE_CHAT_LLAMA3);
    CHECK(!fmt->fallback);
    CHECK(fmt->has_template);
    CHECK_STR_EQ(note, "");
    CHECK(fmt->default_system == NULL);
    copse__chat_format_destroy(fmt);

    fmt = make_format(T_OTHER, "llama", note, sizeof note);
    CHECK_INT_EQ(fmt->family, COPSE_CHAT_CHATML);
    CHECK(fmt->fallback);
    CHECK_STR_EQ(note, "chat template not recognised; using chatml");
    copse__chat_format_destroy(fmt);

    /* An unrecognised template wins over the architecture's hint. */
    fmt = make_format(T_OTHER, "gemma3", note, sizeof note);
    CHECK_INT_EQ(fmt->family, COPSE_CHAT_CHATML);
    CHECK_STR_EQ(note, "chat template not recognised; using chatml");
    copse__chat_format_destroy(fmt);

    fmt = make_format(NULL, "llama", note, sizeof note);
    CHECK_INT_EQ(fmt->family, COPSE_CHAT_CHATML);
    CHECK(fmt->fallback);
    CHECK(!fmt->has_template);
    CHECK_STR_EQ(note, "model has no chat template; using chatml");
    copse__chat_format_destroy(fmt);

    fmt = make_format(NULL, "gemma3", note, sizeof note);
    CHECK_INT_EQ(fmt->family, COPSE_CHAT_GEMMA);
    CHECK(fmt->fallback);
    CHECK_STR_EQ(note, "model has no chat template; using gemma (from architecture 'gemma3')");
    copse__chat_format_destroy(fmt);

    fmt = make_format("", NULL, NULL, 0); /* note may be NULL */
    CHECK_INT_EQ(fmt->family, COPSE_CHAT_CHATML);
    copse__chat_format_destroy(fmt);
    copse__chat_format_destroy(NULL);

    /* Default system prompts of ChatML templates. */
    fmt = make_format(T_SMOLLM2, "llama", note, sizeof note);
    CHECK_STR_EQ(fmt->default_system,
                 "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
    copse__chat_format_destroy(fmt);
    fmt = make_format(T_QWEN, "qwen2", note, sizeof note);
    CHECK_STR_EQ(fmt->default_system,
                 "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.");
    copse__chat_format_destroy(fmt);
    fmt = make_format(T_CHATML, "qwen2", note, sizeof note);
    CHECK(fmt->default_system == NULL);
    copse__chat_format_destroy(fmt);

    /* Rendering through a format: default system only when none is given. */
    fmt = make_format(T_SMOLLM2, "llama", note, sizeof note);
    char *out = NULL, err[256] = "";
    static const copse_chat_msg hi[] = {{"user", "Hi"}};
    CHECK_STATUS(copse__chat_format_render(fmt, hi, 1, true, &out, err, sizeof err), COPSE_OK);
    CHECK_STR_EQ(out, "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
                      "Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                      "<|im_start|>assistant\n");
    free(out);
    CHECK_STATUS(copse__chat_format_render(fmt, CONV, 2, false, &out, err, sizeof err), COPSE_OK);
    CHECK_STR_EQ(out, "<|im_start|>system\nYou are terse.<|im_end|>\n"
                      "<|im_start|>user\nHi!<|im_end|>\n");
    free(out);
    CHECK_STATUS(copse__chat_format_render(fmt, hi, 0, true, &out, err, sizeof err), COPSE_EINVAL);
    copse__chat_format_destroy(fmt);

    /* The format's BOS/EOS texts are used. */
    fmt = make_format(T_LLAMA2, "llama", note, sizeof note);
    CHECK_STATUS(copse__chat_format_render(fmt, CONV + 1, 2, false, &out, err, sizeof err),
                 COPSE_OK);
    CHECK_STR_EQ(out, "<s>[INST] Hi! [/INST] Hello. </s>");
    free(out);
    copse__chat_format_destroy(fmt);
}

/* ---------------------------------------------------------------- the test models */

static void test_models(void)
{
    const char *dir = test_model_dir();
    if (!dir)
        return;
    static const struct {
        const char *file;
        copse_chat_family family;
        bool fallback;
        const char *bos, *eos, *default_system;
    } models[] = {
        {"SmolLM2-135M-Instruct.Q4_1.gguf", COPSE_CHAT_CHATML, false, "<|im_start|>", "<|im_end|>",
         "You are a helpful AI assistant named SmolLM, trained by Hugging Face"},
        /* This file carries no template: the family comes from the architecture. */
        {"gemma-3-270m-q4_k_m.gguf", COPSE_CHAT_GEMMA, true, "<bos>", "<eos>", NULL},
    };
    for (size_t i = 0; i < sizeof models / sizeof models[0]; i++) {
        char path[4200], err[512] = "", note[256] = "";
        snprintf(path, sizeof path, "%s/%s", dir, models[i].file);
        FILE *f = fopen(path, "rb");
        if (!f) {
            fprintf(stderr, "skipping %s: not found\n", path);
            continue;
        }
        fclose(f);
        copse_gguf *g = NULL;
        copse_status st = copse__gguf_open(path, &g, err, sizeof err);
        CHECK_STATUS(st, COPSE_OK);
        if (st != COPSE_OK) {
            fprintf(stderr, "  %s: %s\n", path, err);
            continue;
        }
        copse_str tmpl = {NULL, 0};
        if (copse__gguf_get_str(g, "tokenizer.chat_template", &tmpl) == COPSE_OK)
            CHECK_INT_EQ(copse__chat_detect(tmpl.ptr, (size_t)tmpl.len), models[i].family);
        copse_chat_format *fmt = NULL;
        CHECK_STATUS(copse__chat_format_from_gguf(g, &fmt, note, sizeof note), COPSE_OK);
        if (fmt) {
            fprintf(stderr, "%s: %s%s%s\n", models[i].file, copse__chat_family_name(fmt->family),
                    note[0] ? " — " : "", note);
            CHECK_INT_EQ(fmt->family, models[i].family);
            CHECK_INT_EQ(fmt->fallback, models[i].fallback);
            CHECK_STR_EQ(fmt->bos, models[i].bos);
            CHECK_STR_EQ(fmt->eos, models[i].eos);
            if (models[i].default_system)
                CHECK_STR_EQ(fmt->default_system, models[i].default_system);
            else
                CHECK(fmt->default_system == NULL);
            char *out = NULL;
            CHECK_STATUS(copse__chat_format_render(fmt, CONV, N_CONV, true, &out, err, sizeof err),
                         COPSE_OK);
            CHECK(out && strstr(out, "What is 2+2?") != NULL);
            free(out);
        }
        copse__chat_format_destroy(fmt);
        copse__gguf_close(g);
    }
}

int main(void)
{
    test_names();
    test_detect();
    test_render_families();
    test_render_variants();
    test_render_whitespace();
    test_render_free_order();
    test_errors();
    test_format();
    test_models();
    return test_exit();
}
