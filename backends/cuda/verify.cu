/*
 * verify.cu — the CUDA backend's verify op (also built for HIP): greedy and
 * temperature-only MSS with one-hot tries over whole trees, so that only the
 * accepted paths leave the device (contract: backend-impl.h,
 * copse_verify_batch; rules: core/spec/verify.h; host twin of every step:
 * backends/cpu/cpu-verify.c).
 *
 * Kernels, on the queue's stream, then one copy of the paths to the host:
 *   k_verify_argmax   one block per row of the batch (when a greedy tree is
 *                     in it): the row's argmax (lowest id on ties) and its
 *                     status (NaN/+inf: COPSE_EINVAL, all -inf: COPSE_ERANGE)
 *                     in k_argmax's reduction style;
 *   k_verify_greedy   one thread per greedy tree: the walk from the root while
 *                     a child carries its parent row's argmax;
 *   k_verify_mss      one block per stochastic tree, walking it: at each
 *                     visited row, block reductions give the row's max, its
 *                     checks, the softmax total and the mass z0 of p; thread
 *                     0 runs the keyed shuffle and the acceptance tests with
 *                     the shared keyed generator (core/rng-inline.h); after
 *                     every try failed the block draws from the residual (p
 *                     with the rejected tokens zeroed) by inverse CDF in id
 *                     order.
 *
 * Exactness against the host (copse__verify_run):
 *   greedy: exact (argmax and the row checks are exact operations).
 *   MSS: the uniforms are bit-identical; the arithmetic of p is the host's
 *   (w = expf((l - max) / T), p = (float)(w * (1 / total)) with the total in
 *   double) except that device expf may differ from the host's by an ulp or
 *   two and sums run in another order: each thread sums a contiguous chunk
 *   of ids in id order, then thread 0 adds the chunk sums in order (the host
 *   adds one id after another), and the residual's mass after rejections is
 *   z0 minus the rejected probabilities (the host re-sums the residual). So
 *   p, z and the cumulative sums of the draw agree with the host's to a few
 *   ulps, and the result is the host's except when a uniform falls within
 *   that rounding of an acceptance threshold (U < p(x)/z) or of a CDF
 *   boundary of the final draw — with probability of order 1e-7 per draw.
 *   tests/conformance counts such draws and requires them to be rare.
 *
 * Work: MSS reads each visited row three times (stats, total, z0) plus
 * twice when it draws; greedy reads every row once. Batch invariance: a
 * tree's result depends on its own rows and keys only.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu-common.cuh"
#include "rng-inline.h"

extern "C" {
#include "spec/verify.h"
}

namespace COPSE_GPU_NS {

#define VERIFY_THREADS 256 /* a multiple of COPSE_WARP (32 and 64) */
#define RESIDUAL_EPS 1e-9  /* verify.c's: an emptied residual falls back to p */

/* The op's device and pinned memory, grown on demand (queue-owned). */
struct gpu_verify_scratch {
    int32_t *rows_dev;  /* [4 * rows_cap]: argmax, status, children, tried tokens per row */
    size_t rows_cap;
    copse_verify_path *out_dev, *out_host; /* [out_cap] */
    size_t out_cap;
};

void verify_scratch_free(gpu_queue *q)
{
    gpu_verify_scratch *vs = q->verify;
    if (!vs)
        return;
    if (vs->rows_dev)
        (void)cudaFree(vs->rows_dev);
    if (vs->out_dev)
        (void)cudaFree(vs->out_dev);
    if (vs->out_host)
        (void)cudaFreeHost(vs->out_host);
    free(vs);
    q->verify = NULL;
}

#if COPSE_GPU_DEVICE_CODE

/* ---------------------------------------------------------------- block reductions */

/* The per-thread chunk sums part[] added in thread order by thread 0, so
 * the total's rounding follows id order as closely as a block can. */
static __device__ double vblock_sum_ordered(double v, double *part, double *out)
{
    part[threadIdx.x] = v;
    __syncthreads();
    if (threadIdx.x == 0) {
        double s = 0.0;
        for (unsigned k = 0; k < blockDim.x; k++)
            s += part[k];
        *out = s;
    }
    __syncthreads();
    return *out;
}

