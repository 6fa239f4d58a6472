/*
 * engine.c — the multi-request engine (see engine.h).
 *
 * Request life: WAITING (FIFO queue) -> RUNNING (a KV sequence, a tree slot)
 * -> ENDED (its last event is due) -> freed at the start of the next step.
 * A running request is in one of two phases:
 *   prefill  committed < target (target = known tokens, minus the pending
 *            one if there is one): it gets prompt chunks;
 *   decode   committed == n_hist - 1: hist[n_hist - 1] is the pending token,
 *            emitted but not yet in the KV cache; it gets a tree (possibly
 *            empty: plain decoding) rooted there.
 * Plain decoding and speculation share one path: a plain request verifies an
 * empty tree, which samples the next token from the root row with the same
 * randomness key (seed, 0, position) as a speculative request would.
 */
#include "engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "spec/drafter.h"
#include "spec/tree.h"

#define MAX_EOS 64

typedef enum req_state { RQ_WAITING, RQ_RUNNING, RQ_ENDED } req_state;

typedef struct req {
    uint64_t id;
    void *ud;
    copse_request_params p; /* p.prompt points into hist */
    req_state state;
    copse_token *hist;      /* prompt, then emitted tokens, then verify's path scratch */
    int32_t hist_cap;
    int32_t n_hist;         /* known tokens */
    int32_t n_prompt;       /* of the original request */
    int32_t max_len;        /* most known tokens: n_prompt + max_tokens, capped by the context */
    bool has_pending;       /* hist[n_hist - 1] is emitted but not in the KV cache */
    int32_t seq;            /* KV sequence while running, else -1 */
    int32_t slot;           /* tree slot while running, else -1 */
    int32_t committed;      /* KV length while running */
    uint32_t live;          /* drafters with a live sequence for it */
    int32_t budget, depth;
    int32_t budget_now, depth_now; /* this step's tree limits */
    float acc_ema;          /* recent accepted nodes per speculative step */
    int32_t paused;         /* steps since speculation paused (adaptive) */
    uint64_t admitted;      /* admission order (the youngest is preempted first) */

    copse_finish finish;
    copse_status status;
    char error[192];
    uint64_t proposed, accepted, spec_steps;
    copse_token_logprob *lp; /* [depth + 2] when top_logprobs > 0 */

    /* this step */
    int32_t ev_first, ev_n; /* emitted tokens: hist[ev_first .. ev_first + ev_n) */
    bool ev_due;
    int kind;               /* 0 nothing, 1 tree rows, 2 prefill chunk */
    int32_t row0, n_rows;   /* its batch rows */
    int32_t logit0;         /* its first logits row */
    bool final_chunk;       /* the chunk ends the prefill and wants the next token */
    int32_t vpath;          /* its path from the backend verify op this step, or -1: host */

    struct req *next;       /* waiting queue */
} req;

struct copse_engine {
    copse_forward *f;
    copse_kvcache *kv;
    copse_engine_params p;
    copse_token eos[MAX_EOS];
    int32_t n_vocab, max_ctx, block_size, step_tokens, cap_nodes, cap_depth;

    int32_t n_drafters;
    char *specs[COPSE_ENGINE_MAX_DRAFTERS];
    copse_drafter *drafters[COPSE_ENGINE_MAX_DRAFTERS];
    copse_drafter_stats dstats[COPSE_ENGINE_MAX_DRAFTERS];

    req **running;          /* [max_running], admission order */
    int32_t n_running;
    uint8_t *slot_used;     /* [max_running] */
    req *wait_head, *wait_tail;
    int32_t n_waiting;
    req **ended;            /* ended outside a step (cancel), event due: [cap_ended] */
    int32_t n_ended;
    req **to_free;          /* events delivered last step: [cap_ended] */
    int32_t n_to_free;
    int32_t cap_ended;
    uint64_t next_id, n_admitted;

    copse_tree **dtrees;    /* [max_running * n_drafters] */
    copse_tree **mtrees;    /* [max_running] merged */
    copse_verify *verify;
    /* the backend verify op (when the device has it and it is not forced
     * off): trees of one step, [max_running], and their rows, [step_tokens] */
    bool verify_op;
    copse_verify_seq *vseqs;
    copse_verify_path *vpaths;
    copse_verify_result *vres; /* [max_running] this step's results, by running index */
    int32_t *vparent;
    copse_token *vtoken;

    /* a drafter's batched propose, [max_running] */
    req **pb_req;
    int32_t *pb_seq, *pb_nctx, *pb_budget, *pb_depth;
    const copse_token **pb_ctx;
    copse_tree **pb_tree;

    /* batch, [step_tokens] rows */
    copse_token *tokens;
    int32_t *depth;
    uint64_t *mask_arena;
    size_t mask_cap;        /* words */
    int32_t *seqs, *first, *n_new; /* [max_running] */
    const uint64_t **masks;        /* [max_running] */
    int32_t *logit_rows;
    float *logits;          /* [step_tokens][n_vocab] */
    float *lsm;             /* [n_vocab] log-softmax scratch */
    uint32_t *rows;         /* [cap_depth + 2] */
    copse_kv_move *moves;   /* [step_tokens] */

    copse_engine_event *events;
    int32_t n_events, cap_events;
    copse_engine_stats st;

    /* cost model of the adaptive budget: a step's time t = a + b * rows,
     * fitted from exponentially weighted moments of (rows, seconds) over
     * steps without prefill */
    double m_n, m_r, m_t, m_rr, m_rt;
};

/* Before anything is measured: one extra row costs this share of a
 * request's plain step (CPU: verifying 16 tokens costs 3.7-6.4 one-token
 * steps, docs/PERFORMANCE.md). */
#define ROW_COST_PRIOR 0.15
#define PROBE_EVERY 8

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

const char *copse__finish_name(copse_finish f)
{
    switch (f) {
    case COPSE_FINISH_STOP:
        return "stop";
    case COPSE_FINISH_LENGTH:
        return "length";
    case COPSE_FINISH_CANCELLED:
        return "cancelled";
    case COPSE_FINISH_ERROR:
        return "error";
    case COPSE_FINISH_NONE:
        break;
    }
    return "none";
}

copse_engine_params copse__engine_default_params(void)
{
    copse_engine_params p;
    memset(&p, 0, sizeof p);
    p.max_running = 8;
    p.max_waiting = 256;
    p.step_tokens = 512;
    p.spec_nodes = 16;
    p.spec_depth = 8;
    p.adaptive = true;
    return p;
}

copse_request_params copse__request_default_params(void)
{
    copse_request_params p;
    memset(&p, 0, sizeof p);
    p.max_tokens = 16;
    p.sampling = copse__sampling_default_params();
    return p;
}

/* ---------------------------------------------------------------- lifecycle */

static void req_free(req *r)
{
    if (!r)
        return;
    free(r->hist);
    free(r->lp);
    free(r);
}

