#!/usr/bin/env python3
"""DuckDB as a peer: the benchmark queries written as SQL over four tables loaded from the
same dump, timed in process with every row fetched.

Usage: duckdb_peer.py --dump FILE [--adapter ID] [--repeat N] [--workdir DIR]

Schema: the node tables adapter and feedback, and the edge tables feedback_for and
derived_from whose rows hold the ids of their two ends (src -> dst), as a relational schema
keeps a graph. No keys or indexes: DuckDB answers these queries with scans and hash joins,
and a constraint would only slow the load. The database is a file in --workdir (like Kuzu's
and Ladybug's), filled with COPY from the CSV files of common.py.

What each query is, against the Cypher text of benches/support/query_texts.rs:
- Q1: the hottest adapter's edges joined to their feedback rows, filtered, LIMIT 100.
- Q2: edges joined to feedback, GROUP BY the adapter id (an edge's dst is the adapter's id,
  so the adapter table is not needed).
- Q3: a recursive CTE walks DERIVED_FROM down from base_model (1 to 30 steps, UNION ALL, so
  an adapter reached by two paths counts twice, as the Cypher pattern's paths do), then
  joins the FEEDBACK_FOR edges of every adapter it reached. The Q3 count is count(*) of it.
- Q4: FEEDBACK_FOR joined with itself on the feedback id, GROUP BY the adapter pair,
  HAVING count > 10, ORDER BY count DESC.

Prints JSON lines like cypher_peer.py: {"name": "load", ...}, then one per query.
"""
import argparse
import os
import tempfile
import time

import duckdb

from common import emit, emit_query, time_query, write_csv

SCHEMA = [
    "CREATE TABLE adapter(id VARCHAR, name VARCHAR, rank BIGINT, status VARCHAR, "
    "created_at BIGINT)",
    "CREATE TABLE feedback(id VARCHAR, type VARCHAR, validation_status VARCHAR, "
    "used_for_training BOOLEAN, model_version VARCHAR, question VARCHAR, answer VARCHAR, "
    "created_at BIGINT)",
    "CREATE TABLE feedback_for(src VARCHAR, dst VARCHAR)",
    "CREATE TABLE derived_from(src VARCHAR, dst VARCHAR)",
]

# Adapters below base_model, one row per DERIVED_FROM path of 1 to 30 steps.
LINEAGE = """
WITH RECURSIVE below(adapter_id, depth) AS (
    SELECT src, 1 FROM derived_from WHERE dst = 'base_model'
    UNION ALL
    SELECT d.src, b.depth + 1 FROM below b JOIN derived_from d ON d.dst = b.adapter_id
    WHERE b.depth < 30
)
"""

QUERIES = {
    "q1": """
SELECT f.id
FROM feedback_for ff JOIN feedback f ON f.id = ff.src
WHERE ff.dst = $adapter AND f.validation_status = 'approved' AND NOT f.used_for_training
LIMIT 100
""",
    "q2": """
SELECT ff.dst AS adapter_id,
       count(*) AS total_feedback,
       sum(CASE WHEN f.type = 'positive' THEN 1 ELSE 0 END) AS positive_count,
       sum(CASE WHEN f.type = 'negative' THEN 1 ELSE 0 END) AS negative_count,
       avg(CASE WHEN f.type = 'positive' THEN 1.0 ELSE 0.0 END) AS positive_ratio
FROM feedback_for ff JOIN feedback f ON f.id = ff.src
GROUP BY ff.dst
""",
    "q3": LINEAGE + """
SELECT ff.src AS f_id, ff.dst AS a1_id
FROM below b JOIN feedback_for ff ON ff.dst = b.adapter_id
""",
    "q3_count": LINEAGE + """
SELECT count(*)
FROM below b JOIN feedback_for ff ON ff.dst = b.adapter_id
""",
    "q4": """
SELECT a.dst AS x, b.dst AS y, count(*) AS shared
FROM feedback_for a JOIN feedback_for b ON a.src = b.src
WHERE a.dst <> b.dst
GROUP BY a.dst, b.dst
HAVING count(*) > 10
ORDER BY shared DESC
""",
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dump", required=True)
    ap.add_argument("--adapter", help="$adapter for Q1 (default: the dump's hottest)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--workdir")
    a = ap.parse_args()

    work = a.workdir or tempfile.mkdtemp(prefix="duckdb-peer-")
    os.makedirs(work, exist_ok=True)
    csv_dir = os.path.join(work, "csv")
    hottest, _ = write_csv(a.dump, csv_dir)
    adapter = a.adapter or hottest

    db_path = os.path.join(work, "db.duckdb")
    for p in (db_path, db_path + ".wal"):
        if os.path.exists(p):
            os.remove(p)
    con = duckdb.connect(db_path)
    started = time.perf_counter()
    for statement in SCHEMA:
        con.execute(statement)
    for table in ("adapter", "feedback", "feedback_for", "derived_from"):
        path = os.path.join(csv_dir, table + ".csv")
        con.execute(f"COPY {table} FROM '{path}' (FORMAT csv, HEADER false, QUOTE '\"', ESCAPE '\"')")
    con.execute("CHECKPOINT")
    emit({"name": "load", "ms": round((time.perf_counter() - started) * 1000, 1),
          "adapter": adapter, "version": duckdb.__version__})

    for name, sql in QUERIES.items():
        params = {"adapter": adapter} if "$adapter" in sql else {}

        def run():
            # fetchall builds a Python tuple for every row, as get_next does in the
            # Cypher peers.
            return len(con.execute(sql, params).fetchall())

        emit_query(name, *time_query(run, a.repeat))


if __name__ == "__main__":
    main()
