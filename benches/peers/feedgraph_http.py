#!/usr/bin/env python3
"""feedgraph end to end, as a Python client sees it: the benchmark queries sent to a running
server with POST /api/v1/llm/graph/query over one keep-alive connection, each answer read
in full and parsed from JSON, every row counted. Timed like the in-process peers
(common.time_query), so the numbers compare.

Usage: feedgraph_http.py --url http://127.0.0.1:PORT --token JWT --adapter ID
                         [--repeat N] [--format json|arrow] [--pid SERVER_PID]
                         [--http stdlib|requests]

--http picks the Python HTTP client: stdlib (the default) is the standard library's
http.client.HTTPConnection, the leanest a Python program has; requests is a
requests.Session, which adds about a millisecond of its own per request on these machines.
Both keep one connection alive for every request.

--format arrow asks for an Apache Arrow IPC stream (Accept:
application/vnd.apache.arrow.stream) and reads it with pyarrow into a table, as a
dataframe client would; json parses the whole JSON document. With --pid, each query's line
also gives the server's resident memory (VmHWM: the peak so far, VmRSS: now) after it.

The server's row, work, memory and time limits must allow the big results (benches/run
raises them). Prints {"name", "ms_median", "ms_min", "rows"} per query, as a JSON line,
after "floor_healthz": the same client's GET /healthz, the part of every query's time that
is the HTTP client and the round trip.
"""
import argparse
import http.client
import json
import urllib.parse

import requests

from common import cypher_queries, emit, emit_query, time_query


def json_rows(session, url, body):
    """Sends one query and parses the whole JSON answer; returns the number of rows."""
    r = session.post(url, data=body, headers={"Content-Type": "application/json"})
    r.raise_for_status()
    doc = json.loads(r.content)
    return len(doc["rows"])


def arrow_rows(session, url, body):
    """Sends one query asking for Arrow and reads the whole stream into a pyarrow Table;
    returns the number of rows."""
    import pyarrow.ipc

    r = session.post(url, data=body, headers={
        "Content-Type": "application/json",
        "Accept": "application/vnd.apache.arrow.stream"})
    r.raise_for_status()
    return pyarrow.ipc.open_stream(r.content).read_all().num_rows


READERS = {"json": json_rows, "arrow": arrow_rows}


class _Answer:
    """What the readers use of an answer: its body and a status check."""

    def __init__(self, status, content):
        self.status_code = status
        self.content = content

    def raise_for_status(self):
        if self.status_code >= 400:
            raise RuntimeError(f"HTTP {self.status_code}: {self.content[:300]!r}")


class StdlibSession:
    """requests.Session's post/get over one http.client.HTTPConnection (keep-alive), so
    the same readers run on the leanest Python HTTP client."""

    def __init__(self, base):
        u = urllib.parse.urlsplit(base)
        self.conn = http.client.HTTPConnection(u.hostname, u.port)
        self.headers = {}

    def _send(self, method, url, data=None, headers=None):
        path = urllib.parse.urlsplit(url).path
        self.conn.request(method, path, body=data, headers={**self.headers, **(headers or {})})
        r = self.conn.getresponse()
        return _Answer(r.status, r.read())

    def post(self, url, data=None, headers=None):
        return self._send("POST", url, data, headers)

    def get(self, url):
        return self._send("GET", url)


def server_memory_kb(pid):
    """{"rss_kb", "hwm_kb"} of process pid, from /proc."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return {"server_rss_kb": out.get("VmRSS"), "server_hwm_kb": out.get("VmHWM")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True, help="the server's base URL")
    ap.add_argument("--token", required=True, help="a bearer token for the benchmark org")
    ap.add_argument("--adapter", required=True, help="$adapter for Q1")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--format", choices=sorted(READERS), default="json")
    ap.add_argument("--pid", type=int, help="the server's process id, for its memory")
    ap.add_argument("--http", choices=["stdlib", "requests"], default="stdlib",
                    help="the Python HTTP client (see the module's doc)")
    a = ap.parse_args()

    read = READERS[a.format]
    url = a.url.rstrip("/") + "/api/v1/llm/graph/query"
    # One keep-alive connection for every request.
    session = StdlibSession(a.url) if a.http == "stdlib" else requests.Session()
    session.headers["Authorization"] = f"Bearer {a.token}"
    client = {"name": "client", "format": a.format, "http": a.http}
    if a.http == "requests":
        client["requests"] = requests.__version__
    if a.format == "arrow":
        import pyarrow

        client["pyarrow"] = pyarrow.__version__
    emit(client)
    # The client's floor: a request the server answers without work (GET /healthz) on the
    # same connection, timed the same way; every query's time includes it.
    health = a.url.rstrip("/") + "/healthz"

    def healthz():
        session.get(health).raise_for_status()
        return 0

    emit_query("floor_healthz", *time_query(healthz, a.repeat * 10))
    for name, text in cypher_queries().items():
        params = {"adapter": a.adapter} if "$adapter" in text else {}
        body = json.dumps({"query": text, "params": params}).encode()
        emit_query(name, *time_query(lambda: read(session, url, body), a.repeat))
        if a.pid:
            emit({"name": "server_memory", "query": name, "format": a.format,
                  **server_memory_kb(a.pid)})


if __name__ == "__main__":
    main()
