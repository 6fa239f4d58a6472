/*
 * mma.cuh — one warp's int8 tensor-core products (internal; CUDA and the
 * CPU simulator, not HIP).
 *
 *   mma_k32<BU8>(d, a, b, c): D = A * B + C, A 16 x 32 signed bytes (row
 *     major), B 32 x 8 bytes (column major; signed, or unsigned if BU8), C
 *     and D 16 x 8 int32: PTX mma.sync.aligned.m16n8k32.row.col.s32.s8.{s8,
 *     u8}.s32.
 *   mma_k16<BU8>(d, a, b, c): the same with k = 16 (m16n8k16): two A
 *     registers, one B register.
 *
 * Every lane of the warp calls them together (converged). Fragments, with
 * g = lane / 4 and t = lane % 4 (PTX ISA, "Matrix fragments for mma.m16n8k32"
 * and ".m16n8k16" with .s8/.u8); a register packs 4 bytes, byte p the
 * lower-addressed element p:
 *   A (k32): a[r] = A[g + 8 * (r % 2)][4 * t + 16 * (r / 2) + p], r = 0..3
 *   A (k16): a[r] = A[g + 8 * r][4 * t + p], r = 0..1
 *   B (k32): b[r] = B[4 * t + 16 * r + p][g], r = 0..1
 *   B (k16): b    = B[4 * t + p][g]
 *   C, D:    c[i] = C[g + 8 * (i / 2)][2 * t + i % 2], i = 0..3
 * So the k32 product is the sum of the k16 products of (a[0], a[1], b[0])
 * and (a[2], a[3], b[1]).
 *
 * And one floating-point shape (the opt-in F16 / BF16 path of matmul.cu):
 *   hmma_k16<BF16>(d, a, b, c): D = A * B + C, A 16 x 16 f16 (bf16 if
 *     BF16, row major), B 16 x 8 (column major), C and D 16 x 8 f32: PTX
 *     mma.sync.aligned.m16n8k16.row.col.f32.{f16.f16, bf16.bf16}.f32.
 * Fragments (PTX ISA, "Matrix fragments for mma.m16n8k16 with floating
 * point type"); a register packs 2 elements, the lower-addressed one
 * (lower k) in bits 0..15:
 *   A: a[r] = A[g + 8 * (r % 2)][2 * t + 8 * (r / 2) + p], r = 0..3, p = 0..1
 *   B: b[r] = B[2 * t + 8 * r + p][g], r = 0..1
 *   C, D: as above.
 * Products of two f16 (or two bf16) are exact in f32; the order and the
 * rounding of the f32 sums inside the instruction are not specified, so
 * the emulation (products added in k order, each sum rounded) agrees with
 * the hardware only to f32 accumulation error — which is why its caller is
 * opt-in and tested against a tolerance.
 *
 * Integer products and sums are exact (no saturation; callers keep them
 * far inside int32). On sm_80 and up the PTX instruction runs (IMMA in
 * SASS); elsewhere — the CPU simulator (COPSE_GPU_SIM), which cannot run
 * inline PTX, and device passes for older architectures — an emulation
 * written only with gpu_shfl gathers the fragments of the other lanes by
 * the layout above and computes the lane's own D elements, so running a
 * kernel in the simulator tests its fragment indexing.
 */
#ifndef COPSE_GPU_MMA_CUH
#define COPSE_GPU_MMA_CUH

#include "dequant.cuh" /* rn_add, rn_mul */
#include "gpu-common.cuh"

#if !defined(COPSE_GPU_HIP)
#define COPSE_GPU_HAVE_MMA 1
#endif

#if COPSE_GPU_DEVICE_CODE && defined(COPSE_GPU_HAVE_MMA)

