"""Erasure, webhooks, signature checks and ``kind=`` filters against a real server, the
async client's mirror of them, and the in-memory double's erasure."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import FAST, Server

import feedgraph
from feedgraph import AsyncClient, Client, verify_signature
from feedgraph.testing import InMemoryClient

Q = "Which port does the admin console listen on?"
A = "Port 9443, unless admin.port says otherwise."


# -- erasure -------------------------------------------------------------------------------


def test_erase_one_item(client: Client) -> None:
    r = client.submit("negative", Q, A, correction="Port 9443.", comment="wrong port",
                      user_id="ana", session_id="s-1", metadata={"ticket": 7})  # fmt: skip
    keep = client.submit("positive", Q, A, user_id="ana")
    receipt = client.erase_item(r.id)
    assert isinstance(receipt, feedgraph.ErasureReceipt)
    assert receipt.scope == "item" and receipt.subject == r.id
    assert receipt.state == "done" and receipt.item_ids == [r.id] and receipt.items == 1
    assert receipt.versions >= 1 and receipt.finished_at is not None
    gone = client.get(r.id)
    assert (gone.question, gone.answer) == ("", "")
    assert gone.correction is None and gone.comment is None and gone.metadata == {}
    assert gone.user_id is None and gone.session_id is None
    assert gone.raw.get("erased_at") is not None
    assert gone.type == "negative"  # the tombstone keeps the type
    assert client.get(keep.id).question == Q
    assert client.get_erasure(receipt.id) == receipt
    # Erasing again is harmless; unknown ids and bad scopes are refused.
    assert client.erase("item", r.id).items == 1
    with pytest.raises(feedgraph.NotFoundError):
        client.erase_item("feedback-00000000000000000000000000")
    with pytest.raises(ValueError):
        client.erase("tenant", "x")
    # The store rewrite makes the erased bytes leave the disk now; the receipt says when.
    assert receipt.bytes_gone_at is None and receipt.bytes_due_by is not None
    out = client.compact()
    assert isinstance(out, feedgraph.CompactOutcome)
    assert out.backend == "sled" and out.done and out.rewrite is not None
    assert out.rewrite["keys"] > 0
    assert client.get_erasure(receipt.id).bytes_gone_at is not None
    assert client.compact().done is False  # nothing left to rewrite


def test_erase_a_user_and_page_the_receipts(client: Client) -> None:
    mine = [client.submit("positive", f"{Q} {i}", A, user_id="bo").id for i in range(3)]
    other = client.submit("positive", Q, A, user_id="cy").id
    receipt = client.erase("user", "bo")
    assert receipt.scope == "user" and receipt.items == 3
    assert sorted(receipt.item_ids) == sorted(mine)
    assert receipt.subject == "sha256:" + hashlib.sha256(b"bo").hexdigest()
    assert "bo" not in json.dumps(receipt.raw).replace(receipt.subject, "")
    assert all(client.get(i).question == "" for i in mine)
    assert client.get(other).question == Q
    session = client.erase("session", "no-such-session")
    assert session.items == 0 and session.item_ids == []
    # Newest first, the same page by page as in one go, and capped by limit.
    ids = [e.id for e in client.erasures()]
    assert ids == [session.id, receipt.id]
    assert [e.id for e in client.erasures(page_size=1)] == ids
    assert [e.id for e in client.erasures(limit=1)] == [session.id]
    page = client.erasures_page(limit=1)
    assert [e.id for e in page.erasures] == [session.id] and page.next_before is not None
    assert [e.id for e in client.erasures_page(limit=1, before=page.next_before).erasures] == [receipt.id]


def test_erasure_is_admin_only(server: Server, org: str, client: Client) -> None:
    r = client.submit("positive", Q, A)
    with Client(server.url, server.token(org, "uma", "user"), retry=FAST) as user:
        with pytest.raises(feedgraph.ForbiddenError):
            user.erase_item(r.id)
        with pytest.raises(feedgraph.ForbiddenError):
            [*user.erasures()]
    assert client.get(r.id).question == Q


# -- kind= filters -------------------------------------------------------------------------


def test_kind_filters_list_and_by_adapter(client: Client) -> None:
    thumbs = client.submit("positive", Q, A, adapter_id="kind_lora").id
    rating = client.submit("positive", Q, A, extra={"kind": "rating"}, score=4,
                           adapter_id="kind_lora").id  # fmt: skip
    text = client.submit("negative", Q, A, extra={"kind": "text"}, comment="Too vague.").id
    assert [f.id for f in client.list(kind="rating")] == [rating]
    assert [f.id for f in client.list(kind="text")] == [text]
    assert [f.id for f in client.list(kind="thumbs")] == [thumbs]
    assert [f.id for f in client.list_page(kind="rating").feedback] == [rating]
    assert [f.id for f in client.list(kind="correction")] == []
    assert [f.id for f in client.by_adapter("kind_lora", kind="rating")] == [rating]
    assert [f.id for f in client.by_adapter_page("kind_lora", kind="thumbs").feedback] == [thumbs]
    with pytest.raises(feedgraph.ValidationError):
        [*client.list(kind="stars")]


# -- signatures ----------------------------------------------------------------------------


def _sign(secret: str, t: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), str(t).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def test_verify_signature_rules() -> None:
    body = b'{"id":"evt-1"}'
    now = int(time.time())
    header = _sign("whsec_0123456789abcdef", now, body)
    assert verify_signature("whsec_0123456789abcdef", header, body)
    assert verify_signature(b"whsec_0123456789abcdef", header, body.decode())
    assert not verify_signature("whsec_other_secret_xx", header, body)
    assert not verify_signature("whsec_0123456789abcdef", header, body + b" ")
    old = _sign("whsec_0123456789abcdef", now - 301, body)
    assert not verify_signature("whsec_0123456789abcdef", old, body)
    assert verify_signature("whsec_0123456789abcdef", old, body, tolerance=600)
    assert verify_signature("whsec_0123456789abcdef", old, body, tolerance=0)
    for bad in (None, "", "v1=abc", f"t=abc,v1={'0' * 64}", "t=1,t=2,v1=00", "garbage", "t=1,v1=é"):
        assert not verify_signature("whsec_0123456789abcdef", bad, body, tolerance=0)


# -- webhooks ------------------------------------------------------------------------------


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


class Receiver:
    """A tiny HTTP receiver on 127.0.0.1 that records every POST and answers ``status``."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.status = 200
        self.cond = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the name http.server calls)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with outer.cond:
                    outer.requests.append(Received({k.lower(): v for k, v in self.headers.items()}, body))
                    outer.cond.notify_all()
                self.send_response(outer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, n: int, timeout: float = 20) -> list[Received]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.requests) >= n, timeout), (
                f"{len(self.requests)} of {n} deliveries arrived in {timeout} s"
            )
            return list(self.requests)

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _until(check: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_webhook_targets_are_checked(client: Client) -> None:
    # The shared server keeps the production allow-list: no loopback, no plain http.
    with pytest.raises(feedgraph.ValidationError):
        client.create_webhook("http://127.0.0.1:9/hook", ["feedback.submitted"])
    with pytest.raises(feedgraph.ValidationError):
        client.create_webhook("https://127.0.0.1:9/hook", ["feedback.submitted"])
    assert client.webhooks() == []


def test_webhook_crud(webhook_server: Server, org: str, receiver: Receiver) -> None:
    client = Client(webhook_server.url, webhook_server.token(org), retry=FAST)
    hook = client.create_webhook(receiver.url, ["feedback.submitted"], description="ops")
    assert isinstance(hook, feedgraph.Webhook)
    assert hook.id.startswith("wh-") and hook.secret and hook.enabled
    assert hook.events == ["feedback.submitted"] and hook.description == "ops"
    assert [h.id for h in client.webhooks()] == [hook.id]
    got = client.get_webhook(hook.id)
    assert got.secret is None and got.url == hook.url and got.pending == 0
    off = client.update_webhook(hook.id, enabled=False, events=["feedback.erased", "batch.committed"])
    assert not off.enabled and sorted(off.events) == ["batch.committed", "feedback.erased"]
    assert client.update_webhook(hook.id, enabled=True).enabled
    with pytest.raises(feedgraph.ValidationError):
        client.update_webhook(hook.id, events=["no.such.event"])
    assert client.deliveries_page(hook.id).deliveries == []
    client.delete_webhook(hook.id)
    assert client.webhooks() == []
    with pytest.raises(feedgraph.NotFoundError):
        client.get_webhook(hook.id)
    client.close()


def test_webhook_delivery_signature_and_redelivery(webhook_server: Server, org: str,
                                                   receiver: Receiver) -> None:  # fmt: skip
    with Client(webhook_server.url, webhook_server.token(org), retry=FAST) as c:
        secret = "whsec_test_0123456789abcdef"
        hook = c.create_webhook(receiver.url, ["feedback.submitted", "feedback.erased"], secret=secret)
        assert hook.secret == secret
        r = c.submit("positive", Q, A, user_id="dee")
        first = receiver.wait_for(1)[0]
        assert verify_signature(secret, first.headers["feedgraph-signature"], first.body)
        assert not verify_signature("whsec_wrong_secret_000", first.headers["feedgraph-signature"], first.body)
        event = json.loads(first.body)
        assert event["type"] == "feedback.submitted" and event["data"]["feedback_id"] == r.id
        assert first.headers["feedgraph-event-id"] == event["id"]
        assert Q not in first.body.decode()  # events carry ids, never the text

        _until(lambda: any(d.ok for d in c.deliveries(hook.id)))
        [logged] = [*c.deliveries(hook.id)]
        assert isinstance(logged, feedgraph.Delivery)
        assert logged.ok and logged.status == 200 and logged.attempt == 1 and not logged.manual
        assert logged.event == "feedback.submitted" and logged.event_id == event["id"]
        assert isinstance(logged.payload, dict) and logged.payload["id"] == event["id"]

        assert c.redeliver(hook.id, logged.id)["status"] == "queued"
        again = receiver.wait_for(2)[1]
        assert json.loads(again.body)["id"] == event["id"]
        assert verify_signature(secret, again.headers["feedgraph-signature"], again.body)
        _until(lambda: len([*c.deliveries(hook.id)]) == 2)
        assert [d.manual for d in c.deliveries(hook.id)] == [True, False]
        assert [d.id for d in c.deliveries(hook.id, page_size=1)] == [d.id for d in c.deliveries(hook.id)]

        # An erasure is announced too, without the erased text.
        c.erase("user", "dee")
        erased = receiver.wait_for(3)[2]
        assert json.loads(erased.body)["type"] == "feedback.erased"
        assert verify_signature(secret, erased.headers["feedgraph-signature"], erased.body)
        c.delete_webhook(hook.id)


# -- async ---------------------------------------------------------------------------------


def test_async_erasure_webhooks_and_kinds(webhook_server: Server, org: str,
                                          receiver: Receiver) -> None:  # fmt: skip
    server = webhook_server

    async def main() -> None:
        async with AsyncClient(server.url, server.token(org), retry=FAST) as c:
            r = await c.submit("positive", Q, A, session_id="as-1", adapter_id="async_kind_lora")
            rating = await c.submit("positive", Q, A, extra={"kind": "rating"}, score=3)
            assert [f.id async for f in c.list(kind="rating")] == [rating.id]
            assert [f.id for f in (await c.list_page(kind="thumbs")).feedback] == [r.id]
            assert [f.id async for f in c.by_adapter("async_kind_lora", kind="thumbs")] == [r.id]
            receipt = await c.erase("session", "as-1")
            assert receipt.item_ids == [r.id]
            assert (await c.get(r.id)).question == ""
            item_receipt = await c.erase_item(rating.id)
            assert [e.id async for e in c.erasures(page_size=1)] == [item_receipt.id, receipt.id]
            assert (await c.erasures_page()).next_before is None
            assert await c.get_erasure(receipt.id) == receipt
            hook = await c.create_webhook(receiver.url, ["batch.claimed"])
            assert [h.id for h in await c.webhooks()] == [hook.id]
            assert not (await c.update_webhook(hook.id, enabled=False)).enabled
            assert (await c.get_webhook(hook.id)).enabled is False
            assert [d async for d in c.deliveries(hook.id)] == []
            assert (await c.deliveries_page(hook.id, limit=5)).next_cursor is None
            await c.delete_webhook(hook.id)
            assert await c.webhooks() == []

    asyncio.run(main())


# -- the in-memory double ------------------------------------------------------------------


def test_in_memory_erasure() -> None:
    fake = InMemoryClient()
    a = fake.submit("positive", Q, A, user_id="eve", comment="fine").id
    b = fake.submit("negative", Q, A, user_id="eve", session_id="s").id
    c = fake.submit("positive", Q, A, extra={"kind": "rating"}, score=5).id
    assert [f.id for f in fake.list(kind="rating")] == [c]
    receipt = fake.erase("user", "eve")
    assert receipt.items == 2 and receipt.item_ids == sorted([a, b])
    assert receipt.subject == "sha256:" + hashlib.sha256(b"eve").hexdigest()
    assert fake.get(a).question == "" and fake.get(a).comment is None and fake.get(b).session_id is None
    assert fake.get(c).question == Q
    second = fake.erase_item(c)
    assert [e.id for e in fake.erasures()] == [second.id, receipt.id]
    page = fake.erasures_page(limit=1)
    assert [e.id for e in page.erasures] == [second.id]
    assert [e.id for e in fake.erasures_page(before=page.next_before).erasures] == [receipt.id]
    assert fake.get_erasure(receipt.id) == receipt
    with pytest.raises(feedgraph.NotFoundError):
        fake.erase_item("feedback-missing")
    with pytest.raises(feedgraph.ValidationError):
        fake.erase("org", "x")
    with pytest.raises(NotImplementedError, match="webhooks"):
        fake.create_webhook("https://example.com", ["feedback.submitted"])


# -- coverage of the OpenAPI document ------------------------------------------------------


def test_every_openapi_operation_has_a_client_method(client: Client) -> None:
    """Calls every method of the sync client through a recording transport, and checks
    that each operation the server's OpenAPI document lists was requested."""
    import re

    import httpx

    spec = client.openapi()["paths"]
    wanted = {(m.upper(), p) for p, ops in spec.items() for m in ops
              if m in ("get", "post", "put", "patch", "delete")}  # fmt: skip
    patterns = [(p, re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", p) + "$")) for _, p in wanted]
    seen: set[tuple[str, str]] = set()

    def record(request: httpx.Request) -> httpx.Response:
        for template, rx in patterns:
            if rx.match(request.url.path):
                seen.add((request.method, template))
        return httpx.Response(204 if request.method == "DELETE" else 200, json={})

    with Client("http://fg.test", "t", transport=httpx.MockTransport(record)) as c:
        c.submit("positive", Q, A)
        c.submit_many([feedgraph.item("positive", Q, A)])
        c.get("f"), c.list_page(), c.stats(), c.summary(), c.link("f", "a"), c.by_adapter_page("a")
        c.history("f"), c.impact("f"), c.review("f", "approved", "ok"), c.mark_used(["f"])
        c.erase_item("f"), c.erase("user", "u"), c.erasures_page(), c.get_erasure("e")
        c.compact()
        c.create_adapter("a"), c.get_adapter("a"), c.lineage("a"), c.descendants("a")
        c.claim_batch(), c.list_batches(), c.get_batch(1), c.commit_batch(1), c.abort_batch(1)
        c.export_batch(1), c.query("MATCH (n) RETURN n"), c.named_queries(), c.run_named("q")
        c.put_score_config("s", "numeric"), c.get_score_config("s"), c.score_configs()
        c.score_config_history("s"), c.create_webhook("https://h.example", ["batch.claimed"])
        c.webhooks(), c.get_webhook("w"), c.update_webhook("w", enabled=True)
        c.delete_webhook("w")
        c.deliveries_page("w"), c.redeliver("w", "d"), c.metrics(), c.openapi(), c.health_check()
    assert sorted(wanted - seen) == []
