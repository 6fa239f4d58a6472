/*
 * tree.h — token trees for speculative decoding (internal).
 *
 * A token tree belongs to one sequence and holds candidate continuations
 * proposed by one or more drafters (DESIGN.md, "Drafters", "Verification").
 *
 * The root
 *   The implicit root is the sequence's *pending* token: the last token
 *   emitted so far (the previous step's correction/bonus token, or the first
 *   token sampled after prefill). It is in the output already but NOT yet in
 *   the target's KV cache. The tree stores it (copse__tree_reset) so that
 *   flatten can put it in front of the nodes. The root is not a node: node
 *   indices, the capacity and the size count only proposed tokens.
 *
 * Nodes
 *   Node i (0 <= i < size) holds a proposed token, its parent (a smaller
 *   node index, or COPSE_TREE_ROOT = -1 for children of the root) and its
 *   depth (1 for root children). Nodes are stored parents before children
 *   (parent < i), so any root-to-node path has strictly increasing indices —
 *   what copse__kvcache_commit_path needs. Siblings always carry distinct
 *   tokens: adding a (parent, token) pair that exists merges into the
 *   existing node (trie property). Depth is at most COPSE_TREE_MAX_DEPTH.
 *
 *   p     the draft probability of the token at its parent position under its
 *         proposer, in (0, 1] (values are clamped into that range; merged
 *         nodes keep the highest). For deterministic drafters it only ranks
 *         nodes.
 *   logp  the cumulative log draft probability: the sum of log p over the
 *         path root..node. Always <= the parent's logp.
 *   drafters  bitmask of every drafter that proposed the node.
 *
 * Proposal distributions (q) and the losslessness contract
 *   Verification (MSS, verify.h) must know the distribution that actually
 *   produced each proposed token. Per node and per proposer:
 *     - deterministic proposal (no q): the drafter picked the token by any
 *       rule that does not look at the verifier's random draws (argmax,
 *       top-k, n-gram lookup, ...). The verifier treats q as one-hot on the
 *       token. This is ALWAYS lossless; bits in node.onehot.
 *     - stochastic proposal (a q id): the drafter DREW the token from the
 *       distribution q stored in the tree's arena (copse__tree_add_q), i.e.
 *       the token is a sample of q conditioned on the path. Several children
 *       of one parent from one stochastic drafter must be drawn *without
 *       replacement* in the order they are added, and their number must not
 *       depend on the drawn values. q must list the whole support the token
 *       was drawn from (after the drafter's temperature/top-k/top-p); the
 *       verifier renormalizes it. Up to COPSE_TREE_MAX_Q stochastic
 *       proposers per node keep their own q (node.q_bit[k], node.q[k]);
 *       beyond that a proposal is demoted to one-hot.
 *   Demotion rule: a drafter that has any one-hot proposal among the
 *   children of a parent (by choice, demotion or merge) is treated as
 *   one-hot for ALL its children of that parent by the verifier (one-hot is
 *   lossless for any proposal; mixing it with q-tries of the same drafter
 *   would reveal draws out of order).
 *   Anything that keeps or drops a sampled node by its sampled value breaks
 *   the "drawn from q" premise, so the helpers below demote q to one-hot
 *   whenever such a selection could happen (see copse__tree_merge). The
 *   expansion helpers produce deterministic (one-hot) nodes only.
 *
 * Memory and threading
 *   copse__tree_create allocates everything (nodes, the q arena, expansion
 *   and merge scratch); reset and every other call reuse it and never
 *   allocate. A tree is used by one thread at a time.
 *
 * Flattened layout (one ragged row of copse_fwd_batch per sequence)
 *   row 0      the pending root token, depth 0 (position committed + 0);
 *   row 1 + i  node i, depth node.depth (position committed + node.depth).
 *   So the sequence contributes n_rows = size + 1 new tokens; token j is
 *   stored in KV scratch at committed + j and rotated at committed +
 *   depth[j], exactly as forward.h describes. The mask (copse_attn_batch
 *   layout) has n_rows rows of copse__tree_mask_words(n_rows) uint64 words;
 *   bit k of row j is set iff row k is row j, the root row 0, or an ancestor
 *   of row j. The target logits of row 0 give the distribution of the root's
 *   children; those of row 1 + i the distribution of node i's children (or
 *   of the bonus token after i). After verification the KV rows to commit
 *   are 0 (the pending token, always) followed by 1 + accepted[k]: strictly
 *   increasing, as copse__kvcache_commit_path requires (verify.h has a
 *   helper).
 */
