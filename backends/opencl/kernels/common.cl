/*
 * common.cl — helpers every kernel file of the OpenCL backend starts with
 * (the host prepends this text to each file before building it).
 *
 * Arithmetic contract: the kernels follow the CPU backend's canonical orders
 * (backends/cpu/cpu-kernels.h) operation for operation, so that on a device
 * with IEEE single precision and correctly rounded division their results
 * equal the CPU backend's bit for bit, except where a libm function is
 * involved (exp in swiglu and in attention's rescale: computed in double
 * and rounded, which agrees with glibc's expf except in rare last-bit cases).
 * Multiply-add contraction is off: every a * b + c is two roundings.
 *
 * Tensors are passed as a byte pointer to their buffer plus a byte offset
 * and a row stride in bytes (copse_tensor).
 */
#pragma OPENCL FP_CONTRACT OFF
#if defined(cl_khr_fp64)
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
#define COPSE_F64 1
#else
#define COPSE_F64 0
#endif

/* copse_qtype numbers (core/quant.h) */
#define QT_F32 0
#define QT_F16 1
#define QT_Q4_0 2
#define QT_Q4_1 3
#define QT_Q5_0 6
#define QT_Q5_1 7
#define QT_Q8_0 8
#define QT_Q4_K 12
#define QT_Q6_K 14
#define QT_BF16 30

/* A float row of a tensor. */
#define FROW(base, off, stride, r) ((__global float *)((base) + (off) + (ulong)(r) * (stride)))

/* IEEE binary16 bits to float, exact (no half arithmetic needed). */
inline float f16_bits(uint h)
{
    uint sign = (h & 0x8000u) << 16;
    uint e = (h >> 10) & 0x1fu;
    uint m = h & 0x3ffu;
    if (e == 0x1fu)
        return as_float(sign | 0x7f800000u | (m << 13));
    if (e == 0u) {
        float v = (float)m * 0x1p-24f; /* exact: m < 2^10 */
        return sign ? -v : v;
    }
    return as_float(sign | ((e + 112u) << 23) | (m << 13));
}

inline float rd_f16(const __global uchar *p)
{
    return f16_bits((uint)p[0] | ((uint)p[1] << 8));
}

inline uint rd_u32(const __global uchar *p)
{
    return (uint)p[0] | ((uint)p[1] << 8) | ((uint)p[2] << 16) | ((uint)p[3] << 24);
}

inline int i8_of(uchar b)
{
    return (int)(char)b;
}

/* The canonical 8-lane final reduction. */
inline float reduce8(const float *a)
{
    float s0 = a[0] + a[4], s1 = a[1] + a[5], s2 = a[2] + a[6], s3 = a[3] + a[7];
    float u0 = s0 + s2, u1 = s1 + s3;
    return u0 + u1;
}

/* a / b correctly rounded: through double where the device has it (a
 * float quotient rounded once in double and once to float is still the
 * correctly rounded quotient), else the device's division (the host asks
 * for -cl-fp32-correctly-rounded-divide-sqrt where supported). */
inline float div_rn(float a, float b)
{
#if COPSE_F64
    return (float)((double)a / (double)b);
#else
    return a / b;
#endif
}

/* e^x as close to correctly rounded as the device allows. */
inline float exp_rn(float x)
{
#if COPSE_F64
    return (float)exp((double)x);
#else
    return exp(x);
#endif
}

/* The canonical exp of cpu-kernels.h for x <= 0 (Cody-Waite + Cephes). */
inline float exp_neg1(float x)
{
    if (!(x >= -87.0f))
        return 0.0f;
    if (x > 0.0f)
        x = 0.0f;
    float n = rint(x * 1.44269504088896341f);
    float r = x - n * 0.693359375f;
    float c = n * -2.12194440e-4f;
    r = r - c;
    float y = 1.9875691500e-4f;
    y = y * r + 1.3981999507e-3f;
    y = y * r + 8.3334519073e-3f;
    y = y * r + 4.1665795894e-2f;
    y = y * r + 1.6666665459e-1f;
    y = y * r + 5.0000001201e-1f;
    float z = r * r;
    y = y * z;
    y = y + r;
    y = y + 1.0f;
    float p2 = as_float((uint)((int)n + 127) << 23);
    return y * p2;
}

/* Q4_K's 6-bit scale and min of sub-block j. */
inline void k4_scale_min(const __global uchar *s, int j, int *sc, int *mn)
{
    if (j < 4) {
        *sc = s[j] & 63;
        *mn = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
        *mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}
