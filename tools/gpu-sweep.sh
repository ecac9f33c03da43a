#!/usr/bin/env bash
# The rate sweep of issue 5 on the GPU machine, at Llama-3-8B / Llama-3.2-1B shapes with
# random weights drawn on the device and labelled synthetic acceptance: `single-lane` beside
# `three-lane-adaptive` on identical inputs.
# Here:   bash tools/gpu-sweep.sh --stage   (release build with CUDA, a tokenizer-only
#         checkpoint and a 1500-conversation ShareGPT subset into .device/), then the device
#         tool with carry [".device"] and command `bash tools/gpu-sweep.sh`.
# There:  writes bench.json / bench.md / bench.png under $OUT/$VPD_TAG (default sweep) and
#         prints the table; VPD_EXTRA adds bench flags (e.g. "--decode-sms 80"), VPD_DATASET
#         picks the prompts (default the 1500-conversation subset), VPD_MAX_RUNNING the
#         requests holding KV cache at once (default 32), VPD_NUM_DRAFT the L (default 4),
#         VPD_BIN the binary (default .device/vpd).
set -uo pipefail
if [[ "${1:-}" == "--stage" ]]; then
    T=${CARGO_TARGET_DIR:-target}/release
    cargo build --release --bin vpd || exit 1
    mkdir -p .device && cp "$T/vpd" .device/vpd && strip .device/vpd
    # Random-weight models have no tokenizer: prompt lengths use the default model's, taken
    # from a throwaway tiny checkpoint that carries it (the GGUF itself is too big to carry).
    rm -rf .device/tok && "$T/vpd" make-model --preset tiny-llama3 --dtype bf16 \
        --vocab-from assets/SmolLM2-135M-Instruct.Q4_1.gguf --out .device/tok >/dev/null || exit 1
    python3 - <<'PY' || exit 1
import json
dec, src = json.JSONDecoder(), open("assets/ShareGPT_V3_unfiltered_cleaned_split.json").read(30_000_000)
i, out = src.index("[") + 1, []
while len(out) < 1500:
    while src[i] in " \n\r\t,":
        i += 1
    obj, i = dec.raw_decode(src, i)
    out.append(obj)
json.dump(out, open(".device/sharegpt-1500.json", "w"))
# A long-prompt subset (first human turn of 2000-3800 characters, about 500-1000 tokens), for
# the mixed load where prefill chunks sit beside decoding: VPD_DATASET=.device/sharegpt-long.json.
src = open("assets/ShareGPT_V3_unfiltered_cleaned_split.json").read(60_000_000)
i, out = src.index("[") + 1, []
while len(out) < 300 and i < len(src) - 1_000_000:
    while src[i] in " \n\r\t,":
        i += 1
    obj, i = dec.raw_decode(src, i)
    conv = obj.get("conversations", [])
    if len(conv) >= 2 and conv[0].get("from") == "human" and 2000 <= len(conv[0].get("value", "")) <= 3800:
        out.append(obj)
json.dump(out, open(".device/sharegpt-long.json", "w"))
# With VPD_STAGE_BIG=1, 4000 conversations (about 1900 usable requests) for high-load sweeps
# that need hundreds of requests: VPD_DATASET=.device/sharegpt-4000.json.
import os
if os.environ.get("VPD_STAGE_BIG") == "1":
    src = open("assets/ShareGPT_V3_unfiltered_cleaned_split.json").read(90_000_000)
    i, out = src.index("[") + 1, []
    while len(out) < 4000:
        while src[i] in " \n\r\t,":
            i += 1
        obj, i = dec.raw_decode(src, i)
        out.append(obj)
    json.dump(out, open(".device/sharegpt-4000.json", "w"))
PY
    du -sh .device; exit 0
fi
OUT=${OUT:-/tmp/vpd-sweep}; mkdir -p "$OUT"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/card.txt"
date -u +%FT%TZ | tee -a "$OUT/card.txt"
"${VPD_BIN:-.device/vpd}" bench --backend cuda --model random:llama3-8b --draft random:llama3.2-1b \
    --tokenizer .device/tok --dataset "${VPD_DATASET:-.device/sharegpt-1500.json}" \
    --acceptance "${VPD_ACCEPTANCE:-synthetic:0.7,0.15}" --num-draft "${VPD_NUM_DRAFT:-4}" \
    --policies "${VPD_POLICIES:-single-lane,three-lane-adaptive}" \
    --request-rates "${VPD_RATES:-2,6,10}" --num-prompts "${VPD_PROMPTS:-80}" \
    --max-output "${VPD_MAX_OUTPUT:-128}" --max-running "${VPD_MAX_RUNNING:-32}" --out "$OUT/${VPD_TAG:-sweep}" ${VPD_EXTRA:-} \
    2>&1 | tee "$OUT/${VPD_TAG:-sweep}.txt"
