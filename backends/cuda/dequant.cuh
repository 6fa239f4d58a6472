/*
 * dequant.cuh — device dequantization of one 32-element block (internal).
 *
 * dq32<TYPE>(row, b, y) writes elements 32b .. 32b+31 of a weight row to
 * y[0..31]. K-quant rows are 256-element super-blocks; block b is sub-block
 * b % 8 of super-block b / 8. Formulas and rounding follow core/quant.c
 * (the reference) step by step: products and sums are separate roundings
 * (rn_mul, rn_add, rn_sub below, never a contracted multiply-add), so embed
 * is bit-identical to the CPU's dequantization.
 *
 * Supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K
 * (gpu_type_supported). Rows must be a whole number of blocks: 32 elements,
 * 256 for the K-quants.
 */
#ifndef COPSE_GPU_DEQUANT_CUH
#define COPSE_GPU_DEQUANT_CUH

#include "gpu-common.cuh"

namespace COPSE_GPU_NS {

static inline bool gpu_type_supported(uint32_t t)
{
    switch (t) {
    case COPSE_Q_F32: case COPSE_Q_F16: case COPSE_Q_BF16: case COPSE_Q_Q4_0: case COPSE_Q_Q4_1:
    case COPSE_Q_Q5_0: case COPSE_Q_Q5_1: case COPSE_Q_Q8_0: case COPSE_Q_Q4_K: case COPSE_Q_Q5_K:
    case COPSE_Q_Q6_K:
        return true;
    default:
        return false;
    }
}

/* Elements per row that a type needs a multiple of. */
static inline int64_t gpu_type_row_unit(uint32_t t)
{
    return t == COPSE_Q_Q4_K || t == COPSE_Q_Q5_K || t == COPSE_Q_Q6_K ? 256 : 32;
}

#if COPSE_GPU_DEVICE_CODE

/* Rounded float multiply, add, subtract that are never contracted into a
 * fused multiply-add. CUDA's __fmul_rn family guarantees that; HIP's is
 * plain operators in a header, which hipcc's default
 * -ffp-contract=fast-honor-pragmas may fuse, so on HIP the operation is
 * written here with contraction off (the flag stays on the instruction
 * through inlining). */
#if defined(COPSE_GPU_HIP)
static __device__ __forceinline__ float rn_mul(float a, float b)
{
#pragma clang fp contract(off)
    return a * b;
}
static __device__ __forceinline__ float rn_add(float a, float b)
{
#pragma clang fp contract(off)
    return a + b;
}
static __device__ __forceinline__ float rn_sub(float a, float b)
{
#pragma clang fp contract(off)
    return a - b;
}
#else
static __device__ __forceinline__ float rn_mul(float a, float b)
{
    return __fmul_rn(a, b);
}
static __device__ __forceinline__ float rn_add(float a, float b)
{
    return __fadd_rn(a, b);
}
static __device__ __forceinline__ float rn_sub(float a, float b)
{
    return __fsub_rn(a, b);
}
#endif

static __device__ __forceinline__ void k4_scale_min(const unsigned char *s, int j, int *sc, int *mn)
{
    if (j < 4) {
        *sc = s[j] & 0x3f;
        *mn = s[j + 4] & 0x3f;
    } else {
        *sc = (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4);
        *mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

template <int TYPE>
static __device__ __forceinline__ void dq32(const unsigned char *row, int64_t b, float *y)
{
    if (TYPE == COPSE_Q_F32) {
        const float *p = (const float *)(const void *)row + b * 32;
#pragma unroll
        for (int j = 0; j < 32; j++)
            y[j] = p[j];
    } else if (TYPE == COPSE_Q_F16) {
        const unsigned char *p = row + b * 64;
#pragma unroll
        for (int j = 0; j < 32; j++)
            y[j] = ld_fp16(p + 2 * j);
    } else if (TYPE == COPSE_Q_BF16) {
        const unsigned char *p = row + b * 64;
#pragma unroll
        for (int j = 0; j < 32; j++)
            y[j] = bf16_to_f32(ld_u16(p + 2 * j));
    } else if (TYPE == COPSE_Q_Q4_0) {
        const unsigned char *p = row + b * 18;
        const float d = ld_fp16(p);
#pragma unroll
        for (int j = 0; j < 16; j++) {
            y[j] = rn_mul(d, (float)((p[2 + j] & 0x0f) - 8));
            y[j + 16] = rn_mul(d, (float)((p[2 + j] >> 4) - 8));
        }
    } else if (TYPE == COPSE_Q_Q4_1) {
        const unsigned char *p = row + b * 20;
        const float d = ld_fp16(p), m = ld_fp16(p + 2);
#pragma unroll
        for (int j = 0; j < 16; j++) {
            y[j] = rn_add(rn_mul(d, (float)(p[4 + j] & 0x0f)), m);
            y[j + 16] = rn_add(rn_mul(d, (float)(p[4 + j] >> 4)), m);
        }
    } else if (TYPE == COPSE_Q_Q5_0 || TYPE == COPSE_Q_Q5_1) {
        const bool q51 = TYPE == COPSE_Q_Q5_1;
        const unsigned char *p = row + b * (q51 ? 24 : 22);
        const float d = ld_fp16(p), m = q51 ? ld_fp16(p + 2) : 0.0f;
        const uint32_t qh = ld_u32(p + (q51 ? 4 : 2));
        const unsigned char *qs = p + (q51 ? 8 : 6);
#pragma unroll
        for (int j = 0; j < 16; j++) {
            const int lo = (qs[j] & 0x0f) | (int)(((qh >> j) & 1u) << 4);
            const int hi = (qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1u) << 4);
            if (q51) {
                y[j] = rn_add(rn_mul(d, (float)lo), m);
                y[j + 16] = rn_add(rn_mul(d, (float)hi), m);
            } else {
                y[j] = rn_mul(d, (float)(lo - 16));
                y[j + 16] = rn_mul(d, (float)(hi - 16));
            }
        }
    } else if (TYPE == COPSE_Q_Q8_0) {
        const unsigned char *p = row + b * 34;
        const float d = ld_fp16(p);
#pragma unroll
        for (int j = 0; j < 32; j++)
            y[j] = rn_mul(d, (float)(signed char)p[2 + j]);
    } else if (TYPE == COPSE_Q_Q4_K || TYPE == COPSE_Q_Q5_K) {
        const bool q5 = TYPE == COPSE_Q_Q5_K;
        const unsigned char *p = row + (b / 8) * (q5 ? 176 : 144);
        const int j = (int)(b % 8);
        int sc, mn;
        k4_scale_min(p + 4, j, &sc, &mn);
        const float dj = rn_mul(ld_fp16(p), (float)sc), mj = rn_mul(ld_fp16(p + 2), (float)mn);
        const unsigned char *qs = p + (q5 ? 48 : 16) + 32 * (j / 2);
        const int shift = j % 2 ? 4 : 0;
#pragma unroll
        for (int l = 0; l < 32; l++) {
            int q = (qs[l] >> shift) & 0x0f;
            if (q5)
                q |= ((p[16 + l] >> j) & 1) << 4;
            y[l] = rn_sub(rn_mul(dj, (float)q), mj);
        }
    } else if (TYPE == COPSE_Q_Q6_K) {
        const unsigned char *p = row + (b / 8) * 210;
        const int j = (int)(b % 8), h = j / 4;
        const float d = ld_fp16(p + 208);
        const float ds0 = rn_mul(d, (float)(signed char)p[192 + 2 * j]);
        const float ds1 = rn_mul(d, (float)(signed char)p[193 + 2 * j]);
#pragma unroll
        for (int e = 0; e < 32; e++) {
            const int r = 32 * (j % 4) + e;
            const int low4 = (p[64 * h + r % 64] >> (r / 64 ? 4 : 0)) & 0x0f;
            const int high2 = (p[128 + 32 * h + e] >> (2 * (j % 4))) & 3;
            y[e] = rn_mul(e < 16 ? ds0 : ds1, (float)((low4 | (high2 << 4)) - 32));
        }
    }
}

#endif /* device code */

} // namespace COPSE_GPU_NS

#endif /* COPSE_GPU_DEQUANT_CUH */