/* p of one token, as copse__sampling_probs forms it. */
static __device__ __forceinline__ float vprob(float l, float max, float t, double inv_total)
{
    return l == -INFINITY ? 0.0f : (float)((double)expf((l - max) / t) * inv_total);
}

/* ---------------------------------------------------------------- greedy */

static __global__ void k_verify_argmax(const float *x, size_t xs, int64_t n, int64_t d, int32_t *am, int32_t *stat)
{
    __shared__ float sv[VERIFY_THREADS / 32];
    __shared__ int si[VERIFY_THREADS / 32];
    __shared__ int sc[VERIFY_THREADS / 32];
    const int lane = threadIdx.x % COPSE_WARP, w = threadIdx.x / COPSE_WARP, nw = blockDim.x / COPSE_WARP;
    for (int64_t t = blockIdx.x; t < n; t += gridDim.x) {
        const float *xr = x + (size_t)t * xs;
        float bv = -INFINITY;
        int bi = -1, bad = 0, ninf = 0;
        for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
            const float v = xr[i];
            if (v != v || v == INFINITY) {
                bad = 1;
                continue;
            }
            ninf += v == -INFINITY;
            if (bi < 0 || v > bv) {
                bv = v;
                bi = (int)i;
            }
        }
        warp_argmax(bv, bi);
        if (lane == 0) {
            sv[w] = bv;
            si[w] = bi;
        }
        __syncthreads();
        bad = block_sum_i(bad, sc);
        ninf = block_sum_i(ninf, sc);
        if (threadIdx.x == 0) {
            for (int k = 1; k < nw; k++)
                if (si[k] >= 0 && (bi < 0 || sv[k] > bv || (sv[k] == bv && si[k] < bi))) {
                    bv = sv[k];
                    bi = si[k];
                }
            am[t] = bi < 0 ? 0 : bi;
            stat[t] = bad ? COPSE_EINVAL : (ninf == d ? COPSE_ERANGE : COPSE_OK);
        }
        __syncthreads();
    }
}

static __global__ void k_verify_greedy(const copse_verify_seq *seqs, int32_t n_seqs, const int32_t *parent,
                                       const copse_token *token, const int32_t *am, const int32_t *stat,
                                       copse_verify_path *out)
{
    for (int32_t s = blockIdx.x * blockDim.x + threadIdx.x; s < n_seqs; s += gridDim.x * blockDim.x) {
        const copse_verify_seq sq = seqs[s];
        if (sq.temperature != 0.0f)
            continue;
        copse_verify_path *o = &out[s];
        o->status = COPSE_OK;
        o->bad_row = 0;
        o->n_tries = 0;
        o->next = 0;
        int32_t n_acc = 0, u = 0;
        for (;;) {
            const int32_t r = sq.row0 + u;
            if (stat[r] != COPSE_OK) {
                o->status = stat[r];
                o->bad_row = u;
                break;
            }
            const int32_t arg = am[r];
            int32_t child = -1;
            for (int32_t c = u + 1; c < sq.n_rows && child < 0; c++)
                if (parent[sq.row0 + c] == u && token[sq.row0 + c] == arg)
                    child = c;
            if (child < 0 || n_acc == COPSE_VERIFY_MAX_PATH) {
                o->next = arg;
                break;
            }
            o->accepted[n_acc++] = child - 1;
            u = child;
        }
        o->n_accepted = n_acc;
    }
}

/* ---------------------------------------------------------------- MSS */

/* kids/ktok: per-row scratch (children rows of the visited node in try
 * order; the tokens tried). */
