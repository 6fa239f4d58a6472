/*
 * matmul.cu — quantized weight x f32 activations (also built for HIP).
 *
 * out[t][r] = dot(dequant(w row r), x[t]) for every weight type of
 * dequant.cuh. One kernel serves decode (1 token), verification (tens) and
 * prefill (hundreds):
 *
 *   - a warp owns one weight row, MM_WARPS rows per thread block;
 *   - lane l takes the row's 32-element blocks b = l, l + COPSE_WARP, ...,
 *     dequantizes each in registers once and dots it with up to MM_TOKENS
 *     tokens' activations (float4 loads where the rows are 16-byte
 *     aligned), so the weights are read once per MM_TOKENS tokens;
 *   - the token tiles of a call are spread over grid y.
 *
 * Batch invariance: a (row, token) result is one fixed sequence of float
 * operations whatever n is: per block a 32-term dot in element order
 * (fused multiply-adds), added to the lane's sum in block order, then the
 * lanes combined by the fixed xor-butterfly of warp_sum. Tokens never share
 * a sum and there is no split over k, so a token's output is bit-identical
 * alone or in any batch (on a given GPU and build). The result differs from
 * the CPU reference by float rounding only (the CPU sums 8 lanes in another
 * order, without fused multiply-adds).
 *
 * Not here yet (see docs/PERFORMANCE.md): a tensor-core (mma/WMMA) tile for
 * F16/BF16 weights and large prefill batches, and a repacked weight layout
 * that allows 16-byte weight loads; both need a GPU to measure first.
 */
#include <stdio.h>

#include "dequant.cuh"

