#!/usr/bin/env bash
# One device call for the lanes (issue 5): the GPU checks (kernels, CUDA = CPU greedy tokens,
# `vpd serve --backend cuda` = CPU, which runs three-lane-adaptive with the prefill lane's
# thread), the batch-1 decode step beside the copy ceiling of the same call, the isolation
# bench (VPD_ISOLATION=0 skips it), then the rate sweep at 8B/1B shapes on identical inputs:
# single-lane and three-lane-adaptive with the prefill lane's thread (the default on CUDA),
# three-lane-adaptive with prefill on the serving thread, and three-lane-adaptive with the
# prefill lane confined to each of VPD_SWEEP_PREFILL_SMS (default 32) SMs while decode has work.
# Here:   bash tools/gpu-lanes.sh --stage   (gpu-check and gpu-sweep staging, plus the
#         decode_step bench binary), then the device tool with carry [".device"] and command
#         `bash tools/gpu-lanes.sh`.
# There:  $OUT gets log.txt (everything printed), gpu-check.json, and one JSON report per
#         sweep (fewer than the device tool's eight files).
set -uo pipefail
if [[ "${1:-}" == "--stage" ]]; then
    cargo bench --bench cuda_decode_step --bench cuda_isolation --no-run || exit 1
    bash tools/gpu-check.sh --stage || exit 1
    exec bash tools/gpu-sweep.sh --stage
fi
FINAL=${OUT:-/tmp/vpd-lanes}; mkdir -p "$FINAL"
WORK=$(mktemp -d)
{
    OUT=$WORK/check VPD_SKIP_BENCH=1 bash tools/gpu-check.sh
    echo "== decode_step (ceiling of this call)"
    .device/bench/cuda_decode_step --bench 2>&1 | grep -E "GB/s|skipped"
    if [[ "${VPD_ISOLATION:-1}" != 0 ]]; then
        echo "== isolation"
        VPD_DECODE_SMS=${VPD_DECODE_SMS:-48,80} VPD_PREFILL_SMS=${VPD_PREFILL_SMS:-24,32,48,64} \
            .device/bench/cuda_isolation --bench 2>&1
    fi
    export VPD_RATES=${VPD_RATES:-2,6,10,14} VPD_PROMPTS=${VPD_PROMPTS:-60}
    echo "== sweep: prefill lane thread on (default)"
    OUT=$WORK VPD_TAG=thread bash tools/gpu-sweep.sh
    echo "== sweep: three-lane-adaptive, prefill on the serving thread"
    OUT=$WORK VPD_TAG=inline VPD_POLICIES=three-lane-adaptive VPD_EXTRA="--prefill-thread false" bash tools/gpu-sweep.sh
    for n in ${VPD_SWEEP_PREFILL_SMS:-32}; do
        echo "== sweep: three-lane-adaptive, prefill lane confined to $n SMs while decode has work"
        OUT=$WORK VPD_TAG=confined$n VPD_POLICIES=three-lane-adaptive VPD_EXTRA="--prefill-sms $n" bash tools/gpu-sweep.sh
    done
} 2>&1 | tee "$FINAL/log.txt"
cp "$WORK/check/gpu-check.json" "$FINAL/" 2>/dev/null
for d in "$WORK"/*/bench.json; do cp "$d" "$FINAL/sweep-$(basename "$(dirname "$d")").json"; done
ls -la "$FINAL"
