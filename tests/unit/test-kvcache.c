/* test-kvcache.c — placeholder; the kvcache work replaces it. */
#include "test.h"

int main(void)
{
    return TEST_SKIP;
}
