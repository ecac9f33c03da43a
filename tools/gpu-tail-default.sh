#!/usr/bin/env bash
# The tail objective with the cost prior of the measured H100 forwards, against the RMS-TPOT
# objective, single-lane and nospec, at 55 req/s (1000 requests, 128 running), then the tail
# objective beside single-lane at 50 req/s, in one call.
# Here:   bash tools/gpu-sweep.sh --stage and .device/sharegpt-2200.json (as for
#         tools/gpu-load-edge.sh).
# There:  $OUT/ceiling.txt, $OUT/ab.txt, $OUT/r55.json, $OUT/r50.json.
set -uo pipefail
OUT=${OUT:-/tmp/vpd-tail-default}; mkdir -p "$OUT"
W=$(mktemp -d)
python3 "$(dirname "$0")/gpu-ceiling.py" 2>&1 | tee "$OUT/ceiling.txt"
export VPD_DATASET=.device/sharegpt-2200.json VPD_PROMPTS=1000 VPD_MAX_RUNNING=128
sweep() { OUT=$W bash "$(dirname "$0")/gpu-sweep.sh" >/dev/null; cp "$W/$VPD_TAG/bench.json" "$OUT/$VPD_TAG.json"; }
VPD_TAG=r55 VPD_RATES=55 VPD_POLICIES=three-lane-adaptive,single-lane,nospec VPD_EXTRA="--controller-objective tail" sweep
VPD_TAG=r55-tpot VPD_RATES=55 VPD_POLICIES=three-lane-adaptive VPD_EXTRA="--controller-objective tpot" sweep
VPD_TAG=r50 VPD_RATES=50 VPD_POLICIES=three-lane-adaptive,single-lane VPD_EXTRA="--controller-objective tail" sweep
for t in r55 r55-tpot r50; do echo "== $t"; grep -h -A1 "req/s:" "$W/$t.txt"; done | tee "$OUT/ab.txt"
