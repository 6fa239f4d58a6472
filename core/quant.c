/*
 * quant.c — block layouts and reference dequantization of the GGUF formats.
 *
 * This file is the oracle: every SIMD/GPU kernel is checked against it, so it
 * favours "obviously correct" over fast. Each format has
 *   - a block struct made only of byte arrays (alignment 1, no padding; the
 *     size is checked against the traits table at compile time),
 *   - one comment giving the layout and the formula,
 *   - a function that dequantizes exactly one block.
 * Blocks are copied out of the source with memcpy and multi-byte fields are
 * assembled from their little-endian bytes, so the code never performs an
 * unaligned or type-punned load and does not depend on host byte order.
 *
 * Float arithmetic follows the `gguf` Python package (gguf-py quants.py) step
 * by step: every product and sum is a separately rounded float32 operation in
 * the order written there (e.g. Q4_1 is (d*q) + m, Q4_K is (d*sc)*q - (dmin*mn)).
 * The result is bit-identical to that package wherever it defines the format.
 * This holds robustly, not by luck of evaluation order: an fp16 scale has an
 * 11-bit significand and the integers it multiplies are small, so the
 * intermediate products (d*q, d*sc, dmin*mn, and d*sc*q for all but Q6_K) are
 * exact in float32 and every output is its exact value rounded once. Contracting
 * a*b+c into an FMA therefore cannot change a result either (the pragma below
 * turns it off anyway where the compiler honours it; GCC does not contract in
 * ISO C mode). What is required is float arithmetic evaluated in float
 * (FLT_EVAL_METHOD 0: SSE/NEON targets, not x87), checked below.
 */
#include "quant.h"

#include <assert.h>
#include <float.h>
#include <string.h>

#include "bytes.h"

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

/* 0: every type in its own precision; 16 or 32 (ISO/IEC TS 18661-3, e.g. GCC
 * with AVX512-FP16 in GNU mode): only types narrower than float are widened. */
#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD != 0 && FLT_EVAL_METHOD != 16 && FLT_EVAL_METHOD != 32
#error "the reference dequantizers need float operations evaluated in float"
#endif

/* ---------------------------------------------------------------- block layouts */

/* All members are uint8_t arrays, so sizeof is the sum of the members. */

typedef struct block_q4_0 {
    uint8_t d[2];   /* fp16 scale */
    uint8_t qs[16]; /* 32 x 4-bit quants */
} block_q4_0;

typedef struct block_q4_1 {
    uint8_t d[2];   /* fp16 scale */
    uint8_t m[2];   /* fp16 minimum */
    uint8_t qs[16]; /* 32 x 4-bit quants */
} block_q4_1;

typedef struct block_q5_0 {
    uint8_t d[2];   /* fp16 scale */
    uint8_t qh[4];  /* uint32: bit i is the 5th bit of element i */
    uint8_t qs[16]; /* low 4 bits */
} block_q5_0;

typedef struct block_q5_1 {
    uint8_t d[2];   /* fp16 scale */
    uint8_t m[2];   /* fp16 minimum */
    uint8_t qh[4];  /* uint32: bit i is the 5th bit of element i */
    uint8_t qs[16]; /* low 4 bits */
} block_q5_1;

typedef struct block_q8_0 {
    uint8_t d[2];   /* fp16 scale */
    uint8_t qs[32]; /* int8 quants */
} block_q8_0;

typedef struct block_q8_1 {
    uint8_t d[2];   /* fp16 scale */
    uint8_t s[2];   /* fp16 d * sum(qs), not needed to dequantize */
    uint8_t qs[32]; /* int8 quants */
} block_q8_1;

typedef struct block_q2_k {
    uint8_t scales[16]; /* per 16 elements: low nibble scale, high nibble min */
    uint8_t qs[64];     /* 256 x 2-bit quants */
    uint8_t d[2];       /* fp16 super-block scale of the scales */
    uint8_t dmin[2];    /* fp16 super-block scale of the mins */
} block_q2_k;

typedef struct block_q3_k {
    uint8_t hmask[32];  /* high (3rd) bit of each quant */
    uint8_t qs[64];     /* low 2 bits */
    uint8_t scales[12]; /* 16 x 6-bit scales */
    uint8_t d[2];       /* fp16 super-block scale */
} block_q3_k;

typedef struct block_q4_k {
    uint8_t d[2];       /* fp16 super-block scale of the scales */
    uint8_t dmin[2];    /* fp16 super-block scale of the mins */
    uint8_t scales[12]; /* 8 x (6-bit scale, 6-bit min) */
    uint8_t qs[128];    /* 256 x 4-bit quants */
} block_q4_k;

