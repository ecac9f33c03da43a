#!/usr/bin/env bash
# A kernel change, checked and timed in one call: `vpd gpu-check` (every kernel against the CPU
# at odd sizes, the models against transformers and the CPU, greedy tokens CUDA = CPU), the
# loaded forwards of benches/cuda/decode_step.rs with the kernels before (cuda_decode_step_old)
# and after (cuda_decode_step), then single-lane beside three-lane-adaptive at 55 req/s
# (the highest rate single-lane sustained on an H100, docs/perf.md).
# Here:   bash tools/gpu-sweep.sh --stage (vpd, tok), the bench binaries of the two commits as
#         .device/bench/cuda_decode_step{_old,}, and .device/sharegpt-2200.json.
# There:  $OUT/ceiling.txt, check.txt, steps-old.txt, steps-new.txt, load.txt, load.json.
set -uo pipefail
OUT=${OUT:-/tmp/vpd-kernels-ab}; mkdir -p "$OUT"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
D=$(dirname "$0")
python3 "$D/gpu-ceiling.py" 2>&1 | tee "$OUT/ceiling.txt"
TMP=$(mktemp -d)
.device/vpd make-model --preset tiny-llama3 --dtype f32 --seed 3 --out "$TMP/tiny-random" >/dev/null
.device/vpd gpu-check --model tests/fixtures/tiny-llama3 --reference tests/fixtures/tiny-llama3/reference.json \
    --model "$TMP/tiny-random" --new-tokens 48 > "$OUT/check.txt" 2>&1
echo "gpu-check exit $?"; tail -n 4 "$OUT/check.txt"
# A VPD_PROFILE that names no case runs only the loaded steps and profiles nothing.
for v in old new; do
    b=.device/bench/cuda_decode_step; [[ $v == old ]] && b=${b}_old
    VPD_PROFILE=loaded-none $b --bench 2>&1 | grep loaded_step > "$OUT/steps-$v.txt"
done
paste -d'|' "$OUT/steps-old.txt" "$OUT/steps-new.txt" | awk -F'|' '{print $1; print $2}' | sed 's/NVIDIA H100 80GB HBM3 //'
W=$(mktemp -d)
VPD_TAG=load VPD_DATASET=.device/sharegpt-2200.json VPD_PROMPTS=1000 VPD_RATES=55 VPD_MAX_RUNNING=128 \
    VPD_POLICIES=single-lane,three-lane-adaptive OUT=$W bash "$D/gpu-sweep.sh" >/dev/null
cp "$W/load/bench.json" "$OUT/load.json"
grep -h "req/s:" "$W/load.txt" | tee "$OUT/load.txt"
