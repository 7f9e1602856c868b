#!/usr/bin/env python3
"""Prints the BENCHMARKS.md tables from one `benches/run`: criterion estimates (feedgraph's
engine), the JSON lines of the end-to-end client and of each peer (Kuzu, Ladybug, DuckDB),
the metrics file and the HTTP table."""
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
# The name of each query in the JSON lines of benches/peers/*.py.
PEER_NAME = {"q1": "q1", "q2": "q2", "q3_rows": "q3", "q3_count": "q3_count", "q4": "q4"}
# (file in the work dir, column title); the title gets the version from the file's load line.
PEERS = [("kuzu.jsonl", "Kuzu"), ("ladybug.jsonl", "Ladybug"), ("duckdb.jsonl", "DuckDB SQL")]


def read_jsonl(path):
    """{name: record} from one peer's JSON lines; {} when the file is missing."""
    out = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                r = json.loads(line)
                out[r["name"]] = r
    return out


def ratio(theirs, ours):
    if not theirs or not ours:
        return "-"
    x = theirs / ours
    return f"{x:.1f}x" if x >= 1 else f"{x:.2f}x"


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
    e2e = read_jsonl(os.path.join(a.work, "e2e.jsonl"))
    e2e_arrow = read_jsonl(os.path.join(a.work, "e2e_arrow.jsonl"))
    peers = [(title, read_jsonl(os.path.join(a.work, name))) for name, title in PEERS]
    cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
    print(f"### {a.size} items — {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}")
    print(f"Command: `benches/run --size {a.size}`\n")
    titles = [f"{t} {p.get('load', {}).get('version', '')}".strip() for t, p in peers]
    print("| query | feedgraph engine | feedgraph end to end (JSON) | feedgraph end to end (Arrow) | "
          + " | ".join(titles)
          + " | fastest peer / best end to end | rows: engine / JSON / Arrow / "
          + " / ".join(t for t, _ in peers) + " |")
    print("|---" * (6 + len(peers)) + "|")
    for key, label in QUERIES:
        ours = est(a.criterion, "queries", key)
        name = PEER_NAME[key]
        http = e2e.get(name, {})
        arrow = e2e_arrow.get(name, {})
        theirs = [p.get(name, {}) for _, p in peers]
        times = [r.get("ms_median") for r in theirs]
        fastest = min((t for t in times if t), default=None)
        # The better of the two wire formats, named, is what a client would pick.
        ends = [(t, f) for t, f in ((http.get("ms_median"), "JSON"),
                                     (arrow.get("ms_median"), "Arrow")) if t]
        best, best_fmt = min(ends, default=(None, ""))
        counts = ([ours_rows.get(key, "-"), http.get("rows", "-"), arrow.get("rows", "-")]
                  + [r.get("rows", "-") for r in theirs])
        known = {c for c in counts if c != "-"}
        mark = "" if len(known) <= 1 else " (differ!)"
        speedup = ratio(fastest, best)
        if speedup != "-":
            speedup += f" ({best_fmt})"
        print(f"| {label} | {fmt(ours)} | {fmt(http.get('ms_median'))} | {fmt(arrow.get('ms_median'))} | "
              + " | ".join(fmt(t) for t in times)
              + f" | {speedup} | {' / '.join(str(c) for c in counts)}{mark} |")
    for key, label in SEED:
        if est(a.criterion, 'queries', key) is None:
            continue
        print(f"| {label} | {fmt(est(a.criterion, 'queries', key))} | - | - | "
              + " | ".join("-" for _ in peers) + f" | - | {ours_rows.get(key, '-')} |")
    print("\nfeedgraph engine: criterion, in process (parse + plan + execute + every result row "
          "built). feedgraph end to end: POST /graph/query over one keep-alive HTTP connection, "
          "the whole answer parsed from JSON by a Python client (benches/peers/feedgraph_http.py, "
          "the standard library's http.client); "
          "Arrow: the same request with `Accept: application/vnd.apache.arrow.stream`, the stream "
          "read into a pyarrow Table. "
          "Peers: in process from Python, every row fetched. Median of 5 runs after a warm-up.")
    floor = e2e.get("floor_healthz", {}).get("ms_median")
    if floor:
        print(f"The end-to-end client's floor, GET /healthz on the same connection: {fmt(floor)}.")
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
    if "loadavg_before" in metrics and "loadavg_after" in metrics:
        print(f"| load average (1 min) before / after the measurements | "
              f"{metrics['loadavg_before']:.2f} / {metrics['loadavg_after']:.2f} |")
    for title, p in peers:
        if "load" in p:
            print(f"| {title} load (COPY from CSV) | {p['load']['ms'] / 1000:.1f} s |")
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
    print("HTTP (`cargo bench --bench http_load -- --secs 10 --read-secs 5` on the loaded directory: the ceiling and the durable submits (to another org) 10 s per row and connection count, in 5 rounds that alternate them; then the reads of the loaded org and the durable links 5 s each; client and server on the same 2 cores):\n")
    with open(os.path.join(a.work, "http.md")) as f:
        print(f.read())
    # The cursor-walk rows: how many of their items the server found kept (a first-time
    # page reads them all from the store), from the bench's own report on stderr.
    err = os.path.join(a.work, "http_load.err")
    kept = []
    if os.path.exists(err):
        with open(err) as f:
            kept = [line.strip()[len("http_load: "):] for line in f
                    if line.startswith("http_load: ") and "% kept" in line]
    print("The by-adapter rows without `(cursor walk)` ask for the listing's first page again "
          "and again (after the first request its items are kept: `pages.cache_bytes`); the "
          "`(cursor walk)` rows follow each page's `next_cursor` from starts spread evenly over "
          "the hottest adapter's items, so they measure pages not kept in memory: read from the "
          "store, or from the adapter's run once the walk made it due (`pages.runs_min_items`, "
          "`pages.runs_after_reads`; the walk at one connection is the first to page through "
          "the adapter, so its rows include the reads before the run was built).")
    if kept:
        print("Items of the walk rows the server found kept, read from adapter runs, and read from the store:\n")
        for line in kept:
            print(f"- {line}")
    print()


if __name__ == "__main__":
    main()
