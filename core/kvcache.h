/*
 * kvcache.h — bookkeeping of the paged KV cache (internal).
 *
 * What this module owns
 *   Which block holds which positions of which sequence: a pool of
 *   fixed-size blocks, a free list, a reference count per block and one block
 *   table per sequence. It hands kernels the *slot* of any (sequence,
 *   position) and computes the entry copies/moves that copy-on-write and
 *   speculative commits need. It never touches K/V data.
 *
 * What the backend owns
 *   The K and V tensors: for every layer one K pool and one V pool, each
 *   plan.n_blocks * plan.block_size slots of plan.kv_dim elements
 *   (plan.bytes_per_elem bytes each). Entry `slot` of a layer's pool starts
 *   at element slot * kv_dim. Every copy and move computed here applies to
 *   every layer's K and V pool alike (a layerskip drafter writes the target's
 *   first layers through the same slots, so its entries move with them).
 *
 * Units
 *   position: token index within a sequence, 0-based.
 *   slot:     block_id * block_size + (position % block_size); an int32_t,
 *             always in [0, n_blocks * block_size). The plan caps n_blocks so
 *             every slot fits in int32_t.
 *   len:      committed length, in tokens; positions [0, len) hold committed
 *             entries.
 *   capacity: n_blocks_of_seq * block_size; positions [len, capacity) are
 *             scratch, writable by this sequence only (after reserve).
 *
 * Memory
 *   copse__kvcache_create() allocates everything (block tables, free lists,
 *   reference counts, a validation scratch array). No other function
 *   allocates, so nothing here can fail for lack of host memory in the
 *   decode loop. Running out of *blocks* is a normal condition: reserve()
 *   returns COPSE_ENOSPACE and changes nothing, and the engine waits or
 *   preempts.
 *
 * Sharing (copy-on-write)
 *   seq_fork() gives the new sequence the source's committed blocks by
 *   reference (refcount + 1), the partial last block included; it copies
 *   nothing and allocates no block. A shared block is never written: the only
 *   shared block a sequence could write into is its partial last block (the
 *   one holding position len when len % block_size != 0), and reserve()
 *   replaces it by a private copy first, returning the slot range the backend
 *   must copy. Invariant: a block at table index i of a sequence is shared
 *   (refcount > 1) only if i * block_size < len, i.e. it holds committed
 *   entries of that sequence, which no one overwrites.
 *
 * Speculative commit
 *   Tree node i of a sequence writes its entry at scratch position len + i.
 *   commit_path() takes the accepted node indices in path order and returns
 *   moves (src slot -> dst slot) that put them at positions len, len+1, ...;
 *   see the ordering contract at copse__kvcache_commit_path().
 *
 * Misuse (an unknown or freed sequence id, a position outside the sequence's
 * capacity, a commit past the reserved capacity) is a programming error and
 * is caught by assert(); statuses report conditions a correct caller must
 * handle (out of blocks, out of sequence ids, a bad accepted list).
 *
 * Threading: none inside. The engine thread owns the cache; all calls,
 * including the read-only ones, must come from that thread or be otherwise
 * serialized by the caller. No global state: separate caches (the target's,
 * a draft model's) are independent.
 */
#ifndef COPSE_CORE_KVCACHE_H
#define COPSE_CORE_KVCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "backend-impl.h"
#include "copse.h"

/* ---------------------------------------------------------------- planning */

typedef struct copse_kv_plan {
    /* inputs, as given */
    uint32_t n_layers;
    uint32_t n_kv_heads;
    uint32_t head_dim;
    uint32_t bytes_per_elem;
    uint32_t block_size;      /* tokens per block */
    uint64_t mem_budget;      /* bytes */
    /* derived */
    uint64_t kv_dim;          /* n_kv_heads * head_dim: elements per slot, K or V alone */
    uint64_t bytes_per_token; /* 2 (K and V) * n_layers * kv_dim * bytes_per_elem */
    uint64_t bytes_per_block; /* block_size * bytes_per_token */
    uint32_t n_blocks;        /* blocks that fit: min(budget / bytes_per_block, slot cap) */
    uint64_t pool_bytes;      /* one layer's K (or V) pool:
                               * n_blocks * block_size * kv_dim * bytes_per_elem */
    uint64_t total_bytes;     /* n_blocks * bytes_per_block = 2 * n_layers * pool_bytes */
} copse_kv_plan;

