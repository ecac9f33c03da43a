#!/usr/bin/env bash
# New prompts off the draft path: the adaptive policy at 55 req/s (1000 requests, 128 running,
# the defaults) with the binary before the decode lane answered a new prompt's first draft
# with an empty one and prefilled the drafter between batches (.device/vpd-old), then the
# binary after (.device/vpd) with single-lane and nospec beside it, then both policies at
# 50 req/s, in one call.
# Here:   bash tools/gpu-sweep.sh --stage, the earlier binary as .device/vpd-old, and
#         .device/sharegpt-2200.json (as for tools/gpu-load-edge.sh).
# There:  $OUT/ceiling.txt, $OUT/ab.txt, $OUT/old.json, $OUT/new.json, $OUT/new-50.json.
set -uo pipefail
OUT=${OUT:-/tmp/vpd-prompts-off-path}; mkdir -p "$OUT"
W=$(mktemp -d)
python3 "$(dirname "$0")/gpu-ceiling.py" 2>&1 | tee "$OUT/ceiling.txt"
export VPD_DATASET=.device/sharegpt-2200.json VPD_PROMPTS=1000 VPD_RATES=55 VPD_MAX_RUNNING=128
sweep() { OUT=$W bash "$(dirname "$0")/gpu-sweep.sh" >/dev/null; cp "$W/$VPD_TAG/bench.json" "$OUT/$VPD_TAG.json"; }
VPD_TAG=old VPD_BIN=.device/vpd-old VPD_POLICIES=three-lane-adaptive sweep
VPD_TAG=new VPD_POLICIES=three-lane-adaptive,single-lane,nospec sweep
VPD_TAG=new-50 VPD_RATES=50 VPD_POLICIES=three-lane-adaptive,single-lane sweep
for t in old new new-50; do echo "== $t"; grep -h -A1 "req/s:" "$W/$t.txt"; done | tee "$OUT/ab.txt"
