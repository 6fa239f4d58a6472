/*
 * kvcache.c — bookkeeping of the paged KV cache: block pool, free list,
 * reference counts, per-sequence block tables, copy-on-write and the moves
 * of a speculative commit. The contract is in kvcache.h.
 *
 * Representation
 *   refcount[b]        number of block tables holding block b (0: free)
 *   free_blocks[0..n_free)  stack of the free block ids, each exactly once
 *   tables[seq * max_blocks_per_seq + i]  block holding positions
 *                      [i * block_size, (i + 1) * block_size) of seq, for
 *                      i < seqs[seq].n_blocks; -1 beyond
 *   free_seqs[0..n_free_seqs)  stack of the unused sequence ids
 *
 * The stacks are filled so that pops return ascending ids on a fresh cache,
 * and tails are released last-block-first so that a re-reserve gets the same
 * blocks back in the same order (kind to caches, easy to read in a dump).
 */
#include "kvcache.h"

#include <assert.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

typedef struct kv_seq {
    uint32_t len;      /* committed tokens */
    uint32_t n_blocks; /* entries of the block table in use */
    bool live;
} kv_seq;

struct copse_kvcache {
    copse_kv_plan plan;
    uint32_t block_size;
    uint32_t n_blocks;
    uint32_t max_seqs;
    uint32_t max_blocks_per_seq; /* clamped to n_blocks */

    int32_t *tables;      /* max_seqs * max_blocks_per_seq */
    kv_seq *seqs;         /* max_seqs */
    uint32_t *refcount;   /* n_blocks */
    int32_t *free_blocks; /* n_blocks; [0, n_free) valid */
    uint32_t n_free;
    int32_t *free_seqs;   /* max_seqs; [0, n_free_seqs) valid */
    uint32_t n_free_seqs;

    uint32_t n_shared;         /* blocks with refcount > 1 */
    uint64_t tokens_committed; /* sum of live lengths */

    uint32_t *check_count; /* n_blocks, scratch for validate() */
    uint32_t *check_mark;  /* n_blocks, scratch for validate() */
    uint8_t *check_seq;    /* max_seqs, scratch for validate() */
};

/* ---------------------------------------------------------------- planning */

/* a * b into *r; false on 64-bit overflow. */
static bool mul_u64(uint64_t a, uint64_t b, uint64_t *r)
{
    if (a != 0 && b > UINT64_MAX / a)
        return false;
    *r = a * b;
    return true;
}

copse_status copse__kv_plan(uint32_t n_layers, uint32_t n_kv_heads, uint32_t head_dim,
                            uint32_t bytes_per_elem, uint32_t block_size, uint64_t mem_budget,
                            copse_kv_plan *plan, char *err, size_t err_size)
{
    assert(plan);
    memset(plan, 0, sizeof *plan);
    if (!n_layers || !n_kv_heads || !head_dim || !bytes_per_elem || !block_size)
        return copse__errorf(err, err_size, COPSE_EINVAL,
                             "kv plan: n_layers %u, n_kv_heads %u, head_dim %u, bytes_per_elem %u "
                             "and block_size %u must all be non-zero",
                             n_layers, n_kv_heads, head_dim, bytes_per_elem, block_size);

    uint64_t kv_dim = (uint64_t)n_kv_heads * head_dim; /* < 2^64: two 32-bit factors */
    uint64_t per_token, per_block;
    if (!mul_u64(2ull * n_layers, kv_dim, &per_token) ||
        !mul_u64(per_token, bytes_per_elem, &per_token) ||
        !mul_u64(per_token, block_size, &per_block))
        return copse__errorf(err, err_size, COPSE_ERANGE,
                             "kv plan: block size overflows 64 bits (%u layers x %u kv heads x "
                             "%u head dim x %u bytes x %u tokens)",
                             n_layers, n_kv_heads, head_dim, bytes_per_elem, block_size);

    uint64_t n = mem_budget / per_block;
    if (n < 1)
        return copse__errorf(err, err_size, COPSE_ENOMEM,
                             "kv plan: a budget of %llu bytes holds no block; one block of %u "
                             "tokens needs %llu bytes (%llu bytes/token = 2 x %u layers x %u kv "
                             "heads x %u head dim x %u bytes)",
                             (unsigned long long)mem_budget, block_size,
                             (unsigned long long)per_block, (unsigned long long)per_token,
                             n_layers, n_kv_heads, head_dim, bytes_per_elem);
    /* every slot (block * block_size + offset) must fit in int32_t */
    uint64_t slot_cap = (uint64_t)INT32_MAX / block_size;
    if (n > slot_cap)
        n = slot_cap;
    if (n < 1)
        return copse__errorf(err, err_size, COPSE_ERANGE,
                             "kv plan: block_size %u leaves no block whose slots fit in int32",
                             block_size);

    plan->n_layers = n_layers;
    plan->n_kv_heads = n_kv_heads;
    plan->head_dim = head_dim;
    plan->bytes_per_elem = bytes_per_elem;
    plan->block_size = block_size;
    plan->mem_budget = mem_budget;
    plan->kv_dim = kv_dim;
    plan->bytes_per_token = per_token;
    plan->bytes_per_block = per_block;
    plan->n_blocks = (uint32_t)n;
    plan->total_bytes = n * per_block;                 /* <= mem_budget */
    plan->pool_bytes = plan->total_bytes / (2ull * n_layers); /* exact */
    return COPSE_OK;
}

