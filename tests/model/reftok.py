"""reftok.py — the reference tokenizer for a GGUF file, built with the Hugging
Face `tokenizers` library from the file's own vocabulary.

Why not transformers' GGUF loader (AutoTokenizer.from_pretrained(dir,
gguf_file=...))? We checked it (transformers 4.57) and it is not a faithful
reference for either test model:

  * SmolLM2 ("gpt2", pre "smollm"): its GPT-2 converter installs a plain
    ByteLevel pre-tokenizer and drops the Digits(individual_digits=True) step of
    the original SmolLM2 tokenizer.json, and it wraps the result in
    LlamaTokenizerFast, which adds <|im_start|> as BOS although the file says
    tokenizer.ggml.add_bos_token = false.
  * Gemma 3 ("llama" = SentencePiece BPE): its Gemma converter builds a
    *Unigram* model from the scores (Gemma's SentencePiece model is BPE), and
    rewrites pieces (<0x09> -> "\\t", runs of spaces -> "▁▁..."), so its ids
    differ from SentencePiece's on ordinary text.

So the reference is assembled here, one documented step per part of the
original tokenizers:

  byte-level BPE   BPE(vocab, merges) with the pre-tokenizer of the original
                   model for tokenizer.ggml.pre (SmolLM2: Sequence[Digits
                   (individual_digits), ByteLevel(regex)]), ByteLevel decoder.
  SentencePiece    BPE(vocab, merges, byte_fallback) where the merges are all
                   splits (l, r) of every normal/user-defined piece into two
                   pieces, ranked by the merged piece's score (highest first):
                   that is SentencePiece's BPE encoding rule ("merge the
                   adjacent pair whose concatenation is the best-scoring piece")
                   in the tokenizers library's rank form. Normalizer
                   Replace(" ", "▁") (+ Prepend("▁") with add_space_prefix), no
                   pre-tokenizer, decoder Replace("▁"," ") / ByteFallback / Fuse
                   (+ Strip one leading space with add_space_prefix) — the
                   layout of Gemma's own tokenizer.json.
  added tokens     CONTROL/UNKNOWN pieces as special AddedTokens (matched only
                   when special parsing is on, i.e. encode_special_tokens is
                   False), USER_DEFINED pieces as non-special AddedTokens
                   (always matched), all normalized=False.
  BOS/EOS          TemplateProcessing per tokenizer.ggml.add_bos_token /
                   add_eos_token.

The built tokenizer is cached as tokenizer.json under $COPSE_BUILD_ROOT
(or the system temp dir), keyed by the model's size, mtime and a hash of its
first and last MiB, since building Gemma's takes a while.

Invalid UTF-8: Python strings cannot hold it, so callers give the reference
bytes.decode("utf-8", errors="replace"); copse replaces each maximal invalid
subpart with U+FFFD itself, which is the same policy.
"""

import hashlib
import json
import os
import tempfile

import gguf
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers
from tokenizers import pre_tokenizers, processors

CONTROL, UNKNOWN, USER_DEFINED, NORMAL, UNDEFINED = 3, 2, 4, 1, 0

# tokenizer.ggml.pre -> the original models' pre-tokenizer
_DIGIT_NAMES = {"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b"}
_LLAMA3_NAMES = {"llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral"}
_QWEN2_NAMES = {"qwen2", "stablelm2", "deepseek-r1-qwen", "megrez"}
_LLAMA3_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
              r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_RE = _LLAMA3_RE.replace(r"\p{N}{1,3}", r"\p{N}")


def _field(r, key, default=None):
    f = r.fields.get(key)
    if f is None:
        return default
    if f.types[0] == gguf.GGUFValueType.ARRAY:
        return f.contents()
    return f.contents()


def read_vocab(path):
    """The tokenizer metadata of a GGUF file as a dict."""
    r = gguf.GGUFReader(path)
    v = {
        "model": _field(r, "tokenizer.ggml.model"),
        "pre": _field(r, "tokenizer.ggml.pre", "default"),
        "tokens": _field(r, "tokenizer.ggml.tokens"),
        "types": _field(r, "tokenizer.ggml.token_type"),
        "scores": _field(r, "tokenizer.ggml.scores"),
        "merges": _field(r, "tokenizer.ggml.merges"),
        "bos": _field(r, "tokenizer.ggml.bos_token_id"),
        "eos": _field(r, "tokenizer.ggml.eos_token_id"),
        "unk": _field(r, "tokenizer.ggml.unknown_token_id"),
    }
    spm = v["model"] == "llama"
    v["add_bos"] = bool(_field(r, "tokenizer.ggml.add_bos_token", spm))
    v["add_eos"] = bool(_field(r, "tokenizer.ggml.add_eos_token", False))
    v["add_space_prefix"] = bool(_field(r, "tokenizer.ggml.add_space_prefix", spm))
    if v["types"] is None:
        v["types"] = [NORMAL] * len(v["tokens"])
    return v


