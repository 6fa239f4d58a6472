/*
 * test-kvcache.c — the paged KV cache's bookkeeping (core/kvcache.c).
 *
 * The oracle is a simulated backend: a fake KV store (one int64 per slot)
 * that the test writes through the slots the cache hands out, on which it
 * performs the copy-on-write copies and the commit moves the cache returns,
 * and a per-sequence model of what each committed position must hold. After
 * every step of a random workload the committed entries of every live
 * sequence are read back through the cache and compared with the model, and
 * the block accounting is rebuilt from the public block tables and compared
 * with the cache's own counters.
 */
#include "test.h"

#include <stdbool.h>

#include "copse.h"
#include "kvcache.h"

/* ---------------------------------------------------------------- helpers */

static uint64_t rng_state;

static uint32_t rnd(uint32_t n) /* uniform-ish in [0, n), n > 0 */
{
    return (uint32_t)(test_rand(&rng_state) % n);
}

/* A plan with exactly n_blocks blocks of bs tokens (1 layer, 1 byte/elem). */
static copse_kv_plan small_plan(uint32_t n_blocks, uint32_t bs)
{
    copse_kv_plan p;
    copse_status st = copse__kv_plan(1, 1, 1, 1, bs, 2ull * bs * n_blocks, &p, NULL, 0);
    CHECK_STATUS(st, COPSE_OK);
    CHECK_INT_EQ(p.n_blocks, n_blocks);
    return p;
}

static copse_kvcache *make_cache(uint32_t n_blocks, uint32_t bs, uint32_t max_seqs,
                                 uint32_t max_blocks_per_seq)
{
    copse_kv_plan p = small_plan(n_blocks, bs);
    copse_kvcache *kv = NULL;
    char err[256] = "";
    copse_status st = copse__kvcache_create(&p, max_seqs, max_blocks_per_seq, &kv, err, sizeof err);
    CHECK_STATUS(st, COPSE_OK);
    if (st != COPSE_OK)
        fprintf(stderr, "create: %s\n", err);
    return kv;
}

static void check_valid(copse_kvcache *kv)
{
    char err[256] = "";
    copse_status st = copse__kvcache_validate(kv, err, sizeof err);
    CHECK_STATUS(st, COPSE_OK);
    if (st != COPSE_OK)
        fprintf(stderr, "validate: %s\n", err);
}

/* Everything observable about the cache, to show a failed call changed nothing. */
typedef struct snapshot {
    uint64_t stats[6]; /* field by field: a struct copy need not keep padding */
    uint32_t n_seqs;
    int32_t live[16];
    uint32_t len[16], cap[16], nb[16];
    int32_t table[16][64];
} snapshot;

static void snap(const copse_kvcache *kv, snapshot *s)
{
    memset(s, 0, sizeof *s);
    copse_kv_stats st = copse__kvcache_stats(kv);
    s->stats[0] = st.blocks_total;
    s->stats[1] = st.blocks_used;
    s->stats[2] = st.blocks_free;
    s->stats[3] = st.blocks_shared;
    s->stats[4] = st.n_seqs;
    s->stats[5] = st.tokens_committed;
    s->n_seqs = copse__kvcache_max_seqs(kv);
    for (uint32_t q = 0; q < s->n_seqs && q < 16; q++) {
        s->live[q] = copse__kvcache_seq_live(kv, (int32_t)q);
        if (!s->live[q])
            continue;
        s->len[q] = copse__kvcache_seq_len(kv, (int32_t)q);
        s->cap[q] = copse__kvcache_seq_capacity(kv, (int32_t)q);
        const int32_t *t = copse__kvcache_seq_table(kv, (int32_t)q, &s->nb[q]);
        for (uint32_t i = 0; i < s->nb[q] && i < 64; i++)
            s->table[q][i] = t[i];
    }
}

static bool snap_equal(const snapshot *a, const snapshot *b)
{
    return memcmp(a, b, sizeof *a) == 0;
}

/* ---------------------------------------------------------------- plan arithmetic */

