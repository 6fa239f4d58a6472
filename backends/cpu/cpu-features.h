/*
 * cpu-features.h — ISA features of the CPU we run on, detected at run time.
 */
#ifndef COPSE_CPU_FEATURES_H
#define COPSE_CPU_FEATURES_H

#include <stddef.h>
#include <stdint.h>

enum {
    COPSE_CPU_AVX2 = 1u << 0,
    COPSE_CPU_FMA = 1u << 1,
    COPSE_CPU_F16C = 1u << 2,
    COPSE_CPU_AVX512F = 1u << 3,
    COPSE_CPU_AVX512BW = 1u << 4,
    COPSE_CPU_AVX512VL = 1u << 5,
    COPSE_CPU_AVX512VNNI = 1u << 6,
    COPSE_CPU_AVX512BF16 = 1u << 7,
    COPSE_CPU_AVXVNNI = 1u << 8,
};

/* Bit set of COPSE_CPU_*; computed once, thread-safe. AVX/AVX-512 bits are
 * set only if the OS saves the corresponding register state (XGETBV). */
uint32_t copse__cpu_features(void);
/* "avx2 fma f16c avx512f ..." */
void copse__cpu_features_string(uint32_t features, char *out, size_t cap);
/* The CPU's brand string, or "unknown". */
void copse__cpu_model_name(char *out, size_t cap);

#endif
