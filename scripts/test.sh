#!/usr/bin/env bash
# test.sh — run every test as CI does, after scripts/setup.sh.
#
#   bash scripts/test.sh
#
# 1. build/        release build: all suites but sanitize
# 2. build-asan/   ASan+UBSan build: unit suite, and suite sanitize (the CUDA
#                  kernels on the CPU simulator at small shapes, out-of-bounds
#                  accesses reported)
# 3. build-fuzz/   clang libFuzzer targets, each run for $COPSE_FUZZ_SECONDS (default 60)
# Ends with one line: "N passed, M failed, K skipped". Exit 1 if anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."

fuzz_seconds=${COPSE_FUZZ_SECONDS:-60}
passed=0 failed=0 skipped=0

# Add the counts of a `meson test` summary (from its log on stdin).
count_meson() {
    local log=$1 ok fail skip to xp
    ok=$(awk '/^Ok:/ {print $2}' "$log"); fail=$(awk '/^Fail:/ {print $2}' "$log")
    skip=$(awk '/^Skipped:/ {print $2}' "$log"); to=$(awk '/^Timeout:/ {print $2}' "$log")
    xp=$(awk '/^Unexpected Pass:/ {print $3}' "$log")
    if [ -z "$ok" ]; then
        echo "test.sh: no meson summary in $log" >&2
        failed=$((failed + 1))
        return
    fi
    passed=$((passed + ok)); failed=$((failed + fail + ${to:-0} + ${xp:-0})); skipped=$((skipped + ${skip:-0}))
}

# ---------------------------------------------------------------- release build
if [ ! -f build/build.ninja ]; then meson setup build --buildtype=release >/dev/null; fi
ninja -C build >/dev/null || { echo "test.sh: release build failed" >&2; failed=$((failed + 1)); }
meson test -C build --no-suite sanitize --num-processes 2 --print-errorlogs 2>&1 | tee build/test.log
count_meson build/test.log

# ---------------------------------------------------------------- ASan + UBSan
if [ ! -f build-asan/build.ninja ]; then
    # no CUDA/HIP here: their runtimes are not built with the sanitizers, and
    # the release build already compiles and tests them
    meson setup build-asan --buildtype=debug -Db_sanitize=address,undefined -Db_lundef=false \
        -Dcuda=disabled -Dhip=disabled >/dev/null
fi
if ninja -C build-asan >/dev/null; then
    # unit, and the CUDA kernels on the simulator at small shapes (suite
    # sanitize): device memory is host heap memory, so an out-of-bounds
    # kernel access is reported
    UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1 \
        meson test -C build-asan --suite unit --suite sanitize --num-processes 2 --timeout-multiplier 4 \
        --print-errorlogs 2>&1 | tee build-asan/test.log
    count_meson build-asan/test.log
else
    echo "test.sh: sanitizer build failed" >&2
    failed=$((failed + 1))
fi

# ---------------------------------------------------------------- fuzzing
if command -v clang >/dev/null; then
    if [ ! -f build-fuzz/build.ninja ]; then
        CC=clang meson setup build-fuzz --buildtype=debugoptimized -Dfuzz=enabled \
            -Db_sanitize=address,undefined -Db_lundef=false -Dcuda=disabled -Dhip=disabled -Dgpusim=disabled >/dev/null
    fi
    # only the fuzz targets and the seed writer: the rest is covered by the builds above
    if ninja -C build-fuzz tests/fuzz-gguf tests/fuzz-tokenizer tests/fuzz-server tests/test-gguf >/dev/null; then
        seeds=build-fuzz/seeds
        rm -rf "$seeds"; mkdir -p "$seeds/gguf" "$seeds/tokenizer" "$seeds/server"
        COPSE_GGUF_SEED_DIR="$PWD/$seeds/gguf" ./build-fuzz/tests/test-gguf >/dev/null 2>&1 || true
        printf 'Hello, world! 123 <|im_start|>user\n\xf0\x9f\x8e\x89 caf\xc3\xa9' > "$seeds/tokenizer/seed1"
        # server: the first byte picks the piece size, then pipelined requests
        printf '\x03POST /v1/completions HTTP/1.1\r\nContent-Length: 88\r\n\r\n{"prompt": "Hi", "max_tokens": 4, "stop": ["a"], "speculative": {"drafters": ["ngram"]}}GET /health HTTP/1.1\r\n\r\n' > "$seeds/server/seed1"
        printf '\x07POST /v1/chat/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n30\r\n{"messages": [{"role": "user", "content": "x"}]}\r\n0\r\n\r\n' > "$seeds/server/seed2"
        for f in gguf tokenizer server; do
            corpus=build-fuzz/corpus-$f
            mkdir -p "$corpus"
            echo "fuzz-$f: ${fuzz_seconds}s" >&2
            if UBSAN_OPTIONS=halt_on_error=1 ./build-fuzz/tests/fuzz-$f -max_total_time="$fuzz_seconds" \
                -max_len=8192 -print_final_stats=1 -artifact_prefix=build-fuzz/crash-$f- \
                "$corpus" "$seeds/$f" >build-fuzz/fuzz-$f.log 2>&1; then
                echo "fuzz-$f: OK ($(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' build-fuzz/fuzz-$f.log | grep -o '[0-9]*$') runs)"
                passed=$((passed + 1))
            else
                echo "fuzz-$f: FAIL (see build-fuzz/fuzz-$f.log)"; tail -40 build-fuzz/fuzz-$f.log
                failed=$((failed + 1))
            fi
        done
    else
        echo "test.sh: fuzz build failed" >&2
        failed=$((failed + 1))
    fi
else
    echo "fuzz: skipped (no clang)"
    skipped=$((skipped + 3))
fi

echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
