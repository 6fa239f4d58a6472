#!/usr/bin/env python3
"""ref_forward.py — an independent NumPy reference forward pass for llama-family
GGUF models: the logits oracle of DESIGN.md "Testing".

It shares no code with copse: the file is read with gguf-py's GGUFReader, the
weights are dequantized once with gguf.quants.dequantize() and kept as float32,
and the transformer is written out below, one numbered step per part.

    python3 ref_forward.py [MODEL] --tokens 1 2 3 [--greedy N] [--top 5]
    python3 ref_forward.py [MODEL] --prompt "text"   (ids via tests/model/reftok.py)

MODEL defaults to $COPSE_MODEL_DIR (or ~/.cache/copse)/SmolLM2-135M-Instruct.Q4_1.gguf.
Output (stdout, JSON lines): one {"pos", "token", "top": [[id, logit], ...]}
per input position, then {"greedy": [ids...]} when --greedy N is given.
Timings go to stderr.

Module API:
    m = load(path)                               # -> Model
    logits, cache = m.forward(tokens)            # logits: float32 [n_tokens, n_vocab]
    logits, cache = m.forward([t], cache=cache)  # incremental decode, start_pos = cache.n
    ids = m.greedy(tokens, n)                    # n greedy continuation ids

Conventions that are easy to get wrong, and how they are resolved here
----------------------------------------------------------------------
* Weight orientation. A GGUF tensor lists its dims innermost first (ggml "ne"):
  attn_k.weight is ne = [n_embd, n_embd_k] = [in, out]. gguf-py's GGUFReader
  hands the data over in numpy (row-major) order, i.e. with the dims reversed,
  and dequantize() keeps that: the array is W[out, in], one row per output.
  So a linear layer is y = x @ W.T. (ffn_down, ne = [1536, 576], becomes a
  (576, 1536) array, which is the only orientation in which x_ffn @ W.T fits,
  so a mistake there would not even run; the square attn_q/attn_output are
  covered by the perplexity checks in test_ref_forward_selfcheck.py.)
* RoPE orientation. HF llama checkpoints rotate the pairs (x[i], x[i + d/2])
  ("NEOX" style). convert_hf_to_gguf.py permutes the rows of q_proj and k_proj
  when writing a llama GGUF so that the same rotation becomes one on ADJACENT
  pairs (x[2i], x[2i+1]), which is what llama.cpp applies for
  LLAMA_ROPE_TYPE_NORM. Pair i turns by pos * base^(-2i / n_rot). The self-check
  confirms this empirically: the adjacent ("norm") rotation gives a far lower
  perplexity on English text than the NEOX rotation on the same weights
  (rope_style="neox" exists only for that comparison).
* Grouped-query attention: query head h reads kv head h // (n_head / n_head_kv)
  (in HF's repeat_kv each kv head is repeated for consecutive query heads; the
  converter's q/k permutation acts within a head, so the head order is kept).
  The self-check compares it with the other plausible rule, h % n_head_kv
  (Model.gqa_map = "mod", only for that comparison).
* Scale 1/sqrt(head_dim), causal mask, softmax in float64.
* Output head: output.weight, or token_embd.weight when the file has none (tied).
* RoPE scaling: "linear" (positions divided by the factor) and per-pair
  frequency factors from a rope_freqs.weight tensor (llama 3.1 style) are
  applied; other scaling types (yarn, longrope) are refused rather than
  silently ignored.

Exit status of the CLI: 0, 2 on bad arguments or a model it cannot run, 77 when numpy/gguf or the model
are missing.
"""

import math
import os
import sys
import time

SKIP = 77

if __name__ == "__main__":
    # a test tool on small shared machines: one BLAS thread unless told otherwise
    # (must be set before numpy is imported)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

try:
    import numpy as np
    import gguf
    from gguf.quants import dequantize as _gguf_dequantize
except ImportError as _e:  # pragma: no cover
    np = None
    _IMPORT_ERROR = _e
else:
    _IMPORT_ERROR = None

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_path():
    d = os.environ.get("COPSE_MODEL_DIR") or os.path.expanduser("~/.cache/copse")
    return os.path.join(d, DEFAULT_MODEL_NAME)


