/*
 * matmul.cu — quantized weights x f32 activations (also built for HIP),
 * bit-identical to the CPU backend's default matmul (unless the opt-in
 * F16 / BF16 tensor-core path below is turned on).
 *
 * out[t][r] = dot(w row r, x[t]) follows the canonical orders of
 * backends/cpu/cpu-kernels.h exactly, so every result equals the CPU's Q16
 * queue bit for bit, whatever the kernel, the batch or the GPU:
 *
 *   - Q16 path (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q6_K — the CPU's mm_q16
 *     types): k_quant_q16 quantizes the activations per 32-block to int16
 *     (d = amax / 32767 by a true division, round-half-even; d, s = d * sum
 *     per block) into the queue's device scratch. Then, per (row, token,
 *     block), the exact integer block dot product with the weight quants
 *     (Q6_K: its two 16-element halves), the block term t_b by the
 *     canonical float sequence (separate roundings: rn_mul, rn_add, rn_sub,
 *     never a contracted multiply-add), t_b added to canonical lane b % 8
 *     in block order, and the 8 lanes reduced as copse__cpu_reduce8.
 *   - f32 path (F32, F16, BF16, Q5_K: every other type): the row as floats
 *     (dq32, bit-identical to core/quant.c's dequantizer; F16 / BF16
 *     converted exactly) dotted with the f32 activations in the canonical
 *     f32 order: element i to lane i % 8, rounded multiply then rounded add.
 *
 * Kernels of the Q16 path (integers are exact, so how the integer work is
 * split never matters; only the float sequence per (row, token) does):
 *
 *   k_mm_q16 (CUDA cores; decode and small batches, every batch on HIP):
 *     a 32-lane group owns a weight row (MV_ROWS rows per thread block),
 *     lane L takes blocks b = b0 + L of each 32-block stride (weights read
 *     coalesced, once per MV_TOKENS tokens), unpacks the block's 32 quants
 *     once and forms the integer dots with up to MV_TOKENS tokens' int16
 *     blocks (__dp2a on CUDA), then the block terms. Canonical lane l
 *     (0..7) then adds the terms of blocks b0 + l, + 8, + 16, + 24 in that
 *     order (three shuffles), and the final reduction is three more.
 *   k_mm_mma (int8 tensor cores, CUDA only, from MM_MMA_MIN_TOK tokens):
 *     a thread block of 8 warps takes 16 rows x MMA_TOK tokens; warp l
 *     handles canonical lane l, i.e. blocks b = l, l + 8, ... in order. Per
 *     block the weights are the s8 A operand (16 rows x 32 = one quant
 *     block), the activations q = hi * 256 + lo split into a signed high
 *     byte and an unsigned low byte (two B operands), so
 *     mma(A, B_lo, 256 * mma(A, B_hi, 0)) is the exact block integer
 *     (Q6_K: the same per 16-element half with m16n8k16). Each warp adds
 *     its terms into its lane's sums; the 8 warps' sums meet in shared
 *     memory for the canonical reduction.
 *
 * The choice between the two is only a threshold on the token count
 * (MM_MMA_MIN_TOK); as both compute the canonical result, it never changes
 * an output bit: batch invariance by arithmetic.
 *
 * Opt-in, CUDA only: F16 / BF16 weights on tensor cores (k_mm_hmma). With
 * COPSE_GPU_F16_MMA=1 in the environment (read once per process), F16 and
 * BF16 weights with k a multiple of 16 take k_mm_hmma from MM_HMMA_MIN_TOK
 * tokens on: the activations rounded to f16 (F16 weights) or bf16 (BF16
 * weights, round to nearest even), the weights as stored, products summed
 * in f32 by mma.m16n8k16 (order and rounding of the sums left to the
 * hardware). A thread block of 4 warps takes 64 rows x 64 tokens, weights
 * and rounded activations staged in shared memory 32 columns at a time,
 * each warp a 32 x 32 quarter (2 x 4 mma tiles). What it trades:
 *   - results differ from the CPU's (and from k_mm_f32's) by the rounding
 *     of each activation — relative 2^-11 (f16) or 2^-8 (bf16) per element,
 *     f16 also flushing magnitudes below 2^-24 and overflowing above 65504
 *     — plus a different f32 summation order; tests/conformance holds it to
 *     |a - r| <= sum_j |w_j x_j| u + sum_j |w_j| 2^-25 + 3e-5 sum_j |w_j x_j|
 *     + 1e-6 (u = 2^-11 or 2^-8);
 *   - batch invariance: a token's result depends on whether its batch
 *     reached MM_HMMA_MIN_TOK tokens, so on F16 / BF16 models speculative
 *     greedy output (verification batches of 64 or more) may differ from
 *     plain decoding, and a prompt's logits from its prefill differ from
 *     the same tokens decoded one at a time.
 * When it might win: long prefills of F16 / BF16 models (8B class), where
 * k_mm_f32's CUDA-core dot products are compute bound; decode and small
 * batches never take it. It is unmeasured: it was written without a GPU
 * (checked on the simulator, compiled for sm_80 / sm_90), so it stays off
 * by default until docs/PERFORMANCE.md has numbers for it. HIP keeps
 * k_mm_f32 (the variable is ignored there).
 *
 * Not here yet (see docs/PERFORMANCE.md): staging weights in shared memory
 * with cp.async / TMA for the mma kernels, larger mma tiles for long
 * prefills; all need a GPU to measure.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <atomic>

#include "dequant.cuh"
#include "mma.cuh"

namespace COPSE_GPU_NS {

/* From this many tokens on, CUDA takes the tensor-core kernel k_mm_mma;
 * below it (decode, small verification batches), k_mm_q16. Both give the
 * same bits, so this is a speed knob only. */
