#!/usr/bin/env python3
"""backend-equal.py — does `copse run --backend B` print what the CPU prints?

    python3 scripts/backend-equal.py cuda                     # 20 prompts x 64 tokens
    python3 scripts/backend-equal.py gpusim --prompts 3 --tokens 16 --layers 4

Greedy output (--temp 0) of `copse run --backend B` against `copse run
--backend cpu`, byte for byte, for the first N prompts of
tests/model/e2e-prompts.json, plain and speculative (--draft ngram, and
--draft model:SLICE with a 2-layer slice of the model as the draft). The
model is a `copse slice` of the default model to --layers layers (default
8: the whole default model is larger than what travels to the GPU machine,
and a truncation still exercises every op at the model's shapes); --model
takes any GGUF instead (no slicing). Prints one line per run and a summary;
exit 0 when every run is equal, 1 otherwise.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("backend", help="backend to compare with the CPU (cuda, hip, opencl, gpusim, ...)")
    ap.add_argument("--copse", default=os.path.join(ROOT, "build", "copse"))
    ap.add_argument("--model", help="GGUF to run as is (default: a slice of the default model)")
    ap.add_argument("--layers", type=int, default=8, help="layers of the default model to keep (default 8)")
    ap.add_argument("--prompts", type=int, default=20)
    ap.add_argument("--tokens", type=int, default=64)
    a = ap.parse_args()

    with open(os.path.join(ROOT, "tests", "model", "e2e-prompts.json"), encoding="utf-8") as f:
        prompts = json.load(f)[: a.prompts]

    def copse(*args):
        return subprocess.run([a.copse, *map(str, args)], capture_output=True)

    with tempfile.TemporaryDirectory() as tmp:
        model = a.model
        if not model:
            src = os.path.join(os.environ.get("COPSE_MODEL_DIR") or os.path.expanduser("~/.cache/copse"),
                               "SmolLM2-135M-Instruct.Q4_1.gguf")
            model = os.path.join(tmp, "target.gguf")
            r = copse("slice", src, "--layers", a.layers, "-o", model)
            if r.returncode:
                sys.exit(f"backend-equal: cannot slice {src}: {r.stderr.decode(errors='replace')}")
        draft = os.path.join(tmp, "draft.gguf")
        if copse("slice", model, "--layers", 2, "-o", draft).returncode:
            draft = None
        modes = [[], ["--draft", "ngram"]] + ([["--draft", "model:" + draft]] if draft else [])
        same = total = 0
        for i, p in enumerate(prompts):
            for extra in modes:
                base = ["run", "-m", model, "--temp", 0, "-n", a.tokens, "-p", p, "--no-speedup", *extra]
                cpu = copse(*base, "--backend", "cpu")
                dev = copse(*base, "--backend", a.backend)
                ok = cpu.returncode == 0 and dev.returncode == 0 and cpu.stdout == dev.stdout
                total += 1
                same += ok
                label = " ".join(extra) or "plain"
                print(f"{'same' if ok else 'DIFF'}  prompt {i:2d}  {label}", flush=True)
                if not ok:
                    print(f"  cpu ({cpu.returncode}): {cpu.stdout!r}\n  {a.backend} ({dev.returncode}): {dev.stdout!r}")
                    print(f"  stderr: {dev.stderr.decode(errors='replace')[-400:]}")
        print(f"backend-equal: {a.backend} equals cpu in {same} of {total} runs "
              f"({len(prompts)} prompts x {a.tokens} tokens, {len(modes)} modes)")
        return 0 if same == total else 1


if __name__ == "__main__":
    sys.exit(main())
