/*
 * rng-inline.h — the keyed generator as static inline functions, one
 * definition for host C and for device code (internal).
 *
 * core/rng.c wraps these as copse__philox4x32_10 / copse__rng_uniform (the
 * contract, the key layout and the meaning of every key field are in
 * rng.h); device kernels that must draw exactly the uniforms the host draws
 * (the backend verify op, backends/cuda/verify.cu) include this header and
 * call copse_rng_uniform_inline. Only 32- and 64-bit integer arithmetic and
 * one exact int-to-double conversion: the result is bit-identical on every
 * compiler and device.
 */
#ifndef COPSE_CORE_RNG_INLINE_H
#define COPSE_CORE_RNG_INLINE_H

#include <stdint.h>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define COPSE_RNG_FN static inline __host__ __device__
#else
#define COPSE_RNG_FN static inline
#endif

/* Philox-4x32 round constants (Salmon et al. 2011): multipliers and Weyl
 * key increments (golden ratio and sqrt(3) - 1). */
#define COPSE_PHILOX_M0 0xD2511F53u
#define COPSE_PHILOX_M1 0xCD9E8D57u
#define COPSE_PHILOX_W0 0x9E3779B9u
#define COPSE_PHILOX_W1 0xBB67AE85u

/* Philox-4x32-10 of counter (c0..c3) under key (k0, k1) into out[4]. */
COPSE_RNG_FN void copse_philox4x32_10_inline(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0,
                                             uint32_t k1, uint32_t out[4])
{
    for (int round = 0; round < 10; round++) {
        if (round > 0) {
            k0 += COPSE_PHILOX_W0;
            k1 += COPSE_PHILOX_W1;
        }
        uint64_t p0 = (uint64_t)COPSE_PHILOX_M0 * c0;
        uint64_t p1 = (uint64_t)COPSE_PHILOX_M1 * c2;
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

/* A uniform double in [0, 1) with 53 random bits (see rng.h). */
COPSE_RNG_FN double copse_rng_uniform_inline(uint64_t seed, uint32_t sequence, uint32_t step, uint32_t node,
                                             uint32_t draw)
{
    uint32_t r[4];
    copse_philox4x32_10_inline(sequence, step, node, draw, (uint32_t)seed, (uint32_t)(seed >> 32), r);
    /* Top 53 of the first 64 bits: every value k * 2^-53, k < 2^53, is
     * equally likely, so the result is in [0, 1) and never 1. */
    uint64_t bits = ((uint64_t)r[0] << 32 | r[1]) >> 11;
    return (double)bits * 0x1.0p-53;
}

#endif /* COPSE_CORE_RNG_INLINE_H */