#define MM_MMA_MIN_TOK 8

#define MV_ROWS 8     /* k_mm_q16 / k_mm_f32: rows (32-lane groups) per thread block */
#define MV_TOKENS 8   /* k_mm_q16 / k_mm_f32: tokens per tile */
#define MMA_TOK 32    /* k_mm_mma: tokens per tile (4 mma n-tiles of 8) */
#define QUANT_THREADS 256

/* The opt-in F16 / BF16 tensor-core kernel k_mm_hmma (COPSE_GPU_F16_MMA=1,
 * CUDA only): from this many tokens on, for k a multiple of 16. */
#define MM_HMMA_MIN_TOK 64
#define HMMA_ROWS 64  /* k_mm_hmma: rows per tile */
#define HMMA_TOK 64   /* k_mm_hmma: tokens per tile */
#define HMMA_KW 16    /* k_mm_hmma: 32-bit words (2 elements each) of k per staged chunk */

/* Q16 activations in the scratch: qs [n][k] int16, then d [n][nb] and
 * s [n][nb] floats. */
static size_t align256(size_t n)
{
    return (n + 255) / 256 * 256;
}

static bool q16_type(uint32_t t)
{
    switch (t) {
    case COPSE_Q_Q4_0: case COPSE_Q_Q4_1: case COPSE_Q_Q5_0: case COPSE_Q_Q5_1: case COPSE_Q_Q8_0:
    case COPSE_Q_Q4_K: case COPSE_Q_Q6_K:
        return true;
    default:
        return false;
    }
}

#if COPSE_GPU_DEVICE_CODE

/* ---------------------------------------------------------------- Q16 activations */

/* One thread per element: 32 consecutive threads are one (token, block).
 * Threads past the end compute on a clamped block and store nothing, so
 * every lane takes part in the shuffles. */
static __global__ void __launch_bounds__(QUANT_THREADS)
    k_quant_q16(const float *x, size_t xs, int64_t n_tok, int64_t nb, int16_t *qs, float *qd, float *qsum)
{
    const int64_t gid = (int64_t)blockIdx.x * QUANT_THREADS + threadIdx.x;
    const int e = (int)(gid % 32);
    const int64_t total = n_tok * nb;
    int64_t blk = gid / 32;
    const bool ok = blk < total;
    if (!ok)
        blk = total - 1;
    const int64_t t = blk / nb, b = blk % nb;
    const float v = x[(size_t)t * xs + (size_t)b * 32 + (size_t)e];
    float amax = fabsf(v);
    for (int o = 16; o > 0; o /= 2)
        amax = fmaxf(amax, gpu_shfl_xor(amax, o)); /* exact, in any order */
    const float d = __fdiv_rn(amax, 32767.0f);
    int q = 0;
    if (d != 0.0f) {
        float y = __fdiv_rn(v, d);
        y = y < -32767.0f ? -32767.0f : y > 32767.0f ? 32767.0f : y;
        q = (int)rintf(y); /* round half to even */
    }
    int sum = q;
    for (int o = 16; o > 0; o /= 2)
        sum += gpu_shfl_xor(sum, o);
    if (ok) {
        qs[(size_t)t * (size_t)nb * 32 + (size_t)b * 32 + (size_t)e] = (int16_t)q;
        if (e == 0) {
            qd[(size_t)t * (size_t)nb + (size_t)b] = d;
            qsum[(size_t)t * (size_t)nb + (size_t)b] = rn_mul(d, (float)sum);
        }
    }
}

/* ---------------------------------------------------------------- weight blocks */

/* 4 bytes at a 2-byte aligned address, little-endian. */
static __device__ __forceinline__ uint32_t ld_w2(const unsigned char *p)
{
    const uint16_t *h = (const uint16_t *)(const void *)p;
    return (uint32_t)h[0] | (uint32_t)h[1] << 16;
}

/* Per byte v - c, for bytes v, c < 128 (no borrow between bytes). */
static __device__ __forceinline__ uint32_t sub_bytes(uint32_t v, uint32_t c)
{
    return ((v | 0x80808080u) - c) ^ 0x80808080u;
}

/* Bits 0..3 of h as bit 4 of bytes 0..3. */
static __device__ __forceinline__ uint32_t spread4(uint32_t h)
{
    return (h & 1u) << 4 | (h & 2u) << 11 | (h & 4u) << 18 | (h & 8u) << 25;
}

/* Elements 4i .. 4i + 3 (i = 0..7) of weight block b as 4 signed bytes:
 * the integers the canonical isum multiplies (Q4_0 / Q5_0 / Q6_K offsets
 * applied). The weight row must be 2-byte aligned. */
