#!/usr/bin/env bash
# Where single-lane stops keeping up: issue 5's p99 target is set "at the highest rate that
# single-lane sustains", and the runs of 2026-12-05 took 50 req/s (sustained) and 80 (not).
# Single-lane beside three-lane-adaptive at 50-70 req/s, 1000 ShareGPT requests, 128 running,
# the defaults. A rate is sustained when single-lane's TTFT stays bounded (no queue that grows
# over the run: per-request records, `--save-detailed`) and it serves what arrives.
# Here:   bash tools/gpu-sweep.sh --stage, plus .device/sharegpt-2200.json (the first 2200
#         conversations of the assets' ShareGPT file, about 1050 usable requests).
# There:  $OUT/ceiling.txt, $OUT/edge.txt, $OUT/edge.json.
set -uo pipefail
OUT=${OUT:-/tmp/vpd-edge}; mkdir -p "$OUT"
W=$(mktemp -d)
python3 "$(dirname "$0")/gpu-ceiling.py" 2>&1 | tee "$OUT/ceiling.txt"
VPD_TAG=edge VPD_DATASET=.device/sharegpt-2200.json VPD_PROMPTS=1000 VPD_RATES=${VPD_RATES:-50,55,60,65,70} \
    VPD_MAX_RUNNING=128 VPD_POLICIES=single-lane,three-lane-adaptive VPD_EXTRA="--save-detailed" OUT=$W bash "$(dirname "$0")/gpu-sweep.sh" >/dev/null
cp "$W/edge/bench.json" "$OUT/edge.json"
grep -h "req/s:" "$W/edge.txt" | tee "$OUT/edge.txt"
