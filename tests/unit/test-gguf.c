/* test-gguf.c — placeholder; the gguf work replaces it. */
#include "test.h"

int main(void)
{
    return TEST_SKIP;
}