/* ---------------------------------------------------------------- lifecycle */

copse_status copse__kvcache_create(const copse_kv_plan *plan, uint32_t max_seqs,
                                   uint32_t max_blocks_per_seq, copse_kvcache **out, char *err,
                                   size_t err_size)
{
    copse_status st;
    copse_kvcache *kv = NULL;

    assert(plan && out);
    *out = NULL;
    if (!plan->n_blocks || !plan->block_size ||
        (uint64_t)plan->n_blocks * plan->block_size > (uint64_t)INT32_MAX)
        return copse__errorf(err, err_size, COPSE_EINVAL,
                             "kvcache: plan of %u blocks of %u tokens is not a valid plan",
                             plan->n_blocks, plan->block_size);
    if (!max_seqs || max_seqs > (uint32_t)INT32_MAX || !max_blocks_per_seq)
        return copse__errorf(err, err_size, COPSE_EINVAL,
                             "kvcache: max_seqs %u and max_blocks_per_seq %u must be in [1, 2^31)",
                             max_seqs, max_blocks_per_seq);
    /* a sequence can never hold more blocks than exist */
    if (max_blocks_per_seq > plan->n_blocks)
        max_blocks_per_seq = plan->n_blocks;
    if ((uint64_t)max_seqs * max_blocks_per_seq > SIZE_MAX / sizeof(int32_t)) {
        st = copse__errorf(err, err_size, COPSE_ENOMEM,
                           "kvcache: block tables of %u x %u entries do not fit in memory",
                           max_seqs, max_blocks_per_seq);
        goto fail;
    }

    kv = calloc(1, sizeof *kv);
    if (!kv)
        goto fail_oom;
    kv->plan = *plan;
    kv->block_size = plan->block_size;
    kv->n_blocks = plan->n_blocks;
    kv->max_seqs = max_seqs;
    kv->max_blocks_per_seq = max_blocks_per_seq;

    size_t n_table = (size_t)max_seqs * max_blocks_per_seq;
    kv->tables = malloc(n_table * sizeof *kv->tables);
    kv->seqs = calloc(max_seqs, sizeof *kv->seqs);
    kv->refcount = calloc(kv->n_blocks, sizeof *kv->refcount);
    kv->free_blocks = malloc((size_t)kv->n_blocks * sizeof *kv->free_blocks);
    kv->free_seqs = malloc((size_t)max_seqs * sizeof *kv->free_seqs);
    kv->check_count = malloc((size_t)kv->n_blocks * sizeof *kv->check_count);
    kv->check_mark = malloc((size_t)kv->n_blocks * sizeof *kv->check_mark);
    kv->check_seq = malloc(max_seqs);
    if (!kv->tables || !kv->seqs || !kv->refcount || !kv->free_blocks || !kv->free_seqs ||
        !kv->check_count || !kv->check_mark || !kv->check_seq)
        goto fail_oom;

    for (size_t i = 0; i < n_table; i++)
        kv->tables[i] = -1;
    /* stacks: the top (last entry) is the lowest id */
    for (uint32_t i = 0; i < kv->n_blocks; i++)
        kv->free_blocks[i] = (int32_t)(kv->n_blocks - 1 - i);
    kv->n_free = kv->n_blocks;
    for (uint32_t i = 0; i < max_seqs; i++)
        kv->free_seqs[i] = (int32_t)(max_seqs - 1 - i);
    kv->n_free_seqs = max_seqs;

    *out = kv;
    return COPSE_OK;

fail_oom:
    st = copse__errorf(err, err_size, COPSE_ENOMEM,
                       "kvcache: out of host memory for the bookkeeping of %u blocks, %u sequences",
                       plan->n_blocks, max_seqs);
fail:
    copse__kvcache_destroy(kv);
    return st;
}