template <int TYPE>
static __device__ __forceinline__ uint32_t wword(const unsigned char *row, int64_t b, int i)
{
    const int i4 = 4 * (i % 4), hs = i < 4 ? 0 : 4;
    if (TYPE == COPSE_Q_Q8_0)
        return ld_w2(row + b * 34 + 2 + 4 * i);
    if (TYPE == COPSE_Q_Q4_0)
        return sub_bytes((ld_w2(row + b * 18 + 2 + i4) >> hs) & 0x0f0f0f0fu, 0x08080808u);
    if (TYPE == COPSE_Q_Q4_1)
        return (ld_w2(row + b * 20 + 4 + i4) >> hs) & 0x0f0f0f0fu;
    if (TYPE == COPSE_Q_Q5_0 || TYPE == COPSE_Q_Q5_1) {
        const bool q51 = TYPE == COPSE_Q_Q5_1;
        const unsigned char *blk = row + b * (q51 ? 24 : 22);
        const uint32_t qh = ld_w2(blk + (q51 ? 4 : 2));
        const uint32_t v = ((ld_w2(blk + (q51 ? 8 : 6) + i4) >> hs) & 0x0f0f0f0fu) | spread4(qh >> (4 * i));
        return q51 ? v : sub_bytes(v, 0x10101010u);
    }
    const int j = (int)(b % 8);
    if (TYPE == COPSE_Q_Q4_K)
        return (ld_w2(row + (b / 8) * 144 + 16 + 32 * (j / 2) + 4 * i) >> (4 * (j % 2))) & 0x0f0f0f0fu;
    /* Q6_K: element e of sub-block j is r = 32 (j % 4) + e of half j / 4 */
    const unsigned char *sb = row + (b / 8) * 210;
    const int h = j / 4, jj = j % 4;
    const uint32_t lo = (ld_w2(sb + 64 * h + 32 * (jj % 2) + 4 * i) >> (4 * (jj / 2))) & 0x0f0f0f0fu;
    const uint32_t hi = (ld_w2(sb + 128 + 32 * h + 4 * i) >> (2 * jj)) & 0x03030303u;
    return sub_bytes(lo | hi << 4, 0x20202020u);
}

/* The float factors of a weight block's canonical term. */
struct wparam {
    float a; /* dw (Q4_K: d * sc; Q6_K: d) */
    float m; /* Q4_1 / Q5_1: mw; Q4_K: dmin * mn */
    int s0, s1; /* Q6_K: the halves' int8 scales */
};

template <int TYPE>
static __device__ __forceinline__ wparam wparams(const unsigned char *row, int64_t b)
{
    wparam p = {0.0f, 0.0f, 0, 0};
    if (TYPE == COPSE_Q_Q8_0 || TYPE == COPSE_Q_Q4_0 || TYPE == COPSE_Q_Q5_0) {
        p.a = ld_fp16(row + b * (TYPE == COPSE_Q_Q8_0 ? 34 : TYPE == COPSE_Q_Q4_0 ? 18 : 22));
    } else if (TYPE == COPSE_Q_Q4_1 || TYPE == COPSE_Q_Q5_1) {
        const unsigned char *blk = row + b * (TYPE == COPSE_Q_Q4_1 ? 20 : 24);
        p.a = ld_fp16(blk);
        p.m = ld_fp16(blk + 2);
    } else if (TYPE == COPSE_Q_Q4_K) {
        const unsigned char *sb = row + (b / 8) * 144;
        int sc, mn;
        k4_scale_min(sb + 4, (int)(b % 8), &sc, &mn);
        p.a = rn_mul(ld_fp16(sb), (float)sc);
        p.m = rn_mul(ld_fp16(sb + 2), (float)mn);
    } else { /* Q6_K */
        const unsigned char *sb = row + (b / 8) * 210;
        const int j = (int)(b % 8);
        p.a = ld_fp16(sb + 208);
        p.s0 = (signed char)sb[192 + 2 * j];
        p.s1 = (signed char)sb[193 + 2 * j];
    }
    return p;
}

/* The canonical block term (cpu-kernels.h) from the block's exact integer
 * sum isum = h0 + h1 (h0, h1: elements 0..15 and 16..31; only Q6_K needs
 * them apart) and the activation block's d, s. */
template <int TYPE>
static __device__ __forceinline__ float bterm(const wparam &w, int h0, int h1, float dx, float sx)
{
    if (TYPE == COPSE_Q_Q6_K) {
        const float f = rn_add((float)(w.s0 * h0), (float)(w.s1 * h1));
        return rn_mul(rn_mul(w.a, dx), f);
    }
    const float t1 = rn_mul(rn_mul(w.a, dx), (float)(h0 + h1));
    if (TYPE == COPSE_Q_Q4_1 || TYPE == COPSE_Q_Q5_1)
        return rn_add(t1, rn_mul(w.m, sx));
    if (TYPE == COPSE_Q_Q4_K)
        return rn_sub(t1, rn_mul(w.m, sx));
    return t1;
}

/* c + x.lo16 * w.byte(2p) + x.hi16 * w.byte(2p + 1): int16 pairs times
 * int8, exact. */
template <int P>
static __device__ __forceinline__ int dot2(uint32_t x, uint32_t w, int c)
{
#if defined(__CUDA_ARCH__)
    return P == 0 ? __dp2a_lo((int)x, (int)w, c) : __dp2a_hi((int)x, (int)w, c);
#else
    const int w0 = (int)(signed char)(unsigned char)(w >> (16 * P)), w1 = (int)(signed char)(unsigned char)(w >> (16 * P + 8));
    return c + (int)(int16_t)(uint16_t)(x & 0xffffu) * w0 + ((int)x >> 16) * w1;
#endif
}

/* ---------------------------------------------------------------- Q16: CUDA cores */

/* Canonical lane l (lanes 0..7 of a 32-lane group) adds the terms of
 * lanes l, l + 8, l + 16, l + 24 in that order; base is the group's first
 * lane in the warp. */
static __device__ __forceinline__ float lane_add4(float acc, float v, int base, int L)
{
    const float v1 = gpu_shfl(v, base + ((L + 8) & 31));
    const float v2 = gpu_shfl(v, base + ((L + 16) & 31));
    const float v3 = gpu_shfl(v, base + ((L + 24) & 31));
    return rn_add(rn_add(rn_add(rn_add(acc, v), v1), v2), v3);
}

/* copse__cpu_reduce8 of lanes 0..7's acc; the result on lane 0. */
static __device__ __forceinline__ float lane_reduce8(float acc, int base, int L)
{
    const float s = rn_add(acc, gpu_shfl(acc, base + ((L + 4) & 31)));
    const float u = rn_add(s, gpu_shfl(s, base + ((L + 2) & 31)));
    return rn_add(u, gpu_shfl(u, base + ((L + 1) & 31)));
}

