"""ASGI middleware (Starlette, FastAPI, any ASGI app): remembers what the app answered, and
serves a feedback route that turns a user's verdict on an answer into feedback.

::

    app = Starlette(routes=[...])
    app.add_middleware(FeedbackMiddleware, client=fg, capture_paths=["/ask"])

Each request under ``capture_paths`` gets an interaction id (the client's
``x-interaction-id`` header, or a new one), returned in the ``x-interaction-id`` response
header; the request and response bodies are kept (bounded: ``max_captures`` interactions,
``max_body`` bytes each). ``POST /feedback`` (``route``) takes
``{"interaction_id", "type", "correction"?, "comment"?, "user_id"?, "session_id"?,
"metadata"?}`` and queues feedback on that interaction, with the question and answer read
from the captured bodies (``extract``; by default the ``question``/``prompt``/``input``
and ``answer``/``output``/``text`` fields of JSON bodies, else the raw text). Without a
captured interaction the body must carry ``question`` and ``answer``. It answers 202
``{"queued": true, "idempotency_key": ...}``, or 400 ``{"error", "details"}``.
"""

from __future__ import annotations

import json
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:
    from .client import AsyncClient, Client
    from .testing import InMemoryClient

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Reads (question, answer) from a captured request and response body.
Extract = Callable[[bytes, bytes], tuple[str, str]]

_PASS = {"correction", "comment", "user_id", "session_id", "model_version", "adapter_id",
         "adapter_version", "score", "metadata"}  # fmt: skip


#: Where feedback goes: the real clients or the in-memory test double (their ``feedback``
#: method queues and returns at once).
FeedbackSink = Union["Client", "AsyncClient", "InMemoryClient"]


def _field(body: bytes, names: Sequence[str]) -> str:
    text = body.decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except ValueError:
        return text
    if isinstance(data, dict):
        for n in names:
            v = data.get(n)
            if isinstance(v, str):
                return v
    return text


def default_extract(request: bytes, response: bytes) -> tuple[str, str]:
    """The question from the request, the answer from the response."""
    return (
        _field(request, ("question", "prompt", "input")),
        _field(response, ("answer", "output", "text")),
    )


class FeedbackMiddleware:
    """See the module documentation."""

    def __init__(
        self,
        app: ASGIApp,
        client: FeedbackSink,
        *,
        route: str = "/feedback",
        capture_paths: Sequence[str] = ("/",),
        max_captures: int = 1000,
        max_body: int = 64 * 1024,
        extract: Extract = default_extract,
        defaults: MutableMapping[str, Any] | None = None,
    ) -> None:
        self.app = app
        self.client = client
        self.route = route
        self.capture_paths = tuple(capture_paths)
        self.max_captures = max_captures
        self.max_body = max_body
        self.extract = extract
        self.defaults = dict(defaults or {})
        self._captures: OrderedDict[str, tuple[bytes, bytes]] = OrderedDict()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path == self.route and scope["method"] == "POST":
            await self._feedback(receive, send)
            return
        if not any(path.startswith(p) for p in self.capture_paths):
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"x-interaction-id")
        interaction = given.decode("latin-1") if given else uuid.uuid4().hex
        request = bytearray()
        response = bytearray()

        async def recv() -> Message:
            msg = await receive()
            if msg["type"] == "http.request" and len(request) < self.max_body:
                request.extend(msg.get("body", b"")[: self.max_body - len(request)])
            return msg

        async def snd(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                headers = [*msg.get("headers", []), (b"x-interaction-id", interaction.encode())]
                msg = {**msg, "headers": headers}
            elif msg["type"] == "http.response.body" and len(response) < self.max_body:
                response.extend(msg.get("body", b"")[: self.max_body - len(response)])
            await send(msg)

        await self.app(scope, recv, snd)
        self._captures[interaction] = (bytes(request), bytes(response))
        self._captures.move_to_end(interaction)
        while len(self._captures) > self.max_captures:
            self._captures.popitem(last=False)

    async def _reply(self, send: Send, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(data)).encode())]})  # fmt: skip
        await send({"type": "http.response.body", "body": data})

    async def _feedback(self, receive: Receive, send: Send) -> None:
        raw = bytearray()
        while True:
            msg = await receive()
            if msg["type"] != "http.request":
                return
            raw.extend(msg.get("body", b""))
            if len(raw) > self.max_body:
                await self._reply(send, 413, {"error": "Payload Too Large",
                                              "details": "the feedback body is too large"})  # fmt: skip
                return
            if not msg.get("more_body", False):
                break
        try:
            body = json.loads(raw)
        except ValueError as e:
            await self._reply(send, 400, {"error": "Invalid request", "details": f"malformed JSON: {e}"})
            return
        if not isinstance(body, dict):
            await self._reply(send, 400, {"error": "Invalid request", "details": "the body must be a JSON object"})
            return
        kind = body.get("type")
        if kind not in ("positive", "negative"):
            await self._reply(send, 400, {"error": "Invalid request",
                                          "details": "'type' must be positive or negative"})  # fmt: skip
            return
        interaction = body.get("interaction_id")
        question, answer = body.get("question"), body.get("answer")
        if isinstance(interaction, str) and interaction in self._captures:
            q, a = self.extract(*self._captures[interaction])
            question = question if isinstance(question, str) else q
            answer = answer if isinstance(answer, str) else a
        if not isinstance(question, str) or not isinstance(answer, str):
            await self._reply(send, 400, {"error": "Invalid request",
                                          "details": "unknown 'interaction_id': send 'question' and 'answer'"})  # fmt: skip
            return
        fields = {**self.defaults, **{k: v for k, v in body.items() if k in _PASS}}
        if isinstance(interaction, str):
            fields["interaction_id"] = interaction
        key = self.client.feedback(kind, question, answer, **fields)
        await self._reply(send, 202, {"queued": True, "idempotency_key": key})