void copse__kvcache_destroy(copse_kvcache *kv)
{
    if (!kv)
        return;
    free(kv->tables);
    free(kv->seqs);
    free(kv->refcount);
    free(kv->free_blocks);
    free(kv->free_seqs);
    free(kv->check_count);
    free(kv->check_mark);
    free(kv->check_seq);
    free(kv);
}

/* ---------------------------------------------------------------- internal helpers */

static kv_seq *seq_get(const copse_kvcache *kv, int32_t seq)
{
    assert(seq >= 0 && (uint32_t)seq < kv->max_seqs && "kvcache: sequence id out of range");
    assert(kv->seqs[seq].live && "kvcache: sequence is not live");
    return &kv->seqs[seq];
}

static int32_t *seq_table(const copse_kvcache *kv, int32_t seq)
{
    return kv->tables + (size_t)seq * kv->max_blocks_per_seq;
}

/* Blocks needed to hold n_tokens positions. */
static uint64_t blocks_for(const copse_kvcache *kv, uint64_t n_tokens)
{
    return (n_tokens + kv->block_size - 1) / kv->block_size;
}

/* Take a free block (the caller has checked n_free) with refcount 1. */
static int32_t block_alloc(copse_kvcache *kv)
{
    assert(kv->n_free > 0);
    int32_t b = kv->free_blocks[--kv->n_free];
    assert(kv->refcount[b] == 0);
    kv->refcount[b] = 1;
    return b;
}

static void block_ref(copse_kvcache *kv, int32_t b)
{
    assert(kv->refcount[b] > 0);
    if (kv->refcount[b]++ == 1)
        kv->n_shared++;
}

/* Drop one reference; the block returns to the free list with its last one. */
static void block_unref(copse_kvcache *kv, int32_t b)
{
    uint32_t rc = kv->refcount[b];
    assert(rc > 0);
    kv->refcount[b] = rc - 1;
    if (rc == 2)
        kv->n_shared--;
    else if (rc == 1)
        kv->free_blocks[kv->n_free++] = b;
}

/* Release table entries [keep, n_blocks) of seq, last first. */
static void seq_release_tail(copse_kvcache *kv, int32_t seq, uint32_t keep)
{
    kv_seq *s = &kv->seqs[seq];
    int32_t *tab = seq_table(kv, seq);
    while (s->n_blocks > keep) {
        uint32_t i = --s->n_blocks;
        block_unref(kv, tab[i]);
        tab[i] = -1;
    }
}

#ifndef NDEBUG
/* Debug check: positions [from, to) of seq lie in blocks it alone holds. */
static bool range_private(const copse_kvcache *kv, int32_t seq, uint64_t from, uint64_t to)
{
    const int32_t *tab = seq_table(kv, seq);
    for (uint64_t i = from / kv->block_size; i < blocks_for(kv, to); i++)
        if (kv->refcount[tab[i]] != 1)
            return false;
    return true;
}
#endif

/* ---------------------------------------------------------------- sequences */

copse_status copse__kvcache_seq_add(copse_kvcache *kv, int32_t *seq)
{
    assert(kv && seq);
    if (kv->n_free_seqs == 0)
        return COPSE_ENOSPACE;
    int32_t id = kv->free_seqs[--kv->n_free_seqs];
    kv_seq *s = &kv->seqs[id];
    assert(!s->live && s->n_blocks == 0);
    s->len = 0;
    s->live = true;
    *seq = id;
    return COPSE_OK;
}

void copse__kvcache_seq_free(copse_kvcache *kv, int32_t seq)
{
    kv_seq *s = seq_get(kv, seq);
    seq_release_tail(kv, seq, 0);
    kv->tokens_committed -= s->len;
    s->len = 0;
    s->live = false;
    kv->free_seqs[kv->n_free_seqs++] = seq;
}

