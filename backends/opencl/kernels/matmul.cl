/*
 * matmul.cl — quantized weight x activations, out[t][r] = dot(w row r, x[t]).
 *
 * Quantized weights (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q6_K) take the CPU
 * backend's default Q16 path: k_quant_q16 quantizes each token's
 * activations per 32-block to int16 (scale d = amax / 32767, s = d * sum),
 * then the mm kernels form the integer block dot products and the
 * canonical per-block terms, summed over 8 lanes (block b into lane b % 8)
 * and reduced in the canonical order (backends/cpu/cpu-kernels.h). F32 and
 * F16 weights take the f32 path: the canonical 8-lane f32 dot. Each (row,
 * token) result is one fixed sequence of float operations, whatever the
 * number of tokens: batch invariance, and bit-equality with the CPU.
 *
 * Two shapes of work: the GEMV kernels (one token) give each work-item one
 * output row; the tiled kernels give each work-item one row and MM_TT
 * tokens, unpacking each weight block once for the whole tile.
 */

/* ---------------------------------------------------------------- Q16 activations */

/* global (nb, n): one work-item per (32-block, token). qs [n][k] int16,
 * xd, xs [n][nb]. */
__kernel void k_quant_q16(__global const uchar *x, ulong x_off, ulong x_stride, int k, int n,
                          __global short *qs, __global float *xd, __global float *xs)
{
    int b = get_global_id(0), t = get_global_id(1), nb = k / 32;
    if (b >= nb || t >= n)
        return;
    const __global float *xb = FROW(x, x_off, x_stride, t) + b * 32;
    float amax = 0.0f;
    for (int j = 0; j < 32; j++) {
        float a = fabs(xb[j]);
        if (a > amax)
            amax = a;
    }
    float d = div_rn(amax, 32767.0f);
    int sum = 0;
    __global short *q = qs + (ulong)t * k + b * 32;
    for (int j = 0; j < 32; j++) {
        int v = 0;
        if (d != 0.0f) {
            float y = div_rn(xb[j], d);
            y = y < -32767.0f ? -32767.0f : y > 32767.0f ? 32767.0f : y;
            v = (int)rint(y);
        }
        q[j] = (short)v;
        sum += v;
    }
    xd[(ulong)t * nb + b] = d;
    xs[(ulong)t * nb + b] = d * (float)sum;
}

/* ---------------------------------------------------------------- block terms */

#define K_Q8_0 0
#define K_Q4_0 1
#define K_Q4_1 2
#define K_Q4_K 3
#define K_Q5_0 4
#define K_Q5_1 5
#define K_Q6_K 6

/* Horizontal sum of 16 ints (exact: integer). */
inline int hsum16(int16 v)
{
    int8 a = v.lo + v.hi;
    int4 b = a.lo + a.hi;
    int2 c = b.lo + b.hi;
    return c.x + c.y;
}

/* Weight block b of a row unpacked to the signed integers the canonical
 * isum multiplies (Q4_0 / Q5_0 offsets applied): elements 0..15 in *w0,
 * 16..31 in *w1. Integer sums do not depend on the order they are formed
 * in, so vector arithmetic keeps the canonical results. */