static void test_plan(void)
{
    copse_kv_plan p;
    char err[512];

    /* SmolLM2-135M: 30 layers, 3 kv heads of 64, f16, 16-token blocks */
    CHECK_STATUS(copse__kv_plan(30, 3, 64, 2, 16, 100u << 20, &p, err, sizeof err), COPSE_OK);
    CHECK_INT_EQ(p.kv_dim, 192);
    CHECK_INT_EQ(p.bytes_per_token, 2 * 30 * 192 * 2);  /* 23040 */
    CHECK_INT_EQ(p.bytes_per_block, 16 * 23040);        /* 368640 */
    CHECK_INT_EQ(p.n_blocks, (100 << 20) / 368640);     /* 284 */
    CHECK_INT_EQ(p.n_blocks, 284);
    CHECK_INT_EQ(p.total_bytes, 284ull * 368640);
    CHECK_INT_EQ(p.pool_bytes, 284ull * 16 * 192 * 2);
    CHECK_INT_EQ(p.block_size, 16);
    CHECK_INT_EQ(p.mem_budget, 100u << 20);

    /* a budget of exactly one block fits one; one byte less fits none */
    CHECK_STATUS(copse__kv_plan(30, 3, 64, 2, 16, 368640, &p, err, sizeof err), COPSE_OK);
    CHECK_INT_EQ(p.n_blocks, 1);
    err[0] = 0;
    CHECK_STATUS(copse__kv_plan(30, 3, 64, 2, 16, 368639, &p, err, sizeof err), COPSE_ENOMEM);
    CHECK(strstr(err, "368639") != NULL); /* the budget */
    CHECK(strstr(err, "368640") != NULL); /* what one block needs */
    CHECK(strstr(err, "23040") != NULL);  /* per token */
    CHECK_INT_EQ(p.n_blocks, 0);
    CHECK_STATUS(copse__kv_plan(30, 3, 64, 2, 16, 0, &p, NULL, 0), COPSE_ENOMEM);

    /* zero arguments, overflow */
    CHECK_STATUS(copse__kv_plan(0, 3, 64, 2, 16, 1u << 30, &p, err, sizeof err), COPSE_EINVAL);
    CHECK_STATUS(copse__kv_plan(30, 3, 64, 2, 0, 1u << 30, &p, err, sizeof err), COPSE_EINVAL);
    CHECK_STATUS(copse__kv_plan(UINT32_MAX, UINT32_MAX, UINT32_MAX, 2, 16, UINT64_MAX, &p, err,
                                sizeof err),
                 COPSE_ERANGE);
    CHECK_STATUS(copse__kv_plan(1u << 16, 1u << 16, 1u << 16, 1u << 16, 1, UINT64_MAX, &p, err,
                                sizeof err),
                 COPSE_ERANGE);

    /* the slot cap: every slot must fit int32_t */
    CHECK_STATUS(copse__kv_plan(1, 1, 1, 1, 1, UINT64_MAX, &p, err, sizeof err), COPSE_OK);
    CHECK_INT_EQ(p.n_blocks, INT32_MAX);
    CHECK_STATUS(copse__kv_plan(1, 1, 1, 1, 1000, UINT64_MAX, &p, err, sizeof err), COPSE_OK);
    CHECK_INT_EQ(p.n_blocks, INT32_MAX / 1000);

    /* fresh random plans against the arithmetic done here in 128 bits where
     * available, else with care */
    for (int it = 0; it < 20000; it++) {
        uint32_t L = 1 + rnd(128), H = 1 + rnd(64), D = 1 + rnd(512), B = 1 + rnd(4);
        uint32_t bs = 1 + rnd(256);
        uint64_t budget = test_rand(&rng_state) >> rnd(64);
        uint64_t per_tok = 2ull * L * H * D * B; /* < 2^45 */
        uint64_t per_blk = per_tok * bs;         /* < 2^53 */
        copse_status st = copse__kv_plan(L, H, D, B, bs, budget, &p, NULL, 0);
        uint64_t want = budget / per_blk;
        uint64_t cap = (uint64_t)INT32_MAX / bs;
        if (want > cap)
            want = cap;
        if (want == 0) {
            CHECK_STATUS(st, COPSE_ENOMEM);
            continue;
        }
        CHECK_STATUS(st, COPSE_OK);
        CHECK_INT_EQ(p.n_blocks, want);
        CHECK_INT_EQ(p.bytes_per_token, per_tok);
        CHECK_INT_EQ(p.bytes_per_block, per_blk);
        CHECK_INT_EQ(p.kv_dim, (uint64_t)H * D);
        CHECK(p.total_bytes <= budget);
        CHECK(want == cap || budget - p.total_bytes < per_blk);
        CHECK_INT_EQ(p.pool_bytes * 2 * L, p.total_bytes);
        CHECK_INT_EQ(p.pool_bytes, (uint64_t)p.n_blocks * bs * H * D * B);
        CHECK((uint64_t)p.n_blocks * bs <= (uint64_t)INT32_MAX);
    }
}

/* ---------------------------------------------------------------- create */

static void test_create(void)
{
    copse_kv_plan p = small_plan(10, 4);
    copse_kvcache *kv = (copse_kvcache *)&p; /* must be reset to NULL on failure */
    char err[256];

    CHECK_STATUS(copse__kvcache_create(&p, 0, 4, &kv, err, sizeof err), COPSE_EINVAL);
    CHECK(kv == NULL);
    CHECK_STATUS(copse__kvcache_create(&p, 4, 0, &kv, err, sizeof err), COPSE_EINVAL);
    copse_kv_plan bad = p;
    bad.n_blocks = 0;
    CHECK_STATUS(copse__kvcache_create(&bad, 4, 4, &kv, err, sizeof err), COPSE_EINVAL);

    /* max_blocks_per_seq is clamped to the pool */
    CHECK_STATUS(copse__kvcache_create(&p, 3, 1000, &kv, err, sizeof err), COPSE_OK);
    CHECK_INT_EQ(copse__kvcache_max_blocks_per_seq(kv), 10);
    CHECK_INT_EQ(copse__kvcache_max_seqs(kv), 3);
    CHECK_INT_EQ(copse__kvcache_plan(kv)->n_blocks, 10);
    copse_kv_stats s = copse__kvcache_stats(kv);
    CHECK_INT_EQ(s.blocks_total, 10);
    CHECK_INT_EQ(s.blocks_free, 10);
    CHECK_INT_EQ(s.blocks_used, 0);
    CHECK_INT_EQ(s.n_seqs, 0);
    check_valid(kv);
    copse__kvcache_destroy(kv);
    copse__kvcache_destroy(NULL);
}

/* ---------------------------------------------------------------- exhaustion */