copse_status copse__kvcache_seq_fork(copse_kvcache *kv, int32_t src, int32_t *dst)
{
    const kv_seq *s = seq_get(kv, src);
    assert(dst);
    if (kv->n_free_seqs == 0)
        return COPSE_ENOSPACE;
    int32_t id = kv->free_seqs[--kv->n_free_seqs];
    kv_seq *d = &kv->seqs[id];
    assert(!d->live && d->n_blocks == 0);

    uint32_t n = (uint32_t)blocks_for(kv, s->len); /* committed blocks only */
    const int32_t *st = seq_table(kv, src);
    int32_t *dt = seq_table(kv, id);
    for (uint32_t i = 0; i < n; i++) {
        dt[i] = st[i];
        block_ref(kv, st[i]);
    }
    d->n_blocks = n;
    d->len = s->len;
    d->live = true;
    kv->tokens_committed += s->len;
    *dst = id;
    return COPSE_OK;
}

copse_status copse__kvcache_reserve(copse_kvcache *kv, int32_t seq, uint32_t n_tokens,
                                    copse_kv_copy *cow)
{
    kv_seq *s = seq_get(kv, seq);
    assert(cow);
    cow->src = cow->dst = cow->n = 0;
    if (n_tokens == 0)
        return COPSE_OK;

    uint64_t want = blocks_for(kv, (uint64_t)s->len + n_tokens);
    if (want > kv->max_blocks_per_seq)
        return COPSE_ERANGE;
    uint32_t grow = want > s->n_blocks ? (uint32_t)(want - s->n_blocks) : 0;

    /* Only the block holding position len can be shared and written (see the
     * invariant in kvcache.h); with len on a block boundary that block is a
     * scratch block and private. */
    int32_t *tab = seq_table(kv, seq);
    uint32_t bi = s->len / kv->block_size, off = s->len % kv->block_size;
    bool need_cow = off != 0 && kv->refcount[tab[bi]] > 1;
    assert(off != 0 || bi >= s->n_blocks || kv->refcount[tab[bi]] == 1);

    if ((uint64_t)grow + need_cow > kv->n_free)
        return COPSE_ENOSPACE;

    /* from here on nothing can fail */
    if (need_cow) {
        int32_t old = tab[bi], fresh = block_alloc(kv);
        block_unref(kv, old); /* was shared: stays in use by the others */
        tab[bi] = fresh;
        cow->src = old * (int32_t)kv->block_size;
        cow->dst = fresh * (int32_t)kv->block_size;
        cow->n = (int32_t)off;
    }
    for (uint32_t i = 0; i < grow; i++)
        tab[s->n_blocks++] = block_alloc(kv);
    return COPSE_OK;
}

void copse__kvcache_commit(copse_kvcache *kv, int32_t seq, uint32_t n)
{
    kv_seq *s = seq_get(kv, seq);
    assert((uint64_t)s->len + n <= (uint64_t)s->n_blocks * kv->block_size &&
           "kvcache: commit past the reserved capacity");
    assert(range_private(kv, seq, s->len, (uint64_t)s->len + n) &&
           "kvcache: commit into a shared block (reserve after fork)");
    s->len += n;
    kv->tokens_committed += n;
}

void copse__kvcache_truncate(copse_kvcache *kv, int32_t seq, uint32_t new_len)
{
    kv_seq *s = seq_get(kv, seq);
    assert(new_len <= s->len && "kvcache: truncate cannot grow a sequence");
    seq_release_tail(kv, seq, (uint32_t)blocks_for(kv, new_len));
    kv->tokens_committed -= s->len - new_len;
    s->len = new_len;
}

/* ---------------------------------------------------------------- slots */

int32_t copse__kvcache_slot(const copse_kvcache *kv, int32_t seq, uint32_t pos)
{
    const kv_seq *s = seq_get(kv, seq);
    uint32_t bs = kv->block_size;
    assert(pos / bs < s->n_blocks && "kvcache: position beyond the sequence's capacity");
    (void)s;
    return seq_table(kv, seq)[pos / bs] * (int32_t)bs + (int32_t)(pos % bs);
}

void copse__kvcache_slots(const copse_kvcache *kv, size_t n, const int32_t *seqs,
                          const uint32_t *pos, int32_t *slots)
{
    for (size_t i = 0; i < n; i++)
        slots[i] = copse__kvcache_slot(kv, seqs[i], pos[i]);
}

/* ---------------------------------------------------------------- speculative commit */

