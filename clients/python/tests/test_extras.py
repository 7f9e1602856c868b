"""The collector, the operation context and the in-memory test double."""

from __future__ import annotations

import pytest

import feedgraph
from feedgraph import Client, FeedbackCollector
from feedgraph.testing import InMemoryClient

Q = "How do I enable sharding in the cluster?"
A = "Use the SHARD BY clause in CREATE COLLECTION."


def test_collector_on_a_real_server(client: Client) -> None:
    col = FeedbackCollector(client, model_version="llama-2-7b", session_id="col",
                            metadata={"app": "docs"})  # fmt: skip
    fid = col.collect_thumbs(True, question=Q, answer=A, wait=True)
    f = client.get(fid)
    assert (f.type, f.model_version, f.metadata) == ("positive", "llama-2-7b", {"app": "docs"})
    col.collect_correction(question=Q, original="It cannot be done.", corrected=A)
    with col.context("answer", question=Q, route="/ask") as op:
        op.set_result("Sharding is not supported.")
    op.thumbs_down(correction=A)
    assert client.flush(timeout=30)
    negs = col.get_feedback("negative")
    assert len(negs) == 2 and all(n.correction == A for n in negs)
    ctx = next(n for n in negs if "operation" in n.metadata)
    assert ctx.metadata["operation"] == "answer" and ctx.metadata["route"] == "/ask"
    assert ctx.metadata["app"] == "docs" and "duration_ms" in ctx.metadata
    assert col.aggregate(1).total_count == 3


def test_the_in_memory_double_keeps_the_rules() -> None:
    fake = InMemoryClient()
    a = fake.submit("positive", Q, A, session_id="s", score=5)
    assert fake.submit("negative", Q, A, idempotency_key="k").id == fake.submit(
        "negative", Q, A, idempotency_key="k"
    ).id
    with pytest.raises(feedgraph.ConflictError):
        fake.submit("positive", Q, A, idempotency_key="k")
    with pytest.raises(feedgraph.ValidationError):
        fake.submit("sideways", Q, A)
    with pytest.raises(feedgraph.NotFoundError):
        fake.get("feedback-nope")
    fake.feedback("positive", Q, A)
    assert fake.flush() and [f.id for f in fake.find_by_session("s")] == [a.id]
    assert len(fake.find_by_type("positive")) == 2
    page = fake.list_page(limit=2)
    assert len(page.feedback) == 2 and page.next_cursor is not None
    assert len(fake.list_page(cursor=page.next_cursor).feedback) == 1
    summary = fake.aggregate(24)
    assert summary.total_count == 3 and summary.average_rating == 5.0
    assert fake.health_check().healthy
    col = FeedbackCollector(fake)
    col.collect_thumbs(False, question=Q, answer=A, wait=True)
    assert fake.stats().negative_count == 2
