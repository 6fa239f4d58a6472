/*
 * bytes.h — reading little-endian fields from byte pointers (internal).
 *
 * File formats and block layouts are little-endian and may sit at any
 * alignment; these loads assume neither the host's byte order nor alignment,
 * and reinterpret bits through memcpy, so they are UBSan-clean everywhere.
 */
#ifndef COPSE_CORE_BYTES_H
#define COPSE_CORE_BYTES_H

#include <stdint.h>
#include <string.h>

static inline uint16_t copse__rd_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (unsigned)p[1] << 8);
}

static inline uint32_t copse__rd_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t copse__rd_u64(const uint8_t *p)
{
    return (uint64_t)copse__rd_u32(p) | (uint64_t)copse__rd_u32(p + 4) << 32;
}

/* Two's complement int8 from a byte, without implementation-defined conversion. */
static inline int copse__i8_of(uint8_t b)
{
    return b < 128 ? (int)b : (int)b - 256;
}

static inline float copse__f32_from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint32_t copse__f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline double copse__f64_from_bits(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

#endif /* COPSE_CORE_BYTES_H */
