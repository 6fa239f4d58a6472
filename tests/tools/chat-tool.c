/*
 * chat-tool.c — render a conversation with copse's chat templates, for the
 * Python checks (tests/model/test_chat_templates.py).
 *
 *   chat-tool [SOURCE] [OPTIONS] ROLE CONTENT [ROLE CONTENT ...]
 *
 * SOURCE picks the format (one of):
 *   --model FILE.gguf   the model's own template, BOS/EOS texts and fallback
 *   --family NAME       a family by name (chatml, llama2, llama3, mistral, gemma, zephyr)
 *   --template FILE     a template text read from FILE (detected as for a model)
 * OPTIONS:
 *   --arch NAME         architecture hint for --template (as general.architecture)
 *   --bos TEXT, --eos TEXT   BOS/EOS texts for --family / --template
 *   --no-generation-prompt   do not open an assistant turn at the end
 *   --detect            print only the family name (and the note, if any, on stderr)
 *
 * The rendering goes to stdout byte for byte (no newline added); the family
 * and any fallback note go to stderr. Exit 0 on success, 1 on a render error
 * (message on stderr), 2 on bad usage.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "gguf.h"

static int usage(void)
{
    fprintf(stderr, "usage: chat-tool (--model F | --family N | --template F) [--arch A] "
                    "[--bos T] [--eos T] [--no-generation-prompt] [--detect] ROLE CONTENT ...\n");
    return 2;
}

/* Whole file into a malloc'ed buffer; NULL on failure. */
static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t cap = 0, n = 0, got;
    do {
        if (n + 4096 > cap) {
            cap = cap ? cap * 2 : 8192;
            char *p = realloc(buf, cap);
            if (!p) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = p;
        }
        got = fread(buf + n, 1, cap - n, f);
        n += got;
    } while (got > 0);
    fclose(f);
    *len = n;
    return buf;
}

int main(int argc, char **argv)
{
    const char *model = NULL, *family = NULL, *tmpl_path = NULL, *arch = NULL;
    const char *bos = "", *eos = "";
    bool gen = true, detect = false;
    int i = 1;
    for (; i < argc && !strncmp(argv[i], "--", 2); i++) {
        const char *a = argv[i];
        bool has_val = i + 1 < argc;
        if (!strcmp(a, "--model") && has_val)
            model = argv[++i];
        else if (!strcmp(a, "--family") && has_val)
            family = argv[++i];
        else if (!strcmp(a, "--template") && has_val)
            tmpl_path = argv[++i];
        else if (!strcmp(a, "--arch") && has_val)
            arch = argv[++i];
        else if (!strcmp(a, "--bos") && has_val)
            bos = argv[++i];
        else if (!strcmp(a, "--eos") && has_val)
            eos = argv[++i];
        else if (!strcmp(a, "--no-generation-prompt"))
            gen = false;
        else if (!strcmp(a, "--detect"))
            detect = true;
        else
            return usage();
    }
    if ((model != NULL) + (family != NULL) + (tmpl_path != NULL) != 1 || (argc - i) % 2 != 0)
        return usage();

    /* The format. */
    copse_chat_format *fmt = NULL;
    copse_gguf *g = NULL;
    char note[512] = "", err[512] = "";
    copse_status st = COPSE_OK;
    if (model) {
        st = copse__gguf_open(model, &g, err, sizeof err);
        if (st == COPSE_OK)
            st = copse__chat_format_from_gguf(g, &fmt, note, sizeof note);
    } else if (tmpl_path) {
        size_t len = 0;
        char *text = read_file(tmpl_path, &len);
        if (!text) {
            fprintf(stderr, "chat-tool: cannot read %s\n", tmpl_path);
            return 1;
        }
        st = copse__chat_format_create(text, len, arch, bos, eos, &fmt, note, sizeof note);
        free(text);
    } else {
        copse_chat_family f = copse__chat_family_from_name(family);
        if (f == COPSE_CHAT_UNKNOWN) {
            fprintf(stderr, "chat-tool: unknown family '%s'\n", family);
            return 2;
        }
        /* A format without a template, then the family forced. */
        st = copse__chat_format_create(NULL, 0, NULL, bos, eos, &fmt, NULL, 0);
        if (st == COPSE_OK) {
            fmt->family = f;
            fmt->fallback = false;
        }
    }
    if (st != COPSE_OK) {
        fprintf(stderr, "chat-tool: %s\n", err[0] ? err : note);
        copse__gguf_close(g);
        return 1;
    }
    fprintf(stderr, "family: %s\n", copse__chat_family_name(fmt->family));
    if (note[0])
        fprintf(stderr, "note: %s\n", note);

    int rc = 0;
    if (detect) {
        printf("%s\n", copse__chat_family_name(fmt->family));
    } else {
        size_t n = (size_t)(argc - i) / 2;
        copse_chat_msg *msgs = calloc(n ? n : 1, sizeof *msgs);
        if (!msgs) {
            rc = 1;
        } else {
            for (size_t k = 0; k < n; k++) {
                msgs[k].role = argv[i + 2 * (int)k];
                msgs[k].content = argv[i + 2 * (int)k + 1];
            }
            char *out = NULL;
            st = copse__chat_format_render(fmt, msgs, n, gen, &out, err, sizeof err);
            if (st == COPSE_OK) {
                fwrite(out, 1, strlen(out), stdout);
            } else {
                fprintf(stderr, "chat-tool: %s: %s\n", copse_err_name(st), err);
                rc = 1;
            }
            free(out);
            free(msgs);
        }
    }
    copse__chat_format_destroy(fmt);
    copse__gguf_close(g);
    return rc;
}
