#!/usr/bin/env bash
# Where a loaded forward's time goes, and what the prefill ride costs under load.
# 1. benches/cuda/decode_step.rs (batch-1 steps, then the verify and draft forwards of a loaded
#    runtime against max(byte floor, FLOP floor)) and benches/cuda/gemm.rs (cuBLAS at 16-640
#    rows, every 8B and 1B projection), with tools/gpu-gemm-torch.py (PyTorch's `linear`, the
#    cuBLASLt reference) at the same shapes.
# 2. The adaptive policy at 50 req/s, 128 running, with 128, 256 (the default, single-lane
#    beside it) and 512 prompt tokens riding a forward.
# Here:   bash tools/gpu-sweep.sh --stage, then
#         cargo bench --no-run --bench cuda_gemm --bench cuda_decode_step and copy the two
#         binaries to .device/bench/cuda_gemm and .device/bench/cuda_decode_step (stripped).
# There:  $OUT/ceiling.txt, step.txt, gemm.txt, torch.txt, ride.txt, ride-*.json.
set -uo pipefail
OUT=${OUT:-/tmp/vpd-forwards}; mkdir -p "$OUT"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
D=$(dirname "$0")
python3 "$D/gpu-ceiling.py" 2>&1 | tee "$OUT/ceiling.txt"
W=$(mktemp -d)
for r in 256 128 512; do
    pol=three-lane-adaptive; [[ $r == 256 ]] && pol=single-lane,three-lane-adaptive
    VPD_TAG=ride-$r VPD_POLICIES=$pol VPD_EXTRA="--prefill-ride $r" VPD_RATES=50 VPD_PROMPTS=600 \
        VPD_MAX_RUNNING=128 VPD_DATASET=.device/sharegpt-1500.json OUT=$W bash "$D/gpu-sweep.sh" >/dev/null
    cp "$W/ride-$r/bench.json" "$OUT/ride-$r.json"
    grep -h "req/s:" "$W/ride-$r.txt" | sed "s/^/ride $r: /"
done | tee "$OUT/ride.txt"
.device/bench/cuda_decode_step --bench > "$OUT/step.txt" 2>&1
# Criterion's own lines left out: the sweep prints its table.
.device/bench/cuda_gemm --bench 2>&1 | grep -v "^Benchmarking\|time:\|thrpt:\|change:\|outlier\|^Found\|Performance\|No change\|^ *[0-9]* ([0-9.]*%)" > "$OUT/gemm.txt"
python3 "$D/gpu-gemm-torch.py" > "$OUT/torch.txt" 2>&1
grep -h "loaded_step\|gemm rate" "$OUT/step.txt" "$OUT/gemm.txt"
