#!/usr/bin/env bash
# gpu-bench.sh — decode benchmark of the 1B and 8B llama shapes on a GPU.
#
#   bash scripts/gpu-bench.sh [BACKEND]      # BACKEND: cuda (default) or hip
#
# Run it on the GPU machine itself: it generates random-weight models of the
# llama-1b and llama-8b shapes there (`copse random-model`, Q4_0 and Q8_0,
# cached in $COPSE_BENCH_DIR, default ~/.cache/copse/bench; 8B Q8_0 is
# about 8 GiB), checks that the backend sees a device (`copse info
# --devices`), runs the backend's unit test (every op against the CPU
# reference), then `copse bench decode --backend BACKEND --json` on each
# model. Results go to stdout and to $COPSE_BENCH_DIR/gpu-bench-<backend>.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."

backend=${1:-cuda}
dir=${COPSE_BENCH_DIR:-${COPSE_MODEL_DIR:-$HOME/.cache/copse}/bench}
copse=./build/copse
mkdir -p "$dir"

if [ ! -x "$copse" ]; then
    meson setup build --buildtype=release >/dev/null
fi
ninja -C build >/dev/null

if ! "$copse" info --devices | grep -q "^backend $backend .*[1-9][0-9]* device"; then
    echo "gpu-bench: backend '$backend' has no device here:" >&2
    "$copse" info --devices >&2
    exit 77
fi

echo "== op check (tests/unit/test-gpu-backend.c)" >&2
./build/tests/test-gpu-backend

if ! "$copse" bench decode --help 2>&1 | grep -q -- "--backend"; then
    echo "gpu-bench: this copse's 'bench decode' has no --backend option yet; it would measure the CPU" >&2
    exit 1
fi

out="$dir/gpu-bench-$backend.jsonl"
: >"$out"
for shape in llama-1b llama-8b; do
    for type in q4_0 q8_0; do
        m="$dir/$shape-$type.gguf"
        if [ ! -f "$m" ]; then
            echo "== generating $m" >&2
            "$copse" random-model --shape "$shape" --type "$type" -o "$m.tmp" && mv "$m.tmp" "$m"
        fi
        echo "== $shape $type on $backend" >&2
        "$copse" bench decode -m "$m" --backend "$backend" --json | tee -a "$out"
    done
done
echo "gpu-bench: results in $out" >&2
