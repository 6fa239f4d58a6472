/*
 * test-quant.c — quantized formats and float conversions (core/quant.c).
 *
 *   - fp16 and bf16: every one of the 65536 bit patterns decoded and checked
 *     against an independent ldexp-based decoder, round trips, and the
 *     rounding of every halfway point between neighbouring values (ties to
 *     even) plus random floats checked for "nearest";
 *   - traits: the block and byte sizes of every format, names,
 *     copse__qtype_row_bytes() edge cases (non-multiples, overflow, unknown);
 *   - status paths of copse__dequantize_row() (EUNSUPPORTED, EINVAL);
 *   - one hand-built block per format with literal expected values at
 *     positions that cover every part of its layout;
 *   - random blocks (fresh seed each run) against an element-by-element
 *     decoder written here from the format definitions, from unaligned
 *     sources, several blocks at a time, without writing past n.
 *
 * No Python here; tests/model/test_dequant.py compares with the gguf package.
 */
#include <float.h>
#include <stdbool.h>

#include "test.h"

#include "copse.h"
#include "quant.h"

/* ---------------------------------------------------------------- helpers */

static uint32_t fbits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float bitsf(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Same float, bit for bit, or both NaN. */
static bool same_float(float a, float b)
{
    return fbits(a) == fbits(b) || (isnan(a) && isnan(b));
}

#define CHECK_FLOAT_SAME(got, want)                                                          \
    do {                                                                                     \
        float g_ = (got), w_ = (want);                                                       \
        test_checks_++;                                                                      \
        if (!same_float(g_, w_)) {                                                           \
            test_failures_++;                                                                \
            fprintf(stderr, "%s:%d: %s == %s failed: %.9g (0x%08" PRIx32 ") != %.9g (0x%08" PRIx32 ")\n", \
                    __FILE__, __LINE__, #got, #want, (double)g_, fbits(g_), (double)w_, fbits(w_)); \
        }                                                                                    \
    } while (0)

/* Independent binary16 decoder: sign * mantissa * 2^exponent in double. */
static float ref_half(uint16_t h)
{
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v;
    if (e == 31)
        v = m ? NAN : INFINITY;
    else if (e == 0)
        v = ldexp(m, -24);
    else
        v = ldexp(m + 1024, e - 25);
    return (float)(s ? -v : v);
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int k = 0; k < 4; k++)
        p[k] = (uint8_t)(v >> 8 * k);
}

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static int8_t as_i8(uint8_t b)
{
    int8_t v;
    memcpy(&v, &b, 1);
    return v;
}

/* Dequantize one block of `type` from `blk` (block_size <= 256). */
static copse_status dq_block(uint32_t type, const uint8_t *blk, float *y)
{
    return copse__dequantize_row(type, blk, y, copse__qtype_traits(type)->block_size);
}

/* ---------------------------------------------------------------- fp16 */

static void test_fp16_all_values(void)
{
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = copse__fp16_to_f32((uint16_t)h);
        float want = ref_half((uint16_t)h);
        bool is_nan = (h & 0x7c00) == 0x7c00 && (h & 0x3ff);
        bool ok;
        if (is_nan) /* NaN keeps sign and payload: exponent all ones, mantissa << 13 */
            ok = isnan(f) && fbits(f) == (((h & 0x8000u) << 16) | 0x7f800000u | ((h & 0x3ffu) << 13));
        else
            ok = fbits(f) == fbits(want); /* also checks the sign of zeros */
        /* Round trip, NaNs included (their payload survives). */
        ok = ok && copse__f32_to_fp16(f) == h;
        if (!ok && bad++ < 10)
            fprintf(stderr, "fp16 0x%04" PRIx32 ": got %.9g (0x%08" PRIx32 "), want %.9g, back 0x%04x\n", h,
                    (double)f, fbits(f), (double)want, copse__f32_to_fp16(f));
    }
    CHECK_INT_EQ(bad, 0);
}

/* Every midpoint between neighbouring halves rounds to the even one; one
 * float ulp either side rounds to the nearer one. Both signs. */
static void test_fp16_rounding(void)
{
    int bad = 0;
    for (uint32_t h = 0; h < 0x7c00; h++) {
        double lo = ref_half((uint16_t)h);
        double hi = h + 1 < 0x7c00 ? ref_half((uint16_t)(h + 1)) : 65536.0; /* next step above 65504 */
        float mid = (float)((lo + hi) / 2);
        CHECK(mid == (lo + hi) / 2); /* the midpoint is a float */
        uint16_t even = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
        float below = nextafterf(mid, 0.0f), above = nextafterf(mid, INFINITY);
        for (int s = 0; s < 2; s++) {
            float sg = s ? -1.0f : 1.0f;
            uint16_t sb = s ? 0x8000 : 0;
            bool ok = copse__f32_to_fp16(sg * mid) == (sb | even) &&
                      copse__f32_to_fp16(sg * below) == (sb | h) &&
                      copse__f32_to_fp16(sg * above) == (sb | (h + 1));
            if (!ok && bad++ < 10)
                fprintf(stderr, "fp16 rounding near 0x%04" PRIx32 " (sign %d): mid %.9g -> 0x%04x\n", h, s,
                        (double)mid, copse__f32_to_fp16(sg * mid));
        }
    }
    CHECK_INT_EQ(bad, 0);
}

