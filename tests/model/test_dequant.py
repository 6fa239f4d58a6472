#!/usr/bin/env python3
"""test_dequant.py — copse's reference dequantizers against the `gguf` package.

    test_dequant.py PATH/TO/dequant-tool

(a) Random blocks of every format: numpy makes random bytes (fp16 scale fields
    forced finite, some of them subnormal; plus a small batch left fully random
    so inf/NaN scales are exercised too), `dequant-tool --raw` dequantizes
    them, and the result is compared with gguf.quants.dequantize().
(b) A GGUF written by gguf.GGUFWriter with a tensor of every storable format,
    through the tool's file path (so formats the models lack are covered too).
(c) Every tensor of the two test models, streamed tensor by tensor from
    `dequant-tool MODEL -`, compared with gguf.quants.dequantize() of the same
    bytes. The GGUF tensor table is read by a small parser here (independent of
    copse's reader; gguf.GGUFReader is slow on big vocabularies).

Equality: bit-for-bit (any NaN equals any NaN) for F32/F16/BF16/Q4_x/Q5_x/Q8_x,
at most 1 float32 ulp for the K-quants. gguf-py has no dequantizer for Q8_1 and
Q8_K (and lists an obsolete 40-byte Q8_1 size); those two are checked against
the numpy formula d * q written here.

Exit status: 0 pass, 1 mismatch, 77 when numpy/gguf or the models are missing.
The seed is $COPSE_TEST_SEED if set, else fresh; it is printed.
"""
import os
import struct
import subprocess
import sys
import tempfile
import time

SKIP = 77

try:
    import numpy as np
    from gguf.constants import GGMLQuantizationType as QT
    from gguf.quants import dequantize as gguf_dequantize
except ImportError as e:  # pragma: no cover
    print(f"skip: numpy/gguf not available ({e})")
    sys.exit(SKIP)

QK_K = 256

# name -> (type number, block size, type size, byte offsets of fp16 scales, K-quant?)
FORMATS = {
    "f32": (QT.F32, 1, 4, (), False),
    "f16": (QT.F16, 1, 2, (), False),
    "bf16": (QT.BF16, 1, 2, (), False),
    "q4_0": (QT.Q4_0, 32, 18, (0,), False),
    "q4_1": (QT.Q4_1, 32, 20, (0, 2), False),
    "q5_0": (QT.Q5_0, 32, 22, (0,), False),
    "q5_1": (QT.Q5_1, 32, 24, (0, 2), False),
    "q8_0": (QT.Q8_0, 32, 34, (0,), False),
    "q8_1": (QT.Q8_1, 32, 36, (0, 2), False),
    "q2_k": (QT.Q2_K, QK_K, 84, (80, 82), True),
    "q3_k": (QT.Q3_K, QK_K, 110, (108,), True),
    "q4_k": (QT.Q4_K, QK_K, 144, (0, 2), True),
    "q5_k": (QT.Q5_K, QK_K, 176, (0, 2), True),
    "q6_k": (QT.Q6_K, QK_K, 210, (208,), True),
    "q8_k": (QT.Q8_K, QK_K, 292, (), True),
}
BY_NUMBER = {int(v[0]): k for k, v in FORMATS.items()}


# ---------------------------------------------------------------- reference

def reference(name, raw):
    """float32 values of the bytes `raw` (1-D uint8) in format `name`."""
    qt, bs, ts, _, _ = FORMATS[name]
    with np.errstate(all="ignore"):
        return _reference(name, raw, qt, ts)


def _reference(name, raw, qt, ts):
    if name == "q8_1":  # d fp16 @0, s fp16 @2, int8 qs[32] @4
        b = raw.reshape(-1, ts)
        d = b[:, 0:2].copy().view(np.float16).astype(np.float32)
        q = b[:, 4:].copy().view(np.int8).astype(np.float32)
        return (d * q).reshape(-1)
    if name == "q8_k":  # d float32 @0, int8 qs[256] @4, int16 bsums[16] @260
        b = raw.reshape(-1, ts)
        d = b[:, 0:4].copy().view(np.float32)
        q = b[:, 4:4 + QK_K].copy().view(np.int8).astype(np.float32)
        return (d * q).reshape(-1)
    return np.asarray(gguf_dequantize(raw, qt), dtype=np.float32).reshape(-1)


