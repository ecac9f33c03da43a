#!/usr/bin/env bash
# Which requests make the TPOT tail at the highest load single-lane sustains (128 running,
# 50 req/s, the defaults of 2026-12-05), request by request (`--save-detailed`): single-lane
# beside three-lane-adaptive, then the adaptive policy with plain steps beside the drafts
# (--plain-beside-drafts), with Lmax 1 (every round one draft step) and with prefill riding
# 64 tokens a forward instead of 256 (smaller, more even rides).
# Here:   as for tools/gpu-load.sh (VPD_STAGE_BIG=1 bash tools/gpu-sweep.sh --stage).
# There:  $OUT/ceiling.txt, $OUT/detail.txt, $OUT/detail-*.json.
set -uo pipefail
OUT=${OUT:-/tmp/vpd-detail}; mkdir -p "$OUT"
W=$(mktemp -d)
python3 "$(dirname "$0")/gpu-ceiling.py" 2>&1 | tee "$OUT/ceiling.txt"
# VPD_DETAIL_TAGS picks runs by tag (default all four), e.g. "defaults beside" when device time is short.
TAGS=${VPD_DETAIL_TAGS:-defaults beside lmax1 ride64}
sweep() {
    [[ " $TAGS " == *" ${VPD_TAG#detail-} "* ]] || return 0
    OUT=$W bash "$(dirname "$0")/gpu-sweep.sh" >/dev/null; cp "$W/$VPD_TAG/bench.json" "$OUT/$VPD_TAG.json"
}
export VPD_DATASET=.device/sharegpt-4000.json VPD_PROMPTS=600 VPD_RATES=${VPD_RATES:-50} VPD_MAX_RUNNING=128
VPD_TAG=detail-defaults VPD_POLICIES=single-lane,three-lane-adaptive VPD_EXTRA="--save-detailed" sweep
VPD_TAG=detail-beside VPD_POLICIES=three-lane-adaptive VPD_EXTRA="--save-detailed --plain-beside-drafts" sweep
VPD_TAG=detail-lmax1 VPD_POLICIES=three-lane-adaptive VPD_NUM_DRAFT=1 VPD_EXTRA="--save-detailed" sweep
VPD_TAG=detail-ride64 VPD_POLICIES=three-lane-adaptive VPD_EXTRA="--save-detailed --prefill-ride 64" sweep
for t in $TAGS; do t=detail-$t; echo "== $t"; grep -h "req/s:\|serving thread" "$W/$t.txt"; done | tee "$OUT/detail.txt"
