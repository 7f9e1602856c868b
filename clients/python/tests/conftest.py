"""Fixtures: a real ``feedgraph serve`` on a free port with a temporary data directory.

The binary comes from ``$FEEDGRAPH_BIN`` (the Rust test runner sets it to the one cargo
built), else ``target/debug/feedgraph`` of the repository.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import sys

# Test the source tree as it is, not a copy installed earlier.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import httpx  # noqa: E402
import pytest  # noqa: E402

from feedgraph import Client, RetryPolicy  # noqa: E402

REPO = Path(__file__).resolve().parents[3]


def binary() -> str:
    path = os.environ.get("FEEDGRAPH_BIN") or str(REPO / "target" / "debug" / "feedgraph")
    if not os.path.isfile(path):
        pytest.fail(f"no feedgraph binary at {path}: build it or set FEEDGRAPH_BIN")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    """One ``feedgraph serve`` process; it can be stopped and started again on the same
    port and data directory."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="feedgraph-py-")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "FEEDGRAPH__RATE_LIMIT__ENABLED": "false",
            "FEEDGRAPH__LOG__FORMAT": "text",
            "RUST_LOG": "warn",
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [binary(), "--data-dir", self.dir.name, "serve", "--bind", f"127.0.0.1:{self.port}"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"feedgraph serve exited with {self.proc.returncode}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("feedgraph serve did not become ready in 30 s")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
            self.proc = None

    def token(self, org: str, sub: str = "alice", role: str = "admin") -> str:
        out = subprocess.run(
            [binary(), "--data-dir", self.dir.name, "token", "--org", org, "--sub", sub,
             "--role", role, "--ttl", "2h"],  # fmt: skip
            env=self.env,
            check=True,
            capture_output=True,
        )
        return out.stdout.decode().strip()

    def close(self) -> None:
        self.stop()
        self.dir.cleanup()


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    s = Server()
    s.start()
    yield s
    s.close()


@pytest.fixture()
def server_of_my_own() -> Iterator[Server]:
    """A server only this test uses (to stop and restart it)."""
    s = Server()
    s.start()
    yield s
    s.close()


@pytest.fixture()
def org() -> str:
    """A fresh org per test, so counts start at zero on the shared server."""
    return f"org-{uuid.uuid4().hex[:12]}"


FAST = RetryPolicy(max_retries=3, backoff=0.02, max_backoff=0.1)


@pytest.fixture()
def client(server: Server, org: str) -> Iterator[Client]:
    c = Client(server.url, server.token(org), retry=FAST)
    yield c
    c.close()


#: What a server needs to deliver webhooks to a receiver on 127.0.0.1 over plain HTTP, fast.
WEBHOOK_ENV = {
    "FEEDGRAPH__WEBHOOKS__ALLOW_PRIVATE": "true",
    "FEEDGRAPH__WEBHOOKS__ALLOW_HTTP": "true",
    "FEEDGRAPH__WEBHOOKS__POLL_MS": "50",
}


@pytest.fixture(scope="module")
def webhook_server() -> Iterator[Server]:
    """A server that may deliver webhooks to loopback ``http://`` receivers, polling its
    outbox every 50 ms (the shared server refuses such targets, as in production)."""
    s = Server(env=WEBHOOK_ENV)
    s.start()
    yield s
    s.close()
