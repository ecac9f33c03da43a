#!/usr/bin/env bash
# The defaults of 2026-12-05 (prefill riding on top of the verify forwards, the TPOT objective)
# with no flags: single-lane beside three-lane-adaptive at the high load of tools/gpu-load.sh
# (128 running, 40 and 50 req/s: single-lane served 54.8 at 80), then on the long-prompt subset (50 requests of about 680 prompt
# tokens, 8 req/s, 32 running, as in docs/perf.md "Lane threads"), where the prefill lane's
# thread had paid, with the thread as the third run.
# Here:   as for tools/gpu-load.sh, with .device/sharegpt-long.json staged too.
# There:  $OUT/ceiling.txt, $OUT/defaults.txt, $OUT/def-*.json.
set -uo pipefail
OUT=${OUT:-/tmp/vpd-defaults}; mkdir -p "$OUT"
W=$(mktemp -d)
python3 "$(dirname "$0")/gpu-ceiling.py" 2>&1 | tee "$OUT/ceiling.txt"
sweep() { OUT=$W bash "$(dirname "$0")/gpu-sweep.sh" >/dev/null; cp "$W/$VPD_TAG/bench.json" "$OUT/$VPD_TAG.json"; }
VPD_TAG=def-40 VPD_DATASET=.device/sharegpt-4000.json VPD_PROMPTS=600 VPD_RATES=40,50 VPD_MAX_RUNNING=128 \
    VPD_POLICIES=single-lane,three-lane-adaptive sweep
export VPD_DATASET=.device/sharegpt-long.json VPD_PROMPTS=50 VPD_RATES=8 VPD_MAX_RUNNING=32
VPD_TAG=def-long VPD_POLICIES=single-lane,three-lane-adaptive sweep
VPD_TAG=def-long-thread VPD_POLICIES=three-lane-adaptive VPD_EXTRA="--prefill-thread" sweep
for t in def-40 def-long def-long-thread; do echo "== $t"; grep -h "req/s:" "$W/$t.txt"; done | tee "$OUT/defaults.txt"