void copse__engine_destroy(copse_engine *e)
{
    if (!e)
        return;
    for (int32_t i = 0; i < e->n_running; i++)
        req_free(e->running[i]);
    for (req *r = e->wait_head, *n; r; r = n) {
        n = r->next;
        req_free(r);
    }
    for (int32_t i = 0; i < e->n_ended; i++)
        req_free(e->ended[i]);
    for (int32_t i = 0; i < e->n_to_free; i++)
        req_free(e->to_free[i]);
    for (int32_t i = 0; i < COPSE_ENGINE_MAX_DRAFTERS; i++) {
        copse__drafter_destroy(e->drafters[i]);
        free(e->specs[i]);
    }
    if (e->dtrees)
        for (int32_t i = 0; i < e->p.max_running * e->n_drafters; i++)
            copse__tree_destroy(e->dtrees[i]);
    if (e->mtrees)
        for (int32_t i = 0; i < e->p.max_running; i++)
            copse__tree_destroy(e->mtrees[i]);
    copse__verify_destroy(e->verify);
    free(e->dtrees);
    free(e->mtrees);
    free(e->running);
    free(e->slot_used);
    free(e->ended);
    free(e->to_free);
    free(e->tokens);
    free(e->depth);
    free(e->mask_arena);
    free(e->seqs);
    free(e->first);
    free(e->n_new);
    free(e->masks);
    free(e->logit_rows);
    free(e->logits);
    free(e->vseqs);
    free(e->vpaths);
    free(e->vres);
    free(e->vparent);
    free(e->vtoken);
    free(e->lsm);
    free(e->rows);
    free(e->moves);
    free(e->events);
    free(e->pb_req);
    free(e->pb_seq);
    free(e->pb_nctx);
    free(e->pb_budget);
    free(e->pb_depth);
    free(e->pb_ctx);
    free(e->pb_tree);
    free(e);
}

static copse_status check_params(const copse_engine_params *p, uint32_t fwd_max_seqs, char *err,
                                 size_t err_size)
{
    if (p->max_running < 1 || (uint32_t)p->max_running > fwd_max_seqs)
        return copse__errorf(err, err_size, COPSE_EINVAL, "engine: max_running %d must be in [1, %u] (the KV cache's sequences)",
                             p->max_running, fwd_max_seqs);
    if (p->max_waiting < 0 || p->max_waiting > (1 << 20))
        return copse__errorf(err, err_size, COPSE_EINVAL, "engine: max_waiting %d must be in [0, 1048576]",
                             p->max_waiting);
    if (p->step_tokens < 1)
        return copse__errorf(err, err_size, COPSE_EINVAL, "engine: step_tokens %d must be >= 1", p->step_tokens);
    if (p->n_drafters < 0 || p->n_drafters > COPSE_ENGINE_MAX_DRAFTERS || (p->n_drafters && !p->drafters))
        return copse__errorf(err, err_size, COPSE_EINVAL, "engine: n_drafters %d must be in [0, %d]", p->n_drafters,
                             COPSE_ENGINE_MAX_DRAFTERS);
    if (p->spec_nodes < 1 || p->spec_nodes > COPSE_TREE_MAX_NODES)
        return copse__errorf(err, err_size, COPSE_EINVAL, "engine: spec_nodes %d must be in [1, %d]", p->spec_nodes,
                             COPSE_TREE_MAX_NODES);
    if (p->spec_depth < 1 || p->spec_depth > COPSE_TREE_MAX_DEPTH)
        return copse__errorf(err, err_size, COPSE_EINVAL, "engine: spec_depth %d must be in [1, %d]", p->spec_depth,
                             COPSE_TREE_MAX_DEPTH);
    if (p->max_branch < 0 || p->max_branch > 64)
        return copse__errorf(err, err_size, COPSE_EINVAL, "engine: max_branch %d must be in [0, 64]", p->max_branch);
    if (p->n_eos < 0 || p->n_eos > MAX_EOS || (p->n_eos && !p->eos))
        return copse__errorf(err, err_size, COPSE_EINVAL, "engine: n_eos %d must be in [0, %d]", p->n_eos, MAX_EOS);
    return COPSE_OK;
}

static copse_status create_drafters(copse_engine *e, const char *const *specs, char *err, size_t err_size)
{
    for (int32_t i = 0; i < e->p.n_drafters; i++) {
        const char *spec = specs[i];
        if (!spec)
            return copse__errorf(err, err_size, COPSE_EINVAL, "engine: drafter %d has no spec", i);
        for (int32_t j = 0; j < i; j++)
            if (!strcmp(e->specs[j], spec))
                return copse__errorf(err, err_size, COPSE_EINVAL, "engine: drafter '%s' given twice", spec);
        if (!(e->specs[i] = strdup(spec)))
            return copse__errorf(err, err_size, COPSE_ENOMEM, "out of memory");
        copse_drafter_params dp = copse__drafter_default_params();
        dp.n_vocab = e->n_vocab;
        dp.max_seqs = (int32_t)copse__kvcache_max_seqs(e->kv);
        dp.max_nodes = e->cap_nodes;
        dp.max_depth = e->cap_depth;
        dp.bit = 1u << i;
        dp.target = e->f;
        dp.target_gguf = e->p.gguf;
        dp.n_threads = e->p.n_threads;
        if (e->p.max_branch > 0)
            dp.max_branch = e->p.max_branch;
        copse_status st = copse__drafter_create(spec, &dp, &e->drafters[i], err, err_size);
        if (st != COPSE_OK)
            return st;
        e->n_drafters = i + 1;
        e->dstats[i].spec = e->specs[i];
    }
    return COPSE_OK;
}

static copse_status create_trees(copse_engine *e)
{
    const int32_t R = e->p.max_running, D = e->n_drafters;
    e->mtrees = calloc((size_t)R, sizeof *e->mtrees);
    e->dtrees = calloc((size_t)R * (size_t)(D ? D : 1), sizeof *e->dtrees);
    if (!e->mtrees || !e->dtrees)
        return COPSE_ENOMEM;
    int32_t q_total = 0;
    for (int32_t d = 0; d < D; d++) {
        int64_t q = (int64_t)e->cap_nodes * e->drafters[d]->q_per_node;
        if (q > (1 << 22))
            q = 1 << 22;
        for (int32_t s = 0; s < R; s++)
            if (copse__tree_create(e->cap_nodes, 8, (int32_t)q, &e->dtrees[s * D + d]) != COPSE_OK)
                return COPSE_ENOMEM;
        q_total += (int32_t)q;
        if (q_total > (1 << 23))
            q_total = 1 << 23;
    }
    /* a merge of D trees needs room for all their nodes before pruning */
    int64_t merged_nodes = (int64_t)e->cap_nodes * (D > 1 ? D : 1);
    if (merged_nodes > COPSE_TREE_MAX_NODES)
        merged_nodes = COPSE_TREE_MAX_NODES;
    for (int32_t s = 0; s < R; s++)
        if (copse__tree_create((int32_t)merged_nodes, 8, q_total, &e->mtrees[s]) != COPSE_OK)
            return COPSE_ENOMEM;
    return COPSE_OK;
}

