#!/usr/bin/env python3
"""Which requests make a run's TPOT tail: reads a bench.json written with `vpd bench
--save-detailed` and, for every run, compares the slowest 5% of requests by TPOT with the
rest by their own acceptance rate, output length and the load while they decoded (requests
in flight, averaged over the request's decode phase), then fits TPOT to those three by
least squares to say how much of its spread each explains.

    python3 tools/tail-by-request.py bench.json [more.json ...]
"""
import json
import math
import sys


def in_flight(reqs, t0, t1, steps=20):
    """Mean requests in flight (sent, not finished) over [t0, t1]."""
    if t1 <= t0:
        return 0.0
    total = 0
    for k in range(steps):
        t = t0 + (t1 - t0) * (k + 0.5) / steps
        total += sum(1 for r in reqs if r["send_s"] <= t <= r["send_s"] + r["e2el_ms"] / 1e3)
    return total / steps


def mean(xs):
    return sum(xs) / len(xs) if xs else float("nan")


def lstsq(rows, ys):
    """Ordinary least squares by the normal equations (a few columns: no numpy needed)."""
    n = len(rows[0])
    a = [[sum(r[i] * r[j] for r in rows) for j in range(n)] for i in range(n)]
    b = [sum(r[i] * y for r, y in zip(rows, ys)) for i in range(n)]
    for c in range(n):
        p = max(range(c, n), key=lambda i: abs(a[i][c]))
        a[c], a[p], b[c], b[p] = a[p], a[c], b[p], b[c]
        for i in range(n):
            if i != c and a[c][c]:
                f = a[i][c] / a[c][c]
                a[i] = [x - f * y for x, y in zip(a[i], a[c])]
                b[i] -= f * b[c]
    return [b[i] / a[i][i] if a[i][i] else 0.0 for i in range(n)]


def r2(rows, ys, coef):
    m = mean(ys)
    ss = sum((y - m) ** 2 for y in ys)
    res = sum((y - sum(c * x for c, x in zip(coef, r))) ** 2 for r, y in zip(rows, ys))
    return 1 - res / ss if ss else float("nan")


def report(run):
    reqs = [r for r in run.get("requests") or [] if r["error"] is None and r["tpot_ms"] is not None]
    if not reqs:
        print(f"{run['policy']} @ {run['request_rate']}: no --save-detailed requests")
        return
    for r in reqs:
        r["alpha"] = r["accepted"] / r["drafted"] if r["drafted"] else float("nan")
        start = r["send_s"] + (r["ttft_ms"] or 0) / 1e3
        r["load"] = in_flight(reqs, start, r["send_s"] + r["e2el_ms"] / 1e3)
    reqs.sort(key=lambda r: r["tpot_ms"])
    cut = max(1, len(reqs) // 20)
    tail, rest = reqs[-cut:], reqs[:-cut]
    s = run["summary"]["tpot_ms"]
    print(f"{run['policy']} @ {run['request_rate']} req/s: TPOT p50 {s['p50']:.2f} p99 {s['p99']:.2f} ms, {len(reqs)} requests")
    print(f"  {'':14} {'TPOT ms':>8} {'alpha':>6} {'out tok':>8} {'in flight':>9}")
    for name, g in (("slowest 5%", tail), ("the rest", rest)):
        a = [r["alpha"] for r in g if not math.isnan(r["alpha"])]
        print(f"  {name:14} {mean([r['tpot_ms'] for r in g]):8.2f} {mean(a):6.2f} "
              f"{mean([r['output_tokens'] for r in g]):8.1f} {mean([r['load'] for r in g]):9.1f}")
    spec = not any(math.isnan(r["alpha"]) for r in reqs)
    cols = [("1/(1+alpha)", lambda r: 1 / (1 + r["alpha"]))] if spec else []
    cols += [("1/(out-1)", lambda r: 1 / (r["output_tokens"] - 1)), ("in flight", lambda r: r["load"])]
    ys = [r["tpot_ms"] for r in reqs]
    full = [[1.0] + [f(r) for _, f in cols] for r in reqs]
    coef = lstsq(full, ys)
    print(f"  fit TPOT = {coef[0]:.2f} " + " ".join(f"+ {c:.2f}·{n}" for c, (n, _) in zip(coef[1:], cols))
          + f": R² {r2(full, ys, coef):.2f}")
    for i, (n, _) in enumerate(cols):
        rows = [[1.0, row[i + 1]] for row in full]
        c = lstsq(rows, ys)
        print(f"    {n} alone: R² {r2(rows, ys, c):.2f}")


for path in sys.argv[1:]:
    for run in json.load(open(path))["runs"]:
        report(run)
