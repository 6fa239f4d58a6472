/*
 * cpu-features.c — run-time ISA detection with CPUID and XGETBV.
 */
#include "cpu-features.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

static uint64_t xgetbv0(void)
{
    uint32_t eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((uint64_t)edx << 32) | eax;
}

static uint32_t detect(void)
{
    unsigned a, b, c, d;
    uint32_t f = 0;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return 0;
    bool osxsave = (c >> 27) & 1;
    if (!osxsave)
        return 0;
    uint64_t xcr0 = xgetbv0();
    bool ymm = (xcr0 & 0x6) == 0x6;
    bool zmm = (xcr0 & 0xe6) == 0xe6;
    if (ymm && ((c >> 12) & 1))
        f |= COPSE_CPU_FMA;
    if (ymm && ((c >> 29) & 1))
        f |= COPSE_CPU_F16C;
    if (__get_cpuid_max(0, NULL) < 7)
        return f;
    __cpuid_count(7, 0, a, b, c, d);
    if (ymm && ((b >> 5) & 1))
        f |= COPSE_CPU_AVX2;
    if (zmm && ((b >> 16) & 1))
        f |= COPSE_CPU_AVX512F;
    if (zmm && ((b >> 30) & 1))
        f |= COPSE_CPU_AVX512BW;
    if (zmm && ((b >> 31) & 1))
        f |= COPSE_CPU_AVX512VL;
    if (zmm && ((c >> 11) & 1))
        f |= COPSE_CPU_AVX512VNNI;
    unsigned a1, b1, c1, d1;
    __cpuid_count(7, 1, a1, b1, c1, d1);
    if (zmm && ((a1 >> 5) & 1))
        f |= COPSE_CPU_AVX512BF16;
    if (ymm && ((a1 >> 4) & 1))
        f |= COPSE_CPU_AVXVNNI;
    return f;
}

void copse__cpu_model_name(char *out, size_t cap)
{
    unsigned regs[12];
    if (__get_cpuid_max(0x80000000, NULL) < 0x80000004) {
        snprintf(out, cap, "unknown");
        return;
    }
    for (unsigned i = 0; i < 3; i++)
        __get_cpuid(0x80000002 + i, &regs[4 * i], &regs[4 * i + 1], &regs[4 * i + 2], &regs[4 * i + 3]);
    char brand[49];
    memcpy(brand, regs, 48);
    brand[48] = 0;
    const char *s = brand;
    while (*s == ' ')
        s++;
    snprintf(out, cap, "%s", *s ? s : "unknown");
}
#else
static uint32_t detect(void)
{
    return 0;
}

void copse__cpu_model_name(char *out, size_t cap)
{
    snprintf(out, cap, "unknown");
}
#endif

uint32_t copse__cpu_features(void)
{
    /* Idempotent and race-free in effect: every thread computes the same value. */
    static _Atomic uint32_t cached = UINT32_MAX;
    uint32_t v = cached;
    if (v == UINT32_MAX) {
        v = detect();
        cached = v;
    }
    return v;
}

void copse__cpu_features_string(uint32_t f, char *out, size_t cap)
{
    static const struct { uint32_t bit; const char *name; } names[] = {
        {COPSE_CPU_AVX2, "avx2"},           {COPSE_CPU_FMA, "fma"},
        {COPSE_CPU_F16C, "f16c"},           {COPSE_CPU_AVX512F, "avx512f"},
        {COPSE_CPU_AVX512BW, "avx512bw"},   {COPSE_CPU_AVX512VL, "avx512vl"},
        {COPSE_CPU_AVX512VNNI, "avx512vnni"}, {COPSE_CPU_AVX512BF16, "avx512bf16"},
        {COPSE_CPU_AVXVNNI, "avxvnni"},
    };
    size_t used = 0;
    if (cap)
        out[0] = 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (!(f & names[i].bit))
            continue;
        int w = snprintf(out + used, cap > used ? cap - used : 0, "%s%s", used ? " " : "", names[i].name);
        if (w < 0 || (size_t)w >= cap - used)
            break;
        used += (size_t)w;
    }
}