static void test_fp16_specials(void)
{
    CHECK_INT_EQ(copse__f32_to_fp16(0.0f), 0x0000);
    CHECK_INT_EQ(copse__f32_to_fp16(-0.0f), 0x8000);
    CHECK_INT_EQ(copse__f32_to_fp16(1.0f), 0x3c00);
    CHECK_INT_EQ(copse__f32_to_fp16(-2.0f), 0xc000);
    CHECK_INT_EQ(copse__f32_to_fp16(65504.0f), 0x7bff);
    CHECK_INT_EQ(copse__f32_to_fp16(65519.99f), 0x7bff);
    CHECK_INT_EQ(copse__f32_to_fp16(65520.0f), 0x7c00);
    CHECK_INT_EQ(copse__f32_to_fp16(1e10f), 0x7c00);
    CHECK_INT_EQ(copse__f32_to_fp16(-FLT_MAX), 0xfc00);
    CHECK_INT_EQ(copse__f32_to_fp16(INFINITY), 0x7c00);
    CHECK_INT_EQ(copse__f32_to_fp16(-INFINITY), 0xfc00);
    CHECK_INT_EQ(copse__f32_to_fp16(6.103515625e-05f), 0x0400); /* smallest normal */
    CHECK_INT_EQ(copse__f32_to_fp16(5.9604645e-08f), 0x0001);   /* smallest subnormal */
    CHECK_INT_EQ(copse__f32_to_fp16(1e-10f), 0x0000);
    CHECK_INT_EQ(copse__f32_to_fp16(-1e-10f), 0x8000);
    CHECK_INT_EQ(copse__f32_to_fp16(bitsf(0x00000001u)), 0x0000); /* float subnormal */
    CHECK_INT_EQ(copse__f32_to_fp16(-FLT_MIN), 0x8000);
    CHECK_INT_EQ(copse__f32_to_fp16(0.1f), 0x2e66);
    CHECK_INT_EQ(copse__f32_to_fp16(3.14159265f), 0x4248);
    /* NaNs stay NaN with their sign, even when the payload is only in the
     * low 13 bits that fp16 drops. */
    uint16_t n1 = copse__f32_to_fp16(NAN);
    uint16_t n2 = copse__f32_to_fp16(bitsf(0xff800001u));
    CHECK((n1 & 0x7c00) == 0x7c00 && (n1 & 0x3ff) != 0);
    CHECK((n2 & 0xfc00) == 0xfc00 && (n2 & 0x3ff) != 0);
    CHECK_FLOAT_SAME(copse__fp16_to_f32(0x3555), 0.333251953125f);
    CHECK_FLOAT_SAME(copse__fp16_to_f32(0x8001), -5.9604645e-08f);
    CHECK_FLOAT_SAME(copse__fp16_to_f32(0x03ff), 6.097555160522461e-05f);
    CHECK_FLOAT_SAME(copse__fp16_to_f32(0xfc00), -INFINITY);
}

/* Random floats of every magnitude: the result is a nearest half (ties even). */
static void test_fp16_random(uint64_t *rng)
{
    int bad = 0;
    for (int k = 0; k < 1000000; k++) {
        /* Exponents mostly in and around the fp16 range. */
        uint32_t u = (uint32_t)test_rand(rng);
        if (k % 4 != 0)
            u = (u & 0x807fffffu) | ((uint32_t)(96 + test_rand(rng) % 50) << 23);
        float f = bitsf(u);
        if (isnan(f))
            continue;
        uint16_t h = copse__f32_to_fp16(f);
        double a = fabs((double)f);
        uint16_t mag = h & 0x7fff;
        bool ok = (h >> 15) == (u >> 31);
        if (a >= 65520.0) {
            ok = ok && mag == 0x7c00;
        } else {
            double v = ref_half(mag);
            double err = fabs(a - v);
            if (mag > 0)
                ok = ok && err <= fabs(a - ref_half((uint16_t)(mag - 1)));
            double next = mag + 1 < 0x7c00 ? ref_half((uint16_t)(mag + 1)) : 65536.0;
            ok = ok && mag < 0x7c00 && err <= fabs(a - next);
            if (mag > 0 && err == fabs(a - ref_half((uint16_t)(mag - 1))))
                ok = ok && (mag & 1) == 0;
            if (err == fabs(a - next))
                ok = ok && (mag & 1) == 0;
        }
        if (!ok && bad++ < 10)
            fprintf(stderr, "fp16 of %.9g (0x%08" PRIx32 ") = 0x%04x is not the nearest\n", (double)f, u, h);
    }
    CHECK_INT_EQ(bad, 0);
}

/* ---------------------------------------------------------------- bf16 */