static __global__ void __launch_bounds__(VERIFY_THREADS)
    k_verify_mss(const copse_verify_seq *seqs, int32_t n_seqs, const float *x, size_t xs, int32_t d,
                 const int32_t *parent, const copse_token *token, int32_t *kids_all, int32_t *ktok_all,
                 copse_verify_path *out)
{
    __shared__ double part[VERIFY_THREADS];
    __shared__ double s_total, s_z0;
    __shared__ float shf[VERIFY_THREADS / 32];
    __shared__ int shi[VERIFY_THREADS / 32];
    __shared__ int s_child, s_kfb, s_nt;
    const int tid = threadIdx.x;
    const int32_t chunk = (d + (int32_t)blockDim.x - 1) / (int32_t)blockDim.x;
    const int32_t c0 = min(d, tid * chunk), c1 = min(d, c0 + chunk);

    for (int32_t s = blockIdx.x; s < n_seqs; s += gridDim.x) {
        const copse_verify_seq sq = seqs[s];
        if (sq.temperature == 0.0f)
            continue; /* the whole block skips it */
        const float t = sq.temperature;
        const int32_t *par = parent + sq.row0;
        const copse_token *tok = token + sq.row0;
        int32_t *kids = kids_all + sq.row0, *ktok = ktok_all + sq.row0;
        copse_verify_path *o = &out[s];
        int32_t u = 0, n_acc = 0, n_tries = 0; /* the counts live in thread 0 */
        if (tid == 0) {
            o->status = COPSE_OK;
            o->bad_row = 0;
            o->next = 0;
        }
        for (int32_t du = 0;; du++) {
            const float *l = x + (size_t)(sq.row0 + u) * xs;
            const uint32_t step = sq.step + (uint32_t)du;
            /* 1. the row's max and checks */
            float m = -INFINITY;
            int bad = 0, ninf = 0;
            for (int32_t i = c0; i < c1; i++) {
                const float v = l[i];
                bad |= (v != v) | (v == INFINITY);
                ninf += v == -INFINITY;
                m = v > m ? v : m;
            }
            m = block_max(m, shf);
            bad = block_sum_i(bad, shi);
            ninf = block_sum_i(ninf, shi);
            if (bad || ninf == d) {
                if (tid == 0) {
                    o->status = bad ? COPSE_EINVAL : COPSE_ERANGE;
                    o->bad_row = u;
                }
                break;
            }
            /* 2. the softmax total, then the mass of p */
            double acc = 0.0;
            for (int32_t i = c0; i < c1; i++)
                if (l[i] != -INFINITY)
                    acc += (double)expf((l[i] - m) / t);
            const double inv_total = 1.0 / vblock_sum_ordered(acc, part, &s_total);
            acc = 0.0;
            for (int32_t i = c0; i < c1; i++)
                acc += (double)vprob(l[i], m, t, inv_total);
            const double z0 = vblock_sum_ordered(acc, part, &s_z0);
            /* 3. the tries, by one thread */
            if (tid == 0) {
                int32_t nt = 0;
                for (int32_t c = u + 1; c < sq.n_rows; c++)
                    if (par[c] == u)
                        kids[nt++] = c;
                for (int32_t i = nt - 1; i > 0; i--) {
                    const double r = copse_rng_uniform_inline(sq.seed, sq.sequence, step, (uint32_t)u,
                                                              COPSE_VERIFY_DRAW_ORDER + (uint32_t)(nt - 1 - i));
                    const int32_t j = (int32_t)(r * (double)(i + 1));
                    const int32_t tmp = kids[i];
                    kids[i] = kids[j];
                    kids[j] = tmp;
                }
                int32_t child = -1, kfb = 0;
                double z = z0;
                for (int32_t k = 0; k < nt; k++) {
                    const copse_token xk = tok[kids[k]];
                    const bool in_vocab = xk >= 0 && xk < d;
                    const float pk = in_vocab ? vprob(l[xk], m, t, inv_total) : 0.0f;
                    const double px = (double)pk / z;
                    const double r = copse_rng_uniform_inline(sq.seed, sq.sequence, step, (uint32_t)u,
                                                              COPSE_VERIFY_DRAW_ACCEPT + (uint32_t)k);
                    n_tries++;
                    if (r < px) {
                        child = kids[k];
                        break;
                    }
                    ktok[k] = xk;
                    z -= (double)pk;
                    if (!(z > RESIDUAL_EPS * z0)) { /* p == q up to rounding: fall back to p */
                        z = z0;
                        kfb = k + 1;
                    }
                }
                if (child < 0) /* the zeroed tokens ktok[kfb, nt), ascending */
                    for (int32_t a = kfb + 1; a < nt; a++)
                        for (int32_t c = a; c > kfb && ktok[c - 1] > ktok[c]; c--) {
                            const copse_token tmp = ktok[c];
                            ktok[c] = ktok[c - 1];
                            ktok[c - 1] = tmp;
                        }
                if (child >= 0 && n_acc < COPSE_VERIFY_MAX_PATH)
                    o->accepted[n_acc++] = child - 1;
                else if (child >= 0)
                    child = -2; /* deeper than any tree may be: stop (cannot happen) */
                s_child = child;
                s_kfb = kfb;
                s_nt = nt;
            }
            __syncthreads();
            const int32_t child = s_child, kfb = s_kfb, nt = s_nt;
            __syncthreads();
            if (child >= 0) {
                u = child;
                continue;
            }
            /* 4. the final draw from the residual by inverse CDF in id order:
             * chunk sums, the crossing chunk found in order, then walked */
            int32_t j = kfb; /* the first zeroed token >= c0 */
            while (j < nt && ktok[j] < c0)
                j++;
            acc = 0.0;
            for (int32_t i = c0; i < c1; i++) {
                while (j < nt && ktok[j] < i)
                    j++;
                if (!(j < nt && ktok[j] == i))
                    acc += (double)vprob(l[i], m, t, inv_total);
            }
            part[tid] = acc;
            __syncthreads();
            if (tid == 0) {
                double total = 0.0;
                for (unsigned k = 0; k < blockDim.x; k++)
                    total += part[k];
                const double target =
                    copse_rng_uniform_inline(sq.seed, sq.sequence, step, (uint32_t)u, COPSE_VERIFY_DRAW_SAMPLE) *
                    total;
                /* the chunk where the running sum first passes target, else the
                 * last chunk with mass (then its last positive entry wins) */
                double cum = 0.0, before = 0.0;
                int tc = -1;
                for (unsigned k = 0; k < blockDim.x; k++) {
                    if (!(part[k] > 0.0))
                        continue;
                    tc = (int)k;
                    before = cum;
                    cum += part[k];
                    if (cum > target)
                        break;
                }
                copse_token pick = 0;
                if (tc >= 0) {
                    const int32_t b0 = min(d, tc * chunk), b1 = min(d, b0 + chunk);
                    int32_t jj = kfb;
                    while (jj < nt && ktok[jj] < b0)
                        jj++;
                    cum = before;
                    for (int32_t i = b0; i < b1; i++) {
                        while (jj < nt && ktok[jj] < i)
                            jj++;
                        if (jj < nt && ktok[jj] == i)
                            continue;
                        const float w = vprob(l[i], m, t, inv_total);
                        if (w > 0.0f) {
                            cum += (double)w;
                            pick = i;
                            if (cum > target)
                                break;
                        }
                    }
                }
                o->next = pick;
            }
            break;
        }
        if (tid == 0) {
            o->n_accepted = n_acc;
            o->n_tries = n_tries;
        }
        __syncthreads();
    }
}

