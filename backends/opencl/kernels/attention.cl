/*
 * attention.cl — kv_store, paged attention with tree masks, kv_commit.
 *
 * Attention follows the CPU backend's order exactly: for one (token, head),
 * the visible keys (the committed prefix in position order, then the new
 * entries the mask or causality allows, in node order) are folded into a
 * running softmax in chunks of ATT_CHUNK: canonical f32 dots, times scale,
 * the chunk maximum, a rescale of the accumulator by e^(m_old - m_new) when
 * the maximum grows, the canonical exp_neg of score - max, the normalizer
 * summed in order, and the values accumulated in order. One work-group of
 * ATT_CHUNK work-items per (token, head): item i scores key i of a chunk;
 * item e accumulates output elements e, e + ATT_CHUNK, ...
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
#define ATT_MAX_E 8 /* head_dim <= ATT_CHUNK * ATT_MAX_E */

inline float pool_elem(const __global uchar *row, int f16, int e)
{
    return f16 ? f16_bits(((const __global ushort *)row)[e]) : ((const __global float *)row)[e];
}

/* meta (ints): at tok_at, the batch sequence of each token [n_tokens]; at
 * seq_at, per sequence {first, n_new, committed, table_at, mask_at (-1:
 * causal), words}; tables and masks (64-bit words as low, high ints) at the
 * indices given there. global (n_tokens * n_heads * ATT_CHUNK). */
__kernel __attribute__((reqd_work_group_size(ATT_CHUNK, 1, 1))) void
k_attention(__global const uchar *qb, ulong q_off, ulong q_stride, __global const uchar *kb, ulong k_off,
            ulong k_stride, int k_f16, __global const uchar *vb, ulong v_off, ulong v_stride, int v_f16,
            __global uchar *ob, ulong o_off, ulong o_stride, __global const int *meta, uint tok_at, uint seq_at,
            int n_heads, int n_kv_heads, int hd, int block_size, float scale)
{
    __local int slots[ATT_CHUNK];
    __local float sc[ATT_CHUNK];
    __local int l_n, l_rescale;
    __local float l_m, l_l, l_alpha;
    __local int l_p; /* cursor over positions [0, committed + n_new) */

    const int g = get_group_id(0), lid = get_local_id(0);
    const int t = g / n_heads, h = g % n_heads;
    const int s = meta[tok_at + t];
    const __global int *info = meta + seq_at + 6 * s;
    const int first = info[0], n_new = info[1], committed = info[2];
    const __global int *table = meta + info[3];
    const int mask_at = info[4], words = info[5];
    const int j = t - first;
    const int kvh = h / (n_heads / n_kv_heads);
    const __global float *qv = FROW(qb, q_off, q_stride, t) + h * hd;
    const ulong kes = k_f16 ? 2 : 4, ves = v_f16 ? 2 : 4;

    float acc[ATT_MAX_E];
    for (int u = 0; u < ATT_MAX_E; u++)
        acc[u] = 0.0f;
    if (lid == 0) {
        l_m = -INFINITY;
        l_l = 0.0f;
        l_p = 0;
    }
    barrier(CLK_LOCAL_MEM_FENCE);

    for (;;) {
        /* gather the next chunk of visible slots */
        if (lid == 0) {
            int cnt = 0, p = l_p;
            const int end = committed + n_new;
            while (cnt < ATT_CHUNK && p < end) {
                int vis = 1;
                if (p >= committed) {
                    int kk = p - committed;
                    if (mask_at >= 0) {
                        uint wd = (uint)meta[mask_at + 2 * (j * words + kk / 64) + (kk % 64 >= 32)];
                        vis = (wd >> (kk % 32)) & 1u;
                    } else {
                        vis = kk <= j;
                    }
                }
                if (vis)
                    slots[cnt++] = table[p / block_size] * block_size + p % block_size;
                p++;
            }
            l_p = p;
            l_n = cnt;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        const int n = l_n;
        if (n == 0)
            break;
        /* scores: the canonical f32 dot, then the scale */
        if (lid < n) {
            const __global uchar *kr = kb + k_off + (ulong)slots[lid] * k_stride + (ulong)kvh * hd * kes;
            float a8[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            for (int i = 0; i < hd; i++) {
                float p = qv[i] * pool_elem(kr, k_f16, i);
                a8[i % 8] = a8[i % 8] + p;
            }
            float d = reduce8(a8);
            sc[lid] = d * scale;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        if (lid == 0) {
            float cm = -INFINITY;
            for (int i = 0; i < n; i++)
                if (sc[i] > cm)
                    cm = sc[i];
            l_rescale = 0;
            if (cm > l_m) {
                if (l_l > 0.0f) {
                    float alpha = exp_rn(l_m - cm);
                    l_alpha = alpha;
                    l_rescale = 1;
                    l_l = l_l * alpha;
                }
                l_m = cm;
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        if (l_rescale)
            for (int u = 0; u < ATT_MAX_E; u++)
                acc[u] = acc[u] * l_alpha;
        if (lid < n)
            sc[lid] = exp_neg1(sc[lid] - l_m);
        barrier(CLK_LOCAL_MEM_FENCE);
        if (lid == 0) {
            float l = l_l;
            for (int i = 0; i < n; i++)
                l = l + sc[i];
            l_l = l;
        }
        for (int u = 0; u < ATT_MAX_E; u++) {
            int e = lid + u * ATT_CHUNK;
            if (e >= hd)
                break;
            float a = acc[u];
            for (int i = 0; i < n; i++) {
                const __global uchar *vr = vb + v_off + (ulong)slots[i] * v_stride + (ulong)kvh * hd * ves;
                float p = sc[i] * pool_elem(vr, v_f16, e);
                a = a + p;
            }
            acc[u] = a;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float l = l_l;
    const float inv = l > 0.0f ? div_rn(1.0f, l) : 0.0f;
    __global float *o = FROW(ob, o_off, o_stride, t) + h * hd;
    for (int u = 0; u < ATT_MAX_E; u++) {
        int e = lid + u * ATT_CHUNK;
        if (e >= hd)
            break;
        o[e] = acc[u] * inv;
    }
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