copse_status copse__engine_create(copse_forward *f, const copse_engine_params *p, copse_engine **out,
                                  char *err, size_t err_size)
{
    *out = NULL;
    if (!f || !p)
        return copse__errorf(err, err_size, COPSE_EINVAL, "engine: no forward state or params");
    copse_kvcache *kv = copse__forward_kv(f);
    copse_status st = check_params(p, copse__kvcache_max_seqs(kv), err, err_size);
    if (st != COPSE_OK)
        return st;
    copse_engine *e = calloc(1, sizeof *e);
    if (!e)
        return copse__errorf(err, err_size, COPSE_ENOMEM, "out of memory");
    e->f = f;
    e->kv = kv;
    e->p = *p;
    e->p.drafters = NULL;
    e->p.eos = e->eos;
    if (p->n_eos)
        memcpy(e->eos, p->eos, sizeof *e->eos * (size_t)p->n_eos);
    e->n_vocab = (int32_t)copse__forward_hparams(f)->n_vocab;
    e->block_size = (int32_t)copse__kvcache_plan(kv)->block_size;
    e->max_ctx = (int32_t)(copse__kvcache_max_blocks_per_seq(kv) * (uint32_t)e->block_size);
    const copse_forward_params *fp = copse__forward_params(f);
    if ((uint32_t)fp->max_ctx < (uint32_t)e->max_ctx)
        e->max_ctx = (int32_t)fp->max_ctx;
    e->step_tokens = p->step_tokens;
    if ((uint32_t)e->step_tokens > fp->max_tokens)
        e->step_tokens = (int32_t)fp->max_tokens;
    /* a request's tree never exceeds one step */
    e->cap_nodes = p->spec_nodes > 64 ? p->spec_nodes : 64;
    if (e->cap_nodes > e->step_tokens - 1)
        e->cap_nodes = e->step_tokens - 1 > 0 ? e->step_tokens - 1 : 1;
    e->cap_depth = p->spec_depth > 16 ? p->spec_depth : 16;
    e->next_id = 1;

    st = create_drafters(e, p->drafters, err, err_size);
    if (st != COPSE_OK) {
        copse__engine_destroy(e);
        return st;
    }
    if (create_trees(e) != COPSE_OK) {
        copse__engine_destroy(e);
        return copse__errorf(err, err_size, COPSE_ENOMEM, "engine: out of memory for trees");
    }
    if ((st = copse__verify_create(e->n_vocab, e->cap_nodes * (e->n_drafters > 1 ? e->n_drafters : 1), &e->verify,
                                   err, err_size)) != COPSE_OK) {
        copse__engine_destroy(e);
        return st;
    }
    const size_t R = (size_t)p->max_running, T = (size_t)e->step_tokens;
    /* live requests: running + waiting (admitted to the queue while slots
     * were free, see submit) + ended ones whose event is due */
    e->cap_ended = 3 * p->max_running + p->max_waiting + 1;
    e->cap_events = e->cap_ended;
    /* mask words: a sequence of n rows needs n * ceil(n / 64); the rows of all
     * sequences sum to T, so T * ceil(T / 64) bounds the total */
    e->mask_cap = T * (size_t)copse__tree_mask_words((int32_t)T);
    e->running = calloc(R, sizeof *e->running);
    e->slot_used = calloc(R, 1);
    e->ended = calloc((size_t)e->cap_ended, sizeof *e->ended);
    e->to_free = calloc((size_t)e->cap_ended, sizeof *e->to_free);
    e->tokens = calloc(T, sizeof *e->tokens);
    e->depth = calloc(T, sizeof *e->depth);
    e->mask_arena = calloc(e->mask_cap, sizeof *e->mask_arena);
    e->seqs = calloc(R, sizeof *e->seqs);
    e->first = calloc(R, sizeof *e->first);
    e->n_new = calloc(R, sizeof *e->n_new);
    e->masks = calloc(R, sizeof *e->masks);
    e->logit_rows = calloc(T, sizeof *e->logit_rows);
    e->logits = malloc(T * (size_t)e->n_vocab * sizeof *e->logits);
    e->vseqs = calloc(R, sizeof *e->vseqs);
    e->vpaths = calloc(R, sizeof *e->vpaths);
    e->vres = calloc(R, sizeof *e->vres);
    e->vparent = calloc(T, sizeof *e->vparent);
    e->vtoken = calloc(T, sizeof *e->vtoken);
    const char *host_env = getenv("COPSE_VERIFY_HOST");
    e->verify_op = copse__forward_has_verify(f) && !p->verify_on_host &&
                   !(host_env && host_env[0] && strcmp(host_env, "0") != 0);
    e->lsm = malloc((size_t)e->n_vocab * sizeof *e->lsm);
    e->rows = calloc((size_t)COPSE_TREE_MAX_DEPTH + 2, sizeof *e->rows);
    e->moves = calloc(T, sizeof *e->moves);
    e->events = calloc((size_t)e->cap_events, sizeof *e->events);
    e->pb_req = calloc(R, sizeof *e->pb_req);
    e->pb_seq = calloc(R, sizeof *e->pb_seq);
    e->pb_nctx = calloc(R, sizeof *e->pb_nctx);
    e->pb_budget = calloc(R, sizeof *e->pb_budget);
    e->pb_depth = calloc(R, sizeof *e->pb_depth);
    e->pb_ctx = calloc(R, sizeof *e->pb_ctx);
    e->pb_tree = calloc(R, sizeof *e->pb_tree);
    if (!e->running || !e->slot_used || !e->ended || !e->to_free || !e->tokens || !e->depth || !e->mask_arena ||
        !e->seqs || !e->first || !e->n_new || !e->masks || !e->logit_rows || !e->logits || !e->lsm || !e->rows ||
        !e->moves || !e->events || !e->pb_req || !e->pb_seq || !e->pb_nctx || !e->pb_budget || !e->pb_depth ||
        !e->pb_ctx || !e->pb_tree || !e->vseqs || !e->vpaths || !e->vres || !e->vparent || !e->vtoken) {
        copse__engine_destroy(e);
        return copse__errorf(err, err_size, COPSE_ENOMEM, "engine: out of memory");
    }
    *out = e;
    return COPSE_OK;
}

/* ---------------------------------------------------------------- submit and cancel */

