"""Every method of the sync client against a real server, and each error kind."""

from __future__ import annotations

import uuid

import httpx
import pytest
from conftest import FAST, Server

import feedgraph
from feedgraph import Client, RetryPolicy, item

Q = "How do I enable sharding in the cluster?"
A = "Use the SHARD BY clause in CREATE COLLECTION."


def test_health_check(client: Client) -> None:
    h = client.health_check()
    assert h.alive and h.ready and h.healthy, h
    down = Client("http://127.0.0.1:9", "x").health_check(timeout=1)
    assert not down.healthy and "unreachable" in down.detail


def test_submit_get_link_history_impact(client: Client) -> None:
    r = client.submit(
        "positive", Q, A, user_id="u1", session_id="s1", model_version="llama-2-7b",
        adapter_id="help_lora", score=4.5, metadata={"lang": "en"},
    )  # fmt: skip
    assert r.id.startswith("feedback-") and r.validation_status == "approved" and not r.replayed
    f = client.get(r.id)
    assert (f.question, f.answer, f.session_id, f.score) == (Q, A, "s1", 4.5)
    assert f.metadata == {"lang": "en"} and f.adapter_id == "help_lora"
    link = client.link(r.id, "help_lora_v2", {"confidence": 0.9})
    assert link.created and link.adapter_id == "help_lora_v2"
    assert not client.link(r.id, "help_lora_v2", {"confidence": 0.9}).created
    assert [x.id for x in client.by_adapter("help_lora_v2")] == [r.id]
    page = client.by_adapter_page("help_lora_v2")
    assert page.raw["total_linked"] == 1
    versions = client.history(r.id)
    assert len(versions) >= 1
    assert client.impact(r.id)["feedback_id"] == r.id


def test_lists_page_with_cursors(client: Client) -> None:
    result = client.submit_many(
        item("positive" if i % 3 else "negative", f"{Q} ({i})", f"{A} ({i})",
             session_id="sess-a" if i < 20 else "sess-b", correction="Fixed." if i % 3 == 0 else None)
        for i in range(25)
    )  # fmt: skip
    assert (result.created, result.failed) == (25, 0)
    ids = [r.result.id for r in result.results if r.result]
    listed = [f.id for f in client.list(page_size=10)]
    assert listed == sorted(ids, reverse=True)
    assert [f.id for f in client.list(page_size=4, limit=7)] == listed[:7]
    assert len(client.find_by_session("sess-a")) == 20
    negs = client.find_by_type("negative", limit=100)
    assert len(negs) == 9 and all(f.type == "negative" for f in negs)
    assert len(client.find_by_type("positive", limit=5)) == 5
    page = client.list_page(limit=10)
    assert len(page.feedback) == 10 and page.next_cursor == page.feedback[-1].id


def test_submit_many_splits_large_batches(client: Client) -> None:
    long = "A long answer about sharding. " * 40  # ~1.2 KB: 1500 items need several requests
    result = client.submit_many(
        item("positive", f"{Q} {i}", long, session_id="big") for i in range(1500)
    )
    assert (result.created, result.failed, len(result.results)) == (1500, 0, 1500)
    assert [r.index for r in result.results] == list(range(1500))
    assert len(client.find_by_session("big")) == 1500


def test_stats_and_aggregate(client: Client) -> None:
    client.submit_many([item("positive", Q, A, score=4.0), item("positive", Q, A, score=2.0),
                        item("negative", Q, A, correction="It is different.")])  # fmt: skip
    s = client.stats()
    assert (s.total_feedback, s.positive_count, s.negative_count) == (3, 2, 1)
    assert s.average_score == 3.0
    summary = client.aggregate(window_hours=1)
    assert summary.total_count == 3 and summary.count_by_type == {"positive": 2, "negative": 1}
    assert abs(summary.positive_ratio - 2 / 3) < 1e-9 and summary.average_rating == 3.0