#endif /* COPSE_GPU_DEVICE_CODE */

/* ---------------------------------------------------------------- the op */

/* Make room for rows logits rows and n_seqs paths (waits for the stream
 * before freeing anything it may still use). */
static copse_status verify_reserve(gpu_queue *q, size_t rows, size_t n_seqs)
{
    copse_status st;
    if (!q->verify && !(q->verify = (gpu_verify_scratch *)calloc(1, sizeof(gpu_verify_scratch))))
        return COPSE_ENOMEM;
    gpu_verify_scratch *vs = q->verify;
    if (rows <= vs->rows_cap && n_seqs <= vs->out_cap)
        return COPSE_OK;
    if ((st = gpu_check(q->gd, cudaStreamSynchronize(q->stream), "verify", "cudaStreamSynchronize")) != COPSE_OK)
        return st;
    if (rows > vs->rows_cap) {
        const size_t cap = rows < 1024 ? 1024 : rows;
        void *p = NULL;
        if ((st = gpu_check(q->gd, cudaMalloc(&p, 4 * cap * sizeof(int32_t)), "verify", "cudaMalloc")) != COPSE_OK)
            return st;
        if (vs->rows_dev)
            (void)cudaFree(vs->rows_dev);
        vs->rows_dev = (int32_t *)p;
        vs->rows_cap = cap;
    }
    return gpu_mirror_reserve(q, sizeof(copse_verify_path), n_seqs < 64 ? 64 : n_seqs, (void **)&vs->out_dev,
                              (void **)&vs->out_host, &vs->out_cap, "verify");
}

