/*
 * attention.cuh — what the two attention kernels share (internal):
 * the device view of the packed metadata (attention.cu packs it) and the
 * tree/prefill kernel's host side (attention-tree.cu).
 */
#ifndef COPSE_GPU_ATTENTION_CUH
#define COPSE_GPU_ATTENTION_CUH

#include "gpu-common.cuh"

namespace COPSE_GPU_NS {

#define ATT_MAX_HD 256 /* largest head_dim */
#define ATT_R (ATT_MAX_HD / COPSE_WARP)

/* Device addresses into the META_ATTN push (see attention.cu). */
struct attn_meta {
    const int32_t *tok_seq, *first, *n_new, *committed, *base, *tab_off, *mask_off, *tables;
    const uint64_t *masks;
    int32_t n_tokens, n_heads, group, head_dim, block_size;
    float scale;
};

/* ---------------------------------------------------------------- tree/prefill kernel (attention-tree.cu) */

/* How a batch is cut into thread blocks: each block takes up to
 * tok_per_block consecutive new tokens of one sequence (a tile) times
 * heads_per_block query heads of one KV head's group. */
struct tree_plan {
    int32_t tok_per_block, heads_per_block, head_chunks, n_tiles;
};

/* Whether op_attention should run the tree kernel on b: a sequence has
 * more than one new token, and the kernel is on (COPSE_GPU_TREE_ATTENTION,
 * see attention-tree.cu). */
bool tree_attn_wanted(const copse_attn_batch *b);
/* The plan for b on a device with sm_count multiprocessors. */
void tree_attn_plan(const copse_attn_batch *b, int sm_count, tree_plan *p);
/* tiles[p->n_tiles]: the first token of each tile, sequence by sequence. */
void tree_attn_tiles(const copse_attn_batch *b, const tree_plan *p, int32_t *tiles);
/* Launch on q's stream; tiles is the device copy of tree_attn_tiles'. */
void tree_attn_launch(gpu_queue *q, const attn_meta &am, const int32_t *tiles, const tree_plan &p, const float *qry,
                      size_t qs, const copse_tensor *k_pool, const copse_tensor *v_pool, float *out, size_t os);

} // namespace COPSE_GPU_NS

#endif /* COPSE_GPU_ATTENTION_CUH */
