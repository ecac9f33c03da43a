#!/usr/bin/env bash
# One device call for the sampled path on the GPU (issue 4: the fused sampling and chain
# verification kernels in the engine): the GPU checks (kernels, forward_pick = host picks,
# CUDA = CPU greedy tokens, serve), the sampling benches, then sampled sweeps at the 8B/1B
# shapes with tokens chosen on the device beside the same runs with `--pick-on-host` (every
# step's logits rows copied to the host and chosen there: the same tokens), and a greedy sweep.
# Here:   bash tools/gpu-sampled.sh --stage   (gpu-check and gpu-sweep staging), then pack
#         .device into one archive if it is over the device tool's 64 MiB (docs/gpu-runs.md),
#         and call the device tool with command `bash tools/gpu-sampled.sh`.
# There:  $OUT gets log.txt (everything printed), gpu-check.json and one JSON report per sweep
#         packed as sweeps.tgz (the device tool returns at most eight files).
set -uo pipefail
if [[ "${1:-}" == "--stage" ]]; then
    bash tools/gpu-check.sh --stage || exit 1
    bash tools/gpu-sweep.sh --stage || exit 1
    du -sh .device; exit 0
fi
FINAL=${OUT:-/tmp/vpd-sampled}; mkdir -p "$FINAL"
WORK=$(mktemp -d)
sweep() {  # binary tag policies rates extra...
    local bin=$1 tag=$2 pol=$3 rates=$4; shift 4
    echo "== sweep $tag ($bin): $pol @ $rates req/s $*"
    timeout "${VPD_SWEEP_TIMEOUT:-150}" "$bin" bench --backend cuda --model random:llama3-8b --draft random:llama3.2-1b \
        --tokenizer .device/tok --dataset .device/sharegpt-1500.json --num-draft 4 \
        --policies "$pol" --request-rates "$rates" --num-prompts "${VPD_PROMPTS:-40}" \
        --max-output "${VPD_MAX_OUTPUT:-64}" --max-running 32 --out "$WORK/$tag" "$@" 2>&1 | grep -v "^\s*$" | tail -n 12
}
{
    OUT=$WORK/check VPD_SKIP_BENCH=1 bash tools/gpu-check.sh
    grep -E "sample_rows|chain verify by rows|forward_pick|argmax on device|FAIL" "$WORK/check/gpu-check.txt" | head -40
    echo "== sampling bench"
    .device/bench/cuda_sampling --bench 2>&1 | grep -E "GB/s|bound"
    SAMPLED=(--temperature "${VPD_T:-1.0}")
    sweep .device/vpd device-t1 nospec,three-lane "${VPD_RATES:-4}" "${SAMPLED[@]}"
    sweep .device/vpd host-t1 nospec,three-lane "${VPD_RATES:-4}" "${SAMPLED[@]}" --pick-on-host
    sweep .device/vpd device-topp nospec,three-lane "${VPD_RATES:-4}" --temperature 0.8 --top-p 0.95
    sweep .device/vpd device-t1-syn single-lane,three-lane-adaptive "${VPD_RATES:-4}" "${SAMPLED[@]}" --acceptance synthetic:0.7,0.15
    sweep .device/vpd greedy-syn single-lane,three-lane-adaptive 6 --acceptance synthetic:0.7,0.15
} 2>&1 | tee "$FINAL/log.txt"
cp "$WORK/check/gpu-check.json" "$FINAL/" 2>/dev/null
tar -czf "$FINAL/sweeps.tgz" -C "$WORK" $(cd "$WORK" && ls -d */ 2>/dev/null | grep -v check) check/gpu-check.txt 2>/dev/null
ls -la "$FINAL"