def test_adapters_training_and_review(client: Client) -> None:
    client.create_adapter("base", base_model="llama-2-7b")
    client.create_adapter("child", derived_from="base", version="v1")
    assert client.get_adapter("child")["derived_from"] == "base"
    assert [a["id"] for a in client.lineage("child")["lineage"]] == ["base"]
    assert [d["id"] for d in client.descendants("base")["descendants"]] == ["child"]
    good = client.submit("positive", Q, A, adapter_id="child")
    fixed = client.submit("negative", Q, "It is not possible.", correction=A, adapter_id="child")
    flagged = client.submit("negative", Q, "Use DROP SHARD with its id.", adapter_id="child")
    assert flagged.validation_status == "flagged"
    reviewed = client.review(flagged.id, "approved", "checked by hand")
    assert reviewed["feedback"]["validation_status"] == "approved"
    batch = client.claim_batch(adapter_id="child", lease_seconds=600)
    assert batch["count"] == 3
    bid = batch["batch_id"]
    kto = client.export_batch(bid, "kto")
    assert kto.items == 3 and {line["label"] for line in kto.lines} == {True, False}
    dpo = client.export_batch(bid, "dpo")
    assert [line["chosen"] for line in dpo.lines] == [A]
    assert client.get_batch(bid)["state"] == "leased"
    client.commit_batch(bid, trained_adapter_id="child_v2")
    assert [b["batch_id"] for b in client.list_batches(trained_adapter_id="child_v2")["batches"]] == [bid]
    assert client.get(good.id).used_for_training and client.get(fixed.id).training_batch_id == bid
    other = client.submit("positive", Q, A)
    marked = client.mark_used([other.id])
    assert marked["marked"] == 1
    empty = client.claim_batch(limit=5)
    assert empty["count"] == 0
    third = client.submit("positive", Q, A, adapter_id="solo")
    b2 = client.claim_batch(adapter_id="solo")
    assert client.abort_batch(b2["batch_id"])["state"] == "aborted"
    assert not client.get(third.id).used_for_training


def test_graph_queries_metrics_and_openapi(client: Client) -> None:
    client.submit("positive", Q, A, adapter_id="qa_lora")
    q = client.query(
        "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a:Adapter {id: $a}) RETURN f.type AS t, a.id AS a",
        {"a": "qa_lora"},
    )
    assert q.columns == ["t", "a"] and q.records() == [{"t": "positive", "a": "qa_lora"}]
    names = [n["name"] for n in client.named_queries()["queries"]]
    assert "adapter_stats" in names
    stats = client.run_named("adapter_stats")
    assert "adapter_id" in stats.columns
    assert "feedgraph" in client.metrics()
    assert "/api/v1/llm/feedback/batch" in client.openapi()["paths"]


def test_idempotent_retries_store_once(client: Client) -> None:
    key = uuid.uuid4().hex
    first = client.submit("positive", Q, A, idempotency_key=key)
    again = client.submit("positive", Q, A, idempotency_key=key)
    assert again.replayed and again.id == first.id
    batch = [item("positive", Q, A, idempotency_key=f"{key}-{i}") for i in range(5)]
    assert client.submit_many(batch).created == 5
    replay = client.submit_many(batch)
    assert (replay.created, replay.replayed) == (0, 5)
    assert client.stats().total_feedback == 6