copse_status copse__engine_submit(copse_engine *e, const copse_request_params *rp, void *ud, uint64_t *id,
                                  char *err, size_t err_size)
{
    *id = 0;
    if (!rp)
        return copse__errorf(err, err_size, COPSE_EINVAL, "request: no params");
    if (rp->n_prompt < 1 || !rp->prompt)
        return copse__errorf(err, err_size, COPSE_EINVAL, "prompt: must hold at least one token");
    if (rp->max_tokens < 1)
        return copse__errorf(err, err_size, COPSE_EINVAL, "max_tokens: %d must be >= 1", rp->max_tokens);
    if (rp->n_prompt >= e->max_ctx)
        return copse__errorf(err, err_size, COPSE_ERANGE, "prompt: %d tokens do not fit the context of %d tokens",
                             rp->n_prompt, e->max_ctx);
    for (int32_t i = 0; i < rp->n_prompt; i++)
        if (rp->prompt[i] < 0 || rp->prompt[i] >= e->n_vocab)
            return copse__errorf(err, err_size, COPSE_EINVAL, "prompt: token %d at index %d is outside the vocabulary (%d)",
                                 rp->prompt[i], i, e->n_vocab);
    if (rp->drafters >> e->n_drafters)
        return copse__errorf(err, err_size, COPSE_EINVAL, "drafters: mask 0x%x names a drafter the engine does not have (%d)",
                             rp->drafters, e->n_drafters);
    if (rp->spec_nodes < 0 || rp->spec_nodes > e->cap_nodes)
        return copse__errorf(err, err_size, COPSE_EINVAL, "spec_nodes: %d must be in [0, %d] (0: default)",
                             rp->spec_nodes, e->cap_nodes);
    if (rp->spec_depth < 0 || rp->spec_depth > e->cap_depth)
        return copse__errorf(err, err_size, COPSE_EINVAL, "spec_depth: %d must be in [0, %d] (0: default)",
                             rp->spec_depth, e->cap_depth);
    if (rp->top_logprobs < 0 || rp->top_logprobs > COPSE_ENGINE_TOP_LOGPROBS)
        return copse__errorf(err, err_size, COPSE_EINVAL, "top_logprobs: %d must be in [0, %d]", rp->top_logprobs,
                             COPSE_ENGINE_TOP_LOGPROBS);
    copse_status st = copse__sampling_validate(&rp->sampling, err, err_size);
    if (st != COPSE_OK)
        return st;
    int32_t free_slots = e->p.max_running - e->n_running;
    if (e->n_waiting >= e->p.max_waiting + (free_slots > 0 ? free_slots : 0))
        return copse__errorf(err, err_size, COPSE_EBUSY, "engine: %d requests waiting, the queue is full", e->n_waiting);

    req *r = calloc(1, sizeof *r);
    if (!r)
        return copse__errorf(err, err_size, COPSE_ENOMEM, "out of memory");
    r->p = *rp;
    r->budget = rp->spec_nodes ? rp->spec_nodes : e->p.spec_nodes;
    if (r->budget > e->cap_nodes)
        r->budget = e->cap_nodes;
    r->depth = rp->spec_depth ? rp->spec_depth : e->p.spec_depth;
    if (r->depth > e->cap_depth)
        r->depth = e->cap_depth;
    int64_t max_len = (int64_t)rp->n_prompt + rp->max_tokens;
    if (max_len > e->max_ctx)
        max_len = e->max_ctx;
    r->max_len = (int32_t)max_len;
    r->n_prompt = rp->n_prompt;
    r->acc_ema = 1.0f; /* optimistic: try the drafters first */
    r->hist_cap = r->max_len + COPSE_TREE_MAX_DEPTH + 2;
    r->hist = malloc((size_t)r->hist_cap * sizeof *r->hist);
    if (rp->top_logprobs)
        r->lp = calloc((size_t)COPSE_TREE_MAX_DEPTH + 2, sizeof *r->lp);
    if (!r->hist || (rp->top_logprobs && !r->lp)) {
        req_free(r);
        return copse__errorf(err, err_size, COPSE_ENOMEM, "out of memory");
    }
    memcpy(r->hist, rp->prompt, sizeof *r->hist * (size_t)rp->n_prompt);
    r->p.prompt = r->hist;
    r->n_hist = rp->n_prompt;
    r->seq = -1;
    r->slot = -1;
    r->ud = ud;
    r->id = e->next_id++;
    r->state = RQ_WAITING;
    if (e->wait_tail)
        e->wait_tail->next = r;
    else
        e->wait_head = r;
    e->wait_tail = r;
    e->n_waiting++;
    *id = r->id;
    return COPSE_OK;
}

/* Give a running request's KV sequence, drafter sequences and tree slot back. */
static void release(copse_engine *e, req *r)
{
    for (int32_t d = 0; d < e->n_drafters; d++)
        if (r->live & (1u << d))
            e->drafters[d]->iface.seq_end(e->drafters[d], r->seq);
    r->live = 0;
    if (r->seq >= 0)
        copse__kvcache_seq_free(e->kv, r->seq);
    r->seq = -1;
    if (r->slot >= 0)
        e->slot_used[r->slot] = 0;
    r->slot = -1;
    r->committed = 0;
}

static void remove_running(copse_engine *e, req *r)
{
    for (int32_t i = 0; i < e->n_running; i++)
        if (e->running[i] == r) {
            memmove(e->running + i, e->running + i + 1, sizeof *e->running * (size_t)(e->n_running - i - 1));
            e->n_running--;
            return;
        }
}

static void remove_waiting(copse_engine *e, req *r)
{
    req **pp = &e->wait_head, *prev = NULL;
    while (*pp && *pp != r) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (!*pp)
        return;
    *pp = r->next;
    if (e->wait_tail == r)
        e->wait_tail = prev;
    r->next = NULL;
    e->n_waiting--;
}

/* End a request outside a step (or before its step's events): its event is
 * reported by the next step. */
static void end_now(copse_engine *e, req *r, copse_finish why)
{
    if (r->state == RQ_RUNNING) {
        release(e, r);
        remove_running(e, r);
    } else if (r->state == RQ_WAITING) {
        remove_waiting(e, r);
    }
    r->state = RQ_ENDED;
    r->finish = why;
    r->ev_due = true;
    r->ev_n = 0;
    e->ended[e->n_ended++] = r;
}

void copse__engine_cancel(copse_engine *e, uint64_t id)
{
    for (int32_t i = 0; i < e->n_running; i++)
        if (e->running[i]->id == id) {
            end_now(e, e->running[i], COPSE_FINISH_CANCELLED);
            return;
        }
    for (req *r = e->wait_head; r; r = r->next)
        if (r->id == id) {
            end_now(e, r, COPSE_FINISH_CANCELLED);
            return;
        }
}

bool copse__engine_idle(const copse_engine *e)
{
    return e->n_running == 0 && e->n_waiting == 0 && e->n_ended == 0;
}

/* ---------------------------------------------------------------- admission */

static int32_t blocks_for(const copse_engine *e, int32_t tokens)
{
    return (tokens + e->block_size - 1) / e->block_size;
}

/* Tokens the request's KV must hold before it decodes. */
static int32_t prefill_target(const req *r)
{
    return r->has_pending ? r->n_hist - 1 : r->n_hist;
}

static void fail(req *r, copse_status st, const char *msg)
{
    r->finish = COPSE_FINISH_ERROR;
    r->status = st;
    size_t n = strlen(msg);
    if (n >= sizeof r->error)
        n = sizeof r->error - 1;
    memcpy(r->error, msg, n);
    r->error[n] = '\0';
}

/* Admit waiting requests (FIFO) while a sequence, a slot and KV blocks for
 * the prompt (plus one tree) are free. */