typedef struct block_q5_k {
    uint8_t d[2];       /* fp16 super-block scale of the scales */
    uint8_t dmin[2];    /* fp16 super-block scale of the mins */
    uint8_t scales[12]; /* 8 x (6-bit scale, 6-bit min), packed as in Q4_K */
    uint8_t qh[32];     /* 5th bit of each quant */
    uint8_t qs[128];    /* low 4 bits */
} block_q5_k;

typedef struct block_q6_k {
    uint8_t ql[128];    /* low 4 bits */
    uint8_t qh[64];     /* high 2 bits */
    uint8_t scales[16]; /* int8 scale per 16 elements */
    uint8_t d[2];       /* fp16 super-block scale */
} block_q6_k;

typedef struct block_q8_k {
    uint8_t d[4];       /* float32 scale */
    uint8_t qs[256];    /* int8 quants */
    uint8_t bsums[32];  /* int16 sum of each 16 quants, not needed to dequantize */
} block_q8_k;

/* ---------------------------------------------------------------- traits */

#define T_(id, nm, bs, ts, dq) [id] = {.name = nm, .block_size = bs, .type_size = ts, .can_dequantize = dq}

/* Q8_1 is 36 bytes as in ggml's block_q8_1 (two fp16 fields); gguf-py's
 * GGML_QUANT_SIZES still lists the obsolete 40-byte float32 layout. */
static const copse_qtype_traits qtype_traits[COPSE_Q_TYPE_LIMIT] = {
    T_(COPSE_Q_F32, "f32", 1, 4, true),
    T_(COPSE_Q_F16, "f16", 1, 2, true),
    T_(COPSE_Q_Q4_0, "q4_0", 32, 2 + 16, true),
    T_(COPSE_Q_Q4_1, "q4_1", 32, 2 + 2 + 16, true),
    T_(COPSE_Q_Q5_0, "q5_0", 32, 2 + 4 + 16, true),
    T_(COPSE_Q_Q5_1, "q5_1", 32, 2 + 2 + 4 + 16, true),
    T_(COPSE_Q_Q8_0, "q8_0", 32, 2 + 32, true),
    T_(COPSE_Q_Q8_1, "q8_1", 32, 2 + 2 + 32, true),
    T_(COPSE_Q_Q2_K, "q2_k", COPSE_QK_K, COPSE_QK_K / 16 + COPSE_QK_K / 4 + 2 + 2, true),
    T_(COPSE_Q_Q3_K, "q3_k", COPSE_QK_K, COPSE_QK_K / 8 + COPSE_QK_K / 4 + 12 + 2, true),
    T_(COPSE_Q_Q4_K, "q4_k", COPSE_QK_K, 2 + 2 + 12 + COPSE_QK_K / 2, true),
    T_(COPSE_Q_Q5_K, "q5_k", COPSE_QK_K, 2 + 2 + 12 + COPSE_QK_K / 8 + COPSE_QK_K / 2, true),
    T_(COPSE_Q_Q6_K, "q6_k", COPSE_QK_K, COPSE_QK_K / 2 + COPSE_QK_K / 4 + COPSE_QK_K / 16 + 2, true),
    T_(COPSE_Q_Q8_K, "q8_k", COPSE_QK_K, 4 + COPSE_QK_K + COPSE_QK_K / 16 * 2, true),
    T_(COPSE_Q_I8, "i8", 1, 1, false),
    T_(COPSE_Q_I16, "i16", 1, 2, false),
    T_(COPSE_Q_I32, "i32", 1, 4, false),
    T_(COPSE_Q_I64, "i64", 1, 8, false),
    T_(COPSE_Q_F64, "f64", 1, 8, false),
    T_(COPSE_Q_BF16, "bf16", 1, 2, true),
};

#undef T_

/* The structs above and the table must agree. */
_Static_assert(sizeof(block_q4_0) == 18, "q4_0 block size");
_Static_assert(sizeof(block_q4_1) == 20, "q4_1 block size");
_Static_assert(sizeof(block_q5_0) == 22, "q5_0 block size");
_Static_assert(sizeof(block_q5_1) == 24, "q5_1 block size");
_Static_assert(sizeof(block_q8_0) == 34, "q8_0 block size");
_Static_assert(sizeof(block_q8_1) == 36, "q8_1 block size");
_Static_assert(sizeof(block_q2_k) == 84, "q2_k block size");
_Static_assert(sizeof(block_q3_k) == 110, "q3_k block size");
_Static_assert(sizeof(block_q4_k) == 144, "q4_k block size");
_Static_assert(sizeof(block_q5_k) == 176, "q5_k block size");
_Static_assert(sizeof(block_q6_k) == 210, "q6_k block size");
_Static_assert(sizeof(block_q8_k) == 292, "q8_k block size");

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

