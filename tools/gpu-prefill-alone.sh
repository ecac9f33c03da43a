#!/usr/bin/env bash
# Forwards of prefill alone while decoding waits: the adaptive policy at 55 req/s (1000
# requests, 128 running, the defaults) with the binary before the change that offers the
# prefill lane a forward of its own only when nothing rides (.device/vpd-old), then
# single-lane beside it with the binary after (.device/vpd), in one call.
# Here:   bash tools/gpu-sweep.sh --stage, the earlier binary as .device/vpd-old, and
#         .device/sharegpt-2200.json (as for tools/gpu-load-edge.sh).
# There:  $OUT/ceiling.txt, $OUT/ab.txt, $OUT/old.json, $OUT/new.json.
set -uo pipefail
OUT=${OUT:-/tmp/vpd-prefill-alone}; mkdir -p "$OUT"
W=$(mktemp -d)
python3 "$(dirname "$0")/gpu-ceiling.py" 2>&1 | tee "$OUT/ceiling.txt"
export VPD_DATASET=.device/sharegpt-2200.json VPD_PROMPTS=1000 VPD_RATES=55 VPD_MAX_RUNNING=128
VPD_TAG=old VPD_BIN=.device/vpd-old VPD_POLICIES=three-lane-adaptive OUT=$W bash "$(dirname "$0")/gpu-sweep.sh" >/dev/null
VPD_TAG=new VPD_POLICIES=single-lane,three-lane-adaptive OUT=$W bash "$(dirname "$0")/gpu-sweep.sh" >/dev/null
for t in old new; do cp "$W/$t/bench.json" "$OUT/$t.json"; echo "== $t"; grep -h -A1 "req/s:" "$W/$t.txt"; done | tee "$OUT/ab.txt"
