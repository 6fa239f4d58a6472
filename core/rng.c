/*
 * rng.c — Philox-4x32-10 and keyed uniforms.
 */
#include "rng.h"

/* Philox-4x32 round constants (Salmon et al. 2011): multipliers and Weyl
 * key increments (golden ratio and sqrt(3) - 1). */
#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

void copse__philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4])
{
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int round = 0; round < 10; round++) {
        if (round > 0) {
            k0 += PHILOX_W0;
            k1 += PHILOX_W1;
        }
        uint64_t p0 = (uint64_t)PHILOX_M0 * c0;
        uint64_t p1 = (uint64_t)PHILOX_M1 * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c0 = n0;
        c1 = (uint32_t)p1;
        c2 = n2;
        c3 = (uint32_t)p0;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

double copse__rng_uniform(uint64_t seed, uint32_t sequence, uint32_t step, uint32_t node,
                          uint32_t draw)
{
    const uint32_t ctr[4] = {sequence, step, node, draw};
    const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    uint32_t r[4];
    copse__philox4x32_10(ctr, key, r);
    /* Top 53 of the first 64 bits: every value k * 2^-53, k < 2^53, is
     * equally likely, so the result is in [0, 1) and never 1. */
    uint64_t bits = ((uint64_t)r[0] << 32 | r[1]) >> 11;
    return (double)bits * 0x1.0p-53;
}