copse_status op_verify(copse_backend_queue *bq, const copse_tensor *logits, const copse_verify_batch *b,
                       copse_verify_path *out)
{
    gpu_queue *q = (gpu_queue *)bq->ctx;
    copse_status st = gpu_enter(q, "verify");
    if (st == COPSE_OK)
        st = gpu_capture_break(q, "verify"); /* it waits for its result */
    if (st != COPSE_OK || b->n_seqs == 0)
        return st;
    /* rows in use, and which kinds of tree the batch holds */
    int32_t n_rows = 0;
    bool any_greedy = false, any_mss = false;
    for (int32_t s = 0; s < b->n_seqs; s++) {
        const copse_verify_seq *sq = &b->seqs[s];
        if (sq->row0 + sq->n_rows > n_rows)
            n_rows = sq->row0 + sq->n_rows;
        any_greedy |= sq->temperature == 0.0f;
        any_mss |= sq->temperature != 0.0f;
    }
    if ((st = verify_reserve(q, (size_t)n_rows, (size_t)b->n_seqs)) != COPSE_OK)
        return st;
    gpu_verify_scratch *vs = q->verify;
    const void *dseq = NULL, *dpar = NULL, *dtok = NULL;
    if ((st = gpu_meta_push(q, META_ANY, b->seqs, (size_t)b->n_seqs * sizeof *b->seqs, &dseq, "verify")) != COPSE_OK ||
        (st = gpu_meta_push(q, META_ANY, b->parent, (size_t)n_rows * sizeof(int32_t), &dpar, "verify")) != COPSE_OK ||
        (st = gpu_meta_push(q, META_ANY, b->token, (size_t)n_rows * sizeof(copse_token), &dtok, "verify")) != COPSE_OK)
        return st;
    const float *x = (const float *)(const void *)tdev(logits);
    const size_t xs = logits->row_stride / sizeof(float);
    const int32_t d = (int32_t)logits->ne[0];
    int32_t *am = vs->rows_dev, *stat = am + vs->rows_cap, *kids = stat + vs->rows_cap, *ktok = kids + vs->rows_cap;
    if (any_greedy) {
        const unsigned grid = (unsigned)(n_rows < 65535 ? n_rows : 65535);
        GPU_LAUNCH(grid, VERIFY_THREADS, 0, q->stream, k_verify_argmax)(x, xs, (int64_t)n_rows, (int64_t)d, am, stat);
        if ((st = gpu_launch_check(q, "verify")) != COPSE_OK)
            return st;
        const unsigned gg = (unsigned)((b->n_seqs + 63) / 64);
        GPU_LAUNCH(gg, 64, 0, q->stream, k_verify_greedy)((const copse_verify_seq *)dseq, b->n_seqs,
                                                           (const int32_t *)dpar, (const copse_token *)dtok, am, stat,
                                                           vs->out_dev);
        if ((st = gpu_launch_check(q, "verify")) != COPSE_OK)
            return st;
    }
    if (any_mss) {
        const unsigned grid = (unsigned)(b->n_seqs < 65535 ? b->n_seqs : 65535);
        GPU_LAUNCH(grid, VERIFY_THREADS, 0, q->stream, k_verify_mss)((const copse_verify_seq *)dseq, b->n_seqs, x, xs,
                                                                      d, (const int32_t *)dpar,
                                                                      (const copse_token *)dtok, kids, ktok,
                                                                      vs->out_dev);
        if ((st = gpu_launch_check(q, "verify")) != COPSE_OK)
            return st;
    }
    const size_t bytes = (size_t)b->n_seqs * sizeof(copse_verify_path);
    if ((st = gpu_check(q->gd, cudaMemcpyAsync(vs->out_host, vs->out_dev, bytes, cudaMemcpyDeviceToHost, q->stream),
                        "verify", "cudaMemcpyAsync")) != COPSE_OK ||
        (st = gpu_check(q->gd, cudaStreamSynchronize(q->stream), "verify", "cudaStreamSynchronize")) != COPSE_OK)
        return st;
    memcpy(out, vs->out_host, bytes);
    return COPSE_OK;
}

} // namespace COPSE_GPU_NS
