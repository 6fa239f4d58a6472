/* test-chat.c — placeholder; the chat work replaces it. */
#include "test.h"

int main(void)
{
    return TEST_SKIP;
}
