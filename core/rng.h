/*
 * rng.h — keyed (counter-based) randomness (internal).
 *
 * Every random draw in copse is a pure function of a key, so results do not
 * depend on batch make-up, threads or scheduling order (DESIGN.md,
 * "Verification"). Pure functions: thread-safe.
 */
#ifndef COPSE_CORE_RNG_H
#define COPSE_CORE_RNG_H

#include <stdint.h>

/*
 * Philox-4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2,
 * 3", SC 2011): a counter-based generator. Chosen because it passes
 * TestU01's BigCrush, has published known-answer vectors (Random123), and
 * needs only 32-bit multiplies, so device backends (CUDA/HIP/OpenCL verify
 * kernels) can reproduce it bit for bit.
 *
 * Key layout: key = seed (low word, high word); counter = (sequence, step,
 * node, draw). One call yields 128 bits; a uniform uses the first 64 of them.
 *
 * Meaning of the key, for every caller:
 *   seed      the request's sampling seed (copse_sampling_params.seed)
 *   sequence  the sequence id within the request (n > 1 completions differ)
 *   step      the position being sampled (committed length + tree depth)
 *   node      the tree node index at that step; 0 for plain decoding
 *   draw      which uniform at that node: MSS uses several (child order,
 *             one acceptance test per child, the residual draw)
 * Distinct keys give independent uniforms; no key is ever reused for two
 * purposes, so callers must give each purpose its own draw number.
 */
void copse__philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/* A uniform double in [0, 1) with 53 random bits, a pure function of its
 * arguments. `draw` numbers several independent uniforms at one node. */
double copse__rng_uniform(uint64_t seed, uint32_t sequence, uint32_t step, uint32_t node,
                          uint32_t draw);

#endif /* COPSE_CORE_RNG_H */
