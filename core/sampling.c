/*
 * sampling.c — logit processing and token drawing.
 *
 * The per-token path (penalties, the processed distribution, drawing) works
 * only in the sampler's workspace, allocated once by copse__sampler_create.
 * See sampling.h for the contract and the processing order.
 */
#include "sampling.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

/* ---------------------------------------------------------------- parameters */

copse_sampling_params copse__sampling_default_params(void)
{
    return (copse_sampling_params){
        .temperature = 1.0f,
        .top_k = 0,
        .top_p = 1.0f,
        .min_p = 0.0f,
        .repetition_penalty = 1.0f,
        .frequency_penalty = 0.0f,
        .presence_penalty = 0.0f,
        .penalty_last_n = 64,
        .seed = 0,
    };
}

copse_status copse__sampling_validate(const copse_sampling_params *params, char *err,
                                      size_t err_size)
{
    const copse_sampling_params *p = params;
    if (!p)
        return copse__errorf(err, err_size, COPSE_EINVAL, "sampling params are NULL");
    /* Comparisons are written so that NaN fails them. */
    if (!(p->temperature >= 0.0f) || isinf(p->temperature))
        return copse__errorf(err, err_size, COPSE_EINVAL,
                             "temperature must be finite and >= 0 (got %g)", (double)p->temperature);
    if (p->top_k < 0)
        return copse__errorf(err, err_size, COPSE_EINVAL, "top_k must be >= 0 (got %d)",
                             (int)p->top_k);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return copse__errorf(err, err_size, COPSE_EINVAL, "top_p must be in (0, 1] (got %g)",
                             (double)p->top_p);
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return copse__errorf(err, err_size, COPSE_EINVAL, "min_p must be in [0, 1] (got %g)",
                             (double)p->min_p);
    if (!(p->repetition_penalty > 0.0f) || isinf(p->repetition_penalty))
        return copse__errorf(err, err_size, COPSE_EINVAL,
                             "repetition_penalty must be finite and > 0 (got %g)",
                             (double)p->repetition_penalty);
    if (!isfinite(p->frequency_penalty))
        return copse__errorf(err, err_size, COPSE_EINVAL, "frequency_penalty must be finite");
    if (!isfinite(p->presence_penalty))
        return copse__errorf(err, err_size, COPSE_EINVAL, "presence_penalty must be finite");
    if (p->penalty_last_n < -1)
        return copse__errorf(err, err_size, COPSE_EINVAL,
                             "penalty_last_n must be -1 (whole history), 0 (off) or > 0 (got %d)",
                             (int)p->penalty_last_n);
    return COPSE_OK;
}

/* ---------------------------------------------------------------- sampler workspace */

/* Top-p buckets weights w in [0, 1] by their IEEE bits >> 18 (sign 0,
 * exponent, 5 mantissa bits: 32 buckets per octave); 1.0f lands in 4064. */
#define MASS_SHIFT 18
#define MASS_BUCKETS ((0x3F800000u >> MASS_SHIFT) + 1)

struct copse_sampler {
    int32_t n_vocab;
    float *logits;    /* penalized copy of the row being processed */
    float *w;         /* by token id: exp((logit - max) / T), valid for candidates */
    copse_token *idx; /* candidate ids; after processing, the kept ids ascending */
    float *p;         /* probabilities, by position in idx */
    uint32_t *mark;   /* by token id: counts or marks; all zero between calls */
    copse_token *tmp; /* scratch ids for the top-p boundary bucket */
    double mass[MASS_BUCKETS]; /* top-p: weight per bucket of w */
    char err[192];
};

