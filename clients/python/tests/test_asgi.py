"""The ASGI middleware in a real Starlette app, sending to a real server."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from feedgraph import Client
from feedgraph.asgi import FeedbackMiddleware


async def ask(request: Request) -> JSONResponse:
    body = await request.json()
    return JSONResponse({"answer": f"To {body['question'].lower()} use SHARD BY."})


def test_middleware_captures_answers_and_serves_the_feedback_route(client: Client) -> None:
    app = Starlette(routes=[Route("/ask", ask, methods=["POST"])])
    app.add_middleware(FeedbackMiddleware, client=client, capture_paths=["/ask"],
                       defaults={"model_version": "docs-bot-1"})  # fmt: skip
    with TestClient(app) as web:
        r = web.post("/ask", json={"question": "Enable sharding"})
        assert r.status_code == 200
        interaction = r.headers["x-interaction-id"]
        fb = web.post("/feedback", json={"interaction_id": interaction, "type": "negative",
                                         "correction": "Use SHARD BY in CREATE COLLECTION.",
                                         "session_id": "web"})  # fmt: skip
        assert fb.status_code == 202 and fb.json()["queued"] is True
        bad = web.post("/feedback", json={"interaction_id": "nope", "type": "positive"})
        assert bad.status_code == 400 and "interaction_id" in bad.json()["details"]
        assert web.post("/feedback", json={"type": "sideways"}).status_code == 400
        assert web.post("/feedback", content=b"{").status_code == 400
    assert client.flush(timeout=30)
    [item] = client.find_by_session("web")
    assert item.question == "Enable sharding"
    assert item.answer == "To enable sharding use SHARD BY."
    assert item.interaction_id == interaction and item.model_version == "docs-bot-1"
    assert item.correction == "Use SHARD BY in CREATE COLLECTION."
