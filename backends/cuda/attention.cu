/*
 * attention.cu — paged attention over a ragged batch with tree masks (also
 * built for HIP). Contract: copse_attn_batch in backend-impl.h.
 *
 * Two kernels, the same arithmetic for each (token, query head), so a
 * token's output is bit for bit the same whichever runs it:
 * - k_attention (here), for decode batches (every sequence has one new
 *   token): one warp per (token, query head), ATT_HEADS heads per thread
 *   block (the heads of a grouped-query group are neighbours, so they
 *   share K/V reads in cache).
 * - k_attention_tree (attention-tree.cu), for every other batch (token
 *   trees, prefill): one thread block per (tile of a sequence's new
 *   tokens, KV head), which stages each chunk's K and V rows in shared
 *   memory once for all its tokens x grouped query heads, instead of
 *   every (token, head) reading the sequence's whole K/V.
 *   COPSE_GPU_TREE_ATTENTION=1 / 0 switches it on / off (see there for
 *   the default).
 *
 * The arithmetic, single pass, flash style: the token's visible keys are
 * walked in chunks of COPSE_WARP by position, lane i scoring key i of the
 * chunk (a fmaf chain over its K row against the query, then * scale);
 * the chunk's maximum and the running one give the online-softmax rescale
 * (l = fmaf(l, alpha, chunk sum)); then every lane accumulates its
 * head_dim / COPSE_WARP output elements over the chunk's keys in key order.
 * No split over the keys, so a token's output depends only on its own keys
 * (batch invariance).
 *
 * Visible keys, in the order the CPU reference folds them: the committed
 * prefix (positions 0 .. committed-1), then the new entries k of the
 * token's sequence with mask bit (j, k) set (causal k <= j without a mask).
 * With a scratch base (drafting a tree level by level) the sequence's
 * base earlier scratch entries count as new entries 0 .. base-1 and token
 * j is entry base + j: the kernel only ever sees base + j and base + n_new.
 * Positions map to slots through the block table. A token that sees no key
 * gets zeros, as on the CPU.
 *
 * Host metadata, one int32 array (META_ATTN, so the layers of one forward
 * step upload it once): tok_seq[n_tokens], then per sequence first, n_new,
 * committed, base, table offset, mask offset (-1: causal), then the block
 * tables, then (tree kernel only) the first token of each tile; the masks
 * follow as uint64 words in a second array.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "attention.cuh"

namespace COPSE_GPU_NS {

#define ATT_HEADS 4      /* warps (query heads) per thread block */

