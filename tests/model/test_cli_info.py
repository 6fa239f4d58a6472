#!/usr/bin/env python3
"""test_cli_info.py — `copse info` against the gguf package's reading of the same file.

    COPSE_BIN=build/copse test_cli_info.py

For each test model, `copse info --json --kv --tensors MODEL` must agree with
gguf.GGUFReader on: file size, GGUF version, alignment, data offset,
architecture, every `<arch>.*` scalar key (block count, context length, ...),
the tensor count, total bytes and per-type counts/bytes, every tensor's name,
type, shape, size and offset, every metadata key, the vocabulary size and
the special token ids and texts. The text output must show the same key
facts, list every tensor with --tensors and every key with --kv.

Bad input: a truncated copy of a model, a file that is not GGUF, a missing
file — exit status 1, nothing on stdout, a message on stderr naming the
file. Options: --help exits 0; an unknown option exits 2. `--devices` (text
and --json) lists the cpu backend with at least one device.

Exit status: 0 pass, 1 failure, 77 when the gguf package or the models are
missing.
"""
import json
import math
import os
import subprocess
import sys
import tempfile

SKIP = 77
MODELS = ["SmolLM2-135M-Instruct.Q4_1.gguf", "gemma-3-270m-q4_k_m.gguf"]

failures = 0


def fail(msg):
    global failures
    failures += 1
    print("FAIL:", msg)


def check_eq(what, got, want):
    if got != want:
        fail(f"{what}: copse {got!r}, gguf {want!r}")


def run(args):
    p = subprocess.run([os.environ["COPSE_BIN"], "info"] + args, capture_output=True)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def field_value(f):
    """A scalar field's value (None for arrays)."""
    import gguf
    if f.types[0] == gguf.GGUFValueType.ARRAY:
        return None
    return f.contents()


def same_number(a, b, single):
    if isinstance(b, bool) or isinstance(a, bool):
        return a == b
    if isinstance(b, float):
        # float32 keys: copse prints 9 significant digits
        return a is not None and math.isclose(a, b, rel_tol=1e-7 if single else 1e-15)
    return a == b