/* Compute how many blocks of block_size tokens fit in mem_budget bytes of
 * K+V storage over all layers. n_blocks is capped so every slot index fits
 * in int32_t. Errors (message in err, which may be NULL):
 *   COPSE_EINVAL  a zero argument;
 *   COPSE_ERANGE  the per-block size overflows 64 bits;
 *   COPSE_ENOMEM  the budget holds less than one block, i.e. not even one
 *                 sequence's minimal allocation (the message gives the
 *                 numbers). */
copse_status copse__kv_plan(uint32_t n_layers, uint32_t n_kv_heads, uint32_t head_dim,
                            uint32_t bytes_per_elem, uint32_t block_size, uint64_t mem_budget,
                            copse_kv_plan *plan, char *err, size_t err_size);

/* ---------------------------------------------------------------- lifecycle */

typedef struct copse_kvcache copse_kvcache;

/* Allocate all bookkeeping for plan->n_blocks blocks, at most max_seqs live
 * sequences and at most max_blocks_per_seq blocks per sequence (the longest
 * context is max_blocks_per_seq * block_size tokens, scratch included).
 * max_blocks_per_seq is clamped to plan->n_blocks, since a sequence can never
 * hold more, so COPSE_ERANGE from reserve() also covers "longer than the
 * whole cache" (waiting would never help). The plan is copied.
 * COPSE_EINVAL for zero limits or limits that do not fit int32_t,
 * COPSE_ENOMEM if host memory runs out. On failure *out is NULL. */
copse_status copse__kvcache_create(const copse_kv_plan *plan, uint32_t max_seqs,
                                   uint32_t max_blocks_per_seq, copse_kvcache **out, char *err,
                                   size_t err_size);
/* Accepts NULL. */
void copse__kvcache_destroy(copse_kvcache *kv);

/* ---------------------------------------------------------------- sequences */

/* One slot-range copy the backend must perform before the next write:
 * entries src .. src+n-1 to dst .. dst+n-1, in every layer's K and V pools.
 * n == 0 means nothing to do. Ranges never overlap (different blocks). */
typedef struct copse_kv_copy {
    int32_t src;
    int32_t dst;
    int32_t n;
} copse_kv_copy;

/* A new, empty sequence (len 0, no blocks). COPSE_ENOSPACE when max_seqs
 * sequences are live. */
copse_status copse__kvcache_seq_add(copse_kvcache *kv, int32_t *seq);

/* Drop a sequence: its blocks go back to the free list at once (shared ones
 * when their last user lets go); its id may be reused by the next add. */
void copse__kvcache_seq_free(copse_kvcache *kv, int32_t seq);

/* A new sequence *dst sharing src's committed entries: same len, the blocks
 * covering [0, len) by reference (no copy, no block allocated). src's
 * scratch blocks are not shared. If len % block_size != 0 the partial last
 * block becomes shared, which voids any reservation either side held in it:
 * both must reserve() again before writing (reserve then hands back the
 * copy). COPSE_ENOSPACE when max_seqs are live. */
copse_status copse__kvcache_seq_fork(copse_kvcache *kv, int32_t src, int32_t *dst);

/* Make positions [len, len + n_tokens) writable by seq: allocate blocks up
 * to that capacity (keeping any it already has) and, if the partial last
 * block is shared, swap in a private copy and describe the copy in *cow
 * (cow->n == 0 if none; the backend must do it before writing). All or
 * nothing: on error nothing changes and cow->n == 0.
 *   COPSE_ENOSPACE  not enough free blocks now (wait, or preempt someone);
 *   COPSE_ERANGE    len + n_tokens exceeds max_blocks_per_seq * block_size
 *                   (this sequence can never fit). */
copse_status copse__kvcache_reserve(copse_kvcache *kv, int32_t seq, uint32_t n_tokens,
                                    copse_kv_copy *cow);

/* The caller has written entries at positions [len, len + n) (reserved
 * before); they become committed: len += n. */
void copse__kvcache_commit(copse_kvcache *kv, int32_t seq, uint32_t n);

/* Roll back to new_len <= len: positions >= new_len are dropped and every
 * block not needed for [0, new_len) is released (this drops reserved scratch
 * too; truncate(seq, len) just gives scratch blocks back). */
void copse__kvcache_truncate(copse_kvcache *kv, int32_t seq, uint32_t new_len);

/* ---------------------------------------------------------------- slots */