static void test_bf16(uint64_t *rng)
{
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = copse__bf16_to_f32((uint16_t)h);
        bool ok = fbits(f) == h << 16;
        uint16_t back = copse__f32_to_bf16(f);
        if (isnan(f))
            ok = ok && (back & 0x7f80) == 0x7f80 && (back & 0x40) && (back & 0x8000) == (h & 0x8000);
        else
            ok = ok && back == h;
        /* Halfway to the next pattern (same binade, or the next one, or inf). */
        if (ok && (h & 0x7fff) < 0x7f80) {
            uint32_t mid = (h << 16) | 0x8000u;
            uint16_t even = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
            ok = copse__f32_to_bf16(bitsf(mid)) == even && copse__f32_to_bf16(bitsf(mid - 1)) == h &&
                 copse__f32_to_bf16(bitsf(mid + 1)) == h + 1;
        }
        if (!ok && bad++ < 10)
            fprintf(stderr, "bf16 0x%04" PRIx32 ": f %.9g back 0x%04x\n", h, (double)f, back);
    }
    CHECK_INT_EQ(bad, 0);

    CHECK_INT_EQ(copse__f32_to_bf16(1.0f), 0x3f80);
    CHECK_INT_EQ(copse__f32_to_bf16(-3.0f), 0xc040);
    CHECK_INT_EQ(copse__f32_to_bf16(3.14159265f), 0x4049);
    CHECK_INT_EQ(copse__f32_to_bf16(FLT_MAX), 0x7f80); /* rounds up past the largest bf16 */
    CHECK_INT_EQ(copse__f32_to_bf16(-INFINITY), 0xff80);
    CHECK_INT_EQ(copse__f32_to_bf16(bitsf(0x00000001u)), 0x0000);
    CHECK_INT_EQ(copse__f32_to_bf16(bitsf(0x7f800001u)), 0x7fc0); /* signalling NaN made quiet */
    CHECK_INT_EQ(copse__f32_to_bf16(bitsf(0xffc12345u)), 0xffc1);

    /* Random floats: nearest bf16 by value (double arithmetic), ties to even. */
    bad = 0;
    for (int k = 0; k < 1000000; k++) {
        uint32_t u = (uint32_t)test_rand(rng);
        float f = bitsf(u);
        if (isnan(f) || isinf(f))
            continue;
        uint16_t h = copse__f32_to_bf16(f);
        uint32_t lo = u & 0xffff0000u;
        double dlo = bitsf(lo), dhi = (lo & 0x7fffffffu) == 0x7f7f0000u ? (u >> 31 ? -1 : 1) * ldexp(1.0, 128)
                                                                          : (double)bitsf(lo + 0x10000u);
        double elo = fabs((double)f - dlo), ehi = fabs((double)f - dhi);
        uint16_t want = elo < ehi ? (uint16_t)(lo >> 16)
                      : elo > ehi ? (uint16_t)((lo >> 16) + 1)
                                  : (uint16_t)(((lo >> 16) & 1) ? (lo >> 16) + 1 : (lo >> 16));
        if (h != want && bad++ < 10)
            fprintf(stderr, "bf16 of %.9g (0x%08" PRIx32 ") = 0x%04x, want 0x%04x\n", (double)f, u, h, want);
    }
    CHECK_INT_EQ(bad, 0);
}

/* ---------------------------------------------------------------- traits and sizes */

static const struct {
    uint32_t type;
    const char *name;
    uint32_t block_size, type_size;
    bool dequant;
} expected_traits[] = {
    {COPSE_Q_F32, "f32", 1, 4, true},      {COPSE_Q_F16, "f16", 1, 2, true},
    {COPSE_Q_BF16, "bf16", 1, 2, true},    {COPSE_Q_Q4_0, "q4_0", 32, 18, true},
    {COPSE_Q_Q4_1, "q4_1", 32, 20, true},  {COPSE_Q_Q5_0, "q5_0", 32, 22, true},
    {COPSE_Q_Q5_1, "q5_1", 32, 24, true},  {COPSE_Q_Q8_0, "q8_0", 32, 34, true},
    {COPSE_Q_Q8_1, "q8_1", 32, 36, true},  {COPSE_Q_Q2_K, "q2_k", 256, 84, true},
    {COPSE_Q_Q3_K, "q3_k", 256, 110, true}, {COPSE_Q_Q4_K, "q4_k", 256, 144, true},
    {COPSE_Q_Q5_K, "q5_k", 256, 176, true}, {COPSE_Q_Q6_K, "q6_k", 256, 210, true},
    {COPSE_Q_Q8_K, "q8_k", 256, 292, true}, {COPSE_Q_I8, "i8", 1, 1, false},
    {COPSE_Q_I16, "i16", 1, 2, false},     {COPSE_Q_I32, "i32", 1, 4, false},
    {COPSE_Q_I64, "i64", 1, 8, false},     {COPSE_Q_F64, "f64", 1, 8, false},
};
#define N_TRAITS (sizeof expected_traits / sizeof expected_traits[0])

static void test_traits(void)
{
    for (size_t k = 0; k < N_TRAITS; k++) {
        const copse_qtype_traits *t = copse__qtype_traits(expected_traits[k].type);
        CHECK(t != NULL);
        if (!t)
            continue;
        CHECK_STR_EQ(t->name, expected_traits[k].name);
        CHECK_STR_EQ(copse__qtype_name(expected_traits[k].type), expected_traits[k].name);
        CHECK_INT_EQ(t->block_size, expected_traits[k].block_size);
        CHECK_INT_EQ(t->type_size, expected_traits[k].type_size);
        CHECK_INT_EQ(t->can_dequantize, expected_traits[k].dequant);
    }
    /* Numbers no format uses (4 and 5 were removed formats). */
    const uint32_t unknown[] = {4, 5, 16, 23, 29, 31, 63, 64, 1000, UINT32_MAX};
    for (size_t k = 0; k < sizeof unknown / sizeof unknown[0]; k++) {
        CHECK(copse__qtype_traits(unknown[k]) == NULL);
        CHECK_STR_EQ(copse__qtype_name(unknown[k]), "?");
    }
}