/* ---------------------------------------------------------------- fp16 / bf16 */

/* binary16: 1 sign bit, 5 exponent bits (bias 15), 10 mantissa bits.
 * Every half value is exactly representable as a float. NaNs keep their sign
 * and payload (the 10 mantissa bits move to the top of the float mantissa). */
float copse__fp16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;

    if (exp == 0x1f) /* inf or NaN */
        return copse__f32_from_bits(sign | 0x7f800000u | (mant << 13));
    if (exp == 0) {
        if (mant == 0) /* signed zero */
            return copse__f32_from_bits(sign);
        /* subnormal: mant * 2^-24; normalize so the leading 1 is bit 10 */
        uint32_t e = 127 - 15 + 1;
        while (!(mant & 0x400u)) {
            mant <<= 1;
            e--;
        }
        return copse__f32_from_bits(sign | (e << 23) | ((mant & 0x3ffu) << 13));
    }
    return copse__f32_from_bits(sign | ((exp + 127 - 15) << 23) | (mant << 13));
}

/* Round-to-nearest-even. Overflow (|f| >= 65520, halfway above the largest
 * half 65504) gives inf; values below half the smallest subnormal give zero.
 * NaN keeps its sign and the top 10 payload bits; if those are all zero the
 * quiet bit is set so the result stays a NaN. */
uint16_t copse__f32_to_fp16(float f)
{
    uint32_t u = copse__f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;

    if (a > 0x7f800000u) { /* NaN */
        uint32_t payload = (a >> 13) & 0x3ffu;
        return (uint16_t)(sign | 0x7c00u | (payload ? payload : 0x200u));
    }
    if (a >= 0x477ff000u) /* >= 65520 or inf */
        return (uint16_t)(sign | 0x7c00u);

    uint32_t e = a >> 23; /* biased float exponent */
    if (e < 113) {
        /* Below the smallest normal half (2^-14): the result is the integer
         * round(|f| * 2^24) (1024 means the smallest normal, which the
         * encoding 0x400 happens to be). |f| = m * 2^(e-150) with m the
         * 24-bit significand, so |f| * 2^24 = m >> (126 - e). */
        if (e < 102) /* |f| < 2^-25: rounds to zero (float subnormals too) */
            return sign;
        uint32_t m = (a & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - e; /* 14 .. 24 */
        uint32_t q = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1);
        uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1u)))
            q++;
        return (uint16_t)(sign | q);
    }

    /* Normal: rebias the exponent, keep 10 mantissa bits, round on the
     * dropped 13. A carry out of the mantissa correctly bumps the exponent. */
    uint32_t h = ((e - 112) << 10) | ((a >> 13) & 0x3ffu);
    uint32_t rem = a & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u)))
        h++;
    return (uint16_t)(sign | h);
}

/* bfloat16 is the top half of a float32. */
float copse__bf16_to_f32(uint16_t h)
{
    return copse__f32_from_bits((uint32_t)h << 16);
}

/* Round-to-nearest-even on the dropped 16 bits (overflow rounds to inf as
 * IEEE requires). NaN is truncated and made quiet (bit 6 of the bf16). */
uint16_t copse__f32_to_bf16(float f)
{
    uint32_t u = copse__f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40u);
    uint32_t lsb = (u >> 16) & 1u;
    return (uint16_t)((u + 0x7fffu + lsb) >> 16);
}

/* ---------------------------------------------------------------- byte helpers */

/* ---------------------------------------------------------------- plain types */

/* F32: 4 bytes, little-endian IEEE binary32; copied bit for bit (NaN payloads
 * included, no arithmetic is done). */
static void dq_f32(const uint8_t *src, float *y)
{
    *y = copse__f32_from_bits(copse__rd_u32(src));
}

/* F16: 2 bytes, little-endian IEEE binary16; y = (float)h, exact. */
static void dq_f16(const uint8_t *src, float *y)
{
    *y = copse__rd_fp16(src);
}

