#!/usr/bin/env python3
"""Kuzu 0.11.3 as a peer: load a feedgraph dump and time the benchmark queries.

Usage: kuzu.py --dump FILE [--adapter ID] [--repeat N] [--workdir DIR]

Prints one JSON object per line: {"name", "ms_median", "ms_min", "rows"} for each query,
plus {"name": "load", "ms": ...}. Queries run in process and every row is fetched, as in
feedgraph's benches. The hottest adapter (most FEEDBACK_FOR edges) is found from the dump
when --adapter is not given.
"""
import argparse
import collections
import csv
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

# This file is named kuzu.py, so its own folder must not shadow the kuzu package.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != _here]
import kuzu  # noqa: E402

QUERIES = {
    "q1": "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a:Adapter {id: $adapter}) "
          "WHERE f.validation_status = 'approved' AND f.used_for_training = false "
          "RETURN f.id LIMIT 100",
    "q2": "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a:Adapter) RETURN a.id AS adapter_id, "
          "count(f) AS total_feedback, "
          "sum(CASE WHEN f.type = 'positive' THEN 1 ELSE 0 END) AS positive_count, "
          "sum(CASE WHEN f.type = 'negative' THEN 1 ELSE 0 END) AS negative_count, "
          "avg(CASE WHEN f.type = 'positive' THEN 1.0 ELSE 0.0 END) AS positive_ratio",
    "q3": "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a1:Adapter)-[:DERIVED_FROM*1..30]->(a2:Adapter) "
          "WHERE a2.id = 'base_model' RETURN f.id, a1.id",
    "q3_count": "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a1:Adapter)-[:DERIVED_FROM*1..30]->(a2:Adapter) "
                "WHERE a2.id = 'base_model' RETURN count(*)",
    "q4": "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a1:Adapter), (f)-[:FEEDBACK_FOR]->(a2:Adapter) "
          "WHERE a1.id <> a2.id WITH a1.id AS x, a2.id AS y, count(f) AS shared "
          "WHERE shared > 10 RETURN x, y, shared ORDER BY shared DESC",
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dump", required=True)
    ap.add_argument("--adapter")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--workdir")
    a = ap.parse_args()

    work = a.workdir or tempfile.mkdtemp(prefix="kuzu-peer-")
    os.makedirs(work, exist_ok=True)
    csv_dir = os.path.join(work, "csv")
    os.makedirs(csv_dir, exist_ok=True)
    files = {k: open(os.path.join(csv_dir, f"{k}.csv"), "w", newline="") for k in
             ("adapter", "feedback", "feedback_for", "derived_from")}
    writers = {k: csv.writer(f) for k, f in files.items()}
    popularity = collections.Counter()
    with open(a.dump) as f:
        for line in f:
            r = json.loads(line)
            k = r["kind"]
            if k == "adapter":
                writers[k].writerow([r["id"], r.get("name", ""), r.get("rank", 0), r.get("status", ""), r.get("created_at", 0)])
            elif k == "feedback":
                writers[k].writerow([r["id"], r["type"], r["validation_status"], str(r["used_for_training"]).lower(),
                                     r.get("model_version") or "", r["question"], r["answer"], r["created_at"]])
            elif k == "feedback_for":
                writers[k].writerow([r["from"], r["to"]])
                popularity[r["to"]] += 1
            elif k == "derived_from":
                writers[k].writerow([r["from"], r["to"]])
    for f in files.values():
        f.close()
    adapter = a.adapter or popularity.most_common(1)[0][0]

    db_path = os.path.join(work, "db")
    # Kuzu 0.11 keeps a database in one file (plus a WAL); older versions in a directory.
    if os.path.isdir(db_path):
        shutil.rmtree(db_path)
    for path in (db_path, db_path + ".wal"):
        if os.path.isfile(path):
            os.remove(path)
    db = kuzu.Database(db_path)
    conn = kuzu.Connection(db)
    started = time.perf_counter()
    conn.execute("CREATE NODE TABLE Adapter(id STRING, name STRING, rank INT64, status STRING, created_at INT64, PRIMARY KEY(id))")
    conn.execute("CREATE NODE TABLE Feedback(id STRING, type STRING, validation_status STRING, used_for_training BOOLEAN, "
                 "model_version STRING, question STRING, answer STRING, created_at INT64, PRIMARY KEY(id))")
    conn.execute("CREATE REL TABLE FEEDBACK_FOR(FROM Feedback TO Adapter)")
    conn.execute("CREATE REL TABLE DERIVED_FROM(FROM Adapter TO Adapter)")
    for table, name in (("Adapter", "adapter"), ("Feedback", "feedback"), ("FEEDBACK_FOR", "feedback_for"), ("DERIVED_FROM", "derived_from")):
        conn.execute(f"COPY {table} FROM '{os.path.join(csv_dir, name + '.csv')}' (HEADER=false)")
    print(json.dumps({"name": "load", "ms": round((time.perf_counter() - started) * 1000, 1), "adapter": adapter}))
    sys.stdout.flush()

    for name, q in QUERIES.items():
        params = {"adapter": adapter} if "$adapter" in q else {}
        times = []
        rows = 0
        for _ in range(a.repeat + 1):
            t = time.perf_counter()
            result = conn.execute(q, params)
            rows = 0
            while result.has_next():
                result.get_next()
                rows += 1
            times.append((time.perf_counter() - t) * 1000)
        times = times[1:]  # the first run warms caches
        print(json.dumps({"name": name, "ms_median": round(statistics.median(times), 3),
                          "ms_min": round(min(times), 3), "rows": rows}))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
