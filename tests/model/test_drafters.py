#!/usr/bin/env python3
"""test_drafters.py — the model drafters layerskip:N and model:FILE, and
`copse slice`, on the default model.

1. `copse slice MODEL --layers 8 -o S.gguf` writes a file `copse info` reads
   (8 layers, the model's vocabulary and tensors of blocks 0..7 only); bad
   arguments, an unreadable input and an unwritable output fail with a
   message and exit status 1 (2 for usage).
2. draft-tool MODEL S.gguf TMPDIR (tests/tools/draft-tool.c) checks the
   drafters against oracles: the sliced model's logits and greedy
   continuations, plain greedy decoding, plain prefill KV contents, and a
   chi-square test of sampled drafts against their q.
Exit 0 pass, 1 fail, 77 skip (no model).
"""

import os
import subprocess
import sys
import tempfile

COPSE = os.environ.get("COPSE_BIN", "copse")
MODEL_DIR = os.environ.get("COPSE_MODEL_DIR") or os.path.expanduser("~/.cache/copse")
MODEL = os.path.join(MODEL_DIR, "SmolLM2-135M-Instruct.Q4_1.gguf")

failures = 0


def check(cond, what):
    global failures
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures += 1


def copse(*args):
    return subprocess.run([COPSE, *map(str, args)], capture_output=True, timeout=300)


def main():
    if not os.path.exists(MODEL):
        print(f"skip: {MODEL} not found (set COPSE_MODEL_DIR)")
        return 77
    draft_tool = sys.argv[1]
    with tempfile.TemporaryDirectory(prefix="copse-drafters-") as tmp:
        sliced = os.path.join(tmp, "smollm2-8.gguf")
        r = copse("slice", MODEL, "--layers", 8, "-o", sliced)
        check(r.returncode == 0 and os.path.exists(sliced), f"slice --layers 8 exits 0 ({r.stderr.decode()[-300:]!r})")
        if r.returncode != 0:
            return 1
        info = copse("info", sliced)
        out = info.stdout.decode(errors="replace")
        check(info.returncode == 0, "copse info reads the sliced model")
        try:
            import gguf  # the independent reader

            rd = gguf.GGUFReader(sliced)
            names = [t.name for t in rd.tensors]
            blocks = sorted({int(n.split(".")[1]) for n in names if n.startswith("blk.")})
            count = int(rd.fields["llama.block_count"].parts[-1][0])
            orig = gguf.GGUFReader(MODEL)
            orig_names = [t.name for t in orig.tensors]
            want = [n for n in orig_names if not n.startswith("blk.") or int(n.split(".")[1]) < 8]
            check(count == 8 and blocks == list(range(8)), f"gguf reads block_count {count}, blocks {blocks[:1]}..{blocks[-1:]}")
            check(names == want, f"the sliced model keeps exactly the non-block tensors and blocks 0..7 ({len(names)} tensors)")
            same = all(bytes(a.data) == bytes(b.data) for a, b in zip(rd.tensors, (t for t in orig.tensors if t.name in set(want))))
            check(same, "tensor data is copied unchanged")
            check(len(rd.fields["tokenizer.ggml.tokens"].data) == len(orig.fields["tokenizer.ggml.tokens"].data),
                  "the vocabulary is kept")
        except ImportError:
            print("note: python gguf package missing; layout checks skipped")

        # bad input
        bad = os.path.join(tmp, "bad.gguf")
        for args, what, code in [
            (("--layers", 0), "--layers 0", 1),
            (("--layers", 31), "--layers 31 (> 30 layers)", 1),
            (("--layers", "x"), "--layers x", 1),
            ((), "no --layers", 2),
        ]:
            r = copse("slice", MODEL, *args, "-o", bad)
            check(r.returncode == code and b"slice" in r.stderr and not os.path.exists(bad),
                  f"slice {what}: exit {r.returncode}, {r.stderr.decode().strip()[:120]!r}")
        r = copse("slice", os.path.join(tmp, "missing.gguf"), "--layers", 2, "-o", bad)
        check(r.returncode == 1 and b"missing.gguf" in r.stderr, f"slice of a missing file: {r.stderr.decode().strip()[:120]!r}")
        r = copse("slice", MODEL, "--layers", 2, "-o", os.path.join(tmp, "no", "such", "dir.gguf"))
        check(r.returncode == 1 and b"dir.gguf" in r.stderr, f"slice to an unwritable path: {r.stderr.decode().strip()[:120]!r}")

        r = subprocess.run([draft_tool, MODEL, sliced, tmp], timeout=600)
        check(r.returncode == 0, "draft-tool checks pass")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
