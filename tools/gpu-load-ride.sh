#!/usr/bin/env bash
# The lanes with prefill riding in the verify forward as single-lane mixes it (up to the
# prefill budget of prompt tokens a forward, nothing running beside the drafts), against
# single-lane, at the highest rate single-lane sustains under the high load of
# tools/gpu-load.sh (128 running, 40 req/s), on identical requests.
# Here:   as for tools/gpu-load.sh.   There: $OUT/ceiling.txt, $OUT/ride.txt (every run's
#         printed lines and bench.md tables), $OUT/ride-*.json.
set -uo pipefail
OUT=${OUT:-/tmp/vpd-load-ride}; mkdir -p "$OUT"
W=$(mktemp -d)
export VPD_DATASET=${VPD_DATASET:-.device/sharegpt-4000.json} VPD_PROMPTS=${VPD_PROMPTS:-600}
export VPD_RATES=${VPD_RIDE_RATE:-40} VPD_MAX_RUNNING=${VPD_MAX_RUNNING:-128}
python3 "$(dirname "$0")/gpu-ceiling.py" 2>&1 | tee "$OUT/ceiling.txt"
sweep() { OUT=$W bash "$(dirname "$0")/gpu-sweep.sh" >/dev/null; cp "$W/$VPD_TAG/bench.json" "$OUT/$VPD_TAG.json"; }
RIDE="--prefill-thread false --prefill-ride ${VPD_RIDE:-256}"
VPD_TAG=ride-l4 VPD_POLICIES=single-lane,three-lane-adaptive VPD_EXTRA="$RIDE" sweep
VPD_TAG=ride-l2 VPD_NUM_DRAFT=2 VPD_POLICIES=single-lane,three-lane VPD_EXTRA="$RIDE" sweep
VPD_TAG=ride-tpot VPD_POLICIES=three-lane-adaptive VPD_EXTRA="$RIDE --controller-objective tpot" sweep
for t in ride-l4 ride-l2 ride-tpot; do
    echo "== $t"; grep -h -A1 "req/s:" "$W/$t.txt"; grep -h -A8 "by each request's acceptance" "$W/$t/bench.md"
    grep -h -A4 "^Controller:" "$W/$t/bench.md" | tail -n +3
done | tee "$OUT/ride.txt"