def check_model(path):
    import gguf
    name = os.path.basename(path)
    r = gguf.GGUFReader(path)
    fields = r.fields

    rc, out, err = run(["--json", "--kv", "--tensors", path])
    if rc != 0:
        fail(f"{name}: copse info --json failed ({rc}): {err.strip()}")
        return
    try:
        j = json.loads(out)
    except json.JSONDecodeError as e:
        fail(f"{name}: --json output does not parse: {e}")
        return

    # file
    check_eq(f"{name} size", j["file"]["size"], os.path.getsize(path))
    check_eq(f"{name} gguf version", j["file"]["gguf_version"], fields["GGUF.version"].contents())
    check_eq(f"{name} alignment", j["file"]["alignment"], r.alignment)
    check_eq(f"{name} data offset", j["file"]["data_offset"], r.data_offset)
    user_keys = [k for k in fields if not k.startswith("GGUF.")]
    check_eq(f"{name} n_kv", j["file"]["n_kv"], len(user_keys))

    # architecture and its hyperparameters
    arch = fields["general.architecture"].contents()
    check_eq(f"{name} architecture", j["architecture"], arch)
    check_eq(f"{name} name", j["name"], fields["general.name"].contents())
    hp = j["hyperparameters"]
    want_hp = {k[len(arch) + 1:]: f for k, f in fields.items() if k.startswith(arch + ".")}
    check_eq(f"{name} hyperparameter keys", sorted(hp), sorted(want_hp))
    for k, f in want_hp.items():
        v = field_value(f)
        if v is None:
            check_eq(f"{name} {arch}.{k}", hp.get(k), f.contents())
        elif not same_number(hp.get(k), v, f.types[0] == gguf.GGUFValueType.FLOAT32):
            fail(f"{name} {arch}.{k}: copse {hp.get(k)!r}, gguf {v!r}")
    for k in ("block_count", "context_length", "embedding_length"):
        if k not in hp:
            fail(f"{name}: hyperparameter {k} missing")

    # tensors
    tensors = r.tensors
    check_eq(f"{name} tensor count", j["tensors"]["count"], len(tensors))
    check_eq(f"{name} tensor bytes", j["tensors"]["bytes"], sum(int(t.n_bytes) for t in tensors))
    check_eq(f"{name} parameters", j["tensors"]["parameters"], sum(int(t.n_elements) for t in tensors))
    by_type = {}
    for t in tensors:
        tname = gguf.GGMLQuantizationType(t.tensor_type).name.lower()
        s = by_type.setdefault(tname, {"count": 0, "bytes": 0, "elements": 0})
        s["count"] += 1
        s["bytes"] += int(t.n_bytes)
        s["elements"] += int(t.n_elements)
    check_eq(f"{name} tensors by type", j["tensors"]["by_type"], by_type)
    tl = j.get("tensor_list", [])
    check_eq(f"{name} tensor_list length", len(tl), len(tensors))
    for got, t in zip(tl, tensors):
        want = {
            "name": t.name,
            "type": gguf.GGMLQuantizationType(t.tensor_type).name.lower(),
            "shape": [int(x) for x in t.shape],
            "bytes": int(t.n_bytes),
            "offset": int(t.data_offset) - r.data_offset,
        }
        if got != want:
            fail(f"{name} tensor {t.name}: copse {got}, gguf {want}")
            break

    # every metadata key, in file order, with its type
    md = j.get("metadata", [])
    check_eq(f"{name} metadata keys", [m["key"] for m in md], user_keys)
    for m in md:
        f = fields[m["key"]]
        t0 = f.types[0].name.lower()
        want_type = f"array[{f.types[1].name.lower()}]" if t0 == "array" else t0
        if m["type"] != want_type:
            fail(f"{name} {m['key']} type: copse {m['type']}, gguf {want_type}")
        v = field_value(f)
        if v is not None and not same_number(m["value"], v, t0 == "float32"):
            fail(f"{name} {m['key']}: copse {m['value']!r}, gguf {v!r}")
        if t0 == "array":
            n = len(f.data)
            val = m["value"]
            got_n = len(val) if isinstance(val, list) else val["n"]
            check_eq(f"{name} {m['key']} length", got_n, n)

    # vocabulary
    toks = fields["tokenizer.ggml.tokens"]
    vocab = j["vocab"]
    check_eq(f"{name} vocab size", vocab["size"], len(toks.data))
    model = fields["tokenizer.ggml.model"].contents()
    check_eq(f"{name} vocab model", vocab["model"], model)
    check_eq(f"{name} vocab type", vocab["type"], {"gpt2": "bpe", "llama": "spm"}[model])
    if "tokenizer.ggml.pre" in fields:
        check_eq(f"{name} pre-tokenizer", vocab["pre"], fields["tokenizer.ggml.pre"].contents())
    for short, key in (("bos", "bos_token_id"), ("eos", "eos_token_id"),
                       ("unk", "unknown_token_id"), ("pad", "padding_token_id")):
        f = fields.get("tokenizer.ggml." + key)
        if f is None:
            continue
        tid = f.contents()
        got = vocab["special"].get(short)
        text = bytes(toks.parts[toks.data[tid]]).decode("utf-8")
        check_eq(f"{name} {short}", got, {"id": tid, "text": text})
    for flag in ("add_bos", "add_eos"):
        f = fields.get(f"tokenizer.ggml.{flag}_token")
        if f is not None:
            check_eq(f"{name} {flag}", vocab[flag], f.contents())
    check_eq(f"{name} tokenizer error", vocab["tokenizer_error"], None)

    # chat template
    ct = j["chat_template"]
    has_t = "tokenizer.chat_template" in fields
    check_eq(f"{name} template present", ct["present"], has_t)
    if has_t:
        check_eq(f"{name} template bytes", ct["bytes"],
                 len(bytes(fields["tokenizer.chat_template"].parts[fields["tokenizer.chat_template"].data[0]])))
    want_family = {"llama": "chatml", "gemma3": "gemma"}[arch]
    check_eq(f"{name} chat family", ct["family"], want_family)
    check_eq(f"{name} chat fallback", ct["fallback"], not has_t)
    if not has_t and "no chat template" not in (ct["note"] or ""):
        fail(f"{name}: no note about the missing template: {ct['note']!r}")

    # text output: the same facts, and the lists
    rc, out, err = run(["--kv", "--tensors", path])
    if rc != 0:
        fail(f"{name}: copse info (text) failed ({rc}): {err.strip()}")
        return
    lines = out.splitlines()

    def line_has(label, value):
        for ln in lines:
            parts = ln.split()
            if ln.strip().startswith(label) and str(value) in parts:
                return True
        fail(f"{name} text: no line '{label} ... {value}'")
        return False

    line_has("architecture", arch)
    line_has("block_count", fields[arch + ".block_count"].contents())
    line_has("count", len(tensors))
    line_has("size", len(toks.data))
    line_has("family", want_family)
    for tname, s in by_type.items():
        line_has(tname, s["count"])
    for t in tensors:
        if not any(ln.split()[1:2] == [t.name] for ln in lines if ln.strip()):
            fail(f"{name} text --tensors: tensor {t.name} not listed")
            break
    for k in user_keys:
        if not any(ln.split()[:1] == [k] for ln in lines):
            fail(f"{name} text --kv: key {k} not listed")
            break
    print(f"{name}: {arch}, {len(tensors)} tensors, {len(toks.data)} tokens, "
          f"{len(user_keys)} keys checked")


