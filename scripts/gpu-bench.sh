#!/usr/bin/env bash
# gpu-bench.sh — the GPU benchmark table of docs/PERFORMANCE.md.
#
#   bash scripts/gpu-bench.sh [BACKEND] [SHAPES] [TYPES]
#     BACKEND  cuda (default), hip, or gpusim (the CPU simulator: a dry run)
#     SHAPES   default "llama-1b llama-8b" (see `copse random-model --help`)
#     TYPES    default "q4_0 q8_0 f16"
#
# Run it on the GPU machine itself: it generates random-weight models of the
# shapes there (`copse random-model`; speed does not depend on weight values;
# cached in $COPSE_BENCH_DIR, default ~/.cache/copse/bench; 8B F16 is about
# 16 GB), checks that the backend sees a device (`copse info --devices`),
# runs the backend's conformance test (every op against the CPU reference),
# then `copse bench decode --backend BACKEND --json` on each model: decode
# tokens/s at batch 1, the floor (weight bytes per token / the device's
# measured copy bandwidth), verification time for 1..64 new tokens relative
# to one decode step, prefill tokens/s. Results go to
# $COPSE_BENCH_DIR/gpu-bench-<backend>.jsonl and, as a markdown table, to
# stdout. Extra `copse bench decode` options: $COPSE_BENCH_ARGS.
set -euo pipefail
cd "$(dirname "$0")/.."

backend=${1:-cuda}
shapes=${2:-llama-1b llama-8b}
types=${3:-q4_0 q8_0 f16}
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

echo "== conformance (tests/conformance, every op against the CPU reference)" >&2
./build/tests/test-conformance "$backend" >&2

out="$dir/gpu-bench-$backend.jsonl"
: >"$out"
for shape in $shapes; do
    for type in $types; do
        m="$dir/$shape-$type.gguf"
        if [ ! -f "$m" ]; then
            echo "== generating $m" >&2
            "$copse" random-model --shape "$shape" --type "$type" -o "$m.tmp" >&2 && mv "$m.tmp" "$m"
        fi
        echo "== $shape $type on $backend" >&2
        # shellcheck disable=SC2086
        "$copse" bench decode -m "$m" --backend "$backend" --json ${COPSE_BENCH_ARGS:-} \
            | python3 -c 'import json, sys; print(json.dumps(json.load(sys.stdin)))' | tee -a "$out" >&2
    done
done
echo "gpu-bench: results in $out" >&2

python3 - "$out" <<'PY'
import json, os, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
if not rows:
    sys.exit(0)
print(f"device copy bandwidth: {rows[0]['bandwidth_gb_s']:.0f} GB/s ({rows[0]['bandwidth_kind']})\n")
print("| model | weights GiB | decode tok/s | floor tok/s | % of floor "
      "| verify 8 / 16 / 32 / 64 (x one decode step) | prefill tok/s |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    name = os.path.basename(r["model"]).removesuffix(".gguf")
    v = r["verify_cost_ratio"]
    print(f"| {name} | {r['weight_bytes'] / 2**30:.2f} | {r['decode_tok_s']:.1f} | "
          f"{r['floor_decode_tok_s']:.1f} | {100 * r['decode_tok_s'] / r['floor_decode_tok_s']:.0f}% | "
          f"{v['8']:.2f} / {v['16']:.2f} / {v['32']:.2f} / {v['64']:.2f} | {r['prefill_tok_s']:.0f} |")
PY
