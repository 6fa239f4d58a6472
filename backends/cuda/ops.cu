/*
 * ops.cu — the CUDA backend's row-wise ops: embed, rms_norm, rope, add,
 * swiglu, kv_store, kv_commit, argmax, softmax (also built for HIP).
 *
 * Each mirrors the CPU reference (backends/cpu/cpu-queue.c) step for step
 * where that is cheap: embed is the reference dequantization (bit-exact);
 * rms_norm sums squares in double; rope computes its angles in double and
 * rotates with separate float roundings; kv_store rounds to fp16 to nearest
 * even; kv_commit runs the moves in list order (core/kvcache.h). Every
 * kernel's result for a row depends on that row only, never on how many
 * rows share the call (batch invariance).
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "dequant.cuh"

namespace COPSE_GPU_NS {

#define ROW_THREADS 256 /* a multiple of COPSE_WARP (32 and 64) */

static __global__ void k_probe(int *x)
{
    if (x)
        *x = COPSE_WARP;
}

void *probe_kernel(void)
{
    return (void *)k_probe;
}

/* Grid y covers rows; CUDA limits it to 65535, so kernels loop over rows. */
static unsigned grid_rows(int64_t n)
{
    return (unsigned)(n < 65535 ? (n > 0 ? n : 1) : 65535);
}

static size_t fstride(const copse_tensor *t)
{
    return t->row_stride / sizeof(float);
}

/* ---------------------------------------------------------------- embed */

template <int TYPE>
static __global__ void k_embed_blocks(const unsigned char *table, size_t tstride, const int32_t *ids, int32_t n,
                                      int64_t nb, float *out, size_t ostride)
{
    for (int64_t t = blockIdx.y; t < n; t += gridDim.y) {
        const unsigned char *row = table + (size_t)ids[t] * tstride;
        float *o = out + (size_t)t * ostride;
        for (int64_t b = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; b < nb; b += (int64_t)gridDim.x * blockDim.x) {
            float y[32];
            dq32<TYPE>(row, b, y);
#pragma unroll
            for (int j = 0; j < 32; j++)
                o[b * 32 + j] = y[j];
        }
    }
}

/* Plain types of any width (F32 row gather, F16, BF16). */
static __global__ void k_embed_plain(const unsigned char *table, size_t tstride, uint32_t type, const int32_t *ids,
                                     int32_t n, int64_t d, float *out, size_t ostride)
{
    for (int64_t t = blockIdx.y; t < n; t += gridDim.y) {
        const unsigned char *row = table + (size_t)ids[t] * tstride;
        float *o = out + (size_t)t * ostride;
        for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < d; i += (int64_t)gridDim.x * blockDim.x)
            o[i] = type == COPSE_Q_F32   ? ((const float *)(const void *)row)[i]
                   : type == COPSE_Q_F16 ? ld_fp16(row + 2 * i)
                                         : bf16_to_f32(ld_u16(row + 2 * i));
    }
}

copse_status op_embed(copse_backend_queue *bq, const copse_tensor *table, const int32_t *ids, int32_t n,
                      const copse_tensor *out)
{
    gpu_queue *q = (gpu_queue *)bq->ctx;
    if (!gpu_type_supported(table->type))
        return COPSE_EUNSUPPORTED;
    if (n <= 0)
        return COPSE_OK;
    copse_status st = gpu_enter(q, "embed");
    const void *dids = NULL;
    if (st == COPSE_OK)
        st = gpu_meta_push(q, META_IDS, ids, (size_t)n * sizeof(int32_t), &dids, "embed");
    if (st != COPSE_OK)
        return st;
    const int64_t d = table->ne[0];
    const uint32_t ty = table->type;
    float *o = (float *)(void *)tdev(out);
    const int32_t *di = (const int32_t *)dids;
    if (ty == COPSE_Q_F32 || ty == COPSE_Q_F16 || ty == COPSE_Q_BF16 || d % gpu_type_row_unit(ty) != 0) {
        if (ty != COPSE_Q_F32 && ty != COPSE_Q_F16 && ty != COPSE_Q_BF16)
            return COPSE_EUNSUPPORTED;
        dim3 grid((unsigned)((d + ROW_THREADS - 1) / ROW_THREADS), grid_rows(n));
        GPU_LAUNCH(grid, ROW_THREADS, 0, q->stream, k_embed_plain)(tdev(table), table->row_stride, ty, di, n, d, o,
                                                           fstride(out));
        return gpu_launch_check(q, "embed");
    }
    const int64_t nb = d / 32;
    dim3 grid((unsigned)((nb + 127) / 128), grid_rows(n));
#define EMBED_(T)                                                                                         \
    case T:                                                                                               \
        GPU_LAUNCH(grid, 128, 0, q->stream, k_embed_blocks<T>)(tdev(table), table->row_stride, di, n, nb, o,        \
                                                       fstride(out));                                     \
        break;
    switch (ty) {
        EMBED_(COPSE_Q_Q4_0)
        EMBED_(COPSE_Q_Q4_1)
        EMBED_(COPSE_Q_Q5_0)
        EMBED_(COPSE_Q_Q5_1)
        EMBED_(COPSE_Q_Q8_0)
        EMBED_(COPSE_Q_Q4_K)
        EMBED_(COPSE_Q_Q5_K)
        EMBED_(COPSE_Q_Q6_K)
    default:
        return COPSE_EUNSUPPORTED;
    }
#undef EMBED_
    return gpu_launch_check(q, "embed");
}

