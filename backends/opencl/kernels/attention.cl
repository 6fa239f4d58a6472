/*
 * attention.cl — kv_store, paged attention with tree masks, kv_commit.
 *
 * Attention follows the CPU backend's order exactly: for one (token, head),
 * the visible keys (the committed prefix in position order, then the new
 * entries the mask or causality allows, in node order) are folded into a
 * running softmax in chunks of ATT_CHUNK: canonical f32 dots, times scale,
 * the chunk maximum, a rescale of the accumulator by e^(m_old - m_new) when
 * the maximum grows, the canonical exp_neg of score - max, the normalizer
 * summed in order, and the values accumulated in order. One work-item per
 * (token, head), sequential like the CPU's (token, head) task: simple and
 * exact; a GPU would want the keys of a chunk spread over a work-group.
 */

/* Store one F32 row per token at its slot of a pool (F32 or F16, rounded to
 * nearest even). global (dim, n); slots at meta[slot_at + t]. */
__kernel void k_kv_store(__global const uchar *src, ulong s_off, ulong s_stride, __global uchar *pool,
                         ulong p_off, ulong p_stride, int p_f16, __global const int *meta, uint slot_at, int dim,
                         int n)
{
    int i = get_global_id(0), t = get_global_id(1);
    if (i >= dim || t >= n)
        return;
    float v = FROW(src, s_off, s_stride, t)[i];
    __global uchar *dst = pool + p_off + (ulong)meta[slot_at + t] * p_stride;
    if (p_f16)
        vstore_half_rte(v, i, (__global half *)dst);
    else
        ((__global float *)dst)[i] = v;
}

#define ATT_CHUNK 64
#define ATT_MAX_HD 256

inline float pool_elem(const __global uchar *row, int f16, int e)
{
    return f16 ? f16_bits(((const __global ushort *)row)[e]) : ((const __global float *)row)[e];
}

/* Fold n keys (cache slots) into the running softmax state (m, l, acc). */
inline void att_fold(const __global float *qv, const __global uchar *kb, ulong k_stride, int k_f16,
                     const __global uchar *vb, ulong v_stride, int v_f16, int hd, float scale, const int *slots, int n,
                     float *m, float *l, float *acc)
{
    float sc[ATT_CHUNK];
    float cm = -INFINITY;
    for (int i = 0; i < n; i++) {
        const __global uchar *kr = kb + (ulong)slots[i] * k_stride;
        float a8[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (int e = 0; e < hd; e++) {
            float p = qv[e] * pool_elem(kr, k_f16, e);
            a8[e % 8] = a8[e % 8] + p;
        }
        float d = reduce8(a8);
        sc[i] = d * scale;
        if (sc[i] > cm)
            cm = sc[i];
    }
    if (cm > *m) {
        if (*l > 0.0f) {
            float alpha = exp_rn(*m - cm);
            for (int e = 0; e < hd; e++)
                acc[e] = acc[e] * alpha;
            *l = *l * alpha;
        }
        *m = cm;
    }
    for (int i = 0; i < n; i++)
        sc[i] = exp_neg1(sc[i] - *m);
    for (int i = 0; i < n; i++)
        *l = *l + sc[i];
    for (int i = 0; i < n; i++) {
        const __global uchar *vr = vb + (ulong)slots[i] * v_stride;
        for (int e = 0; e < hd; e++) {
            float p = sc[i] * pool_elem(vr, v_f16, e);
            acc[e] = acc[e] + p;
        }
    }
}

/* meta (ints): at tok_at, the batch sequence of each token [n_tokens]; at
 * seq_at, per sequence {first, n_new, committed, table_at, mask_at (-1:
 * causal), words}; tables and masks (64-bit words as low, high ints) at the
 * indices given there. One work-item per (token, head): global
 * (n_heads, n_tokens). */
__kernel void k_attention(__global const uchar *qb, ulong q_off, ulong q_stride, __global const uchar *kb, ulong k_off,
                          ulong k_stride, int k_f16, __global const uchar *vb, ulong v_off, ulong v_stride, int v_f16,
                          __global uchar *ob, ulong o_off, ulong o_stride, __global const int *meta, uint tok_at,
                          uint seq_at, int n_heads, int n_kv_heads, int hd, int block_size, float scale, int n_tokens)
{
    const int h = get_global_id(0), t = get_global_id(1);
    if (h >= n_heads || t >= n_tokens)
        return;
    const int s = meta[tok_at + t];
    const __global int *info = meta + seq_at + 6 * s;
    const int first = info[0], n_new = info[1], committed = info[2];
    const __global int *table = meta + info[3];
    const int mask_at = info[4], words = info[5];
    const int j = t - first;
    const int kvh = h / (n_heads / n_kv_heads);
    const __global float *qv = FROW(qb, q_off, q_stride, t) + h * hd;
    const __global uchar *kbase = kb + k_off + (ulong)kvh * hd * (k_f16 ? 2 : 4);
    const __global uchar *vbase = vb + v_off + (ulong)kvh * hd * (v_f16 ? 2 : 4);

    float acc[ATT_MAX_HD];
    for (int e = 0; e < hd; e++)
        acc[e] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    int slots[ATT_CHUNK];
    int n = 0;
    for (int p = 0; p < committed + n_new; p++) {
        if (p >= committed) {
            int kk = p - committed;
            int vis;
            if (mask_at >= 0) {
                uint wd = (uint)meta[mask_at + 2 * (j * words + kk / 64) + (kk % 64 >= 32)];
                vis = (wd >> (kk % 32)) & 1u;
            } else {
                vis = kk <= j;
            }
            if (!vis)
                continue;
        }
        slots[n++] = table[p / block_size] * block_size + p % block_size;
        if (n == ATT_CHUNK) {
            att_fold(qv, kbase, k_stride, k_f16, vbase, v_stride, v_f16, hd, scale, slots, n, &m, &l, acc);
            n = 0;
        }
    }
    if (n)
        att_fold(qv, kbase, k_stride, k_f16, vbase, v_stride, v_f16, hd, scale, slots, n, &m, &l, acc);
    const float inv = l > 0.0f ? div_rn(1.0f, l) : 0.0f;
    __global float *o = FROW(ob, o_off, o_stride, t) + h * hd;
    for (int e = 0; e < hd; e++)
        o[e] = acc[e] * inv;
}

/* Move entries between slots, in list order, for a group of pools in one
 * buffer (pool offsets as (low, high) int pairs at meta[pools_at], moves as
 * (src, dst) pairs at meta[moves_at]). global (row_bytes, n_pools): each
 * work-item owns one byte column of one pool, so the moves' order is kept
 * within it and no two work-items touch the same byte. */
__kernel void k_kv_commit(__global uchar *buf, ulong stride, int row_bytes, __global const int *meta, uint pools_at,
                          int n_pools, uint moves_at, int n_moves)
{
    int e = get_global_id(0), pi = get_global_id(1);
    if (e >= row_bytes || pi >= n_pools)
        return;
    ulong off = (ulong)(uint)meta[pools_at + 2 * pi] | ((ulong)(uint)meta[pools_at + 2 * pi + 1] << 32);
    __global uchar *base = buf + off + e;
    for (int m = 0; m < n_moves; m++) {
        int src = meta[moves_at + 2 * m], dst = meta[moves_at + 2 * m + 1];
        base[(ulong)dst * stride] = base[(ulong)src * stride];
    }
}