static void test_exhaustion(void)
{
    copse_kvcache *kv = make_cache(10, 4, 3, 8);
    if (!kv)
        return;
    int32_t a, b, c, d;
    copse_kv_copy cow;
    snapshot before, after;

    CHECK_STATUS(copse__kvcache_seq_add(kv, &a), COPSE_OK);
    CHECK_STATUS(copse__kvcache_seq_add(kv, &b), COPSE_OK);
    CHECK_STATUS(copse__kvcache_seq_add(kv, &c), COPSE_OK);
    CHECK(a != b && b != c && a != c);
    snap(kv, &before);
    CHECK_STATUS(copse__kvcache_seq_add(kv, &d), COPSE_ENOSPACE); /* max_seqs */
    CHECK_STATUS(copse__kvcache_seq_fork(kv, a, &d), COPSE_ENOSPACE);
    snap(kv, &after);
    CHECK(snap_equal(&before, &after));

    CHECK_STATUS(copse__kvcache_reserve(kv, a, 32, &cow), COPSE_OK); /* 8 blocks */
    CHECK_INT_EQ(cow.n, 0);
    CHECK_INT_EQ(copse__kvcache_seq_capacity(kv, a), 32);
    CHECK_INT_EQ(copse__kvcache_stats(kv).blocks_free, 2);
    copse__kvcache_commit(kv, a, 30);

    /* b wants 3 blocks, 2 are free: refused, nothing changes */
    CHECK_STATUS(copse__kvcache_reserve(kv, b, 4, &cow), COPSE_OK);
    snap(kv, &before);
    CHECK_STATUS(copse__kvcache_reserve(kv, b, 9, &cow), COPSE_ENOSPACE);
    CHECK_INT_EQ(cow.n, 0);
    snap(kv, &after);
    CHECK(snap_equal(&before, &after));
    check_valid(kv);

    /* a would need 9 blocks > max_blocks_per_seq: ERANGE, never fits */
    CHECK_STATUS(copse__kvcache_reserve(kv, a, 3, &cow), COPSE_ERANGE);
    CHECK_STATUS(copse__kvcache_reserve(kv, a, UINT32_MAX, &cow), COPSE_ERANGE);
    snap(kv, &after);
    CHECK(snap_equal(&before, &after));
    /* within capacity: no new block needed, succeeds even with 1 free */
    CHECK_STATUS(copse__kvcache_reserve(kv, a, 2, &cow), COPSE_OK);
    CHECK_STATUS(copse__kvcache_reserve(kv, a, 0, &cow), COPSE_OK);
    snap(kv, &after);
    CHECK(snap_equal(&before, &after));

    CHECK_STATUS(copse__kvcache_reserve(kv, b, 8, &cow), COPSE_OK); /* takes the last */
    CHECK_INT_EQ(copse__kvcache_stats(kv).blocks_free, 0);
    snap(kv, &before);
    CHECK_STATUS(copse__kvcache_reserve(kv, c, 1, &cow), COPSE_ENOSPACE);
    snap(kv, &after);
    CHECK(snap_equal(&before, &after));
    check_valid(kv);

    /* free returns blocks at once */
    copse__kvcache_seq_free(kv, a);
    CHECK(!copse__kvcache_seq_live(kv, a));
    copse_kv_stats s = copse__kvcache_stats(kv);
    CHECK_INT_EQ(s.blocks_free, 8);
    CHECK_INT_EQ(s.blocks_used, 2);
    CHECK_INT_EQ(s.n_seqs, 2);
    CHECK_INT_EQ(s.tokens_committed, 0);
    CHECK_STATUS(copse__kvcache_reserve(kv, c, 32, &cow), COPSE_OK);
    check_valid(kv);
    copse__kvcache_seq_free(kv, b);
    copse__kvcache_seq_free(kv, c);
    s = copse__kvcache_stats(kv);
    CHECK_INT_EQ(s.blocks_free, 10);
    CHECK_INT_EQ(s.blocks_used, 0);
    CHECK_INT_EQ(s.n_seqs, 0);
    check_valid(kv);

    /* ids are reused; a clamped cache refuses more than the whole pool */
    CHECK_STATUS(copse__kvcache_seq_add(kv, &d), COPSE_OK);
    CHECK(d >= 0 && d < 3);
    copse__kvcache_destroy(kv);

    kv = make_cache(10, 4, 2, 100);
    if (!kv)
        return;
    CHECK_STATUS(copse__kvcache_seq_add(kv, &a), COPSE_OK);
    CHECK_STATUS(copse__kvcache_reserve(kv, a, 41, &cow), COPSE_ERANGE);
    CHECK_STATUS(copse__kvcache_reserve(kv, a, 40, &cow), COPSE_OK);
    copse__kvcache_destroy(kv);
}

/* ---------------------------------------------------------------- truncate and slots */

static void test_truncate_slots(void)
{
    copse_kvcache *kv = make_cache(16, 4, 4, 16);
    if (!kv)
        return;
    int32_t a, b;
    copse_kv_copy cow;
    CHECK_STATUS(copse__kvcache_seq_add(kv, &a), COPSE_OK);
    CHECK_STATUS(copse__kvcache_seq_add(kv, &b), COPSE_OK);
    CHECK_STATUS(copse__kvcache_reserve(kv, a, 10, &cow), COPSE_OK);
    CHECK_STATUS(copse__kvcache_reserve(kv, b, 5, &cow), COPSE_OK);
    CHECK_INT_EQ(copse__kvcache_seq_capacity(kv, a), 12);
    CHECK_INT_EQ(copse__kvcache_seq_capacity(kv, b), 8);

    /* fresh cache: blocks come out in order; slot arithmetic */
    uint32_t n;
    const int32_t *ta = copse__kvcache_seq_table(kv, a, &n);
    CHECK_INT_EQ(n, 3);
    CHECK_INT_EQ(copse__kvcache_slot(kv, a, 0), ta[0] * 4);
    CHECK_INT_EQ(copse__kvcache_slot(kv, a, 6), ta[1] * 4 + 2);
    CHECK_INT_EQ(copse__kvcache_slot(kv, a, 11), ta[2] * 4 + 3);

    /* ragged batch helper */
    int32_t seqs[5] = {a, b, a, b, a};
    uint32_t pos[5] = {0, 0, 9, 7, 4};
    int32_t slots[5];
    copse__kvcache_slots(kv, 5, seqs, pos, slots);
    for (int i = 0; i < 5; i++)
        CHECK_INT_EQ(slots[i], copse__kvcache_slot(kv, seqs[i], pos[i]));
    for (int i = 0; i < 5; i++)
        for (int j = i + 1; j < 5; j++)
            CHECK(slots[i] != slots[j]);

    copse__kvcache_commit(kv, a, 10);
    CHECK_INT_EQ(copse__kvcache_seq_len(kv, a), 10);
    CHECK_INT_EQ(copse__kvcache_stats(kv).tokens_committed, 10);
    copse__kvcache_truncate(kv, a, 9); /* still needs 3 blocks */
    CHECK_INT_EQ(copse__kvcache_seq_capacity(kv, a), 12);
    copse__kvcache_truncate(kv, a, 8); /* whole block 2 goes */
    CHECK_INT_EQ(copse__kvcache_seq_capacity(kv, a), 8);
    CHECK_INT_EQ(copse__kvcache_stats(kv).blocks_used, 4);
    copse__kvcache_truncate(kv, a, 8); /* no-op */
    CHECK_INT_EQ(copse__kvcache_stats(kv).blocks_used, 4);
    copse__kvcache_truncate(kv, b, 0); /* drops b's scratch */
    CHECK_INT_EQ(copse__kvcache_seq_capacity(kv, b), 0);
    copse__kvcache_truncate(kv, a, 0);
    CHECK_INT_EQ(copse__kvcache_stats(kv).blocks_free, 16);
    CHECK_INT_EQ(copse__kvcache_stats(kv).tokens_committed, 0);
    check_valid(kv);
    copse__kvcache_destroy(kv);
}