copse_status copse__sampler_create(int32_t n_vocab, copse_sampler **out, char *err,
                                   size_t err_size)
{
    copse_status st = COPSE_ENOMEM;
    *out = NULL;
    if (n_vocab < 1 || n_vocab > INT32_MAX / 2)
        return copse__errorf(err, err_size, COPSE_EINVAL, "n_vocab %d out of range",
                             (int)n_vocab);

    copse_sampler *s = calloc(1, sizeof *s);
    if (!s)
        goto fail;
    s->n_vocab = n_vocab;
    s->logits = malloc((size_t)n_vocab * sizeof *s->logits);
    s->w = malloc((size_t)n_vocab * sizeof *s->w);
    s->idx = malloc((size_t)n_vocab * sizeof *s->idx);
    s->p = malloc((size_t)n_vocab * sizeof *s->p);
    s->mark = calloc((size_t)n_vocab, sizeof *s->mark);
    s->tmp = malloc((size_t)n_vocab * sizeof *s->tmp);
    if (!s->logits || !s->w || !s->idx || !s->p || !s->mark || !s->tmp)
        goto fail;
    *out = s;
    return COPSE_OK;

fail:
    copse__sampler_destroy(s);
    return copse__errorf(err, err_size, st, "sampler for %d tokens: out of memory", (int)n_vocab);
}

void copse__sampler_destroy(copse_sampler *s)
{
    if (!s)
        return;
    free(s->logits);
    free(s->w);
    free(s->idx);
    free(s->p);
    free(s->mark);
    free(s->tmp);
    free(s);
}

int32_t copse__sampler_n_vocab(const copse_sampler *s)
{
    return s->n_vocab;
}

const char *copse__sampler_error(const copse_sampler *s)
{
    return s->err;
}

#define FAIL(s, status, ...) copse__errorf((s)->err, sizeof (s)->err, (status), __VA_ARGS__)

/* ---------------------------------------------------------------- penalties */

static int penalties_active(const copse_sampling_params *p)
{
    return p->penalty_last_n != 0 &&
           (p->repetition_penalty != 1.0f || p->frequency_penalty != 0.0f ||
            p->presence_penalty != 0.0f);
}

copse_status copse__sampling_apply_penalties(copse_sampler *s, const copse_sampling_params *params,
                                             float *logits, const copse_token *history,
                                             size_t n_history)
{
    copse_status st = copse__sampling_validate(params, s->err, sizeof s->err);
    if (st != COPSE_OK)
        return st;
    if (!penalties_active(params) || n_history == 0)
        return COPSE_OK;

    size_t start = 0;
    if (params->penalty_last_n > 0 && (size_t)params->penalty_last_n < n_history)
        start = n_history - (size_t)params->penalty_last_n;

    const int32_t n_vocab = s->n_vocab;
    for (size_t i = start; i < n_history; i++)
        if (history[i] < 0 || history[i] >= n_vocab)
            return FAIL(s, COPSE_EINVAL, "history[%zu] = %d is not a token id below %d", i,
                        (int)history[i], (int)n_vocab);

    /* Count, then penalize each distinct token once while clearing its count,
     * which restores mark[] to all zeros: O(window), independent of n_vocab. */
    uint32_t *count = s->mark;
    for (size_t i = start; i < n_history; i++)
        count[history[i]]++;

    const float rep = params->repetition_penalty;
    const float freq = params->frequency_penalty;
    const float pres = params->presence_penalty;
    for (size_t i = start; i < n_history; i++) {
        copse_token t = history[i];
        uint32_t c = count[t];
        if (c == 0)
            continue; /* already penalized */
        count[t] = 0;
        float x = logits[t];
        if (rep != 1.0f)
            x = x > 0.0f ? x / rep : x * rep;
        x -= (float)c * freq + pres;
        logits[t] = x;
    }
    return COPSE_OK;
}

/* ---------------------------------------------------------------- ordering and selection */

/* The ranking every cut uses: higher logit first, lower id first on ties.
 * A strict total order over distinct ids, so selections are unique. */
static inline int ranks_before(const float *l, copse_token a, copse_token b)
{
    return l[a] > l[b] || (l[a] == l[b] && a < b);
}

static inline void swap_tok(copse_token *a, int32_t i, int32_t j)
{
    copse_token t = a[i];
    a[i] = a[j];
    a[j] = t;
}

/* Insertion sort of a[lo..hi) by rank; for short ranges. */
static void rank_insertion_sort(const float *l, copse_token *a, int32_t lo, int32_t hi)
{
    for (int32_t i = lo + 1; i < hi; i++) {
        copse_token t = a[i];
        int32_t j = i;
        while (j > lo && ranks_before(l, t, a[j - 1])) {
            a[j] = a[j - 1];
            j--;
        }
        a[j] = t;
    }
}

