#!/usr/bin/env python3
"""test_ref_forward_selfcheck.py — checks that the NumPy reference forward pass
(ref_forward.py) is itself right, so that it can serve as the logits oracle.

    test_ref_forward_selfcheck.py [MODEL]

MODEL defaults to $COPSE_MODEL_DIR (or ~/.cache/copse)/SmolLM2-135M-Instruct.Q4_1.gguf.
Token ids come from tests/model/reftok.py (the `tokenizers`-library reference).

(0) RoPE: for both pair layouts, q.k after rotation depends only on the
    position difference, and the adjacent-pair rotation of x equals the NEOX
    rotation of x with its pairs de-interleaved (the converter's permutation).
(1) Incremental decoding: prefill k tokens, then a chunk of 3, then one token
    at a time with the KV cache, equals the full-sequence forward within 1e-4
    (max |diff| relative to max |logit|); rewinding the cache and re-feeding
    gives the same logits again.
(2) Sanity: the greedy 16-token continuation of the chat prompt
    "What is the capital of France?" contains "Paris"; " Paris" is in the
    top-5 after "The capital of France is".
(3) Perplexity of a short English paragraph is < 30, the same tokens shuffled
    give a perplexity at least 5x higher, and the two plausible but wrong
    variants of the attention — NEOX (half-split) RoPE pairs on the GGUF
    weights, and query head h reading kv head h % n_head_kv — are each clearly
    worse (>= 1.5x) than the chosen ones. This is what pins the RoPE
    orientation and the GQA mapping down empirically.

Exit status: 0 pass, 1 failure, 77 when numpy/gguf/tokenizers or the model
are missing. Timings are printed.
"""
import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # frugal on small shared machines

SKIP = 77
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

try:
    import numpy as np
    import gguf  # noqa: F401
    import tokenizers  # noqa: F401
    import ref_forward
    import reftok
except ImportError as e:  # pragma: no cover
    print("skip: numpy/gguf/tokenizers not available (%s)" % e)
    sys.exit(SKIP)

CHAT = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
PARAGRAPH = (
    "The sun rose slowly over the quiet village. Children walked to school along the "
    "river, and the baker opened his shop early in the morning. By noon the streets "
    "were full of people buying bread, fruit and vegetables at the market. In the "
    "evening, families sat together at dinner and talked about their day."
)

failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


def rel_diff(a, b):
    return float(np.max(np.abs(a.astype(np.float64) - b)) / max(1e-30, np.max(np.abs(b))))


