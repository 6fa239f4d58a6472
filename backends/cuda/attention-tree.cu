/*
 * attention-tree.cu — the tree/prefill attention kernel (also built for
 * HIP): batches where a sequence has several new tokens (verification of a
 * token tree, prefill). op_attention (attention.cu) packs the metadata and
 * picks the kernel; contract: copse_attn_batch in backend-impl.h.
 *
 * One thread block per (tile of up to tok_per_block new tokens of one
 * sequence, KV head, chunk of heads_per_block of that KV head's query
 * heads): its query rows are tokens x heads (at most TA_ROWS, row r is
 * token r / heads_per_block, head r % heads_per_block), staged in shared
 * memory. The block walks the sequence's virtual key positions (committed
 * prefix, then the base + n_new new entries) in chunks of COPSE_WARP; for
 * each chunk it stages the keys' K rows, then their V rows, in shared
 * memory (head_dim columns in slabs of TA_SLAB, coalesced 16-byte loads
 * where the pool's rows allow, F16 widened to F32), so each K/V row of the
 * sequence is read from memory once per block instead of once per (token,
 * head).
 *
 * Numerics: warp wi owns rows wi, wi + TA_WARPS, ...; for each of its rows
 * it does exactly what k_attention's warp does for that (token, head):
 * lane i scores key i of the chunk (a fmaf chain over e = 0 .. head_dim-1,
 * then * scale), warp_max / warp_sum give the chunk's max and sum, the
 * online-softmax rescale is the same expression, and the P.V update folds
 * the chunk's keys in key order into the lane's output elements
 * lane + r * COPSE_WARP. Chunks are cut by key position, so a row's result
 * depends neither on its tile nor on the batch, and it is bit for bit the
 * one k_attention computes (a token decoded alone and the same token in a
 * verification batch agree). Visibility per row as in attention.cu.
 *
 * Checked on the CPU simulator (backends/gpusim, the conformance attention
 * cases, also under ASan): within tolerance of the reference and equal bit
 * for bit to k_attention (COPSE_GPU_TREE_ATTENTION=0 vs 1, and the
 * decode-vs-batch invariance checks). Not yet timed on a GPU.
 */
#include <stdlib.h>
#include <string.h>

#include "attention.cuh"