template <bool K16, bool V16>
static __global__ void __launch_bounds__(ATT_HEADS *COPSE_WARP)
    k_attention(attn_meta am, const float *qry, size_t qs, const unsigned char *kp, size_t kps,
                const unsigned char *vp, size_t vps, float *out, size_t os)
{
    __shared__ float qsh[ATT_HEADS][ATT_MAX_HD];
    const int lane = threadIdx.x % COPSE_WARP, wi = threadIdx.x / COPSE_WARP;
    const int64_t t = blockIdx.x;
    const int h = blockIdx.y * ATT_HEADS + wi, hd = am.head_dim;
    const bool active = h < am.n_heads;
    if (active)
        for (int e = lane; e < hd; e += COPSE_WARP)
            qsh[wi][e] = qry[(size_t)t * qs + (size_t)h * hd + e];
    __syncthreads();
    if (!active)
        return;

    const int s = am.tok_seq[t];
    /* j: the token's entry among the new ones, after the scratch base */
    const int32_t row = (int32_t)t - am.first[s], j = am.base[s] + row, n_new = am.base[s] + am.n_new[s],
                  committed = am.committed[s];
    const int32_t *table = am.tables + am.tab_off[s];
    const int32_t words = (n_new + 63) / 64;
    const uint64_t *mrow = am.mask_off[s] >= 0 ? am.masks + am.mask_off[s] + (size_t)row * words : NULL;
    const int32_t n_virt = committed + (mrow ? n_new : j + 1);
    const int kvh = h / am.group, bs = am.block_size;
    const size_t kcol = (size_t)kvh * hd * (K16 ? 2 : 4), vcol = (size_t)kvh * hd * (V16 ? 2 : 4);

    float m = -INFINITY, l = 0.0f, acc[ATT_R];
#pragma unroll
    for (int r = 0; r < ATT_R; r++)
        acc[r] = 0.0f;

    for (int32_t c0 = 0; c0 < n_virt; c0 += COPSE_WARP) {
        const int32_t v = c0 + lane;
        bool vis = v < n_virt;
        int32_t pos = v;
        if (vis && v >= committed) {
            const int32_t kk = v - committed;
            vis = mrow ? ((mrow[kk / 64] >> (kk % 64)) & 1u) != 0 : kk <= j;
        }
        int32_t slot = 0;
        float sc = -INFINITY;
        if (vis) {
            slot = table[pos / bs] * bs + pos % bs;
            const unsigned char *krow = kp + (size_t)slot * kps + kcol;
            float d = 0.0f;
            for (int e = 0; e < hd; e++) {
                const float kv = K16 ? __half2float(((const __half *)(const void *)krow)[e])
                                     : ((const float *)(const void *)krow)[e];
                d = fmaf(qsh[wi][e], kv, d);
            }
            sc = __fmul_rn(d, am.scale);
        }
        const float cm = warp_max(sc);
        const float mn = fmaxf(m, cm);
        if (mn == -INFINITY)
            continue; /* nothing visible yet (uniform over the warp) */
        const float alpha = m == -INFINITY ? 0.0f : expf(m - mn);
        const float p = vis ? expf(sc - mn) : 0.0f;
        l = fmaf(l, alpha, warp_sum(p)); /* explicit: k_attention_tree does the same */
#pragma unroll
        for (int r = 0; r < ATT_R; r++)
            acc[r] *= alpha;
        for (int i = 0; i < COPSE_WARP; i++) {
            const float pi = gpu_shfl(p, i);
            const int32_t si = gpu_shfl(slot, i);
            if (pi == 0.0f)
                continue; /* uniform: every lane holds the same pi */
            const unsigned char *vrow = vp + (size_t)si * vps + vcol;
#pragma unroll
            for (int r = 0; r < ATT_R; r++) {
                const int e = lane + r * COPSE_WARP;
                if (e < hd) {
                    const float vv = V16 ? __half2float(((const __half *)(const void *)vrow)[e])
                                         : ((const float *)(const void *)vrow)[e];
                    acc[r] = fmaf(pi, vv, acc[r]);
                }
            }
        }
        m = mn;
    }
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    float *o = out + (size_t)t * os + (size_t)h * hd;
#pragma unroll
    for (int r = 0; r < ATT_R; r++) {
        const int e = lane + r * COPSE_WARP;
        if (e < hd)
            o[e] = acc[r] * inv;
    }
}

