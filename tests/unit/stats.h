/*
 * stats.h — chi-square goodness of fit for the distribution tests.
 *
 * Critical values at false-alarm probability 1e-6 per statistic (one-sided
 * z = 4.753 through the Wilson–Hilferty cube-root approximation, accurate
 * to a few percent at these degrees of freedom).
 */
#ifndef COPSE_TEST_STATS_H
#define COPSE_TEST_STATS_H

#include <math.h>

/* Wilson–Hilferty upper quantile of chi-square(df) at false-alarm 1e-6. */
static inline double chi2_crit(int df)
{
    const double z = 4.753; /* one-sided 1e-6 */
    double a = 2.0 / (9.0 * df);
    double c = 1.0 - a + z * sqrt(a);
    return df * c * c * c;
}

/* Chi-square statistic of counts against probabilities; a count in a cell
 * of probability 0 gives +inf. Cells whose expected count is below
 * min_expected are pooled into one cell (0: no pooling), so rare cells do
 * not dominate the statistic. *df receives the degrees of freedom. */
static inline double chi2_pooled(const long *obs, const double *prob, int cells, long n, double min_expected,
                                 int *df)
{
    double s = 0.0, pool_e = 0.0;
    long pool_o = 0;
    int k = 0;
    for (int i = 0; i < cells; i++) {
        double e = prob[i] * (double)n;
        if (prob[i] <= 0.0) {
            if (obs[i] > 0) {
                *df = 1;
                return INFINITY;
            }
            continue;
        }
        if (e < min_expected) {
            pool_e += e;
            pool_o += obs[i];
            continue;
        }
        s += ((double)obs[i] - e) * ((double)obs[i] - e) / e;
        k++;
    }
    if (pool_e > 0.0) {
        s += ((double)pool_o - pool_e) * ((double)pool_o - pool_e) / pool_e;
        k++;
    }
    *df = k > 1 ? k - 1 : 1;
    return s;
}

static inline double chi2(const long *obs, const double *prob, int cells, long n, int *df)
{
    return chi2_pooled(obs, prob, cells, n, 0.0, df);
}

#endif /* COPSE_TEST_STATS_H */
