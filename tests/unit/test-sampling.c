/*
 * test-sampling.c — keyed randomness, logit processing, drawing, logprobs.
 *
 * Inputs are fresh each run (test_seed(); replay with COPSE_TEST_SEED).
 * The oracle for the processed distribution is a plain reference written
 * here: penalties by direct counting, a full sort of the vocabulary, prefix
 * sums in double. Statistical checks use thresholds at a false-alarm rate of
 * about 1e-6 per check, so a correct implementation essentially never fails.
 */
#include <time.h>

#include "copse.h"
#include "sampling.h"
#include "test.h"

static uint64_t rs; /* the test's own input generator state (splitmix64) */

static double urand(void)
{
    return (double)(test_rand(&rs) >> 11) * 0x1.0p-53;
}

static int32_t irand(int32_t n)
{
    return (int32_t)(test_rand(&rs) % (uint64_t)n);
}

static double gauss(void)
{
    double u1 = urand(), u2 = urand();
    if (u1 < 1e-300)
        u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

static void random_logits(float *l, int32_t n, double scale)
{
    for (int32_t i = 0; i < n; i++)
        l[i] = (float)(gauss() * scale);
}

/* Upper quantile of chi-square with df degrees of freedom at the standard
 * normal deviate z (Wilson–Hilferty); z = 4.75 is a tail of about 1e-6. */
static double chi2_threshold(int df, double z)
{
    double a = 2.0 / (9.0 * df);
    double c = 1.0 - a + z * sqrt(a);
    return df * c * c * c;
}

#define Z_1E6 4.75

/* ---------------------------------------------------------------- reference */

static const float *ref_l; /* comparator context for qsort */

static int ref_rank_cmp(const void *x, const void *y)
{
    copse_token a = *(const copse_token *)x, b = *(const copse_token *)y;
    if (ref_l[a] != ref_l[b])
        return ref_l[a] > ref_l[b] ? -1 : 1;
    return (a > b) - (a < b);
}

/* Reference penalties: direct counting over the window. */
static void ref_penalties(const copse_sampling_params *p, float *l, int32_t n,
                          const copse_token *hist, size_t nh)
{
    if (p->penalty_last_n == 0)
        return;
    size_t start = 0;
    if (p->penalty_last_n > 0 && (size_t)p->penalty_last_n < nh)
        start = nh - (size_t)p->penalty_last_n;
    for (int32_t t = 0; t < n; t++) {
        uint32_t c = 0;
        for (size_t i = start; i < nh; i++)
            c += hist[i] == t;
        if (c == 0)
            continue;
        float x = l[t];
        if (p->repetition_penalty != 1.0f)
            x = x > 0.0f ? x / p->repetition_penalty : x * p->repetition_penalty;
        l[t] = x - ((float)c * p->frequency_penalty + p->presence_penalty);
    }
}

/* Reference processed distribution into dense[n] (double). Returns the
 * number of tokens with p > 0. Weights use the same float expf as the
 * library so that min-p and underflow decisions coincide exactly; what is
 * independent is the selection: a full sort and prefix sums. */
static int32_t ref_probs(const copse_sampling_params *p, const float *logits, int32_t n,
                         const copse_token *hist, size_t nh, double *dense)
{
    float *l = malloc((size_t)n * sizeof *l);
    copse_token *ord = malloc((size_t)n * sizeof *ord);
    double *w = malloc((size_t)n * sizeof *w);
    memcpy(l, logits, (size_t)n * sizeof *l);
    ref_penalties(p, l, n, hist, nh);
    int32_t m = 0;
    for (int32_t i = 0; i < n; i++) {
        dense[i] = 0.0;
        if (l[i] != -INFINITY)
            ord[m++] = i;
    }
    ref_l = l;
    qsort(ord, (size_t)m, sizeof *ord, ref_rank_cmp);
    int32_t kept;
    if (p->temperature == 0.0f) {
        dense[ord[0]] = 1.0;
        kept = 1;
    } else {
        float max = l[ord[0]];
        int32_t k = (p->top_k > 0 && p->top_k < m) ? p->top_k : m;
        double tot = 0.0;
        for (int32_t j = 0; j < k; j++) {
            w[j] = expf((l[ord[j]] - max) / p->temperature);
            tot += w[j];
        }
        if (p->top_p < 1.0f) {
            double cum = 0.0, target = (double)p->top_p * tot;
            int32_t j = 0;
            while (j < k) {
                cum += w[j++];
                if (cum >= target)
                    break;
            }
            k = j;
        }
        tot = 0.0;
        kept = 0;
        for (int32_t j = 0; j < k; j++) {
            if (w[j] > 0.0 && w[j] >= p->min_p) {
                tot += w[j];
                kept++;
            } else {
                w[j] = 0.0;
            }
        }
        for (int32_t j = 0; j < k; j++) {
            dense[ord[j]] = w[j] / tot;
            if (w[j] > 0.0 && !((float)dense[ord[j]] > 0.0f)) {
                dense[ord[j]] = 0.0; /* below the float range: not listed */
                kept--;
            }
        }
    }
    free(l);
    free(ord);
    free(w);
    return kept;
}

/* The library's dist must list ascending ids with p > 0, sum to 1 within
 * 1e-6, and match the reference within tol per token. */
static void check_dist_matches(const copse_sampling_dist *d, const double *ref, int32_t n,
                               int32_t ref_kept, double tol, const char *what)
{
    int bad = 0;
    double sum = 0.0;
    CHECK_INT_EQ(d->n, ref_kept);
    for (int32_t j = 0; j < d->n; j++) {
        if (j > 0 && d->ids[j] <= d->ids[j - 1])
            bad++;
        if (!(d->p[j] > 0.0f))
            bad++;
        sum += d->p[j];
        if (d->ids[j] < 0 || d->ids[j] >= n || fabs(d->p[j] - ref[d->ids[j]]) > tol) {
            if (bad++ < 3 && d->ids[j] >= 0 && d->ids[j] < n)
                fprintf(stderr, "%s: token %d p %.9g vs reference %.9g\n", what, (int)d->ids[j],
                        (double)d->p[j], ref[d->ids[j]]);
        }
    }
    CHECK_INT_EQ(bad, 0);
    CHECK(fabs(sum - 1.0) <= 1e-6);
    if (fabs(sum - 1.0) > 1e-6)
        fprintf(stderr, "%s: sum of p = %.12f\n", what, sum);
}

/* ---------------------------------------------------------------- keyed randomness */

static void test_philox_known_answers(void)
{
    /* Random123 kat_vectors, "philox4x32 10". */
    static const uint32_t kat[3][10] = {
        {0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
        {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0x408f276d,
         0x41c83b0e, 0xa20bc7c6, 0x6d5451fd},
        {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0, 0xd16cfe09,
         0x94fdcceb, 0x5001e420, 0x24126ea1},
    };
    for (int v = 0; v < 3; v++) {
        uint32_t out[4];
        copse__philox4x32_10(&kat[v][0], &kat[v][4], out);
        for (int i = 0; i < 4; i++)
            CHECK_INT_EQ(out[i], kat[v][6 + i]);
    }
    /* the uniform is the top 53 bits of words 0 and 1 */
    double u = copse__rng_uniform(0, 0, 0, 0, 0);
    CHECK(u == (double)(((uint64_t)0x6627e8d5 << 32 | 0xe169c58d) >> 11) * 0x1.0p-53);
}

static void test_rng_pure(void)
{
    for (int trial = 0; trial < 1000; trial++) {
        uint64_t seed = test_rand(&rs);
        uint32_t k[4] = {(uint32_t)test_rand(&rs), (uint32_t)test_rand(&rs),
                         (uint32_t)test_rand(&rs), (uint32_t)test_rand(&rs)};
        double a = copse__rng_uniform(seed, k[0], k[1], k[2], k[3]);
        /* other calls in between change nothing: there is no hidden state */
        for (int i = 0; i < 5; i++)
            (void)copse__rng_uniform(test_rand(&rs), 1, 2, 3, 4);
        double b = copse__rng_uniform(seed, k[0], k[1], k[2], k[3]);
        CHECK(a == b);
        CHECK(a >= 0.0 && a < 1.0);
        /* changing any one key component (by one, or by a random flip)
         * changes the value; a 53-bit collision has probability ~1e-16 */
        int same = 0;
        same += copse__rng_uniform(seed ^ 1, k[0], k[1], k[2], k[3]) == a;
        same += copse__rng_uniform(seed ^ (1ull << 63), k[0], k[1], k[2], k[3]) == a;
        same += copse__rng_uniform(seed, k[0] + 1, k[1], k[2], k[3]) == a;
        same += copse__rng_uniform(seed, k[0], k[1] + 1, k[2], k[3]) == a;
        same += copse__rng_uniform(seed, k[0], k[1], k[2] + 1, k[3]) == a;
        same += copse__rng_uniform(seed, k[0], k[1], k[2], k[3] + 1) == a;
        CHECK_INT_EQ(same, 0);
    }
}

/* Chi-square on 10 equal bins of n uniforms from key(i). */
typedef double (*keyed_fn)(uint64_t base, uint32_t i);

static double key_step(uint64_t b, uint32_t i) { return copse__rng_uniform(b, 7, i, 0, 0); }
static double key_node(uint64_t b, uint32_t i) { return copse__rng_uniform(b, 7, 100, i, 0); }
static double key_draw(uint64_t b, uint32_t i) { return copse__rng_uniform(b, 7, 100, 3, i); }
static double key_seq(uint64_t b, uint32_t i) { return copse__rng_uniform(b, i, 100, 3, 0); }
static double key_seed(uint64_t b, uint32_t i) { return copse__rng_uniform(b + i, 7, 100, 3, 0); }

static const struct {
    const char *name;
    keyed_fn f;
} key_walks[] = {
    {"step", key_step}, {"node", key_node}, {"draw", key_draw},
    {"sequence", key_seq}, {"seed", key_seed},
};

static void test_rng_uniformity(void)
{
    const uint32_t n = 100000;
    /* df = 9; threshold at p ~ 1e-6 is about 46 */
    const double limit = chi2_threshold(9, Z_1E6);
    for (size_t w = 0; w < sizeof key_walks / sizeof key_walks[0]; w++) {
        uint64_t base = test_rand(&rs);
        uint32_t bins[10] = {0};
        for (uint32_t i = 0; i < n; i++) {
            double u = key_walks[w].f(base, i);
            bins[(int)(u * 10.0)]++;
        }
        double chi2 = 0.0, e = n / 10.0;
        for (int b = 0; b < 10; b++)
            chi2 += (bins[b] - e) * (bins[b] - e) / e;
        if (!(chi2 < limit))
            fprintf(stderr, "uniformity over %s: chi2 %.2f >= %.2f\n", key_walks[w].name, chi2,
                    limit);
        CHECK(chi2 < limit);
    }
}

static void test_rng_independence(void)
{
    const uint32_t n = 100000;
    /* |r| of independent uniforms is ~N(0, 1/n): 5 sigma */
    const double r_limit = 5.0 / sqrt((double)n);
    /* pairs (u_i, u_{i+1}) on a 10x10 grid: df = 99 */
    const double chi2_limit = chi2_threshold(99, Z_1E6);
    for (size_t w = 0; w < sizeof key_walks / sizeof key_walks[0]; w++) {
        uint64_t base = test_rand(&rs);
        double sx = 0, sy = 0, sxx = 0, syy = 0, sxy = 0;
        static uint32_t grid[10][10];
        memset(grid, 0, sizeof grid);
        double prev = key_walks[w].f(base, 0);
        for (uint32_t i = 1; i <= n; i++) {
            double cur = key_walks[w].f(base, i);
            sx += prev;
            sy += cur;
            sxx += prev * prev;
            syy += cur * cur;
            sxy += prev * cur;
            grid[(int)(prev * 10)][(int)(cur * 10)]++;
            prev = cur;
        }
        double r = (n * sxy - sx * sy) / sqrt((n * sxx - sx * sx) * (n * syy - sy * sy));
        double chi2 = 0.0, e = n / 100.0;
        for (int a = 0; a < 10; a++)
            for (int b = 0; b < 10; b++)
                chi2 += (grid[a][b] - e) * (grid[a][b] - e) / e;
        if (!(fabs(r) < r_limit) || !(chi2 < chi2_limit))
            fprintf(stderr, "adjacent %s: r = %.5f (limit %.5f), pair chi2 %.1f (limit %.1f)\n",
                    key_walks[w].name, r, r_limit, chi2, chi2_limit);
        CHECK(fabs(r) < r_limit);
        CHECK(chi2 < chi2_limit);
    }
}

/* ---------------------------------------------------------------- params */

static void test_params(void)
{
    char err[256];
    copse_sampling_params d = copse__sampling_default_params();
    CHECK(d.temperature == 1.0f);
    CHECK_INT_EQ(d.top_k, 0);
    CHECK(d.top_p == 1.0f);
    CHECK(d.min_p == 0.0f);
    CHECK(d.repetition_penalty == 1.0f);
    CHECK(d.frequency_penalty == 0.0f);
    CHECK(d.presence_penalty == 0.0f);
    CHECK_INT_EQ(d.penalty_last_n, 64);
    CHECK_STATUS(copse__sampling_validate(&d, err, sizeof err), COPSE_OK);

#define BAD(field, value, needle)                                                          \
    do {                                                                                   \
        copse_sampling_params p_ = d;                                                      \
        p_.field = (value);                                                                \
        err[0] = 0;                                                                        \
        CHECK_STATUS(copse__sampling_validate(&p_, err, sizeof err), COPSE_EINVAL);        \
        CHECK(strstr(err, needle) != NULL);                                                \
    } while (0)
    BAD(temperature, -0.5f, "temperature");
    BAD(temperature, NAN, "temperature");
    BAD(temperature, INFINITY, "temperature");
    BAD(top_k, -1, "top_k");
    BAD(top_p, 0.0f, "top_p");
    BAD(top_p, -0.1f, "top_p");
    BAD(top_p, 1.5f, "top_p");
    BAD(top_p, NAN, "top_p");
    BAD(min_p, -0.01f, "min_p");
    BAD(min_p, 1.01f, "min_p");
    BAD(min_p, NAN, "min_p");
    BAD(repetition_penalty, 0.0f, "repetition_penalty");
    BAD(repetition_penalty, -1.0f, "repetition_penalty");
    BAD(repetition_penalty, INFINITY, "repetition_penalty");
    BAD(frequency_penalty, NAN, "frequency_penalty");
    BAD(presence_penalty, -INFINITY, "presence_penalty");
    BAD(penalty_last_n, -2, "penalty_last_n");
#undef BAD
    CHECK_STATUS(copse__sampling_validate(NULL, err, sizeof err), COPSE_EINVAL);

    /* edges that are valid */
    copse_sampling_params p = d;
    p.temperature = 0.0f;
    p.top_p = 1e-9f;
    p.min_p = 1.0f;
    p.penalty_last_n = -1;
    p.frequency_penalty = -2.0f;
    CHECK_STATUS(copse__sampling_validate(&p, err, sizeof err), COPSE_OK);

    /* processing refuses invalid params too, with the message kept */
    copse_sampler *s;
    CHECK_STATUS(copse__sampler_create(4, &s, err, sizeof err), COPSE_OK);
    float l[4] = {0, 1, 2, 3};
    copse_sampling_dist dist;
    p = d;
    p.top_p = 2.0f;
    CHECK_STATUS(copse__sampling_probs(s, &p, l, NULL, 0, &dist), COPSE_EINVAL);
    CHECK(strstr(copse__sampler_error(s), "top_p") != NULL);
    CHECK_INT_EQ(dist.n, 0);
    copse__sampler_destroy(s);

    CHECK_STATUS(copse__sampler_create(0, &s, err, sizeof err), COPSE_EINVAL);
    CHECK(s == NULL);
    CHECK_STATUS(copse__sampler_create(-5, &s, NULL, 0), COPSE_EINVAL);
    copse__sampler_destroy(NULL);
}

/* ---------------------------------------------------------------- penalties */

static void test_penalties_by_hand(void)
{
    copse_sampler *s;
    CHECK_STATUS(copse__sampler_create(7, &s, NULL, 0), COPSE_OK);
    const float base[7] = {2.0f, -1.0f, 0.5f, 3.0f, -2.0f, 0.0f, -INFINITY};
    const copse_token hist[8] = {6, 0, 1, 1, 4, 2, 0, 1};
    copse_sampling_params p = copse__sampling_default_params();
    p.repetition_penalty = 2.0f;
    p.frequency_penalty = 0.5f;
    p.presence_penalty = 0.25f;
    float l[7];

    /* window = last 5 = {4, 2, 0, 1} + ... : {1, 4, 2, 0, 1}; counts 0:1 1:2 2:1 4:1 */
    p.penalty_last_n = 5;
    memcpy(l, base, sizeof l);
    CHECK_STATUS(copse__sampling_apply_penalties(s, &p, l, hist, 8), COPSE_OK);
    const float want5[7] = {2.0f / 2 - (1 * 0.5f + 0.25f),  /*  0.25 */
                            -1.0f * 2 - (2 * 0.5f + 0.25f), /* -3.25 */
                            0.5f / 2 - (1 * 0.5f + 0.25f),  /* -0.5  */
                            3.0f,                           /* unseen */
                            -2.0f * 2 - (1 * 0.5f + 0.25f), /* -4.75 */
                            0.0f,                           /* unseen */
                            -INFINITY};                     /* outside the window */
    const float lit5[7] = {0.25f, -3.25f, -0.5f, 3.0f, -4.75f, 0.0f, -INFINITY};
    for (int i = 0; i < 7; i++) {
        CHECK(l[i] == want5[i]);
        CHECK(l[i] == lit5[i]);
    }

    /* whole history: counts 0:2 1:3 2:1 4:1 6:1; -inf stays -inf */
    p.penalty_last_n = -1;
    memcpy(l, base, sizeof l);
    CHECK_STATUS(copse__sampling_apply_penalties(s, &p, l, hist, 8), COPSE_OK);
    const float lit_all[7] = {-0.25f, -3.75f, -0.5f, 3.0f, -4.75f, 0.0f, -INFINITY};
    for (int i = 0; i < 7; i++)
        CHECK(l[i] == lit_all[i]);

    /* repetition only: 2/1.5, -1*1.5; a zero logit stays 0 */
    copse_sampling_params r = copse__sampling_default_params();
    r.repetition_penalty = 1.5f;
    memcpy(l, base, sizeof l);
    const copse_token h2[3] = {0, 1, 5};
    CHECK_STATUS(copse__sampling_apply_penalties(s, &r, l, h2, 3), COPSE_OK);
    CHECK(l[0] == 2.0f / 1.5f);
    CHECK(l[1] == -1.5f);
    CHECK(l[5] == 0.0f);
    CHECK(l[2] == 0.5f && l[3] == 3.0f && l[4] == -2.0f);

    /* off: window 0, or all penalties neutral */
    p.penalty_last_n = 0;
    memcpy(l, base, sizeof l);
    CHECK_STATUS(copse__sampling_apply_penalties(s, &p, l, hist, 8), COPSE_OK);
    CHECK(memcmp(l, base, sizeof l) == 0);
    copse_sampling_params off = copse__sampling_default_params();
    CHECK_STATUS(copse__sampling_apply_penalties(s, &off, l, hist, 8), COPSE_OK);
    CHECK(memcmp(l, base, sizeof l) == 0);

    /* a bad id in the window: refused, logits untouched */
    p.penalty_last_n = -1;
    const copse_token bad[3] = {0, 7, 1};
    CHECK_STATUS(copse__sampling_apply_penalties(s, &p, l, bad, 3), COPSE_EINVAL);
    CHECK(strstr(copse__sampler_error(s), "history[1]") != NULL);
    const copse_token neg[2] = {-1, 1};
    CHECK_STATUS(copse__sampling_apply_penalties(s, &p, l, neg, 2), COPSE_EINVAL);
    CHECK(memcmp(l, base, sizeof l) == 0);
    /* a bad id outside the window is not looked at */
    p.penalty_last_n = 1;
    CHECK_STATUS(copse__sampling_apply_penalties(s, &p, l, bad, 3), COPSE_OK);

    /* the counts workspace is clean afterwards: same call twice, same answer */
    p = copse__sampling_default_params();
    p.frequency_penalty = 1.0f;
    float a[7], b[7];
    memcpy(a, base, sizeof a);
    memcpy(b, base, sizeof b);
    CHECK_STATUS(copse__sampling_apply_penalties(s, &p, a, hist, 8), COPSE_OK);
    CHECK_STATUS(copse__sampling_apply_penalties(s, &p, b, hist, 8), COPSE_OK);
    CHECK(memcmp(a, b, sizeof a) == 0);
    CHECK(a[1] == -1.0f - 3.0f);

    /* probs applies penalties to a copy: the caller's row is untouched, and
     * with temperature 0 the argmax moves from token 3 once 3 is penalized */
    copse_sampling_params g = copse__sampling_default_params();
    g.temperature = 0.0f;
    g.presence_penalty = 1.5f;
    memcpy(l, base, sizeof l);
    const copse_token h3[1] = {3};
    copse_sampling_dist d;
    CHECK_STATUS(copse__sampling_probs(s, &g, l, h3, 1, &d), COPSE_OK);
    CHECK_INT_EQ(d.n, 1);
    CHECK_INT_EQ(d.ids[0], 0); /* 3 - 1.5 = 1.5 < 2.0 */
    CHECK(memcmp(l, base, sizeof l) == 0);
    copse__sampler_destroy(s);
}

/* ---------------------------------------------------------------- greedy and temperature */

static void test_argmax(void)
{
    copse_token t;
    for (int trial = 0; trial < 200; trial++) {
        int32_t n = 1 + irand(500);
        float *l = malloc((size_t)n * sizeof *l);
        /* few distinct values so ties are common */
        for (int32_t i = 0; i < n; i++)
            l[i] = (float)irand(8) - 4.0f;
        if (trial % 3 == 0)
            for (int32_t i = 0; i < n; i++)
                if (irand(4) == 0)
                    l[i] = -INFINITY;
        int32_t want = -1;
        for (int32_t i = 0; i < n; i++)
            if (l[i] != -INFINITY && (want < 0 || l[i] > l[want]))
                want = i;
        copse_status st = copse__sampling_argmax(l, n, &t);
        if (want < 0) {
            CHECK_STATUS(st, COPSE_ERANGE);
        } else {
            CHECK_STATUS(st, COPSE_OK);
            CHECK_INT_EQ(t, want);
        }
        free(l);
    }
    const float nan_row[3] = {1.0f, NAN, 2.0f};
    CHECK_STATUS(copse__sampling_argmax(nan_row, 3, &t), COPSE_EINVAL);
    const float inf_row[3] = {1.0f, INFINITY, INFINITY};
    CHECK_STATUS(copse__sampling_argmax(inf_row, 3, &t), COPSE_OK);
    CHECK_INT_EQ(t, 1);
}

static void test_greedy_and_temperature_limit(void)
{
    const int32_t n = 2000;
    copse_sampler *s;
    CHECK_STATUS(copse__sampler_create(n, &s, NULL, 0), COPSE_OK);
    float *l = malloc((size_t)n * sizeof *l);
    for (int trial = 0; trial < 40; trial++) {
        random_logits(l, n, 3.0);
        if (trial % 4 == 0) { /* force a tie at the top, at two distinct ids */
            int32_t i = irand(n), j = (i + 1 + irand(n - 1)) % n;
            l[i] = l[j] = 20.0f;
        }
        copse_token want;
        CHECK_STATUS(copse__sampling_argmax(l, n, &want), COPSE_OK);

        copse_sampling_params p = copse__sampling_default_params();
        p.seed = test_rand(&rs);
        p.temperature = 0.0f;
        p.top_k = irand(3) * 5; /* ignored when greedy */
        copse_sampling_dist d;
        CHECK_STATUS(copse__sampling_probs(s, &p, l, NULL, 0, &d), COPSE_OK);
        CHECK_INT_EQ(d.n, 1);
        CHECK_INT_EQ(d.ids[0], want);
        CHECK(d.p[0] == 1.0f);
        copse_token t;
        CHECK_STATUS(copse__sampling_sample_token(s, &p, l, NULL, 0, 0, (uint32_t)trial, &t),
                     COPSE_OK);
        CHECK_INT_EQ(t, want);

        /* T -> 0: the mass at the argmax grows to 1 and sampling is greedy */
        double prev = 0.0;
        const float temps[] = {2.0f, 1.0f, 0.3f, 0.1f, 0.01f, 1e-3f, 1e-30f};
        for (size_t k = 0; k < sizeof temps / sizeof temps[0]; k++) {
            p.temperature = temps[k];
            CHECK_STATUS(copse__sampling_probs(s, &p, l, NULL, 0, &d), COPSE_OK);
            double pm = 0.0;
            for (int32_t j = 0; j < d.n; j++)
                if (d.ids[j] == want)
                    pm = d.p[j];
            CHECK(pm >= prev - 1e-6);
            prev = pm;
        }
        if (trial % 4 != 0) { /* a unique max: one token left */
            CHECK_INT_EQ(d.n, 1);
            CHECK_INT_EQ(d.ids[0], want);
        } else { /* a tie at the top: both halves, equal */
            CHECK_INT_EQ(d.n, 2);
            CHECK(d.n == 2 && d.p[0] == 0.5f && d.p[1] == 0.5f);
        }
        for (uint32_t step = 0; step < 20 && trial % 4 != 0; step++) {
            CHECK_STATUS(copse__sampling_sample_token(s, &p, l, NULL, 0, 3, step, &t), COPSE_OK);
            CHECK_INT_EQ(t, want);
        }
    }
    free(l);
    copse__sampler_destroy(s);
}

/* ---------------------------------------------------------------- cuts against the reference */

static void test_top_k_exact(void)
{
    const int32_t n = 3000;
    copse_sampler *s;
    CHECK_STATUS(copse__sampler_create(n, &s, NULL, 0), COPSE_OK);
    float *l = malloc((size_t)n * sizeof *l);
    double *ref = malloc((size_t)n * sizeof *ref);
    for (int trial = 0; trial < 60; trial++) {
        /* many exact ties: values from a small set, moderate spread so no
         * weight underflows and every kept token has p > 0 */
        int levels = 1 + irand(12);
        for (int32_t i = 0; i < n; i++)
            l[i] = (float)irand(levels) * 0.25f;
        copse_sampling_params p = copse__sampling_default_params();
        p.top_k = 1 + irand(trial % 2 ? 50 : n + 10);
        copse_sampling_dist d;
        CHECK_STATUS(copse__sampling_probs(s, &p, l, NULL, 0, &d), COPSE_OK);
        int32_t k = p.top_k < n ? p.top_k : n;
        CHECK_INT_EQ(d.n, k);
        int32_t kept = ref_probs(&p, l, n, NULL, 0, ref);
        check_dist_matches(&d, ref, n, kept, 1e-6, "top-k");
        /* ties broken by lower id: every kept token ranks before every
         * dropped one */
        float worst_l = INFINITY;
        copse_token worst = -1;
        for (int32_t j = 0; j < d.n; j++) {
            copse_token t = d.ids[j];
            if (l[t] < worst_l || (l[t] == worst_l && t > worst)) {
                worst_l = l[t];
                worst = t;
            }
        }
        int bad = 0, at = 0;
        for (int32_t t = 0; t < n; t++) {
            int in = at < d.n && d.ids[at] == t;
            at += in;
            if (!in && (l[t] > worst_l || (l[t] == worst_l && t < worst)))
                bad++;
        }
        CHECK_INT_EQ(bad, 0);
    }
    free(l);
    free(ref);
    copse__sampler_destroy(s);
}

static void test_top_p_prefix(void)
{
    const int32_t n = 5000;
    copse_sampler *s;
    CHECK_STATUS(copse__sampler_create(n, &s, NULL, 0), COPSE_OK);
    float *l = malloc((size_t)n * sizeof *l);
    double *ref = malloc((size_t)n * sizeof *ref);
    copse_token *ord = malloc((size_t)n * sizeof *ord);
    for (int trial = 0; trial < 60; trial++) {
        random_logits(l, n, 0.5 + 3.0 * urand());
        copse_sampling_params p = copse__sampling_default_params();
        p.temperature = (float)(0.3 + urand());
        p.top_p = (float)(0.05 + 0.94 * urand());
        copse_sampling_dist d;
        CHECK_STATUS(copse__sampling_probs(s, &p, l, NULL, 0, &d), COPSE_OK);
        int32_t kept = ref_probs(&p, l, n, NULL, 0, ref);
        check_dist_matches(&d, ref, n, kept, 1e-6, "top-p");

        /* The property itself: in rank order, the kept tokens are a prefix
         * whose full-distribution mass reaches top_p, and the prefix one
         * shorter does not. */
        for (int32_t i = 0; i < n; i++)
            ord[i] = i;
        ref_l = l;
        qsort(ord, (size_t)n, sizeof *ord, ref_rank_cmp);
        double tot = 0.0, mass = 0.0, shorter = 0.0;
        for (int32_t i = 0; i < n; i++)
            tot += expf((l[ord[i]] - l[ord[0]]) / p.temperature);
        int prefix_ok = 1;
        for (int32_t i = 0; i < d.n; i++) {
            if (!(ref[ord[i]] > 0.0))
                prefix_ok = 0;
            shorter = mass;
            mass += expf((l[ord[i]] - l[ord[0]]) / p.temperature);
        }
        CHECK(prefix_ok);
        CHECK(mass / tot >= p.top_p * (1 - 1e-9));
        CHECK(shorter / tot < p.top_p * (1 + 1e-9));
    }
    free(l);
    free(ref);
    free(ord);
    copse__sampler_destroy(s);
}

static void test_min_p(void)
{
    const int32_t n = 1000;
    copse_sampler *s;
    CHECK_STATUS(copse__sampler_create(n, &s, NULL, 0), COPSE_OK);
    float *l = malloc((size_t)n * sizeof *l);
    double *ref = malloc((size_t)n * sizeof *ref);
    for (int trial = 0; trial < 60; trial++) {
        random_logits(l, n, 2.0);
        copse_sampling_params p = copse__sampling_default_params();
        p.min_p = (float)urand();
        copse_sampling_dist d;
        CHECK_STATUS(copse__sampling_probs(s, &p, l, NULL, 0, &d), COPSE_OK);
        int32_t kept = ref_probs(&p, l, n, NULL, 0, ref);
        check_dist_matches(&d, ref, n, kept, 1e-6, "min-p");
        /* every kept p >= min_p * p_max, every dropped token below it */
        double pmax = 0.0;
        for (int32_t j = 0; j < d.n; j++)
            pmax = fmax(pmax, d.p[j]);
        int bad = 0;
        for (int32_t j = 0; j < d.n; j++)
            if (d.p[j] < p.min_p * pmax * (1 - 1e-5))
                bad++;
        float lmax = -INFINITY;
        for (int32_t i = 0; i < n; i++)
            lmax = fmaxf(lmax, l[i]);
        int32_t at = 0;
        for (int32_t t = 0; t < n; t++) {
            int in = at < d.n && d.ids[at] == t;
            at += in;
            if (!in && exp((double)l[t] - lmax) > p.min_p * (1 + 1e-5))
                bad++;
        }
        CHECK_INT_EQ(bad, 0);
    }
    /* min_p = 1 keeps only the maximum (and its ties) */
    copse_sampler *s4;
    CHECK_STATUS(copse__sampler_create(4, &s4, NULL, 0), COPSE_OK);
    const float l4[4] = {1.0f, 3.0f, 3.0f, 2.0f};
    copse_sampling_params p = copse__sampling_default_params();
    p.min_p = 1.0f;
    copse_sampling_dist d;
    CHECK_STATUS(copse__sampling_probs(s4, &p, l4, NULL, 0, &d), COPSE_OK);
    CHECK_INT_EQ(d.n, 2);
    CHECK(d.n == 2 && d.ids[0] == 1 && d.ids[1] == 2 && d.p[0] == 0.5f);
    copse__sampler_destroy(s4);
    free(l);
    free(ref);
    copse__sampler_destroy(s);
}

/* Every stage at once, random params, random history, -inf holes. */
static void test_combined_random(void)
{
    copse_sampler *s = NULL;
    float *l = NULL;
    double *ref = NULL;
    copse_token hist[300];
    for (int trial = 0; trial < 150; trial++) {
        int32_t n = 1 + irand(trial < 50 ? 40 : 4000);
        CHECK_STATUS(copse__sampler_create(n, &s, NULL, 0), COPSE_OK);
        l = malloc((size_t)n * sizeof *l);
        ref = malloc((size_t)n * sizeof *ref);
        random_logits(l, n, 0.5 + 4.0 * urand());
        if (trial % 2)
            for (int32_t i = 0; i < n; i++)
                if (irand(5) == 0)
                    l[i] = -INFINITY;
        l[irand(n)] = (float)gauss(); /* at least one finite */
        size_t nh = (size_t)irand(300);
        for (size_t i = 0; i < nh; i++)
            hist[i] = irand(n);

        copse_sampling_params p = copse__sampling_default_params();
        p.seed = test_rand(&rs);
        p.temperature = irand(8) == 0 ? 0.0f : (float)(0.1 + 2.0 * urand());
        p.top_k = irand(2) ? 0 : 1 + irand(n + 5);
        p.top_p = irand(2) ? 1.0f : (float)(0.01 + 0.99 * urand());
        p.min_p = irand(2) ? 0.0f : (float)(0.3 * urand());
        p.repetition_penalty = irand(2) ? 1.0f : (float)(0.5 + 1.5 * urand());
        p.frequency_penalty = irand(2) ? 0.0f : (float)(4.0 * urand() - 2.0);
        p.presence_penalty = irand(2) ? 0.0f : (float)(4.0 * urand() - 2.0);
        p.penalty_last_n = irand(3) == 0 ? -1 : irand(100);

        copse_sampling_dist d;
        CHECK_STATUS(copse__sampling_probs(s, &p, l, hist, nh, &d), COPSE_OK);
        int32_t kept = ref_probs(&p, l, n, hist, nh, ref);
        check_dist_matches(&d, ref, n, kept, 1e-6, "combined");

        /* dense and sparse forms draw the same token for the same uniform */
        float *dense = malloc((size_t)n * sizeof *dense);
        copse__sampling_dist_to_dense(&d, dense, n);
        int differ = 0;
        for (int k = 0; k < 50; k++) {
            double u = urand();
            copse_token a = -1, b = -2;
            CHECK_STATUS(copse__sampling_sample(d.p, d.ids, d.n, u, &a), COPSE_OK);
            CHECK_STATUS(copse__sampling_sample(dense, NULL, n, u, &b), COPSE_OK);
            differ += a != b || a < 0 || a >= n || !(ref[a] > 0.0);
        }
        CHECK_INT_EQ(differ, 0);
        free(dense);
        free(l);
        free(ref);
        copse__sampler_destroy(s);
    }
}

/* A sampler's earlier calls leave no trace: a row processed after any
 * sequence of other rows and params gives bit-identical output to a fresh
 * sampler (what batch invariance needs from the workspace). */
static void test_workspace_reuse(void)
{
    const int32_t n = 20000;
    copse_sampler *used, *fresh;
    CHECK_STATUS(copse__sampler_create(n, &used, NULL, 0), COPSE_OK);
    float *l = malloc((size_t)n * sizeof *l);
    float *keep_p = malloc((size_t)n * sizeof *keep_p);
    copse_token *keep_ids = malloc((size_t)n * sizeof *keep_ids);
    copse_token hist[100];
    for (int trial = 0; trial < 40; trial++) {
        random_logits(l, n, 0.5 + 3.0 * urand());
        for (int i = 0; i < 100; i++)
            hist[i] = irand(n);
        copse_sampling_params p = copse__sampling_default_params();
        p.temperature = (float)(0.2 + urand());
        p.top_k = irand(2) ? 0 : 1 + irand(3000);
        p.top_p = irand(2) ? 1.0f : (float)(0.1 + 0.9 * urand());
        p.min_p = irand(2) ? 0.0f : (float)(0.2 * urand());
        p.repetition_penalty = irand(2) ? 1.0f : 1.3f;
        p.presence_penalty = irand(2) ? 0.0f : 0.7f;
        copse_sampling_dist d;
        CHECK_STATUS(copse__sampling_probs(used, &p, l, hist, 100, &d), COPSE_OK);
        int32_t kn = d.n;
        memcpy(keep_p, d.p, (size_t)kn * sizeof *keep_p);
        memcpy(keep_ids, d.ids, (size_t)kn * sizeof *keep_ids);
        CHECK_STATUS(copse__sampler_create(n, &fresh, NULL, 0), COPSE_OK);
        CHECK_STATUS(copse__sampling_probs(fresh, &p, l, hist, 100, &d), COPSE_OK);
        CHECK_INT_EQ(d.n, kn);
        CHECK(d.n == kn && memcmp(d.p, keep_p, (size_t)kn * sizeof *keep_p) == 0 &&
              memcmp(d.ids, keep_ids, (size_t)kn * sizeof *keep_ids) == 0);
        copse__sampler_destroy(fresh);
        /* failed calls in between change nothing either: a bad history id,
         * and a NaN met after the penalties were applied */
        copse_sampling_params pb = p;
        pb.presence_penalty = 1.0f;
        const copse_token bad[2] = {3, n};
        CHECK_STATUS(copse__sampling_probs(used, &pb, l, bad, 2, &d), COPSE_EINVAL);
        float saved = l[5];
        l[5] = NAN;
        CHECK_STATUS(copse__sampling_probs(used, &pb, l, hist, 100, &d), COPSE_EINVAL);
        l[5] = saved;
    }
    free(l);
    free(keep_p);
    free(keep_ids);
    copse__sampler_destroy(used);
}

/* ---------------------------------------------------------------- bad logits */

static void test_bad_logits(void)
{
    copse_sampler *s;
    CHECK_STATUS(copse__sampler_create(5, &s, NULL, 0), COPSE_OK);
    copse_sampling_params p = copse__sampling_default_params();
    copse_sampling_dist d;
    double lse;
    float out[5];

    const float with_nan[5] = {0.0f, 1.0f, NAN, 2.0f, 3.0f};
    CHECK_STATUS(copse__sampling_probs(s, &p, with_nan, NULL, 0, &d), COPSE_EINVAL);
    CHECK(strstr(copse__sampler_error(s), "NaN") != NULL);
    CHECK_STATUS(copse__sampling_logsumexp(with_nan, 5, &lse), COPSE_EINVAL);
    const float with_pinf[5] = {0.0f, INFINITY, 1.0f, 2.0f, 3.0f};
    CHECK_STATUS(copse__sampling_probs(s, &p, with_pinf, NULL, 0, &d), COPSE_EINVAL);
    CHECK(strstr(copse__sampler_error(s), "+inf") != NULL);
    const float all_ninf[5] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY};
    CHECK_STATUS(copse__sampling_probs(s, &p, all_ninf, NULL, 0, &d), COPSE_ERANGE);
    CHECK_STATUS(copse__sampling_log_softmax(all_ninf, 5, out), COPSE_ERANGE);
    p.temperature = 0.0f;
    CHECK_STATUS(copse__sampling_probs(s, &p, all_ninf, NULL, 0, &d), COPSE_ERANGE);

    /* -inf tokens are never kept; huge finite logits do not overflow */
    const float holes[5] = {-INFINITY, 3e38f, -INFINITY, -3e38f, 3e38f};
    p = copse__sampling_default_params();
    p.temperature = 1e-3f;
    CHECK_STATUS(copse__sampling_probs(s, &p, holes, NULL, 0, &d), COPSE_OK);
    CHECK_INT_EQ(d.n, 2);
    CHECK(d.n == 2 && d.ids[0] == 1 && d.ids[1] == 4 && d.p[0] == 0.5f);
    const float one[5] = {-INFINITY, -INFINITY, -INFINITY, 7.0f, -INFINITY};
    CHECK_STATUS(copse__sampling_probs(s, &p, one, NULL, 0, &d), COPSE_OK);
    CHECK(d.n == 1 && d.ids[0] == 3 && d.p[0] == 1.0f);

    /* a vocabulary of one */
    copse_sampler *s1;
    CHECK_STATUS(copse__sampler_create(1, &s1, NULL, 0), COPSE_OK);
    const float single[1] = {-5.0f};
    copse_sampling_params p1 = copse__sampling_default_params();
    p1.top_k = 1;
    p1.top_p = 0.5f;
    p1.min_p = 0.9f;
    CHECK_STATUS(copse__sampling_probs(s1, &p1, single, NULL, 0, &d), COPSE_OK);
    CHECK(d.n == 1 && d.ids[0] == 0 && d.p[0] == 1.0f);
    copse__sampler_destroy(s1);

    /* a penalized row that stays finite is fine; a history id out of range is not */
    const copse_token bad_hist[1] = {5};
    p.repetition_penalty = 1.2f;
    CHECK_STATUS(copse__sampling_probs(s, &p, one, bad_hist, 1, &d), COPSE_EINVAL);
    copse__sampler_destroy(s);
}

/* ---------------------------------------------------------------- drawing */

static void test_sample_function(void)
{
    copse_token t = 99;
    const float p[5] = {0.0f, 0.25f, 0.0f, 0.75f, 0.0f};
    CHECK_STATUS(copse__sampling_sample(p, NULL, 5, 0.0, &t), COPSE_OK);
    CHECK_INT_EQ(t, 1); /* zero entries are skipped even at u = 0 */
    CHECK_STATUS(copse__sampling_sample(p, NULL, 5, 0.2499, &t), COPSE_OK);
    CHECK_INT_EQ(t, 1);
    CHECK_STATUS(copse__sampling_sample(p, NULL, 5, 0.25, &t), COPSE_OK);
    CHECK_INT_EQ(t, 3);
    CHECK_STATUS(copse__sampling_sample(p, NULL, 5, 0x1.fffffffffffffp-1, &t), COPSE_OK);
    CHECK_INT_EQ(t, 3); /* never past the last positive entry */
    /* unnormalized weights, as an MSS residual max(0, p - q) */
    const float r[3] = {2.0f, 0.0f, 6.0f};
    const copse_token ids[3] = {10, 20, 30};
    CHECK_STATUS(copse__sampling_sample(r, ids, 3, 0.24, &t), COPSE_OK);
    CHECK_INT_EQ(t, 10);
    CHECK_STATUS(copse__sampling_sample(r, ids, 3, 0.26, &t), COPSE_OK);
    CHECK_INT_EQ(t, 30);

    CHECK_STATUS(copse__sampling_sample(p, NULL, 5, 1.0, &t), COPSE_EINVAL);
    CHECK_STATUS(copse__sampling_sample(p, NULL, 5, -0.1, &t), COPSE_EINVAL);
    CHECK_STATUS(copse__sampling_sample(p, NULL, 5, NAN, &t), COPSE_EINVAL);
    const float zero[3] = {0.0f, 0.0f, 0.0f};
    CHECK_STATUS(copse__sampling_sample(zero, NULL, 3, 0.5, &t), COPSE_ERANGE);
    const float neg[3] = {0.5f, -0.1f, 0.6f};
    CHECK_STATUS(copse__sampling_sample(neg, NULL, 3, 0.5, &t), COPSE_EINVAL);
    const float nanp[2] = {0.5f, NAN};
    CHECK_STATUS(copse__sampling_sample(nanp, NULL, 2, 0.5, &t), COPSE_EINVAL);
}

/* Sampling with distinct keys reproduces p: chi-square goodness of fit on a
 * small vocabulary, random logits and cuts. Bins with expected count < 5
 * are pooled. */
static void test_sampling_goodness_of_fit(void)
{
    const uint32_t draws = 200000;
    for (int trial = 0; trial < 6; trial++) {
        int32_t n = 4 + irand(9);
        copse_sampler *s;
        CHECK_STATUS(copse__sampler_create(n, &s, NULL, 0), COPSE_OK);
        float l[12];
        random_logits(l, n, 1.5);
        copse_sampling_params p = copse__sampling_default_params();
        p.seed = test_rand(&rs);
        p.temperature = (float)(0.5 + 1.5 * urand());
        if (trial % 3 == 1)
            p.top_k = 2 + irand(n - 1);
        if (trial % 3 == 2)
            p.top_p = (float)(0.6 + 0.35 * urand());
        copse_sampling_dist d;
        CHECK_STATUS(copse__sampling_probs(s, &p, l, NULL, 0, &d), COPSE_OK);
        double expect[12] = {0};
        for (int32_t j = 0; j < d.n; j++)
            expect[d.ids[j]] = d.p[j];

        uint32_t count[12] = {0};
        int outside = 0;
        const uint32_t seq = (uint32_t)test_rand(&rs);
        for (uint32_t step = 0; step < draws; step++) {
            copse_token t;
            CHECK_STATUS(copse__sampling_sample_token(s, &p, l, NULL, 0, seq, step, &t),
                         COPSE_OK);
            if (t < 0 || t >= n || expect[t] == 0.0)
                outside++;
            else
                count[t]++;
        }
        CHECK_INT_EQ(outside, 0);

        double chi2 = 0.0, pool_e = 0.0, pool_o = 0.0;
        int bins = 0;
        for (int32_t t = 0; t < n; t++) {
            if (expect[t] == 0.0)
                continue;
            double e = expect[t] * draws;
            if (e < 5.0) {
                pool_e += e;
                pool_o += count[t];
                continue;
            }
            chi2 += (count[t] - e) * (count[t] - e) / e;
            bins++;
        }
        if (pool_e > 0.0) {
            chi2 += (pool_o - pool_e) * (pool_o - pool_e) / pool_e;
            bins++;
        }
        if (bins >= 2) {
            double limit = chi2_threshold(bins - 1, Z_1E6);
            if (!(chi2 < limit))
                fprintf(stderr, "goodness of fit: chi2 %.2f >= %.2f (%d bins)\n", chi2, limit,
                        bins);
            CHECK(chi2 < limit);
        }
        copse__sampler_destroy(s);
    }
}

/* ---------------------------------------------------------------- logprobs */

static void test_logprobs(void)
{
    const int32_t n = 3000;
    float *l = malloc((size_t)n * sizeof *l);
    float *lp = malloc((size_t)n * sizeof *lp);
    copse_token *ord = malloc((size_t)n * sizeof *ord);
    for (int trial = 0; trial < 30; trial++) {
        random_logits(l, n, 5.0);
        for (int32_t i = 0; i < n; i++) {
            if (trial % 3 == 0 && irand(3) == 0)
                l[i] = -INFINITY;
            if (trial % 3 == 1)
                l[i] = 50.0f + (float)irand(4); /* ties, and an offset */
        }
        l[irand(n)] = 1.0f;
        CHECK_STATUS(copse__sampling_log_softmax(l, n, lp), COPSE_OK);
        double sum = 0.0;
        int bad = 0;
        for (int32_t i = 0; i < n; i++) {
            if ((l[i] == -INFINITY) != (lp[i] == -INFINITY) || lp[i] > 0.0f)
                bad++;
            sum += exp((double)lp[i]);
        }
        CHECK_INT_EQ(bad, 0);
        CHECK(fabs(sum - 1.0) < 1e-5);

        int32_t top_n = 1 + irand(COPSE_SAMPLING_MAX_TOP_LOGPROBS);
        copse_token ids[COPSE_SAMPLING_MAX_TOP_LOGPROBS];
        float tl[COPSE_SAMPLING_MAX_TOP_LOGPROBS];
        int32_t got;
        CHECK_STATUS(copse__sampling_top_logprobs(l, n, top_n, ids, tl, &got), COPSE_OK);
        int32_t finite = 0;
        for (int32_t i = 0; i < n; i++)
            if (l[i] != -INFINITY)
                ord[finite++] = i;
        ref_l = l;
        qsort(ord, (size_t)finite, sizeof *ord, ref_rank_cmp);
        CHECK_INT_EQ(got, top_n < finite ? top_n : finite);
        for (int32_t j = 0; j < got; j++) {
            CHECK_INT_EQ(ids[j], ord[j]);
            CHECK(fabsf(tl[j] - lp[ord[j]]) < 1e-5f);
        }
    }
    /* fewer finite tokens than asked for */
    const float few[4] = {-INFINITY, 2.0f, -INFINITY, 2.0f};
    copse_token ids[20];
    float tl[20];
    int32_t got;
    CHECK_STATUS(copse__sampling_top_logprobs(few, 4, 20, ids, tl, &got), COPSE_OK);
    CHECK_INT_EQ(got, 2);
    CHECK(got == 2 && ids[0] == 1 && ids[1] == 3);
    CHECK(fabsf(tl[0] - logf(0.5f)) < 1e-6f);
    CHECK_STATUS(copse__sampling_top_logprobs(few, 4, 21, ids, tl, &got), COPSE_EINVAL);
    CHECK_STATUS(copse__sampling_top_logprobs(few, 4, 0, ids, tl, &got), COPSE_EINVAL);
    /* huge logits: stable */
    const float big[3] = {1e30f, 1e30f, 0.0f};
    double lse;
    CHECK_STATUS(copse__sampling_logsumexp(big, 3, &lse), COPSE_OK);
    CHECK(fabs(lse - ((double)1e30f + log(2.0))) <= 1e30 * 1e-15);
    free(l);
    free(lp);
    free(ord);
}

/* ---------------------------------------------------------------- large vocabulary */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void test_large_vocab(void)
{
    const int32_t n = 262144;
    copse_sampler *s;
    CHECK_STATUS(copse__sampler_create(n, &s, NULL, 0), COPSE_OK);
    float *l = malloc((size_t)n * sizeof *l);
    double *ref = malloc((size_t)n * sizeof *ref);
    copse_token hist[256];
    for (int i = 0; i < 256; i++)
        hist[i] = irand(n);

    struct {
        const char *name;
        float t;
        int32_t k;
        float top_p, min_p, rep;
    } cfg[] = {
        {"greedy", 0.0f, 0, 1.0f, 0.0f, 1.0f},
        {"temperature only", 0.8f, 0, 1.0f, 0.0f, 1.0f},
        {"top-k 40", 1.0f, 40, 1.0f, 0.0f, 1.0f},
        {"top-p 0.9", 1.0f, 0, 0.9f, 0.0f, 1.0f},
        {"top-p 0.999, flat", 3.0f, 0, 0.999f, 0.0f, 1.0f},
        {"min-p 0.05", 1.0f, 0, 1.0f, 0.05f, 1.0f},
        {"k50 p0.95 min-p0.02 rep1.1", 0.7f, 50, 0.95f, 0.02f, 1.1f},
    };
    random_logits(l, n, 2.5);
    for (size_t c = 0; c < sizeof cfg / sizeof cfg[0]; c++) {
        copse_sampling_params p = copse__sampling_default_params();
        p.seed = test_rand(&rs);
        p.temperature = cfg[c].t;
        p.top_k = cfg[c].k;
        p.top_p = cfg[c].top_p;
        p.min_p = cfg[c].min_p;
        p.repetition_penalty = cfg[c].rep;
        p.frequency_penalty = cfg[c].rep != 1.0f ? 0.1f : 0.0f;
        const int iters = 20;
        copse_sampling_dist d = {0};
        double t0 = now_s();
        for (int it = 0; it < iters; it++) {
            copse_token tok;
            /* the per-token path: process and draw, with no allocation */
            CHECK_STATUS(copse__sampling_sample_token(s, &p, l, hist, 256, 1, (uint32_t)it, &tok),
                         COPSE_OK);
        }
        double dt = (now_s() - t0) / iters;
        CHECK_STATUS(copse__sampling_probs(s, &p, l, hist, 256, &d), COPSE_OK);
        int32_t kept = ref_probs(&p, l, n, hist, 256, ref);
        check_dist_matches(&d, ref, n, kept, 1e-6, cfg[c].name);
        fprintf(stderr, "vocab %d, %-28s: %6d kept, %.3f ms per token\n", (int)n, cfg[c].name,
                (int)d.n, dt * 1e3);
    }

    /* all logits equal: ties everywhere; the cuts keep the lowest ids */
    for (int32_t i = 0; i < n; i++)
        l[i] = 0.5f;
    copse_sampling_params p = copse__sampling_default_params();
    p.top_k = 1000;
    copse_sampling_dist d;
    CHECK_STATUS(copse__sampling_probs(s, &p, l, NULL, 0, &d), COPSE_OK);
    CHECK(d.n == 1000 && d.ids[0] == 0 && d.ids[999] == 999);
    p.top_k = 0;
    p.top_p = 0.5f;
    CHECK_STATUS(copse__sampling_probs(s, &p, l, NULL, 0, &d), COPSE_OK);
    CHECK(d.n == n / 2 && d.ids[0] == 0 && d.ids[d.n - 1] == n / 2 - 1);
    /* sorted rows (ascending and descending logits) */
    for (int32_t i = 0; i < n; i++)
        l[i] = (float)i * 1e-4f;
    p = copse__sampling_default_params();
    p.top_k = 100;
    CHECK_STATUS(copse__sampling_probs(s, &p, l, NULL, 0, &d), COPSE_OK);
    CHECK(d.n == 100 && d.ids[0] == n - 100 && d.ids[99] == n - 1);
    for (int32_t i = 0; i < n; i++)
        l[i] = -(float)i * 1e-4f;
    p.top_k = 0;
    p.top_p = 0.3f;
    CHECK_STATUS(copse__sampling_probs(s, &p, l, NULL, 0, &d), COPSE_OK);
    int32_t kept = ref_probs(&p, l, n, NULL, 0, ref);
    check_dist_matches(&d, ref, n, kept, 1e-6, "descending top-p");
    CHECK(d.n > 0 && d.ids[0] == 0 && d.ids[d.n - 1] == d.n - 1);

    free(l);
    free(ref);
    copse__sampler_destroy(s);
}

/* ---------------------------------------------------------------- main */

int main(void)
{
    rs = test_seed();
    test_philox_known_answers();
    test_rng_pure();
    test_rng_uniformity();
    test_rng_independence();
    test_params();
    test_penalties_by_hand();
    test_argmax();
    test_greedy_and_temperature_limit();
    test_top_k_exact();
    test_top_p_prefix();
    test_min_p();
    test_combined_random();
    test_workspace_reuse();
    test_bad_logits();
    test_sample_function();
    test_sampling_goodness_of_fit();
    test_logprobs();
    test_large_vocab();
    return test_exit();
}