/* ---------------------------------------------------------------- fork and copy-on-write */

static void test_fork_cow(void)
{
    enum { BS = 4, NB = 16, NSLOT = BS * NB };
    int64_t store[NSLOT];
    copse_kvcache *kv = make_cache(NB, BS, 4, NB);
    if (!kv)
        return;
    int32_t a, b, c;
    copse_kv_copy cow;
    uint32_t na, nb;

    /* a: 10 committed entries, values 100 + pos */
    CHECK_STATUS(copse__kvcache_seq_add(kv, &a), COPSE_OK);
    CHECK_STATUS(copse__kvcache_reserve(kv, a, 14, &cow), COPSE_OK); /* 4 blocks: one scratch */
    for (uint32_t p = 0; p < 10; p++)
        store[copse__kvcache_slot(kv, a, p)] = 100 + p;
    copse__kvcache_commit(kv, a, 10);

    /* fork shares the 3 committed blocks (partial one included), not scratch */
    CHECK_STATUS(copse__kvcache_seq_fork(kv, a, &b), COPSE_OK);
    const int32_t *ta = copse__kvcache_seq_table(kv, a, &na);
    const int32_t *tb = copse__kvcache_seq_table(kv, b, &nb);
    CHECK_INT_EQ(na, 4);
    CHECK_INT_EQ(nb, 3);
    for (uint32_t i = 0; i < 3; i++) {
        CHECK_INT_EQ(tb[i], ta[i]);
        CHECK_INT_EQ(copse__kvcache_block_refcount(kv, ta[i]), 2);
    }
    CHECK_INT_EQ(copse__kvcache_block_refcount(kv, ta[3]), 1);
    copse_kv_stats s = copse__kvcache_stats(kv);
    CHECK_INT_EQ(s.blocks_shared, 3);
    CHECK_INT_EQ(s.blocks_used, 4);
    CHECK_INT_EQ(s.tokens_committed, 20);
    CHECK_INT_EQ(copse__kvcache_seq_len(kv, b), 10);
    for (uint32_t p = 0; p < 10; p++)
        CHECK_INT_EQ(copse__kvcache_slot(kv, b, p), copse__kvcache_slot(kv, a, p));
    check_valid(kv);

    /* b writes first: copy of the partial block (positions 8, 9) */
    int32_t shared_blk = ta[2];
    CHECK_STATUS(copse__kvcache_reserve(kv, b, 3, &cow), COPSE_OK);
    CHECK_INT_EQ(cow.n, 2);
    CHECK_INT_EQ(cow.src, shared_blk * BS);
    tb = copse__kvcache_seq_table(kv, b, &nb);
    CHECK_INT_EQ(nb, 4); /* 10 + 3 tokens */
    CHECK(tb[2] != shared_blk);
    CHECK_INT_EQ(cow.dst, tb[2] * BS);
    CHECK_INT_EQ(copse__kvcache_block_refcount(kv, shared_blk), 1);
    CHECK_INT_EQ(copse__kvcache_stats(kv).blocks_shared, 2);
    for (int32_t i = 0; i < cow.n; i++)
        store[cow.dst + i] = store[cow.src + i];
    for (uint32_t p = 10; p < 13; p++)
        store[copse__kvcache_slot(kv, b, p)] = 200 + p;
    copse__kvcache_commit(kv, b, 3);

    /* a's reservation of its now-private partial block needs no copy */
    CHECK_STATUS(copse__kvcache_reserve(kv, a, 2, &cow), COPSE_OK);
    CHECK_INT_EQ(cow.n, 0);
    for (uint32_t p = 10; p < 12; p++)
        store[copse__kvcache_slot(kv, a, p)] = 300 + p;
    copse__kvcache_commit(kv, a, 2);

    for (uint32_t p = 0; p < 12; p++)
        CHECK_INT_EQ(store[copse__kvcache_slot(kv, a, p)], p < 10 ? 100 + p : 300 + p);
    for (uint32_t p = 0; p < 13; p++)
        CHECK_INT_EQ(store[copse__kvcache_slot(kv, b, p)], p < 10 ? 100 + p : 200 + p);
    check_valid(kv);

    /* a block boundary fork: no copy on reserve */
    copse__kvcache_truncate(kv, a, 8);
    CHECK_STATUS(copse__kvcache_seq_fork(kv, a, &c), COPSE_OK);
    CHECK_STATUS(copse__kvcache_reserve(kv, c, 5, &cow), COPSE_OK);
    CHECK_INT_EQ(cow.n, 0);
    CHECK_STATUS(copse__kvcache_reserve(kv, a, 5, &cow), COPSE_OK);
    CHECK_INT_EQ(cow.n, 0);
    check_valid(kv);

    /* truncating into a shared block: its tail belongs to the other side */
    copse__kvcache_truncate(kv, c, 5); /* c shares block 1 (positions 4..7) with a */
    CHECK_STATUS(copse__kvcache_reserve(kv, c, 1, &cow), COPSE_OK);
    CHECK_INT_EQ(cow.n, 1); /* position 4 */
    for (int32_t i = 0; i < cow.n; i++)
        store[cow.dst + i] = store[cow.src + i];
    store[copse__kvcache_slot(kv, c, 5)] = -5;
    copse__kvcache_commit(kv, c, 1);
    for (uint32_t p = 0; p < 8; p++)
        CHECK_INT_EQ(store[copse__kvcache_slot(kv, a, p)], 100 + p);
    CHECK_INT_EQ(store[copse__kvcache_slot(kv, c, 5)], -5);
    CHECK_INT_EQ(store[copse__kvcache_slot(kv, c, 4)], 104);

    /* the source going away leaves the fork intact */
    copse__kvcache_seq_free(kv, a);
    for (uint32_t p = 0; p < 13; p++)
        CHECK_INT_EQ(store[copse__kvcache_slot(kv, b, p)], p < 10 ? 100 + p : 200 + p);
    check_valid(kv);

    /* copy-on-write needs a block: exhaustion refuses it cleanly */
    copse__kvcache_seq_free(kv, b);
    copse__kvcache_seq_free(kv, c);
    CHECK_STATUS(copse__kvcache_seq_add(kv, &a), COPSE_OK);
    CHECK_STATUS(copse__kvcache_reserve(kv, a, NB * BS - 2, &cow), COPSE_OK);
    copse__kvcache_commit(kv, a, NB * BS - 3);
    CHECK_STATUS(copse__kvcache_seq_fork(kv, a, &b), COPSE_OK);
    snapshot before, after;
    snap(kv, &before);
    CHECK_STATUS(copse__kvcache_reserve(kv, b, 1, &cow), COPSE_ENOSPACE);
    CHECK_INT_EQ(cow.n, 0);
    CHECK_STATUS(copse__kvcache_reserve(kv, a, 1, &cow), COPSE_ENOSPACE); /* a lost it too */
    snap(kv, &after);
    CHECK(snap_equal(&before, &after));
    check_valid(kv);
    copse__kvcache_destroy(kv);
}