static void admit(copse_engine *e)
{
    while (e->wait_head && e->n_running < e->p.max_running) {
        req *r = e->wait_head;
        copse_kv_stats ks = copse__kvcache_stats(e->kv);
        int32_t need = blocks_for(e, prefill_target(r) + 1 + (r->p.drafters ? r->budget : 0));
        if ((int64_t)need > (int64_t)ks.blocks_free && e->n_running > 0)
            return; /* wait for blocks; alone it runs anyway and fails clearly if it cannot */
        int32_t seq;
        if (copse__kvcache_seq_add(e->kv, &seq) != COPSE_OK)
            return;
        remove_waiting(e, r);
        r->seq = seq;
        r->committed = 0;
        for (int32_t s = 0; s < e->p.max_running; s++)
            if (!e->slot_used[s]) {
                e->slot_used[s] = 1;
                r->slot = s;
                break;
            }
        r->state = RQ_RUNNING;
        r->admitted = ++e->n_admitted;
        e->running[e->n_running++] = r;
        for (int32_t d = 0; d < e->n_drafters; d++) {
            if (!(r->p.drafters & (1u << d)))
                continue;
            copse_drafter *dr = e->drafters[d];
            copse_status st = dr->iface.seq_begin(dr, seq, r->hist, r->n_hist, r->hist_cap);
            if (st != COPSE_OK) {
                char msg[160];
                snprintf(msg, sizeof msg, "drafter %s: cannot begin the sequence: %s", e->specs[d], copse_strerror(st));
                fail(r, st, msg);
                end_now(e, r, COPSE_FINISH_ERROR);
                break;
            }
            r->live |= 1u << d;
            if (dr->iface.seq_sampling && (st = dr->iface.seq_sampling(dr, seq, &r->p.sampling)) != COPSE_OK) {
                char msg[160];
                snprintf(msg, sizeof msg, "drafter %s: bad sampling parameters: %s", e->specs[d], copse_strerror(st));
                fail(r, st, msg);
                end_now(e, r, COPSE_FINISH_ERROR);
                break;
            }
        }
    }
}

/* Preempt the youngest running request: free its KV, requeue it first. */
static void preempt_youngest(copse_engine *e)
{
    req *y = e->running[e->n_running - 1];
    for (int32_t i = 0; i < e->n_running; i++)
        if (e->running[i]->admitted > y->admitted)
            y = e->running[i];
    release(e, y);
    remove_running(e, y);
    y->state = RQ_WAITING;
    y->next = e->wait_head;
    e->wait_head = y;
    if (!e->wait_tail)
        e->wait_tail = y;
    e->n_waiting++;
    e->st.preempted++;
}

/* ---------------------------------------------------------------- building the batch */

/* Draft for every decoding request that speculates this step (r->budget_now
 * > 0 and r->depth_now > 0): each drafter proposes for all its requests at
 * once (propose_batch when it has one, so a model drafter runs one draft
 * forward per tree level for all of them), then each request's trees merge
 * under its budget into mtrees[slot]. A request whose drafting fails ends
 * with an error (finish set); the others go on. */
static void draft_all(copse_engine *e)
{
    for (int32_t d = 0; d < e->n_drafters; d++) {
        copse_drafter *dr = e->drafters[d];
        int32_t n = 0;
        for (int32_t i = 0; i < e->n_running; i++) {
            req *r = e->running[i];
            if (r->kind != 1 || r->budget_now < 1 || r->depth_now < 1 || !(r->p.drafters & (1u << d)) ||
                r->finish != COPSE_FINISH_NONE)
                continue;
            e->pb_req[n] = r;
            e->pb_seq[n] = r->seq;
            e->pb_ctx[n] = r->hist;
            e->pb_nctx[n] = r->n_hist;
            e->pb_budget[n] = r->budget_now;
            e->pb_depth[n] = r->depth_now;
            e->pb_tree[n] = e->dtrees[r->slot * e->n_drafters + d];
            n++;
        }
        if (!n)
            continue;
        double t0 = now_s();
        copse_status st = COPSE_OK;
        if (dr->iface.propose_batch && n > 1) {
            st = dr->iface.propose_batch(dr, n, e->pb_seq, e->pb_ctx, e->pb_nctx, e->pb_budget, e->pb_depth,
                                         e->pb_tree);
            if (st != COPSE_OK) /* retry one by one so only the failing request ends */
                for (int32_t k = 0; k < n; k++)
                    copse__tree_reset(e->pb_tree[k], e->pb_ctx[k][e->pb_nctx[k] - 1]);
        }
        if (!dr->iface.propose_batch || n == 1 || st != COPSE_OK)
            for (int32_t k = 0; k < n; k++) {
                copse_status sk = dr->iface.propose(dr, e->pb_seq[k], e->pb_ctx[k], e->pb_nctx[k], e->pb_budget[k],
                                                    e->pb_depth[k], e->pb_tree[k]);
                if (sk != COPSE_OK) {
                    char msg[192];
                    snprintf(msg, sizeof msg, "drafter %s: propose failed: %s", e->specs[d], copse_strerror(sk));
                    fail(e->pb_req[k], sk, msg);
                }
            }
        double dt = now_s() - t0;
        e->dstats[d].draft_s += dt;
        e->st.draft_s += dt;
        for (int32_t k = 0; k < n; k++) {
            int32_t m = copse__tree_size(e->pb_tree[k]);
            if (m > 0 && e->pb_req[k]->finish == COPSE_FINISH_NONE) {
                e->dstats[d].steps++;
                e->dstats[d].proposed += (uint64_t)m;
            }
        }
    }
    for (int32_t i = 0; i < e->n_running; i++) {
        req *r = e->running[i];
        if (r->kind != 1 || r->finish != COPSE_FINISH_NONE)
            continue;
        copse_tree *mt = e->mtrees[r->slot];
        if (r->budget_now < 1 || r->depth_now < 1) {
            copse__tree_reset(mt, r->hist[r->n_hist - 1]);
            continue;
        }
        const copse_tree *in[COPSE_ENGINE_MAX_DRAFTERS];
        int32_t n_in = 0;
        for (int32_t d = 0; d < e->n_drafters; d++)
            if (r->p.drafters & (1u << d))
                in[n_in++] = e->dtrees[r->slot * e->n_drafters + d];
        copse_status st = copse__tree_merge(mt, in, n_in, r->budget_now);
        if (st != COPSE_OK) {
            char msg[192];
            snprintf(msg, sizeof msg, "engine: merging the drafters' trees failed: %s", copse_strerror(st));
            fail(r, st, msg);
        }
    }
}

/* The fitted cost of one more row relative to a request's share of a plain
 * step with n_dec decoding requests (ROW_COST_PRIOR until the fit is
 * trustworthy: enough steps, enough spread in row counts, positive terms). */
static double row_cost_ratio(const copse_engine *e, int32_t n_dec)
{
    if (e->m_n < 8)
        return ROW_COST_PRIOR;
    double var = e->m_rr - e->m_r * e->m_r;
    if (!(var > 0.25))
        return ROW_COST_PRIOR;
    double b = (e->m_rt - e->m_r * e->m_t) / var, a = e->m_t - b * e->m_r;
    double share = (a + b * n_dec) / n_dec;
    if (!(b > 0) || !(share > 0))
        return ROW_COST_PRIOR;
    return b / share;
}

/* The adaptive budget: as many nodes as the recent accepted length makes
 * useful, or none while the expected gain does not pay for the rows. A
 * request's plain step yields 1 token for its share of the step; b more rows
 * cost b times the fitted row cost and yield about acc_ema more tokens. With
 * many requests a request's share is small, so under load speculation must
 * earn more to run. */