inline void unpack(const __global uchar *row, int b, int kind, int16 *w0, int16 *w1)
{
    const int16 sh = (int16)(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    switch (kind) {
    case K_Q8_0: {
        const __global uchar *q = row + b * 34 + 2;
        *w0 = convert_int16(as_char16(vload16(0, q)));
        *w1 = convert_int16(as_char16(vload16(1, q)));
        break;
    }
    case K_Q4_0:
    case K_Q4_1: {
        const int off = kind == K_Q4_0 ? 8 : 0;
        int16 q = convert_int16(vload16(0, row + b * (kind == K_Q4_0 ? 18 : 20) + (kind == K_Q4_0 ? 2 : 4)));
        *w0 = (q & 15) - off;
        *w1 = (q >> 4) - off;
        break;
    }
    case K_Q5_0:
    case K_Q5_1: {
        const __global uchar *blk = row + b * (kind == K_Q5_1 ? 24 : 22);
        const __global uchar *qh = blk + (kind == K_Q5_1 ? 4 : 2);
        const int h = (int)rd_u32(qh), off = kind == K_Q5_0 ? 16 : 0;
        int16 q = convert_int16(vload16(0, qh + 4));
        *w0 = ((q & 15) | (((int16)h >> sh) & 1) << 4) - off;
        *w1 = ((q >> 4) | ((int16)(h >> 16) >> sh & 1) << 4) - off;
        break;
    }
    case K_Q4_K: {
        const int j = b % 8;
        const __global uchar *q = row + (b / 8) * 144 + 16 + 32 * (j / 2);
        const int s = 4 * (j % 2);
        *w0 = (convert_int16(vload16(0, q)) >> s) & 15;
        *w1 = (convert_int16(vload16(1, q)) >> s) & 15;
        break;
    }
    default: { /* K_Q6_K: element e of sub-block j = 4h + jj */
        const int j = b % 8, h = j / 4, jj = j % 4;
        const __global uchar *sb = row + (b / 8) * 210;
        const __global uchar *ql = sb + 64 * h + 32 * (jj % 2), *qh = sb + 128 + 32 * h;
        const int sl = 4 * (jj / 2), shh = 2 * jj;
        *w0 = (((convert_int16(vload16(0, ql)) >> sl) & 15) | (((convert_int16(vload16(0, qh)) >> shh) & 3) << 4)) - 32;
        *w1 = (((convert_int16(vload16(1, ql)) >> sl) & 15) | (((convert_int16(vload16(1, qh)) >> shh) & 3) << 4)) - 32;
        break;
    }
    }
}

/* The canonical term of weight block b (unpacked in w0, w1) with one
 * token's activation block (quants xq, scale dx, s = dx * sum). */
inline float block_term(const __global uchar *row, int b, int16 w0, int16 w1, const __global short *xq, float dx,
                        float sx, int kind)
{
    const int h0 = hsum16(w0 * convert_int16(vload16(0, xq)));
    const int h1 = hsum16(w1 * convert_int16(vload16(1, xq)));
    switch (kind) {
    case K_Q8_0:
    case K_Q4_0:
    case K_Q5_0: {
        const __global uchar *blk = row + b * (kind == K_Q8_0 ? 34 : kind == K_Q4_0 ? 18 : 22);
        float dd = rd_f16(blk) * dx;
        return dd * (float)(h0 + h1);
    }
    case K_Q4_1:
    case K_Q5_1: {
        const __global uchar *blk = row + b * (kind == K_Q4_1 ? 20 : 24);
        float dd = rd_f16(blk) * dx;
        float t1 = dd * (float)(h0 + h1);
        float t2 = rd_f16(blk + 2) * sx;
        return t1 + t2;
    }
    case K_Q4_K: {
        const __global uchar *sb = row + (b / 8) * 144;
        int sc, mn;
        k4_scale_min(sb + 4, b % 8, &sc, &mn);
        float ds = rd_f16(sb) * (float)sc, dm = rd_f16(sb + 2) * (float)mn;
        float t1 = (ds * dx) * (float)(h0 + h1);
        float t2 = dm * sx;
        return t1 - t2;
    }
    default: { /* K_Q6_K */
        const __global uchar *sb = row + (b / 8) * 210;
        int j = b % 8;
        int p0 = i8_of(sb[192 + 2 * j]) * h0, p1 = i8_of(sb[193 + 2 * j]) * h1;
        float f = (float)p0 + (float)p1;
        float dd = rd_f16(sb + 208) * dx;
        return dd * f;
    }
    }
}

/* ---------------------------------------------------------------- quantized kernels */

#define MM_TT 8 /* tokens per work-item in the tiled kernels */

/* GEMV: global (n_rows); one token (row 0 of the activations). Blocks go
 * eight at a time so each lane of the canonical 8-lane sum is a fixed
 * variable. */
#define MM_GEMV(name, kind)                                                                                     \
    __kernel void name(__global const uchar *w, ulong w_off, ulong w_stride, int n_rows, int nb,              \
                       __global const short *qs, __global const float *xd, __global const float *xs,          \
                       __global uchar *out, ulong out_off)                                                     \
    {                                                                                                          \
        int r = get_global_id(0);                                                                              \
        if (r >= n_rows)                                                                                       \
            return;                                                                                            \
        const __global uchar *row = w + w_off + (ulong)r * w_stride;                                           \
        float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};                                                               \
        for (int b0 = 0; b0 < nb; b0 += 8) {                                                                   \
            _Pragma("unroll") for (int l = 0; l < 8; l++)                                                      \
            {                                                                                                  \
                const int b = b0 + l;                                                                          \
                if (b < nb) {                                                                                  \
                    int16 w0, w1;                                                                              \
                    unpack(row, b, kind, &w0, &w1);                                                            \
                    float tb = block_term(row, b, w0, w1, qs + b * 32, xd[b], xs[b], kind);                   \
                    acc[l] = acc[l] + tb;                                                                      \
                }                                                                                              \
            }                                                                                                  \
        }                                                                                                      \
        FROW(out, out_off, 0, 0)[r] = reduce8(acc);                                                            \
    }