template <int TYPE, int NT>
static __global__ void __launch_bounds__(MV_ROWS * 32)
    k_mm_q16(const unsigned char *w, size_t wstride, int64_t n_rows, int64_t nb, const int16_t *qs,
             const float *qd, const float *qsum, int64_t n_tok, float *out, size_t os)
{
    const int L = threadIdx.x % 32, base = (int)(threadIdx.x % COPSE_WARP) - L;
    const int64_t r = (int64_t)blockIdx.x * MV_ROWS + threadIdx.x / 32;
    const unsigned char *wr = w + (size_t)(r < n_rows ? r : n_rows - 1) * wstride; /* no early exit: shuffles */
    const size_t kq = (size_t)nb * 32;
    for (int64_t t0 = (int64_t)blockIdx.y * NT; t0 < n_tok; t0 += (int64_t)gridDim.y * NT) {
        const int nt = n_tok - t0 < NT ? (int)(n_tok - t0) : NT;
        float acc[NT];
#pragma unroll
        for (int t = 0; t < NT; t++)
            acc[t] = 0.0f;
        for (int64_t b0 = 0; b0 < nb; b0 += 32) {
            const int64_t b = b0 + L;
            float tb[NT];
#pragma unroll
            for (int t = 0; t < NT; t++)
                tb[t] = -0.0f; /* x + -0 == x: absent terms change nothing */
            if (b < nb) {
                uint32_t wv[8];
#pragma unroll
                for (int i = 0; i < 8; i++)
                    wv[i] = wword<TYPE>(wr, b, i);
                const wparam wp = wparams<TYPE>(wr, b);
#pragma unroll
                for (int t = 0; t < NT; t++) {
                    if (t < nt) {
                        const size_t tok = (size_t)(t0 + t);
                        const uint4 *xq = (const uint4 *)(const void *)(qs + tok * kq + (size_t)b * 32);
                        int h[2] = {0, 0};
#pragma unroll
                        for (int v = 0; v < 4; v++) {
                            const uint4 xv = xq[v]; /* elements 8v .. 8v + 7 */
                            int s = h[v / 2];
                            s = dot2<0>(xv.x, wv[2 * v], s);
                            s = dot2<1>(xv.y, wv[2 * v], s);
                            s = dot2<0>(xv.z, wv[2 * v + 1], s);
                            s = dot2<1>(xv.w, wv[2 * v + 1], s);
                            h[v / 2] = s;
                        }
                        const size_t bi = tok * (size_t)nb + (size_t)b;
                        tb[t] = bterm<TYPE>(wp, h[0], h[1], qd[bi], qsum[bi]);
                    }
                }
            }
#pragma unroll
            for (int t = 0; t < NT; t++)
                acc[t] = lane_add4(acc[t], tb[t], base, L);
        }
#pragma unroll
        for (int t = 0; t < NT; t++) {
            const float v = lane_reduce8(acc[t], base, L);
            if (L == 0 && t < nt && r < n_rows)
                out[(size_t)(t0 + t) * os + (size_t)r] = v;
        }
    }
}

/* ---------------------------------------------------------------- Q16: int8 tensor cores */

#if defined(COPSE_GPU_HAVE_MMA)

/* Elements 4p .. 4p + 3 of an activation block (4 int16, 8-byte aligned)
 * as the signed high bytes and the unsigned low bytes: q = 256 hi + lo. */
static __device__ __forceinline__ void split_hi_lo(const int16_t *p, uint32_t *hi, uint32_t *lo)
{
    const uint2 v = *(const uint2 *)(const void *)p;
    *lo = (v.x & 0xffu) | ((v.x >> 8) & 0xff00u) | ((v.y & 0xffu) << 16) | ((v.y << 8) & 0xff000000u);
    *hi = ((v.x >> 8) & 0xffu) | ((v.x >> 16) & 0xff00u) | (((v.y >> 8) & 0xffu) << 16) | (v.y & 0xff000000u);
}

