"""Items per second into a local feedgraph: background batching (``client.feedback`` +
``flush``) next to one ``POST /feedback`` per item (``client.submit``), both durable.

    python clients/python/bench.py --bin target/release/feedgraph --items 20000

Starts its own server on a free port with a temporary data directory (default settings:
fsync durability), unless ``--url`` and ``--token`` name a running one.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid

import httpx

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "src"))

from feedgraph import Client  # noqa: E402


def serve(binary: str, data: str) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "FEEDGRAPH__RATE_LIMIT__ENABLED": "false", "RUST_LOG": "warn"}
    proc = subprocess.Popen(
        [binary, "--data-dir", data, "serve", "--bind", f"127.0.0.1:{port}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise SystemExit("the server did not start")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="target/release/feedgraph")
    ap.add_argument("--url")
    ap.add_argument("--token")
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--one-by-one", type=int, default=2_000, help="items for the POST-per-item run")
    ap.add_argument("--batch-size", type=int, default=500)
    args = ap.parse_args()

    proc = None
    tmp = tempfile.TemporaryDirectory(prefix="feedgraph-bench-")
    if args.url:
        url, token = args.url, args.token
    else:
        proc, url = serve(args.bin, tmp.name)
        token = subprocess.run(
            [args.bin, "--data-dir", tmp.name, "token", "--org", "bench", "--sub", "bench"],
            check=True, capture_output=True,
        ).stdout.decode().strip()  # fmt: skip
    try:
        q, a = "How do I enable sharding in the cluster?", "Use SHARD BY in CREATE COLLECTION."
        run = uuid.uuid4().hex[:8]

        with Client(url, token, batch_size=args.batch_size) as c:
            start = time.perf_counter()
            for i in range(args.items):
                c.feedback("positive", f"{q} {i}", a, session_id=f"bg-{run}")
            queued = time.perf_counter() - start
            assert c.flush(timeout=600)
            bg = time.perf_counter() - start
            assert c.background.sent == args.items, c.background.failed

        with Client(url, token) as c:
            start = time.perf_counter()
            for i in range(args.one_by_one):
                c.submit("positive", f"{q} {i}", a, session_id=f"one-{run}")
            one = time.perf_counter() - start

        bg_rate, one_rate = args.items / bg, args.one_by_one / one
        print(f"background batching: {args.items} items in {bg:.2f} s = {bg_rate:,.0f} items/s "
              f"(enqueue alone {args.items / queued:,.0f}/s, batch size {args.batch_size})")  # fmt: skip
        print(f"one POST per item:   {args.one_by_one} items in {one:.2f} s = {one_rate:,.0f} items/s")
        print(f"speed-up: {bg_rate / one_rate:.1f}x")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait()
        tmp.cleanup()


if __name__ == "__main__":
    main()
