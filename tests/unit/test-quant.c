/* test-quant.c — placeholder; the quant work replaces it. */
#include "test.h"

int main(void)
{
    return TEST_SKIP;
}