/* Heapsort of a[lo..hi) by rank: the O(n log n) fallback that bounds the
 * selection loops below against adversarial pivot sequences. */
static void rank_sift_down(const float *l, copse_token *a, int32_t root, int32_t n)
{
    for (;;) {
        int32_t child = 2 * root + 1;
        if (child >= n)
            return;
        /* max-heap of "ranks last" so that the sorted result ranks first-to-last */
        if (child + 1 < n && ranks_before(l, a[child], a[child + 1]))
            child++;
        if (!ranks_before(l, a[root], a[child]))
            return;
        swap_tok(a, root, child);
        root = child;
    }
}

static void rank_heap_sort(const float *l, copse_token *a, int32_t lo, int32_t hi)
{
    copse_token *h = a + lo;
    int32_t n = hi - lo;
    for (int32_t i = n / 2 - 1; i >= 0; i--)
        rank_sift_down(l, h, i, n);
    for (int32_t end = n - 1; end > 0; end--) {
        swap_tok(h, 0, end);
        rank_sift_down(l, h, 0, end);
    }
}

/* Partition a[lo..hi) around a pivot chosen as the median of first, middle
 * and last: afterwards a[lo..mid) rank before a[mid], a[mid+1..hi) after.
 * Returns mid. */
static int32_t rank_partition(const float *l, copse_token *a, int32_t lo, int32_t hi)
{
    int32_t m = lo + (hi - lo) / 2, z = hi - 1;
    if (ranks_before(l, a[m], a[lo]))
        swap_tok(a, m, lo);
    if (ranks_before(l, a[z], a[lo]))
        swap_tok(a, z, lo);
    if (ranks_before(l, a[z], a[m]))
        swap_tok(a, z, m);
    /* now a[lo] <= a[m] <= a[z] in rank order; use a[m] as pivot, parked at z */
    swap_tok(a, m, z);
    copse_token pivot = a[z];
    int32_t store = lo;
    for (int32_t i = lo; i < z; i++)
        if (ranks_before(l, a[i], pivot))
            swap_tok(a, i, store++);
    swap_tok(a, store, z);
    return store;
}

static int depth_budget(int32_t n)
{
    int d = 8;
    while (n > 1) {
        n >>= 1;
        d += 2;
    }
    return d;
}

#define SMALL_RANGE 16      /* ranges this short are insertion-sorted */
#define HEAP_TOP_K_MAX 1024  /* top-k up to this uses one heap pass over the row */
#define BUCKET_TOP_P_MIN 4096 /* top-p over more candidates buckets by weight first */

/* Rearrange a[0..n) so that a[0..k) hold the k best-ranked ids (in no
 * particular order), 0 < k < n. Expected O(n) (quickselect), worst case
 * O(n log n) (heapsort fallback). */
static void select_top_k(const float *l, copse_token *a, int32_t n, int32_t k)
{
    int32_t lo = 0, hi = n; /* the boundary k lies in [lo, hi] */
    int budget = depth_budget(n);
    while (hi - lo > SMALL_RANGE) {
        if (budget-- == 0) {
            rank_heap_sort(l, a, lo, hi);
            return;
        }
        int32_t mid = rank_partition(l, a, lo, hi);
        if (mid == k)
            return;
        if (mid < k)
            lo = mid + 1;
        else
            hi = mid;
    }
    rank_insertion_sort(l, a, lo, hi);
}

/* Top-p by partition: find the smallest m such that the m best-ranked of
 * a[0..n) carry weight >= target, and arrange them in a[0..m). target must
 * be > 0. Each pass partitions around a pivot and sums the weight ranked
 * before it, keeping only the side that holds the boundary: expected O(n),
 * no full sort. */
