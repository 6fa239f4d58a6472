/*
 * model.c — the public model handle: a validated GGUF file and its tokenizer.
 *
 * (The forward pass arrives with the CPU inference work; for now a model is
 * its file and its vocabulary.)
 */
#include "model.h"

#include <stdlib.h>

#include "error.h"

COPSE_API copse_model_params copse_model_default_params(void)
{
    return (copse_model_params){.use_mmap = 1, .load_tokenizer = 1};
}

COPSE_API copse_status copse_model_create(const char *path, const copse_model_params *params,
                                          copse_model **out, char *err, size_t err_size)
{
    if (!path || !out)
        return copse__errorf(err, err_size, COPSE_EINVAL, "no model path given");
    *out = NULL;
    copse_model_params p = params ? *params : copse_model_default_params();

    copse_model *m = calloc(1, sizeof *m);
    if (!m)
        return copse__errorf(err, err_size, COPSE_ENOMEM, "out of memory");
    copse_status st = copse__gguf_open(path, &m->gguf, err, err_size);
    if (st != COPSE_OK)
        goto fail;
    if (p.load_tokenizer) {
        st = copse__tokenizer_create(m->gguf, &m->tok, err, err_size);
        if (st != COPSE_OK)
            goto fail;
    }
    *out = m;
    return COPSE_OK;
fail:
    copse_model_destroy(m);
    return st;
}

COPSE_API void copse_model_destroy(copse_model *m)
{
    if (!m)
        return;
    copse__tokenizer_destroy(m->tok);
    copse__gguf_close(m->gguf);
    free(m);
}

COPSE_API int32_t copse_model_n_vocab(const copse_model *m)
{
    return m->tok ? copse__tokenizer_n_vocab(m->tok) : 0;
}

COPSE_API copse_token copse_model_bos(const copse_model *m)
{
    return m->tok ? copse__tokenizer_bos(m->tok) : -1;
}

COPSE_API copse_token copse_model_eos(const copse_model *m)
{
    return m->tok ? copse__tokenizer_eos(m->tok) : -1;
}

COPSE_API copse_status copse_tokenize(const copse_model *m, const char *text, size_t len, int flags,
                                      copse_token *ids, size_t cap, size_t *n_out)
{
    if (!m || !m->tok || (!text && len) || !n_out)
        return COPSE_EINVAL;
    return copse__tokenizer_encode(m->tok, text, len, flags, ids, cap, n_out);
}

COPSE_API copse_status copse_detokenize(const copse_model *m, const copse_token *ids, size_t n,
                                        int render_special, char *out, size_t cap, size_t *n_out)
{
    if (!m || !m->tok || (!ids && n) || !n_out)
        return COPSE_EINVAL;
    return copse__tokenizer_decode(m->tok, ids, n, render_special != 0, out, cap, n_out);
}

const copse_gguf *copse__model_gguf(const copse_model *m)
{
    return m->gguf;
}

const copse_tokenizer *copse__model_tokenizer(const copse_model *m)
{
    return m->tok;
}
