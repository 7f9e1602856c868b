#!/usr/bin/env python3
"""Kuzu or Ladybug (the maintained fork of Kuzu) as a peer: load a feedgraph dump and time
the benchmark queries, with the same Cypher texts as feedgraph's benches.

Usage: cypher_peer.py --engine kuzu|ladybug --dump FILE [--adapter ID] [--repeat N]
                      [--workdir DIR]

The dump becomes four CSV files (see common.py), loaded with COPY into node tables Adapter
and Feedback (primary key id) and rel tables FEEDBACK_FOR and DERIVED_FROM. Queries run in
process and every row is fetched (`get_next` until `has_next` is false), as in feedgraph's
benches. Prints one JSON object per line: {"name": "load", "ms", "adapter", "version"},
then {"name", "ms_median", "ms_min", "rows"} per query (median of --repeat runs after one
warm-up run).
"""
import argparse
import importlib
import os
import shutil
import tempfile
import time

from common import cypher_queries, emit, emit_query, time_query, write_csv


SCHEMA = [
    "CREATE NODE TABLE Adapter(id STRING, name STRING, rank INT64, status STRING, "
    "created_at INT64, PRIMARY KEY(id))",
    "CREATE NODE TABLE Feedback(id STRING, type STRING, validation_status STRING, "
    "used_for_training BOOLEAN, model_version STRING, question STRING, answer STRING, "
    "created_at INT64, PRIMARY KEY(id))",
    "CREATE REL TABLE FEEDBACK_FOR(FROM Feedback TO Adapter)",
    "CREATE REL TABLE DERIVED_FROM(FROM Adapter TO Adapter)",
]
# Which CSV file fills which table, in an order that loads nodes before edges.
COPIES = (("Adapter", "adapter"), ("Feedback", "feedback"), ("FEEDBACK_FOR", "feedback_for"),
          ("DERIVED_FROM", "derived_from"))


def fresh_database(path):
    """Removes an earlier database at path: one file plus a WAL in Kuzu 0.11 and Ladybug,
    a directory in older Kuzu versions."""
    if os.path.isdir(path):
        shutil.rmtree(path)
    for p in (path, path + ".wal"):
        if os.path.isfile(p):
            os.remove(p)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--engine", choices=("kuzu", "ladybug"), required=True)
    ap.add_argument("--dump", required=True)
    ap.add_argument("--adapter", help="$adapter for Q1 (default: the dump's hottest)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--workdir")
    a = ap.parse_args()
    # Both packages have the same API: Database, Connection, execute, has_next, get_next.
    engine = importlib.import_module(a.engine)

    work = a.workdir or tempfile.mkdtemp(prefix=f"{a.engine}-peer-")
    os.makedirs(work, exist_ok=True)
    csv_dir = os.path.join(work, "csv")
    hottest, multiline = write_csv(a.dump, csv_dir)
    adapter = a.adapter or hottest

    db_path = os.path.join(work, "db")
    fresh_database(db_path)
    db = engine.Database(db_path)
    conn = engine.Connection(db)
    started = time.perf_counter()
    for statement in SCHEMA:
        conn.execute(statement)
    # The parallel CSV reader cannot split a file whose quoted texts hold line breaks.
    options = "HEADER=false, PARALLEL=false" if multiline else "HEADER=false"
    for table, name in COPIES:
        conn.execute(f"COPY {table} FROM '{os.path.join(csv_dir, name + '.csv')}' ({options})")
    emit({"name": "load", "ms": round((time.perf_counter() - started) * 1000, 1),
          "adapter": adapter, "version": getattr(engine, "__version__", "?")})

    for name, text in cypher_queries().items():
        params = {"adapter": adapter} if "$adapter" in text else {}

        def run():
            result = conn.execute(text, params)
            rows = 0
            while result.has_next():
                result.get_next()
                rows += 1
            return rows

        emit_query(name, *time_query(run, a.repeat))


if __name__ == "__main__":
    main()
