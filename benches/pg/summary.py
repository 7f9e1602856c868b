#!/usr/bin/env python3
"""The tables of benches/pg_run, from the files it leaves in its work directory.

  summary.py hist-diff BEFORE AFTER CASE ROUND   one JSON line: the buckets of the histogram
                                                 feedgraph_replication_apply_delay_seconds
                                                 that grew between two /metrics scrapes
  summary.py report WORK                         the markdown tables (medians over rounds)

Quantiles of a histogram are interpolated linearly inside the bucket that holds them (the
first bucket starts at 0); one beyond the last finite bound is reported as "> bound".
"""
import json
import re
import statistics
import sys

METRIC = "feedgraph_replication_apply_delay_seconds_bucket"


def buckets(path):
    """{le: cumulative count} of the apply-delay histogram in a /metrics scrape."""
    out = {}
    with open(path) as f:
        for line in f:
            if not line.startswith(METRIC):
                continue
            m = re.search(r'le="([^"]+)"\}\s+(\S+)', line)
            if m:
                le = float("inf") if m.group(1) == "+Inf" else float(m.group(1))
                out[le] = out.get(le, 0.0) + float(m.group(2))
    return out


def quantile(cum, q):
    """Quantile q of cumulative buckets [(le, count)], by linear interpolation."""
    total = cum[-1][1] if cum else 0
    if total <= 0:
        return None
    want = q * total
    lo_le, lo_n = 0.0, 0.0
    for le, n in cum:
        if n >= want:
            if le == float("inf"):
                return f"> {lo_le * 1000:g} ms"
            frac = (want - lo_n) / (n - lo_n) if n > lo_n else 1.0
            return (lo_le + frac * (le - lo_le)) * 1000
        lo_le, lo_n = le, n
    return None


def hist_diff(before, after, case, rnd):
    b, a = buckets(before), buckets(after)
    diff = sorted((le, a[le] - b.get(le, 0.0)) for le in a)
    print(json.dumps({"case": case, "round": rnd, "buckets": diff}))


def fmt_ms(v):
    if v is None:
        return "–"
    if isinstance(v, str):
        return v
    return f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def med(xs):
    return statistics.median(xs) if xs else None


def read_tsv(path):
    try:
        with open(path) as f:
            return [line.rstrip("\n").split("\t") for line in f if line.strip()]
    except FileNotFoundError:
        return []


def meta(work):
    out = {}
    for row in read_tsv(f"{work}/meta.tsv"):
        if len(row) >= 2:
            out[row[0]] = row[1]
    return out


SIDES = [
    ("sled", "sled"),
    ("pg1", "PostgreSQL, 1 replica"),
    ("pgpool64", "PostgreSQL, 1 replica, pool_size 64"),
    ("pg2", "PostgreSQL, 2 replicas (load split)"),
    ("pgfollow", "PostgreSQL, load on A, B following"),
]