def ordered(x):
    """float32 bits mapped to integers whose difference counts ulps."""
    i = x.view(np.int32).astype(np.int64)
    return np.where(i < 0, -(i & 0x7FFFFFFF), i)


def compare(label, name, got, want, base=0):
    """Returns (ok, max ulp among non-NaN pairs). Prints the first mismatches."""
    kquant = FORMATS[name][4]
    if got.shape != want.shape:
        print(f"FAIL {label}: {got.size} values, reference has {want.size}")
        return False, 0
    gn, wn = np.isnan(got), np.isnan(want)
    both = gn & wn
    if kquant:
        ulp = np.abs(ordered(got) - ordered(want))
        ulp[both] = 0
        bad = (ulp > 1) | (gn != wn)
        maxulp = int(ulp[~(gn | wn)].max()) if (~(gn | wn)).any() else 0
    else:
        bad = (got.view(np.uint32) != want.view(np.uint32)) & ~both
        maxulp = 0 if not bad.any() else -1
    if bad.any():
        idx = np.flatnonzero(bad)
        print(f"FAIL {label} ({name}): {idx.size} mismatching values")
        for i in idx[:10]:
            g, w = got[i], want[i]
            print(f"  index {base + int(i)}: copse {g!r} (0x{int(got.view(np.uint32)[i]):08x})"
                  f"  gguf {w!r} (0x{int(want.view(np.uint32)[i]):08x})")
        return False, maxulp
    return True, maxulp


# ---------------------------------------------------------------- (a) random blocks

def fix_fp16(h, rng, subnormal_share=0.125):
    """Make fp16 bit patterns finite; a share of them subnormal (or zero)."""
    h = np.where((h & 0x7C00) == 0x7C00, h & ~np.uint16(0x4000), h).astype(np.uint16)
    sub = rng.random(h.shape) < subnormal_share
    return np.where(sub, h & np.uint16(0x83FF), h).astype(np.uint16)


def random_blocks(name, nblocks, rng, wild=False):
    qt, bs, ts, scales, _ = FORMATS[name]
    raw = rng.integers(0, 256, size=(nblocks, ts), dtype=np.uint8)
    if wild:
        return raw.reshape(-1)
    for off in scales:
        h = raw[:, off:off + 2].copy().view(np.uint16).reshape(-1)
        raw[:, off:off + 2] = fix_fp16(h, rng).view(np.uint8).reshape(nblocks, 2)
    if name == "q8_k":  # float32 scale: finite, moderate magnitude, either sign
        d = (rng.standard_normal(nblocks) * 10.0 ** rng.integers(-8, 4, nblocks)).astype(np.float32)
        raw[:, 0:4] = d.view(np.uint8).reshape(nblocks, 4)
    return raw.reshape(-1)


def run_raw(tool, name, raw, tmpdir):
    bs, ts = FORMATS[name][1], FORMATS[name][2]
    n = raw.size // ts * bs
    path = os.path.join(tmpdir, f"{name}.bin")
    raw.tofile(path)
    out = subprocess.run([tool, "--raw", name, str(n), path, "-"], stdout=subprocess.PIPE, check=True).stdout
    return np.frombuffer(out, dtype="<f4").astype(np.float32)


def test_random(tool, rng):
    ok = True
    print("(a) random blocks")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (qt, bs, ts, _, kq) in FORMATS.items():
            if name in ("f16", "bf16"):  # exhaustive: every 16-bit pattern
                batches = [np.arange(65536, dtype=np.uint16).view(np.uint8)]
            elif name == "f32":
                batches = [rng.integers(0, 256, size=4 * 65536, dtype=np.uint8)]
            else:
                nb = 4096 if bs == 32 else 512
                batches = [random_blocks(name, nb, rng), random_blocks(name, 64, rng, wild=True)]
            maxulp = 0
            nvals = 0
            fmt_ok = True
            for k, raw in enumerate(batches):
                got = run_raw(tool, name, raw, tmp)
                want = reference(name, raw)
                good, mu = compare(f"random {name} batch {k}", name, got, want)
                fmt_ok &= good
                maxulp = max(maxulp, mu)
                nvals += got.size
            ok &= fmt_ok
            extra = f", max ulp {maxulp}" if kq else ", bit-exact"
            print(f"  {name:5s} {nvals:8d} values {'ok' if fmt_ok else 'FAILED'}{extra}")
    return ok