def test_each_error_kind(server: Server, client: Client, org: str) -> None:
    with pytest.raises(feedgraph.AuthenticationError) as e:
        Client(server.url, "not-a-token", retry=FAST).get("feedback-x")
    assert e.value.status == 401 and e.value.error == "Unauthorized" and e.value.details
    user = Client(server.url, server.token(org, "bob", "user"), retry=FAST)
    with pytest.raises(feedgraph.ForbiddenError) as f:
        user.create_adapter("nope")
    assert f.value.status == 403 and "admin" in (f.value.details or "")
    with pytest.raises(feedgraph.NotFoundError) as n:
        client.get("feedback-01AAAAAAAAAAAAAAAAAAAAAAAA")
    assert n.value.status == 404
    with pytest.raises(feedgraph.ValidationError) as v:
        client.submit("sideways", Q, A)
    assert v.value.status == 400 and "type" in (v.value.details or "")
    with pytest.raises(feedgraph.ConflictError) as c:
        client.submit("positive", Q, A, idempotency_key="k1")
        client.submit("negative", Q, A, correction="x y z", idempotency_key="k1")
    assert c.value.status == 409
    bad = client.submit_many([item("positive", Q, A), {"type": "positive"}])
    assert bad.created == 1 and bad.failed == 1
    assert bad.results[1].status == 400 and "question" in (bad.results[1].details or "")
    with pytest.raises(feedgraph.ConnectionFailed):
        Client("http://127.0.0.1:9", "x", retry=RetryPolicy(max_retries=1, backoff=0.01)).get("a")


def test_rate_limited_and_unavailable_are_retried_then_raised() -> None:
    calls: list[int] = []
    answers = [
        httpx.Response(429, headers={"Retry-After": "0"},
                       json={"error": "Too Many Requests", "details": "slow down"}),
        httpx.Response(503, json={"error": "Service Unavailable", "details": "opening"}),
        httpx.Response(201, json={"id": "feedback-1", "type": "positive",
                                  "validation_status": "approved", "created_at": 1}),
    ]  # fmt: skip
    keys: set[str] = set()

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        keys.add(request.headers["idempotency-key"])
        return answers[len(calls) - 1]

    c = Client("http://fg.test", "t", transport=httpx.MockTransport(handler), retry=FAST)
    assert c.submit("positive", Q, A).id == "feedback-1"
    assert len(calls) == 3 and len(keys) == 1  # one key across the retries

    def limited(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": "7"},
                              json={"error": "Too Many Requests", "details": "slow down"})  # fmt: skip

    c = Client("http://fg.test", "t", transport=httpx.MockTransport(limited),
               retry=RetryPolicy(max_retries=0))  # fmt: skip
    with pytest.raises(feedgraph.RateLimitedError) as r:
        c.stats()
    assert r.value.status == 429 and r.value.retry_after == 7.0

    def unknown(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json={"error": "Write outcome unknown", "details": "retry"})

    seen: list[str] = []

    def claim(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return unknown(request)

    c = Client("http://fg.test", "t", transport=httpx.MockTransport(claim), retry=FAST)
    with pytest.raises(feedgraph.UnavailableError) as u:
        c.claim_batch()
    assert u.value.outcome_unknown and len(seen) == 1  # a claim is not repeated blindly


def test_retries_across_a_server_restart(server_of_my_own: Server, org: str) -> None:
    s = server_of_my_own
    c = Client(s.url, s.token(org), retry=RetryPolicy(max_retries=60, backoff=0.05, max_backoff=0.2))
    c.submit("positive", Q, A)
    s.stop()
    import threading

    restart = threading.Timer(0.7, s.start)
    restart.start()
    r = c.submit("positive", Q, A, session_id="after-restart")  # waits out the restart
    restart.join()
    assert c.get(r.id).session_id == "after-restart"
    assert c.stats().total_feedback == 2
    c.close()


def test_a_real_rate_limit_is_a_rate_limited_error_with_retry_after(org: str) -> None:
    s = Server({"FEEDGRAPH__RATE_LIMIT__ENABLED": "true", "FEEDGRAPH__RATE_LIMIT__PER_USER": "2"})
    s.start()
    try:
        c = Client(s.url, s.token(org), retry=RetryPolicy(max_retries=0))
        c.stats()
        c.stats()
        with pytest.raises(feedgraph.RateLimitedError) as e:
            c.stats()
        assert e.value.status == 429 and e.value.retry_after is not None and e.value.retry_after > 0
        c.close()
    finally:
        s.close()