namespace COPSE_GPU_NS {

#define MM_WARPS 4  /* rows (warps) per thread block */
#define MM_TOKENS 8 /* tokens per tile */

template <int TYPE, bool VEC>
static __global__ void __launch_bounds__(MM_WARPS *COPSE_WARP)
    k_matmul(const unsigned char *w, size_t wstride, int64_t n_rows, int64_t nb, const float *x, size_t xs,
             int64_t n_tok, float *out, size_t os)
{
    const int lane = threadIdx.x % COPSE_WARP;
    const int64_t r = (int64_t)blockIdx.x * MM_WARPS + threadIdx.x / COPSE_WARP;
    if (r >= n_rows)
        return; /* whole warps leave together: no barrier below */
    const unsigned char *wr = w + (size_t)r * wstride;
    for (int64_t t0 = (int64_t)blockIdx.y * MM_TOKENS; t0 < n_tok; t0 += (int64_t)gridDim.y * MM_TOKENS) {
        const int nt = n_tok - t0 < MM_TOKENS ? (int)(n_tok - t0) : MM_TOKENS;
        float acc[MM_TOKENS];
#pragma unroll
        for (int t = 0; t < MM_TOKENS; t++)
            acc[t] = 0.0f;
        for (int64_t b = lane; b < nb; b += COPSE_WARP) {
            float wv[32];
            dq32<TYPE>(wr, b, wv);
#pragma unroll
            for (int t = 0; t < MM_TOKENS; t++) {
                if (t < nt) {
                const float *xb = x + (size_t)(t0 + t) * xs + (size_t)b * 32;
                float s = 0.0f;
                if (VEC) {
#pragma unroll
                    for (int e = 0; e < 8; e++) {
                        const float4 v = ((const float4 *)(const void *)xb)[e];
                        s = fmaf(wv[4 * e], v.x, s);
                        s = fmaf(wv[4 * e + 1], v.y, s);
                        s = fmaf(wv[4 * e + 2], v.z, s);
                        s = fmaf(wv[4 * e + 3], v.w, s);
                    }
                } else {
#pragma unroll
                    for (int e = 0; e < 32; e++)
                        s = fmaf(wv[e], xb[e], s);
                }
                acc[t] = __fadd_rn(acc[t], s);
                }
            }
        }
#pragma unroll
        for (int t = 0; t < MM_TOKENS; t++) {
            const float v = warp_sum(acc[t]);
            if (lane == 0 && t < nt)
                out[(size_t)(t0 + t) * os + (size_t)r] = v;
        }
    }
}

template <int TYPE>
static void launch(const copse_tensor *w, const copse_tensor *x, const copse_tensor *out, cudaStream_t s)
{
    const int64_t n_rows = w->ne[1], n_tok = x->ne[1], nb = w->ne[0] / 32;
    const int64_t tiles = (n_tok + MM_TOKENS - 1) / MM_TOKENS;
    dim3 grid((unsigned)((n_rows + MM_WARPS - 1) / MM_WARPS), (unsigned)(tiles < 65535 ? tiles : 65535));
    const float *xp = (const float *)(void *)tdev(x);
    const bool vec = ((uintptr_t)xp % 16) == 0 && x->row_stride % 16 == 0;
    const size_t xs = x->row_stride / sizeof(float), os = out->row_stride / sizeof(float);
    if (vec)
        GPU_LAUNCH(grid, MM_WARPS * COPSE_WARP, 0, s, k_matmul<TYPE, true>)(tdev(w), w->row_stride, n_rows, nb, xp, xs,
                                                                    n_tok, (float *)(void *)tdev(out), os);
    else
        GPU_LAUNCH(grid, MM_WARPS * COPSE_WARP, 0, s, k_matmul<TYPE, false>)(tdev(w), w->row_stride, n_rows, nb, xp, xs,
                                                                     n_tok, (float *)(void *)tdev(out), os);
}

copse_status op_matmul(copse_backend_queue *bq, const copse_tensor *w, const copse_tensor *x, const copse_tensor *out)
{
    gpu_queue *q = (gpu_queue *)bq->ctx;
    const int64_t k = w->ne[0];
    if (!gpu_type_supported(w->type) || k % gpu_type_row_unit(w->type) != 0) {
        fprintf(stderr, "copse %s: matmul: weights of type %s with %lld columns are not supported\n", COPSE_GPU_NAME,
                copse__qtype_name(w->type), (long long)k);
        return COPSE_EUNSUPPORTED;
    }
    if (w->type == COPSE_Q_F32 && (((uintptr_t)tdev(w) | w->row_stride) % 4) != 0)
        return COPSE_EUNSUPPORTED; /* F32 weights are read as floats */
    copse_status st = gpu_enter(q, "matmul");
    if (st != COPSE_OK || x->ne[1] == 0 || w->ne[1] == 0)
        return st;
    switch (w->type) {
    case COPSE_Q_F32: launch<COPSE_Q_F32>(w, x, out, q->stream); break;
    case COPSE_Q_F16: launch<COPSE_Q_F16>(w, x, out, q->stream); break;
    case COPSE_Q_BF16: launch<COPSE_Q_BF16>(w, x, out, q->stream); break;
    case COPSE_Q_Q4_0: launch<COPSE_Q_Q4_0>(w, x, out, q->stream); break;
    case COPSE_Q_Q4_1: launch<COPSE_Q_Q4_1>(w, x, out, q->stream); break;
    case COPSE_Q_Q5_0: launch<COPSE_Q_Q5_0>(w, x, out, q->stream); break;
    case COPSE_Q_Q5_1: launch<COPSE_Q_Q5_1>(w, x, out, q->stream); break;
    case COPSE_Q_Q8_0: launch<COPSE_Q_Q8_0>(w, x, out, q->stream); break;
    case COPSE_Q_Q4_K: launch<COPSE_Q_Q4_K>(w, x, out, q->stream); break;
    case COPSE_Q_Q5_K: launch<COPSE_Q_Q5_K>(w, x, out, q->stream); break;
    case COPSE_Q_Q6_K: launch<COPSE_Q_Q6_K>(w, x, out, q->stream); break;
    default: return COPSE_EUNSUPPORTED;
    }
    return gpu_launch_check(q, "matmul");
}

} // namespace COPSE_GPU_NS
