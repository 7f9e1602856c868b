"""The asyncio client against a real server."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from conftest import FAST, Server

import feedgraph
from feedgraph import AsyncClient, item

Q = "How do I enable sharding in the cluster?"
A = "Use the SHARD BY clause in CREATE COLLECTION."


def test_async_client_covers_the_api(server: Server, org: str) -> None:
    async def main() -> None:
        async with AsyncClient(server.url, server.token(org), retry=FAST) as c:
            assert (await c.health_check()).healthy
            key = uuid.uuid4().hex
            r = await c.submit("positive", Q, A, session_id="as", adapter_id="async_lora",
                               idempotency_key=key)  # fmt: skip
            assert (await c.submit("positive", Q, A, session_id="as", adapter_id="async_lora",
                                   idempotency_key=key)).replayed  # fmt: skip
            assert (await c.get(r.id)).session_id == "as"
            batch = await c.submit_many(item("negative", f"{Q} {i}", A, correction="Fixed.",
                                             session_id="as") for i in range(12))  # fmt: skip
            assert batch.created == 12
            ids = [f.id async for f in c.list(page_size=5)]
            assert len(ids) == 13 and ids == sorted(ids, reverse=True)
            assert len(await c.find_by_session("as")) == 13
            assert len(await c.find_by_type("negative", limit=4)) == 4
            assert (await c.stats()).total_feedback == 13
            assert (await c.aggregate(1)).count_by_type == {"positive": 1, "negative": 12}
            assert (await c.link(r.id, "other_lora")).created
            assert [f.id async for f in c.by_adapter("other_lora")] == [r.id]
            assert len(await c.history(r.id)) >= 1
            q = await c.query("MATCH (a:Adapter) RETURN a.id ORDER BY a.id")
            assert ["async_lora"] in q.rows
            await c.create_adapter("async_base")
            assert (await c.get_adapter("async_base"))["id"] == "async_base"
            claimed = await c.claim_batch(limit=3)
            assert claimed["count"] == 3
            assert (await c.export_batch(claimed["batch_id"], "sft")).items == 3
            await c.commit_batch(claimed["batch_id"])
            with pytest.raises(feedgraph.NotFoundError):
                await c.get("feedback-01AAAAAAAAAAAAAAAAAAAAAAAA")
            for i in range(40):
                c.feedback("positive", f"{Q} {i}", A, session_id="as-bg")
            assert await asyncio.to_thread(c.flush, 30)
            assert len(await c.find_by_session("as-bg")) == 40

    asyncio.run(main())