def _spm_merges(tokens, types, scores):
    """SentencePiece's BPE rule as ranked merges (see the module comment)."""
    ids = {}
    for i, t in enumerate(tokens):
        ids[t] = i
    merges = []
    for i, t in enumerate(tokens):
        if types[i] not in (NORMAL, USER_DEFINED, UNDEFINED) or ids[t] != i:
            continue
        for k in range(1, len(t)):
            l, r = t[:k], t[k:]
            if l in ids and r in ids:
                merges.append((-scores[i], i, k, l, r))
    merges.sort()
    return [(l, r) for _, _, _, l, r in merges]


def _bpe_pre_tokenizer(pre):
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in _DIGIT_NAMES:
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    for names, rx in ((_LLAMA3_NAMES, _LLAMA3_RE), (_QWEN2_NAMES, _QWEN2_RE)):
        if pre in names:
            return pre_tokenizers.Sequence([
                pre_tokenizers.Split(Regex(rx), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ])
    return byte_level


def build(v):
    tokens, types = v["tokens"], v["types"]
    vocab = {t: i for i, t in enumerate(tokens)}
    if v["model"] == "gpt2":
        merges = [(m[:m.index(" ", 1)], m[m.index(" ", 1) + 1:]) for m in v["merges"]]
        tk = Tokenizer(models.BPE(vocab, merges, ignore_merges=v["pre"] in _LLAMA3_NAMES))
        tk.pre_tokenizer = _bpe_pre_tokenizer(v["pre"])
        tk.decoder = decoders.ByteLevel()
    elif v["model"] == "llama":
        unk = tokens[v["unk"]] if v["unk"] is not None else None
        tk = Tokenizer(models.BPE(vocab, _spm_merges(tokens, types, v["scores"]), unk_token=unk,
                                  byte_fallback=True, fuse_unk=False))
        norm = [normalizers.Replace(" ", "▁")]
        if v["add_space_prefix"]:
            norm = [normalizers.Prepend("▁")] + norm
        tk.normalizer = normalizers.Sequence(norm)
        dec = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
        if v["add_space_prefix"]:
            dec.append(decoders.Strip(" ", 1, 0))
        tk.decoder = decoders.Sequence(dec)
    else:
        raise ValueError("unsupported tokenizer.ggml.model %r" % v["model"])

    special = [AddedToken(tokens[i], special=True, normalized=False)
               for i, k in enumerate(types) if k in (CONTROL, UNKNOWN) and tokens[i]]
    plain = [AddedToken(tokens[i], special=False, normalized=False)
             for i, k in enumerate(types) if k == USER_DEFINED and tokens[i]]
    tk.add_special_tokens(special)
    tk.add_tokens(plain)

    single, spec = "$A", []
    if v["add_bos"] and v["bos"] is not None:
        single = tokens[v["bos"]] + " " + single
        spec.append((tokens[v["bos"]], v["bos"]))
    if v["add_eos"] and v["eos"] is not None:
        single = single + " " + tokens[v["eos"]]
        spec.append((tokens[v["eos"]], v["eos"]))
    tk.post_processor = processors.TemplateProcessing(single=single, special_tokens=spec)
    return tk


def _cache_key(path):
    st = os.stat(path)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        f.seek(max(0, st.st_size - (1 << 20)))
        h.update(f.read(1 << 20))
    # bump the version when build() changes
    return "v3-%d-%d-%s" % (st.st_size, int(st.st_mtime), h.hexdigest()[:16])


def load(path):
    """The reference Tokenizer for the GGUF file at path."""
    root = os.environ.get("COPSE_BUILD_ROOT") or tempfile.gettempdir()
    cache_dir = os.path.join(root, "reftok-cache")
    cache = os.path.join(cache_dir, os.path.basename(path) + "." + _cache_key(path) + ".json")
    if os.path.exists(cache):
        return Tokenizer.from_file(cache)
    tk = build(read_vocab(path))
    os.makedirs(cache_dir, exist_ok=True)
    tmp = cache + ".tmp%d" % os.getpid()
    tk.save(tmp)
    os.replace(tmp, cache)
    return tk


def encode(tk, text, add_special, parse_special):
    tk.encode_special_tokens = not parse_special
    return tk.encode(text, add_special_tokens=add_special).ids


def decode(tk, ids, render_special):
    return tk.decode(ids, skip_special_tokens=not render_special)


if __name__ == "__main__":
    import sys
    tk = load(sys.argv[1])
    for s in sys.argv[2:]:
        ids = encode(tk, s, True, True)
        print(json.dumps(s), ids, [tk.id_to_token(i) for i in ids])