def check_rope(m):
    rng = np.random.default_rng(1)
    D = m.head_dim
    q = rng.standard_normal((1, 1, D)).astype(np.float32)
    k = rng.standard_normal((1, 1, D)).astype(np.float32)
    saved = m.rope_style
    try:
        for style in ("norm", "neox"):
            m.rope_style = style
            dots = []
            for (a, b) in ((7, 3), (107, 103), (1007, 1003)):
                qa = m._rope(q, np.array([a]))
                kb = m._rope(k, np.array([b]))
                dots.append(float((qa.astype(np.float64) * kb).sum()))
            spread = max(dots) - min(dots)
            check(spread < 1e-3 * max(1.0, abs(dots[0])),
                  "rope %s: q.k depends only on the position difference (%s)"
                  % (style, ", ".join("%.5f" % d for d in dots)))
        # adjacent-pair rotation == half-split rotation after de-interleaving
        n = m.n_rot
        perm = np.concatenate([np.arange(0, n, 2), np.arange(1, n, 2), np.arange(n, D)])
        m.rope_style = "norm"
        a = m._rope(q, np.array([37]))[..., perm]
        m.rope_style = "neox"
        b = m._rope(q[..., perm], np.array([37]))
        check(np.allclose(a, b, atol=1e-6), "rope norm(x) == neox(deinterleave(x)) permuted")
    finally:
        m.rope_style = saved


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else ref_forward.default_model_path()
    if not os.path.exists(path):
        print("skip: no model at %s" % path)
        return SKIP
    t_all = time.perf_counter()
    t0 = time.perf_counter()
    m = ref_forward.load(path)
    print("load+dequantize %.2fs (%d layers, n_embd %d, heads %d/%d, head_dim %d, n_rot %d, "
          "base %g, vocab %d, %s head)"
          % (m.load_seconds, m.n_layer, m.n_embd, m.n_head, m.n_head_kv, m.head_dim, m.n_rot,
             m.rope_base, m.n_vocab, "tied" if m.tied else "separate"))
    tk = reftok.load(path)

    def enc(text):
        return reftok.encode(tk, text, True, True)

    def dec(ids):
        return reftok.decode(tk, ids, True)
    print("tokenizer %.2fs" % (time.perf_counter() - t0 - m.load_seconds))

    # (0) rope
    check_rope(m)

    # (1) incremental == full
    t0 = time.perf_counter()
    toks = enc(CHAT + "The capital of France is Paris.")
    full, _ = m.forward(toks)
    k = 7
    parts = []
    lg, cache = m.forward(toks[:k])
    parts.append(lg)
    lg, cache = m.forward(toks[k:k + 3], cache=cache)
    parts.append(lg)
    for i in range(k + 3, len(toks)):
        lg, cache = m.forward([toks[i]], cache=cache)
        parts.append(lg)
    inc = np.concatenate(parts)
    d = rel_diff(inc, full)
    check(inc.shape == full.shape and d < 1e-4,
          "incremental (prefill %d, chunk 3, then 1 at a time; %d tokens) == full: rel diff %.2e"
          % (k, len(toks), d))
    # rewind to position 12 and re-feed the rest as one chunk
    lg, cache = m.forward(toks[12:], start_pos=12, cache=cache)
    d2 = rel_diff(lg, full[12:])
    check(cache.n == len(toks) and d2 < 1e-4, "rewound cache + re-fed chunk == full: rel diff %.2e" % d2)
    print("  (1) took %.2fs" % (time.perf_counter() - t0))

    # (2) sanity answers
    t0 = time.perf_counter()
    ids = m.greedy(enc(CHAT), 16)
    text = dec(ids)
    print("  greedy continuation: %r" % text)
    check("Paris" in text, "chat greedy 16-token continuation contains 'Paris'")
    lg, _ = m.forward(enc("The capital of France is"))
    top5 = [int(i) for i in np.argsort(-lg[-1], kind="stable")[:5]]
    top5s = [dec([i]) for i in top5]
    print("  top-5 after 'The capital of France is': %r" % top5s)
    check(" Paris" in top5s, "' Paris' in the top-5 after 'The capital of France is'")
    print("  (2) took %.2fs" % (time.perf_counter() - t0))

    # (3) perplexities
    t0 = time.perf_counter()
    ptoks = enc(PARAGRAPH)
    ppl = m.perplexity(ptoks)
    rng = np.random.default_rng(12345)
    shuf = list(ptoks)
    rng.shuffle(shuf)
    ppl_shuf = m.perplexity(shuf)
    m.rope_style = "neox"
    ppl_neox = m.perplexity(ptoks)
    m.rope_style = "norm"
    m.gqa_map = "mod"
    ppl_mod = m.perplexity(ptoks)
    m.gqa_map = "div"
    print("  paragraph: %d tokens; perplexity %.2f, shuffled %.2f, neox rope %.2f, "
          "gqa h%%n_kv %.2f" % (len(ptoks), ppl, ppl_shuf, ppl_neox, ppl_mod))
    check(ppl < 30, "paragraph perplexity %.2f < 30" % ppl)
    check(ppl_shuf > 5 * ppl, "shuffled perplexity %.2f > 5 x %.2f" % (ppl_shuf, ppl))
    check(ppl_neox > 1.5 * ppl, "NEOX-pair rope perplexity %.2f > 1.5 x %.2f (adjacent pairs are right)"
          % (ppl_neox, ppl))
    check(ppl_mod > 1.5 * ppl, "h %% n_kv GQA perplexity %.2f > 1.5 x %.2f (h // g is right)"
          % (ppl_mod, ppl))
    print("  (3) took %.2fs" % (time.perf_counter() - t0))

    print("total %.2fs" % (time.perf_counter() - t_all))
    if failures:
        print("%d check(s) failed" % len(failures))
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