#ifndef COPSE_SPEC_TREE_H
#define COPSE_SPEC_TREE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "copse.h"

/* ---------------------------------------------------------------- limits */

#define COPSE_TREE_ROOT (-1)      /* parent index of the root's children */
#define COPSE_TREE_NO_Q (-1)      /* "no q": a deterministic (one-hot) proposal */
#define COPSE_TREE_MAX_DEPTH 64   /* deepest node depth any tree may hold */
#define COPSE_TREE_MAX_NODES 4096 /* largest node capacity (excluding the root) */
#define COPSE_TREE_MAX_Q 4        /* stochastic proposers that keep their own q per node */

/* ---------------------------------------------------------------- nodes */

typedef struct copse_tree_node {
    copse_token token;
    int32_t parent;     /* COPSE_TREE_ROOT or a smaller node index */
    int32_t depth;      /* 1 for children of the root */
    float p;            /* draft probability at the parent position, in (0, 1] */
    float logp;         /* sum of log p along the path root..this node */
    uint32_t drafters;  /* every proposer (= onehot | all q_bit[k]) */
    uint32_t onehot;    /* proposers that proposed it deterministically */
    int32_t n_q;        /* stochastic proposals kept: 0 .. COPSE_TREE_MAX_Q */
    uint32_t q_bit[COPSE_TREE_MAX_Q]; /* proposer k's single drafter bit */
    int32_t q[COPSE_TREE_MAX_Q];      /* its q id in the tree's arena */
    /* Child lists, in node order (read-only for users). */
    int32_t first_child;  /* -1 if a leaf */
    int32_t next_sibling; /* -1 if the last child */
    int32_t last_child;   /* -1 if a leaf */
} copse_tree_node;

/* A sparse proposal distribution: n (id, probability) pairs, ids distinct. */
typedef struct copse_tree_q {
    int32_t n;
    const copse_token *ids;
    const float *p;
} copse_tree_q;

typedef struct copse_tree copse_tree;

/* ---------------------------------------------------------------- lifecycle */

/* A tree of at most max_nodes nodes (1 .. COPSE_TREE_MAX_NODES, root not
 * counted), q arena of q_cap (id, p) entries in total (0 allowed: no q) and
 * at most max_nodes q records, and expansion scratch for max_children
 * candidates per expanded node (>= 1). The tree starts empty with root
 * token 0. COPSE_EINVAL for limits out of range, COPSE_ENOMEM. On failure
 * *out is NULL. */
copse_status copse__tree_create(int32_t max_nodes, int32_t max_children, int32_t q_cap,
                                copse_tree **out);
/* Accepts NULL. */
void copse__tree_destroy(copse_tree *t);

/* Drop every node and q record; the root becomes root_token. */
void copse__tree_reset(copse_tree *t, copse_token root_token);

/* ---------------------------------------------------------------- reading */

int32_t copse__tree_size(const copse_tree *t);      /* nodes, root excluded */
int32_t copse__tree_capacity(const copse_tree *t);  /* max_nodes of create */
int32_t copse__tree_max_children(const copse_tree *t);
copse_token copse__tree_root_token(const copse_tree *t);
/* Deepest node depth (0 for an empty tree). */
int32_t copse__tree_depth(const copse_tree *t);
/* Node i, 0 <= i < size (assert). Valid until the next change of t. */
const copse_tree_node *copse__tree_node(const copse_tree *t, int32_t i);
/* First child of node i, or of the root for COPSE_TREE_ROOT; -1 if none.
 * Follow node.next_sibling for the rest. */