static void test_row_bytes(void)
{
    uint64_t b = 12345;
    CHECK(copse__qtype_row_bytes(COPSE_Q_F32, 0, &b) && b == 0);
    CHECK(copse__qtype_row_bytes(COPSE_Q_F32, 7, &b) && b == 28);
    CHECK(copse__qtype_row_bytes(COPSE_Q_BF16, 3, &b) && b == 6);
    CHECK(copse__qtype_row_bytes(COPSE_Q_Q4_0, 64, &b) && b == 36);
    CHECK(copse__qtype_row_bytes(COPSE_Q_Q8_0, 4096, &b) && b == 4096 / 32 * 34);
    CHECK(copse__qtype_row_bytes(COPSE_Q_Q4_K, 2048, &b) && b == 8 * 144);
    CHECK(copse__qtype_row_bytes(COPSE_Q_Q6_K, 256, &b) && b == 210);
    for (size_t k = 0; k < N_TRAITS; k++) {
        uint32_t ty = expected_traits[k].type, bs = expected_traits[k].block_size;
        CHECK(copse__qtype_row_bytes(ty, 3ull * bs, &b) && b == 3ull * expected_traits[k].type_size);
        if (bs > 1) { /* not a multiple of the block size */
            b = 777;
            CHECK(!copse__qtype_row_bytes(ty, bs - 1, &b));
            CHECK(!copse__qtype_row_bytes(ty, 5ull * bs + 1, &b));
            CHECK(!copse__qtype_row_bytes(ty, 1, &b));
            CHECK_INT_EQ(b, 777); /* untouched on failure */
        }
    }
    /* Overflow is possible only where a block has more bytes than elements:
     * the largest count that fits, and one more. */
    CHECK(copse__qtype_row_bytes(COPSE_Q_F32, UINT64_MAX / 4, &b) && b == UINT64_MAX / 4 * 4);
    CHECK(!copse__qtype_row_bytes(COPSE_Q_F32, UINT64_MAX / 4 + 1, &b));
    CHECK(copse__qtype_row_bytes(COPSE_Q_F16, UINT64_MAX / 2, &b) && b == UINT64_MAX / 2 * 2);
    CHECK(!copse__qtype_row_bytes(COPSE_Q_BF16, UINT64_MAX / 2 + 1, &b));
    CHECK(!copse__qtype_row_bytes(COPSE_Q_F64, UINT64_MAX, &b));
    CHECK(!copse__qtype_row_bytes(COPSE_Q_I64, UINT64_MAX / 8 + 1, &b));
    CHECK(copse__qtype_row_bytes(COPSE_Q_I8, UINT64_MAX, &b) && b == UINT64_MAX);
    /* Block formats shrink, so the largest multiple of the block size fits. */
    CHECK(copse__qtype_row_bytes(COPSE_Q_Q4_0, UINT64_MAX / 32 * 32, &b) && b == UINT64_MAX / 32 * 18);
    CHECK(copse__qtype_row_bytes(COPSE_Q_Q6_K, UINT64_MAX / 256 * 256, &b) && b == UINT64_MAX / 256 * 210);
    CHECK(!copse__qtype_row_bytes(COPSE_Q_Q6_K, UINT64_MAX, &b)); /* not a multiple */
    /* Unknown types. */
    CHECK(!copse__qtype_row_bytes(4, 32, &b));
    CHECK(!copse__qtype_row_bytes(64, 32, &b));
    CHECK(!copse__qtype_row_bytes(UINT32_MAX, 0, &b));
}

static void test_dequant_status(void)
{
    uint8_t src[2 * 292] = {0};
    float y[512];
    /* Types without a dequantizer, known or not. */
    CHECK_STATUS(copse__dequantize_row(COPSE_Q_I8, src, y, 4), COPSE_EUNSUPPORTED);
    CHECK_STATUS(copse__dequantize_row(COPSE_Q_I32, src, y, 4), COPSE_EUNSUPPORTED);
    CHECK_STATUS(copse__dequantize_row(COPSE_Q_F64, src, y, 4), COPSE_EUNSUPPORTED);
    CHECK_STATUS(copse__dequantize_row(4, src, y, 32), COPSE_EUNSUPPORTED);
    CHECK_STATUS(copse__dequantize_row(COPSE_Q_TYPE_LIMIT, src, y, 32), COPSE_EUNSUPPORTED);
    CHECK_STATUS(copse__dequantize_row(UINT32_MAX, src, y, 32), COPSE_EUNSUPPORTED);
    /* Counts that are not a multiple of the block size, or negative. */
    CHECK_STATUS(copse__dequantize_row(COPSE_Q_Q4_0, src, y, 31), COPSE_EINVAL);
    CHECK_STATUS(copse__dequantize_row(COPSE_Q_Q4_0, src, y, 33), COPSE_EINVAL);
    CHECK_STATUS(copse__dequantize_row(COPSE_Q_Q4_K, src, y, 128), COPSE_EINVAL);
    CHECK_STATUS(copse__dequantize_row(COPSE_Q_Q8_K, src, y, 257), COPSE_EINVAL);
    CHECK_STATUS(copse__dequantize_row(COPSE_Q_Q8_0, src, y, -32), COPSE_EINVAL);
    CHECK_STATUS(copse__dequantize_row(COPSE_Q_F32, src, y, -1), COPSE_EINVAL);
    /* Zero elements is fine and touches nothing. */
    y[0] = 42.0f;
    CHECK_STATUS(copse__dequantize_row(COPSE_Q_Q6_K, src, y, 0), COPSE_OK);
    CHECK_STATUS(copse__dequantize_row(COPSE_Q_F16, NULL, NULL, 0), COPSE_OK);
    CHECK(y[0] == 42.0f);
    /* Every format that claims a dequantizer has one. */
    for (size_t k = 0; k < N_TRAITS; k++)
        if (expected_traits[k].dequant)
            CHECK_STATUS(copse__dequantize_row(expected_traits[k].type, src, y,
                                               2 * (int64_t)expected_traits[k].block_size),
                         COPSE_OK);
}