static int32_t step_budget(copse_engine *e, req *r, int32_t n_dec)
{
    if (!e->p.adaptive || !r->p.drafters)
        return r->budget;
    int32_t b = (int32_t)(2.0f * r->acc_ema + 2.5f);
    if (b > r->budget)
        b = r->budget;
    double ratio = row_cost_ratio(e, n_dec);
    if ((double)r->acc_ema > 1.1 * ratio * b) {
        r->paused = 0;
        return b;
    }
    if (++r->paused % PROBE_EVERY == 0)
        return b < 2 ? b : 2; /* probe: has the text become predictable? */
    return 0;
}

/* Update the cost model from one forward over `rows` rows (no prefill). */
static void learn_cost(copse_engine *e, int32_t rows, double seconds)
{
    const double w = 0.05; /* about the last 20 steps */
    double r = rows;
    if (e->m_n == 0) {
        e->m_r = r;
        e->m_t = seconds;
        e->m_rr = r * r;
        e->m_rt = r * seconds;
    } else {
        e->m_r += w * (r - e->m_r);
        e->m_t += w * (seconds - e->m_t);
        e->m_rr += w * (r * r - e->m_rr);
        e->m_rt += w * (r * seconds - e->m_rt);
    }
    e->m_n++;
}

/* Lay out this step's batch. Returns the number of rows (0: nothing to run).
 * A request that fails here ends with an error event. */
static int32_t build(copse_engine *e, int32_t *n_seqs_out, int32_t *n_logits_out)
{
    int32_t rows = 0, n_seqs = 0, n_logits = 0;
    size_t mask_used = 0;
    int32_t n_dec = 0;
    for (int32_t i = 0; i < e->n_running; i++) {
        req *r = e->running[i];
        r->kind = 0;
        if (r->has_pending && r->committed == r->n_hist - 1)
            n_dec++;
    }
    /* decoding requests first: one row each, trees from what is left */
    int32_t dec_left = n_dec, reserved = 0;
    for (int32_t i = 0; i < e->n_running; i++) {
        req *r = e->running[i];
        if (!(r->has_pending && r->committed == r->n_hist - 1))
            continue;
        dec_left--;
        if (reserved + 1 + dec_left > e->step_tokens)
            continue; /* no room this step (more decoders than step tokens) */
        int32_t budget = step_budget(e, r, n_dec);
        int32_t room_rows = e->step_tokens - reserved - 1 - dec_left;
        if (budget > room_rows)
            budget = room_rows;
        int32_t room_ctx = e->max_ctx - r->committed - 1;
        if (budget > room_ctx)
            budget = room_ctx;
        int32_t remaining = r->max_len - r->n_hist; /* tokens still allowed after the pending one */
        r->kind = 1;
        r->budget_now = r->p.drafters ? budget : 0;
        r->depth_now = r->depth < remaining ? r->depth : remaining;
        reserved += 1 + (r->budget_now > 0 ? r->budget_now : 0);
    }
    draft_all(e);
    for (int32_t i = 0; i < e->n_running; i++) {
        req *r = e->running[i];
        if (r->kind != 1)
            continue;
        if (r->finish != COPSE_FINISH_NONE) {
            r->kind = 0;
            continue;
        }
        copse_tree *mt = e->mtrees[r->slot];
        int32_t n = copse__tree_flat_rows(mt);
        size_t words = (size_t)copse__tree_mask_words(n);
        uint64_t *mask = NULL;
        if (n > 1) {
            mask = e->mask_arena + mask_used;
            mask_used += (size_t)n * words;
        }
        copse__tree_flatten(mt, e->tokens + rows, e->depth + rows, mask, NULL);
        r->row0 = rows;
        r->n_rows = n;
        r->logit0 = n_logits;
        for (int32_t j = 0; j < n; j++)
            e->logit_rows[n_logits++] = rows + j;
        e->seqs[n_seqs] = r->seq;
        e->first[n_seqs] = rows;
        e->n_new[n_seqs] = n;
        e->masks[n_seqs] = mask;
        n_seqs++;
        rows += n;
    }
    /* prefill chunks, oldest first (running[] is in admission order) */
    for (int32_t i = 0; i < e->n_running && rows < e->step_tokens; i++) {
        req *r = e->running[i];
        if (r->finish != COPSE_FINISH_NONE)
            continue;
        int32_t target = prefill_target(r);
        if (r->committed >= target)
            continue;
        int32_t chunk = target - r->committed;
        if (chunk > e->step_tokens - rows)
            chunk = e->step_tokens - rows;
        memcpy(e->tokens + rows, r->hist + r->committed, sizeof *e->tokens * (size_t)chunk);
        for (int32_t j = 0; j < chunk; j++)
            e->depth[rows + j] = j;
        r->kind = 2;
        r->row0 = rows;
        r->n_rows = chunk;
        r->final_chunk = r->committed + chunk == target && !r->has_pending;
        r->logit0 = n_logits;
        if (r->final_chunk)
            e->logit_rows[n_logits++] = rows + chunk - 1;
        e->seqs[n_seqs] = r->seq;
        e->first[n_seqs] = rows;
        e->n_new[n_seqs] = chunk;
        e->masks[n_seqs] = NULL;
        n_seqs++;
        rows += chunk;
    }
    *n_seqs_out = n_seqs;
    *n_logits_out = n_logits;
    return rows;
}

/* ---------------------------------------------------------------- after the forward */

static void fill_logprobs(copse_engine *e, req *r, int32_t k, copse_token tok, const float *row)
{
    copse_token_logprob *lp = &r->lp[k];
    memset(lp, 0, sizeof *lp);
    lp->token = tok;
    if (copse__sampling_log_softmax(row, e->n_vocab, e->lsm) == COPSE_OK)
        lp->logprob = e->lsm[tok];
    int32_t n = 0;
    if (copse__sampling_top_logprobs(row, e->n_vocab, r->p.top_logprobs, lp->top, lp->top_logprob, &n) == COPSE_OK)
        lp->n_top = n;
}

/* The verify params of a request that settles this step. */
static copse_verify_params verify_params(const copse_engine *e, const req *r)
{
    copse_verify_params vp = copse__verify_default_params();
    vp.sampling = r->p.sampling;
    vp.sequence = 0;
    vp.step = (uint32_t)r->n_hist;
    vp.history = r->hist;
    vp.n_history = (size_t)r->n_hist;
    vp.history_cap = (size_t)r->hist_cap;
    vp.eos = r->p.ignore_eos ? NULL : e->eos;
    vp.n_eos = r->p.ignore_eos ? 0 : e->p.n_eos;
    vp.fault = e->p.verify_fault;
    vp.stop_cb = r->p.stop_cb;
    vp.stop_ud = r->p.stop_ud;
    vp.max_tokens = r->max_len - r->n_hist;
    if (vp.max_tokens < 1)
        vp.max_tokens = 1; /* cannot happen: a request at max_len has ended */
    return vp;
}

/* The requests that settle this step: decoding trees and finished prefills. */
static bool settles(const req *r)
{
    return r->finish == COPSE_FINISH_NONE && (r->kind == 1 || (r->kind == 2 && r->final_chunk));
}

/*
 * Verify on the device what needs no host-side state: every settling
 * request the op can take (copse__verify_op_eligible, no logprobs, which
 * need the rows) gets its path from one call of the backend verify op; the
 * others (r->vpath -1) read their rows on the host in verify_req. A finished
 * prefill verifies an empty tree rooted at its last prompt token.
 */
