/* Status codes: names and messages come from the one X-macro list. */
#include "copse.h"
#include "test.h"

int main(void)
{
    CHECK_STR_EQ(copse_err_name(COPSE_OK), "COPSE_OK");
    CHECK_STR_EQ(copse_err_name(COPSE_EFORMAT), "COPSE_EFORMAT");
    CHECK_STR_EQ(copse_strerror(COPSE_ENOMEM), "out of memory");
    CHECK_STR_EQ(copse_strerror(12345), "unknown status");
    CHECK_STR_EQ(copse_err_name(-12345), "COPSE_UNKNOWN");
    CHECK_INT_EQ(COPSE_OK, 0);
    /* every listed status is negative except OK, and names are distinct */
    int values[] = {
#define V_(name, value, msg) value,
        COPSE_STATUS_MAP(V_)
#undef V_
    };
    size_t n = sizeof values / sizeof values[0];
    for (size_t i = 0; i < n; i++) {
        CHECK(i == 0 ? values[i] == 0 : values[i] < 0);
        for (size_t j = i + 1; j < n; j++)
            CHECK(values[i] != values[j]);
        CHECK(strcmp(copse_strerror(values[i]), "unknown status") != 0);
    }
    CHECK(strlen(copse_version()) >= 5);
    return test_exit();
}
