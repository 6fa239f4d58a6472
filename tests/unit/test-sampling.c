/* test-sampling.c — placeholder; the sampling work replaces it. */
#include "test.h"

int main(void)
{
    return TEST_SKIP;
}