/* ---------------------------------------------------------------- rms_norm */

static __global__ void k_rms_norm(const float *x, size_t xs, const float *w, float eps, int64_t n, int64_t d,
                                  float *out, size_t os)
{
    __shared__ double sh[ROW_THREADS / 32];
    for (int64_t t = blockIdx.x; t < n; t += gridDim.x) {
        const float *xr = x + (size_t)t * xs;
        double ss = 0.0;
        for (int64_t i = threadIdx.x; i < d; i += blockDim.x)
            ss += (double)xr[i] * (double)xr[i];
        ss = block_sum_d(ss, sh);
        const float scale = (float)(1.0 / sqrt(ss / (double)d + (double)eps));
        float *o = out + (size_t)t * os;
        for (int64_t i = threadIdx.x; i < d; i += blockDim.x)
            o[i] = __fmul_rn(__fmul_rn(xr[i], scale), w[i]);
    }
}

copse_status op_rms_norm(copse_backend_queue *bq, const copse_tensor *x, const copse_tensor *w, float eps,
                         const copse_tensor *out)
{
    gpu_queue *q = (gpu_queue *)bq->ctx;
    copse_status st = gpu_enter(q, "rms_norm");
    if (st != COPSE_OK || x->ne[1] == 0)
        return st;
    GPU_LAUNCH(grid_rows(x->ne[1]), ROW_THREADS, 0, q->stream, k_rms_norm)((const float *)(void *)tdev(x), fstride(x),
                                                                   (const float *)(void *)tdev(w), eps, x->ne[1],
                                                                   x->ne[0], (float *)(void *)tdev(out), fstride(out));
    return gpu_launch_check(q, "rms_norm");
}

/* ---------------------------------------------------------------- rope */

static __global__ void k_rope(float *x, size_t xs, const int32_t *pos, int64_t n, int n_heads, int hd, int neox,
                              float theta_base, float freq_scale)
{
    const int half = hd / 2;
    for (int64_t t = blockIdx.y; t < n; t += gridDim.y) {
        float *xr = x + (size_t)t * xs;
        for (int k = blockIdx.x * blockDim.x + threadIdx.x; k < n_heads * half; k += gridDim.x * blockDim.x) {
            const int h = k / half, i = k % half;
            const double th = (double)pos[t] * (double)freq_scale * pow((double)theta_base, -2.0 * (double)i / (double)hd);
            const float c = (float)cos(th), s = (float)sin(th);
            float *v = xr + (size_t)h * hd;
            const int i0 = neox ? i : 2 * i, i1 = neox ? i + half : 2 * i + 1;
            const float x0 = v[i0], x1 = v[i1];
            v[i0] = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s));
            v[i1] = __fadd_rn(__fmul_rn(x0, s), __fmul_rn(x1, c));
        }
    }
}