static copse_status verify_on_device(copse_engine *e, char *err, size_t err_size)
{
    int32_t n = 0;
    for (int32_t i = 0; i < e->n_running; i++) {
        req *r = e->running[i];
        r->vpath = -1;
        if (!settles(r))
            continue;
        copse_tree *mt = e->mtrees[r->slot];
        if (r->kind == 2)
            copse__tree_reset(mt, r->hist[r->n_hist - 1]); /* sample the first token from the last prompt row */
        if (!e->verify_op || r->p.top_logprobs > 0)
            continue;
        copse_verify_params vp = verify_params(e, r);
        if (!copse__verify_op_eligible(mt, &vp, e->n_vocab))
            continue;
        copse__verify_op_tree(mt, &vp, r->logit0, &e->vseqs[n], e->vparent + r->logit0, e->vtoken + r->logit0);
        r->vpath = n++;
    }
    if (n == 0)
        return COPSE_OK;
    const copse_verify_batch vb = {.n_seqs = n, .seqs = e->vseqs, .parent = e->vparent, .token = e->vtoken};
    copse_status st = copse__forward_verify(e->f, &vb, e->vpaths);
    if (st != COPSE_OK)
        return copse__errorf(err, err_size, st, "engine: the device's verify op failed: %s", copse_strerror(st));
    return COPSE_OK;
}

/*
 * Verify a request's rows (or sample after its last prefill chunk) from its
 * op path or on the host, into *res, with its logprobs. Every request of a
 * step verifies before any settles: settling runs the drafters' observe,
 * whose forwards may overwrite the device logits these rows are read from.
 */
static copse_status verify_req(copse_engine *e, req *r, copse_verify_result *res, char *err, size_t err_size)
{
    const bool decode = r->kind == 1;
    copse_tree *mt = e->mtrees[r->slot];
    const copse_verify_params vp = verify_params(e, r);
    if (r->vpath >= 0)
        return copse__verify_from_path(mt, &e->vpaths[r->vpath], &vp, res, err, err_size);
    copse_status st;
    const int32_t n = decode ? r->n_rows : 1;
    const float *logits =
        copse__forward_logits_rows(e->f, r->logit0, n, e->logits + (size_t)r->logit0 * (size_t)e->n_vocab, &st);
    if (!logits)
        return copse__errorf(err, err_size, st, "engine: reading logits failed: %s", copse_strerror(st));
    st = copse__verify_run(e->verify, mt, logits, (size_t)e->n_vocab, &vp, res, err, err_size);
    if (st != COPSE_OK)
        return st;
    /* logprobs: emitted token k was drawn from row rows[k] (decode) or the
     * prompt's last row */
    if (r->lp)
        for (int32_t k = 0; k < res->n_tokens; k++) {
            int32_t row = 0;
            if (decode)
                row = k == 0 ? 0 : 1 + res->accepted[k - 1];
            fill_logprobs(e, r, k, res->tokens[k], logits + (size_t)row * (size_t)e->n_vocab);
        }
    return COPSE_OK;
}

/* Apply a request's verification result: append the emitted tokens, queue
 * its KV moves, update statistics, let its drafters observe. */
static copse_status settle(copse_engine *e, req *r, const copse_verify_result *rp, uint32_t *n_moves, char *err,
                           size_t err_size)
{
    const bool decode = r->kind == 1;
    copse_tree *mt = e->mtrees[r->slot];
    const copse_verify_result res = *rp;
    copse_status st;

    int32_t n_commit = 0;
    if (decode) {
        /* KV: the pending row and the accepted rows, except a last emitted
         * token that is an accepted node (a cut inside the path): it stays
         * pending, out of the cache */
        n_commit = copse__verify_commit_rows(&res, e->rows);
        if (!res.has_next)
            n_commit--;
        uint32_t nm = 0;
        st = copse__kvcache_commit_path(e->kv, r->seq, (uint32_t)r->n_rows, e->rows, (uint32_t)n_commit,
                                        e->moves + *n_moves, &nm);
        if (st != COPSE_OK)
            return copse__errorf(err, err_size, st, "engine: KV commit failed: %s", copse_strerror(st));
        *n_moves += nm;
        r->committed += n_commit;
        /* statistics */
        int32_t n_nodes = r->n_rows - 1;
        if (n_nodes > 0) {
            r->acc_ema = 0.7f * r->acc_ema + 0.3f * (float)res.n_accepted;
            r->spec_steps++;
            r->proposed += (uint64_t)n_nodes;
            r->accepted += (uint64_t)res.n_accepted;
            uint32_t seen = 0;
            for (int32_t k = 0; k < res.n_accepted; k++) {
                uint32_t bits = copse__tree_node(mt, res.accepted[k])->drafters;
                seen |= bits;
                for (int32_t d = 0; d < e->n_drafters; d++)
                    if (bits & (1u << d))
                        e->dstats[d].accepted++;
            }
            for (int32_t d = 0; d < e->n_drafters; d++)
                if (seen & (1u << d))
                    e->dstats[d].accepted_steps++;
        }
    }
    r->ev_first = r->n_hist;
    r->ev_n = res.n_tokens;
    memcpy(r->hist + r->n_hist, res.tokens, sizeof *res.tokens * (size_t)res.n_tokens);
    r->n_hist += res.n_tokens;
    r->has_pending = res.n_tokens > 0;
    r->ev_due = res.n_tokens > 0;
    e->st.generated_tokens += (uint64_t)res.n_tokens;

    for (int32_t d = 0; d < e->n_drafters; d++) {
        if (!(r->live & (1u << d)))
            continue;
        st = e->drafters[d]->iface.observe(e->drafters[d], r->seq, res.tokens, res.n_tokens);
        if (st != COPSE_OK)
            return copse__errorf(err, err_size, st, "drafter %s: observe failed: %s", e->specs[d], copse_strerror(st));
    }
    if (res.stop == COPSE_VERIFY_EOS || res.stop == COPSE_VERIFY_STOPPED)
        r->finish = COPSE_FINISH_STOP;
    else if (res.stop == COPSE_VERIFY_LIMIT || r->n_hist >= r->max_len)
        r->finish = COPSE_FINISH_LENGTH;
    return COPSE_OK;
}

static void push_event(copse_engine *e, req *r)
{
    copse_engine_event *ev = &e->events[e->n_events++];
    memset(ev, 0, sizeof *ev);
    ev->id = r->id;
    ev->ud = r->ud;
    ev->tokens = r->hist + r->ev_first;
    ev->n_tokens = r->ev_n;
    ev->logprobs = r->lp && r->ev_n ? r->lp : NULL;
    ev->finish = r->finish;
    ev->status = r->finish == COPSE_FINISH_ERROR ? r->status : COPSE_OK;
    ev->error = r->finish == COPSE_FINISH_ERROR ? r->error : "";
    ev->n_prompt = r->n_prompt;
    ev->n_generated = r->n_hist - r->n_prompt;
    ev->proposed = r->proposed;
    ev->accepted = r->accepted;
    ev->spec_steps = r->spec_steps;
}

