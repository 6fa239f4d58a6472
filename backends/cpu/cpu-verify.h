/*
 * cpu-verify.h — the CPU backend's verify op, one tree at a time (internal).
 *
 * Computes exactly what copse__verify_run (core/spec/verify.c) computes for
 * the cases the op covers (backend-impl.h, copse_verify_batch): the same
 * float/double arithmetic in the same order, so the result is bit-identical.
 * The probabilities are formed densely over the vocabulary; every sum runs
 * in id order and a zero entry adds nothing, so the dense sums equal the
 * host's sums over its sparse list of tokens with p > 0.
 */
#ifndef COPSE_CPU_VERIFY_H
#define COPSE_CPU_VERIFY_H

#include <stddef.h>
#include <stdint.h>

#include "../backend-impl.h"

/* Verify tree s of batch b over logits (row r at logits + r * row_stride,
 * n_vocab floats) into *out. scratch: 2 * n_vocab floats (unused by greedy
 * trees). Pure apart from scratch: trees can run on different threads. */
void copse__cpu_verify_tree(const float *logits, size_t row_stride, int32_t n_vocab, const copse_verify_batch *b,
                            int32_t s, float *scratch, copse_verify_path *out);

#endif /* COPSE_CPU_VERIFY_H */