/* ---------------------------------------------------------------- speculative commit */

/* Check a move list against the ordering contract, run it on store, in order. */
static void run_moves(int64_t *store, const copse_kv_move *mv, uint32_t n)
{
    for (uint32_t j = 0; j < n; j++) {
        CHECK(mv[j].src != mv[j].dst);
        /* a source is never a destination written earlier in the list */
        for (uint32_t k = 0; k < j; k++)
            CHECK(mv[k].dst != mv[j].src);
        store[mv[j].dst] = store[mv[j].src];
    }
}

/* A random accepted list: a root-to-node path in a random tree whose nodes are
 * numbered parents first, or (half the time) any increasing subset. */
static uint32_t random_path(uint32_t n_nodes, uint32_t *acc)
{
    uint32_t n = 0;
    if (rnd(2)) {
        int32_t parent[256];
        for (uint32_t i = 0; i < n_nodes; i++)
            parent[i] = i == 0 || rnd(4) == 0 ? -1 : (int32_t)rnd(i);
        if (rnd(8) == 0)
            return 0; /* nothing accepted */
        uint32_t chain[256];
        for (int32_t v = (int32_t)rnd(n_nodes); v >= 0; v = parent[v])
            chain[n++] = (uint32_t)v;
        for (uint32_t j = 0; j < n; j++)
            acc[j] = chain[n - 1 - j];
    } else {
        uint32_t p = 1 + rnd(4); /* keep with probability 1/p */
        for (uint32_t i = 0; i < n_nodes; i++)
            if (rnd(p) == 0)
                acc[n++] = i;
    }
    return n;
}

