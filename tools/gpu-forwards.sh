#!/usr/bin/env bash
# Where a loaded forward's time goes.
# benches/cuda/decode_step.rs (batch-1 steps, then the verify and draft forwards of a loaded
# runtime against max(byte floor, FLOP floor)) and benches/cuda/gemm.rs (cuBLAS at 16-640
# rows, every 8B and 1B projection), with tools/gpu-gemm-torch.py (PyTorch's `linear`, the
# cuBLASLt reference) at the same shapes.
# Here:   cargo bench --no-run --bench cuda_gemm --bench cuda_decode_step and copy the two
#         binaries to .device/bench/cuda_gemm and .device/bench/cuda_decode_step (stripped).
# There:  $OUT/ceiling.txt, step.txt, gemm.txt, torch.txt.
set -uo pipefail
OUT=${OUT:-/tmp/vpd-forwards}; mkdir -p "$OUT"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
D=$(dirname "$0")
python3 "$D/gpu-ceiling.py" 2>&1 | tee "$OUT/ceiling.txt"
.device/bench/cuda_decode_step --bench > "$OUT/step.txt" 2>&1
# Criterion's own lines left out: the sweep prints its table.
.device/bench/cuda_gemm --bench 2>&1 | grep -v "^Benchmarking\|time:\|thrpt:\|change:\|outlier\|^Found\|Performance\|No change\|^ *[0-9]* ([0-9.]*%)" > "$OUT/gemm.txt"
python3 "$D/gpu-gemm-torch.py" > "$OUT/torch.txt" 2>&1
grep -h "loaded_step\|gemm rate" "$OUT/step.txt" "$OUT/gemm.txt"
