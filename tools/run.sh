#!/usr/bin/env bash
# `make run`: the main job on the embedded default model (SmolLM2-135M-Instruct, CPU unless
# VPD_BACKEND=cuda), in two parts, both printing their table and writing JSON/Markdown/PNG:
#  1. the in-process benchmark: the four policies side by side on identical ShareGPT requests
#     over a short Poisson sweep (bench-out/);
#  2. the server: `vpd serve` on a free loopback port, and `vpd bench --url` against it over
#     streaming HTTP (bench-out/http/), then SIGTERM and a clean drain.
set -euo pipefail
VPD=${VPD:-target/release/vpd}
OUT=${OUT:-bench-out}
RATES=${VPD_RATES:-0.5,2}
PROMPTS=${VPD_PROMPTS:-10}
MAX_OUTPUT=${VPD_MAX_OUTPUT:-32}

echo "== 1/2 in-process: nospec, single-lane, three-lane, three-lane-adaptive"
"$VPD" bench --num-prompts "$PROMPTS" --request-rates "$RATES" --max-output "$MAX_OUTPUT" \
    --draft ngram:3 --out "$OUT"

echo "== 2/2 over HTTP: vpd serve (three-lane-adaptive, ngram:3) and vpd bench --url"
LOG=$(mktemp)
"$VPD" serve --port 0 --draft ngram:3 --served-model-name smollm2 >"$LOG" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; rm -f "$LOG"' EXIT
URL=""
for _ in $(seq 1 300); do
    URL=$(grep -o 'http://[0-9.:]*' "$LOG" | head -1 || true)
    [[ -n "$URL" ]] && break
    kill -0 $SERVER 2>/dev/null || { cat "$LOG"; echo "vpd serve exited early" >&2; exit 1; }
    sleep 0.2
done
[[ -n "$URL" ]] || { cat "$LOG"; echo "vpd serve did not start" >&2; exit 1; }
echo "server at $URL"
"$VPD" bench --url "$URL" --served-model-name smollm2 --num-prompts "$PROMPTS" \
    --request-rates "$RATES" --max-output "$MAX_OUTPUT" --out "$OUT/http"
kill -TERM $SERVER
wait $SERVER
echo "server drained and stopped; reports in $OUT/ and $OUT/http/"