static void test_commit_path(void)
{
    static const uint32_t sizes[] = {1, 2, 3, 4, 5, 8, 16};
    for (int it = 0; it < 3000; it++) {
        uint32_t bs = sizes[rnd(7)];
        uint32_t nb = 2 * ((192 + bs - 1) / bs) + 2 + rnd(8);
        uint32_t nslot = nb * bs;
        copse_kvcache *kv = make_cache(nb, bs, 2, nb);
        int64_t *store = malloc(nslot * sizeof *store);
        if (!kv || !store)
            break;
        for (uint32_t i = 0; i < nslot; i++)
            store[i] = -1;
        int32_t q, other;
        copse_kv_copy cow;
        CHECK_STATUS(copse__kvcache_seq_add(kv, &other), COPSE_OK);
        CHECK_STATUS(copse__kvcache_seq_add(kv, &q), COPSE_OK);

        /* grow q a block at a time, the other sequence now and then taking a
         * block in between, so q's blocks are scattered over the pool */
        uint32_t len0 = rnd(64), n_nodes = 1 + rnd(128);
        while (copse__kvcache_seq_capacity(kv, q) < len0 + n_nodes) {
            uint32_t cap_q = copse__kvcache_seq_capacity(kv, q);
            uint32_t cap_o = copse__kvcache_seq_capacity(kv, other);
            CHECK_STATUS(copse__kvcache_reserve(kv, q, cap_q + 1, &cow), COPSE_OK);
            if (rnd(2))
                CHECK_STATUS(copse__kvcache_reserve(kv, other, cap_o + 1, &cow), COPSE_OK);
        }
        for (uint32_t p = 0; p < len0; p++)
            store[copse__kvcache_slot(kv, q, p)] = 1000 + p;
        copse__kvcache_commit(kv, q, len0);
        CHECK_STATUS(copse__kvcache_reserve(kv, q, n_nodes, &cow), COPSE_OK); /* already there */
        CHECK_INT_EQ(cow.n, 0);
        for (uint32_t i = 0; i < n_nodes; i++)
            store[copse__kvcache_slot(kv, q, len0 + i)] = 5000 + i;

        uint32_t acc[256], n_acc = random_path(n_nodes, acc);
        copse_kv_move moves[256];
        uint32_t n_moves = 12345;

        /* bad lists are refused, nothing changes */
        if (n_acc >= 2) {
            uint32_t bad[256];
            memcpy(bad, acc, n_acc * sizeof *acc);
            bad[n_acc - 1] = bad[n_acc - 2]; /* not strictly increasing */
            CHECK_STATUS(copse__kvcache_commit_path(kv, q, n_nodes, bad, n_acc, moves, &n_moves),
                         COPSE_EINVAL);
            CHECK_INT_EQ(n_moves, 0);
            bad[n_acc - 1] = n_nodes; /* out of range */
            CHECK_STATUS(copse__kvcache_commit_path(kv, q, n_nodes, bad, n_acc, moves, &n_moves),
                         COPSE_EINVAL);
            CHECK_INT_EQ(copse__kvcache_seq_len(kv, q), len0);
        }

        uint32_t in_place = 0;
        for (uint32_t j = 0; j < n_acc; j++)
            in_place += acc[j] == j;
        CHECK_STATUS(copse__kvcache_commit_path(kv, q, n_nodes, acc, n_acc, moves, &n_moves),
                     COPSE_OK);
        CHECK_INT_EQ(n_moves, n_acc - in_place);
        CHECK_INT_EQ(copse__kvcache_seq_len(kv, q), len0 + n_acc);
        run_moves(store, moves, n_moves);

        /* final layout: prefix, then the accepted path in order */
        for (uint32_t p = 0; p < len0; p++)
            CHECK_INT_EQ(store[copse__kvcache_slot(kv, q, p)], 1000 + p);
        for (uint32_t j = 0; j < n_acc; j++)
            CHECK_INT_EQ(store[copse__kvcache_slot(kv, q, len0 + j)], 5000 + acc[j]);
        check_valid(kv);
        free(store);
        copse__kvcache_destroy(kv);
    }
}

/* ---------------------------------------------------------------- random workload */

enum { W_MAX_SEQS = 8 };

typedef struct workload {
    copse_kvcache *kv;
    uint32_t bs, nb, max_seqs, max_bps, nslot;
    int64_t *store;               /* the fake backend: one value per slot */
    int64_t *model[W_MAX_SEQS];   /* what each committed position must hold */
    uint32_t writable[W_MAX_SEQS];/* positions below this may be written (after reserve) */
    int64_t next_value;
    uint32_t *cnt;                /* per slot scratch */
    uint8_t *writable_slot;       /* per slot scratch */
    uint32_t *refs;               /* per block scratch */
} workload;

/* How often the workload met each interesting case, over all configs: a run
 * that never exhausted the pool or never copied on write proves little. */
static struct {
    unsigned forks, cows, enospace, erange, moves, truncates, frees;
} seen;

static uint32_t w_live_list(workload *w, int32_t *out)
{
    uint32_t n = 0;
    for (uint32_t q = 0; q < w->max_seqs; q++)
        if (copse__kvcache_seq_live(w->kv, (int32_t)q))
            out[n++] = (int32_t)q;
    return n;
}

/* All invariants, checked from the outside after every step. */
static void w_check(workload *w)
{
    copse_kvcache *kv = w->kv;
    copse_kv_stats st = copse__kvcache_stats(kv);
    int32_t live[W_MAX_SEQS];
    uint32_t n_live = w_live_list(w, live);
    uint64_t tokens = 0;

    check_valid(kv);
    memset(w->refs, 0, w->nb * sizeof *w->refs);
    memset(w->cnt, 0, w->nslot * sizeof *w->cnt);
    memset(w->writable_slot, 0, w->nslot);
    for (uint32_t i = 0; i < n_live; i++) {
        int32_t q = live[i];
        uint32_t n, len = copse__kvcache_seq_len(kv, q), cap = copse__kvcache_seq_capacity(kv, q);
        const int32_t *t = copse__kvcache_seq_table(kv, q, &n);
        CHECK_INT_EQ(cap, n * w->bs);
        CHECK(len <= cap);
        CHECK(n <= w->max_bps);
        tokens += len;
        for (uint32_t b = 0; b < n; b++) {
            CHECK(t[b] >= 0 && (uint32_t)t[b] < w->nb);
            w->refs[t[b]]++;
        }
        for (uint32_t p = 0; p < cap; p++) {
            int32_t s = copse__kvcache_slot(kv, q, p);
            CHECK(s >= 0 && (uint32_t)s < w->nslot);
            w->cnt[s]++;
            if (p >= len && p < w->writable[q])
                w->writable_slot[s] = 1;
            if (p < len && w->store[s] != w->model[q][p]) {
                CHECK_INT_EQ(w->store[s], w->model[q][p]);
                fprintf(stderr, "  seq %d pos %u slot %d\n", q, p, s);
            }
        }
    }
    /* a slot a sequence may write (reserved scratch) is held by no one else;
     * only committed entries and the not-yet-copied tail of a shared partial
     * block are shared */
    for (uint32_t s = 0; s < w->nslot; s++)
        if (w->cnt[s] > 1 && w->writable_slot[s]) {
            CHECK(!(w->cnt[s] > 1 && w->writable_slot[s]));
            fprintf(stderr, "  slot %u: %u holders, one may write it\n", s, w->cnt[s]);
        }
    /* refcounts equal table references; free + used = total; shared count */
    uint32_t used = 0, shared = 0;
    for (uint32_t b = 0; b < w->nb; b++) {
        CHECK_INT_EQ(copse__kvcache_block_refcount(kv, (int32_t)b), w->refs[b]);
        used += w->refs[b] > 0;
        shared += w->refs[b] > 1;
    }
    CHECK_INT_EQ(st.blocks_total, w->nb);
    CHECK_INT_EQ(st.blocks_used, used);
    CHECK_INT_EQ(st.blocks_free, w->nb - used);
    CHECK_INT_EQ(st.blocks_used + st.blocks_free, st.blocks_total);
    CHECK_INT_EQ(st.blocks_shared, shared);
    CHECK_INT_EQ(st.n_seqs, n_live);
    CHECK_INT_EQ(st.tokens_committed, tokens);
}

