#!/usr/bin/env bash
# Where the adaptive policy's time goes at the highest rate single-lane sustains under the
# high load of tools/gpu-load.sh (128 running, 40 req/s): single-lane, three-lane with a fixed
# L = 4, and three-lane-adaptive on identical requests, then both fixed policies at L = 2, so
# that the controller's choice can be told apart from the lanes' own cost.
# Here:   as for tools/gpu-load.sh.   There: $OUT/ceiling.txt, $OUT/ab-l4.txt, $OUT/ab-l2.txt.
set -uo pipefail
OUT=${OUT:-/tmp/vpd-load-ab}; mkdir -p "$OUT"
export VPD_DATASET=${VPD_DATASET:-.device/sharegpt-4000.json} VPD_PROMPTS=${VPD_PROMPTS:-600}
export VPD_RATES=${VPD_AB_RATE:-40} VPD_MAX_RUNNING=${VPD_MAX_RUNNING:-128}
python3 "$(dirname "$0")/gpu-ceiling.py" 2>&1 | tee "$OUT/ceiling.txt"
VPD_TAG=ab-l4 VPD_POLICIES=single-lane,three-lane,three-lane-adaptive OUT=$OUT bash "$(dirname "$0")/gpu-sweep.sh" >/dev/null
VPD_TAG=ab-l2 VPD_NUM_DRAFT=2 VPD_POLICIES=single-lane,three-lane OUT=$OUT bash "$(dirname "$0")/gpu-sweep.sh" >/dev/null
grep -h -A1 "req/s:" "$OUT"/ab-l4.txt "$OUT"/ab-l2.txt