static int32_t select_top_mass(const float *l, const float *w, copse_token *a, int32_t n,
                               double target)
{
    int32_t lo = 0, hi = n; /* answer in (lo, hi]; a[0..lo) rank first, weigh `before` */
    double before = 0.0;    /* invariant: before < target */
    int budget = depth_budget(n);
    while (hi - lo > SMALL_RANGE) {
        if (budget-- == 0)
            break;
        int32_t mid = rank_partition(l, a, lo, hi);
        double ahead = 0.0;
        for (int32_t i = lo; i < mid; i++)
            ahead += w[a[i]];
        if (before + ahead >= target) {
            hi = mid;
        } else if (before + ahead + w[a[mid]] >= target) {
            return mid + 1;
        } else {
            before += ahead + w[a[mid]];
            lo = mid + 1;
        }
    }
    if (hi - lo > SMALL_RANGE)
        rank_heap_sort(l, a, lo, hi);
    else
        rank_insertion_sort(l, a, lo, hi);
    for (int32_t i = lo; i < hi; i++) {
        before += w[a[i]];
        if (before >= target)
            return i + 1;
    }
    return hi; /* rounding left the target just out of reach: keep the range */
}

/* Top-k for small k straight from the row: one pass, a heap of the k best
 * seen so far with the worst-ranked at its root (rank_sift_down's order).
 * Writes the k best-ranked finite ids to a[0..k) (unordered); the row must
 * hold more than k finite logits. Ids arrive ascending, so a newcomer with
 * a logit equal to the root's ranks after it: a strict > is the full rank
 * test here. O(n + k log k log(n/k)) on random rows, O(n log k) at worst. */
static void heap_top_k(const float *l, int32_t n, int32_t k, copse_token *a)
{
    int32_t have = 0, i = 0;
    for (; i < n && have < k; i++)
        if (l[i] != -INFINITY)
            a[have++] = i;
    assert(have == k);
    for (int32_t j = k / 2 - 1; j >= 0; j--)
        rank_sift_down(l, a, j, k);
    float root = l[a[0]];
    for (; i < n; i++) {
        if (l[i] > root) {
            a[0] = i;
            rank_sift_down(l, a, 0, k);
            root = l[a[0]];
        }
    }
}

static inline uint32_t mass_bucket(float w)
{
    uint32_t bits;
    memcpy(&bits, &w, sizeof bits);
    return bits >> MASS_SHIFT;
}

/* Top-p on many candidates: a one-pass histogram of weight per bucket of w
 * finds the bucket B where the mass, taken from the top bucket down, first
 * reaches target. Tokens in higher buckets are all kept (w is monotone in
 * the logit, so a higher bucket ranks strictly first); only B's members need
 * ranking, by select_top_mass with what is left of the target. Two
 * sequential passes plus a small selection. Returns the count kept in
 * a[0..). */
static int32_t bucket_top_mass(copse_sampler *s, const float *l, copse_token *a, int32_t n,
                               double target)
{
    const float *w = s->w;
    double *mass = s->mass;
    memset(mass, 0, sizeof s->mass);
    for (int32_t j = 0; j < n; j++) {
        float wj = w[a[j]];
        mass[mass_bucket(wj)] += wj;
    }
    double before = 0.0;
    int32_t b = MASS_BUCKETS - 1;
    for (; b >= 0; b--) {
        if (before + mass[b] >= target)
            break;
        before += mass[b];
    }
    if (b < 0)
        return n; /* rounding: the target is just out of reach; keep all */

    /* above B to the front (order kept), B's members to tmp, then after them */
    const uint32_t boundary = (uint32_t)b;
    int32_t above = 0, in_b = 0;
    for (int32_t j = 0; j < n; j++) {
        copse_token id = a[j];
        uint32_t bj = mass_bucket(w[id]);
        if (bj > boundary)
            a[above++] = id;
        else if (bj == boundary)
            s->tmp[in_b++] = id;
    }
    memcpy(a + above, s->tmp, (size_t)in_b * sizeof *a);
    return above + select_top_mass(l, w, a + above, in_b, target - before);
}

/* All finite-logit ids of the row, ascending, into a[0..). */
static void list_candidates(const float *l, int32_t n, int32_t n_ninf, copse_token *a)
{
    if (n_ninf == 0) {
        for (int32_t i = 0; i < n; i++)
            a[i] = i;
        return;
    }
    int32_t m = 0;
    for (int32_t i = 0; i < n; i++)
        if (l[i] != -INFINITY)
            a[m++] = i;
}

