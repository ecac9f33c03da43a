#!/usr/bin/env bash
# Where the TPOT tail comes from at the highest rate single-lane sustains under the high load
# of tools/gpu-load.sh (128 running, 40 req/s): the policies on identical requests with each
# request's acceptance drawn from synthetic:0.7,0.15 (the sweep's), then again with every
# request at 0.7, so that the spread of acceptance between requests can be told apart from
# interference between lanes. Every bench.md carries TPOT by each request's acceptance quartile.
# Here:   as for tools/gpu-load.sh.   There: $OUT/ceiling.txt, $OUT/tail-*.txt, $OUT/tail-*/bench.json.
set -uo pipefail
OUT=${OUT:-/tmp/vpd-load-tail}; mkdir -p "$OUT"
export VPD_DATASET=${VPD_DATASET:-.device/sharegpt-4000.json} VPD_PROMPTS=${VPD_PROMPTS:-600}
export VPD_RATES=${VPD_TAIL_RATE:-40} VPD_MAX_RUNNING=${VPD_MAX_RUNNING:-128}
python3 "$(dirname "$0")/gpu-ceiling.py" 2>&1 | tee "$OUT/ceiling.txt"
sweep() { OUT=$OUT bash "$(dirname "$0")/gpu-sweep.sh" >/dev/null; }
VPD_TAG=tail-l4 VPD_POLICIES=nospec,single-lane,three-lane-adaptive sweep
VPD_TAG=tail-tpot VPD_POLICIES=three-lane-adaptive VPD_EXTRA="--controller-objective tpot" sweep
VPD_TAG=tail-l2 VPD_NUM_DRAFT=2 VPD_POLICIES=single-lane sweep
VPD_TAG=tail-l1 VPD_NUM_DRAFT=1 VPD_POLICIES=single-lane sweep
# The lanes at a fixed L with prefill riding in the verify forward as single-lane's does,
# instead of on the prefill lane's thread beside it.
VPD_TAG=tail-l2ride VPD_NUM_DRAFT=2 VPD_POLICIES=three-lane VPD_EXTRA="--prefill-thread false --prefill-ride 512" sweep
VPD_TAG=tail-even VPD_ACCEPTANCE=synthetic:0.7 VPD_POLICIES=single-lane,three-lane-adaptive sweep
for t in l4 tpot l2 l1 l2ride even; do echo "== $t"; grep -h -A1 "req/s:" "$OUT/tail-$t.txt"; done
for t in l4 tpot l2 l1 l2ride even; do echo "== $t"; grep -h -A8 "by each request's acceptance" "$OUT/tail-$t/bench.md"; done