/* End every request with an error (the engine itself failed). */
static void fail_all(copse_engine *e, copse_status st, const char *msg)
{
    while (e->n_running) {
        req *r = e->running[0];
        fail(r, st, msg);
        end_now(e, r, COPSE_FINISH_ERROR);
    }
    while (e->wait_head) {
        req *r = e->wait_head;
        fail(r, st, msg);
        end_now(e, r, COPSE_FINISH_ERROR);
    }
}

/* Move the requests ended outside settle (cancel, admission failures, engine
 * failures) into this step's events, which it closes: returns their count. */
static int32_t flush_ended(copse_engine *e)
{
    for (int32_t i = 0; i < e->n_ended; i++) {
        push_event(e, e->ended[i]);
        e->to_free[e->n_to_free++] = e->ended[i];
    }
    e->n_ended = 0;
    return e->n_events;
}

copse_status copse__engine_step(copse_engine *e, const copse_engine_event **events, int32_t *n_events,
                                char *err, size_t err_size)
{
    *events = e->events;
    *n_events = 0;
    e->n_events = 0;
    for (int32_t i = 0; i < e->n_to_free; i++)
        req_free(e->to_free[i]);
    e->n_to_free = 0;
    for (int32_t i = 0; i < e->n_running; i++)
        e->running[i]->ev_due = false;

    admit(e);
    if (e->n_running == 0) {
        *n_events = flush_ended(e);
        return COPSE_OK;
    }

    int32_t n_rows, n_seqs, n_logits;
    copse_status st;
    char msg[256];
    for (;;) {
        n_rows = build(e, &n_seqs, &n_logits);
        /* requests that failed while proposing end now */
        for (int32_t i = 0; i < e->n_running;)
            if (e->running[i]->finish == COPSE_FINISH_ERROR)
                end_now(e, e->running[i], COPSE_FINISH_ERROR);
            else
                i++;
        if (n_rows == 0) {
            *n_events = flush_ended(e);
            return COPSE_OK;
        }
        copse_fwd_batch b = {.n_tokens = n_rows,
                             .tokens = e->tokens,
                             .depth = e->depth,
                             .n_seqs = n_seqs,
                             .seq = e->seqs,
                             .first = e->first,
                             .n_new = e->n_new,
                             .mask = e->masks,
                             .n_logits = n_logits,
                             .logit_rows = e->logit_rows};
        double t0 = now_s();
        st = copse__forward_run(e->f, &b, NULL, msg, sizeof msg); /* logits stay on the device */
        double dt = now_s() - t0;
        e->st.forward_s += dt;
        if (st == COPSE_OK) {
            int32_t n_dec = 0, prefill = 0;
            for (int32_t i = 0; i < e->n_running; i++) {
                n_dec += e->running[i]->kind == 1;
                prefill += e->running[i]->kind == 2;
            }
            if (!prefill && n_dec)
                learn_cost(e, n_rows, dt);
            break;
        }
        if (st == COPSE_ENOSPACE && e->n_running > 1) {
            preempt_youngest(e);
            continue;
        }
        if (st == COPSE_ENOSPACE || st == COPSE_ERANGE) {
            /* one request that cannot run even alone */
            req *r = e->running[0];
            char m2[sizeof msg + 64];
            snprintf(m2, sizeof m2, "the KV cache cannot hold this request: %s", msg);
            fail(r, st, m2);
            end_now(e, r, COPSE_FINISH_ERROR);
            if (e->n_running == 0) {
                *n_events = flush_ended(e);
                return COPSE_OK;
            }
            continue;
        }
        fail_all(e, st, msg);
        *n_events = flush_ended(e);
        return copse__errorf(err, err_size, st, "%s", msg);
    }
    e->st.steps++;

    /* settle every request of the batch */
    double t0 = now_s();
    uint32_t n_moves = 0;
    if ((st = verify_on_device(e, msg, sizeof msg)) != COPSE_OK) {
        fail_all(e, st, msg);
        *n_events = flush_ended(e);
        return copse__errorf(err, err_size, st, "%s", msg);
    }
    for (int32_t i = 0; i < e->n_running; i++) { /* verify all, then settle (see verify_req) */
        req *r = e->running[i];
        if (settles(r) && (st = verify_req(e, r, &e->vres[i], msg, sizeof msg)) != COPSE_OK)
            fail(r, st, msg);
    }
    for (int32_t i = 0; i < e->n_running; i++) {
        req *r = e->running[i];
        if (r->kind == 2) {
            e->st.prompt_tokens += (uint64_t)r->n_rows;
            copse__kvcache_commit(e->kv, r->seq, (uint32_t)r->n_rows);
            r->committed += r->n_rows;
            if (!r->final_chunk)
                continue;
        } else if (r->kind != 1) {
            continue;
        }
        if (r->finish == COPSE_FINISH_ERROR) /* its verification failed */
            continue;
        st = settle(e, r, &e->vres[i], &n_moves, msg, sizeof msg);
        if (st != COPSE_OK)
            fail(r, st, msg);
    }
    if ((st = copse__forward_kv_moves(e->f, e->moves, (int32_t)n_moves)) != COPSE_OK) {
        snprintf(msg, sizeof msg, "engine: KV moves failed: %s", copse_strerror(st));
        fail_all(e, st, msg);
        *n_events = flush_ended(e);
        return copse__errorf(err, err_size, st, "%s", msg);
    }
    /* give the scratch back; report and retire */
    for (int32_t i = 0; i < e->n_running;) {
        req *r = e->running[i];
        if (r->kind != 0 && r->finish != COPSE_FINISH_ERROR)
            copse__kvcache_truncate(e->kv, r->seq, (uint32_t)r->committed);
        if (r->finish != COPSE_FINISH_NONE) {
            release(e, r);
            remove_running(e, r);
            r->state = RQ_ENDED;
            push_event(e, r);
            e->to_free[e->n_to_free++] = r;
            continue;
        }
        if (r->ev_due)
            push_event(e, r);
        i++;
    }
    e->st.verify_s += now_s() - t0;
    *n_events = flush_ended(e);
    return COPSE_OK;
}

/* ---------------------------------------------------------------- statistics */

copse_engine_stats copse__engine_stats(const copse_engine *e)
{
    copse_engine_stats s = e->st;
    s.running = e->n_running;
    s.waiting = e->n_waiting;
    s.kv = copse__kvcache_stats(e->kv);
    return s;
}

int32_t copse__engine_n_drafters(const copse_engine *e)
{
    return e->n_drafters;
}

copse_drafter_stats copse__engine_drafter_stats(const copse_engine *e, int32_t i)
{
    copse_drafter_stats s;
    memset(&s, 0, sizeof s);
    if (i >= 0 && i < e->n_drafters)
        s = e->dstats[i];
    return s;
}

copse_forward *copse__engine_forward(copse_engine *e)
{
    return e->f;
}

copse_status copse__engine_debug_request(const copse_engine *e, uint64_t id, int32_t *seq,
                                         const copse_token **tokens, int32_t *n_committed)
{
    for (int32_t i = 0; i < e->n_running; i++) {
        const req *r = e->running[i];
        if (r->id == id) {
            *seq = r->seq;
            *tokens = r->hist;
            *n_committed = r->committed;
            return COPSE_OK;
        }
    }
    return COPSE_ENOTFOUND;
}
