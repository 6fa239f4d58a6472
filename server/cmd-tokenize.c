/*
 * cmd-tokenize.c — `copse tokenize` and `copse detokenize`.
 *
 *   copse tokenize -m MODEL.gguf [--no-bos] [--no-special] [--pieces] (TEXT | --file F)
 *   copse detokenize -m MODEL.gguf [--no-special] IDS...
 *
 * Exit status: 0 on success, 1 when the model cannot be loaded or the input
 * is bad (an id out of range), 2 for a usage error.
 */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "copse.h"
#include "model.h"

/* ---------------------------------------------------------------- help */

static void tokenize_help(FILE *f)
{
    fprintf(f,
            "usage: copse tokenize -m MODEL.gguf [OPTIONS] (TEXT | --file F)\n"
            "\n"
            "Print the token ids of TEXT (or of file F; '-' reads standard input),\n"
            "space-separated on one line.\n"
            "\n"
            "By default the text is encoded as a prompt would be: BOS (and EOS) are\n"
            "added as the model's tokenizer.ggml.add_bos_token / add_eos_token say,\n"
            "and special-token text such as <|im_start|> or <start_of_turn> becomes\n"
            "its special token.\n"
            "\n"
            "options:\n"
            "  -m, --model FILE  the GGUF model whose tokenizer to use (required)\n"
            "  --no-bos          do not add BOS/EOS\n"
            "  --no-special      treat special-token text as plain text\n"
            "  --pieces          print one token per line as: id 'text' (escaped)\n"
            "  --file F          read the text from file F instead of the command line\n"
            "  -h, --help        show this help\n");
}

static void detokenize_help(FILE *f)
{
    fprintf(f,
            "usage: copse detokenize -m MODEL.gguf [--no-special] IDS...\n"
            "\n"
            "Print the text of token ids, followed by a newline. Ids are separate\n"
            "arguments and/or comma-separated (\"1 2 3\", \"1,2,3\").\n"
            "\n"
            "options:\n"
            "  -m, --model FILE  the GGUF model whose tokenizer to use (required)\n"
            "  --no-special      leave out control tokens (BOS, <|im_end|>, ...);\n"
            "                    by default their text is printed\n"
            "  -h, --help        show this help\n");
}

/* ---------------------------------------------------------------- helpers */

static copse_model *load_model(const char *cmd, const char *path)
{
    copse_model_params p = copse_model_default_params();
    copse_model *m = NULL;
    char err[512] = "";
    copse_status st = copse_model_create(path, &p, &m, err, sizeof err);
    if (st != COPSE_OK) {
        fprintf(stderr, "copse %s: cannot load %s: %s\n", cmd, path, err[0] ? err : copse_strerror(st));
        return NULL;
    }
    if (!copse__model_tokenizer(m)) {
        fprintf(stderr, "copse %s: %s has no tokenizer\n", cmd, path);
        copse_model_destroy(m);
        return NULL;
    }
    return m;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap)
            break;
        char *nb = cap < SIZE_MAX / 2 ? realloc(buf, cap * 2) : NULL;
        if (!nb) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    bool bad = ferror(f) != 0;
    if (f != stdin)
        fclose(f);
    if (bad) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

/* Print bytes between single quotes: printable text as is (well-formed UTF-8
 * included), \n \t \r \\ \' escaped, any other byte as \xNN. */
static void print_escaped(const unsigned char *s, size_t n)
{
    putchar('\'');
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        size_t k = 0;
        if (c >= 0xC2 && c <= 0xF4) { /* a whole well-formed multi-byte character? */
            size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
            if (i + need <= n) {
                k = need;
                for (size_t j = 1; j < need; j++)
                    if ((s[i + j] & 0xC0) != 0x80)
                        k = 0;
            }
        }
        if (k) {
            fwrite(s + i, 1, k, stdout);
            i += k;
            continue;
        }
        switch (c) {
        case '\n': fputs("\\n", stdout); break;
        case '\t': fputs("\\t", stdout); break;
        case '\r': fputs("\\r", stdout); break;
        case '\\': fputs("\\\\", stdout); break;
        case '\'': fputs("\\'", stdout); break;
        default:
            if (c >= 0x20 && c < 0x7f)
                putchar(c);
            else
                printf("\\x%02x", c);
        }
        i++;
    }
    putchar('\'');
}

/* ---------------------------------------------------------------- tokenize */