static void w_step(workload *w)
{
    copse_kvcache *kv = w->kv;
    int32_t live[W_MAX_SEQS];
    uint32_t n_live = w_live_list(w, live);
    int32_t q = n_live ? live[rnd(n_live)] : -1;
    copse_kv_copy cow;
    snapshot before, after;

    switch (rnd(q < 0 ? 1 : 9)) {
    case 0: { /* add */
        int32_t id;
        copse_status st = copse__kvcache_seq_add(kv, &id);
        CHECK_STATUS(st, n_live < w->max_seqs ? COPSE_OK : COPSE_ENOSPACE);
        if (st == COPSE_OK) {
            CHECK(id >= 0 && (uint32_t)id < w->max_seqs);
            CHECK_INT_EQ(copse__kvcache_seq_len(kv, id), 0);
            CHECK_INT_EQ(copse__kvcache_seq_capacity(kv, id), 0);
            w->writable[id] = 0;
        }
        break;
    }
    case 1: /* free */
        if (rnd(3) == 0) {
            copse__kvcache_seq_free(kv, q);
            seen.frees++;
        }
        break;
    case 2: { /* fork */
        int32_t id;
        copse_status st = copse__kvcache_seq_fork(kv, q, &id);
        CHECK_STATUS(st, n_live < w->max_seqs ? COPSE_OK : COPSE_ENOSPACE);
        if (st == COPSE_OK) {
            uint32_t len = copse__kvcache_seq_len(kv, q);
            seen.forks++;
            CHECK_INT_EQ(copse__kvcache_seq_len(kv, id), len);
            memcpy(w->model[id], w->model[q], len * sizeof *w->model[id]);
            /* both must reserve again before writing */
            w->writable[id] = len;
            w->writable[q] = len;
        }
        break;
    }
    case 3:
    case 4: { /* reserve, then scribble over the scratch like a tree would */
        uint32_t n = rnd(3 * w->bs + 2);
        uint32_t len = copse__kvcache_seq_len(kv, q), cap = copse__kvcache_seq_capacity(kv, q);
        uint64_t need = ((uint64_t)len + n + w->bs - 1) / w->bs;
        uint32_t nb_now = cap / w->bs;
        uint32_t grow = need > nb_now ? (uint32_t)(need - nb_now) : 0;
        uint32_t n_tab;
        const int32_t *t = copse__kvcache_seq_table(kv, q, &n_tab);
        bool cow_needed = n > 0 && len % w->bs != 0 &&
                          copse__kvcache_block_refcount(kv, t[len / w->bs]) > 1;
        copse_status want = COPSE_OK;
        if (n > 0 && need > w->max_bps)
            want = COPSE_ERANGE;
        else if (n > 0 && grow + cow_needed > copse__kvcache_stats(kv).blocks_free)
            want = COPSE_ENOSPACE;
        snap(kv, &before);
        copse_status st = copse__kvcache_reserve(kv, q, n, &cow);
        CHECK_STATUS(st, want);
        seen.enospace += st == COPSE_ENOSPACE;
        seen.erange += st == COPSE_ERANGE;
        if (st != COPSE_OK) {
            snap(kv, &after);
            CHECK(snap_equal(&before, &after));
            CHECK_INT_EQ(cow.n, 0);
            break;
        }
        CHECK_INT_EQ(cow.n, cow_needed ? len % w->bs : 0);
        seen.cows += cow.n > 0;
        for (int32_t i = 0; i < cow.n; i++)
            w->store[cow.dst + i] = w->store[cow.src + i];
        cap = copse__kvcache_seq_capacity(kv, q);
        CHECK(cap >= len + n);
        CHECK_INT_EQ(cap, (nb_now + grow) * w->bs);
        if (n > 0)
            w->writable[q] = cap;
        for (uint32_t p = len; p < len + n; p++)
            w->store[copse__kvcache_slot(kv, q, p)] = -(int64_t)w->next_value++;
        break;
    }
    case 5: { /* commit */
        uint32_t len = copse__kvcache_seq_len(kv, q);
        if (w->writable[q] <= len)
            break;
        uint32_t k = rnd(w->writable[q] - len + 1);
        for (uint32_t p = len; p < len + k; p++) {
            int64_t v = w->next_value++;
            w->store[copse__kvcache_slot(kv, q, p)] = v;
            w->model[q][p] = v;
        }
        copse__kvcache_commit(kv, q, k);
        CHECK_INT_EQ(copse__kvcache_seq_len(kv, q), len + k);
        break;
    }
    case 6:
    case 7: { /* speculative commit of a tree in the scratch */
        uint32_t len = copse__kvcache_seq_len(kv, q);
        if (w->writable[q] <= len)
            break;
        uint32_t n_nodes = 1 + rnd(w->writable[q] - len);
        if (n_nodes > 256)
            n_nodes = 256;
        int64_t node_val[256];
        for (uint32_t i = 0; i < n_nodes; i++) {
            node_val[i] = w->next_value++;
            w->store[copse__kvcache_slot(kv, q, len + i)] = node_val[i];
        }
        uint32_t acc[256], n_acc = random_path(n_nodes, acc), n_moves;
        copse_kv_move moves[256];
        CHECK_STATUS(copse__kvcache_commit_path(kv, q, n_nodes, acc, n_acc, moves, &n_moves),
                     COPSE_OK);
        run_moves(w->store, moves, n_moves);
        seen.moves += n_moves;
        for (uint32_t j = 0; j < n_acc; j++)
            w->model[q][len + j] = node_val[acc[j]];
        CHECK_INT_EQ(copse__kvcache_seq_len(kv, q), len + n_acc);
        break;
    }
    case 8: { /* truncate, or a ragged slot batch */
        uint32_t len = copse__kvcache_seq_len(kv, q);
        if (rnd(2)) {
            uint32_t nl = rnd(len + 1);
            copse__kvcache_truncate(kv, q, nl);
            seen.truncates++;
            CHECK_INT_EQ(copse__kvcache_seq_len(kv, q), nl);
            CHECK_INT_EQ(copse__kvcache_seq_capacity(kv, q), (nl + w->bs - 1) / w->bs * w->bs);
            w->writable[q] = nl;
        } else {
            int32_t seqs[32], slots[32];
            uint32_t pos[32];
            size_t n = 0;
            for (int i = 0; i < 32; i++) {
                int32_t s = live[rnd(n_live)];
                uint32_t cap = copse__kvcache_seq_capacity(kv, s);
                if (!cap)
                    continue;
                seqs[n] = s;
                pos[n++] = rnd(cap);
            }
            copse__kvcache_slots(kv, n, seqs, pos, slots);
            for (size_t i = 0; i < n; i++) {
                uint32_t nt;
                const int32_t *t = copse__kvcache_seq_table(kv, seqs[i], &nt);
                int32_t want = t[pos[i] / w->bs] * (int32_t)w->bs + (int32_t)(pos[i] % w->bs);
                CHECK_INT_EQ(slots[i], want);
            }
        }
        break;
    }
    }
}