/* Tiled: global (n_rows, ceil(n / MM_TT)); row r, tokens [MM_TT * g, +MM_TT),
 * each weight block unpacked once for the tile. */
#define MM_TILED(name, kind)                                                                                    \
    __kernel void name(__global const uchar *w, ulong w_off, ulong w_stride, int n_rows, int nb, int n,       \
                       __global const short *qs, __global const float *xd, __global const float *xs,          \
                       __global uchar *out, ulong out_off, ulong out_stride)                                   \
    {                                                                                                          \
        int r = get_global_id(0), t0 = get_global_id(1) * MM_TT;                                               \
        if (r >= n_rows || t0 >= n)                                                                            \
            return;                                                                                            \
        int nt = n - t0 < MM_TT ? n - t0 : MM_TT;                                                              \
        const __global uchar *row = w + w_off + (ulong)r * w_stride;                                           \
        float acc[MM_TT][8];                                                                                   \
        for (int t = 0; t < MM_TT; t++)                                                                        \
            for (int l = 0; l < 8; l++)                                                                        \
                acc[t][l] = 0.0f;                                                                              \
        const int k = nb * 32;                                                                                 \
        for (int b0 = 0; b0 < nb; b0 += 8) {                                                                   \
            _Pragma("unroll") for (int l = 0; l < 8; l++)                                                      \
            {                                                                                                  \
                const int b = b0 + l;                                                                          \
                if (b < nb) {                                                                                  \
                    int16 w0, w1;                                                                              \
                    unpack(row, b, kind, &w0, &w1);                                                            \
                    for (int t = 0; t < nt; t++) {                                                             \
                        ulong tt = (ulong)(t0 + t);                                                            \
                        float tb = block_term(row, b, w0, w1, qs + tt * k + b * 32, xd[tt * nb + b],          \
                                              xs[tt * nb + b], kind);                                          \
                        acc[t][l] = acc[t][l] + tb;                                                            \
                    }                                                                                          \
                }                                                                                              \
            }                                                                                                  \
        }                                                                                                      \
        for (int t = 0; t < nt; t++)                                                                           \
            FROW(out, out_off, out_stride, t0 + t)[r] = reduce8(acc[t]);                                       \
    }

MM_GEMV(k_mm1_q8_0, K_Q8_0)
MM_GEMV(k_mm1_q4_0, K_Q4_0)
MM_GEMV(k_mm1_q4_1, K_Q4_1)
MM_GEMV(k_mm1_q5_0, K_Q5_0)
MM_GEMV(k_mm1_q5_1, K_Q5_1)
MM_GEMV(k_mm1_q4_k, K_Q4_K)
MM_GEMV(k_mm1_q6_k, K_Q6_K)
MM_TILED(k_mmt_q8_0, K_Q8_0)
MM_TILED(k_mmt_q4_0, K_Q4_0)
MM_TILED(k_mmt_q4_1, K_Q4_1)
MM_TILED(k_mmt_q5_0, K_Q5_0)
MM_TILED(k_mmt_q5_1, K_Q5_1)
MM_TILED(k_mmt_q4_k, K_Q4_K)
MM_TILED(k_mmt_q6_k, K_Q6_K)

/* ---------------------------------------------------------------- f32 path */

/* F32 (f16 = 0) or F16 (f16 = 1) weights, f32 activations: the canonical
 * 8-lane f32 dot; global (n_rows, n). */
__kernel void k_mm_f(__global const uchar *w, ulong w_off, ulong w_stride, int n_rows, int k, int n, int f16,
                     __global const uchar *x, ulong x_off, ulong x_stride, __global uchar *out, ulong out_off,
                     ulong out_stride)
{
    int r = get_global_id(0), t = get_global_id(1);
    if (r >= n_rows || t >= n)
        return;
    const __global uchar *row = w + w_off + (ulong)r * w_stride;
    const __global float *xr = FROW(x, x_off, x_stride, t);
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    if (f16) {
        const __global ushort *wh = (const __global ushort *)row;
        for (int i = 0; i < k; i++) {
            float p = f16_bits(wh[i]) * xr[i];
            acc[i % 8] = acc[i % 8] + p;
        }
    } else {
        const __global float *wf = (const __global float *)row;
        for (int i = 0; i < k; i++) {
            float p = wf[i] * xr[i];
            acc[i % 8] = acc[i % 8] + p;
        }
    }
    FROW(out, out_off, out_stride, t)[r] = reduce8(acc);
}
