/* tokenizer.c — (placeholder until the tokenizer lands). */
#include "tokenizer.h"

#include "error.h"

copse_status copse__tokenizer_create(const copse_gguf *g, copse_tokenizer **out, char *err, size_t err_size)
{
    (void)g;
    *out = NULL;
    return copse__errorf(err, err_size, COPSE_EUNSUPPORTED, "tokenizer not built yet");
}
void copse__tokenizer_destroy(copse_tokenizer *tok) { (void)tok; }
int32_t copse__tokenizer_n_vocab(const copse_tokenizer *tok) { (void)tok; return 0; }
copse_token copse__tokenizer_bos(const copse_tokenizer *tok) { (void)tok; return -1; }
copse_token copse__tokenizer_eos(const copse_tokenizer *tok) { (void)tok; return -1; }
copse_status copse__tokenizer_encode(const copse_tokenizer *tok, const char *text, size_t len, int flags,
                                     copse_token *ids, size_t cap, size_t *n_out)
{ (void)tok; (void)text; (void)len; (void)flags; (void)ids; (void)cap; *n_out = 0; return COPSE_EUNSUPPORTED; }
copse_status copse__tokenizer_decode(const copse_tokenizer *tok, const copse_token *ids, size_t n,
                                     bool render_special, char *out, size_t cap, size_t *n_out)
{ (void)tok; (void)ids; (void)n; (void)render_special; (void)out; (void)cap; *n_out = 0; return COPSE_EUNSUPPORTED; }
