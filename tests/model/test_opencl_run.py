#!/usr/bin/env python3
"""test_opencl_run.py — `copse run --backend opencl` end to end, and the
OpenCL backend's failure paths.

1. Greedy output of `copse run --backend opencl --temp 0 -n 64` equals the
   CPU backend's, byte for byte, plain and with `--draft ngram`, for the
   first N of the 20 prompts below (N = $COPSE_OPENCL_E2E_PROMPTS, default 1
   in CI: PoCL on a 2-core CPU decodes a few tokens per second; run with
   COPSE_OPENCL_E2E_PROMPTS=20 for the full comparison, see
   docs/PERFORMANCE.md). The OpenCL kernels follow the CPU backend's
   canonical arithmetic, so equality is expected, not just likely.
2. No OpenCL platform (OCL_ICD_VENDORS pointing at an empty directory):
   `copse info --devices` says why the backend has no device,
   `copse run --backend opencl` exits 1 with that reason, and `copse run`
   without --backend still runs on the CPU.
3. A kernel build error (COPSE_OPENCL_INJECT_BUILD_ERROR=1, which appends a
   syntax error to matmul.cl) exits 1 naming the kernel file and showing
   the compiler's log.
4. Out of device memory (COPSE_OPENCL_MEM_LIMIT=1000000) exits 1 with an
   out-of-memory message naming the limit.
5. A corrupt program-binary cache entry is ignored and rebuilt.
Exit 0 pass, 1 fail, 77 skip (no model or no OpenCL device).
"""

import glob
import json
import os
import re
import subprocess
import sys
import tempfile

COPSE = os.environ.get("COPSE_BIN", "copse")
MODEL_DIR = os.environ.get("COPSE_MODEL_DIR") or os.path.expanduser("~/.cache/copse")
MODEL = os.path.join(MODEL_DIR, "SmolLM2-135M-Instruct.Q4_1.gguf")

# The prompts of the backend end-to-end comparisons (also scripts/backend-equal.py).
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "e2e-prompts.json"), encoding="utf-8") as f:
    PROMPTS = json.load(f)

failures = 0


def check(cond, what):
    global failures
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures += 1


def run(args, env=None, timeout=600):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([COPSE, *map(str, args)], capture_output=True, timeout=timeout, env=e)


def main():
    if not os.path.exists(MODEL):
        print(f"skip: {MODEL} not found (set COPSE_MODEL_DIR)")
        return 77
    info = run(["info", "--devices"])
    if b"backend opencl" not in info.stdout:
        print("skip: this copse has no OpenCL backend")
        return 77
    if b"backend opencl (api 1): 0 devices" in info.stdout:
        print("skip: no OpenCL device: " + info.stdout.decode(errors="replace").splitlines()[0])
        return 77

    # ------------------------------------------------------------ failure paths (fast)
    with tempfile.TemporaryDirectory() as empty:
        env = {"OCL_ICD_VENDORS": empty}
        r = run(["info", "--devices"], env)
        out = r.stdout.decode(errors="replace")
        check(r.returncode == 0 and "backend opencl (api 1): 0 devices: no OpenCL platform found" in out,
              f"no platform: info --devices names the cause ({out.splitlines()[0] if out else r.stderr!r})")
        r = run(["run", "-m", MODEL, "--backend", "opencl", "-p", "hi", "-n", 2, "--temp", 0], env)
        err = r.stderr.decode(errors="replace")
        check(r.returncode == 1 and "the opencl backend has no device: no OpenCL platform found" in err
              and re.search(r"available: [^)]*\bcpu:0\)", err), f"no platform: run --backend opencl exits 1 with the cause ({err[-300:]!r})")
        r = run(["run", "-m", MODEL, "-p", "The capital of France is", "-n", 4, "--temp", 0], env)
        check(r.returncode == 0 and len(r.stdout) > 0, "no platform: run without --backend still runs on the CPU")
        r = run(["run", "-m", MODEL, "--backend", "opencl:7", "-p", "hi", "-n", 2])
        check(r.returncode == 1 and b"opencl:0 .. opencl:" in r.stderr, "a bad device number lists the devices")
        r = run(["run", "-m", MODEL, "--backend", "nosuch", "-p", "hi", "-n", 2])
        check(r.returncode == 1 and b"no backend named 'nosuch'" in r.stderr and b"cpu" in r.stderr,
              "an unknown backend lists the built-in ones")

    with tempfile.TemporaryDirectory() as cache:
        env = {"COPSE_OPENCL_CACHE_DIR": cache, "COPSE_OPENCL_INJECT_BUILD_ERROR": "1"}
        r = run(["run", "-m", MODEL, "--backend", "opencl", "-p", "hi", "-n", 2, "--temp", 0], env)
        err = r.stderr.decode(errors="replace")
        check(r.returncode == 1 and "kernel file matmul.cl failed to build" in err and "build log:" in err
              and "error" in err.split("build log:")[-1],
              f"a kernel build error names the file and shows the log ({err[-400:]!r})")

    r = run(["run", "-m", MODEL, "--backend", "opencl", "-p", "hi", "-n", 2, "--temp", 0],
            {"COPSE_OPENCL_MEM_LIMIT": "1000000"})
    err = r.stderr.decode(errors="replace")
    check(r.returncode == 1 and "out of memory" in err and "out of device memory" in err
          and "COPSE_OPENCL_MEM_LIMIT" in err, f"device memory exhaustion is a clear error ({err[-300:]!r})")

    # ------------------------------------------------------------ greedy equality
    n = int(os.environ.get("COPSE_OPENCL_E2E_PROMPTS", "1"))
    cache = os.environ.get("COPSE_OPENCL_CACHE_DIR")
    same = total = 0
    for i, prompt in enumerate(PROMPTS[:n]):
        cpu = run(["run", "-m", MODEL, "--temp", 0, "-n", 64, "-p", prompt])
        check(cpu.returncode == 0, f"prompt {i}: cpu run exits 0")
        for extra in ([], ["--draft", "ngram", "--no-speedup"]):
            ocl = run(["run", "-m", MODEL, "--backend", "opencl", "--temp", 0, "-n", 64, "-p", prompt, *extra])
            what = f"prompt {i}: opencl{' ' + ' '.join(extra) if extra else ''} exits 0 and equals the CPU's output"
            ok = ocl.returncode == 0 and ocl.stdout == cpu.stdout
            check(ok, what)
            total += 1
            same += ok
            if not ok:
                print(f"  cpu:    {cpu.stdout!r}\n  opencl: {ocl.stdout!r}\n  stderr: {ocl.stderr[-300:]!r}")

    # ------------------------------------------------------------ corrupt cache entries
    with tempfile.TemporaryDirectory() as cdir:
        env = {"COPSE_OPENCL_CACHE_DIR": cdir}
        r1 = run(["run", "-m", MODEL, "--backend", "opencl", "--temp", 0, "-n", 3, "-p", PROMPTS[0]], env)
        bins = glob.glob(os.path.join(cdir, "*.bin"))
        check(r1.returncode == 0 and len(bins) == 3, f"the program cache holds 3 entries ({len(bins)})")
        for b in bins:
            with open(b, "r+b") as f:
                f.seek(40)
                f.write(b"\xff" * 16)  # corrupt the binary (its hash no longer matches)
        r2 = run(["run", "-m", MODEL, "--backend", "opencl", "--temp", 0, "-n", 3, "-p", PROMPTS[0]], env)
        check(r2.returncode == 0 and r2.stdout == r1.stdout, "corrupt cache entries are ignored and rebuilt")
    print(f"{same} of {total} OpenCL runs equal the CPU's output")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