/* Slot of (seq, pos); pos must be below the sequence's capacity. */
int32_t copse__kvcache_slot(const copse_kvcache *kv, int32_t seq, uint32_t pos);

/* Slots of a ragged token list: slots[i] = slot(seqs[i], pos[i]) for i < n. */
void copse__kvcache_slots(const copse_kvcache *kv, size_t n, const int32_t *seqs,
                          const uint32_t *pos, int32_t *slots);

/* ---------------------------------------------------------------- speculative commit */

/* One entry move: slot src to slot dst, in every layer's K and V pools. The
 * backend interface's kv_commit op takes these as they are. */
typedef copse_slot_move copse_kv_move;

/* Commit the accepted path of a verified tree. Tree node i (i < n_nodes)
 * wrote its entry at scratch position len + i (reserved before); only nodes
 * with entries count (the target's correction/bonus token has none yet: the
 * next step writes it like any new token). accepted
 * holds n_accepted node indices in path order; they must be strictly
 * increasing and below n_nodes (true of any path when nodes are numbered
 * parents before children), else COPSE_EINVAL and nothing changes.
 *
 * Fills moves[0 .. *n_moves) (room for n_accepted entries needed) with the
 * moves that put node accepted[j] at position len + j, leaving out moves
 * whose source already is its destination; then len += n_accepted. Scratch
 * blocks stay reserved.
 *
 * Ordering contract: the backend must perform the moves in list order (or
 * read every source before writing any destination). Each move may itself be
 * done in parallel over layers and elements. In list order nothing needed is
 * overwritten: move j writes position len + j and later moves k > j read
 * positions len + accepted[k] >= len + k > len + j (strict increase gives
 * accepted[k] >= k). Moves are NOT independent: move j's destination may be
 * an earlier move's source (accepted = {1, 2} moves 1 -> 0 then 2 -> 1), so
 * running them all at once without a gather would race. */
copse_status copse__kvcache_commit_path(copse_kvcache *kv, int32_t seq, uint32_t n_nodes,
                                        const uint32_t *accepted, uint32_t n_accepted,
                                        copse_kv_move *moves, uint32_t *n_moves);

/* ---------------------------------------------------------------- stats and introspection */

typedef struct copse_kv_stats {
    uint32_t blocks_total;
    uint32_t blocks_used;    /* referenced by at least one sequence */
    uint32_t blocks_free;    /* blocks_total - blocks_used */
    uint32_t blocks_shared;  /* referenced by more than one sequence */
    uint32_t n_seqs;         /* live sequences */
    uint64_t tokens_committed; /* sum of the live sequences' lengths */
} copse_kv_stats;

copse_kv_stats copse__kvcache_stats(const copse_kvcache *kv);

const copse_kv_plan *copse__kvcache_plan(const copse_kvcache *kv);
uint32_t copse__kvcache_max_seqs(const copse_kvcache *kv);
uint32_t copse__kvcache_max_blocks_per_seq(const copse_kvcache *kv);

/* 1 if seq is a live sequence id, else 0 (any int32_t accepted). */
int copse__kvcache_seq_live(const copse_kvcache *kv, int32_t seq);
/* Committed length and capacity (blocks * block_size) of a live sequence. */
uint32_t copse__kvcache_seq_len(const copse_kvcache *kv, int32_t seq);
uint32_t copse__kvcache_seq_capacity(const copse_kvcache *kv, int32_t seq);

/* The block table of a live sequence: *n_blocks block ids, table index i
 * covering positions [i * block_size, (i + 1) * block_size). Valid until the
 * next call that changes this sequence. For paged-attention kernels. */
const int32_t *copse__kvcache_seq_table(const copse_kvcache *kv, int32_t seq, uint32_t *n_blocks);

/* Number of block tables referencing block id (0: free). */
uint32_t copse__kvcache_block_refcount(const copse_kvcache *kv, int32_t block);

/* Check every internal invariant (refcounts equal table references, the free
 * list holds exactly the unreferenced blocks once each, no table repeats a
 * block, shared blocks hold only committed positions, counters agree).
 * O(blocks + table entries); for tests and debug builds. COPSE_EINVAL with a
 * message naming the first violation. Uses scratch memory from create. */
copse_status copse__kvcache_validate(copse_kvcache *kv, char *err, size_t err_size);

#endif /* COPSE_CORE_KVCACHE_H */
