#!/usr/bin/env bash
# Runs ON the GPU machine (shared GPU.md, "A call, step by step"); builds nothing there.
# Here:  cargo build --release --features cuda && cargo bench --features cuda --no-run,
#        then copy target/release/vpd and the cuda_* bench binaries into .device/
#        (tools/gpu-check.sh --stage does that), and call the device tool with
#        carry [".device"] and command `bash tools/gpu-check.sh`.
# There: kernel-vs-CPU checks, CUDA-vs-CPU model checks (the committed tiny-llama3 fixture with
# its transformers reference, and a random tiny-llama3 written there), `vpd serve` on CUDA
# against CPU (one greedy request each), then the benches.
set -uo pipefail
if [[ "${1:-}" == "--stage" ]]; then
    T=${CARGO_TARGET_DIR:-target}/release
    rm -rf .device && mkdir -p .device/bench
    cp "$T/vpd" .device/vpd
    for b in rms_norm swiglu rope_kv gemm attention sampling decode_step isolation embedding kv_copy; do
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
# The server on each backend, one greedy request each: the CUDA text must equal the CPU text.
serve_text() {  # backend -> prints the completion text, or nothing
    local log; log=$(mktemp)
    $BIN serve --backend "$1" --model tests/fixtures/tiny-llama3 --draft ngram:2 --port 0 >"$log" 2>&1 &
    local pid=$! url=""
    for _ in $(seq 1 150); do
        url=$(grep -o 'http://[0-9.:]*' "$log" | head -1 || true)
        [[ -n "$url" ]] && break
        sleep 0.2
    done
    [[ -n "$url" ]] && curl -s "$url/v1/completions" -H 'content-type: application/json' \
        -d '{"prompt":[256,5,6,7],"max_tokens":24,"temperature":0,"ignore_eos":true}' |
        python3 -c 'import json,sys; print(repr(json.load(sys.stdin)["choices"][0]["text"]))'
    kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null
    cat "$log" >>"$OUT/serve.txt"
}
echo "== serve --backend cuda against --backend cpu"
CPU_TEXT=$(serve_text cpu); CUDA_TEXT=$(serve_text cuda)
echo "cpu:  $CPU_TEXT" | tee -a "$OUT/serve.txt"; echo "cuda: $CUDA_TEXT" | tee -a "$OUT/serve.txt"
if [[ -n "$CUDA_TEXT" && "$CUDA_TEXT" == "$CPU_TEXT" ]]; then echo "serve: same greedy text"; else echo "serve: DIFFERENT or missing"; status=1; fi
if [[ "${VPD_SKIP_BENCH:-0}" != 1 ]]; then
    echo "== benches"
    for b in .device/bench/cuda_*; do
        [[ -x "$b" ]] || continue
        "$b" --bench 2>&1 | tee "$OUT/$(basename $b).txt" | grep -E "GB/s|TFLOP|skipping|panicked|error" || status=1
    done
fi
echo "gpu-check.sh: exit $status"
exit $status
