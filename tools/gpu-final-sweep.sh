#!/usr/bin/env bash
# Issue 5's comparison with the defaults as they stand: single-lane beside three-lane-adaptive
# at 50, 55 and 60 req/s (1000 ShareGPT requests, 128 running, random 8B/1B weights, synthetic
# acceptance 0.7 ± 0.15), in one call.
# Here:   bash tools/gpu-sweep.sh --stage and .device/sharegpt-2200.json (as for
#         tools/gpu-load-edge.sh).
# There:  $OUT/ceiling.txt, $OUT/sweep.txt, $OUT/sweep.json, $OUT/sweep.md.
set -uo pipefail
OUT=${OUT:-/tmp/vpd-final-sweep}; mkdir -p "$OUT"
W=$(mktemp -d)
python3 "$(dirname "$0")/gpu-ceiling.py" 2>&1 | tee "$OUT/ceiling.txt"
VPD_TAG=sweep VPD_DATASET=.device/sharegpt-2200.json VPD_PROMPTS=1000 VPD_RATES=${VPD_RATES:-50,55,60} \
    VPD_MAX_RUNNING=128 VPD_POLICIES=single-lane,three-lane-adaptive VPD_EXTRA="--save-detailed" OUT=$W bash "$(dirname "$0")/gpu-sweep.sh" >/dev/null
cp "$W/sweep/bench.json" "$OUT/sweep.json"; cp "$W/sweep/bench.md" "$OUT/sweep.md"
grep -h -A1 "req/s:" "$W/sweep.txt" | tee "$OUT/sweep.txt"