namespace COPSE_GPU_NS {

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define COPSE_MMA_PTX 1
#endif

#if !defined(COPSE_MMA_PTX)
/* Dot product of 4 signed bytes of a with 4 bytes of b (signed or not). */
template <bool BU8>
static __device__ __forceinline__ int mma_dot4(uint32_t a, uint32_t b)
{
    int s = 0;
    for (int p = 0; p < 4; p++) {
        const int x = (int)(signed char)(unsigned char)(a >> (8 * p));
        const int y = BU8 ? (int)(unsigned char)(b >> (8 * p)) : (int)(signed char)(unsigned char)(b >> (8 * p));
        s += x * y;
    }
    return s;
}

/* The emulation of both shapes: KH k16 halves (1 or 2); a[r + 2h], b[h]
 * for half h. */
template <bool BU8, int KH>
static __device__ __forceinline__ void mma_emulate(int d[4], const uint32_t *a, const uint32_t *b, const int c[4])
{
    static_assert(COPSE_WARP == 32, "the mma fragments are defined for 32-lane warps");
    const int lane = (int)(threadIdx.x % 32), g = lane / 4, t = lane % 4;
    int acc[4] = {c[0], c[1], c[2], c[3]};
    for (int h = 0; h < KH; h++) {
        for (int tt = 0; tt < 4; tt++) {
            /* A rows g, g + 8, columns 4 tt .. 4 tt + 3 of half h: lane 4 g + tt */
            const uint32_t ar0 = gpu_shfl(a[2 * h], 4 * g + tt), ar1 = gpu_shfl(a[2 * h + 1], 4 * g + tt);
            /* B columns 2 t and 2 t + 1, the same k: lanes 4 (2t) + tt, 4 (2t + 1) + tt */
            const uint32_t b0 = gpu_shfl(b[h], 8 * t + tt), b1 = gpu_shfl(b[h], 8 * t + 4 + tt);
            acc[0] += mma_dot4<BU8>(ar0, b0);
            acc[1] += mma_dot4<BU8>(ar0, b1);
            acc[2] += mma_dot4<BU8>(ar1, b0);
            acc[3] += mma_dot4<BU8>(ar1, b1);
        }
    }
    for (int i = 0; i < 4; i++)
        d[i] = acc[i];
}

/* Element p (0 or 1) of a packed f16 / bf16 pair as a float (exact). */
template <bool BF16>
static __device__ __forceinline__ float hmma_elem(uint32_t v, int p)
{
    const uint32_t h = (v >> (16 * p)) & 0xffffu;
    if (BF16)
        return __uint_as_float(h << 16);
    return __half2float(__ushort_as_half((unsigned short)h));
}

/* The m16n8k16 floating-point product: rows g and g + 8 of A (lanes 4 g +
 * tt hold columns 2 tt, 2 tt + 1 and 8 + 2 tt, 9 + 2 tt) and columns 2 t,
 * 2 t + 1 of B (lanes 4 n + tt hold rows 2 tt, 2 tt + 1, 8 + 2 tt, 9 + 2 tt
 * of column n) gathered by shuffles, then dotted in k order. */
template <bool BF16>
static __device__ __forceinline__ void hmma_emulate(float d[4], const uint32_t a[4], const uint32_t b[2],
                                                    const float c[4])
{
    static_assert(COPSE_WARP == 32, "the mma fragments are defined for 32-lane warps");
    const int lane = (int)(threadIdx.x % 32), g = lane / 4, t = lane % 4;
    float ar[2][16], bc[2][16];
    for (int tt = 0; tt < 4; tt++) {
        for (int r = 0; r < 4; r++) {
            const uint32_t v = gpu_shfl(a[r], 4 * g + tt); /* row g + 8 (r % 2), k 2 tt + 8 (r / 2) + p */
            for (int p = 0; p < 2; p++)
                ar[r % 2][2 * tt + 8 * (r / 2) + p] = hmma_elem<BF16>(v, p);
        }
        for (int n = 0; n < 2; n++) {
            for (int r = 0; r < 2; r++) {
                const uint32_t v = gpu_shfl(b[r], 4 * (2 * t + n) + tt); /* column 2 t + n, k 2 tt + 8 r + p */
                for (int p = 0; p < 2; p++)
                    bc[n][2 * tt + 8 * r + p] = hmma_elem<BF16>(v, p);
            }
        }
    }
    for (int i = 0; i < 4; i++) {
        float s = c[i];
        for (int kk = 0; kk < 16; kk++)
            s = rn_add(s, rn_mul(ar[i / 2][kk], bc[i % 2][kk])); /* the product is exact */
        d[i] = s;
    }
}
#endif

template <bool BF16>
static __device__ __forceinline__ void hmma_k16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4])
{
#if defined(COPSE_MMA_PTX)
    if (BF16)
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                     "{%10,%11,%12,%13};\n"
                     : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]),
                       "f"(c[2]), "f"(c[3]));
    else
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                     "{%10,%11,%12,%13};\n"
                     : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]),
                       "f"(c[2]), "f"(c[3]));
#else
    hmma_emulate<BF16>(d, a, b, c);
#endif
}

template <bool BU8>
static __device__ __forceinline__ void mma_k32(int d[4], const uint32_t a[4], const uint32_t b[2], const int c[4])
{
#if defined(COPSE_MMA_PTX)
    if (BU8)
        asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.u8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                     "{%10,%11,%12,%13};\n"
                     : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(c[0]), "r"(c[1]),
                       "r"(c[2]), "r"(c[3]));
    else
        asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                     "{%10,%11,%12,%13};\n"
                     : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(c[0]), "r"(c[1]),
                       "r"(c[2]), "r"(c[3]));
#else
    /* half h of k32 is (a[2h], a[2h + 1]) in the k16 numbering */
    const uint32_t ak[4] = {a[0], a[1], a[2], a[3]};
    mma_emulate<BU8, 2>(d, ak, b, c);
#endif
}

template <bool BU8>
static __device__ __forceinline__ void mma_k16(int d[4], const uint32_t a[2], uint32_t b, const int c[4])
{
#if defined(COPSE_MMA_PTX)
    if (BU8)
        asm volatile("mma.sync.aligned.m16n8k16.row.col.s32.s8.u8.s32 {%0,%1,%2,%3}, {%4,%5}, {%6}, "
                     "{%7,%8,%9,%10};\n"
                     : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(b), "r"(c[0]), "r"(c[1]), "r"(c[2]), "r"(c[3]));
    else
        asm volatile("mma.sync.aligned.m16n8k16.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5}, {%6}, "
                     "{%7,%8,%9,%10};\n"
                     : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(b), "r"(c[0]), "r"(c[1]), "r"(c[2]), "r"(c[3]));
#else
    const uint32_t bk[1] = {b};
    mma_emulate<BU8, 1>(d, a, bk, c);
#endif
}

} // namespace COPSE_GPU_NS

#endif /* device code with mma */

#endif /* COPSE_GPU_MMA_CUH */
