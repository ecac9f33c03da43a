#!/usr/bin/env bash
# The high-load sweep of issue 5 on the GPU machine: single-lane (fixed L) beside
# three-lane-adaptive with vLLM's scale of batch (VPD_MAX_RUNNING, default 128 requests holding
# KV cache, where a fixed L = 4 puts the verify forward past the compute ridge) and hundreds of
# requests, at 8B/1B shapes with random weights and labelled synthetic acceptance. This is the
# load where TurboSpec's argument (speculation helps at low load and hurts at high load) is
# tested, and where a fixed-L baseline's TPOT tail grows with the rate.
# Here:   VPD_STAGE_BIG=1 bash tools/gpu-sweep.sh --stage, then the device tool with
#         carry [".device"] (or a packed archive of it) and command `bash tools/gpu-load.sh`.
# There:  $OUT/ceiling.txt (copy and GEMM rates of this call), $OUT/load.txt (the tables) and
#         $OUT/load/bench.json.
set -uo pipefail
OUT=${OUT:-/tmp/vpd-load}
export VPD_DATASET=${VPD_DATASET:-.device/sharegpt-4000.json}
export VPD_PROMPTS=${VPD_PROMPTS:-600}
export VPD_RATES=${VPD_RATES:-20,40,80}
export VPD_MAX_RUNNING=${VPD_MAX_RUNNING:-128}
export VPD_TAG=${VPD_TAG:-load}
mkdir -p "$OUT"
python3 "$(dirname "$0")/gpu-ceiling.py" 2>&1 | tee "$OUT/ceiling.txt"
OUT=$OUT bash "$(dirname "$0")/gpu-sweep.sh"