static int cmp_token(const void *x, const void *y)
{
    copse_token a = *(const copse_token *)x, b = *(const copse_token *)y;
    return (a > b) - (a < b);
}

/* Put a[0..m) in ascending id order: qsort when m is small against the
 * vocabulary, else mark the ids and scan the vocabulary once. */
static void sort_ids(copse_sampler *s, copse_token *a, int32_t m)
{
    if ((int64_t)m * 16 <= s->n_vocab) {
        qsort(a, (size_t)m, sizeof *a, cmp_token);
        return;
    }
    for (int32_t i = 0; i < m; i++)
        s->mark[a[i]] = 1;
    int32_t j = 0;
    for (int32_t t = 0; t < s->n_vocab; t++) {
        if (s->mark[t]) {
            s->mark[t] = 0;
            a[j++] = t;
        }
    }
    assert(j == m);
}

/* ---------------------------------------------------------------- processed distribution */

/* One pass over a row: its max (-inf if none is finite), the number of -inf
 * entries, and whether any entry is NaN or +inf (the return value). Eight
 * independent lanes and no branches, so the loop is not bound by the
 * latency of one running max and the compiler can vectorize it. */
#define SCAN_LANES 8

static int scan_row(const float *l, int32_t n, float *max_out, int32_t *n_ninf_out)
{
    float mx[SCAN_LANES];
    int32_t ninf[SCAN_LANES];
    int bad[SCAN_LANES];
    for (int k = 0; k < SCAN_LANES; k++) {
        mx[k] = -INFINITY;
        ninf[k] = 0;
        bad[k] = 0;
    }
    int32_t i = 0;
    for (; i + SCAN_LANES <= n; i += SCAN_LANES) {
        for (int k = 0; k < SCAN_LANES; k++) {
            float x = l[i + k];
            bad[k] |= (x != x) | (x == INFINITY);
            ninf[k] += x == -INFINITY;
            mx[k] = x > mx[k] ? x : mx[k]; /* a NaN never wins */
        }
    }
    for (int k = 0; i < n; i++, k++) {
        float x = l[i];
        bad[k] |= (x != x) | (x == INFINITY);
        ninf[k] += x == -INFINITY;
        mx[k] = x > mx[k] ? x : mx[k];
    }
    float m = -INFINITY;
    int32_t total_ninf = 0;
    int any_bad = 0;
    for (int k = 0; k < SCAN_LANES; k++) {
        m = mx[k] > m ? mx[k] : m;
        total_ninf += ninf[k];
        any_bad |= bad[k];
    }
    *max_out = m;
    *n_ninf_out = total_ninf;
    return any_bad;
}

