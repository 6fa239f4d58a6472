/* test-tokenizer.c — placeholder; the tokenizer work replaces it. */
#include "test.h"

int main(void)
{
    return TEST_SKIP;
}