copse_status op_attention(copse_backend_queue *bq, const copse_tensor *qry, const copse_tensor *k_pool,
                          const copse_tensor *v_pool, const copse_attn_batch *b, const copse_tensor *out)
{
    gpu_queue *q = (gpu_queue *)bq->ctx;
    if ((k_pool->type != COPSE_Q_F32 && k_pool->type != COPSE_Q_F16) ||
        (v_pool->type != COPSE_Q_F32 && v_pool->type != COPSE_Q_F16) || b->head_dim > ATT_MAX_HD) {
        fprintf(stderr, "copse %s: attention: pools %s/%s with head_dim %d are not supported\n", COPSE_GPU_NAME,
                copse__qtype_name(k_pool->type), copse__qtype_name(v_pool->type), b->head_dim);
        return COPSE_EUNSUPPORTED;
    }
    if (b->n_tokens <= 0)
        return COPSE_OK;
    copse_status st = gpu_enter(q, "attention");
    if (st != COPSE_OK)
        return st;

    /* pack the metadata: sizes first */
    const int32_t S = b->n_seqs, T = b->n_tokens;
    size_t n_tab = 0, n_mask = 0;
    for (int32_t s = 0; s < S; s++) {
        const int32_t nb = (b->base ? b->base[s] : 0) + b->n_new[s];
        n_tab += (size_t)((b->committed[s] + nb + b->block_size - 1) / b->block_size);
        if (b->mask[s])
            n_mask += (size_t)b->n_new[s] * (size_t)((nb + 63) / 64);
    }
    const bool tree = tree_attn_wanted(b);
    tree_plan plan = {};
    if (tree)
        tree_attn_plan(b, q->gd->sm_count, &plan);
    std::vector<int32_t> ib;
    std::vector<uint64_t> mb;
    try {
        ib.resize((size_t)T + 6 * (size_t)S + n_tab + (size_t)plan.n_tiles);
        mb.resize(n_mask ? n_mask : 1);
    } catch (...) {
        return COPSE_ENOMEM;
    }
    int32_t *tok_seq = ib.data(), *first = tok_seq + T, *n_new = first + S, *committed = n_new + S,
            *base = committed + S, *tab_off = base + S, *mask_off = tab_off + S, *tables = mask_off + S;
    size_t to = 0, mo = 0;
    for (int32_t s = 0; s < S; s++) {
        first[s] = b->first[s];
        n_new[s] = b->n_new[s];
        committed[s] = b->committed[s];
        base[s] = b->base ? b->base[s] : 0;
        for (int32_t j = 0; j < b->n_new[s]; j++)
            tok_seq[b->first[s] + j] = s;
        const int32_t nb = base[s] + b->n_new[s];
        const size_t nblk = (size_t)((b->committed[s] + nb + b->block_size - 1) / b->block_size);
        tab_off[s] = (int32_t)to;
        memcpy(tables + to, b->tables[s], nblk * sizeof(int32_t));
        to += nblk;
        if (b->mask[s]) {
            const size_t nw = (size_t)b->n_new[s] * (size_t)((nb + 63) / 64);
            mask_off[s] = (int32_t)mo;
            memcpy(mb.data() + mo, b->mask[s], nw * sizeof(uint64_t));
            mo += nw;
        } else {
            mask_off[s] = -1;
        }
    }
    if (tree)
        tree_attn_tiles(b, &plan, tables + to);
    const void *di = NULL, *dm = NULL;
    if ((st = gpu_meta_push(q, META_ATTN, ib.data(), ib.size() * sizeof(int32_t), &di, "attention")) != COPSE_OK ||
        (st = gpu_meta_push(q, META_ANY, mb.data(), mb.size() * sizeof(uint64_t), &dm, "attention")) != COPSE_OK)
        return st;
    const int32_t *d = (const int32_t *)di;
    attn_meta am;
    am.tok_seq = d;
    am.first = d + T;
    am.n_new = am.first + S;
    am.committed = am.n_new + S;
    am.base = am.committed + S;
    am.tab_off = am.base + S;
    am.mask_off = am.tab_off + S;
    am.tables = am.mask_off + S;
    am.masks = (const uint64_t *)dm;
    am.n_tokens = T;
    am.n_heads = b->n_heads;
    am.group = b->n_heads / b->n_kv_heads;
    am.head_dim = b->head_dim;
    am.block_size = b->block_size;
    am.scale = b->scale;

    const float *qp = (const float *)(void *)tdev(qry);
    float *op = (float *)(void *)tdev(out);
    const size_t qs = qry->row_stride / sizeof(float), ostr = out->row_stride / sizeof(float);
    if (tree) {
        tree_attn_launch(q, am, am.tables + to, plan, qp, qs, k_pool, v_pool, op, ostr);
        return gpu_launch_check(q, "attention");
    }
    dim3 grid((unsigned)T, (unsigned)((b->n_heads + ATT_HEADS - 1) / ATT_HEADS));
    const bool k16 = k_pool->type == COPSE_Q_F16, v16 = v_pool->type == COPSE_Q_F16;
#define ATT_(K, V)                                                                                                \
    GPU_LAUNCH(grid, ATT_HEADS * COPSE_WARP, 0, q->stream, k_attention<K, V>)(am, qp, qs, tdev(k_pool), k_pool->row_stride, \
                                                                      tdev(v_pool), v_pool->row_stride, op, ostr)
    if (k16 && v16)
        ATT_(true, true);
    else if (k16)
        ATT_(true, false);
    else if (v16)
        ATT_(false, true);
    else
        ATT_(false, false);
#undef ATT_
    return gpu_launch_check(q, "attention");
}

} // namespace COPSE_GPU_NS