copse_status copse__sampling_probs(copse_sampler *s, const copse_sampling_params *params,
                                   const float *logits, const copse_token *history,
                                   size_t n_history, copse_sampling_dist *out)
{
    const int32_t n_vocab = s->n_vocab;
    copse_token *idx = s->idx;
    float *w = s->w;
    out->n = 0;
    out->ids = idx;
    out->p = s->p;

    copse_status st = copse__sampling_validate(params, s->err, sizeof s->err);
    if (st != COPSE_OK)
        return st;

    /* 1. penalties, on a copy */
    const float *l = logits;
    if (penalties_active(params) && n_history > 0) {
        memcpy(s->logits, logits, (size_t)n_vocab * sizeof *logits);
        st = copse__sampling_apply_penalties(s, params, s->logits, history, n_history);
        if (st != COPSE_OK)
            return st;
        l = s->logits;
    }

    float max;
    int32_t n_ninf;
    if (scan_row(l, n_vocab, &max, &n_ninf)) {
        int32_t i = 0;
        while (!isnan(l[i]) && l[i] != INFINITY)
            i++;
        return FAIL(s, COPSE_EINVAL, "logit of token %d is %s", (int)i,
                    isnan(l[i]) ? "NaN" : "+inf");
    }
    if (n_ninf == n_vocab)
        return FAIL(s, COPSE_ERANGE, "every logit is -inf: no token can be drawn");
    int32_t m = n_vocab - n_ninf; /* finite logits: the candidates */

    /* 2. temperature 0 (greedy): one-hot at the argmax, lowest id on ties;
     * the later stages cannot change it */
    if (params->temperature == 0.0f) {
        int32_t arg = 0;
        while (l[arg] != max)
            arg++;
        idx[0] = arg;
        s->p[0] = 1.0f;
        out->n = 1;
        return COPSE_OK;
    }

    /* 3. top-k, ranked on the logits. Done before the weights of stage 2:
     * a temperature > 0 keeps the ranking, so the cut is the same, and exp
     * then runs on the k kept only. Without top-k: all candidates, ascending. */
    int cut = 0;
    if (params->top_k > 0 && params->top_k < m) {
        if (params->top_k <= HEAP_TOP_K_MAX) {
            heap_top_k(l, n_vocab, params->top_k, idx);
        } else {
            list_candidates(l, n_vocab, n_ninf, idx);
            select_top_k(l, idx, m, params->top_k);
        }
        m = params->top_k;
        cut = 1;
    } else {
        list_candidates(l, n_vocab, n_ninf, idx);
    }

    /* 2. temperature, as weights relative to the max: each in [0, 1], the
     * argmax exactly 1. (x - max) / T never overflows since x <= max. */
    const float t = params->temperature;
    double total = 0.0;
    for (int32_t j = 0; j < m; j++) {
        copse_token id = idx[j];
        float wj = expf((l[id] - max) / t);
        w[id] = wj;
        total += wj;
    }

    /* 4. top-p over the renormalized top-k distribution */
    if (params->top_p < 1.0f) {
        double target = (double)params->top_p * total;
        int32_t kept = m > BUCKET_TOP_P_MIN ? bucket_top_mass(s, l, idx, m, target)
                                            : select_top_mass(l, w, idx, m, target);
        cut = 1; /* the selection reorders idx even when it keeps all */
        m = kept;
    }

    /* 5. min-p: p_i >= min_p * p_max, i.e. w_i >= min_p as w_max = 1 and the
     * argmax survives every earlier cut. Zero weights (underflow) go too, so
     * that the result lists exactly the tokens with p > 0. Stable. */
    const float min_w = params->min_p;
    int32_t kept = 0;
    for (int32_t j = 0; j < m; j++) {
        copse_token id = idx[j];
        if (w[id] > 0.0f && w[id] >= min_w)
            idx[kept++] = id;
    }
    m = kept;
    assert(m >= 1);

    if (cut)
        sort_ids(s, idx, m);

    /* normalize, summing in id order */
    total = 0.0;
    for (int32_t j = 0; j < m; j++)
        total += w[idx[j]];
    /* A subnormal weight over a large total can round to p = 0 in float:
     * such tokens are dropped here so that the list holds only p > 0. */
    const double inv_total = 1.0 / total; /* total >= 1: the argmax weighs 1 */
    int32_t n_pos = 0;
    for (int32_t j = 0; j < m; j++) {
        float pj = (float)(w[idx[j]] * inv_total);
        if (pj > 0.0f) {
            idx[n_pos] = idx[j];
            s->p[n_pos++] = pj;
        }
    }
    out->n = n_pos;
    return COPSE_OK;
}

void copse__sampling_dist_to_dense(const copse_sampling_dist *dist, float *dense,
                                   int32_t n_vocab)
{
    memset(dense, 0, (size_t)n_vocab * sizeof *dense);
    for (int32_t j = 0; j < dist->n; j++) {
        assert(dist->ids[j] >= 0 && dist->ids[j] < n_vocab);
        dense[dist->ids[j]] = dist->p[j];
    }
}

/* ---------------------------------------------------------------- drawing */

