"""Background sending: every queued item arrives exactly once, through flush(), shutdown(),
a server restart and fork(); the queue's full policy."""

from __future__ import annotations

import os
import threading

import pytest
from conftest import FAST, Server

import feedgraph
from feedgraph import Client, RetryPolicy

Q = "How do I enable sharding in the cluster?"
A = "Use the SHARD BY clause in CREATE COLLECTION."


def session_ids(c: Client, session: str) -> list[str]:
    return [f.id for f in c.list(session=session, page_size=1000)]


def test_flush_sends_every_item_exactly_once(client: Client) -> None:
    keys = {client.feedback("positive", f"{Q} {i}", A, session_id="bg") for i in range(500)}
    assert len(keys) == 500
    assert client.flush(timeout=60)
    items = [client.get(i) for i in session_ids(client, "bg")]
    assert len(items) == 500
    assert sorted(f.question for f in items) == sorted(f"{Q} {i}" for i in range(500))
    assert client.background.sent == 500 and client.background.failed == 0


def test_shutdown_sends_what_is_queued_then_refuses(server: Server, org: str) -> None:
    c = Client(server.url, server.token(org), retry=FAST, batch_size=50, flush_interval=5)
    for i in range(300):
        c.feedback("negative", f"{Q} {i}", A, correction="Fixed answer.", session_id="sd")
    assert c.shutdown(timeout=60)
    with pytest.raises(feedgraph.FeedgraphError):
        c.feedback("positive", Q, A)
    check = Client(server.url, server.token(org), retry=FAST)
    assert len(session_ids(check, "sd")) == 300


def test_items_queued_while_the_server_is_down_arrive_once_after_restart(
    server_of_my_own: Server, org: str
) -> None:
    s = server_of_my_own
    token = s.token(org)
    c = Client(s.url, token, retry=RetryPolicy(max_retries=2, backoff=0.05, max_backoff=0.1),
               batch_size=20)  # fmt: skip
    for i in range(30):
        c.feedback("positive", f"{Q} {i}", A, session_id="before")
    assert c.flush(timeout=30)
    s.stop()
    for i in range(60):
        c.feedback("positive", f"{Q} {i}", A, session_id="down")
    restart = threading.Timer(0.8, s.start)
    restart.start()
    assert c.flush(timeout=60)
    restart.join()
    assert len(session_ids(c, "before")) == 30
    assert len(session_ids(c, "down")) == 60
    assert c.background.failed == 0
    c.close()


def test_refused_items_are_reported_not_retried(client: Client) -> None:
    errors: list[object] = []
    c = Client(client._settings.base_url, client._settings.token, retry=FAST,
               on_error=lambda item, why: errors.append((item["question"], why)))  # fmt: skip
    c.feedback("positive", Q, A, session_id="mixed")
    c.feedback("sideways", Q, A, session_id="mixed")
    c.feedback("positive", Q, A, session_id="mixed")
    assert c.flush(timeout=30)
    assert c.background.sent == 2 and c.background.failed == 1 and len(errors) == 1
    c.close()


def test_full_queue_policies(org: str) -> None:
    # An unreachable server and a long linger keep items in the queue.
    c = Client("http://127.0.0.1:9", "t", retry=RetryPolicy(max_retries=0, backoff=0.01),
               max_queue=5, flush_interval=30, full_policy="raise")  # fmt: skip
    for _ in range(5):
        c.feedback("positive", Q, A)
    with pytest.raises(feedgraph.QueueFull):
        c.feedback("positive", Q, A)
    assert not c.shutdown(timeout=0.5)
    assert c.background.failed == 5
    d = Client("http://127.0.0.1:9", "t", retry=RetryPolicy(max_retries=0),
               max_queue=3, flush_interval=30, full_policy="drop")  # fmt: skip
    for _ in range(5):
        d.feedback("positive", Q, A)
    assert d.background.dropped == 2
    d.shutdown(timeout=0.2)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_sends_its_own_items(client: Client) -> None:
    client.feedback("positive", Q, A, session_id="parent")
    assert client.flush(timeout=30)
    pid = os.fork()
    if pid == 0:  # the child: a fresh queue and worker of its own
        code = 1
        try:
            for i in range(20):
                client.feedback("positive", f"{Q} {i}", A, session_id="child")
            code = 0 if client.flush(timeout=30) and client.background.sent == 20 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    client.feedback("positive", Q, A, session_id="parent")
    assert client.flush(timeout=30)
    assert len(session_ids(client, "child")) == 20
    assert len(session_ids(client, "parent")) == 2
