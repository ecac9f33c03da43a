#!/usr/bin/env bash
# One device call for the lane threads (issue 5): the GPU checks (kernels, CUDA = CPU greedy
# tokens, `vpd serve --backend cuda` = CPU, which runs three-lane-adaptive with the prefill
# lane's thread), the batch-1 decode step beside the copy ceiling of the same call, then the
# rate sweep at 8B/1B shapes: single-lane and three-lane-adaptive with the prefill lane's
# thread (the default on CUDA), and three-lane-adaptive without it, on identical inputs.
# Here:   bash tools/gpu-lanes.sh --stage   (gpu-check and gpu-sweep staging, plus the
#         decode_step bench binary), then the device tool with carry [".device"] and command
#         `bash tools/gpu-lanes.sh`.
# There:  $OUT gets log.txt (everything printed), gpu-check.json, and one JSON report per
#         sweep (fewer than the device tool's eight files).
set -uo pipefail
if [[ "${1:-}" == "--stage" ]]; then
    cargo bench --bench cuda_decode_step --no-run || exit 1
    bash tools/gpu-check.sh --stage || exit 1
    exec bash tools/gpu-sweep.sh --stage
fi
FINAL=${OUT:-/tmp/vpd-lanes}; mkdir -p "$FINAL"
WORK=$(mktemp -d)
{
    OUT=$WORK/check VPD_SKIP_BENCH=1 bash tools/gpu-check.sh
    echo "== decode_step (ceiling of this call)"
    .device/bench/cuda_decode_step --bench 2>&1 | grep -E "GB/s|skipped"
    export VPD_RATES=${VPD_RATES:-2,6,10,14} VPD_PROMPTS=${VPD_PROMPTS:-60}
    echo "== sweep: prefill lane thread on (default)"
    OUT=$WORK VPD_TAG=thread bash tools/gpu-sweep.sh
    echo "== sweep: three-lane-adaptive, prefill on the serving thread"
    OUT=$WORK VPD_TAG=inline VPD_POLICIES=three-lane-adaptive VPD_EXTRA="--prefill-thread false" bash tools/gpu-sweep.sh
} 2>&1 | tee "$FINAL/log.txt"
cp "$WORK/check/gpu-check.json" "$FINAL/" 2>/dev/null
for t in thread inline; do cp "$WORK/$t/bench.json" "$FINAL/sweep-$t.json" 2>/dev/null; done
ls -la "$FINAL"
