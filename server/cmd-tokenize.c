/* cmd-tokenize.c — `copse tokenize` / `copse detokenize` (placeholder). */
#include <stdio.h>

#include "commands.h"

int copse__cmd_tokenize(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "copse tokenize: not implemented yet\n");
    return 1;
}

int copse__cmd_detokenize(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "copse detokenize: not implemented yet\n");
    return 1;
}
