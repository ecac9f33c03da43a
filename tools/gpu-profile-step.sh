#!/usr/bin/env bash
# Device time by kernel of one loaded forward (benches/cuda/decode_step.rs, `loaded_steps`):
# Nsight Compute with the one metric gpu__time_duration and the clocks left alone
# (--clock-control none), on the cases named in VPD_CASES (default the 8B verify of 64
# sequences × 2 tokens and the 1B draft step of 64 sequences, at 256 cached positions).
# Here:   cargo bench --no-run --bench cuda_decode_step, copy the binary (stripped) to
#         .device/bench/cuda_decode_step.
# There:  $OUT/<case>.csv (ncu's rows) and $OUT/profile.txt (time by kernel, largest first).
set -uo pipefail
OUT=${OUT:-/tmp/vpd-profile}; mkdir -p "$OUT"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
for c in ${VPD_CASES:-loaded-llama3-8b-64x2 loaded-llama3.2-1b-64x1}; do
    VPD_PROFILE=$c timeout 240 "$NCU" --clock-control none --profile-from-start off \
        --metrics gpu__time_duration.sum --csv .device/bench/cuda_decode_step --bench > "$OUT/$c.csv" 2>&1
    python3 - "$OUT/$c.csv" <<'PY'
import csv, re, sys
lines = open(sys.argv[1]).read().splitlines()
head = next((i for i, l in enumerate(lines) if l.startswith('"ID"')), None)
rows = [] if head is None else [r for r in csv.DictReader(lines[head:]) if r.get("Metric Name") == "gpu__time_duration.sum"]
by = {}
for r in rows:
    name = re.sub(r"[<(].*", "", r["Kernel Name"]).strip()
    scale = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3}.get(r["Metric Unit"], 1.0)
    t, n = by.get(name, (0.0, 0))
    by[name] = (t + float(r["Metric Value"].replace(",", "")) * scale, n + 1)
total = sum(t for t, _ in by.values())
print(f"== {sys.argv[1].rsplit('/', 1)[-1]}: {len(rows)} kernels, {total / 1e3:.3f} ms of kernel time")
for name, (t, n) in sorted(by.items(), key=lambda kv: -kv[1][0]):
    print(f"{t / 1e3:8.3f} ms {100 * t / max(total, 1e-9):5.1f}%  {n:4d}x  {name}")
PY
done | tee "$OUT/profile.txt"
