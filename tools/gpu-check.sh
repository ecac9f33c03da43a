#!/usr/bin/env bash
# Runs ON the GPU machine (shared GPU.md, "A call, step by step"); builds nothing there.
# Here:  cargo build --release --features cuda && cargo bench --features cuda --no-run,
#        then copy target/release/vpd and the cuda_* bench binaries into .device/
#        (tools/gpu-check.sh --stage does that), and call the device tool with
#        carry [".device"] and command `bash tools/gpu-check.sh`.
# There: kernel-vs-CPU checks, CUDA-vs-CPU model checks (the committed tiny-llama3 fixture with
# its transformers reference, and a random tiny-llama3 written there), then the benches.
set -uo pipefail
if [[ "${1:-}" == "--stage" ]]; then
    T=${CARGO_TARGET_DIR:-target}/release
    rm -rf .device && mkdir -p .device/bench
    cp "$T/vpd" .device/vpd
    for b in rms_norm swiglu rope_kv gemm attention sampling decode_step isolation; do
        f=$(ls -t "$T"/deps/cuda_${b}-* 2>/dev/null | grep -v '\.d$' | head -1)
        [[ -n "$f" ]] && cp "$f" .device/bench/cuda_$b
    done
    strip .device/vpd .device/bench/* && du -sh .device; exit 0
fi
OUT=${OUT:-/tmp/vpd-gpu-out}; mkdir -p "$OUT"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader | tee "$OUT/card.txt"
date -u +%FT%TZ | tee -a "$OUT/card.txt"
BIN=.device/vpd
status=0
TMP=$(mktemp -d)
$BIN make-model --preset tiny-llama3 --dtype f32 --seed 3 --out "$TMP/tiny-random" >/dev/null || status=1
echo "== gpu-check"
$BIN gpu-check --model tests/fixtures/tiny-llama3 --reference tests/fixtures/tiny-llama3/reference.json \
    --model "$TMP/tiny-random" --new-tokens 48 --json "$OUT/gpu-check.json" 2>&1 | tee "$OUT/gpu-check.txt" || status=1
if [[ "${VPD_SKIP_BENCH:-0}" != 1 ]]; then
    echo "== benches"
    for b in .device/bench/cuda_*; do
        [[ -x "$b" ]] || continue
        "$b" --bench 2>&1 | tee "$OUT/$(basename $b).txt" | grep -E "GB/s|TFLOP|skipping|panicked|error" || status=1
    done
fi
echo "gpu-check.sh: exit $status"
exit $status
