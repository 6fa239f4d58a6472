/*
 * rng.c — Philox-4x32-10 and keyed uniforms: the exported wrappers of the
 * one definition in rng-inline.h (shared with device code).
 */
#include "rng.h"

#include "rng-inline.h"

void copse__philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4])
{
    copse_philox4x32_10_inline(ctr[0], ctr[1], ctr[2], ctr[3], key[0], key[1], out);
}

double copse__rng_uniform(uint64_t seed, uint32_t sequence, uint32_t step, uint32_t node,
                          uint32_t draw)
{
    return copse_rng_uniform_inline(seed, sequence, step, node, draw);
}