def _field(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    return f.contents()


class KVCache:
    """Per layer, the rotated keys and the values of every position so far:
    k[l], v[l] are float32 [n_head_kv, n, head_dim]."""

    def __init__(self, n_layer):
        self.k = [None] * n_layer
        self.v = [None] * n_layer
        self.n = 0

    def truncate(self, n):
        """Forget positions >= n (to rewind, e.g. after rejected draft tokens)."""
        if n > self.n:
            raise ValueError("cannot truncate a cache of %d positions to %d" % (self.n, n))
        for l in range(len(self.k)):
            if self.k[l] is not None:
                self.k[l] = self.k[l][:, :n]
                self.v[l] = self.v[l][:, :n]
        self.n = n


class Model:
    def __init__(self, path, rope_style="norm"):
        if rope_style not in ("norm", "neox"):
            raise ValueError("rope_style must be 'norm' or 'neox'")
        self.path = path
        self.rope_style = rope_style
        self.gqa_map = "div"
        t0 = time.perf_counter()
        r = gguf.GGUFReader(path)
        arch = _field(r, "general.architecture")
        if arch != "llama":
            raise ValueError("%s: general.architecture is %r, not 'llama'" % (path, arch))

        def hp(key, default=None):
            v = _field(r, "llama." + key, default)
            if v is None:
                raise ValueError("%s: missing llama.%s" % (path, key))
            return v

        self.n_layer = int(hp("block_count"))
        self.n_embd = int(hp("embedding_length"))
        self.n_ff = int(hp("feed_forward_length"))
        self.n_head = int(hp("attention.head_count"))
        self.n_head_kv = int(hp("attention.head_count_kv", self.n_head))
        self.head_dim = int(hp("attention.key_length", self.n_embd // self.n_head))
        self.head_dim_v = int(hp("attention.value_length", self.head_dim))
        self.n_rot = int(hp("rope.dimension_count", self.head_dim))
        self.rope_base = float(hp("rope.freq_base", 10000.0))
        self.eps = float(hp("attention.layer_norm_rms_epsilon", 1e-5))
        if self.n_head % self.n_head_kv:
            raise ValueError("head_count %d is not a multiple of head_count_kv %d"
                             % (self.n_head, self.n_head_kv))
        if self.n_rot % 2 or self.n_rot > self.head_dim:
            raise ValueError("bad rope.dimension_count %d" % self.n_rot)

        # RoPE scaling
        stype = _field(r, "llama.rope.scaling.type")
        sfactor = _field(r, "llama.rope.scaling.factor")
        if stype in (None, "none") and sfactor is None:
            self.rope_pos_scale = 1.0
        elif stype in (None, "linear") and sfactor is not None:
            self.rope_pos_scale = 1.0 / float(sfactor) if float(sfactor) > 0 else 1.0
        elif stype in (None, "none", "linear"):
            self.rope_pos_scale = 1.0
        else:
            raise ValueError("rope scaling type %r is not implemented in the reference" % stype)

        # weights, dequantized once, float32, numpy order (out, in)
        tensors = {}
        for t in r.tensors:
            a = _gguf_dequantize(t.data, t.tensor_type)
            shape = tuple(int(d) for d in reversed(list(t.shape)))
            tensors[t.name] = np.ascontiguousarray(np.asarray(a, dtype=np.float32).reshape(shape))
        self.n_vocab = tensors["token_embd.weight"].shape[0]
        self.tok_embd = tensors["token_embd.weight"]
        self.out_norm = tensors["output_norm.weight"]
        self.output = tensors.get("output.weight", self.tok_embd)
        self.tied = "output.weight" not in tensors
        self.rope_freqs = tensors.get("rope_freqs.weight")
        self.layers = []
        for i in range(self.n_layer):
            p = "blk.%d." % i
            L = {k: tensors[p + k + ".weight"] for k in (
                "attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                "ffn_norm", "ffn_gate", "ffn_up", "ffn_down")}
            assert L["attn_q"].shape == (self.n_head * self.head_dim, self.n_embd), L["attn_q"].shape
            assert L["attn_k"].shape == (self.n_head_kv * self.head_dim, self.n_embd)
            assert L["attn_v"].shape == (self.n_head_kv * self.head_dim_v, self.n_embd)
            assert L["attn_output"].shape == (self.n_embd, self.n_head * self.head_dim_v)
            assert L["ffn_gate"].shape == (self.n_ff, self.n_embd)
            assert L["ffn_up"].shape == (self.n_ff, self.n_embd)
            assert L["ffn_down"].shape == (self.n_embd, self.n_ff)
            # attention biases (some llama-arch conversions have them)
            for k in ("attn_q", "attn_k", "attn_v", "attn_output"):
                b = tensors.get(p + k + ".bias")
                if b is not None:
                    L[k + ".bias"] = b
            self.layers.append(L)
        assert self.output.shape == (self.n_vocab, self.n_embd)

        # inverse frequencies of the n_rot/2 rotated pairs, float64
        i = np.arange(self.n_rot // 2, dtype=np.float64)
        inv = self.rope_base ** (-2.0 * i / self.n_rot)
        if self.rope_freqs is not None:
            inv = inv / self.rope_freqs.astype(np.float64)[: self.n_rot // 2]
        self.inv_freq = inv
        self.load_seconds = time.perf_counter() - t0

    # ---- building blocks -------------------------------------------------

    def _rms_norm(self, x, w):
        ms = np.mean(np.square(x, dtype=np.float64), axis=-1, keepdims=True)
        return (x * (1.0 / np.sqrt(ms + self.eps)).astype(np.float32)) * w

    def _rope(self, x, pos):
        """x: [T, H, D] float32, pos: [T] absolute positions."""
        ang = (pos.astype(np.float64) * self.rope_pos_scale)[:, None] * self.inv_freq[None, :]
        cos = np.cos(ang).astype(np.float32)[:, None, :]  # [T, 1, n_rot/2]
        sin = np.sin(ang).astype(np.float32)[:, None, :]
        out = x.copy()
        half = self.n_rot // 2
        if self.rope_style == "norm":   # adjacent pairs (2i, 2i+1)
            a = x[..., 0:self.n_rot:2]
            b = x[..., 1:self.n_rot:2]
            out[..., 0:self.n_rot:2] = a * cos - b * sin
            out[..., 1:self.n_rot:2] = a * sin + b * cos
        else:                           # neox: pairs (i, i + n_rot/2)
            a = x[..., :half]
            b = x[..., half:self.n_rot]
            out[..., :half] = a * cos - b * sin
            out[..., half:self.n_rot] = a * sin + b * cos
        return out

    @staticmethod
    def _linear(x, L, name):
        y = x @ L[name].T
        b = L.get(name + ".bias")
        return y + b if b is not None else y

    @staticmethod
    def _silu(x):
        # x * sigmoid(x) with sigmoid written via tanh: no overflow for any x
        return x * (0.5 * (1.0 + np.tanh(0.5 * x)))

    # ---- the forward pass ------------------------------------------------

    def new_cache(self):
        return KVCache(self.n_layer)

    def forward(self, tokens, start_pos=None, cache=None):
        """Logits (float32 [len(tokens), n_vocab]) of tokens placed at positions
        start_pos, start_pos+1, ...; the tokens attend to the cache's first
        start_pos positions and to each other (causally). start_pos defaults to
        the cache's length (0 without a cache); a smaller value rewinds the
        cache. Returns (logits, cache); the cache is extended in place."""
        if cache is None:
            cache = self.new_cache()
        if start_pos is None:
            start_pos = cache.n
        if start_pos < cache.n:
            cache.truncate(start_pos)
        elif start_pos > cache.n:
            raise ValueError("start_pos %d is past the cache's %d positions" % (start_pos, cache.n))
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
        T = tokens.shape[0]
        if T == 0:
            return np.zeros((0, self.n_vocab), np.float32), cache
        if tokens.min() < 0 or tokens.max() >= self.n_vocab:
            raise ValueError("token id out of range [0, %d)" % self.n_vocab)
        pos = np.arange(start_pos, start_pos + T)
        S = start_pos + T
        g = self.n_head // self.n_head_kv
        if self.gqa_map == "div":     # the llama rule: consecutive query heads share a kv head
            kv_of = np.arange(self.n_head) // g
        else:                         # "mod": a wrong rule, kept only for the self-check
            kv_of = np.arange(self.n_head) % self.n_head_kv
        D, Dv = self.head_dim, self.head_dim_v
        scale = 1.0 / math.sqrt(D)
        # causal mask over [T queries, S keys]: query t (position start_pos+t)
        # sees keys 0..start_pos+t
        mask = np.arange(S)[None, :] > pos[:, None]

        x = self.tok_embd[tokens].astype(np.float32)          # [T, n_embd]
        for l, L in enumerate(self.layers):
            # 1. attention
            h = self._rms_norm(x, L["attn_norm"])
            q = self._linear(h, L, "attn_q").reshape(T, self.n_head, D)
            k = self._linear(h, L, "attn_k").reshape(T, self.n_head_kv, D)
            v = self._linear(h, L, "attn_v").reshape(T, self.n_head_kv, Dv)
            q = self._rope(q, pos)
            k = self._rope(k, pos)
            k = k.transpose(1, 0, 2)                           # [Hkv, T, D]
            v = v.transpose(1, 0, 2)
            if cache.k[l] is not None and cache.k[l].shape[1] > 0:
                k = np.concatenate([cache.k[l], k], axis=1)    # [Hkv, S, D]
                v = np.concatenate([cache.v[l], v], axis=1)
            cache.k[l], cache.v[l] = k, v
            # grouped-query attention: query head h reads kv head kv_of[h]
            kh = k[kv_of]                                      # [H, S, D]
            vh = v[kv_of]                                      # [H, S, Dv]
            qh = q.transpose(1, 0, 2)                          # [H, T, D]
            sc = (qh @ kh.transpose(0, 2, 1)).astype(np.float64) * scale  # [H, T, S]
            sc[:, mask] = -np.inf
            sc -= sc.max(axis=-1, keepdims=True)
            p = np.exp(sc)
            p /= p.sum(axis=-1, keepdims=True)
            o = p.astype(np.float32) @ vh                      # [H, T, Dv]
            o = o.transpose(1, 0, 2).reshape(T, self.n_head * Dv)
            x = x + self._linear(o, L, "attn_output")
            # 2. feed-forward (SwiGLU)
            h = self._rms_norm(x, L["ffn_norm"])
            f = self._silu(h @ L["ffn_gate"].T) * (h @ L["ffn_up"].T)
            x = x + f @ L["ffn_down"].T
        cache.n = S
        x = self._rms_norm(x, self.out_norm)
        logits = x @ self.output.T
        return logits.astype(np.float32, copy=False), cache

    def greedy(self, tokens, n, cache=None, stop=None):
        """n greedy (argmax) continuation ids after tokens; stops early after an
        id in stop (it is included)."""
        logits, cache = self.forward(tokens, cache=cache)
        out = []
        for _ in range(n):
            t = int(np.argmax(logits[-1]))
            out.append(t)
            if stop is not None and t in stop:
                break
            logits, cache = self.forward([t], cache=cache)
        return out

    def nll(self, tokens):
        """Per-token negative log-likelihoods (float64 [len(tokens)-1]) of
        tokens[1:] given their prefixes."""
        logits, _ = self.forward(tokens)
        lg = logits[:-1].astype(np.float64)
        m = lg.max(axis=-1, keepdims=True)
        lse = m[:, 0] + np.log(np.exp(lg - m).sum(axis=-1))
        tgt = np.asarray(tokens[1:], dtype=np.int64)
        return lse - lg[np.arange(len(tgt)), tgt]

    def perplexity(self, tokens):
        return float(np.exp(self.nll(tokens).mean()))


def load(path=None, rope_style="norm"):
    if _IMPORT_ERROR is not None:
        raise ImportError(_IMPORT_ERROR)
    return Model(path or default_model_path(), rope_style=rope_style)


def greedy(model, tokens, n):
    return model.greedy(tokens, n)


def main(argv=None):
    import argparse
    import json
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", nargs="?", default=None)
    ap.add_argument("--tokens", type=int, nargs="+")
    ap.add_argument("--prompt", help="text, tokenized with tests/model/reftok.py (special tokens parsed)")
    ap.add_argument("--greedy", type=int, default=0, metavar="N")
    ap.add_argument("--top", type=int, default=5, metavar="K")
    ap.add_argument("--rope", choices=("norm", "neox"), default="norm", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if _IMPORT_ERROR is not None:
        print("skip: numpy/gguf not available (%s)" % _IMPORT_ERROR, file=sys.stderr)
        return SKIP
    path = a.model or default_model_path()
    if not os.path.exists(path):
        print("skip: no model at %s" % path, file=sys.stderr)
        return SKIP
    if (a.tokens is None) == (a.prompt is None):
        ap.error("give exactly one of --tokens and --prompt")
    try:
        m = load(path, rope_style=a.rope)
    except ValueError as e:  # not a llama-architecture file, unsupported rope scaling, ...
        print("error: %s" % e, file=sys.stderr)
        return 2
    print("load %.2fs" % m.load_seconds, file=sys.stderr)
    tk = None
    if a.prompt is not None:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import reftok
        tk = reftok.load(path)
        tokens = reftok.encode(tk, a.prompt, True, True)
    else:
        tokens = a.tokens
    t0 = time.perf_counter()
    logits, cache = m.forward(tokens)
    print("prefill %d tokens %.3fs" % (len(tokens), time.perf_counter() - t0), file=sys.stderr)
    k = max(1, min(a.top, m.n_vocab))
    for i, t in enumerate(tokens):
        row = logits[i]
        top = np.argsort(-row, kind="stable")[:k]
        print(json.dumps({"pos": i, "token": int(t),
                          "top": [[int(j), float(row[j])] for j in top]}))
    if a.greedy > 0:
        t0 = time.perf_counter()
        ids = []
        lg = logits
        for _ in range(a.greedy):
            t = int(np.argmax(lg[-1]))
            ids.append(t)
            lg, cache = m.forward([t], cache=cache)
        print("greedy %d tokens %.3fs" % (a.greedy, time.perf_counter() - t0), file=sys.stderr)
        rec = {"greedy": ids}
        if tk is not None:
            rec["text"] = tk.decode(ids, skip_special_tokens=False)
        print(json.dumps(rec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