template <int TYPE>
static __global__ void __launch_bounds__(256)
    k_mm_mma(const unsigned char *w, size_t wstride, int64_t n_rows, int64_t nb, const int16_t *qs,
             const float *qd, const float *qsum, int64_t n_tok, float *out, size_t os)
{
    __shared__ float red[8][16][MMA_TOK + 1];
    const int l = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tq = lane % 4;
    const int64_t r0 = (int64_t)blockIdx.x * 16;
    const int64_t ra = r0 + g < n_rows ? r0 + g : n_rows - 1, rb = r0 + g + 8 < n_rows ? r0 + g + 8 : n_rows - 1;
    const unsigned char *wa = w + (size_t)ra * wstride, *wb = w + (size_t)rb * wstride;
    const size_t kq = (size_t)nb * 32;
    for (int64_t t0 = (int64_t)blockIdx.y * MMA_TOK; t0 < n_tok; t0 += (int64_t)gridDim.y * MMA_TOK) {
        float acc[MMA_TOK / 8][4];
        /* B columns: token t0 + 8 j + g; C columns: t0 + 8 j + 2 tq + (i % 2) (clamped) */
        int64_t tbk[MMA_TOK / 8], tc[MMA_TOK / 8][2];
#pragma unroll
        for (int j = 0; j < MMA_TOK / 8; j++) {
            const int64_t tb = t0 + 8 * j + g, c0 = t0 + 8 * j + 2 * tq;
            tbk[j] = tb < n_tok ? tb : n_tok - 1;
            tc[j][0] = c0 < n_tok ? c0 : n_tok - 1;
            tc[j][1] = c0 + 1 < n_tok ? c0 + 1 : n_tok - 1;
#pragma unroll
            for (int i = 0; i < 4; i++)
                acc[j][i] = 0.0f;
        }
        for (int64_t b = l; b < nb; b += 8) { /* warp l: canonical lane l, blocks in order */
            uint32_t a[4];
            a[0] = wword<TYPE>(wa, b, tq);
            a[1] = wword<TYPE>(wb, b, tq);
            a[2] = wword<TYPE>(wa, b, tq + 4);
            a[3] = wword<TYPE>(wb, b, tq + 4);
            const wparam pa = wparams<TYPE>(wa, b), pb = wparams<TYPE>(wb, b);
#pragma unroll
            for (int j = 0; j < MMA_TOK / 8; j++) {
                const int16_t *xb = qs + (size_t)tbk[j] * kq + (size_t)b * 32;
                uint32_t bh[2], bl[2];
                split_hi_lo(xb + 4 * tq, &bh[0], &bl[0]);
                split_hi_lo(xb + 16 + 4 * tq, &bh[1], &bl[1]);
                int h0[4], h1[4];
                const int zero[4] = {0, 0, 0, 0};
                if (TYPE == COPSE_Q_Q6_K) {
                    int d[4];
                    mma_k16<false>(d, a, bh[0], zero);
#pragma unroll
                    for (int i = 0; i < 4; i++)
                        d[i] *= 256;
                    mma_k16<true>(h0, a, bl[0], d);
                    mma_k16<false>(d, a + 2, bh[1], zero);
#pragma unroll
                    for (int i = 0; i < 4; i++)
                        d[i] *= 256;
                    mma_k16<true>(h1, a + 2, bl[1], d);
                } else {
                    int d[4];
                    mma_k32<false>(d, a, bh, zero);
#pragma unroll
                    for (int i = 0; i < 4; i++)
                        d[i] *= 256;
                    mma_k32<true>(h0, a, bl, d);
#pragma unroll
                    for (int i = 0; i < 4; i++)
                        h1[i] = 0;
                }
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    const size_t bi = (size_t)tc[j][i % 2] * (size_t)nb + (size_t)b;
                    const float t = bterm<TYPE>(i < 2 ? pa : pb, h0[i], h1[i], qd[bi], qsum[bi]);
                    acc[j][i] = rn_add(acc[j][i], t);
                }
            }
        }
        __syncthreads(); /* the previous tile's readers are done with red */
#pragma unroll
        for (int j = 0; j < MMA_TOK / 8; j++)
#pragma unroll
            for (int i = 0; i < 4; i++)
                red[l][g + 8 * (i / 2)][8 * j + 2 * tq + i % 2] = acc[j][i];
        __syncthreads();
        for (int idx = threadIdx.x; idx < 16 * MMA_TOK; idx += 256) {
            const int rr = idx % 16, tt = idx / 16;
            const float s0 = rn_add(red[0][rr][tt], red[4][rr][tt]), s1 = rn_add(red[1][rr][tt], red[5][rr][tt]);
            const float s2 = rn_add(red[2][rr][tt], red[6][rr][tt]), s3 = rn_add(red[3][rr][tt], red[7][rr][tt]);
            const float v = rn_add(rn_add(s0, s2), rn_add(s1, s3));
            if (r0 + rr < n_rows && t0 + tt < n_tok)
                out[(size_t)(t0 + tt) * os + (size_t)(r0 + rr)] = v;
        }
    }
}

#endif /* COPSE_GPU_HAVE_MMA */

/* ---------------------------------------------------------------- f32 path */

/* Weight element i of an F32 / F16 / BF16 row. */
template <int TYPE>
static __device__ __forceinline__ float welem(const unsigned char *row, int64_t i)
{
    if (TYPE == COPSE_Q_F32)
        return ((const float *)(const void *)row)[i];
    if (TYPE == COPSE_Q_F16)
        return ld_fp16(row + 2 * i);
    return bf16_to_f32(ld_u16(row + 2 * i));
}

/* A 32-lane group per row; each 32-element chunk: lane L's product goes to
 * canonical lane L % 8, added in element order by lane_add4. Block types
 * are dequantized by dq32 into shared memory, 32 blocks at a time. */