def report(work):
    m = meta(work)
    # Submits: side, round, conns, rps, p50, p99, errors.
    sub = {}
    for side, _rnd, conns, rps, p50, p99, err in read_tsv(f"{work}/submits.tsv"):
        sub.setdefault((side, int(conns)), []).append(
            (float(rps), float(p50), float(p99), int(err)))
    anchor = {}
    for _rnd, clients, tps, p50, p99 in read_tsv(f"{work}/anchor.tsv"):
        anchor.setdefault(int(clients), []).append((float(tps), float(p50), float(p99)))

    def cell(runs):
        if not runs:
            return "–"
        rps = med([r[0] for r in runs])
        errs = sum(r[3] for r in runs) if len(runs[0]) > 3 else 0
        e = f", {errs} errors" if errs else ""
        return (f"{rps:.0f} ({fmt_ms(med([r[1] for r in runs]))} / "
                f"{fmt_ms(med([r[2] for r in runs]))}{e})")

    rounds = max((len(v) for v in sub.values()), default=0)
    print(f"Durable `POST /feedback`, requests/s (p50 / p99 ms), median of {rounds} rounds:\n")
    used = [s for s in SIDES if any(k[0] == s[0] for k in sub)]
    print("| connections | " + " | ".join(label for _, label in used) + " |")
    print("|---" * (len(used) + 1) + "|")
    for conns in sorted({k[1] for k in sub}):
        print(f"| {conns} | " + " | ".join(cell(sub.get((s, conns), [])) for s, _ in used) + " |")

    if anchor:
        print("\nThe anchor: PostgreSQL committing the same rows itself (pgbench, "
              "`benches/pg/submit.sql`, one transaction per item), median of "
              f"{max(len(v) for v in anchor.values())} rounds:\n")
        print("| pgbench clients | transactions/s | p50 ms | p99 ms |")
        print("|---|---|---|---|")
        for c in sorted(anchor):
            runs = anchor[c]
            print(f"| {c} | {med([r[0] for r in runs]):.0f} | {fmt_ms(med([r[1] for r in runs]))} "
                  f"| {fmt_ms(med([r[2] for r in runs]))} |")
        top = max(anchor)
        a = med([r[0] for r in anchor[top]])
        print()
        for side, label in SIDES[1:]:
            runs = sub.get((side, 64), [])
            if runs and a:
                # Per round too (each round's submits over the same round's anchor).
                print(f"- {label} at 64 connections / anchor at {top} clients: "
                      f"**{100 * med([r[0] for r in runs]) / a:.0f}%**")

    lag = {}
    try:
        with open(f"{work}/lag.jsonl") as f:
            for line in f:
                d = json.loads(line)
                acc = lag.setdefault(d["case"], {})
                for le, n in d["buckets"]:
                    acc[le] = acc.get(le, 0.0) + n
    except FileNotFoundError:
        pass
    if lag:
        print("\nReplication lag (`feedgraph_replication_apply_delay_seconds`: from the "
              "change's transaction start to the other replica applying it; buckets diffed "
              "over the runs, all rounds pooled):\n")
        print("| while | changes applied | p50 ms | p99 ms |")
        print("|---|---|---|---|")
        for case, acc in lag.items():
            cum = sorted(acc.items())
            n = cum[-1][1] if cum else 0
            print(f"| {case} | {n:.0f} | {fmt_ms(quantile(cum, 0.5))} | "
                  f"{fmt_ms(quantile(cum, 0.99))} |")

    reads = {}
    for side, _rnd, row, conns, rps, p50, p99, err in read_tsv(f"{work}/reads.tsv"):
        reads.setdefault((row, int(conns)), {}).setdefault(side, []).append(
            (float(rps), float(p50), float(p99), int(err)))
    if reads:
        print("\nReads of the bulk-loaded org (100k items), requests/s (p50 / p99 ms), median "
              "of the rounds:\n")
        print("| request | connections | sled | PostgreSQL replica (followed the load) |")
        print("|---|---|---|---|")
        for (row, conns), by in sorted(reads.items(), key=lambda kv: (kv[0][0], kv[0][1])):
            print(f"| `{row}` | {conns} | {cell(by.get('sled', []))} | {cell(by.get('pg', []))} |")

    q = {}
    for side in ("sled", "pg"):
        try:
            with open(f"{work}/queries_{side}.jsonl") as f:
                for line in f:
                    d = json.loads(line)
                    if "name" in d and "ms_median" in d:
                        q.setdefault(d["name"], {})[side] = d
        except FileNotFoundError:
            pass
    if q:
        print("\nThe seed queries through `POST /graph/query` (Python client, JSON), median ms:\n")
        print("| query | rows | sled | PostgreSQL replica |")
        print("|---|---|---|---|")
        for name, by in q.items():
            rows = (by.get("sled") or by.get("pg") or {}).get("rows", "")
            cells = [fmt_ms(by[s]["ms_median"]) if s in by else "–" for s in ("sled", "pg")]
            print(f"| {name} | {rows} | {cells[0]} | {cells[1]} |")

    cpu = {}
    for label, _rnd, rate, server, client, pg, others in read_tsv(f"{work}/cpu.tsv"):
        cpu.setdefault(label, []).append(
            [float(rate or 0), float(server), float(client), float(pg), float(others)])
    if cpu:
        print("\nWhere the CPU goes (cores used, sampled from /proc over 7 s of each run, "
              "median of the rounds; the machine has "
              f"{m.get('cores', '2')} cores):\n")
        print("| run | per s | feedgraph server | load client | PostgreSQL | everything else |")
        print("|---|---|---|---|---|---|")
        for label, runs in cpu.items():
            cols = [med([r[i] for r in runs]) for i in range(5)]
            server = f"{cols[1]:.2f}" if "feedgraph" in label else "–"
            print(f"| {label} | {cols[0]:.0f} | {server} | {cols[2]:.2f} | {cols[3]:.2f} "
                  f"| {cols[4]:.2f} |")

    if m:
        print("\nRun facts:\n")
        for k, v in m.items():
            print(f"- {k}: {v}")


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "hist-diff" and len(sys.argv) == 6:
        hist_diff(*sys.argv[2:6])
    elif len(sys.argv) == 3 and sys.argv[1] == "report":
        report(sys.argv[2])
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