copse_status copse__sampling_sample(const float *p, const copse_token *ids, int32_t n, double u,
                                    copse_token *out)
{
    if (!(u >= 0.0 && u < 1.0))
        return COPSE_EINVAL;
    double total = 0.0;
    for (int32_t j = 0; j < n; j++) {
        float x = p[j];
        if (!(x >= 0.0f) || x == INFINITY)
            return COPSE_EINVAL;
        total += x;
    }
    if (!(total > 0.0))
        return COPSE_ERANGE;

    /* Same summation order as the total, so the last positive entry is
     * reached at cum == total > target unless u * total rounded up. */
    const double target = u * total;
    double cum = 0.0;
    int32_t pick = -1;
    for (int32_t j = 0; j < n; j++) {
        if (p[j] > 0.0f) {
            cum += p[j];
            pick = j;
            if (cum > target)
                break;
        }
    }
    *out = ids ? ids[pick] : pick;
    return COPSE_OK;
}

copse_status copse__sampling_argmax(const float *logits, int32_t n, copse_token *out)
{
    int32_t best = -1;
    float bestv = -INFINITY;
    for (int32_t i = 0; i < n; i++) {
        float x = logits[i];
        if (isnan(x))
            return COPSE_EINVAL;
        if (x > bestv) { /* strict: the lowest id wins ties */
            bestv = x;
            best = i;
        }
    }
    if (best < 0)
        return COPSE_ERANGE;
    *out = best;
    return COPSE_OK;
}

copse_status copse__sampling_sample_token(copse_sampler *s, const copse_sampling_params *params,
                                          const float *logits, const copse_token *history,
                                          size_t n_history, uint32_t sequence, uint32_t step,
                                          copse_token *out)
{
    copse_sampling_dist d;
    copse_status st = copse__sampling_probs(s, params, logits, history, n_history, &d);
    if (st != COPSE_OK)
        return st;
    if (d.n == 1) {
        *out = d.ids[0];
        return COPSE_OK;
    }
    double u = copse__rng_uniform(params->seed, sequence, step, 0, 0);
    return copse__sampling_sample(d.p, d.ids, d.n, u, out);
}

/* ---------------------------------------------------------------- logprobs */

copse_status copse__sampling_logsumexp(const float *logits, int32_t n, double *out)
{
    float max;
    int32_t n_ninf;
    if (scan_row(logits, n, &max, &n_ninf))
        return COPSE_EINVAL;
    if (n_ninf == n)
        return COPSE_ERANGE;
    double sum = 0.0; /* >= 1: the max contributes exp(0) */
    for (int32_t i = 0; i < n; i++)
        sum += expf(logits[i] - max);
    *out = (double)max + log(sum);
    return COPSE_OK;
}

copse_status copse__sampling_log_softmax(const float *logits, int32_t n, float *out)
{
    double lse;
    copse_status st = copse__sampling_logsumexp(logits, n, &lse);
    if (st != COPSE_OK)
        return st;
    for (int32_t i = 0; i < n; i++)
        out[i] = (float)((double)logits[i] - lse);
    return COPSE_OK;
}

copse_status copse__sampling_top_logprobs(const float *logits, int32_t n, int32_t top_n,
                                          copse_token *ids, float *logprobs, int32_t *n_out)
{
    *n_out = 0;
    if (top_n < 1 || top_n > COPSE_SAMPLING_MAX_TOP_LOGPROBS)
        return COPSE_EINVAL;
    double lse;
    copse_status st = copse__sampling_logsumexp(logits, n, &lse);
    if (st != COPSE_OK)
        return st;

    /* Keep a short list ranked by logit, descending. Ids arrive ascending,
     * so an equal logit ranks after those already held: insert after them. */
    float best[COPSE_SAMPLING_MAX_TOP_LOGPROBS];
    int32_t have = 0;
    for (int32_t i = 0; i < n; i++) {
        float x = logits[i];
        if (x == -INFINITY || (have == top_n && !(x > best[have - 1])))
            continue;
        int32_t j = have < top_n ? have++ : have - 1;
        while (j > 0 && best[j - 1] < x) {
            best[j] = best[j - 1];
            ids[j] = ids[j - 1];
            j--;
        }
        best[j] = x;
        ids[j] = i;
    }
    for (int32_t j = 0; j < have; j++)
        logprobs[j] = (float)((double)best[j] - lse);
    *n_out = have;
    return COPSE_OK;
}