copse_status op_rope(copse_backend_queue *bq, const copse_tensor *x, const int32_t *pos, const copse_rope_params *p)
{
    gpu_queue *q = (gpu_queue *)bq->ctx;
    const int64_t n = x->ne[1];
    copse_status st = gpu_enter(q, "rope");
    if (st != COPSE_OK || n == 0)
        return st;
    const void *dpos = NULL;
    if ((st = gpu_meta_push(q, META_POS, pos, (size_t)n * sizeof(int32_t), &dpos, "rope")) != COPSE_OK)
        return st;
    const int pairs = p->n_heads * (p->head_dim / 2);
    dim3 grid((unsigned)((pairs + 127) / 128), grid_rows(n));
    GPU_LAUNCH(grid, 128, 0, q->stream, k_rope)((float *)(void *)tdev(x), fstride(x), (const int32_t *)dpos, n, p->n_heads,
                                        p->head_dim, p->mode == COPSE_ROPE_NEOX, p->theta_base, p->freq_scale);
    return gpu_launch_check(q, "rope");
}

/* ---------------------------------------------------------------- add, swiglu */

template <bool SWIGLU>
static __global__ void k_binary(const float *a, size_t as, const float *b, size_t bs, float *o, size_t os, int64_t n,
                                int64_t d)
{
    for (int64_t t = blockIdx.y; t < n; t += gridDim.y) {
        const float *ar = a + (size_t)t * as, *br = b + (size_t)t * bs;
        float *orow = o + (size_t)t * os;
        for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < d; i += (int64_t)gridDim.x * blockDim.x) {
            if (SWIGLU) {
                const float g = ar[i];
                const float silu = __fdiv_rn(g, __fadd_rn(1.0f, expf(-g)));
                orow[i] = __fmul_rn(silu, br[i]);
            } else {
                orow[i] = __fadd_rn(ar[i], br[i]);
            }
        }
    }
}

template <bool SWIGLU>
static copse_status binary(copse_backend_queue *bq, const copse_tensor *a, const copse_tensor *b,
                           const copse_tensor *out, const char *op)
{
    gpu_queue *q = (gpu_queue *)bq->ctx;
    const int64_t n = a->ne[1], d = a->ne[0];
    copse_status st = gpu_enter(q, op);
    if (st != COPSE_OK || n == 0 || d == 0)
        return st;
    int64_t bx = (d + ROW_THREADS - 1) / ROW_THREADS;
    dim3 grid((unsigned)(bx < 64 ? bx : 64), grid_rows(n));
    GPU_LAUNCH(grid, ROW_THREADS, 0, q->stream, k_binary<SWIGLU>)((const float *)(void *)tdev(a), fstride(a),
                                                          (const float *)(void *)tdev(b), fstride(b),
                                                          (float *)(void *)tdev(out), fstride(out), n, d);
    return gpu_launch_check(q, op);
}

copse_status op_add(copse_backend_queue *q, const copse_tensor *a, const copse_tensor *b, const copse_tensor *out)
{
    return binary<false>(q, a, b, out, "add");
}

copse_status op_swiglu(copse_backend_queue *q, const copse_tensor *gate, const copse_tensor *up,
                       const copse_tensor *out)
{
    return binary<true>(q, gate, up, out, "swiglu");
}

/* ---------------------------------------------------------------- kv_store */

static __global__ void k_kv_store(const float *k, size_t ks, const float *v, size_t vs, const int32_t *slots,
                                  int32_t n, int64_t dk, int64_t dv, unsigned char *kp, size_t kps, int k16,
                                  unsigned char *vp, size_t vps, int v16)
{
    for (int64_t t = blockIdx.y; t < n; t += gridDim.y) {
        const size_t slot = (size_t)slots[t];
        for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < dk + dv; i += (int64_t)gridDim.x * blockDim.x) {
            const bool isk = i < dk;
            const int64_t e = isk ? i : i - dk;
            const float x = isk ? k[(size_t)t * ks + e] : v[(size_t)t * vs + e];
            unsigned char *dst = (isk ? kp + slot * kps : vp + slot * vps);
            if (isk ? k16 : v16)
                ((__half *)(void *)dst)[e] = __float2half_rn(x);
            else
                ((float *)(void *)dst)[e] = x;
        }
    }
}