/* ---------------------------------------------------------------- hand-built blocks */

typedef struct expect {
    int i;
    float y;
} expect;

#define N_EXPECT 8

typedef struct hand_case {
    uint32_t type;
    uint8_t blk[292];
    expect e[N_EXPECT]; /* unused slots have i = -1 */
} hand_case;

/* Runs one hand-built block and compares the listed elements. */
static void check_hand(const hand_case *c)
{
    float y[256];
    CHECK_STATUS(dq_block(c->type, c->blk, y), COPSE_OK);
    for (int k = 0; k < N_EXPECT && c->e[k].i >= 0; k++) {
        test_checks_++;
        if (!same_float(y[c->e[k].i], c->e[k].y)) {
            test_failures_++;
            fprintf(stderr, "%s element %d: got %.9g, want %.9g\n", copse__qtype_name(c->type), c->e[k].i,
                    (double)y[c->e[k].i], (double)c->e[k].y);
        }
    }
}

static void set_expect(hand_case *c, const expect *e, int n)
{
    for (int k = 0; k < N_EXPECT; k++)
        c->e[k] = k < n ? e[k] : (expect){-1, 0.0f};
}

#define EXPECT(c, ...)                                                                       \
    do {                                                                                     \
        const expect e_[] = {__VA_ARGS__};                                                   \
        set_expect((c), e_, (int)(sizeof e_ / sizeof e_[0]));                                \
        check_hand(c);                                                                       \
    } while (0)

