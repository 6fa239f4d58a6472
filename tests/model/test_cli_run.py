#!/usr/bin/env python3
"""test_cli_run.py — `copse run`, `copse bench decode` and `copse random-model`
from the outside, as a user runs them.

    test_cli_run.py FORWARD_TOOL        ($COPSE_BIN is the copse executable)

- standard output carries exactly the generated text: at temperature 0 it is
  the detokenized greedy continuation that forward-tool computes with the same
  engine, and nothing else (no prompt echo, no logging);
- the same seed gives the same sampled text, another seed (very likely) not;
- chat mode answers through the model's template;
- bad input (empty prompt, prompt longer than the context, -n 0, unknown
  flags, an unsupported architecture, a missing file) gives a message on
  standard error and a non-zero exit, never a crash;
- random-model writes a loadable model; bench decode --json reports the keys
  the benchmark promises, including the verification cost curve.
Exit 0 pass, 1 fail, 77 skip (no model).
"""

import json
import os
import subprocess
import sys
import tempfile

COPSE = os.environ.get("COPSE_BIN", "copse")
MODEL_DIR = os.environ.get("COPSE_MODEL_DIR") or os.path.expanduser("~/.cache/copse")
MODEL = os.path.join(MODEL_DIR, "SmolLM2-135M-Instruct.Q4_1.gguf")
GEMMA = os.path.join(MODEL_DIR, "gemma-3-270m-q4_k_m.gguf")

failures = 0


def check(cond, what):
    global failures
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures += 1


def run(*args, stdin=None):
    return subprocess.run([COPSE, *map(str, args)], capture_output=True, input=stdin, timeout=300)


def main():
    if len(sys.argv) != 2:
        print("usage: test_cli_run.py FORWARD_TOOL")
        return 2
    tool = sys.argv[1]
    if not os.path.exists(MODEL):
        print("skip: no model at", MODEL)
        return 77

    # --- stdout is exactly the greedy continuation
    prompt = "The capital of France is"
    ids = run("tokenize", "-m", MODEL, prompt).stdout.split()
    greedy = subprocess.run([tool, MODEL, "--greedy", "20", *ids], capture_output=True, text=True, timeout=300)
    want_ids = greedy.stdout.split()
    # the continuation up to (not including) an end-of-generation token
    eog = {"2"}  # <|im_end|> for SmolLM2 (see copse info)
    cut = next((i for i, t in enumerate(want_ids) if t in eog), len(want_ids))
    want = run("detokenize", "-m", MODEL, *want_ids[:cut]).stdout if cut else b"\n"
    want = want[:-1]  # detokenize ends its output with a newline of its own
    got = run("run", "-m", MODEL, "-p", prompt, "-n", 20, "--temp", 0)
    check(got.returncode == 0, "run -p exits 0")
    check(got.stdout == want, "stdout is exactly the greedy continuation: %r vs %r"
          % (got.stdout[:60], want[:60]))
    check(b"tokens/s" in got.stderr and b"tokens/s" not in got.stdout, "speeds go to stderr only")
    # the prompt can come from standard input too
    piped = run("run", "-m", MODEL, "-n", 20, "--temp", 0, stdin=prompt.encode())
    check(piped.stdout == got.stdout, "prompt from stdin gives the same text")

    # --- seeds
    a = run("run", "-m", MODEL, "-p", "Once upon a time", "-n", 24, "--seed", 7).stdout
    b = run("run", "-m", MODEL, "-p", "Once upon a time", "-n", 24, "--seed", 7).stdout
    c = run("run", "-m", MODEL, "-p", "Once upon a time", "-n", 24, "--seed", 8, "--temp", 1.5).stdout
    check(a == b and len(a) > 0, "same seed, same text")
    check(a != c, "another seed and temperature, other text")

    # --- chat
    chat = run("run", "-m", MODEL, "--chat", "-p", "Say hello.", "-n", 32, "--temp", 0)
    check(chat.returncode == 0 and len(chat.stdout.strip()) > 0, "chat mode answers: %r" % chat.stdout[:60])
    check(b"<|im_start|>" not in chat.stdout and b"<|im_end|>" not in chat.stdout,
          "chat output carries no control tokens")
    conv = run("run", "-m", MODEL, "--chat", "-n", 16, "--temp", 0, stdin=b"Hi!\nWhat is 2+2?\n")
    check(conv.returncode == 0 and conv.stdout.count(b"\n") >= 2, "chat conversation from stdin, two turns")

    # --- bad input: message on stderr, non-zero exit, no crash (exit codes < 128)
    long_prompt = "word " * 200
    bad = [
        (("-p", ""), "empty prompt"),
        (("-p", long_prompt, "-c", 64), "prompt longer than the context"),
        (("-p", "hi", "-n", 0), "-n 0"),
        (("-p", "hi", "--no-such-flag"), "unknown flag"),
        (("-p", "hi", "--temp", "hot"), "non-numeric value"),
    ]
    for args, what in bad:
        r = run("run", "-m", MODEL, *args)
        check(0 < r.returncode < 128 and len(r.stderr.strip()) > 0 and r.stdout == b"",
              "%s: exit %d, %r" % (what, r.returncode, r.stderr.strip().splitlines()[-1:]))
    for path, what in [(GEMMA, "unsupported architecture"), ("/nonexistent.gguf", "missing file")]:
        if not os.path.exists(path) and path == GEMMA:
            continue
        r = run("run", "-m", path, "-p", "hi")
        check(0 < r.returncode < 128 and b"copse run:" in r.stderr, "%s: exit %d, %r"
              % (what, r.returncode, r.stderr.strip().splitlines()[-1:]))

    # --- random-model and bench
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "tiny.gguf")
        r = run("random-model", "--shape", "smollm2-360m", "--type", "q8_0", "--layers", 2, "-o", path)
        check(r.returncode == 0 and os.path.exists(path), "random-model writes a model")
        info = run("info", "--json", path)
        facts = json.loads(info.stdout) if info.returncode == 0 else {}
        check(info.returncode == 0 and "llama" in json.dumps(facts), "copse info reads the random model")
        bench = run("bench", "decode", "-m", path, "--prompt-tokens", 32, "--gen-tokens", 4, "--runs", 1,
                    "--threads", 2, "--json")
        try:
            j = json.loads(bench.stdout)
        except ValueError:
            j = {}
        keys = ["prefill_tok_s", "decode_tok_s", "floor_decode_tok_s", "threads", "verify_cost_ratio"]
        check(bench.returncode == 0 and all(k in j for k in keys), "bench --json has %s" % keys)
        vc = j.get("verify_cost_ratio", {})
        check(sorted(vc, key=int) == ["1", "2", "4", "8", "16", "32", "64"] and abs(vc.get("1", 0) - 1) < 1e-9
              and all(v > 0 for v in vc.values()), "verification cost curve keyed by n, 1 at n = 1")
        check(j.get("decode_tok_s", 0) > 0 and j.get("floor_decode_tok_s", 0) > 0 and j.get("threads") == 2,
              "positive speeds, threads reported")

    print("%d failure(s)" % failures)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
