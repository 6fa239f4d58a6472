"""test_tokenizer.py — copse's tokenizers against the reference, for both test models.

usage: test_tokenizer.py TOKENIZE_TOOL

For every string of tokenizer_corpus.corpus() and every combination of
ADD_SPECIAL (BOS/EOS per the model's flags) and PARSE_SPECIAL, checks that

  * copse's ids equal the reference's (reftok.py; invalid UTF-8 is given to
    the reference decoded with errors="replace", see reftok.py),
  * copse's decode equals the reference's decode of the same ids, with and
    without special tokens rendered,
  * decode(encode(s)) == s byte for byte wherever the reference round-trips,
  * the streaming decoder's output equals the whole decode.

The same runs on tokenizer-only copies of SmolLM2's GGUF whose
tokenizer.ggml.pre is set to each of PRE_VARIANTS, so the gpt2, llama3 and
qwen2 pre-tokenizers are compared with the reference too.

Prints a summary per model; exits 1 on any mismatch, 77 when the models or
the Python modules are missing.
"""

import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

MODELS = ["SmolLM2-135M-Instruct.Q4_1.gguf", "gemma-3-270m-q4_k_m.gguf"]
# Other pre-tokenizers, checked on SmolLM2's vocabulary: a tokenizer-only copy
# of its GGUF with tokenizer.ggml.pre replaced (the ids then mean nothing to
# the model, but the splitting rules are compared with the reference's).
PRE_VARIANTS = ["gpt2", "llama-bpe", "qwen2"]
ADD_SPECIAL, PARSE_SPECIAL = 1, 2
SHOW = 8  # mismatches printed per kind


def run_tool(tool, model, requests):
    inp = "".join("%d %s\n" % (flags, text.hex()) for flags, text in requests)
    p = subprocess.run([tool, model], input=inp.encode(), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, check=False)
    if p.returncode != 0:
        sys.stderr.write(p.stderr.decode(errors="replace"))
        raise SystemExit("tokenize-tool failed with status %d" % p.returncode)
    lines = p.stdout.decode().split("\n")
    header, answers = lines[0], lines[1:1 + len(requests)]
    if len(answers) != len(requests):
        raise SystemExit("tokenize-tool answered %d of %d lines" % (len(answers), len(requests)))
    out = []
    for a in answers:
        if a.startswith("ERROR"):
            out.append(None)
            continue
        ids, d0, d1, st = a.split("\t")
        out.append(([int(x) for x in ids.split()], bytes.fromhex(d0), bytes.fromhex(d1),
                    bytes.fromhex(st)))
    return header, out


def make_variant(src, pre, out_dir):
    """A GGUF with only src's tokenizer metadata and tokenizer.ggml.pre = pre."""
    import gguf
    out = os.path.join(out_dir, "%s.pre-%s.gguf" % (os.path.basename(src), pre))
    if os.path.exists(out) and os.path.getmtime(out) >= os.path.getmtime(src):
        return out
    r = gguf.GGUFReader(src)
    w = gguf.GGUFWriter(out + ".tmp", arch="llama")
    for key, f in r.fields.items():
        if not key.startswith("tokenizer.ggml."):
            continue
        vtype = f.types[0]
        if key == "tokenizer.ggml.pre":
            w.add_key_value(key, pre, gguf.GGUFValueType.STRING)
        elif vtype == gguf.GGUFValueType.ARRAY:
            w.add_key_value(key, f.contents(), vtype, sub_type=f.types[-1])
        else:
            w.add_key_value(key, f.contents(), vtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(out + ".tmp", out)
    return out


def check_model(tool, path, texts, reftok):
    tk = reftok.load(path)
    requests = [(flags, t) for t in texts for flags in (0, ADD_SPECIAL, PARSE_SPECIAL,
                                                        ADD_SPECIAL | PARSE_SPECIAL)]
    header, answers = run_tool(tool, path, requests)
    print("%s: %s" % (os.path.basename(path), header))
    bad = {"ids": [], "decode": [], "roundtrip": [], "stream": [], "error": []}
    n_roundtrip = 0
    for (flags, raw), ans in zip(requests, answers):
        text = raw.decode("utf-8", errors="replace")
        add, parse = bool(flags & ADD_SPECIAL), bool(flags & PARSE_SPECIAL)
        if ans is None:
            bad["error"].append((flags, raw))
            continue
        ids, dec0, dec1, stream = ans
        ref_ids = reftok.encode(tk, text, add, parse)
        if ids != ref_ids:
            bad["ids"].append((flags, raw, ids, ref_ids))
            continue
        for render, got in ((False, dec0), (True, dec1)):
            want = reftok.decode(tk, ids, render)
            if got.decode("utf-8", errors="replace") != want:
                bad["decode"].append((flags, raw, render, got, want))
        for render, got in ((False, dec0), (True, dec1)):
            if reftok.decode(tk, ref_ids, render) == text:
                n_roundtrip += 1
                if got != text.encode("utf-8"):
                    bad["roundtrip"].append((flags, raw, render, got))
        if stream != dec1.decode("utf-8", errors="replace").encode("utf-8"):
            bad["stream"].append((flags, raw, stream, dec1))

    n_bad = sum(len(v) for v in bad.values())
    print("  %d strings x 4 flag sets = %d encodes; %d round-trip checks; mismatches: %s" %
          (len(texts), len(requests), n_roundtrip, ", ".join("%s %d" % (k, len(v)) for k, v in bad.items())))
    for kind, items in bad.items():
        for item in items[:SHOW]:
            flags, raw = item[0], item[1]
            print("  %s mismatch (flags %d) for %r:" % (kind, flags, raw[:120]))
            for extra in item[2:]:
                r = repr(extra)
                print("      %s" % (r[:400] + ("..." if len(r) > 400 else "")))
    return n_bad


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    tool = sys.argv[1]
    try:
        import reftok
        import tokenizer_corpus
    except ImportError as e:
        print("skip: %s" % e)
        return 77
    model_dir = os.environ.get("COPSE_MODEL_DIR") or os.path.expanduser("~/.cache/copse")
    paths = [os.path.join(model_dir, m) for m in MODELS if os.path.exists(os.path.join(model_dir, m))]
    if not paths:
        print("skip: no test models in %s" % model_dir)
        return 77
    texts = tokenizer_corpus.corpus()
    n_bad = 0
    for p in paths:
        n_bad += check_model(tool, p, texts, reftok)
    smol = os.path.join(model_dir, MODELS[0])
    if os.path.exists(smol):
        root = os.environ.get("COPSE_BUILD_ROOT") or tempfile.gettempdir()
        out_dir = os.path.join(root, "reftok-cache")
        os.makedirs(out_dir, exist_ok=True)
        for pre in PRE_VARIANTS:
            n_bad += check_model(tool, make_variant(smol, pre, out_dir), texts, reftok)
    missing = [m for m in MODELS if not os.path.exists(os.path.join(model_dir, m))]
    if missing:
        print("(missing, not checked: %s)" % ", ".join(missing))
    print("FAIL: %d mismatches" % n_bad if n_bad else "OK")
    return 1 if n_bad else 0


if __name__ == "__main__":
    sys.exit(main())