copse_status op_kv_store(copse_backend_queue *bq, const copse_tensor *k, const copse_tensor *v, const int32_t *slots,
                         int32_t n, const copse_tensor *k_pool, const copse_tensor *v_pool)
{
    gpu_queue *q = (gpu_queue *)bq->ctx;
    for (int i = 0; i < 2; i++) {
        const copse_tensor *pl = i ? v_pool : k_pool;
        if (pl->type != COPSE_Q_F32 && pl->type != COPSE_Q_F16)
            return COPSE_EUNSUPPORTED;
    }
    copse_status st = gpu_enter(q, "kv_store");
    if (st != COPSE_OK || n <= 0)
        return st;
    const void *dslots = NULL;
    if ((st = gpu_meta_push(q, META_SLOTS, slots, (size_t)n * sizeof(int32_t), &dslots, "kv_store")) != COPSE_OK)
        return st;
    const int64_t tot = k->ne[0] + v->ne[0];
    dim3 grid((unsigned)((tot + ROW_THREADS - 1) / ROW_THREADS), grid_rows(n));
    GPU_LAUNCH(grid, ROW_THREADS, 0, q->stream, k_kv_store)(
        (const float *)(void *)tdev(k), fstride(k), (const float *)(void *)tdev(v), fstride(v),
        (const int32_t *)dslots, n, k->ne[0], v->ne[0], tdev(k_pool), k_pool->row_stride, k_pool->type == COPSE_Q_F16,
        tdev(v_pool), v_pool->row_stride, v_pool->type == COPSE_Q_F16);
    return gpu_launch_check(q, "kv_store");
}

/* ---------------------------------------------------------------- kv_commit */

struct pool_desc {
    unsigned char *base;
    uint64_t stride; /* bytes between slots */
    uint64_t row_bytes;
};

/* One block per pool; the moves run in list order (a barrier between two),
 * each row copied by the whole block. */
static __global__ void k_kv_commit(const pool_desc *pools, const copse_slot_move *moves, int32_t n_moves)
{
    const pool_desc p = pools[blockIdx.x];
    const bool words = p.row_bytes % 4 == 0 && p.stride % 4 == 0 && ((uintptr_t)p.base & 3) == 0;
    for (int32_t m = 0; m < n_moves; m++) {
        const unsigned char *src = p.base + (uint64_t)moves[m].src * p.stride;
        unsigned char *dst = p.base + (uint64_t)moves[m].dst * p.stride;
        if (words) {
            for (uint64_t i = threadIdx.x; i < p.row_bytes / 4; i += blockDim.x)
                ((uint32_t *)(void *)dst)[i] = ((const uint32_t *)(const void *)src)[i];
        } else {
            for (uint64_t i = threadIdx.x; i < p.row_bytes; i += blockDim.x)
                dst[i] = src[i];
        }
        __syncthreads();
    }
}

copse_status op_kv_commit(copse_backend_queue *bq, const copse_tensor *const *pools, int32_t n_pools,
                          const copse_slot_move *moves, int32_t n_moves)
{
    gpu_queue *q = (gpu_queue *)bq->ctx;
    if (n_moves <= 0 || n_pools <= 0)
        return COPSE_OK;
    copse_status st = gpu_enter(q, "kv_commit");
    if (st != COPSE_OK)
        return st;
    std::vector<pool_desc> pd;
    try {
        pd.resize((size_t)n_pools);
    } catch (...) {
        return COPSE_ENOMEM;
    }
    for (int32_t i = 0; i < n_pools; i++) {
        uint64_t rb = 0;
        if (!copse__qtype_row_bytes(pools[i]->type, (uint64_t)pools[i]->ne[0], &rb))
            return COPSE_EINVAL;
        pd[(size_t)i] = pool_desc{tdev(pools[i]), pools[i]->row_stride, rb};
    }
    const void *dp = NULL, *dm = NULL;
    if ((st = gpu_meta_push(q, META_ANY, pd.data(), pd.size() * sizeof(pool_desc), &dp, "kv_commit")) != COPSE_OK ||
        (st = gpu_meta_push(q, META_ANY, moves, (size_t)n_moves * sizeof *moves, &dm, "kv_commit")) != COPSE_OK)
        return st;
    GPU_LAUNCH((unsigned)n_pools, ROW_THREADS, 0, q->stream, k_kv_commit)((const pool_desc *)dp,
                                                                  (const copse_slot_move *)dm, n_moves);
    return gpu_launch_check(q, "kv_commit");
}

/* ---------------------------------------------------------------- argmax */

