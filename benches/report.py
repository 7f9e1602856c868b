#!/usr/bin/env python3
"""Prints the BENCHMARKS.md tables from one `benches/run`: criterion estimates, Kuzu's
JSON lines, the metrics file and the HTTP table."""
import argparse
import json
import os
import platform
import subprocess
import time

QUERIES = [("q1", "Q1 approved unused of the hottest adapter, LIMIT 100"),
           ("q2", "Q2 per-adapter stats"),
           ("q3_rows", "Q3 lineage rows to base_model"),
           ("q3_count", "Q3 count(*)"),
           ("q4", "Q4 shared-feedback pairs")]
SEED = [("seed_by_adapter", "seed: by adapter (RETURN f)"),
        ("seed_adapter_stats", "seed: stats by adapter (GROUP BY)"),
        ("seed_lineage", "seed: lineage with path"),
        ("seed_lineage_limit_10000", "seed: lineage with path, LIMIT 10000 (benched so above 200k items)"),
        ("seed_shared_feedback", "seed: shared feedback (HAVING)"),
        ("service_by_adapter_100", "service API: by-adapter, 100 items")]
KUZU = {"q1": "q1", "q2": "q2", "q3_rows": "q3", "q3_count": "q3_count", "q4": "q4"}


def est(crit, group, name):
    p = os.path.join(crit, group, name, "new", "estimates.json")
    if not os.path.exists(p):
        return None
    with open(p) as f:
        return json.load(f)["median"]["point_estimate"] / 1e6  # ms


def fmt(ms):
    if ms is None:
        return "-"
    return f"{ms * 1000:.1f} µs" if ms < 1 else f"{ms:.1f} ms" if ms < 1000 else f"{ms / 1000:.2f} s"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--criterion", required=True)
    a = ap.parse_args()
    metrics = {}
    with open(os.path.join(a.work, "metrics.txt")) as f:
        for line in f:
            k, v = line.split()
            metrics[k] = float(v)
    ours_rows = {}
    rows_path = os.path.join(a.work, "rows.json")
    if os.path.exists(rows_path):
        with open(rows_path) as f:
            ours_rows = json.load(f)
    kuzu = {}
    with open(os.path.join(a.work, "kuzu.jsonl")) as f:
        for line in f:
            r = json.loads(line)
            kuzu[r["name"]] = r
    cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
    print(f"### {a.size} items — {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}")
    print(f"Command: `benches/run --size {a.size}`\n")
    print("| query | feedgraph | Kuzu 0.11.3 | Kuzu / feedgraph | rows: feedgraph / Kuzu |")
    print("|---|---|---|---|---|")
    for key, label in QUERIES:
        ours = est(a.criterion, "queries", key)
        k = kuzu.get(KUZU[key], {})
        theirs = k.get("ms_median")
        ratio = (f"{theirs / ours:.1f}x" if theirs / ours >= 1 else f"{theirs / ours:.2f}x") if ours and theirs else "-"
        mine = ours_rows.get(key, "-")
        mark = "" if mine == k.get("rows") else " (differ!)"
        print(f"| {label} | {fmt(ours)} | {fmt(theirs)} | {ratio} | {mine} / {k.get('rows', '-')}{mark} |")
    for key, label in SEED:
        if est(a.criterion, 'queries', key) is None:
            continue
        print(f"| {label} | {fmt(est(a.criterion, 'queries', key))} | - | - | {ours_rows.get(key, '-')} / - |")
    print()
    print("| measure | value |")
    print("|---|---|")
    print(f"| bulk load (`feedgraph load`) | {metrics['load_s']:.1f} s |")
    print(f"| dump file / on-disk size | {metrics['dump_bytes'] / 2**20:.0f} MiB / {metrics['disk_bytes'] / 2**20:.0f} MiB |")
    print(f"| start-up until /readyz | {metrics['startup_s']:.2f} s |")
    print(f"| resident memory after start-up | {metrics['rss_after_startup_kb'] / 1024:.0f} MiB |")
    print(f"| resident memory right after the query suite | {metrics['rss_after_queries_kb'] / 1024:.0f} MiB |")
    if "rss_settled_kb" in metrics:
        print(f"| ... and 2 s later (freed memory is purged after 1 s) | {metrics['rss_settled_kb'] / 1024:.0f} MiB |")
    print(f"| Kuzu load (COPY from CSV) | {kuzu.get('load', {}).get('ms', 0) / 1000:.1f} s |")
    print()
    print("Store-level durable submits (`cargo bench --bench store_submit`):\n")
    print("| writers | group commit | one sync each |")
    print("|---|---|---|")
    for w in (1, 8, 64):
        row = []
        for mode in ("group_commit", "one_sync_each"):
            ms = est(a.criterion, "store_submit", f"{mode}/{w}")
            row.append(f"{w / ms * 1000:,.0f}/s" if ms else "-")
        print(f"| {w} | {row[0]} | {row[1]} |")
    print()
    print("HTTP (`cargo bench --bench http_load -- --secs 10`: per row and connection count 10 s, in 5 rounds that alternate the ceiling and the submits; client and server on the same 2 cores):\n")
    with open(os.path.join(a.work, "http.md")) as f:
        print(f.read())


if __name__ == "__main__":
    main()