template <int TYPE>
static __global__ void __launch_bounds__(MV_ROWS * 32)
    k_mm_f32(const unsigned char *w, size_t wstride, int64_t n_rows, int64_t k, const float *x, size_t xs,
             int64_t n_tok, float *out, size_t os)
{
    const bool direct = TYPE == COPSE_Q_F32 || TYPE == COPSE_Q_F16 || TYPE == COPSE_Q_BF16;
    __shared__ float stage[direct ? 1 : MV_ROWS][direct ? 1 : 32][33];
    const int L = threadIdx.x % 32, base = (int)(threadIdx.x % COPSE_WARP) - L, grp = threadIdx.x / 32;
    const int64_t r = (int64_t)blockIdx.x * MV_ROWS + grp;
    const unsigned char *wr = w + (size_t)(r < n_rows ? r : n_rows - 1) * wstride;
    for (int64_t t0 = (int64_t)blockIdx.y * MV_TOKENS; t0 < n_tok; t0 += (int64_t)gridDim.y * MV_TOKENS) {
        const int nt = n_tok - t0 < MV_TOKENS ? (int)(n_tok - t0) : MV_TOKENS;
        float acc[MV_TOKENS];
#pragma unroll
        for (int t = 0; t < MV_TOKENS; t++)
            acc[t] = 0.0f;
        for (int64_t c0 = 0; c0 < k; c0 += 32 * 32) {
            if (!direct) {
                __syncthreads(); /* the previous chunk is read */
                if (c0 / 32 + L < k / 32) {
                    float y[32];
                    dq32<TYPE>(wr, c0 / 32 + L, y);
#pragma unroll
                    for (int e = 0; e < 32; e++)
                        stage[direct ? 0 : grp][direct ? 0 : L][e] = y[e];
                }
                __syncthreads();
            }
            for (int j = 0; j < 32; j++) {
                const int64_t i = c0 + 32 * j + L;
                if (c0 + 32 * j >= k)
                    break; /* the same for the whole group */
                const float wv = i >= k ? 0.0f : direct ? welem<TYPE>(wr, i) : stage[direct ? 0 : grp][direct ? 0 : j][L];
#pragma unroll
                for (int t = 0; t < MV_TOKENS; t++) {
                    float p = -0.0f; /* x + -0 == x */
                    if (t < nt && i < k)
                        p = rn_mul(wv, x[(size_t)(t0 + t) * xs + (size_t)i]);
                    acc[t] = lane_add4(acc[t], p, base, L);
                }
            }
        }
#pragma unroll
        for (int t = 0; t < MV_TOKENS; t++) {
            const float v = lane_reduce8(acc[t], base, L);
            if (L == 0 && t < nt && r < n_rows)
                out[(size_t)(t0 + t) * os + (size_t)r] = v;
        }
    }
}

/* ---------------------------------------------------------------- opt-in: F16 / BF16 tensor cores */

#if defined(COPSE_GPU_HAVE_MMA)

/* f32 -> the 16-bit element of the mma (f16 for F16 weights, bf16 for
 * BF16), rounded to nearest even. */
template <int TYPE>
static __device__ __forceinline__ uint32_t hmma_round(float v)
{
    if (TYPE == COPSE_Q_BF16) {
        const uint32_t u = __float_as_uint(v);
        if ((u & 0x7fffffffu) > 0x7f800000u)
            return (u >> 16) | 0x40u; /* NaN stays a (quiet) NaN */
        return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    }
    return (uint32_t)__half_as_ushort(__float2half_rn(v));
}

/* A thread block of 4 warps takes HMMA_ROWS rows x HMMA_TOK tokens; warp
 * (wm, wn) = (warp / 2, warp % 2) the 32 x 32 quarter at rows 32 wm,
 * tokens 32 wn: 2 m-tiles x 4 n-tiles of m16n8k16. Per HMMA_K chunk of k
 * the block stages the weights (as stored) and the activations (rounded)
 * in shared memory, as 32-bit words of two elements; rows, tokens and
 * columns past the end are zeros. Rows of HMMA_KW + 4 words: the fragment
 * loads (8 rows x 4 words per instruction) hit 32 different banks. */
template <int TYPE>
static __global__ void __launch_bounds__(128)
    k_mm_hmma(const unsigned char *w, size_t wstride, int64_t n_rows, int64_t k, const float *x, size_t xs,
              int64_t n_tok, float *out, size_t os)
{
    __shared__ uint32_t sw[HMMA_ROWS][HMMA_KW + 4];
    __shared__ uint32_t sx[HMMA_TOK][HMMA_KW + 4];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tq = lane % 4;
    const int wm = warp / 2, wn = warp % 2;
    const int64_t r0 = (int64_t)blockIdx.x * HMMA_ROWS;
    for (int64_t t0 = (int64_t)blockIdx.y * HMMA_TOK; t0 < n_tok; t0 += (int64_t)gridDim.y * HMMA_TOK) {
        float acc[2][4][4];
#pragma unroll
        for (int i = 0; i < 2; i++)
#pragma unroll
            for (int j = 0; j < 4; j++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    acc[i][j][e] = 0.0f;
        for (int64_t k0 = 0; k0 < k; k0 += 2 * HMMA_KW) {
            __syncthreads(); /* the previous chunk is read */
            for (int idx = threadIdx.x; idx < HMMA_ROWS * HMMA_KW; idx += 128) {
                const int rr = idx / HMMA_KW, c = idx % HMMA_KW;
                const int64_t col = k0 + 2 * c; /* k is even: col + 1 < k too */
                const int64_t row = r0 + rr, tok = t0 + rr;
                uint32_t wv = 0, xv = 0;
                if (row < n_rows && col < k)
                    wv = ld_w2(w + (size_t)row * wstride + 2 * (size_t)col);
                if (tok < n_tok && col < k) {
                    const float *xp = x + (size_t)tok * xs + (size_t)col;
                    xv = hmma_round<TYPE>(xp[0]) | hmma_round<TYPE>(xp[1]) << 16;
                }
                sw[rr][c] = wv;
                sx[rr][c] = xv;
            }
            __syncthreads();
#pragma unroll
            for (int s = 0; s < HMMA_KW / 8; s++) { /* k16 steps: words 8 s .. 8 s + 7 */
                if (k0 + 16 * s >= k)
                    break; /* the same for the whole block */
                uint32_t a[2][4], b[4][2];
#pragma unroll
                for (int i = 0; i < 2; i++) {
                    const int rw = 32 * wm + 16 * i + g;
                    a[i][0] = sw[rw][8 * s + tq];
                    a[i][1] = sw[rw + 8][8 * s + tq];
                    a[i][2] = sw[rw][8 * s + 4 + tq];
                    a[i][3] = sw[rw + 8][8 * s + 4 + tq];
                }
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    const int tk = 32 * wn + 8 * j + g;
                    b[j][0] = sx[tk][8 * s + tq];
                    b[j][1] = sx[tk][8 * s + 4 + tq];
                }
#pragma unroll
                for (int i = 0; i < 2; i++)
#pragma unroll
                    for (int j = 0; j < 4; j++)
                        hmma_k16<TYPE == COPSE_Q_BF16>(acc[i][j], a[i], b[j], acc[i][j]);
            }
        }
#pragma unroll
        for (int i = 0; i < 2; i++)
#pragma unroll
            for (int j = 0; j < 4; j++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int64_t row = r0 + 32 * wm + 16 * i + g + 8 * (e / 2);
                    const int64_t tok = t0 + 32 * wn + 8 * j + 2 * tq + e % 2;
                    if (row < n_rows && tok < n_tok)
                        out[(size_t)tok * os + (size_t)row] = acc[i][j][e];
                }
    }
}

