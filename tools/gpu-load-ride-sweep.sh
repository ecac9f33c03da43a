#!/usr/bin/env bash
# The high-load sweep of tools/gpu-load.sh (128 running; 20, 40 and 80 req/s) with the
# three-lane policies' prefill riding in the verify forward (`--prefill-thread false
# --prefill-ride 256`): single-lane and the adaptive policy under both controller objectives.
# Here:   as for tools/gpu-load.sh.   There: $OUT/ceiling.txt, $OUT/sweep.txt, $OUT/ride-*.json.
set -uo pipefail
OUT=${OUT:-/tmp/vpd-ride-sweep}; mkdir -p "$OUT"
W=$(mktemp -d)
export VPD_DATASET=${VPD_DATASET:-.device/sharegpt-4000.json} VPD_PROMPTS=${VPD_PROMPTS:-600}
export VPD_RATES=${VPD_RATES:-20,40,80} VPD_MAX_RUNNING=${VPD_MAX_RUNNING:-128}
python3 "$(dirname "$0")/gpu-ceiling.py" 2>&1 | tee "$OUT/ceiling.txt"
RIDE="--prefill-thread false --prefill-ride ${VPD_RIDE:-256}"
sweep() { OUT=$W bash "$(dirname "$0")/gpu-sweep.sh" >/dev/null; cp "$W/$VPD_TAG/bench.json" "$OUT/$VPD_TAG.json"; }
VPD_TAG=ride-goodput VPD_POLICIES=single-lane,three-lane-adaptive VPD_EXTRA="$RIDE" sweep
VPD_TAG=ride-tpot VPD_POLICIES=three-lane-adaptive VPD_EXTRA="$RIDE --controller-objective tpot" sweep
for t in ride-goodput ride-tpot; do echo "== $t"; grep -h "req/s:" "$W/$t.txt"; done | tee "$OUT/sweep.txt"