copse_status copse__kvcache_commit_path(copse_kvcache *kv, int32_t seq, uint32_t n_nodes,
                                        const uint32_t *accepted, uint32_t n_accepted,
                                        copse_kv_move *moves, uint32_t *n_moves)
{
    kv_seq *s = seq_get(kv, seq);
    assert(n_moves && (moves || n_accepted == 0) && (accepted || n_accepted == 0));
    *n_moves = 0;

    /* The accepted list comes from the device's verify: check it before use. */
    for (uint32_t j = 0; j < n_accepted; j++)
        if (accepted[j] >= n_nodes || (j > 0 && accepted[j] <= accepted[j - 1]))
            return COPSE_EINVAL;
    if (n_accepted == 0)
        return COPSE_OK;

    uint64_t end = (uint64_t)s->len + n_nodes;
    assert(end <= (uint64_t)s->n_blocks * kv->block_size &&
           "kvcache: tree nodes beyond the reserved capacity");
    assert(range_private(kv, seq, s->len, end) &&
           "kvcache: tree nodes in a shared block (reserve after fork)");
    (void)end;

    /* accepted[j] >= j, so move j's source lies at or after its destination
     * and after every earlier destination: in-order execution is safe. */
    uint32_t m = 0;
    for (uint32_t j = 0; j < n_accepted; j++) {
        if (accepted[j] == j)
            continue; /* already in place: same position, same slot */
        moves[m].src = copse__kvcache_slot(kv, seq, s->len + accepted[j]);
        moves[m].dst = copse__kvcache_slot(kv, seq, s->len + j);
        m++;
    }
    *n_moves = m;
    s->len += n_accepted;
    kv->tokens_committed += n_accepted;
    return COPSE_OK;
}

/* ---------------------------------------------------------------- stats and introspection */

copse_kv_stats copse__kvcache_stats(const copse_kvcache *kv)
{
    copse_kv_stats st = {
        .blocks_total = kv->n_blocks,
        .blocks_used = kv->n_blocks - kv->n_free,
        .blocks_free = kv->n_free,
        .blocks_shared = kv->n_shared,
        .n_seqs = kv->max_seqs - kv->n_free_seqs,
        .tokens_committed = kv->tokens_committed,
    };
    return st;
}

const copse_kv_plan *copse__kvcache_plan(const copse_kvcache *kv)
{
    return &kv->plan;
}

uint32_t copse__kvcache_max_seqs(const copse_kvcache *kv)
{
    return kv->max_seqs;
}

uint32_t copse__kvcache_max_blocks_per_seq(const copse_kvcache *kv)
{
    return kv->max_blocks_per_seq;
}

int copse__kvcache_seq_live(const copse_kvcache *kv, int32_t seq)
{
    return seq >= 0 && (uint32_t)seq < kv->max_seqs && kv->seqs[seq].live;
}

uint32_t copse__kvcache_seq_len(const copse_kvcache *kv, int32_t seq)
{
    return seq_get(kv, seq)->len;
}

uint32_t copse__kvcache_seq_capacity(const copse_kvcache *kv, int32_t seq)
{
    return seq_get(kv, seq)->n_blocks * kv->block_size;
}

const int32_t *copse__kvcache_seq_table(const copse_kvcache *kv, int32_t seq, uint32_t *n_blocks)
{
    const kv_seq *s = seq_get(kv, seq);
    if (n_blocks)
        *n_blocks = s->n_blocks;
    return seq_table(kv, seq);
}

uint32_t copse__kvcache_block_refcount(const copse_kvcache *kv, int32_t block)
{
    assert(block >= 0 && (uint32_t)block < kv->n_blocks);
    return kv->refcount[block];
}

/* ---------------------------------------------------------------- validation */

#define CHECK_OR_FAIL(cond, ...)                                              \
    do {                                                                      \
        if (!(cond))                                                          \
            return copse__errorf(err, err_size, COPSE_EINVAL, __VA_ARGS__);   \
    } while (0)