/* BF16: 2 bytes, little-endian bfloat16; y = bits << 16, exact. */
static void dq_bf16(const uint8_t *src, float *y)
{
    *y = copse__bf16_to_f32(copse__rd_u16(src));
}

/* ---------------------------------------------------------------- 32-element blocks */

/* Q4_0 (18 bytes): d fp16 @0, qs[16] @2.
 * Element j < 16 is the low nibble of qs[j], element j + 16 its high nibble.
 * y = d * (q - 8). */
static void dq_q4_0(const uint8_t *src, float *y)
{
    block_q4_0 b;
    memcpy(&b, src, sizeof b);
    float d = copse__rd_fp16(b.d);
    for (int j = 0; j < 16; j++) {
        y[j] = d * (float)((b.qs[j] & 0x0f) - 8);
        y[j + 16] = d * (float)((b.qs[j] >> 4) - 8);
    }
}

/* Q4_1 (20 bytes): d fp16 @0, m fp16 @2, qs[16] @4; nibbles as in Q4_0.
 * y = (d * q) + m, two float32 roundings. */
static void dq_q4_1(const uint8_t *src, float *y)
{
    block_q4_1 b;
    memcpy(&b, src, sizeof b);
    float d = copse__rd_fp16(b.d);
    float m = copse__rd_fp16(b.m);
    for (int j = 0; j < 16; j++) {
        float lo = d * (float)(b.qs[j] & 0x0f);
        float hi = d * (float)(b.qs[j] >> 4);
        y[j] = lo + m;
        y[j + 16] = hi + m;
    }
}

/* Q5_0 (22 bytes): d fp16 @0, qh uint32 LE @2, qs[16] @6.
 * q_i = (nibble i as in Q4_0) | (bit i of qh) << 4, 0..31.
 * y = d * (q - 16). */
static void dq_q5_0(const uint8_t *src, float *y)
{
    block_q5_0 b;
    memcpy(&b, src, sizeof b);
    float d = copse__rd_fp16(b.d);
    uint32_t qh = copse__rd_u32(b.qh);
    for (int j = 0; j < 16; j++) {
        int lo = (b.qs[j] & 0x0f) | (int)(((qh >> j) & 1u) << 4);
        int hi = (b.qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1u) << 4);
        y[j] = d * (float)(lo - 16);
        y[j + 16] = d * (float)(hi - 16);
    }
}

/* Q5_1 (24 bytes): d fp16 @0, m fp16 @2, qh uint32 LE @4, qs[16] @8;
 * q as in Q5_0 (0..31). y = (d * q) + m. */
static void dq_q5_1(const uint8_t *src, float *y)
{
    block_q5_1 b;
    memcpy(&b, src, sizeof b);
    float d = copse__rd_fp16(b.d);
    float m = copse__rd_fp16(b.m);
    uint32_t qh = copse__rd_u32(b.qh);
    for (int j = 0; j < 16; j++) {
        int lo = (b.qs[j] & 0x0f) | (int)(((qh >> j) & 1u) << 4);
        int hi = (b.qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1u) << 4);
        float plo = d * (float)lo;
        float phi = d * (float)hi;
        y[j] = plo + m;
        y[j + 16] = phi + m;
    }
}

/* Q8_0 (34 bytes): d fp16 @0, qs int8[32] @2. y = d * q. */
static void dq_q8_0(const uint8_t *src, float *y)
{
    block_q8_0 b;
    memcpy(&b, src, sizeof b);
    float d = copse__rd_fp16(b.d);
    for (int j = 0; j < 32; j++)
        y[j] = d * (float)copse__i8_of(b.qs[j]);
}

/* Q8_1 (36 bytes): d fp16 @0, s fp16 @2 (= d * sum q, ignored), qs int8[32] @4.
 * y = d * q. */
static void dq_q8_1(const uint8_t *src, float *y)
{
    block_q8_1 b;
    memcpy(&b, src, sizeof b);
    float d = copse__rd_fp16(b.d);
    for (int j = 0; j < 32; j++)
        y[j] = d * (float)copse__i8_of(b.qs[j]);
}

/* ---------------------------------------------------------------- K-quants (256-element super-blocks) */

/* Q2_K (84 bytes): scales[16] @0, qs[64] @16, d fp16 @80, dmin fp16 @82.
 * Element i (0..255): half h = i / 128, shift k = (i % 128) / 32, l = i % 32;
 * q = (qs[32h + l] >> 2k) & 3. Group g = i / 16 has sc = scales[g] & 15,
 * mn = scales[g] >> 4.
 * y = (d * sc) * q - (dmin * mn), each operation rounded to float32. */