int32_t copse__tree_first_child(const copse_tree *t, int32_t i);
/* The child of `parent` (a node or COPSE_TREE_ROOT) carrying token, or -1. */
int32_t copse__tree_find_child(const copse_tree *t, int32_t parent, copse_token token);
/* The tokens on the path root-child .. node i (node.depth tokens, root
 * excluded) into out[0 .. depth); returns the depth. COPSE_TREE_ROOT gives 0. */
int32_t copse__tree_path(const copse_tree *t, int32_t i, copse_token *out);
/* q record `q` (a valid id, assert). Valid until the next reset. */
copse_tree_q copse__tree_get_q(const copse_tree *t, int32_t q);

/* Check every invariant (parents before children, depths, child lists,
 * distinct sibling tokens, p in (0,1], logp sums, drafter masks, q ids).
 * COPSE_EINVAL with a message naming the first violation. O(size). */
copse_status copse__tree_validate(const copse_tree *t, char *err, size_t err_size);

/* ---------------------------------------------------------------- building */

/* Store a sparse proposal distribution (n >= 1 pairs; copied) for later
 * stochastic children; *out_q receives its id. COPSE_ENOSPACE when the
 * arena or the record table is full (nothing stored), COPSE_EINVAL for n < 1
 * or a negative / non-finite probability. */
copse_status copse__tree_add_q(copse_tree *t, const copse_token *ids, const float *p, int32_t n,
                               int32_t *out_q);

/*
 * Add (or merge into) the child of `parent` carrying `token`, proposed by
 * the drafter(s) in drafter_bits (nonzero) with draft probability p.
 *   q == COPSE_TREE_NO_Q: a deterministic proposal (all bits go to onehot).
 *   q a valid id: a stochastic proposal; drafter_bits must be one bit.
 * If the child exists: drafter bits are OR-ed, p becomes the larger one
 * (descendants' logp updated), and the q entry is added unless this
 * proposer already has one there (the first q is kept). *out_node (may be
 * NULL) receives the node index. Errors, nothing changed:
 *   COPSE_ENOSPACE  the tree is full;
 *   COPSE_ERANGE    the child would be deeper than COPSE_TREE_MAX_DEPTH;
 *   COPSE_EINVAL    parent not a node / root, drafter_bits 0, q id unknown,
 *                   several bits with a q, or p NaN.
 */
copse_status copse__tree_add(copse_tree *t, int32_t parent, copse_token token, float p,
                             uint32_t drafter_bits, int32_t q, int32_t *out_node);

/* ---------------------------------------------------------------- expansion */

/*
 * Candidate children of `node` (COPSE_TREE_ROOT for the root): write up to
 * cap (token, probability) pairs to ids/probs and their number to *n_out.
 * The path to the node is available through copse__tree_path. Any order;
 * tokens distinct; probabilities in (0, 1] (others are skipped). A status
 * other than COPSE_OK stops the expansion and is returned.
 */
typedef copse_status (*copse_tree_expand_cb)(void *ud, const copse_tree *t, int32_t node,
                                             copse_token *ids, float *probs, int32_t cap,
                                             int32_t *n_out);

typedef struct copse_tree_expand_params {
    int32_t budget;        /* most nodes (clamped to the capacity) */
    int32_t max_depth;     /* deepest node depth (clamped to COPSE_TREE_MAX_DEPTH) */
    int32_t max_children;  /* candidates asked per node (clamped to the tree's max_children) */
    float min_p;           /* candidates with probability below this are dropped (0: none) */
    uint32_t drafter_bits; /* proposer bits stamped on every node (nonzero) */
} copse_tree_expand_params;

