/*
 * main.c — the copse command line: dispatch to a subcommand.
 */
#include <stdio.h>
#include <string.h>

#include "copse.h"
#include "commands.h"

static const struct {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *help;
} commands[] = {
    {"run", copse__cmd_run, "generate text from a prompt or a chat, streamed to standard output"},
    {"bench", copse__cmd_bench, "measure speed: prefill, decode, verification ('bench decode'); speculation ('bench spec')"},
    {"random-model", copse__cmd_random_model, "write a model of a known shape with random weights (benchmarks)"},
    {"slice", copse__cmd_slice, "write a copy of a model with only its first N layers (a draft model)"},
    {"info", copse__cmd_info, "show a model's metadata, tensors, vocabulary, chat template; or devices"},
    {"tokenize", copse__cmd_tokenize, "print the token ids of a text"},
    {"detokenize", copse__cmd_detokenize, "print the text of token ids"},
    {"serve", copse__cmd_serve, "serve the OpenAI-compatible API on a Unix socket"},
};

static void usage(FILE *f)
{
    fprintf(f, "copse %s — LLM inference with speculative decoding\n\nusage: copse COMMAND [ARGS]\n\ncommands:\n",
            copse_version());
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "\nRun 'copse COMMAND --help' for a command's options.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "version")) {
        printf("copse %s\n", copse_version());
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(cmd, commands[i].name))
            return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "copse: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return 2;
}