static void dq_q2_k(const uint8_t *src, float *y)
{
    block_q2_k b;
    memcpy(&b, src, sizeof b);
    float d = copse__rd_fp16(b.d);
    float dmin = copse__rd_fp16(b.dmin);
    for (int i = 0; i < COPSE_QK_K; i++) {
        int h = i / 128, k = (i % 128) / 32, l = i % 32, g = i / 16;
        int q = (b.qs[32 * h + l] >> (2 * k)) & 3;
        float dl = d * (float)(b.scales[g] & 0x0f);
        float ml = dmin * (float)(b.scales[g] >> 4);
        float p = dl * (float)q;
        y[i] = p - ml;
    }
}

/* Q3_K (110 bytes): hmask[32] @0, qs[64] @32, scales[12] @96, d fp16 @108.
 * 16 signed 6-bit scales, one per 16 elements: for g = 0..15
 *   lo4 = (scales[g % 8] >> 4 * (g / 8)) & 15, hi2 = (scales[8 + g % 4] >> 2 * (g / 4)) & 3,
 *   sc = (lo4 | hi2 << 4) - 32.
 * Element i: low two bits as in Q2_K, l = i % 32, high bit
 * hb = (hmask[l] >> (i / 32)) & 1; q = low2 - (hb ? 0 : 4), -4..3.
 * y = (d * sc) * q. */
static int q3_k_scale(const uint8_t scales[12], int g)
{
    int lo4 = (scales[g % 8] >> (4 * (g / 8))) & 0x0f;
    int hi2 = (scales[8 + g % 4] >> (2 * (g / 4))) & 0x03;
    return (lo4 | (hi2 << 4)) - 32;
}

static void dq_q3_k(const uint8_t *src, float *y)
{
    block_q3_k b;
    memcpy(&b, src, sizeof b);
    float d = copse__rd_fp16(b.d);
    for (int i = 0; i < COPSE_QK_K; i++) {
        int h = i / 128, k = (i % 128) / 32, l = i % 32, g = i / 16;
        int low2 = (b.qs[32 * h + l] >> (2 * k)) & 3;
        int hb = (b.hmask[l] >> (i / 32)) & 1;
        int q = low2 - (hb ? 0 : 4);
        float dl = d * (float)q3_k_scale(b.scales, g);
        y[i] = dl * (float)q;
    }
}

/* The 12-byte scale/min packing of Q4_K and Q5_K: 8 sub-blocks j of 32
 * elements, each with a 6-bit scale and a 6-bit min.
 *   j < 4:  sc = s[j] & 63,                          mn = s[j + 4] & 63
 *   j >= 4: sc = (s[j + 4] & 15) | (s[j - 4] >> 6) << 4,
 *           mn = (s[j + 4] >> 4) | (s[j] >> 6) << 4 */
