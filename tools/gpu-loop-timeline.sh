#!/usr/bin/env bash
# Where the serving loop's device time goes (Nsight Systems, CUDA trace): nospec and the
# adaptive policy at 55 req/s, 400 requests, 128 running, the defaults; the loaded middle of
# each run (from 6 to 1 s before its end). A loaded forward in the loop took about 11 ms where
# benches/cuda/decode_step.rs times 8.8 ms for its rows (docs/perf.md): is the device idle
# between kernels (host-bound), or are the loop's kernels slower than the bench's?
# Here:   bash tools/gpu-sweep.sh --stage and .device/sharegpt-2200.json (as for
#         tools/gpu-load-edge.sh).
# There:  $OUT/timeline.txt (tools/nsys-summary.py per policy).
set -uo pipefail
OUT=${OUT:-/tmp/vpd-timeline}; mkdir -p "$OUT"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
NSYS=$(command -v nsys || ls /usr/local/cuda/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys /usr/local/cuda*/nsight-systems*/bin/nsys 2>/dev/null | head -1)
[[ -n "$NSYS" ]] || { echo "no nsys on this machine" | tee "$OUT/timeline.txt"; exit 1; }
W=$(mktemp -d)
for p in ${VPD_POLICIES:-nospec three-lane-adaptive}; do
    "$NSYS" profile -t cuda --force-overwrite true -o "$W/$p" .device/vpd bench --backend cuda \
        --model random:llama3-8b --draft random:llama3.2-1b --tokenizer .device/tok \
        --dataset .device/sharegpt-2200.json --acceptance synthetic:0.7,0.15 --num-draft 4 \
        --policies "$p" --request-rates 55 --num-prompts 400 --max-output 128 --max-running 128 \
        --out "$W/bench-$p" > "$W/$p.log" 2>&1
    "$NSYS" export --type sqlite --force-overwrite true -o "$W/$p.sqlite" "$W/$p.nsys-rep" > /dev/null 2>&1
    { echo "== $p"; grep -h -A1 "req/s:" "$W/$p.log"; python3 "$(dirname "$0")/nsys-summary.py" "$W/$p.sqlite"; } 2>&1 | tee -a "$OUT/timeline.txt"
done