namespace COPSE_GPU_NS {

#define TA_WARPS 8                          /* warps per thread block */
#define TA_RPW 4                            /* query rows per warp, at most */
#define TA_ROWS (TA_WARPS * TA_RPW)         /* query rows per block, at most */
#define TA_QFLOATS 4096                     /* query rows x head_dim in shared memory, at most */
#define TA_SLAB (4096 / COPSE_WARP)         /* head_dim columns of a K/V chunk staged at once */
#define TA_DEFAULT 1                        /* on without COPSE_GPU_TREE_ATTENTION */

#if COPSE_GPU_DEVICE_CODE
/* Columns [lo, lo + n) of the chunk's keys' rows of a pool (F16 or F32)
 * into kv as floats; keys with slot < 0 (past the last position) get
 * zeros. vec: 16-byte loads (rows, the head's column and n are 16-byte
 * aligned); consecutive threads take consecutive pieces of a row. */
template <bool F16>
static __device__ __forceinline__ void ta_stage(float (*kv)[TA_SLAB + 1], const int32_t *slot,
                                                const unsigned char *pool, size_t ps, size_t col, int lo, int n,
                                                bool vec)
{
    const int esz = F16 ? 2 : 4, nt = TA_WARPS * COPSE_WARP;
    if (vec) {
        const int per = 16 / esz, pieces = n / per;
        for (int idx = threadIdx.x; idx < COPSE_WARP * pieces; idx += nt) {
            const int i = idx / pieces, c = (idx % pieces) * per;
            float *dst = &kv[i][c];
            if (slot[i] < 0) {
                for (int u = 0; u < per; u++)
                    dst[u] = 0.0f;
                continue;
            }
            const uint4 w = *(const uint4 *)(const void *)(pool + (size_t)slot[i] * ps + col + (size_t)(lo + c) * esz);
            if (F16) {
                const uint32_t ws[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
                for (int u = 0; u < 4; u++) {
                    dst[2 * u] = __half2float(__ushort_as_half((unsigned short)(ws[u] & 0xffffu)));
                    dst[2 * u + 1] = __half2float(__ushort_as_half((unsigned short)(ws[u] >> 16)));
                }
            } else {
                dst[0] = __uint_as_float(w.x);
                dst[1] = __uint_as_float(w.y);
                dst[2] = __uint_as_float(w.z);
                dst[3] = __uint_as_float(w.w);
            }
        }
    } else {
        for (int idx = threadIdx.x; idx < COPSE_WARP * n; idx += nt) {
            const int i = idx / n, c = idx % n;
            float x = 0.0f;
            if (slot[i] >= 0) {
                const unsigned char *src = pool + (size_t)slot[i] * ps + col + (size_t)(lo + c) * esz;
                x = F16 ? __half2float(*(const __half *)(const void *)src) : *(const float *)(const void *)src;
            }
            kv[i][c] = x;
        }
    }
}

template <bool K16, bool V16>
static __global__ void __launch_bounds__(TA_WARPS *COPSE_WARP)
    k_attention_tree(attn_meta am, const int32_t *tiles, int32_t tpb, int32_t hpb, int32_t hchunks,
                     const float *qry, size_t qs, const unsigned char *kp, size_t kps, const unsigned char *vp,
                     size_t vps, float *out, size_t os, bool kvec, bool vvec)
{
    __shared__ float4 qsh4[TA_QFLOATS / 4]; /* float4: 16-byte aligned rows when head_dim % 4 == 0 */
    float *qsh = (float *)(void *)qsh4;
    __shared__ float kv[COPSE_WARP][TA_SLAB + 1]; /* +1: lane i reading row i is conflict-free */
    __shared__ int32_t slot_sh[COPSE_WARP];
    const int lane = threadIdx.x % COPSE_WARP, wi = threadIdx.x / COPSE_WARP;
    const int hd = am.head_dim, bs = am.block_size, rows = tpb * hpb;
    const int32_t t0 = tiles[blockIdx.x], s = am.tok_seq[t0];
    const int kvh = (int)blockIdx.y / hchunks;
    const int h0 = kvh * am.group + ((int)blockIdx.y % hchunks) * hpb, hend = (kvh + 1) * am.group;
    const int32_t first = am.first[s], base = am.base[s], nb = base + am.n_new[s], committed = am.committed[s];
    const int32_t tend = t0 + tpb < first + am.n_new[s] ? t0 + tpb : first + am.n_new[s];
    const int32_t *table = am.tables + am.tab_off[s];
    const int32_t words = (nb + 63) / 64;
    const uint64_t *masks = am.mask_off[s] >= 0 ? am.masks + am.mask_off[s] : NULL;
    const size_t kcol = (size_t)kvh * hd * (K16 ? 2 : 4), vcol = (size_t)kvh * hd * (V16 ? 2 : 4);
    /* the last virtual position any row of the block can see, plus one */
    const int32_t nv_max = committed + (masks ? nb : base + (tend - first));

    for (int idx = threadIdx.x; idx < rows * hd; idx += TA_WARPS * COPSE_WARP) {
        const int r = idx / hd, e = idx % hd;
        const int32_t t = t0 + r / hpb;
        const int h = h0 + r % hpb;
        qsh[idx] = t < tend && h < hend ? qry[(size_t)t * qs + (size_t)h * hd + e] : 0.0f;
    }

    /* the warp's rows (uniform over the warp) */
    bool valid[TA_RPW];
    int32_t jrow[TA_RPW], nv[TA_RPW];
    const uint64_t *mrow[TA_RPW];
    float m[TA_RPW], l[TA_RPW], acc[TA_RPW][ATT_R];
#pragma unroll
    for (int k = 0; k < TA_RPW; k++) {
        const int r = wi + TA_WARPS * k;
        const int32_t t = t0 + r / hpb, row = t - first;
        valid[k] = r < rows && t < tend && h0 + r % hpb < hend;
        jrow[k] = base + row;
        mrow[k] = valid[k] && masks ? masks + (size_t)row * words : NULL;
        nv[k] = valid[k] ? committed + (masks ? nb : jrow[k] + 1) : 0;
        m[k] = -INFINITY;
        l[k] = 0.0f;
#pragma unroll
        for (int rr = 0; rr < ATT_R; rr++)
            acc[k][rr] = 0.0f;
    }

    for (int32_t c0 = 0; c0 < nv_max; c0 += COPSE_WARP) {
        __syncthreads(); /* the previous chunk is done with slot_sh and kv (and qsh is staged) */
        if (threadIdx.x < COPSE_WARP) {
            const int32_t v = c0 + (int32_t)threadIdx.x;
            slot_sh[threadIdx.x] = v < nv_max ? table[v / bs] * bs + v % bs : -1;
        }

        /* scores: lane i, key i of the chunk, every row of the warp */
        float d[TA_RPW];
#pragma unroll
        for (int k = 0; k < TA_RPW; k++)
            d[k] = 0.0f;
        for (int lo = 0; lo < hd; lo += TA_SLAB) {
            const int n = hd - lo < TA_SLAB ? hd - lo : TA_SLAB;
            __syncthreads();
            ta_stage<K16>(kv, slot_sh, kp, kps, kcol, lo, n, kvec);
            __syncthreads();
            int e = 0;
            if (hd % 4 == 0) /* then lo and n are multiples of 4 too: the query as float4 */
                for (; e < n; e += 4) {
                    const float k0 = kv[lane][e], k1 = kv[lane][e + 1], k2 = kv[lane][e + 2], k3 = kv[lane][e + 3];
#pragma unroll
                    for (int k = 0; k < TA_RPW; k++)
                        if (valid[k]) {
                            const float4 q4 = *(const float4 *)(const void *)&qsh[(wi + TA_WARPS * k) * hd + lo + e];
                            d[k] = fmaf(q4.x, k0, d[k]);
                            d[k] = fmaf(q4.y, k1, d[k]);
                            d[k] = fmaf(q4.z, k2, d[k]);
                            d[k] = fmaf(q4.w, k3, d[k]);
                        }
                }
            for (; e < n; e++) {
                const float kx = kv[lane][e];
#pragma unroll
                for (int k = 0; k < TA_RPW; k++)
                    if (valid[k])
                        d[k] = fmaf(qsh[(wi + TA_WARPS * k) * hd + lo + e], kx, d[k]);
            }
        }

        /* online softmax per row, as k_attention */
        const int32_t v = c0 + lane;
        float p[TA_RPW];
        bool upd[TA_RPW];
#pragma unroll
        for (int k = 0; k < TA_RPW; k++) {
            p[k] = 0.0f;
            upd[k] = false;
            if (c0 >= nv[k])
                continue; /* past the row's keys (or no row): k_attention's loop has ended */
            bool vis = v < nv[k];
            if (vis && v >= committed) {
                const int32_t kk = v - committed;
                vis = mrow[k] ? ((mrow[k][kk / 64] >> (kk % 64)) & 1u) != 0 : kk <= jrow[k];
            }
            const float sc = vis ? __fmul_rn(d[k], am.scale) : -INFINITY;
            const float cm = warp_max(sc);
            const float mn = fmaxf(m[k], cm);
            if (mn == -INFINITY)
                continue; /* nothing visible yet (uniform over the warp) */
            const float alpha = m[k] == -INFINITY ? 0.0f : expf(m[k] - mn);
            p[k] = vis ? expf(sc - mn) : 0.0f;
            l[k] = fmaf(l[k], alpha, warp_sum(p[k]));
#pragma unroll
            for (int rr = 0; rr < ATT_R; rr++)
                acc[k][rr] *= alpha;
            m[k] = mn;
            upd[k] = true;
        }

        /* P.V: every row's output elements, the chunk's keys in order */
        for (int lo = 0; lo < hd; lo += TA_SLAB) {
            const int n = hd - lo < TA_SLAB ? hd - lo : TA_SLAB;
            __syncthreads();
            ta_stage<V16>(kv, slot_sh, vp, vps, vcol, lo, n, vvec);
            __syncthreads();
            for (int i = 0; i < COPSE_WARP; i++) {
                float pi[TA_RPW];
#pragma unroll
                for (int k = 0; k < TA_RPW; k++)
                    pi[k] = gpu_shfl(p[k], i);
#pragma unroll
                for (int rr = 0; rr < ATT_R; rr++) {
                    const int e = lane + rr * COPSE_WARP;
                    if (rr * COPSE_WARP >= lo && rr * COPSE_WARP < lo + n && e < hd) {
                        const float vx = kv[i][e - lo];
#pragma unroll
                        for (int k = 0; k < TA_RPW; k++)
                            if (upd[k] && pi[k] != 0.0f)
                                acc[k][rr] = fmaf(pi[k], vx, acc[k][rr]);
                    }
                }
            }
        }
    }

#pragma unroll
    for (int k = 0; k < TA_RPW; k++) {
        if (!valid[k])
            continue;
        const int r = wi + TA_WARPS * k;
        const float inv = l[k] > 0.0f ? 1.0f / l[k] : 0.0f;
        float *o = out + (size_t)(t0 + r / hpb) * os + (size_t)(h0 + r % hpb) * hd;
#pragma unroll
        for (int rr = 0; rr < ATT_R; rr++) {
            const int e = lane + rr * COPSE_WARP;
            if (e < hd)
                o[e] = acc[k][rr] * inv;
        }
    }
}
#endif

/* ---------------------------------------------------------------- host side */

bool tree_attn_wanted(const copse_attn_batch *b)
{
    /* COPSE_GPU_TREE_ATTENTION=1 / =0 turns the kernel on / off (every
     * batch on k_attention: comparisons, bisecting); unset: TA_DEFAULT */
    static const bool enabled = [] {
        const char *e = getenv("COPSE_GPU_TREE_ATTENTION");
        return e && *e ? strcmp(e, "0") != 0 : TA_DEFAULT != 0;
    }();
    if (!enabled)
        return false;
    for (int32_t s = 0; s < b->n_seqs; s++)
        if (b->n_new[s] > 1)
            return true;
    return false;
}

void tree_attn_plan(const copse_attn_batch *b, int sm_count, tree_plan *p)
{
    const int32_t group = b->n_heads / b->n_kv_heads;
    int32_t rows = TA_QFLOATS / b->head_dim < TA_ROWS ? TA_QFLOATS / b->head_dim : TA_ROWS;
    for (;;) {
        /* halve the rows per block (more blocks, each K/V row read by more
         * of them, from L2) until the blocks fill the device */
        p->heads_per_block = group < rows ? group : rows;
        p->tok_per_block = rows / p->heads_per_block;
        p->head_chunks = (group + p->heads_per_block - 1) / p->heads_per_block;
        p->n_tiles = 0;
        for (int32_t s = 0; s < b->n_seqs; s++)
            p->n_tiles += (b->n_new[s] + p->tok_per_block - 1) / p->tok_per_block;
        const int64_t blocks = (int64_t)p->n_tiles * b->n_kv_heads * p->head_chunks;
        if (blocks >= sm_count || rows <= TA_WARPS)
            break;
        rows /= 2;
    }
}

void tree_attn_tiles(const copse_attn_batch *b, const tree_plan *p, int32_t *tiles)
{
    int32_t k = 0;
    for (int32_t s = 0; s < b->n_seqs; s++)
        for (int32_t t = 0; t < b->n_new[s]; t += p->tok_per_block)
            tiles[k++] = b->first[s] + t;
}

void tree_attn_launch(gpu_queue *q, const attn_meta &am, const int32_t *tiles, const tree_plan &p, const float *qry,
                      size_t qs, const copse_tensor *k_pool, const copse_tensor *v_pool, float *out, size_t os)
{
    const bool k16 = k_pool->type == COPSE_Q_F16, v16 = v_pool->type == COPSE_Q_F16;
    const unsigned char *kp = tdev(k_pool), *vp = tdev(v_pool);
    const size_t kbytes = (size_t)am.head_dim * (k16 ? 2 : 4), vbytes = (size_t)am.head_dim * (v16 ? 2 : 4);
    const bool kvec = k_pool->row_stride % 16 == 0 && kbytes % 16 == 0 && (uintptr_t)kp % 16 == 0;
    const bool vvec = v_pool->row_stride % 16 == 0 && vbytes % 16 == 0 && (uintptr_t)vp % 16 == 0;
    dim3 grid((unsigned)p.n_tiles, (unsigned)(am.n_heads / am.group * p.head_chunks));
#define TA_(K, V)                                                                                              \
    GPU_LAUNCH(grid, TA_WARPS * COPSE_WARP, 0, q->stream, k_attention_tree<K, V>)(                             \
        am, tiles, p.tok_per_block, p.heads_per_block, p.head_chunks, qry, qs, kp, k_pool->row_stride, vp,     \
        v_pool->row_stride, out, os, kvec, vvec)
    if (k16 && v16)
        TA_(true, true);
    else if (k16)
        TA_(true, false);
    else if (v16)
        TA_(false, true);
    else
        TA_(false, false);
#undef TA_
}

} // namespace COPSE_GPU_NS