/*
 * Best-first expansion (a priority queue on cumulative draft probability):
 * resets t to root_token, then repeatedly adds the best candidate of the
 * frontier and asks cb for its children, until `budget` nodes exist or the
 * frontier is empty. Because a child's logp never exceeds its parent's,
 * the result is exactly the `budget` nodes of highest logp among all
 * reachable candidates within max_depth (ties: earlier candidate first) and
 * is ancestor-closed. A chain is max_children = 1. Nodes are deterministic
 * (one-hot q). Calls cb once per added node whose depth < max_depth, plus
 * once for the root.
 */
copse_status copse__tree_expand_best(copse_tree *t, copse_token root_token,
                                     const copse_tree_expand_params *params,
                                     copse_tree_expand_cb cb, void *ud);

/*
 * Static expansion vector <k_1, ..., k_m> (SpecInfer): resets t to
 * root_token, then for depth d = 1 .. min(m, max_depth), every node at depth
 * d - 1 gets its k_d most probable candidates (ties: earlier candidate)
 * as children. When a level would pass the budget, only the best of that
 * level by logp are kept (ties: earlier parent, then rank) and expansion
 * stops. params->max_children is ignored (k_d is clamped to the tree's
 * max_children). Deterministic nodes. <1,1,3,1,1,1,1,1> is SpecInfer's
 * default; <1,...,1> is a chain.
 */
copse_status copse__tree_expand_static(copse_tree *t, copse_token root_token,
                                       const int32_t *widths, int32_t n_widths,
                                       const copse_tree_expand_params *params,
                                       copse_tree_expand_cb cb, void *ud);

/* ---------------------------------------------------------------- merge */

/*
 * Trie union of n_in trees (same root token, else COPSE_EINVAL) into out,
 * which is reset first and must not be one of the inputs. The same token
 * path is the same node: drafter bits OR-ed, the higher p kept (logp
 * recomputed along the path), q entries kept per proposer (one per drafter
 * bit, the first input's when two inputs carry the same bit). Node order:
 * input 0's nodes in order, then input 1's new nodes, ... (so each
 * proposer's children of a parent stay in the order it added them).
 *
 * Budget: if the union has more than `budget` nodes, the `budget` best by
 * logp are kept (ties: lower index), always with their ancestors, and the
 * survivors are compacted in order.
 *
 * Losslessness rule for q: when the inputs together hold more than `budget`
 * nodes, the selection above could depend on sampled values, so EVERY q in
 * the result is demoted to one-hot (onehot |= q bits, n_q = 0). When they
 * fit (sum of input sizes <= budget) nothing is dropped and every q is kept.
 *
 * COPSE_ENOSPACE if the union (before pruning) or the q records do not fit
 * out's capacity (out is left reset); out's capacity >= the sum of input
 * sizes always suffices.
 */
copse_status copse__tree_merge(copse_tree *out, const copse_tree *const *in, int32_t n_in,
                               int32_t budget);

/* ---------------------------------------------------------------- flatten */

/* Rows this tree adds to a ragged batch: size + 1 (the pending root first). */
int32_t copse__tree_flat_rows(const copse_tree *t);
/* uint64 words per mask row for n_rows rows: ceil(n_rows / 64). */
int32_t copse__tree_mask_words(int32_t n_rows);

/*
 * Fill one sequence's slice of a copse_fwd_batch (layout above):
 *   tokens[n_rows]  row 0 the root token, row 1 + i node i's token;
 *   depth[n_rows]   0, then node depths (position offset from committed);
 *   mask            n_rows * copse__tree_mask_words(n_rows) words (may be
 *                   NULL): bit k of row j iff k == j, k == 0 or row k is an
 *                   ancestor of row j;
 *   parent_row      [n_rows] (may be NULL): -1 for row 0, else the row of
 *                   the parent (0 for root children).
 * The caller passes pointers into its batch arrays at the sequence's first
 * token; nothing is allocated.
 */
void copse__tree_flatten(const copse_tree *t, copse_token *tokens, int32_t *depth, uint64_t *mask,
                         int32_t *parent_row);

#endif /* COPSE_SPEC_TREE_H */
