/*
 * elementwise.cl — embed (row gather + dequantization), rms_norm, rope, add,
 * swiglu, and the verification ops argmax and softmax.
 *
 * Every output element is computed by one work-item in the CPU reference's
 * order (rms_norm: one work-item per row, sum of squares in double in
 * element order where the device has double), so results do not depend on
 * the batch (batch invariance).
 */

/* Element i of a row of a (possibly quantized) tensor, exactly as
 * copse__dequantize_row computes it. */
inline float deq(uint type, const __global uchar *row, int i)
{
    switch (type) {
    case QT_F32: return as_float(rd_u32(row + 4 * i));
    case QT_F16: return rd_f16(row + 2 * i);
    case QT_BF16: return as_float(((uint)row[2 * i] | ((uint)row[2 * i + 1] << 8)) << 16);
    case QT_Q4_0: {
        const __global uchar *b = row + (i / 32) * 18;
        int j = i % 32, q = j < 16 ? b[2 + j] & 15 : b[2 + j - 16] >> 4;
        return rd_f16(b) * (float)(q - 8);
    }
    case QT_Q4_1: {
        const __global uchar *b = row + (i / 32) * 20;
        int j = i % 32, q = j < 16 ? b[4 + j] & 15 : b[4 + j - 16] >> 4;
        float p = rd_f16(b) * (float)q;
        return p + rd_f16(b + 2);
    }
    case QT_Q5_0:
    case QT_Q5_1: {
        const int one = type == QT_Q5_1;
        const __global uchar *b = row + (i / 32) * (one ? 24 : 22);
        uint qh = rd_u32(b + (one ? 4 : 2));
        const __global uchar *qs = b + (one ? 8 : 6);
        int j = i % 32;
        int q = (j < 16 ? qs[j] & 15 : qs[j - 16] >> 4) | (int)((qh >> j) & 1u) << 4;
        if (!one)
            return rd_f16(b) * (float)(q - 16);
        float p = rd_f16(b) * (float)q;
        return p + rd_f16(b + 2);
    }
    case QT_Q8_0: {
        const __global uchar *b = row + (i / 32) * 34;
        return rd_f16(b) * (float)i8_of(b[2 + i % 32]);
    }
    case QT_Q4_K: {
        const __global uchar *b = row + (i / 256) * 144;
        int ii = i % 256, j = ii / 32, l = ii % 32, sc, mn;
        k4_scale_min(b + 4, j, &sc, &mn);
        float dj = rd_f16(b) * (float)sc;
        float mj = rd_f16(b + 2) * (float)mn;
        int q = (b[16 + 32 * (j / 2) + l] >> (j % 2 ? 4 : 0)) & 15;
        float p = dj * (float)q;
        return p - mj;
    }
    default: { /* QT_Q6_K */
        const __global uchar *b = row + (i / 256) * 210;
        int ii = i % 256, h = ii / 128, r = ii % 128, l = ii % 32;
        int low4 = (b[64 * h + r % 64] >> (r / 64 ? 4 : 0)) & 15;
        int high2 = (b[128 + 32 * h + l] >> (2 * (r / 32))) & 3;
        int q = (low4 | (high2 << 4)) - 32;
        float ds = rd_f16(b + 208) * (float)i8_of(b[192 + ii / 16]);
        return ds * (float)q;
    }
    }
}

/* out[t][i] = dequant(table row ids[meta_at + t])[i]; global (d, n). */
__kernel void k_embed(__global const uchar *tab, ulong tab_off, ulong tab_stride, uint type,
                      __global const int *meta, uint meta_at, __global uchar *out, ulong out_off,
                      ulong out_stride, int d, int n)
{
    int i = get_global_id(0), t = get_global_id(1);
    if (i >= d || t >= n)
        return;
    const __global uchar *row = tab + tab_off + (ulong)meta[meta_at + t] * tab_stride;
    FROW(out, out_off, out_stride, t)[i] = deq(type, row, i);
}

/* One work-item per row; global (n). */
__kernel void k_rms_norm(__global const uchar *x, ulong x_off, ulong x_stride, __global const uchar *w,
                         ulong w_off, float eps, __global uchar *out, ulong out_off, ulong out_stride, int d,
                         int n)
{
    int t = get_global_id(0);
    if (t >= n)
        return;
    const __global float *xr = FROW(x, x_off, x_stride, t);
    const __global float *wr = (const __global float *)(w + w_off);
    __global float *y = FROW(out, out_off, out_stride, t);
#if COPSE_F64
    double ss = 0.0;
    for (int i = 0; i < d; i++)
        ss += (double)xr[i] * (double)xr[i];
    float scale = (float)(1.0 / sqrt(ss / (double)d + (double)eps));
#else
    float ss = 0.0f;
    for (int i = 0; i < d; i++)
        ss += xr[i] * xr[i];
    float scale = 1.0f / sqrt(ss / (float)d + eps);
#endif
    for (int i = 0; i < d; i++) {
        float v = xr[i] * scale;
        y[i] = v * wr[i];
    }
}