int copse__cmd_tokenize(int argc, char **argv)
{
    const char *model_path = NULL, *file = NULL, *text = NULL;
    bool add_special = true, parse_special = true, pieces = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            tokenize_help(stdout);
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            if (++i >= argc)
                goto missing_value;
            model_path = argv[i];
        } else if (!strcmp(a, "--file")) {
            if (++i >= argc)
                goto missing_value;
            file = argv[i];
        } else if (!strcmp(a, "--no-bos")) {
            add_special = false;
        } else if (!strcmp(a, "--no-special")) {
            parse_special = false;
        } else if (!strcmp(a, "--pieces")) {
            pieces = true;
        } else if (!strcmp(a, "--")) {
            if (i + 1 < argc && !text && i + 2 == argc) {
                text = argv[i + 1];
                break;
            }
            fprintf(stderr, "copse tokenize: expected one TEXT after --\n");
            return 2;
        } else if (a[0] == '-' && a[1] != '\0') {
            fprintf(stderr, "copse tokenize: unknown option '%s' (see --help)\n", a);
            return 2;
        } else if (!text) {
            text = a;
        } else {
            fprintf(stderr, "copse tokenize: give the text as one argument (quote it)\n");
            return 2;
        }
        continue;
    missing_value:
        fprintf(stderr, "copse tokenize: %s needs a value\n", a);
        return 2;
    }
    if (!model_path) {
        fprintf(stderr, "copse tokenize: no model given (-m MODEL.gguf)\n");
        return 2;
    }
    if ((text != NULL) == (file != NULL)) {
        fprintf(stderr, "copse tokenize: give either TEXT or --file F\n");
        return 2;
    }

    size_t len = 0;
    char *owned = NULL;
    if (file) {
        if (!(owned = read_file(file, &len))) {
            fprintf(stderr, "copse tokenize: cannot read %s: %s\n", file, strerror(errno));
            return 1;
        }
        text = owned;
    } else {
        len = strlen(text);
    }
    copse_model *m = load_model("tokenize", model_path);
    if (!m) {
        free(owned);
        return 1;
    }

    int flags = (add_special ? COPSE_TOKENIZE_ADD_SPECIAL : 0) |
                (parse_special ? COPSE_TOKENIZE_PARSE_SPECIAL : 0);
    int rc = 1;
    size_t n = 0;
    copse_token *ids = NULL;
    copse_status st = copse_tokenize(m, text, len, flags, NULL, 0, &n);
    if (st == COPSE_ENOSPACE || (st == COPSE_OK && n == 0)) {
        ids = malloc((n ? n : 1) * sizeof *ids);
        st = ids ? copse_tokenize(m, text, len, flags, ids, n, &n) : COPSE_ENOMEM;
    }
    if (st != COPSE_OK) {
        fprintf(stderr, "copse tokenize: %s\n", copse_strerror(st));
        goto done;
    }
    const copse_tokenizer *tok = copse__model_tokenizer(m);
    for (size_t i = 0; i < n; i++) {
        if (pieces) {
            unsigned char buf[256];
            size_t k = copse__tokenizer_token_bytes(tok, ids[i], true, (char *)buf, sizeof buf);
            printf("%d ", (int)ids[i]);
            print_escaped(buf, k < sizeof buf ? k : sizeof buf);
            if (k > sizeof buf)
                fputs("...", stdout);
            putchar('\n');
        } else {
            printf(i ? " %d" : "%d", (int)ids[i]);
        }
    }
    if (!pieces)
        putchar('\n');
    rc = 0;
done:
    free(ids);
    free(owned);
    copse_model_destroy(m);
    return rc;
}

/* ---------------------------------------------------------------- detokenize */

/* Parse "12" / "3,4,5" into ids (appending); false with a message on error. */
static bool parse_ids(const char *arg, int32_t n_vocab, copse_token **ids, size_t *n, size_t *cap)
{
    const char *p = arg;
    while (*p) {
        if (*p == ',' || *p == ' ') {
            p++;
            continue;
        }
        char *end;
        errno = 0;
        long long v = strtoll(p, &end, 10);
        if (end == p || (*end && *end != ',' && *end != ' ')) {
            fprintf(stderr, "copse detokenize: '%s' is not a token id\n", arg);
            return false;
        }
        if (errno == ERANGE || v < 0 || v >= n_vocab) {
            fprintf(stderr, "copse detokenize: token id %.*s out of range (the vocabulary has %d tokens)\n",
                    (int)(end - p), p, (int)n_vocab);
            return false;
        }
        if (*n == *cap) {
            size_t nc = *cap ? *cap * 2 : 64;
            copse_token *nb = realloc(*ids, nc * sizeof *nb);
            if (!nb) {
                fprintf(stderr, "copse detokenize: out of memory\n");
                return false;
            }
            *ids = nb;
            *cap = nc;
        }
        (*ids)[(*n)++] = (copse_token)v;
        p = end;
    }
    return true;
}

int copse__cmd_detokenize(int argc, char **argv)
{
    const char *model_path = NULL;
    bool render_special = true;
    int first_id = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            detokenize_help(stdout);
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            if (++i >= argc) {
                fprintf(stderr, "copse detokenize: %s needs a value\n", a);
                return 2;
            }
            model_path = argv[i];
        } else if (!strcmp(a, "--no-special")) {
            render_special = false;
        } else if (a[0] == '-' && !(a[1] >= '0' && a[1] <= '9')) {
            fprintf(stderr, "copse detokenize: unknown option '%s' (see --help)\n", a);
            return 2;
        } else {
            if (!first_id)
                first_id = i;
        }
    }
    if (!model_path) {
        fprintf(stderr, "copse detokenize: no model given (-m MODEL.gguf)\n");
        return 2;
    }
    if (!first_id) {
        fprintf(stderr, "copse detokenize: no token ids given\n");
        return 2;
    }
    copse_model *m = load_model("detokenize", model_path);
    if (!m)
        return 1;

    int rc = 1;
    copse_token *ids = NULL;
    char *out = NULL;
    size_t n = 0, cap = 0;
    int32_t n_vocab = copse_model_n_vocab(m);
    for (int i = first_id; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            i++;
            continue;
        }
        if (!strcmp(a, "--no-special"))
            continue;
        if (!parse_ids(a, n_vocab, &ids, &n, &cap))
            goto done;
    }
    size_t need = 0;
    copse_status st = copse_detokenize(m, ids, n, render_special, NULL, 0, &need);
    if (st == COPSE_ENOSPACE) {
        out = malloc(need);
        st = out ? copse_detokenize(m, ids, n, render_special, out, need, &need) : COPSE_ENOMEM;
    }
    if (st != COPSE_OK) {
        fprintf(stderr, "copse detokenize: %s\n", copse_strerror(st));
        goto done;
    }
    if (need)
        fwrite(out, 1, need, stdout);
    putchar('\n');
    rc = 0;
done:
    free(ids);
    free(out);
    copse_model_destroy(m);
    return rc;
}
