#!/usr/bin/env bash
# bench-decode.sh — the CPU inference benchmark of docs/PERFORMANCE.md.
#
#   bash scripts/bench-decode.sh [THREADS]        (default 2)
#
# Runs `copse bench decode --json` on the default model and on random-weight
# models of the SmolLM2-360M and SmolLM2-1.7B shapes in Q4_1 and Q8_0
# (written once by `copse random-model` into $COPSE_MODEL_DIR/bench), and
# prints one Markdown table row per model. Raw JSON goes to build/bench/.
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
dir=${COPSE_MODEL_DIR:-$HOME/.cache/copse}
mkdir -p "$dir/bench" build/bench

models=("$dir/SmolLM2-135M-Instruct.Q4_1.gguf")
for shape in smollm2-360m smollm2-1.7b; do
    for type in q4_1 q8_0; do
        f="$dir/bench/$shape-$type.gguf"
        [ -f "$f" ] || ./build/copse random-model --shape "$shape" --type "$type" -o "$f"
        models+=("$f")
    done
done

echo "| model | weights MiB | bandwidth GB/s | prefill tok/s | decode tok/s (floor, %) | decode at depth 512 (floor, %) | verify 2/4/8/16/32 vs 1 |"
echo "|---|---|---|---|---|---|---|"
for m in "${models[@]}"; do
    out="build/bench/$(basename "$m" .gguf).json"
    ./build/copse bench decode -m "$m" --threads "$threads" --json > "$out"
    python3 - "$out" "$m" <<'PY'
import json, os, sys
j = json.load(open(sys.argv[1]))
r = j["verify_cost_ratio"]
print("| %s | %.0f | %.1f | %.1f | %.1f (%.1f, %.0f%%) | %.1f (%.1f, %.0f%%) | %s |" % (
    os.path.basename(sys.argv[2]), j["weight_bytes"] / 2**20, j["bandwidth_gb_s"], j["prefill_tok_s"],
    j["decode_tok_s"], j["floor_decode_tok_s"], 100 * j["decode_tok_s"] / j["floor_decode_tok_s"],
    j["decode_tok_s_at_depth"], j["floor_decode_tok_s_at_depth"],
    100 * j["decode_tok_s_at_depth"] / j["floor_decode_tok_s_at_depth"],
    " / ".join("%.2f" % r[k] for k in ("2", "4", "8", "16", "32"))))
PY
done