#endif /* COPSE_GPU_HAVE_MMA */

#endif /* device code */

/* ---------------------------------------------------------------- launches */

static unsigned grid_y(int64_t tiles)
{
    return (unsigned)(tiles < 65535 ? tiles : 65535);
}

template <int TYPE>
static void launch_f32(const copse_tensor *w, const copse_tensor *x, const copse_tensor *out, cudaStream_t s)
{
    const int64_t n_rows = w->ne[1], n_tok = x->ne[1], k = w->ne[0];
    dim3 grid((unsigned)((n_rows + MV_ROWS - 1) / MV_ROWS), grid_y((n_tok + MV_TOKENS - 1) / MV_TOKENS));
    GPU_LAUNCH(grid, MV_ROWS * 32, 0, s, k_mm_f32<TYPE>)(tdev(w), w->row_stride, n_rows, k,
                                                         (const float *)(const void *)tdev(x),
                                                         x->row_stride / sizeof(float), n_tok,
                                                         (float *)(void *)tdev(out), out->row_stride / sizeof(float));
}

#if defined(COPSE_GPU_HAVE_MMA)
/* COPSE_GPU_F16_MMA=1 turns the F16 / BF16 tensor-core path on; read once
 * per process. Anything else (or unset): off, every result canonical. */
static bool hmma_enabled(void)
{
    static const bool on = [] {
        const char *e = getenv("COPSE_GPU_F16_MMA");
        return e && strcmp(e, "1") == 0;
    }();
    return on;
}

/* Set at the first k_mm_hmma launch, which says once on stderr that the
 * path is on (so a run shows that it was taken). */
static std::atomic<bool> hmma_told(false);
#endif

/* The F16 / BF16 weights of w through k_mm_hmma, if it is enabled and the
 * shape qualifies; false: the caller takes k_mm_f32. */
template <int TYPE>
static bool launch_hmma(const copse_tensor *w, const copse_tensor *x, const copse_tensor *out, cudaStream_t s)
{
#if defined(COPSE_GPU_HAVE_MMA)
    const int64_t n_rows = w->ne[1], n_tok = x->ne[1], k = w->ne[0];
    if (!hmma_enabled() || n_tok < MM_HMMA_MIN_TOK || k % 16 != 0)
        return false;
    if (!hmma_told.exchange(true))
        fprintf(stderr, "copse %s: COPSE_GPU_F16_MMA=1: F16/BF16 matmuls of %d or more tokens on tensor cores "
                        "(f16/bf16 activations: not bit-equal to the CPU)\n", COPSE_GPU_NAME, MM_HMMA_MIN_TOK);
    dim3 grid((unsigned)((n_rows + HMMA_ROWS - 1) / HMMA_ROWS), grid_y((n_tok + HMMA_TOK - 1) / HMMA_TOK));
    GPU_LAUNCH(grid, 128, 0, s, k_mm_hmma<TYPE>)(tdev(w), w->row_stride, n_rows, k,
                                                 (const float *)(const void *)tdev(x), x->row_stride / sizeof(float),
                                                 n_tok, (float *)(void *)tdev(out), out->row_stride / sizeof(float));
    return true;
#else
    (void)w, (void)x, (void)out, (void)s;
    return false;
#endif
}

template <int TYPE, int NT>
static void launch_mv(const copse_tensor *w, const int16_t *qs, const float *qd, const float *qsum, int64_t n_tok,
                      const copse_tensor *out, cudaStream_t s)
{
    const int64_t n_rows = w->ne[1], nb = w->ne[0] / 32;
    dim3 grid((unsigned)((n_rows + MV_ROWS - 1) / MV_ROWS), grid_y((n_tok + NT - 1) / NT));
    GPU_LAUNCH(grid, MV_ROWS * 32, 0, s, k_mm_q16<TYPE, NT>)(tdev(w), w->row_stride, n_rows, nb, qs, qd, qsum, n_tok,
                                                             (float *)(void *)tdev(out),
                                                             out->row_stride / sizeof(float));
}

template <int TYPE>
static void launch_q16(const copse_tensor *w, const int16_t *qs, const float *qd, const float *qsum, int64_t n_tok,
                       const copse_tensor *out, cudaStream_t s)
{
#if defined(COPSE_GPU_HAVE_MMA)
    if (n_tok >= MM_MMA_MIN_TOK) {
        const int64_t n_rows = w->ne[1], nb = w->ne[0] / 32;
        dim3 grid((unsigned)((n_rows + 15) / 16), grid_y((n_tok + MMA_TOK - 1) / MMA_TOK));
        GPU_LAUNCH(grid, 256, 0, s, k_mm_mma<TYPE>)(tdev(w), w->row_stride, n_rows, nb, qs, qd, qsum, n_tok,
                                                    (float *)(void *)tdev(out), out->row_stride / sizeof(float));
        return;
    }
#endif
    if (n_tok <= 1)
        launch_mv<TYPE, 1>(w, qs, qd, qsum, n_tok, out, s);
    else if (n_tok <= 2)
        launch_mv<TYPE, 2>(w, qs, qd, qsum, n_tok, out, s);
    else if (n_tok <= 4)
        launch_mv<TYPE, 4>(w, qs, qd, qsum, n_tok, out, s);
    else
        launch_mv<TYPE, 8>(w, qs, qd, qsum, n_tok, out, s);
}