# ---------------------------------------------------------------- (c) models

def gguf_tensor_table(path):
    """[(name, type, n_elements, absolute offset)] read from the file's header."""
    with open(path, "rb") as f:
        buf = f.read(64 << 20)  # header + metadata (vocabularies included) fit easily
    pos = 0

    def take(fmt):
        nonlocal pos
        v = struct.unpack_from(fmt, buf, pos)
        pos += struct.calcsize(fmt)
        return v[0] if len(v) == 1 else v

    def string():
        nonlocal pos
        n = take("<Q")
        s = buf[pos:pos + n]
        pos += n
        return s

    fixed = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}

    def skip_value(t):
        nonlocal pos
        if t in fixed:
            pos += fixed[t]
        elif t == 8:
            string()
        elif t == 9:
            et, n = take("<I"), take("<Q")
            if et in fixed:
                pos += fixed[et] * n
            else:
                for _ in range(n):
                    skip_value(et)
        else:
            raise ValueError(f"{path}: bad metadata type {t}")

    if buf[:4] != b"GGUF":
        raise ValueError(f"{path}: not a GGUF file")
    pos = 4
    version = take("<I")
    if version < 2:
        raise ValueError(f"{path}: GGUF v{version} not supported here")
    n_tensors, n_kv = take("<Q"), take("<Q")
    alignment = 32
    for _ in range(n_kv):
        key = string()
        t = take("<I")
        if key == b"general.alignment" and t == 4:
            alignment = take("<I")
        else:
            skip_value(t)
    infos = []
    for _ in range(n_tensors):
        name = string().decode("utf-8", "replace")
        nd = take("<I")
        ne = struct.unpack_from(f"<{nd}Q", buf, pos)
        pos += 8 * nd
        ty, off = take("<I"), take("<Q")
        n = 1
        for d in ne:
            n *= d
        infos.append((name, ty, n, off))
    data = (pos + alignment - 1) // alignment * alignment
    return [(nm, ty, n, data + off) for nm, ty, n, off in infos]


def read_exact(f, n):
    b = f.read(n)
    if len(b) != n:
        raise EOFError(f"dequant-tool output ended early ({len(b)} of {n} bytes)")
    return b


