/* cmd-info.c — `copse info` (placeholder until the CLI work lands). */
#include <stdio.h>

#include "commands.h"

int copse__cmd_info(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "copse info: not implemented yet\n");
    return 1;
}