/* Lowest index of the largest value, NaNs skipped (all NaN: 0), as the CPU. */
static __global__ void k_argmax(const float *x, size_t xs, int64_t n, int64_t d, int32_t *out)
{
    __shared__ float sv[ROW_THREADS / 32];
    __shared__ int64_t si[ROW_THREADS / 32];
    const int lane = threadIdx.x % COPSE_WARP, w = threadIdx.x / COPSE_WARP, nw = blockDim.x / COPSE_WARP;
    for (int64_t t = blockIdx.x; t < n; t += gridDim.x) {
        const float *xr = x + (size_t)t * xs;
        float bv = -INFINITY;
        long long bi = -1;
        for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
            const float v = xr[i];
            if (v != v)
                continue;
            if (bi < 0 || v > bv) {
                bv = v;
                bi = i;
            }
        }
        warp_argmax(bv, bi);
        if (lane == 0) {
            sv[w] = bv;
            si[w] = bi;
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            for (int k = 1; k < nw; k++)
                if (si[k] >= 0 && (bi < 0 || sv[k] > bv || (sv[k] == bv && si[k] < bi))) {
                    bv = sv[k];
                    bi = si[k];
                }
            out[t] = bi < 0 ? 0 : (int32_t)bi;
        }
        __syncthreads();
    }
}

copse_status op_argmax(copse_backend_queue *bq, const copse_tensor *logits, int32_t *argmax)
{
    gpu_queue *q = (gpu_queue *)bq->ctx;
    const int64_t n = logits->ne[1];
    copse_status st = gpu_enter(q, "argmax");
    if (st == COPSE_OK)
        st = gpu_capture_break(q, "argmax"); /* it waits for its result */
    if (st != COPSE_OK || n == 0)
        return st;
    if ((st = gpu_mirror_reserve(q, sizeof(int32_t), (size_t)n < 256 ? 256 : (size_t)n, (void **)&q->am_dev,
                                 (void **)&q->am_host, &q->am_cap, "argmax")) != COPSE_OK)
        return st;
    GPU_LAUNCH(grid_rows(n), ROW_THREADS, 0, q->stream, k_argmax)((const float *)(void *)tdev(logits), fstride(logits), n,
                                                          logits->ne[0], q->am_dev);
    if ((st = gpu_launch_check(q, "argmax")) != COPSE_OK)
        return st;
    if ((st = gpu_check(q->gd,
                        cudaMemcpyAsync(q->am_host, q->am_dev, (size_t)n * sizeof(int32_t), cudaMemcpyDeviceToHost,
                                        q->stream),
                        "argmax", "cudaMemcpyAsync")) != COPSE_OK ||
        (st = gpu_check(q->gd, cudaStreamSynchronize(q->stream), "argmax", "cudaStreamSynchronize")) != COPSE_OK)
        return st;
    memcpy(argmax, q->am_host, (size_t)n * sizeof(int32_t));
    return COPSE_OK;
}

/* ---------------------------------------------------------------- softmax (MSS probabilities) */

static __global__ void k_softmax(const float *x, size_t xs, float inv_temp, int64_t n, int64_t d, float *out,
                                 size_t os)
{
    __shared__ float sh[ROW_THREADS / 32];
    for (int64_t t = blockIdx.x; t < n; t += gridDim.x) {
        const float *xr = x + (size_t)t * xs;
        float *o = out + (size_t)t * os;
        float m = -INFINITY;
        for (int64_t i = threadIdx.x; i < d; i += blockDim.x)
            m = fmaxf(m, __fmul_rn(xr[i], inv_temp));
        m = block_max(m, sh);
        float s = 0.0f;
        for (int64_t i = threadIdx.x; i < d; i += blockDim.x)
            s += expf(__fsub_rn(__fmul_rn(xr[i], inv_temp), m));
        s = block_sum(s, sh);
        const float inv = s > 0.0f ? 1.0f / s : 0.0f;
        for (int64_t i = threadIdx.x; i < d; i += blockDim.x)
            o[i] = __fmul_rn(expf(__fsub_rn(__fmul_rn(xr[i], inv_temp), m)), inv);
    }
}

copse_status op_softmax(copse_backend_queue *bq, const copse_tensor *logits, float inv_temp, const copse_tensor *out)
{
    gpu_queue *q = (gpu_queue *)bq->ctx;
    const int64_t n = logits->ne[1];
    copse_status st = gpu_enter(q, "softmax");
    if (st != COPSE_OK || n == 0)
        return st;
    GPU_LAUNCH(grid_rows(n), ROW_THREADS, 0, q->stream, k_softmax)((const float *)(void *)tdev(logits), fstride(logits),
                                                           inv_temp, n, logits->ne[0], (float *)(void *)tdev(out),
                                                           fstride(out));
    return gpu_launch_check(q, "softmax");
}

} // namespace COPSE_GPU_NS