def test_model(tool, path, stats, allow_skip=False):
    table = gguf_tensor_table(path)
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    proc = subprocess.Popen([tool, path, "-"], stdout=subprocess.PIPE, bufsize=1 << 20)
    ok = True
    chunk = 1 << 22  # elements per comparison step (a multiple of every block size)
    seen = 0
    try:
        while True:
            head = proc.stdout.readline().split()
            if not head:
                raise EOFError("dequant-tool output ended without 'end'")
            if head[0] == b"end":
                if int(head[1]) != len(table):
                    print(f"FAIL {path}: tool saw {int(head[1])} tensors, file has {len(table)}")
                    ok = False
                break
            kind, idx, ty, n, nlen = head[0], int(head[1]), int(head[2]), int(head[3]), int(head[4])
            tname = read_exact(proc.stdout, nlen).decode("utf-8", "replace")
            read_exact(proc.stdout, 1)
            seen += 1
            name, ref_ty, ref_n, off = table[idx]
            if (tname, ty, n) != (name, ref_ty, ref_n):
                print(f"FAIL tensor {idx}: tool says ({tname}, {ty}, {n}), file says ({name}, {ref_ty}, {ref_n})")
                return False
            fmt = BY_NUMBER.get(ty)
            if kind != b"tensor" or fmt is None:
                if not (allow_skip and kind == b"skip" and fmt is None):
                    print(f"FAIL tensor {tname}: type {ty} {kind.decode()} (not dequantized by copse?)")
                    ok = False
                stats.setdefault("skipped", [0, 0, 0])[0] += 1
                continue
            _, bs, ts, _, kq = FORMATS[fmt]
            st = stats.setdefault(fmt, [0, 0, 0])
            done = 0
            while done < n:
                m = min(chunk, n - done)
                b0 = off + done // bs * ts
                raw = np.asarray(mm[b0:b0 + m // bs * ts])
                got = np.frombuffer(read_exact(proc.stdout, 4 * m), dtype="<f4").astype(np.float32)
                want = reference(fmt, raw)
                good, mu = compare(f"tensor {tname}", fmt, got, want, base=done)
                if not good:
                    return False
                st[2] = max(st[2], mu)
                done += m
            st[0] += 1
            st[1] += n
    finally:
        proc.stdout.close()
        rc = proc.wait()
    if rc != 0:
        print(f"FAIL dequant-tool exited with {rc} on {path}")
        ok = False
    return ok and seen == len(table)


# ---------------------------------------------------------------- (b) synthetic GGUF

def test_synthetic(tool, rng):
    """A GGUF written by gguf.GGUFWriter with a tensor of every format the
    package can store (not Q8_1: gguf-py has its old size), in 1-3 dims, plus
    an I32 tensor the tool must report as skipped."""
    try:
        from gguf import GGUFWriter
    except ImportError:
        print("(b) skipped: gguf.GGUFWriter not available")
        return True
    print("(b) synthetic GGUF, every format through the file path")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "all-formats.gguf")
        w = GGUFWriter(path, "llama")
        for name, (qt, bs, ts, _, _) in FORMATS.items():
            if name == "q8_1":
                continue
            rows, cols = (3, 2 * bs) if bs > 1 else (5, 7)
            raw = random_blocks(name, rows * cols // bs, rng).reshape(rows, cols // bs * ts)
            if name == "q4_0":  # one 3-D tensor as well
                w.add_tensor("t3d." + name, raw.reshape(rows, 1, -1), raw_dtype=qt)
            w.add_tensor("t." + name, raw, raw_dtype=qt)
        w.add_tensor("t.i32", np.arange(10, dtype=np.int32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        stats = {}
        ok = test_model(tool, path, stats, allow_skip=True)
    skipped = stats.pop("skipped", [0])[0]
    print(f"  {len(stats)} formats, {sum(v[0] for v in stats.values())} tensors compared,"
          f" {skipped} skipped (i32), {'ok' if ok and skipped == 1 else 'FAILED'}")
    return ok and skipped == 1


# ---------------------------------------------------------------- main

def main():
    if len(sys.argv) != 2:
        print("usage: test_dequant.py PATH/TO/dequant-tool")
        return 2
    tool = sys.argv[1]
    seed = int(os.environ.get("COPSE_TEST_SEED", "0"), 0) or int.from_bytes(os.urandom(8), "little")
    print(f"COPSE_TEST_SEED={seed}")
    rng = np.random.default_rng(seed)

    t0 = time.time()
    if not test_random(tool, rng):
        return 1
    print(f"  ({time.time() - t0:.1f}s)")
    if not test_synthetic(tool, rng):
        return 1

    mdir = os.environ.get("COPSE_MODEL_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "copse")
    models = [os.path.join(mdir, m) for m in
              ("SmolLM2-135M-Instruct.Q4_1.gguf", "gemma-3-270m-q4_k_m.gguf")]
    missing = [m for m in models if not os.path.exists(m)]
    if missing:
        print(f"skip: models missing: {', '.join(missing)} (see scripts/fetch-models.sh)")
        return SKIP

    print("(c) model tensors")
    for m in models:
        t1 = time.time()
        stats = {}
        good = test_model(tool, m, stats)
        print(f"  {os.path.basename(m)} ({time.time() - t1:.1f}s)")
        for fmt, (nt, ne, mu) in sorted(stats.items()):
            extra = f", max ulp {mu}" if FORMATS[fmt][4] else ", bit-exact"
            print(f"    {fmt:5s} {nt:4d} tensors {ne:11d} values{extra}")
        if not good:
            return 1
    print(f"all equal ({time.time() - t0:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