/* In place; cos/sin per (token, pair) from the host (meta floats at
 * cs_at: [n][half] cos then [n][half] sin). global (n_heads * half, n). */
__kernel void k_rope(__global uchar *x, ulong x_off, ulong x_stride, __global const float *meta, uint cs_at,
                     int n_heads, int head_dim, int neox, int n)
{
    int g = get_global_id(0), t = get_global_id(1);
    int hh = head_dim / 2;
    if (g >= n_heads * hh || t >= n)
        return;
    int h = g / hh, i = g % hh;
    float c = meta[cs_at + t * hh + i], s = meta[cs_at + n * hh + t * hh + i];
    __global float *v = FROW(x, x_off, x_stride, t) + h * head_dim;
    int i0 = neox ? i : 2 * i, i1 = neox ? i + hh : 2 * i + 1;
    float x0 = v[i0], x1 = v[i1];
    float a0 = x0 * c, b0 = x1 * s;
    float a1 = x0 * s, b1 = x1 * c;
    v[i0] = a0 - b0;
    v[i1] = a1 + b1;
}

/* op 0: out = a + b; op 1: out = silu(a) * b. global (d, n). */
__kernel void k_binary(__global const uchar *a, ulong a_off, ulong a_stride, __global const uchar *b, ulong b_off,
                       ulong b_stride, __global uchar *out, ulong out_off, ulong out_stride, int d, int n, int op)
{
    int i = get_global_id(0), t = get_global_id(1);
    if (i >= d || t >= n)
        return;
    float x = FROW(a, a_off, a_stride, t)[i], y = FROW(b, b_off, b_stride, t)[i];
    float r;
    if (op == 0) {
        r = x + y;
    } else {
        float e = exp_rn(-x);
        float silu = div_rn(x, 1.0f + e);
        r = silu * y;
    }
    FROW(out, out_off, out_stride, t)[i] = r;
}

#define RED_WG 64

/* Lowest index of the largest value per row, NaNs skipped (all NaN: 0).
 * One work-group of RED_WG per row; the result is exact whatever the
 * reduction order. */
__kernel __attribute__((reqd_work_group_size(RED_WG, 1, 1))) void
k_argmax(__global const uchar *x, ulong x_off, ulong x_stride, int nv, __global int *out)
{
    __local float lv[RED_WG];
    __local int li[RED_WG];
    int t = get_group_id(0), lid = get_local_id(0);
    const __global float *r = FROW(x, x_off, x_stride, t);
    float bv = 0.0f;
    int bi = -1;
    for (int i = lid; i < nv; i += RED_WG) {
        float v = r[i];
        if (v != v)
            continue;
        if (bi < 0 || v > bv) {
            bv = v;
            bi = i;
        }
    }
    lv[lid] = bv;
    li[lid] = bi;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = RED_WG / 2; s > 0; s >>= 1) {
        if (lid < s) {
            int oi = li[lid + s];
            float ov = lv[lid + s];
            if (oi >= 0 && (li[lid] < 0 || ov > lv[lid] || (ov == lv[lid] && oi < li[lid]))) {
                lv[lid] = ov;
                li[lid] = oi;
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid == 0)
        out[t] = li[0] < 0 ? 0 : li[0];
}

/* out[t][i] = exp(l[i] * inv_temp - m) / sum_j exp(l[j] * inv_temp - m).
 * One work-group of RED_WG per row; partial sums in double where the device
 * has it. out may alias x (each element is read before it is written, by
 * the same work-item). */
__kernel __attribute__((reqd_work_group_size(RED_WG, 1, 1))) void
k_softmax(__global const uchar *x, ulong x_off, ulong x_stride, float inv_temp, __global uchar *out, ulong out_off,
          ulong out_stride, int nv)
{
#if COPSE_F64
    typedef double acc_t;
#else
    typedef float acc_t;
#endif
    __local float lm[RED_WG];
    __local acc_t ls[RED_WG];
    int t = get_group_id(0), lid = get_local_id(0);
    const __global float *r = FROW(x, x_off, x_stride, t);
    __global float *o = FROW(out, out_off, out_stride, t);
    float m = -INFINITY;
    for (int i = lid; i < nv; i += RED_WG) {
        float y = r[i] * inv_temp;
        m = y > m ? y : m;
    }
    lm[lid] = m;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = RED_WG / 2; s > 0; s >>= 1) {
        if (lid < s && lm[lid + s] > lm[lid])
            lm[lid] = lm[lid + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    m = lm[0];
    acc_t sum = 0;
    for (int i = lid; i < nv; i += RED_WG) {
        float y = r[i] * inv_temp;
        float e = exp_rn(y - m);
        o[i] = e;
        sum += (acc_t)e;
    }
    ls[lid] = sum;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = RED_WG / 2; s > 0; s >>= 1) {
        if (lid < s)
            ls[lid] += ls[lid + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    acc_t total = ls[0];
    for (int i = lid; i < nv; i += RED_WG)
        o[i] = (float)((acc_t)o[i] / total);
}
