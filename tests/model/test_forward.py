#!/usr/bin/env python3
"""test_forward.py — copse's forward pass against the NumPy reference.

    test_forward.py FORWARD_TOOL

On the default model (SmolLM2-135M-Instruct, Q4_1):
  1. logits of every position of several token sequences are close to
     ref_forward.py's: per position, the max absolute difference relative to
     the reference's logit spread (max - min) is below the tolerance, and the
     argmax agrees wherever the reference's top-2 margin exceeds the margin
     (elsewhere it is a near-tie that rounding may flip). Two kernel sets:
       - the CPU reference kernels (COPSE_CPU_ISA=ref: float32 activations),
         on fixed prompts and fresh random ids: tolerance REF_TOL. This checks
         the forward pass itself (shapes, rope, attention, head).
       - the default fast kernels (activations quantized per 32-block to
         int16), on the same sequences: tolerance FAST_TOL. (The fast kernels
         are also checked against the reference kernels op by op in
         test-cpu-ops.)
  2. feeding the same tokens in chunks gives bit-identical logits (batch
     invariance), and so does running them beside other sequences in one
     ragged batch (forward-tool --batch-check), with the default kernels;
  3. a greedy continuation with the reference kernels equals the NumPy
     reference's up to the first near-tie;
  4. acceptance, with the default kernels (int16 activations) on 20 varied
     prompts: final-position logits within relative L2 1e-3 of the reference
     with the same argmax, and the greedy 64-token continuation identical
     token for token.

Exit 0 pass, 1 fail, 77 skip (model or numpy/gguf missing).
"""

import os
import random
import subprocess
import sys
import tempfile
import time

REF_TOL = 0.01   # max |copse - ref| / (ref.max - ref.min), per position: reference kernels
FAST_TOL = 0.01  # the same for the default kernels (int16 activations)
MARGIN = 0.5     # logit margin above which the top-1 token must agree (reference kernels)
FAST_MARGIN = 0.5  # the same for the default kernels

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def skip(why):
    print("skip:", why)
    sys.exit(77)


try:
    import numpy as np
    import ref_forward
except ImportError as e:  # numpy/gguf missing
    skip(str(e))

MODEL = os.path.join(os.environ.get("COPSE_MODEL_DIR") or os.path.expanduser("~/.cache/copse"),
                     "SmolLM2-135M-Instruct.Q4_1.gguf")

# "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
CHAT = [1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520, 9531, 198]
# "The capital of France is"
PLAIN = [504, 3575, 282, 4649, 314]


def run_tool(tool, *args, isa=None):
    env = dict(os.environ)
    env.pop("COPSE_CPU_ISA", None)
    if isa:
        env["COPSE_CPU_ISA"] = isa
    r = subprocess.run([tool, MODEL, *map(str, args)], capture_output=True, text=True, timeout=600, env=env)
    if r.returncode != 0:
        print("FAIL: forward-tool %s: exit %d\n%s" % (" ".join(map(str, args[:4])), r.returncode, r.stderr))
        return None
    return r.stdout


def tool_logits(tool, ids, chunk, n_vocab, isa):
    with tempfile.NamedTemporaryFile(suffix=".f32") as f:
        if run_tool(tool, "--dump", f.name, "--chunk", chunk, "--threads", 2, *ids, isa=isa) is None:
            return None
        return np.fromfile(f.name, dtype=np.float32).reshape(len(ids), n_vocab)


# Twenty varied prompts for the acceptance check of the default kernels.
PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a small village by the sea,",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "The three primary colors are",
    "Water boils at a temperature of",
    "To make a cup of tea, first",
    "The largest planet in our solar system is",
    "In 1969, astronauts landed on",
    "A haiku about autumn:\n",
    "The quick brown fox",
    "Photosynthesis is the process by which",
    "SELECT name, age FROM users WHERE",
    "The French word for cat is",
    "Here is a list of fruits: apple, banana,",
    "The square root of 144 is",
    "Machine learning is a field of",
    "<|im_start|>user\nWhat is the capital of Japan?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nWrite a short poem about the sea.<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nHow many legs does a spider have?<|im_end|>\n<|im_start|>assistant\n",
    "My favourite book is",
]
L2_TOL = 1e-3   # relative L2 error of the final-position logits (default kernels)
N_GREEDY = 64