static void test_random_workload(void)
{
    static const uint32_t sizes[] = {1, 2, 3, 4, 5, 8, 16};
    for (int cfg = 0; cfg < 40; cfg++) {
        workload w;
        memset(&w, 0, sizeof w);
        w.bs = sizes[rnd(7)];
        w.nb = 1 + rnd(48);
        w.max_seqs = 1 + rnd(W_MAX_SEQS);
        w.max_bps = 1 + rnd(w.nb + 4);
        w.nslot = w.nb * w.bs;
        w.next_value = 1;
        w.kv = make_cache(w.nb, w.bs, w.max_seqs, w.max_bps);
        if (!w.kv)
            return;
        if (w.max_bps > w.nb)
            w.max_bps = w.nb; /* clamped by create */
        CHECK_INT_EQ(copse__kvcache_max_blocks_per_seq(w.kv), w.max_bps);
        w.store = calloc(w.nslot, sizeof *w.store);
        w.cnt = calloc(w.nslot, sizeof *w.cnt);
        w.writable_slot = calloc(w.nslot, 1);
        w.refs = calloc(w.nb, sizeof *w.refs);
        for (uint32_t q = 0; q < w.max_seqs; q++)
            w.model[q] = calloc((size_t)w.max_bps * w.bs, sizeof *w.model[q]);

        int before = test_failures_;
        for (int step = 0; step < 3000 && test_failures_ == before; step++) {
            w_step(&w);
            w_check(&w);
        }
        if (test_failures_ != before)
            fprintf(stderr, "  in workload config %d: bs %u, %u blocks, %u seqs, %u blocks/seq\n",
                    cfg, w.bs, w.nb, w.max_seqs, w.max_bps);

        /* free everything: all blocks come back */
        int32_t live[W_MAX_SEQS];
        uint32_t n_live = w_live_list(&w, live);
        for (uint32_t i = 0; i < n_live; i++)
            copse__kvcache_seq_free(w.kv, live[i]);
        copse_kv_stats st = copse__kvcache_stats(w.kv);
        CHECK_INT_EQ(st.blocks_free, w.nb);
        CHECK_INT_EQ(st.n_seqs, 0);
        CHECK_INT_EQ(st.tokens_committed, 0);
        check_valid(w.kv);

        for (uint32_t q = 0; q < w.max_seqs; q++)
            free(w.model[q]);
        free(w.store);
        free(w.cnt);
        free(w.writable_slot);
        free(w.refs);
        copse__kvcache_destroy(w.kv);
    }
    fprintf(stderr, "workload: %u forks, %u copies on write, %u ENOSPACE, %u ERANGE, %u moves, "
            "%u truncates, %u frees\n", seen.forks, seen.cows, seen.enospace, seen.erange,
            seen.moves, seen.truncates, seen.frees);
    CHECK(seen.forks > 0 && seen.cows > 0 && seen.enospace > 0 && seen.erange > 0);
    CHECK(seen.moves > 0 && seen.truncates > 0 && seen.frees > 0);
}

/* ---------------------------------------------------------------- main */

int main(void)
{
    rng_state = test_seed();
    test_plan();
    test_create();
    test_exhaustion();
    test_truncate_slots();
    test_fork_cow();
    test_commit_path();
    test_random_workload();
    return test_exit();
}