static void k4_scale_min(const uint8_t s[12], int j, int *sc, int *mn)
{
    if (j < 4) {
        *sc = s[j] & 0x3f;
        *mn = s[j + 4] & 0x3f;
    } else {
        *sc = (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4);
        *mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

/* Q4_K (144 bytes): d fp16 @0, dmin fp16 @2, scales[12] @4, qs[128] @16.
 * Element i: sub-block j = i / 32, chunk c = i / 64, l = i % 32;
 * q = (qs[32c + l] >> (j % 2 ? 4 : 0)) & 15.
 * y = (d * sc_j) * q - (dmin * mn_j). */
static void dq_q4_k(const uint8_t *src, float *y)
{
    block_q4_k b;
    memcpy(&b, src, sizeof b);
    float d = copse__rd_fp16(b.d);
    float dmin = copse__rd_fp16(b.dmin);
    for (int j = 0; j < 8; j++) {
        int sc, mn;
        k4_scale_min(b.scales, j, &sc, &mn);
        float dj = d * (float)sc;
        float mj = dmin * (float)mn;
        for (int l = 0; l < 32; l++) {
            int q = (b.qs[32 * (j / 2) + l] >> (j % 2 ? 4 : 0)) & 0x0f;
            float p = dj * (float)q;
            y[32 * j + l] = p - mj;
        }
    }
}

/* Q5_K (176 bytes): d fp16 @0, dmin fp16 @2, scales[12] @4, qh[32] @16, qs[128] @48.
 * Low 4 bits as in Q4_K; 5th bit of element i = (qh[i % 32] >> (i / 32)) & 1.
 * y = (d * sc_j) * q - (dmin * mn_j), q in 0..31. */
static void dq_q5_k(const uint8_t *src, float *y)
{
    block_q5_k b;
    memcpy(&b, src, sizeof b);
    float d = copse__rd_fp16(b.d);
    float dmin = copse__rd_fp16(b.dmin);
    for (int j = 0; j < 8; j++) {
        int sc, mn;
        k4_scale_min(b.scales, j, &sc, &mn);
        float dj = d * (float)sc;
        float mj = dmin * (float)mn;
        for (int l = 0; l < 32; l++) {
            int lo = (b.qs[32 * (j / 2) + l] >> (j % 2 ? 4 : 0)) & 0x0f;
            int hi = (b.qh[l] >> j) & 1;
            float p = dj * (float)(lo | (hi << 4));
            y[32 * j + l] = p - mj;
        }
    }
}

/* Q6_K (210 bytes): ql[128] @0, qh[64] @128, scales int8[16] @192, d fp16 @208.
 * Element i: half h = i / 128, r = i % 128, l = i % 32;
 *   low4 = (ql[64h + r % 64] >> (r / 64 ? 4 : 0)) & 15,
 *   high2 = (qh[32h + l] >> 2 * (r / 32)) & 3,
 *   q = (low4 | high2 << 4) - 32, -32..31.
 * y = (d * scales[i / 16]) * q. */
static void dq_q6_k(const uint8_t *src, float *y)
{
    block_q6_k b;
    memcpy(&b, src, sizeof b);
    float d = copse__rd_fp16(b.d);
    for (int i = 0; i < COPSE_QK_K; i++) {
        int h = i / 128, r = i % 128, l = i % 32;
        int low4 = (b.ql[64 * h + r % 64] >> (r / 64 ? 4 : 0)) & 0x0f;
        int high2 = (b.qh[32 * h + l] >> (2 * (r / 32))) & 3;
        int q = (low4 | (high2 << 4)) - 32;
        float ds = d * (float)copse__i8_of(b.scales[i / 16]);
        y[i] = ds * (float)q;
    }
}

/* Q8_K (292 bytes): d float32 @0, qs int8[256] @4, bsums int16[16] @260
 * (sums of each 16 quants, ignored). y = d * q. */
static void dq_q8_k(const uint8_t *src, float *y)
{
    block_q8_k b;
    memcpy(&b, src, sizeof b);
    float d = copse__f32_from_bits(copse__rd_u32(b.d));
    for (int i = 0; i < COPSE_QK_K; i++)
        y[i] = d * (float)copse__i8_of(b.qs[i]);
}

/* ---------------------------------------------------------------- dequantization */

/* Dequantizes one block of `block_size` elements from `type_size` bytes. */
typedef void (*dequant_block_fn)(const uint8_t *src, float *y);

static const dequant_block_fn dequant_block[COPSE_Q_TYPE_LIMIT] = {
    [COPSE_Q_F32] = dq_f32,   [COPSE_Q_F16] = dq_f16,   [COPSE_Q_BF16] = dq_bf16,
    [COPSE_Q_Q4_0] = dq_q4_0, [COPSE_Q_Q4_1] = dq_q4_1, [COPSE_Q_Q5_0] = dq_q5_0,
    [COPSE_Q_Q5_1] = dq_q5_1, [COPSE_Q_Q8_0] = dq_q8_0, [COPSE_Q_Q8_1] = dq_q8_1,
    [COPSE_Q_Q2_K] = dq_q2_k, [COPSE_Q_Q3_K] = dq_q3_k, [COPSE_Q_Q4_K] = dq_q4_k,
    [COPSE_Q_Q5_K] = dq_q5_k, [COPSE_Q_Q6_K] = dq_q6_k, [COPSE_Q_Q8_K] = dq_q8_k,
};

copse_status copse__dequantize_row(uint32_t type, const void *src, float *dst, int64_t n)
{
    const copse_qtype_traits *t = copse__qtype_traits(type);
    if (!t || !t->can_dequantize)
        return COPSE_EUNSUPPORTED;
    assert(dequant_block[type] != NULL);
    if (n < 0 || n % t->block_size != 0)
        return COPSE_EINVAL;
    assert(n == 0 || (src != NULL && dst != NULL));

    const uint8_t *p = src;
    int64_t nblocks = n / t->block_size;
    for (int64_t i = 0; i < nblocks; i++) {
        dequant_block[type](p, dst);
        p += t->type_size;
        dst += t->block_size;
    }
    return COPSE_OK;
}
