#!/usr/bin/env python3
"""Where a serving run's device time goes, from an Nsight Systems SQLite export (nsys export
--type sqlite): the span from the first kernel to the last, the time some kernel ran (the union
over streams), the idle gaps by size, kernels by total time, copies by direction, and the host
API calls that took the longest in all.

    python3 tools/nsys-summary.py run.sqlite [--window A B]

--window keeps the kernels that start between A and B seconds before the last kernel ends
(default 6 and 1): the loaded middle of a run, without the weight fill and warm-up before it
or the drain after."""
import sqlite3
import sys

path = sys.argv[1]
a_s, b_s = (float(x) for x in sys.argv[sys.argv.index("--window") + 1:][:2]) if "--window" in sys.argv else (6.0, 1.0)
db = sqlite3.connect(path)
tables = {r[0] for r in db.execute("select name from sqlite_master where type='table'")}
names = dict(db.execute("select id, value from StringIds")) if "StringIds" in tables else {}

k = db.execute("select start, end, shortName from CUPTI_ACTIVITY_KIND_KERNEL order by start").fetchall()
if not k:
    sys.exit("no kernels in the export")
last = max(r[1] for r in k)
t0, t1 = last - int(a_s * 1e9), last - int(b_s * 1e9)
k = [r for r in k if t0 <= r[0] < t1]
span = k[-1][1] - k[0][0]
busy, gaps, cur_s, cur_e = 0, [], k[0][0], k[0][1]
for s, e, _ in k[1:]:
    if s > cur_e:
        busy += cur_e - cur_s
        gaps.append(s - cur_e)
        cur_s, cur_e = s, e
    else:
        cur_e = max(cur_e, e)
busy += cur_e - cur_s
print(f"kernels: {len(k)} over {span / 1e9:.3f} s; some kernel running {busy / 1e9:.3f} s ({100 * busy / span:.1f}%), idle {(span - busy) / 1e9:.3f} s")
for lo, hi in [(0, 5e3), (5e3, 2e4), (2e4, 1e5), (1e5, 1e6), (1e6, 1e12)]:
    g = [x for x in gaps if lo <= x < hi]
    print(f"  gaps {lo / 1e3:>6.0f}-{hi / 1e3:<8.0f} µs: {len(g):7d}, {sum(g) / 1e9:.3f} s")
by = {}
for s, e, n in k:
    name = names.get(n, str(n))
    t, c = by.get(name, (0, 0))
    by[name] = (t + e - s, c + 1)
total = sum(t for t, _ in by.values())
print(f"kernel time {total / 1e9:.3f} s (summed over streams); by kernel:")
for name, (t, c) in sorted(by.items(), key=lambda kv: -kv[1][0])[:18]:
    print(f"  {t / 1e9:7.3f} s {100 * t / total:5.1f}% {c:8d}x {t / c / 1e3:8.1f} µs  {name[:90]}")
if "CUPTI_ACTIVITY_KIND_MEMCPY" in tables:
    kinds = {1: "HtoD", 2: "DtoH", 8: "DtoD", 10: "PtoP"}
    print("copies:")
    for kind, n, t, b in db.execute(
        "select copyKind, count(*), sum(end - start), sum(bytes) from CUPTI_ACTIVITY_KIND_MEMCPY where start >= ? and start < ? group by copyKind", (t0, t1)
    ):
        print(f"  {kinds.get(kind, kind)}: {n} copies, {t / 1e9:.3f} s, {b / 1e6:.1f} MB")
for table in ("CUPTI_ACTIVITY_KIND_RUNTIME", "CUPTI_ACTIVITY_KIND_DRIVER"):
    if table in tables:
        print(f"{table.rsplit('_', 1)[-1].lower()} API, by total time:")
        rows = db.execute(
            f"select nameId, count(*), sum(end - start) from {table} where start >= ? and start < ? group by nameId order by 3 desc limit 10", (t0, t1)
        ).fetchall()
        for n, c, t in rows:
            print(f"  {t / 1e9:7.3f} s {c:8d}x {t / c / 1e3:8.1f} µs  {names.get(n, n)}")