copse_status copse__kvcache_validate(copse_kvcache *kv, char *err, size_t err_size)
{
    uint32_t nb = kv->n_blocks, bs = kv->block_size;
    uint32_t *count = kv->check_count, *mark = kv->check_mark;
    uint32_t live = 0;
    uint64_t tokens = 0;

    memset(count, 0, (size_t)nb * sizeof *count);
    memset(mark, 0, (size_t)nb * sizeof *mark);

    /* block tables: ids in range, no repeats within a table, lengths fit */
    for (uint32_t q = 0; q < kv->max_seqs; q++) {
        const kv_seq *s = &kv->seqs[q];
        const int32_t *tab = seq_table(kv, (int32_t)q);
        CHECK_OR_FAIL(s->live || (s->n_blocks == 0 && s->len == 0),
                      "seq %u: not live but holds %u blocks, len %u", q, s->n_blocks, s->len);
        CHECK_OR_FAIL(s->n_blocks <= kv->max_blocks_per_seq, "seq %u: %u blocks > max %u", q,
                      s->n_blocks, kv->max_blocks_per_seq);
        CHECK_OR_FAIL((uint64_t)s->len <= (uint64_t)s->n_blocks * bs,
                      "seq %u: len %u beyond capacity %u", q, s->len, s->n_blocks * bs);
        for (uint32_t i = 0; i < kv->max_blocks_per_seq; i++) {
            int32_t b = tab[i];
            if (i >= s->n_blocks) {
                CHECK_OR_FAIL(b == -1, "seq %u: table entry %u past the end holds %d", q, i, b);
                continue;
            }
            CHECK_OR_FAIL(b >= 0 && (uint32_t)b < nb, "seq %u: table entry %u = %d out of range",
                          q, i, b);
            CHECK_OR_FAIL(mark[b] != q + 1, "seq %u: block %d appears twice in its table", q, b);
            mark[b] = q + 1;
            count[b]++;
        }
        if (s->live) {
            live++;
            tokens += s->len;
        }
    }

    /* refcounts equal table references; shared blocks hold committed data */
    uint32_t zero = 0, shared = 0;
    for (uint32_t b = 0; b < nb; b++) {
        CHECK_OR_FAIL(kv->refcount[b] == count[b], "block %u: refcount %u but %u tables hold it", b,
                      kv->refcount[b], count[b]);
        zero += count[b] == 0;
        shared += count[b] > 1;
    }
    for (uint32_t q = 0; q < kv->max_seqs; q++) {
        const kv_seq *s = &kv->seqs[q];
        const int32_t *tab = seq_table(kv, (int32_t)q);
        for (uint32_t i = 0; i < s->n_blocks; i++)
            CHECK_OR_FAIL(count[tab[i]] == 1 || (uint64_t)i * bs < s->len,
                          "seq %u: shared block %d at index %u holds no committed position "
                          "(len %u)", q, tab[i], i, s->len);
    }

    /* the free list: exactly the unreferenced blocks, each once */
    CHECK_OR_FAIL(kv->n_free == zero, "free list holds %u blocks but %u are unreferenced",
                  kv->n_free, zero);
    for (uint32_t i = 0; i < kv->n_free; i++) {
        int32_t b = kv->free_blocks[i];
        CHECK_OR_FAIL(b >= 0 && (uint32_t)b < nb, "free list entry %u = %d out of range", i, b);
        CHECK_OR_FAIL(count[b] == 0, "block %d is both free and in use", b);
        CHECK_OR_FAIL(mark[b] != UINT32_MAX, "block %d is twice on the free list", b);
        mark[b] = UINT32_MAX;
    }

    /* counters and the sequence-id stack */
    CHECK_OR_FAIL(kv->n_shared == shared, "n_shared %u, counted %u", kv->n_shared, shared);
    CHECK_OR_FAIL(kv->tokens_committed == tokens, "tokens_committed %llu, counted %llu",
                  (unsigned long long)kv->tokens_committed, (unsigned long long)tokens);
    CHECK_OR_FAIL(live + kv->n_free_seqs == kv->max_seqs, "%u live + %u free seq ids != %u", live,
                  kv->n_free_seqs, kv->max_seqs);
    memset(kv->check_seq, 0, kv->max_seqs);
    for (uint32_t i = 0; i < kv->n_free_seqs; i++) {
        int32_t q = kv->free_seqs[i];
        CHECK_OR_FAIL(q >= 0 && (uint32_t)q < kv->max_seqs && !kv->seqs[q].live,
                      "free seq id %d is out of range or live", q);
        CHECK_OR_FAIL(!kv->check_seq[q], "seq id %d is twice on the free stack", q);
        kv->check_seq[q] = 1;
    }
    return COPSE_OK;
}

#undef CHECK_OR_FAIL
