#!/usr/bin/env python3
"""test_spec_run.py — `copse run --draft SPEC` (speculative decoding of one
sequence) is lossless at temperature 0.

For every prompt, `copse run --temp 0 -n 64 -p P --draft ngram` and
`--draft suffix` (full node budget every step: --no-adaptive) must print byte-identical standard output to the plain
`copse run --temp 0 -n 64 -p P`. On the repetitive prompts the drafters
must also have had something accepted (the acceptance stats line on
standard error: "copse: draft NAME: steps S, proposed P, accepted A ...").
Exit 0 pass, 1 fail, 77 skip (no model).
"""

import os
import re
import subprocess
import sys

COPSE = os.environ.get("COPSE_BIN", "copse")
MODEL_DIR = os.environ.get("COPSE_MODEL_DIR") or os.path.expanduser("~/.cache/copse")
MODEL = os.path.join(MODEL_DIR, "SmolLM2-135M-Instruct.Q4_1.gguf")

# (prompt, repetitive): repetitive prompts must get drafts accepted
PROMPTS = [
    ("The cat sat on the mat. The cat sat on the mat. The cat sat on the mat. The cat", True),
    ("1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,", True),
    ("def add(a, b):\n    return a + b\n\ndef sub(a, b):\n    return a - b\n\ndef mul(a, b):\n", True),
    ("Repeat after me: hello world hello world hello world hello world", True),
    ("red green blue red green blue red green blue red green", True),
    ("Once upon a time", False),
    ("Write a short poem about the sea.", False),  # the first token ends the turn: no steps
    ("<|im_start|>user\nList three fruits.<|im_end|>\n<|im_start|>assistant\n", False),
    ("a", False),
]

STATS = re.compile(r"copse: draft (\w+): steps (\d+), proposed (\d+), accepted (\d+)")

failures = 0


def check(cond, what):
    global failures
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures += 1


def run(*args):
    return subprocess.run([COPSE, "run", "-m", MODEL, *map(str, args)], capture_output=True, timeout=300)


def main():
    if not os.path.exists(MODEL):
        print(f"skip: {MODEL} not found (set COPSE_MODEL_DIR)")
        return 77
    accepted_rep = {"ngram": 0, "suffix": 0}
    for i, (prompt, repetitive) in enumerate(PROMPTS):
        plain = run("--temp", 0, "-n", 64, "-p", prompt)
        check(plain.returncode == 0, f"prompt {i}: plain run exits 0 ({plain.stderr.decode(errors='replace')[-300:]!r})")
        if plain.returncode != 0:
            continue
        for draft in ("ngram", "suffix"):
            spec = run("--temp", 0, "-n", 64, "-p", prompt, "--draft", draft, "--no-speedup", "--no-adaptive")
            err = spec.stderr.decode(errors="replace")
            check(spec.returncode == 0, f"prompt {i}: --draft {draft} exits 0 ({err[-300:]!r})")
            same = spec.stdout == plain.stdout
            check(same, f"prompt {i}: --draft {draft} output is identical to plain decoding")
            if not same:
                print(f"  plain: {plain.stdout!r}\n  spec:  {spec.stdout!r}")
            m = STATS.search(err)
            check(m is not None and m.group(1) == draft, f"prompt {i}: --draft {draft} prints acceptance stats")
            if m:
                steps, proposed, accepted = int(m.group(2)), int(m.group(3)), int(m.group(4))
                check(accepted <= proposed and (steps >= 1 or not plain.stdout.strip()), f"prompt {i}: --draft {draft} stats consistent "
                      f"(steps {steps}, proposed {proposed}, accepted {accepted})")
                if repetitive:
                    check(accepted > 0, f"prompt {i}: --draft {draft} accepted drafts on a repetitive prompt "
                          f"({accepted} of {proposed})")
                    accepted_rep[draft] += accepted
    for draft, n in accepted_rep.items():
        print(f"     {draft}: {n} tokens accepted over the repetitive prompts")
    # bad input: each refused with a message naming the problem
    build = os.environ.get("COPSE_BUILD_ROOT", "build")
    tiny = os.path.join(build, "tests", "tiny-q8_0-1layer.gguf")
    cases = [
        (["--draft", "nonsense"], b"nonsense"),
        (["--draft", "layerskip:30"], b"the target has 30 layers"),
        (["--draft", "layerskip:0"], b"layerskip"),
        (["--spec-nodes", "0"], b"--spec-nodes"),
        (["--spec-nodes", "1000000"], b"--spec-nodes"),
        (["--draft", "model:/nonexistent/draft.gguf"], b"/nonexistent/draft.gguf"),
    ]
    if os.path.exists(tiny):  # a model with another vocabulary
        cases.append((["--draft", "model:" + tiny], b"vocabularies must match"))
    for args, want in cases:
        bad = run("--temp", 0, "-n", 4, "-p", "x", *args)
        check(bad.returncode != 0 and want in bad.stderr,
              f"{' '.join(args)} is refused with a message ({bad.stderr.decode(errors='replace').strip()[-120:]!r})")
    print(f"{failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