def check_prompts(tool, ref):
    """For each prompt: final-position logits within L2_TOL (relative L2) of
    the reference with the same argmax, and the greedy 64-token continuation
    identical token for token (default kernels)."""
    try:
        import reftok
        tk = reftok.load(MODEL)
    except Exception as e:  # tokenizers missing: the rest of the test still ran
        print("prompts: skipped (no reference tokenizer: %s)" % e)
        return 0
    failures, worst = 0, 0.0
    for text in PROMPTS:
        ids = reftok.encode(tk, text, False, True)
        want, cache = ref.forward(ids)
        got = tool_logits(tool, ids, len(ids), ref.n_vocab, None)
        if got is None:
            failures += 1
            continue
        w, g = want[-1].astype(np.float64), got[-1].astype(np.float64)
        l2 = float(np.linalg.norm(g - w) / np.linalg.norm(w))
        worst = max(worst, l2)
        gen_want = ref.greedy(ids, N_GREEDY)
        out = run_tool(tool, "--greedy", N_GREEDY, "--threads", 2, *ids)
        gen_got = [int(t) for t in out.split()] if out is not None else []
        same = gen_got == gen_want
        first_diff = next((i for i, (a, b) in enumerate(zip(gen_got, gen_want)) if a != b), None)
        ok = l2 < L2_TOL and int(w.argmax()) == int(g.argmax()) and same
        print("%s prompt %-40r L2 %.2e argmax %s greedy %s" % (
            "ok  " if ok else "FAIL", text[:40], l2, "same" if w.argmax() == g.argmax() else "DIFFERS",
            "identical" if same else "differs at token %s" % first_diff))
        failures += not ok
    print("prompts: %d of %d failed; worst final-position relative L2 %.2e (tol %.0e)"
          % (failures, len(PROMPTS), worst, L2_TOL))
    return failures


def main():
    if len(sys.argv) != 2:
        print("usage: test_forward.py FORWARD_TOOL")
        return 2
    tool = sys.argv[1]
    if not os.path.exists(MODEL):
        skip("no model at " + MODEL)
    t0 = time.time()
    ref = ref_forward.load(MODEL)
    print("reference loaded in %.1fs" % (time.time() - t0))
    failures = 0
    rng = random.Random()
    seed = int(os.environ.get("COPSE_TEST_SEED", rng.randrange(1 << 30)))
    rng.seed(seed)
    print("seed", seed)
    cases = [("chat", CHAT), ("plain", PLAIN), ("random", [rng.randrange(ref.n_vocab) for _ in range(64)])]

    worst = {}
    runs = [("ref", REF_TOL, MARGIN, cases), (None, FAST_TOL, FAST_MARGIN, cases)]
    for isa, tol, min_margin, run_cases in runs:
        label = isa or "default"
        for name, ids in run_cases:
            want, _ = ref.forward(ids)
            got = tool_logits(tool, ids, len(ids), ref.n_vocab, isa)
            if got is None:
                failures += 1
                continue
            spread = want.max(axis=1) - want.min(axis=1)
            rel = np.abs(got - want).max(axis=1) / spread
            worst[label] = max(worst.get(label, 0.0), float(rel.max()))
            srt = np.sort(want, axis=1)
            margin = srt[:, -1] - srt[:, -2]
            disagree = [(i, int(want[i].argmax()), int(got[i].argmax())) for i in range(len(ids))
                        if margin[i] > min_margin and want[i].argmax() != got[i].argmax()]
            print("%-7s %-7s %2d positions: max rel diff %.4f (tol %.2f); argmax disagreements beyond margin: %d"
                  % (label, name, len(ids), rel.max(), tol, len(disagree)))
            if rel.max() > tol or disagree:
                failures += 1
                print("FAIL %s %s: rel diffs %s; disagreements (pos, ref, copse) %s"
                      % (label, name, np.round(rel, 4), disagree))
        # batch invariance on every case: chunks of 5 and of 1, and a ragged batch, give the same bits
        # (default kernels; the reference kernels' invariance is tested op by op in test-cpu-ops)
        for name, ids in (cases if isa is None else []):
            whole = tool_logits(tool, ids, len(ids), ref.n_vocab, isa)
            for chunk in (5, 1):
                again = tool_logits(tool, ids, chunk, ref.n_vocab, isa)
                if whole is None or again is None or not np.array_equal(again.view(np.uint32), whole.view(np.uint32)):
                    failures += 1
                    print("FAIL %s %s: logits fed in chunks of %d differ from one call" % (label, name, chunk))
            out = run_tool(tool, "--batch-check", "--threads", 2, *ids, isa=isa)
            if out is None:
                failures += 1
            else:
                print("%-7s %-7s %s" % (label, name, out.strip()))

    # greedy continuation
    n_gen = 24
    want = ref.greedy(CHAT, n_gen)
    out = run_tool(tool, "--greedy", n_gen, "--threads", 2, *CHAT, isa="ref")
    if out is None:
        failures += 1
    else:
        got = [int(t) for t in out.split()]
        # compare up to the first position where the reference is near a tie
        logits, _ = ref.forward(CHAT + want)
        agree_until = n_gen
        for i in range(n_gen):
            row = np.sort(logits[len(CHAT) - 1 + i])
            if row[-1] - row[-2] < MARGIN:
                agree_until = i
                break
        ok = got[:agree_until + 1] == want[:agree_until + 1]
        print("greedy %d tokens (reference kernels): copse %s\n                 ref   %s\n  must agree on the first %d: %s"
              % (n_gen, got, want, agree_until + 1, "yes" if ok else "NO"))
        if not ok:
            failures += 1

    failures += check_prompts(tool, ref)

    print("worst relative logit difference %s; %d failure(s); %.1fs"
          % (", ".join("%s %.4f" % kv for kv in worst.items()), failures, time.time() - t0))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
