/*
 * test.h — the small assertion kit of the C tests.
 *
 * Assertions print both sides and the location, count the failure, and go on;
 * a test's main returns test_exit() (0 if all held, 1 otherwise, 77 to skip).
 */
#ifndef COPSE_TEST_H
#define COPSE_TEST_H

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TEST_SKIP 77

static int test_failures_;
static int test_checks_;

#define CHECK(cond)                                                                   \
    do {                                                                              \
        test_checks_++;                                                               \
        if (!(cond)) {                                                                \
            test_failures_++;                                                         \
            fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);  \
        }                                                                             \
    } while (0)

#define CHECK_INT_EQ(a, b)                                                            \
    do {                                                                              \
        long long a_ = (long long)(a), b_ = (long long)(b);                           \
        test_checks_++;                                                               \
        if (a_ != b_) {                                                               \
            test_failures_++;                                                         \
            fprintf(stderr, "%s:%d: %s == %s failed: %lld != %lld\n", __FILE__,       \
                    __LINE__, #a, #b, a_, b_);                                        \
        }                                                                             \
    } while (0)

#define CHECK_STR_EQ(a, b)                                                            \
    do {                                                                              \
        const char *a_ = (a), *b_ = (b);                                              \
        test_checks_++;                                                               \
        if (!a_ || !b_ || strcmp(a_, b_) != 0) {                                      \
            test_failures_++;                                                         \
            fprintf(stderr, "%s:%d: %s == %s failed: \"%s\" != \"%s\"\n", __FILE__,   \
                    __LINE__, #a, #b, a_ ? a_ : "(null)", b_ ? b_ : "(null)");        \
        }                                                                             \
    } while (0)

#define CHECK_STATUS(st, want)                                                        \
    do {                                                                              \
        int s_ = (int)(st), w_ = (int)(want);                                         \
        test_checks_++;                                                               \
        if (s_ != w_) {                                                               \
            test_failures_++;                                                         \
            fprintf(stderr, "%s:%d: %s: got %s, want %s\n", __FILE__, __LINE__, #st,  \
                    copse_err_name(s_), copse_err_name(w_));                          \
        }                                                                             \
    } while (0)

static inline int test_exit(void)
{
    fprintf(stderr, "%d checks, %d failed\n", test_checks_, test_failures_);
    return test_failures_ ? 1 : 0;
}

/* Seed for "fresh random inputs each run": $COPSE_TEST_SEED if set, else time
 * and pid; printed so a failure can be replayed. */
uint64_t test_seed(void);

/* splitmix64 */
static inline uint64_t test_rand(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

#include <time.h>
#include <unistd.h>

uint64_t test_seed(void)
{
    const char *e = getenv("COPSE_TEST_SEED");
    uint64_t s = e ? strtoull(e, NULL, 0) : ((uint64_t)time(NULL) << 20) ^ (uint64_t)getpid();
    fprintf(stderr, "COPSE_TEST_SEED=%" PRIu64 "\n", s);
    return s;
}

/* Directory holding the test models, or NULL if unset and the default is absent. */
static inline const char *test_model_dir(void)
{
    static char buf[4096];
    const char *e = getenv("COPSE_MODEL_DIR");
    if (e && *e)
        return e;
    const char *home = getenv("HOME");
    if (!home)
        return NULL;
    snprintf(buf, sizeof buf, "%s/.cache/copse", home);
    return buf;
}

#endif