/* Quantize x's tokens to Q16 in the queue's scratch. */
static copse_status quantize(gpu_queue *q, const copse_tensor *x, int16_t **qs, float **qd, float **qsum)
{
    const int64_t k = x->ne[0], n = x->ne[1], nb = k / 32;
    const size_t qbytes = align256((size_t)n * (size_t)k * 2), fbytes = align256((size_t)n * (size_t)nb * 4);
    void *p = NULL;
    copse_status st = gpu_scratch(q, qbytes + 2 * fbytes, &p, "matmul");
    if (st != COPSE_OK)
        return st;
    *qs = (int16_t *)p;
    *qd = (float *)(void *)((unsigned char *)p + qbytes);
    *qsum = (float *)(void *)((unsigned char *)p + qbytes + fbytes);
    if (nb == 0)
        return COPSE_OK; /* no blocks: every sum is +0, as on the CPU */
    const int64_t threads = n * nb * 32;
    const int64_t blocks = (threads + QUANT_THREADS - 1) / QUANT_THREADS;
    if (blocks > 0x7fffffff) {
        fprintf(stderr, "copse %s: matmul: %lld tokens of %lld columns are too many\n", COPSE_GPU_NAME, (long long)n,
                (long long)k);
        return COPSE_EUNSUPPORTED;
    }
    GPU_LAUNCH((unsigned)blocks, QUANT_THREADS, 0, q->stream, k_quant_q16)((const float *)(const void *)tdev(x),
                                                                          x->row_stride / sizeof(float), n, nb, *qs,
                                                                          *qd, *qsum);
    return gpu_launch_check(q, "matmul");
}

copse_status op_matmul(copse_backend_queue *bq, const copse_tensor *w, const copse_tensor *x, const copse_tensor *out)
{
    gpu_queue *q = (gpu_queue *)bq->ctx;
    const int64_t k = w->ne[0];
    const bool direct = w->type == COPSE_Q_F32 || w->type == COPSE_Q_F16 || w->type == COPSE_Q_BF16;
    if (!gpu_type_supported(w->type) || (!direct && k % gpu_type_row_unit(w->type) != 0)) {
        fprintf(stderr, "copse %s: matmul: weights of type %s with %lld columns are not supported\n", COPSE_GPU_NAME,
                copse__qtype_name(w->type), (long long)k);
        return COPSE_EUNSUPPORTED;
    }
    const size_t walign = w->type == COPSE_Q_F32 ? 4 : 2; /* F32 read as floats, the rest as 16-bit words */
    if ((((uintptr_t)tdev(w) | w->row_stride) % walign) != 0 || (((uintptr_t)tdev(x) | x->row_stride) % 4) != 0 ||
        (((uintptr_t)tdev(out) | out->row_stride) % 4) != 0) {
        fprintf(stderr, "copse %s: matmul: misaligned weights, activations or output\n", COPSE_GPU_NAME);
        return COPSE_EUNSUPPORTED;
    }
    copse_status st = gpu_enter(q, "matmul");
    if (st != COPSE_OK || x->ne[1] == 0 || w->ne[1] == 0)
        return st;
    const int64_t n_tok = x->ne[1];
    cudaStream_t s = q->stream;
    if (q16_type(w->type)) {
        int16_t *qs;
        float *qd, *qsum;
        if ((st = quantize(q, x, &qs, &qd, &qsum)) != COPSE_OK)
            return st;
        switch (w->type) {
        case COPSE_Q_Q4_0: launch_q16<COPSE_Q_Q4_0>(w, qs, qd, qsum, n_tok, out, s); break;
        case COPSE_Q_Q4_1: launch_q16<COPSE_Q_Q4_1>(w, qs, qd, qsum, n_tok, out, s); break;
        case COPSE_Q_Q5_0: launch_q16<COPSE_Q_Q5_0>(w, qs, qd, qsum, n_tok, out, s); break;
        case COPSE_Q_Q5_1: launch_q16<COPSE_Q_Q5_1>(w, qs, qd, qsum, n_tok, out, s); break;
        case COPSE_Q_Q8_0: launch_q16<COPSE_Q_Q8_0>(w, qs, qd, qsum, n_tok, out, s); break;
        case COPSE_Q_Q4_K: launch_q16<COPSE_Q_Q4_K>(w, qs, qd, qsum, n_tok, out, s); break;
        default: launch_q16<COPSE_Q_Q6_K>(w, qs, qd, qsum, n_tok, out, s); break;
        }
    } else {
        switch (w->type) {
        case COPSE_Q_F32: launch_f32<COPSE_Q_F32>(w, x, out, s); break;
        case COPSE_Q_F16:
            if (!launch_hmma<COPSE_Q_F16>(w, x, out, s))
                launch_f32<COPSE_Q_F16>(w, x, out, s);
            break;
        case COPSE_Q_BF16:
            if (!launch_hmma<COPSE_Q_BF16>(w, x, out, s))
                launch_f32<COPSE_Q_BF16>(w, x, out, s);
            break;
        case COPSE_Q_Q5_K: launch_f32<COPSE_Q_Q5_K>(w, x, out, s); break;
        default: return COPSE_EUNSUPPORTED;
        }
    }
    return gpu_launch_check(q, "matmul");
}

} // namespace COPSE_GPU_NS