def check_bad_files(model_path):
    with tempfile.TemporaryDirectory() as tmp:
        size = os.path.getsize(model_path)
        with open(model_path, "rb") as f:
            data = f.read()
        cases = []
        for cut in (size // 2, size - 1, 64, 0):
            p = os.path.join(tmp, f"truncated-{cut}.gguf")
            with open(p, "wb") as f:
                f.write(data[:cut])
            cases.append((f"truncated at {cut}", p, None))
        p = os.path.join(tmp, "not-gguf.gguf")
        with open(p, "w") as f:
            f.write("this is not a model\n" * 10)
        cases.append(("not GGUF", p, "gguf"))
        cases.append(("missing", os.path.join(tmp, "missing.gguf"), None))
        for what, p, must in cases:
            for extra in ([], ["--json"]):
                rc, out, err = run(extra + [p])
                if rc != 1:
                    fail(f"{what} {extra}: exit {rc}, want 1 (stderr {err.strip()!r})")
                if out:
                    fail(f"{what} {extra}: wrote to stdout: {out[:200]!r}")
                if not err.startswith("copse info: ") or p not in err or len(err.strip()) < len(p) + 20:
                    fail(f"{what} {extra}: unhelpful message {err.strip()!r}")
                if must and must not in err.lower():
                    fail(f"{what}: message does not say {must!r}: {err.strip()!r}")
            print(f"bad file ({what}): {err.strip()}")


def check_options():
    rc, out, _ = run(["--help"])
    if rc != 0 or "--tensors" not in out or "--devices" not in out:
        fail(f"--help: exit {rc}, output {out[:200]!r}")
    rc, _, err = run(["--bogus"])
    if rc != 2:
        fail(f"unknown option: exit {rc}, want 2")
    rc, _, _ = run([])
    if rc != 2:
        fail(f"no model: exit {rc}, want 2")

    rc, out, err = run(["--devices"])
    if rc != 0 or "backend cpu" not in out or "cpu:0" not in out:
        fail(f"--devices: exit {rc}, output {out!r} {err!r}")
    rc, out, err = run(["--devices", "--json"])
    try:
        d = json.loads(out)
        cpu = [b for b in d["backends"] if b["name"] == "cpu"]
        if rc != 0 or not cpu or not cpu[0]["devices"] or cpu[0]["devices"][0]["kind"] != "cpu":
            fail(f"--devices --json: no cpu device in {out!r}")
    except (json.JSONDecodeError, KeyError) as e:
        fail(f"--devices --json: {e}: {out!r}")


def main():
    if "COPSE_BIN" not in os.environ:
        print("COPSE_BIN is not set")
        return 1
    check_options()
    try:
        import gguf  # noqa: F401
    except ImportError:
        print("the gguf package is missing: skipping the model checks")
        return 1 if failures else SKIP
    model_dir = os.environ.get("COPSE_MODEL_DIR") or os.path.expanduser("~/.cache/copse")
    paths = [os.path.join(model_dir, m) for m in MODELS]
    present = [p for p in paths if os.path.exists(p)]
    for p in present:
        check_model(p)
    if present:
        check_bad_files(present[0])
    if failures:
        print(f"{failures} failure(s)")
        return 1
    if len(present) < len(paths):
        print("models missing:", [p for p in paths if p not in present])
        return SKIP
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
