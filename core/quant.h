/*
 * quant.h — quantized tensor formats (internal).
 *
 * Type numbers are those of GGUF/ggml so they can be read straight from a
 * tensor info. Block layouts are the formats' own: a block of `block_size`
 * consecutive row elements is stored in `type_size` bytes. Multi-byte fields
 * are little-endian, fp16 scales are IEEE binary16.
 *
 * The dequantize functions here are the reference: plain C, one row at a
 * time, bit-exact with the format's definition. Every faster kernel in every
 * backend is tested against them.
 */
#ifndef COPSE_CORE_QUANT_H
#define COPSE_CORE_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bytes.h"
#include "copse.h"

typedef enum copse_qtype {
    COPSE_Q_F32 = 0,
    COPSE_Q_F16 = 1,
    COPSE_Q_Q4_0 = 2,
    COPSE_Q_Q4_1 = 3,
    COPSE_Q_Q5_0 = 6,
    COPSE_Q_Q5_1 = 7,
    COPSE_Q_Q8_0 = 8,
    COPSE_Q_Q8_1 = 9,
    COPSE_Q_Q2_K = 10,
    COPSE_Q_Q3_K = 11,
    COPSE_Q_Q4_K = 12,
    COPSE_Q_Q5_K = 13,
    COPSE_Q_Q6_K = 14,
    COPSE_Q_Q8_K = 15,
    COPSE_Q_I8 = 24,
    COPSE_Q_I16 = 25,
    COPSE_Q_I32 = 26,
    COPSE_Q_I64 = 27,
    COPSE_Q_F64 = 28,
    COPSE_Q_BF16 = 30,
    COPSE_Q_TYPE_LIMIT = 64 /* type numbers are below this */
} copse_qtype;

#define COPSE_QK_K 256 /* super-block size of the K-quants */

typedef struct copse_qtype_traits {
    const char *name;   /* "q4_0", ...; NULL for numbers no format uses */
    uint32_t block_size; /* elements per block (1 for plain types) */
    uint32_t type_size;  /* bytes per block */
    bool can_dequantize; /* a reference dequantizer exists here */
} copse_qtype_traits;

/* Traits of a type number; NULL if the number is not a known format. */
const copse_qtype_traits *copse__qtype_traits(uint32_t type);

/* Name of a type ("q4_k"), or "?" for unknown numbers. */
const char *copse__qtype_name(uint32_t type);

/* Bytes taken by n elements of `type`. Returns false if the type is unknown,
 * n is not a multiple of the block size, or the result would overflow. */
bool copse__qtype_row_bytes(uint32_t type, uint64_t n, uint64_t *bytes);

/* Reference dequantization of n elements (n a multiple of the block size)
 * from src into dst. COPSE_EUNSUPPORTED for types without a dequantizer,
 * COPSE_EINVAL for n not a multiple of the block size. */
copse_status copse__dequantize_row(uint32_t type, const void *src, float *dst, int64_t n);

/* IEEE binary16 / bfloat16 <-> float, exact (round-to-nearest-even on the way down). */
float copse__fp16_to_f32(uint16_t h);
uint16_t copse__f32_to_fp16(float f);
float copse__bf16_to_f32(uint16_t h);
uint16_t copse__f32_to_bf16(float f);

/* A little-endian fp16 field at any alignment, as float. */
static inline float copse__rd_fp16(const uint8_t *p)
{
    return copse__fp16_to_f32(copse__rd_u16(p));
}

#endif /* COPSE_CORE_QUANT_H */
