/*
 * model.h — what the core sees of a copse_model (internal).
 */
#ifndef COPSE_CORE_MODEL_H
#define COPSE_CORE_MODEL_H

#include "copse.h"
#include "gguf.h"
#include "tokenizer.h"

struct copse_model {
    copse_gguf *gguf;     /* owned */
    copse_tokenizer *tok; /* owned; NULL if not loaded */
};

const copse_gguf *copse__model_gguf(const copse_model *m);
const copse_tokenizer *copse__model_tokenizer(const copse_model *m); /* may be NULL */

#endif /* COPSE_CORE_MODEL_H */
