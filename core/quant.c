/*
 * quant.c — block layouts and reference dequantization of the GGUF formats.
 */
#include "quant.h"

#include <string.h>

/* ---------------------------------------------------------------- traits */

#define T_(id, nm, bs, ts, dq) [id] = {.name = nm, .block_size = bs, .type_size = ts, .can_dequantize = dq}

static const copse_qtype_traits qtype_traits[COPSE_Q_TYPE_LIMIT] = {
    T_(COPSE_Q_F32, "f32", 1, 4, false),
    T_(COPSE_Q_F16, "f16", 1, 2, false),
    T_(COPSE_Q_Q4_0, "q4_0", 32, 2 + 16, false),
    T_(COPSE_Q_Q4_1, "q4_1", 32, 2 + 2 + 16, false),
    T_(COPSE_Q_Q5_0, "q5_0", 32, 2 + 4 + 16, false),
    T_(COPSE_Q_Q5_1, "q5_1", 32, 2 + 2 + 4 + 16, false),
    T_(COPSE_Q_Q8_0, "q8_0", 32, 2 + 32, false),
    T_(COPSE_Q_Q8_1, "q8_1", 32, 2 + 2 + 32, false),
    T_(COPSE_Q_Q2_K, "q2_k", COPSE_QK_K, COPSE_QK_K / 16 + COPSE_QK_K / 4 + 2 + 2, false),
    T_(COPSE_Q_Q3_K, "q3_k", COPSE_QK_K, COPSE_QK_K / 8 + COPSE_QK_K / 4 + 12 + 2, false),
    T_(COPSE_Q_Q4_K, "q4_k", COPSE_QK_K, 2 + 2 + 12 + COPSE_QK_K / 2, false),
    T_(COPSE_Q_Q5_K, "q5_k", COPSE_QK_K, 2 + 2 + 12 + COPSE_QK_K / 8 + COPSE_QK_K / 2, false),
    T_(COPSE_Q_Q6_K, "q6_k", COPSE_QK_K, COPSE_QK_K / 2 + COPSE_QK_K / 4 + COPSE_QK_K / 16 + 2, false),
    T_(COPSE_Q_Q8_K, "q8_k", COPSE_QK_K, 4 + COPSE_QK_K + COPSE_QK_K / 16 * 2, false),
    T_(COPSE_Q_I8, "i8", 1, 1, false),
    T_(COPSE_Q_I16, "i16", 1, 2, false),
    T_(COPSE_Q_I32, "i32", 1, 4, false),
    T_(COPSE_Q_I64, "i64", 1, 8, false),
    T_(COPSE_Q_F64, "f64", 1, 8, false),
    T_(COPSE_Q_BF16, "bf16", 1, 2, false),
};

#undef T_

const copse_qtype_traits *copse__qtype_traits(uint32_t type)
{
    if (type >= COPSE_Q_TYPE_LIMIT || qtype_traits[type].name == NULL)
        return NULL;
    return &qtype_traits[type];
}

const char *copse__qtype_name(uint32_t type)
{
    const copse_qtype_traits *t = copse__qtype_traits(type);
    return t ? t->name : "?";
}

bool copse__qtype_row_bytes(uint32_t type, uint64_t n, uint64_t *bytes)
{
    const copse_qtype_traits *t = copse__qtype_traits(type);
    if (!t || n % t->block_size != 0)
        return false;
    uint64_t blocks = n / t->block_size;
    if (blocks > UINT64_MAX / t->type_size)
        return false;
    *bytes = blocks * t->type_size;
    return true;
}

/* ---------------------------------------------------------------- dequantization */

copse_status copse__dequantize_row(uint32_t type, const void *src, float *dst, int64_t n)
{
    (void)src;
    (void)dst;
    (void)n;
    (void)type;
    return COPSE_EUNSUPPORTED; /* filled in by the quant-format work */
}