/* The 12-byte scale/min packing of Q4_K/Q5_K, written forwards. */
static void pack_k4_scales(uint8_t s[12], const int sc[8], const int mn[8])
{
    for (int j = 0; j < 4; j++) {
        s[j] = (uint8_t)((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
        s[j + 4] = (uint8_t)((mn[j] & 63) | ((mn[j + 4] >> 4) << 6));
        s[j + 8] = (uint8_t)((sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4));
    }
}

static void test_hand_blocks(void)
{
    hand_case c;

    /* F32 / F16 / BF16: single elements. */
    memset(&c, 0, sizeof c);
    c.type = COPSE_Q_F32;
    put32(c.blk, 0x3fc00000u); /* 1.5 */
    EXPECT(&c, {0, 1.5f});
    put32(c.blk, 0x80000000u);
    EXPECT(&c, {0, -0.0f});
    put32(c.blk, 0x7f800001u); /* signalling NaN: copied as is */
    {
        float y;
        CHECK_STATUS(dq_block(COPSE_Q_F32, c.blk, &y), COPSE_OK);
        CHECK_INT_EQ(fbits(y), 0x7f800001u);
    }
    c.type = COPSE_Q_F16;
    put16(c.blk, 0x3c00);
    EXPECT(&c, {0, 1.0f});
    put16(c.blk, 0xc000);
    EXPECT(&c, {0, -2.0f});
    put16(c.blk, 0x0001);
    EXPECT(&c, {0, 5.9604645e-08f});
    put16(c.blk, 0x7bff);
    EXPECT(&c, {0, 65504.0f});
    put16(c.blk, 0x7c00);
    EXPECT(&c, {0, INFINITY});
    c.type = COPSE_Q_BF16;
    put16(c.blk, 0x3f80);
    EXPECT(&c, {0, 1.0f});
    put16(c.blk, 0xc040);
    EXPECT(&c, {0, -3.0f});
    put16(c.blk, 0x4049);
    EXPECT(&c, {0, 3.140625f});

    /* Q4_0: d = 0.5, qs[j] = j | (15 - j) << 4: y[j] = 0.5 (j - 8), y[16 + j] = 0.5 (7 - j). */
    memset(&c, 0, sizeof c);
    c.type = COPSE_Q_Q4_0;
    put16(c.blk, 0x3800);
    for (int j = 0; j < 16; j++)
        c.blk[2 + j] = (uint8_t)(j | (15 - j) << 4);
    EXPECT(&c, {0, -4.0f}, {1, -3.5f}, {8, 0.0f}, {15, 3.5f}, {16, 3.5f}, {23, 0.0f}, {31, -4.0f});

    /* Q4_1: d = 1, m = -2, same nibbles: y[j] = j - 2, y[16 + j] = 13 - j. */
    memset(&c, 0, sizeof c);
    c.type = COPSE_Q_Q4_1;
    put16(c.blk, 0x3c00);
    put16(c.blk + 2, 0xc000);
    for (int j = 0; j < 16; j++)
        c.blk[4 + j] = (uint8_t)(j | (15 - j) << 4);
    EXPECT(&c, {0, -2.0f}, {2, 0.0f}, {15, 13.0f}, {16, 13.0f}, {31, -2.0f});

    /* Q5_0: d = 1, qh bits 0, 17, 31, same nibbles: y = q - 16. */
    memset(&c, 0, sizeof c);
    c.type = COPSE_Q_Q5_0;
    put16(c.blk, 0x3c00);
    put32(c.blk + 2, 0x80020001u);
    for (int j = 0; j < 16; j++)
        c.blk[6 + j] = (uint8_t)(j | (15 - j) << 4);
    EXPECT(&c, {0, 0.0f}, {1, -15.0f}, {15, -1.0f}, {16, -1.0f}, {17, 14.0f}, {31, 0.0f});

    /* Q5_1: d = 0.5, m = 1, same qh and nibbles: y = 0.5 q + 1. */
    memset(&c, 0, sizeof c);
    c.type = COPSE_Q_Q5_1;
    put16(c.blk, 0x3800);
    put16(c.blk + 2, 0x3c00);
    put32(c.blk + 4, 0x80020001u);
    for (int j = 0; j < 16; j++)
        c.blk[8 + j] = (uint8_t)(j | (15 - j) << 4);
    EXPECT(&c, {0, 9.0f}, {1, 1.5f}, {15, 8.5f}, {16, 8.5f}, {17, 16.0f}, {31, 9.0f});

    /* Q8_0: d = 0.25, q[j] = 8 j - 128. */
    memset(&c, 0, sizeof c);
    c.type = COPSE_Q_Q8_0;
    put16(c.blk, 0x3400);
    for (int j = 0; j < 32; j++)
        c.blk[2 + j] = (uint8_t)(8 * j);
    for (int j = 0; j < 32; j++)
        c.blk[2 + j] ^= 0x80; /* 8j - 128 in two's complement */
    EXPECT(&c, {0, -32.0f}, {1, -30.0f}, {16, 0.0f}, {31, 30.0f});

    /* Q8_1: d = -1, s ignored, q[j] = j - 16. */
    memset(&c, 0, sizeof c);
    c.type = COPSE_Q_Q8_1;
    put16(c.blk, 0xbc00);
    put16(c.blk + 2, 0x7e00); /* a NaN in s must not matter */
    for (int j = 0; j < 32; j++)
        c.blk[4 + j] = (uint8_t)(j - 16);
    EXPECT(&c, {0, 16.0f}, {16, -0.0f}, {31, -15.0f});

    /* Q2_K: scales[g] = g | (15 - g) << 4, d = 1, dmin = 0.5; first 32 qs
     * bytes 0xe4 (2-bit fields 0,1,2,3), last 32 0x1b (3,2,1,0).
     * y = g q - 0.5 (15 - g). */
    memset(&c, 0, sizeof c);
    c.type = COPSE_Q_Q2_K;
    for (int g = 0; g < 16; g++)
        c.blk[g] = (uint8_t)(g | (15 - g) << 4);
    memset(c.blk + 16, 0xe4, 32);
    memset(c.blk + 48, 0x1b, 32);
    put16(c.blk + 80, 0x3c00);
    put16(c.blk + 82, 0x3800);
    EXPECT(&c, {0, -7.5f}, {40, -4.5f}, {100, 13.5f}, {128, 20.5f}, {200, 10.5f}, {255, 0.0f});

    /* Q3_K: d = 1, 6-bit scales 24 + g (so sc = g - 8), hmask 0x55 (high bit
     * set for even i / 32, i.e. no -4 there), 2-bit fields as in Q2_K. */
    memset(&c, 0, sizeof c);
    c.type = COPSE_Q_Q3_K;
    memset(c.blk, 0x55, 32);
    memset(c.blk + 32, 0xe4, 32);
    memset(c.blk + 64, 0x1b, 32);
    for (int g = 0; g < 16; g++) {
        int v = 24 + g;
        c.blk[96 + g % 8] |= (uint8_t)((v & 15) << 4 * (g / 8));
        c.blk[96 + 8 + g % 4] |= (uint8_t)((v >> 4) << 2 * (g / 4));
    }
    put16(c.blk + 108, 0x3c00);
    EXPECT(&c, {0, -0.0f}, {33, 18.0f}, {64, -8.0f}, {130, 0.0f}, {170, -4.0f}, {255, -28.0f});

    /* Q4_K: d = 1, dmin = 0.5, sc_j = 10 + 7 j, mn_j = 63 - 5 j; qs in chunk c:
     * byte l = (l % 16) | (15 - l % 16) << 4. y = sc_j q - 0.5 mn_j. */
    static const int sc[8] = {10, 17, 24, 31, 38, 45, 52, 59};
    static const int mn[8] = {63, 58, 53, 48, 43, 38, 33, 28};
    memset(&c, 0, sizeof c);
    c.type = COPSE_Q_Q4_K;
    put16(c.blk, 0x3c00);
    put16(c.blk + 2, 0x3800);
    pack_k4_scales(c.blk + 4, sc, mn);
    for (int k = 0; k < 128; k++)
        c.blk[16 + k] = (uint8_t)((k % 16) | (15 - k % 16) << 4);
    EXPECT(&c, {0, -31.5f}, {5, 18.5f}, {33, 209.0f}, {150, 206.5f}, {200, 399.5f}, {255, -14.0f});

    /* Q5_K: as Q4_K plus qh bytes 0xa5 (5th bit for sub-blocks 0, 2, 5, 7). */
    memset(&c, 0, sizeof c);
    c.type = COPSE_Q_Q5_K;
    put16(c.blk, 0x3c00);
    put16(c.blk + 2, 0x3800);
    pack_k4_scales(c.blk + 4, sc, mn);
    memset(c.blk + 16, 0xa5, 32);
    for (int k = 0; k < 128; k++)
        c.blk[48 + k] = (uint8_t)((k % 16) | (15 - k % 16) << 4);
    EXPECT(&c, {0, 128.5f}, {33, 209.0f}, {150, 206.5f}, {170, 926.0f}, {255, 930.0f});

    /* Q6_K: d = 0.5, scales[g] = 3 g - 20; ql byte k of each 64 =
     * (k % 16) | (15 - k % 16) << 4; qh 0xe4 then 0x1b as in Q2_K.
     * y = 0.5 sc q with q = low4 | high2 << 4, minus 32. */
    memset(&c, 0, sizeof c);
    c.type = COPSE_Q_Q6_K;
    for (int k = 0; k < 128; k++)
        c.blk[k] = (uint8_t)((k % 16) | (15 - k % 16) << 4);
    memset(c.blk + 128, 0xe4, 32);
    memset(c.blk + 160, 0x1b, 32);
    for (int g = 0; g < 16; g++)
        c.blk[192 + g] = (uint8_t)(3 * g - 20);
    put16(c.blk + 208, 0x3800);
    EXPECT(&c, {0, 320.0f}, {37, 77.0f}, {70, -36.0f}, {127, 8.0f}, {128, 32.0f}, {255, -400.0f});

    /* Q8_K: d = 0.125 (float32), q[i] = i - 128, bsums ignored. */
    memset(&c, 0, sizeof c);
    c.type = COPSE_Q_Q8_K;
    put32(c.blk, 0x3e000000u);
    for (int i = 0; i < 256; i++)
        c.blk[4 + i] = (uint8_t)(i ^ 0x80);
    memset(c.blk + 260, 0xff, 32);
    EXPECT(&c, {0, -16.0f}, {1, -15.875f}, {128, 0.0f}, {255, 15.875f});
}

/* ---------------------------------------------------------------- random blocks */

/* Element i of block b, straight from the format definitions (the numpy view
 * of gguf-py: arrays of sub-fields, then index arithmetic), using ref_half().
 * Each float operation is its own statement, as in the definition. */
static float ref_elem(uint32_t type, const uint8_t *b, int i)
{
    int l = i % 32;
    switch (type) {
    case COPSE_Q_Q4_0: {
        int nib = (b[2 + i % 16] >> (i / 16 * 4)) & 15;
        return ref_half(get16(b)) * (float)(nib - 8);
    }
    case COPSE_Q_Q4_1: {
        int nib = (b[4 + i % 16] >> (i / 16 * 4)) & 15;
        float p = ref_half(get16(b)) * (float)nib;
        return p + ref_half(get16(b + 2));
    }
    case COPSE_Q_Q5_0: {
        int q = ((b[6 + i % 16] >> (i / 16 * 4)) & 15) + 16 * ((b[2 + i / 8] >> (i % 8)) & 1);
        return ref_half(get16(b)) * (float)(q - 16);
    }
    case COPSE_Q_Q5_1: {
        int q = ((b[8 + i % 16] >> (i / 16 * 4)) & 15) + 16 * ((b[4 + i / 8] >> (i % 8)) & 1);
        float p = ref_half(get16(b)) * (float)q;
        return p + ref_half(get16(b + 2));
    }
    case COPSE_Q_Q8_0:
        return ref_half(get16(b)) * (float)as_i8(b[2 + i]);
    case COPSE_Q_Q8_1:
        return ref_half(get16(b)) * (float)as_i8(b[4 + i]);
    case COPSE_Q_Q2_K: {
        int q = (b[16 + (i / 128) * 32 + l] >> ((i / 32) % 4 * 2)) & 3;
        uint8_t s = b[i / 16];
        float dl = ref_half(get16(b + 80)) * (float)(s % 16);
        float ml = ref_half(get16(b + 82)) * (float)(s / 16);
        float p = dl * (float)q;
        return p - ml;
    }
    case COPSE_Q_Q3_K: {
        int g = i / 16;
        int six = ((b[96 + g % 8] >> (g / 8 * 4)) & 15) + 16 * ((b[104 + g % 4] >> (g / 4 * 2)) & 3);
        int q = ((b[32 + (i / 128) * 32 + l] >> ((i / 32) % 4 * 2)) & 3) - 4 + 4 * ((b[l] >> (i / 32)) & 1);
        float dl = ref_half(get16(b + 108)) * (float)(six - 32);
        return dl * (float)q;
    }
    case COPSE_Q_Q4_K:
    case COPSE_Q_Q5_K: {
        int j = i / 32;
        const uint8_t *s = b + 4;
        int scv = j < 4 ? s[j] % 64 : s[j + 4] % 16 + 16 * (s[j - 4] / 64);
        int mnv = j < 4 ? s[j + 4] % 64 : s[j + 4] / 16 + 16 * (s[j] / 64);
        const uint8_t *qs = b + (type == COPSE_Q_Q4_K ? 16 : 48);
        int q = (qs[j / 2 * 32 + l] >> (j % 2 * 4)) & 15;
        if (type == COPSE_Q_Q5_K)
            q += 16 * ((b[16 + l] >> j) & 1);
        float dj = ref_half(get16(b)) * (float)scv;
        float mj = ref_half(get16(b + 2)) * (float)mnv;
        float p = dj * (float)q;
        return p - mj;
    }
    case COPSE_Q_Q6_K: {
        int h = i / 128, r = i % 128;
        int lo = (b[h * 64 + r % 64] >> (r / 64 * 4)) & 15;
        int hi = (b[128 + h * 32 + l] >> (r / 32 * 2)) & 3;
        float ds = ref_half(get16(b + 208)) * (float)as_i8(b[192 + i / 16]);
        return ds * (float)(lo + 16 * hi - 32);
    }
    case COPSE_Q_Q8_K: {
        uint32_t u = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
        return bitsf(u) * (float)as_i8(b[4 + i]);
    }
    case COPSE_Q_F32: {
        uint32_t u = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
        return bitsf(u);
    }
    case COPSE_Q_F16:
        return ref_half(get16(b));
    case COPSE_Q_BF16:
        return bitsf((uint32_t)get16(b) << 16);
    }
    return NAN;
}

/* Offsets of the fp16 scale fields of each block format. */
static int fp16_fields(uint32_t type, int off[2])
{
    switch (type) {
    case COPSE_Q_Q4_0: case COPSE_Q_Q5_0: case COPSE_Q_Q8_0:
        off[0] = 0;
        return 1;
    case COPSE_Q_Q4_1: case COPSE_Q_Q5_1: case COPSE_Q_Q8_1: case COPSE_Q_Q4_K: case COPSE_Q_Q5_K:
        off[0] = 0, off[1] = 2;
        return 2;
    case COPSE_Q_Q2_K:
        off[0] = 80, off[1] = 82;
        return 2;
    case COPSE_Q_Q3_K:
        off[0] = 108;
        return 1;
    case COPSE_Q_Q6_K:
        off[0] = 208;
        return 1;
    }
    return 0;
}

#define RAND_BLOCKS 64

static void test_random_blocks(uint64_t *rng)
{
    static uint8_t buf[RAND_BLOCKS * 292 + 1];
    static float y[RAND_BLOCKS * 256 + 4];
    for (size_t k = 0; k < N_TRAITS; k++) {
        uint32_t type = expected_traits[k].type;
        if (!expected_traits[k].dequant)
            continue;
        uint32_t bs = expected_traits[k].block_size, ts = expected_traits[k].type_size;
        int bad = 0;
        for (int round = 0; round < 50; round++) {
            /* The row starts at buf + 1: an odd address for the block reads. */
            uint8_t *src = buf + 1;
            for (size_t q = 0; q < RAND_BLOCKS * ts; q++)
                src[q] = (uint8_t)test_rand(rng);
            /* Finite scales (a few rounds keep whatever came out, inf/NaN
             * included), one block in eight with a subnormal one. */
            int off[2], nf = fp16_fields(type, off);
            for (int blk = 0; blk < RAND_BLOCKS && round % 10 != 9; blk++) {
                for (int f = 0; f < nf; f++) {
                    uint8_t *p = src + blk * ts + off[f];
                    uint16_t h = get16(p);
                    if ((h & 0x7c00) == 0x7c00)
                        h &= 0xbfff;
                    if (test_rand(rng) % 8 == 0)
                        h &= 0x83ff;
                    put16(p, h);
                }
                if (type == COPSE_Q_Q8_K) { /* float32 scale: finite */
                    uint8_t *p = src + blk * ts;
                    if ((p[3] & 0x7f) == 0x7f && (p[2] & 0x80))
                        p[3] &= 0xbf;
                }
            }
            /* Guard values after the row must survive. */
            int64_t n = (int64_t)RAND_BLOCKS * bs;
            for (int g = 0; g < 4; g++)
                y[n + g] = -777.0f;
            CHECK_STATUS(copse__dequantize_row(type, src, y, n), COPSE_OK);
            for (int g = 0; g < 4; g++)
                CHECK(y[n + g] == -777.0f);
            for (int64_t i = 0; i < n; i++) {
                float want = ref_elem(type, src + i / bs * ts, (int)(i % bs));
                if (!same_float(y[i], want) && bad++ < 5)
                    fprintf(stderr, "%s random block %" PRId64 " element %" PRId64 ": got %.9g (0x%08" PRIx32
                                    "), want %.9g (0x%08" PRIx32 ")\n",
                            copse__qtype_name(type), i / bs, i % bs, (double)y[i], fbits(y[i]), (double)want,
                            fbits(want));
            }
            /* Block by block gives the same as the whole row. */
            float one[256];
            int blk = (int)(test_rand(rng) % RAND_BLOCKS);
            CHECK_STATUS(copse__dequantize_row(type, src + blk * ts, one, bs), COPSE_OK);
            for (uint32_t i = 0; i < bs; i++)
                if (!same_float(one[i], y[blk * bs + i]) && bad++ < 5)
                    fprintf(stderr, "%s block %d alone differs at %" PRIu32 "\n", copse__qtype_name(type), blk, i);
        }
        test_checks_++;
        if (bad) {
            test_failures_++;
            fprintf(stderr, "%s: %d random mismatches\n", copse__qtype_name(type), bad);
        }
    }
}

/* ---------------------------------------------------------------- main */

int main(void)
{
    uint64_t rng = test_seed();
    test_fp16_all_values();
    test_fp16_rounding();
    test_fp16_specials();
    test_fp16_random(&rng);
    test_bf16(&rng);
    test_traits();
    test_row_bytes();
    test_dequant_status();
    test_hand_blocks();
    test_random_blocks(&rng);
    return test_exit();
}
