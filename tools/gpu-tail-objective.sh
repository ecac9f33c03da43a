#!/usr/bin/env bash
# The tail objective at 55 req/s (1000 requests, 128 running, the defaults otherwise):
# three-lane-adaptive with the RMS-TPOT objective (the default) beside single-lane and nospec,
# then with --controller-objective tail; then the 8B forwards of a loaded serving loop (decode
# rows with prompt chunks riding, stream and engine-call timing: benches/cuda/decode_step.rs
# `mixed_steps`) and Nsight Compute's split of one mixed forward against the 64 × 2 one.
# Here:   bash tools/gpu-sweep.sh --stage, .device/sharegpt-2200.json (as for
#         tools/gpu-load-edge.sh), and the decode_step bench binary as
#         .device/bench/cuda_decode_step (cargo bench --no-run --bench cuda_decode_step).
# There:  $OUT/ceiling.txt, ab.txt, tpot.json, tail.json, loaded.txt, profile.txt and ncu's csv.
set -uo pipefail
OUT=${OUT:-/tmp/vpd-tail-objective}; mkdir -p "$OUT"
W=$(mktemp -d)
python3 "$(dirname "$0")/gpu-ceiling.py" 2>&1 | tee "$OUT/ceiling.txt"
export VPD_DATASET=.device/sharegpt-2200.json VPD_PROMPTS=1000 VPD_RATES=${VPD_RATES:-55} VPD_MAX_RUNNING=128
sweep() { OUT=$W bash "$(dirname "$0")/gpu-sweep.sh" >/dev/null; cp "$W/$VPD_TAG/bench.json" "$OUT/$VPD_TAG.json"; }
VPD_TAG=tpot VPD_POLICIES=three-lane-adaptive,single-lane,nospec sweep
VPD_TAG=tail VPD_POLICIES=three-lane-adaptive VPD_EXTRA="--controller-objective tail" sweep
for t in tpot tail; do echo "== $t"; grep -h -A1 "req/s:" "$W/$t.txt"; done | tee "$OUT/ab.txt"
[[ -x .device/bench/cuda_decode_step ]] || exit 0
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
VPD_PROFILE=loaded-none timeout 300 .device/bench/cuda_decode_step --bench 2>&1 | tee "$OUT/loaded.txt" | grep -E "loaded_step|mixed_step|loaded steps"
VPD_CASES="loaded-llama3-8b-64x1+128 loaded-llama3-8b-64x2" OUT=$OUT timeout 200 bash "$(dirname "$0")/gpu-profile-step.sh" | head -24
