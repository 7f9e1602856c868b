"""What every peer script shares: the dump turned into CSV tables, the hottest adapter, the
timing loop and the JSON-lines output.

A feedgraph dump (`examples/gen_dataset.rs`, `feedgraph dump`) is JSON lines with a `kind`
of adapter, feedback, derived_from or feedback_for. Every peer loads the same four CSV
files written from it (no header, RFC 4180 quoting), so all of them see the same data.
"""
import collections
import csv
import json
import os
import re
import statistics
import sys
import time

# The Rust benches' query texts (Q1-Q4 and the Q3 count), read from the file they include,
# so feedgraph, Kuzu, Ladybug and the end-to-end client always run the same texts.
QUERY_TEXTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support",
                           "query_texts.rs")
CYPHER_NAMES = {"q1": "Q1", "q2": "Q2", "q3": "Q3", "q3_count": "Q3_COUNT", "q4": "Q4"}


def cypher_queries():
    """{"q1": text, ...} in the order of CYPHER_NAMES, from benches/support/query_texts.rs."""
    with open(QUERY_TEXTS) as f:
        consts = dict(re.findall(r'^const (\w+): &str = "(.*)";$', f.read(), re.M))
    return {name: consts[const] for name, const in CYPHER_NAMES.items()}

# Column order of each CSV file (the node tables' columns, then the edge tables').
ADAPTER_COLUMNS = ("id", "name", "rank", "status", "created_at")
FEEDBACK_COLUMNS = ("id", "type", "validation_status", "used_for_training", "model_version",
                    "question", "answer", "created_at")
EDGE_COLUMNS = ("src", "dst")
TABLES = ("adapter", "feedback", "feedback_for", "derived_from")


def write_csv(dump, csv_dir):
    """Writes adapter.csv, feedback.csv, feedback_for.csv and derived_from.csv from the dump
    into csv_dir. Returns the hottest adapter (the most FEEDBACK_FOR edges) and whether
    some text holds a line break (Kuzu and Ladybug then need COPY's PARALLEL=FALSE)."""
    os.makedirs(csv_dir, exist_ok=True)
    files = {k: open(os.path.join(csv_dir, f"{k}.csv"), "w", newline="") for k in TABLES}
    writers = {k: csv.writer(f, lineterminator="\n") for k, f in files.items()}
    popularity = collections.Counter()
    multiline = False
    with open(dump) as f:
        for line in f:
            r = json.loads(line)
            k = r["kind"]
            if k == "adapter":
                writers[k].writerow([r["id"], r.get("name", ""), r.get("rank", 0),
                                     r.get("status", ""), r.get("created_at", 0)])
            elif k == "feedback":
                writers[k].writerow([r["id"], r["type"], r["validation_status"],
                                     str(r["used_for_training"]).lower(),
                                     r.get("model_version") or "", r["question"], r["answer"],
                                     r["created_at"]])
                multiline = multiline or any("\n" in r[k] or "\r" in r[k]
                                             for k in ("question", "answer"))
            elif k == "feedback_for":
                writers[k].writerow([r["from"], r["to"]])
                popularity[r["to"]] += 1
            elif k == "derived_from":
                writers[k].writerow([r["from"], r["to"]])
    for f in files.values():
        f.close()
    return hottest(popularity), multiline


def hottest(popularity):
    """The adapter with the most FEEDBACK_FOR edges; ties go to the greatest id, so every
    script picks the same one whatever order it counted in."""
    return max(popularity.items(), key=lambda kv: (kv[1], kv[0]))[0]


def hottest_in_dump(dump):
    """The hottest adapter of a dump, without writing anything."""
    popularity = collections.Counter()
    with open(dump) as f:
        for line in f:
            if '"feedback_for"' in line:
                r = json.loads(line)
                if r["kind"] == "feedback_for":
                    popularity[r["to"]] += 1
    return hottest(popularity)


def time_query(run, repeat):
    """Calls run() repeat + 1 times; run returns the number of rows it fetched. The first
    call warms caches and is not counted. Returns (median ms, min ms, rows)."""
    times = []
    rows = 0
    for _ in range(repeat + 1):
        t = time.perf_counter()
        rows = run()
        times.append((time.perf_counter() - t) * 1000)
    times = times[1:]
    return statistics.median(times), min(times), rows


def emit(record):
    """Prints one JSON line (flushed, so a crash later keeps what was measured)."""
    print(json.dumps(record))
    sys.stdout.flush()


def emit_query(name, median_ms, min_ms, rows):
    emit({"name": name, "ms_median": round(median_ms, 3), "ms_min": round(min_ms, 3),
          "rows": rows})
