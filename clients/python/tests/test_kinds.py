"""Every kind of feedback through the collector and the clients against a real server,
the score-config rules (admin-only writes, versions, checks on submit and in batches),
the kind-aware summary, the kind exports, and the in-memory double's kind rules."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from conftest import FAST, Server

import feedgraph
from feedgraph import AsyncClient, Client, FeedbackCollector, item
from feedgraph.testing import InMemoryClient

Q = "How do I rotate the API key of a project?"
A = "Open Settings, then Keys, and press Rotate."


def test_every_kind_through_the_collector(client: Client) -> None:
    client.put_score_config("stars", "numeric", min=1, max=5, threshold=4)
    client.put_score_config("topic", "categorical", categories=["billing", "auth"])
    col = FeedbackCollector(client, model_version="m1", provider="openai")
    ids = [
        col.collect_thumbs(True, question=Q, answer=A, wait=True),
        col.collect_rating(5, question=Q, answer=A, score_config="stars", wait=True),
        col.collect_rating(2, question=Q, answer="Ask support.", score_config="stars", wait=True),
        col.collect_text("Clear steps.", question=Q, answer=A, type="positive", wait=True),
        col.collect_correction(question=Q, original="You cannot.", corrected=A, wait=True),
        col.collect_label("auth", input_data={"ticket": "key rotation"}, answer=A,
                          score_config="topic", wait=True),  # fmt: skip
    ]
    got = [client.get(i) for i in ids]
    assert [f.kind for f in got] == ["thumbs", "rating", "rating", "text", "correction", "label"]
    assert [f.type for f in got] == ["positive", "positive", "negative", "positive", "negative", "positive"]
    assert all(f.provider == "openai" for f in got)
    assert got[5].label == "auth" and got[5].question == '{"ticket": "key rotation"}'
    assert got[1].score_config == "stars"
    # Background sending carries the kinds too.
    col.collect_label("billing", input_data="Why two charges?", answer="A retried payment.")
    assert client.flush(timeout=30)
    s = client.summary(window_hours=1)
    assert s.total_count == 7
    assert s.count_by_kind == {"thumbs": 1, "rating": 2, "text": 1, "correction": 1, "label": 2}
    assert s.label_distribution == {"auth": 1, "billing": 1}
    assert s.ratings_by_config["stars"] == {"count": 2, "average": 3.5}
    assert s.by_provider["openai"]["total_count"] == 7


def test_score_config_rules(server: Server, org: str, client: Client) -> None:
    user = Client(server.url, server.token(org, "ursula", "user"), retry=FAST)
    with pytest.raises(feedgraph.ForbiddenError):
        user.put_score_config("stars", "numeric", min=1, max=5)
    assert client.put_score_config("stars", "numeric", min=1, max=5)["result"] == "created"
    assert client.put_score_config("stars", "numeric", min=1, max=5)["result"] == "unchanged"
    assert client.put_score_config("stars", "numeric", min=1, max=10)["result"] == "updated"
    assert user.get_score_config("stars").version == 2
    assert [c.name for c in user.score_configs()] == ["stars"]
    assert len(user.score_config_history("stars")) == 2
    with pytest.raises(feedgraph.ValidationError) as e:
        client.put_score_config("bad", "numeric", min=5, max=1)
    assert "'max'" in str(e.value.details)
    with pytest.raises(feedgraph.NotFoundError):
        user.get_score_config("nope")
    col = FeedbackCollector(user)
    bads: list[Callable[[], str]] = [
        lambda: col.collect_rating(11, question=Q, answer=A, score_config="stars", wait=True),
        lambda: col.collect_rating(3, question=Q, answer=A, score_config="missing", wait=True),
        lambda: col.collect_rating(3, question=Q, answer=A, wait=True),
    ]
    for bad in bads:
        with pytest.raises(feedgraph.ValidationError):
            bad()
    assert user.stats().total_feedback == 0, "a refused submit stores nothing"
    result = user.submit_many([
        {**item(None, Q, A), "kind": "rating", "score": 7, "score_config": "stars", "type": "positive"},
        {**item(None, Q, A), "kind": "rating", "score": 70, "score_config": "stars", "type": "positive"},
    ])  # fmt: skip
    assert [r.status for r in result.results] == [201, 400]
    user.close()


def test_kind_exports(server: Server, org: str, client: Client) -> None:
    client.put_score_config("stars", "numeric", min=1, max=5, threshold=4)
    col = FeedbackCollector(client)
    col.collect_rating(5, question=Q, answer=A, score_config="stars", wait=True)
    col.collect_rating(2, question=Q, answer="Ask support.", score_config="stars", wait=True)
    col.collect_label("auth", input_data=Q, answer=A, wait=True)
    trainer = Client(server.url, server.token(org, "tina", "trainer"), retry=FAST)
    batch = trainer.claim_batch(limit=10)
    pairs = trainer.export_batch(batch["batch_id"], "preference")
    assert [p["margin"] for p in pairs.lines] == [3.0]
    assert pairs.lines[0]["chosen"] == A
    labels = trainer.export_batch(batch["batch_id"], "labels")
    assert labels.lines == [{"prompt": Q, "label": "auth"}]
    kto = trainer.export_batch(batch["batch_id"], "kto")
    assert [r["label"] for r in kto.lines] == [True, False]
    trainer.close()


def test_the_async_client_has_the_kinds(server: Server, org: str) -> None:
    async def run() -> None:
        async with AsyncClient(server.url, server.token(org), retry=FAST) as c:
            await c.put_score_config("ok", "boolean")
            assert (await c.get_score_config("ok")).data_type == "boolean"
            assert len(await c.score_configs()) == 1
            assert len(await c.score_config_history("ok")) == 1
            r = await c.submit(None, Q, A, extra={"kind": "rating", "score": 1, "score_config": "ok"})
            assert (r.kind, r.type) == ("rating", "positive")
            assert (await c.summary()).count_by_kind["rating"] == 1

    asyncio.run(run())


def test_the_in_memory_double_keeps_the_kind_rules() -> None:
    fake = InMemoryClient()
    fake.put_score_config("stars", "numeric", min=1, max=5, threshold=4)
    fake.put_score_config("topic", "categorical", categories=["billing"])
    col = FeedbackCollector(fake)
    fid = col.collect_rating(4, question=Q, answer=A, score_config="stars", wait=True)
    assert (fake.get(fid).kind, fake.get(fid).type) == ("rating", "positive")
    assert fake.get(col.collect_correction(question=Q, original="No.", corrected=A, wait=True)).type == "negative"
    bads: list[Callable[[], str]] = [
        lambda: col.collect_rating(9, question=Q, answer=A, score_config="stars", wait=True),
        lambda: col.collect_label("shipping", input_data=Q, answer=A, score_config="topic", wait=True),
        lambda: col.collect_rating(3, question=Q, answer=A, score_config="nope", wait=True),
        lambda: col.collect_rating(3, question=Q, answer=A, wait=True),
    ]
    for bad in bads:
        with pytest.raises(feedgraph.ValidationError):
            bad()
    assert fake.put_score_config("stars", "numeric", min=1, max=5, threshold=4)["result"] == "unchanged"
    assert fake.get_score_config("stars").version == 1
