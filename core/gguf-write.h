/*
 * gguf-write.h — writing GGUF v3 files (internal).
 *
 * Metadata and tensor infos are collected in memory; copse__gguf_writer_finish
 * then writes the header, the tensor infos and each tensor's data in order,
 * asking a callback for the bytes in chunks of whole blocks, so multi-gigabyte
 * files are written without holding their data in memory.
 *
 * Used by `copse random-model` (benchmark models) and later `copse slice`.
 * Threading: one thread per writer.
 */
#ifndef COPSE_CORE_GGUF_WRITE_H
#define COPSE_CORE_GGUF_WRITE_H

#include <stddef.h>
#include <stdint.h>

#include "copse.h"
#include "gguf.h"

typedef struct copse_gguf_writer copse_gguf_writer;

copse_status copse__gguf_writer_create(copse_gguf_writer **out);
void copse__gguf_writer_destroy(copse_gguf_writer *w);

/* Metadata. Keys and strings are copied. */
copse_status copse__gguf_writer_add_u32(copse_gguf_writer *w, const char *key, uint32_t v);
copse_status copse__gguf_writer_add_f32(copse_gguf_writer *w, const char *key, float v);
copse_status copse__gguf_writer_add_bool(copse_gguf_writer *w, const char *key, int v);
copse_status copse__gguf_writer_add_str(copse_gguf_writer *w, const char *key, const char *v);
/* A metadata entry of an open file, copied as it is (any type, arrays too). */
copse_status copse__gguf_writer_add_kv(copse_gguf_writer *w, const copse_gguf_kv *kv);

/* A tensor of ne0 x ne1 elements (ne1 == 1 for vectors) of a copse_qtype. */
copse_status copse__gguf_writer_add_tensor(copse_gguf_writer *w, const char *name, uint32_t type,
                                           uint64_t ne0, uint64_t ne1);

/* Fills buf[0..n) with bytes [offset, offset + n) of tensor i's data; offset and
 * n are multiples of the tensor type's block size. */
typedef copse_status (*copse_gguf_data_cb)(void *ud, size_t i, uint64_t offset, void *buf, size_t n);

/* Write the file: header, metadata, tensor infos, then every tensor's data
 * from data_cb, 32-byte aligned. progress (may be NULL) gets bytes written so
 * far and the total. COPSE_EIO with err naming the path on a write error. */
copse_status copse__gguf_writer_finish(copse_gguf_writer *w, const char *path, copse_gguf_data_cb data_cb,
                                       void *ud, void (*progress)(uint64_t done, uint64_t total),
                                       char *err, size_t err_size);

#endif /* COPSE_CORE_GGUF_WRITE_H */
