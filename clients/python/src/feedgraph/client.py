"""The sync :class:`Client` and the asyncio :class:`AsyncClient`.

Both cover every endpoint of the HTTP API with the same methods and names (the async ones
are coroutines, and its iterators are async iterators). Errors are raised as the classes
of :mod:`feedgraph.errors`.
"""

from __future__ import annotations

import builtins
import json
import os
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from typing import Any

import httpx

from . import _ops
from ._ops import MAX_BATCH_ITEMS, Op
from ._transport import AsyncTransport, RetryPolicy, Settings, SyncTransport
from .background import BackgroundSender, ErrorHook, FullPolicy
from .errors import FeedgraphError
from .models import (
    BatchResult,
    CompactOutcome,
    Delivery,
    DeliveryPage,
    ErasurePage,
    ErasureReceipt,
    Export,
    Feedback,
    FeedbackPage,
    Health,
    JsonObject,
    LinkResult,
    QueryResult,
    FeedbackSummary,
    ScoreConfig,
    Stats,
    SubmitResult,
    Summary,
    Webhook,
)

DEFAULT_URL = "http://127.0.0.1:8080"


def _settings(
    base_url: str | None,
    token: str | None,
    timeout: float,
    retry: RetryPolicy | None,
    transport: httpx.BaseTransport | None = None,
    async_transport: httpx.AsyncBaseTransport | None = None,
) -> Settings:
    return Settings(
        base_url=(base_url or os.environ.get("FEEDGRAPH_URL") or DEFAULT_URL).rstrip("/"),
        token=token if token is not None else os.environ.get("FEEDGRAPH_TOKEN"),
        timeout=timeout,
        retry=retry or RetryPolicy(),
        transport=transport,
        async_transport=async_transport,
    )


def _summary(stats: Stats, window_hours: int) -> Summary:
    return Summary(
        window_hours=window_hours,
        total_count=stats.total_feedback,
        count_by_type={"positive": stats.positive_count, "negative": stats.negative_count},
        positive_ratio=stats.positive_ratio,
        average_rating=stats.average_score,
    )


#: Largest body of one batch request the client builds: under the server's default
#: `server.body_limit_bytes` (256 KiB).
MAX_BATCH_BYTES = 200_000



def _score_config_body(
    name: str,
    data_type: str,
    min: float | None,
    max: float | None,
    categories: Iterable[str] | None,
    threshold: float | None,
    description: str | None,
) -> JsonObject:
    body: JsonObject = {"name": name, "data_type": data_type}
    optional: dict[str, Any] = {
        "min": min,
        "max": max,
        "categories": list(categories) if categories is not None else None,
        "threshold": threshold,
        "description": description,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    return body

def _chunks(items: list[JsonObject]) -> list[list[JsonObject]]:
    """Splits items into requests of at most 1000 items and about ``MAX_BATCH_BYTES``."""
    chunks: list[list[JsonObject]] = []
    current: list[JsonObject] = []
    size = 0
    for item in items:
        n = len(json.dumps(item, separators=(",", ":"))) + 1
        if current and (len(current) >= MAX_BATCH_ITEMS or size + n > MAX_BATCH_BYTES):
            chunks.append(current)
            current, size = [], 0
        current.append(item)
        size += n
    if current:
        chunks.append(current)
    return chunks


class _Background:
    """The background queue both clients share the code of."""

    _settings: Settings
    _sender: BackgroundSender | None
    _sender_options: dict[str, Any]

    def _background(self) -> BackgroundSender:
        if self._sender is None:
            self._sender = BackgroundSender(self._settings, **self._sender_options)
        return self._sender

    def feedback(
        self,
        type: str | None,
        question: str,
        answer: str,
        *,
        correction: str | None = None,
        comment: str | None = None,
        user_id: str | None = None,
        interaction_id: str | None = None,
        session_id: str | None = None,
        model_version: str | None = None,
        adapter_id: str | None = None,
        adapter_version: str | None = None,
        score: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> str:
        """Queues one item for background sending and returns at once (see
        :mod:`feedgraph.background` for the queue's policy). Returns the item's
        idempotency key, which identifies it in ``on_error`` reports."""
        body = _ops.feedback_body(
            type,
            question,
            answer,
            correction=correction,
            comment=comment,
            user_id=user_id,
            interaction_id=interaction_id,
            session_id=session_id,
            model_version=model_version,
            adapter_id=adapter_id,
            adapter_version=adapter_version,
            score=score,
            metadata=metadata,
            extra=extra,
        )
        key = idempotency_key or _ops.new_key()
        body["idempotency_key"] = key
        self._background().put(body)
        return key

    def flush(self, timeout: float | None = None) -> bool:
        """Waits until every queued item is answered; True when none is left."""
        return True if self._sender is None else self._sender.flush(timeout)

    def shutdown(self, timeout: float | None = None) -> bool:
        """Flushes the queue and stops the background worker."""
        return True if self._sender is None else self._sender.shutdown(timeout)

    @property
    def background(self) -> BackgroundSender:
        """The background sender (its ``sent``, ``failed`` and ``dropped`` counters)."""
        return self._background()


class Client(_Background):
    """A blocking client of one feedgraph server.

    ``base_url`` defaults to ``$FEEDGRAPH_URL`` (else ``http://127.0.0.1:8080``) and
    ``token`` to ``$FEEDGRAPH_TOKEN``. The background options (``max_queue``,
    ``batch_size``, ``flush_interval``, ``full_policy``, ``on_error``,
    ``shutdown_timeout``) configure :meth:`feedback`'s queue.
    """

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        max_queue: int = 10_000,
        batch_size: int = 200,
        flush_interval: float = 0.2,
        full_policy: FullPolicy = "block",
        on_error: ErrorHook | None = None,
        shutdown_timeout: float = 30.0,
    ) -> None:
        self._settings = _settings(base_url, token, timeout, retry, transport=transport)
        self._t = SyncTransport(self._settings)
        self._sender = None
        self._sender_options = {
            "max_queue": max_queue,
            "batch_size": batch_size,
            "flush_interval": flush_interval,
            "full_policy": full_policy,
            "on_error": on_error,
            "shutdown_timeout": shutdown_timeout,
        }

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Shuts the background queue down (sending what it holds) and closes connections."""
        self.shutdown(self._sender_options["shutdown_timeout"])
        self._t.close()

    def _run(self, op: Op[Any]) -> Any:
        return self._t.run(op)

    # -- feedback ---------------------------------------------------------------------

    def submit(
        self,
        type: str | None,
        question: str,
        answer: str,
        *,
        correction: str | None = None,
        comment: str | None = None,
        user_id: str | None = None,
        interaction_id: str | None = None,
        session_id: str | None = None,
        model_version: str | None = None,
        adapter_id: str | None = None,
        adapter_version: str | None = None,
        score: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> SubmitResult:
        """Stores one item and returns once it is durable. A fresh idempotency key is
        made when none is given, so the client's own retries never store twice."""
        body = _ops.feedback_body(
            type, question, answer, correction=correction, comment=comment,
            user_id=user_id, interaction_id=interaction_id, session_id=session_id,
            model_version=model_version, adapter_id=adapter_id,
            adapter_version=adapter_version, score=score, metadata=metadata, extra=extra,
        )  # fmt: skip
        result: SubmitResult = self._run(_ops.submit(body, idempotency_key))
        return result

    def submit_many(self, items: Iterable[Mapping[str, Any]]) -> BatchResult:
        """Stores many items through the batch endpoint (split into requests of at most
        1000 items and about 200 KB), one result per item in order. Items are submit bodies (see :func:`feedgraph.item`), each
        may carry an ``idempotency_key`` (one is made where missing)."""
        keyed = _ops.keyed(items)
        return BatchResult.merge([self._run(_ops.submit_batch(c)) for c in _chunks(keyed)])

    def get(self, feedback_id: str) -> Feedback:
        """One item."""
        result: Feedback = self._run(_ops.get(feedback_id))
        return result

    def list_page(self, *, cursor: str | None = None, limit: int | None = None, type: str | None = None,
                  status: str | None = None, unused: bool | None = None, model: str | None = None,
                  adapter: str | None = None, session: str | None = None,
                  kind: str | None = None) -> FeedbackPage:  # fmt: skip
        """One page of ``GET /feedback``, newest first (``kind``: only ``thumbs``,
        ``rating``, ``text``, ``correction`` or ``label`` items)."""
        result: FeedbackPage = self._run(
            _ops.list_page(cursor=cursor, limit=limit, type=type, status=status, unused=unused,
                           model=model, adapter=adapter, session=session, kind=kind)  # fmt: skip
        )
        return result

    def list(self, *, type: str | None = None, status: str | None = None, unused: bool | None = None,
             model: str | None = None, adapter: str | None = None, session: str | None = None,
             kind: str | None = None, page_size: int = 100,
             limit: int | None = None) -> Iterator[Feedback]:  # fmt: skip
        """Every matching item, newest first, fetched page by page with the server's
        cursors; at most ``limit`` items when given."""
        cursor: str | None = None
        seen = 0
        while True:
            size = page_size if limit is None else max(1, min(page_size, limit - seen))
            page = self.list_page(cursor=cursor, limit=size, type=type, status=status,
                                  unused=unused, model=model, adapter=adapter, session=session,
                                  kind=kind)  # fmt: skip
            for item in page.feedback:
                if limit is not None and seen >= limit:
                    return
                seen += 1
                yield item
            if page.next_cursor is None or (limit is not None and seen >= limit):
                return
            cursor = page.next_cursor

    def find_by_session(self, session_id: str, limit: int | None = None) -> builtins.list[Feedback]:
        """Every item of one session, newest first."""
        return [*self.list(session=session_id, limit=limit, page_size=1000)]

    def find_by_type(self, type: str, limit: int = 100) -> builtins.list[Feedback]:
        """The newest ``limit`` items of one type."""
        return [*self.list(type=type, limit=limit, page_size=min(limit, 1000))]

    def stats(self, *, adapter: str | None = None, model: str | None = None,
              hours: int | None = None) -> Stats:  # fmt: skip
        """Counters and positive ratio, optionally for one adapter, model or window."""
        result: Stats = self._run(_ops.stats(adapter=adapter, model=model, hours=hours))
        return result

    def aggregate(self, window_hours: int = 24, *, adapter: str | None = None,
                  model: str | None = None) -> Summary:  # fmt: skip
        """The summary of the last ``window_hours``: total, count by type, positive
        ratio and average rating."""
        return _summary(self.stats(adapter=adapter, model=model, hours=window_hours), window_hours)

    def link(self, feedback_id: str, adapter_id: str,
             metadata: Mapping[str, Any] | None = None) -> LinkResult:  # fmt: skip
        """Links an item to an adapter by hand (repeating it changes nothing)."""
        result: LinkResult = self._run(_ops.link(feedback_id, adapter_id, metadata))
        return result

    def by_adapter_page(self, adapter_id: str, *, cursor: str | None = None, limit: int | None = None,
                        unused: bool | None = None,
                        include_descendants: bool | None = None,
                        kind: str | None = None) -> FeedbackPage:  # fmt: skip
        """One page of the feedback linked to an adapter (``raw["total_linked"]``)."""
        result: FeedbackPage = self._run(
            _ops.by_adapter_page(adapter_id, cursor=cursor, limit=limit, unused=unused,
                                 include_descendants=include_descendants, kind=kind)  # fmt: skip
        )
        return result

    def by_adapter(self, adapter_id: str, *, unused: bool | None = None,
                   include_descendants: bool | None = None, kind: str | None = None,
                   page_size: int = 100) -> Iterator[Feedback]:  # fmt: skip
        """Every item linked to an adapter, newest first, page by page."""
        cursor: str | None = None
        while True:
            page = self.by_adapter_page(adapter_id, cursor=cursor, limit=page_size, unused=unused,
                                        include_descendants=include_descendants, kind=kind)  # fmt: skip
            yield from page.feedback
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def history(self, feedback_id: str) -> builtins.list[JsonObject]:
        """Every version of an item, oldest first."""
        result: builtins.list[JsonObject] = self._run(_ops.history(feedback_id))
        return result

    def impact(self, feedback_id: str) -> JsonObject:
        """The batches and adapters an item's training reached."""
        result: JsonObject = self._run(_ops.obj("GET", f"/feedback/{_ops.seg(feedback_id)}/impact"))
        return result

    def review(self, feedback_id: str, status: str, reason: str) -> JsonObject:
        """Admin: approve or reject an item, with the reason."""
        result: JsonObject = self._run(_ops.review(feedback_id, status, reason))
        return result

    def mark_used(self, ids: Iterable[str]) -> JsonObject:
        """Trainer: marks items used as a new committed batch."""
        result: JsonObject = self._run(
            _ops.obj("POST", "/feedback/mark-used", {"ids": [*ids]}, safe=False)
        )
        return result

    # -- adapters ---------------------------------------------------------------------

    def create_adapter(self, adapter_id: str, *, version: str | None = None,
                       base_model: str | None = None, derived_from: str | None = None,
                       metadata: Mapping[str, Any] | None = None) -> JsonObject:  # fmt: skip
        """Admin: creates an adapter, optionally derived from another."""
        result: JsonObject = self._run(
            _ops.create_adapter(adapter_id, version=version, base_model=base_model,
                                derived_from=derived_from, metadata=metadata)  # fmt: skip
        )
        return result

    def get_adapter(self, adapter_id: str) -> JsonObject:
        """An adapter, its feedback counters and children."""
        result: JsonObject = self._run(_ops.obj("GET", f"/adapters/{_ops.seg(adapter_id)}"))
        return result

    def lineage(self, adapter_id: str) -> JsonObject:
        """An adapter's ancestors, parent first."""
        result: JsonObject = self._run(_ops.obj("GET", f"/adapters/{_ops.seg(adapter_id)}/lineage"))
        return result

    def descendants(self, adapter_id: str) -> JsonObject:
        """Every adapter derived from one, with depth."""
        result: JsonObject = self._run(
            _ops.obj("GET", f"/adapters/{_ops.seg(adapter_id)}/descendants")
        )
        return result

    # -- training ---------------------------------------------------------------------

    def claim_batch(self, *, adapter_id: str | None = None, model: str | None = None,
                    include_descendants: bool = False, limit: int | None = None,
                    lease_seconds: int | None = None) -> JsonObject:  # fmt: skip
        """Trainer: leases approved, unused items to a new batch."""
        result: JsonObject = self._run(
            _ops.claim(adapter_id=adapter_id, model=model, include_descendants=include_descendants,
                       limit=limit, lease_seconds=lease_seconds)  # fmt: skip
        )
        return result

    def list_batches(self, *, trained_adapter_id: str | None = None,
                     state: str | None = None) -> JsonObject:  # fmt: skip
        """The org's training batches, newest first."""
        result: JsonObject = self._run(
            _ops.obj("GET", "/training/batches", trained_adapter_id=trained_adapter_id, state=state)
        )
        return result

    def get_batch(self, batch_id: int) -> JsonObject:
        """A batch: state, counts, manifest."""
        result: JsonObject = self._run(_ops.obj("GET", f"/training/batches/{batch_id}"))
        return result

    def commit_batch(self, batch_id: int, *, trained_adapter_id: str | None = None,
                     trained_adapter_version: str | None = None) -> JsonObject:  # fmt: skip
        """Marks a batch's items used (its manifest is frozen)."""
        body: JsonObject = {}
        if trained_adapter_id is not None:
            body["trained_adapter_id"] = trained_adapter_id
        if trained_adapter_version is not None:
            body["trained_adapter_version"] = trained_adapter_version
        result: JsonObject = self._run(_ops.obj("POST", f"/training/batches/{batch_id}/commit", body))
        return result

    def abort_batch(self, batch_id: int) -> JsonObject:
        """Returns a batch's items to the pool."""
        result: JsonObject = self._run(_ops.obj("POST", f"/training/batches/{batch_id}/abort"))
        return result

    def export_batch(self, batch_id: int, format: str = "sft") -> Export:
        """A batch as trainer JSONL: ``sft``, ``dpo``, ``openai-dpo`` or ``kto``."""
        result: Export = self._run(_ops.export(batch_id, format))
        return result

    # -- graph ------------------------------------------------------------------------

    def query(self, cypher: str, params: Mapping[str, Any] | None = None) -> QueryResult:
        """A read-only openCypher query on the caller's org graph."""
        result: QueryResult = self._run(_ops.query(cypher, params))
        return result

    def named_queries(self) -> JsonObject:
        """The server's named queries."""
        result: JsonObject = self._run(_ops.obj("GET", "/graph/queries"))
        return result

    def run_named(self, name: str, params: Mapping[str, Any] | None = None) -> QueryResult:
        """Runs a named query."""
        result: QueryResult = self._run(_ops.run_named(name, params))
        return result

    # -- erasure (admin) ----------------------------------------------------------------

    def erase(self, scope: str, value: str) -> ErasureReceipt:
        """Erases one item (``scope="item"``, ``value`` its id) or every item of a user or
        a session (``"user"``, ``"session"``) and returns the receipt once all are erased
        and durable."""
        if scope not in _ops.ERASURE_SCOPES:
            raise ValueError(f"scope must be one of {', '.join(_ops.ERASURE_SCOPES)}, not {scope!r}")
        result: ErasureReceipt = self._run(_ops.erase(scope, value))
        return result

    def erase_item(self, feedback_id: str) -> ErasureReceipt:
        """Erases one item (``POST /feedback/{id}/erase``); the receipt."""
        result: ErasureReceipt = self._run(_ops.erase_item(feedback_id))
        return result

    def erasures_page(self, *, limit: int | None = None, before: str | None = None) -> ErasurePage:
        """One page of the org's erasure receipts, newest first."""
        result: ErasurePage = self._run(_ops.erasures_page(limit=limit, before=before))
        return result

    def erasures(self, *, page_size: int = 100, limit: int | None = None) -> Iterator[ErasureReceipt]:
        """Every erasure receipt of the org, newest first, following ``next_before``; at
        most ``limit`` when given."""
        before: str | None = None
        seen = 0
        while True:
            size = page_size if limit is None else max(1, min(page_size, limit - seen))
            page = self.erasures_page(limit=size, before=before)
            for receipt in page.erasures:
                if limit is not None and seen >= limit:
                    return
                seen += 1
                yield receipt
            if page.next_before is None or not page.erasures or (limit is not None and seen >= limit):
                return
            before = page.next_before

    def get_erasure(self, erasure_id: str) -> ErasureReceipt:
        """One erasure receipt."""
        result: ErasureReceipt = self._run(_ops.get_erasure(erasure_id))
        return result

    def compact(self) -> CompactOutcome:
        """Makes erased bytes leave the disk now instead of at the scheduled rewrite."""
        result: CompactOutcome = self._run(_ops.compact())
        return result

    # -- webhooks (admin) ---------------------------------------------------------------

    def create_webhook(self, url: str, events: Iterable[str], *, secret: str | None = None,
                       description: str | None = None) -> Webhook:  # fmt: skip
        """Registers an endpoint for the named events. The answer's ``secret`` (drawn by
        the server unless given) is shown only this once: keep it to verify signatures."""
        result: Webhook = self._run(
            _ops.create_webhook(url, events, secret=secret, description=description)
        )
        return result

    def webhooks(self) -> builtins.list[Webhook]:
        """The org's endpoints."""
        result: builtins.list[Webhook] = self._run(_ops.list_webhooks())
        return result

    def get_webhook(self, webhook_id: str) -> Webhook:
        """One endpoint (``pending`` events, ``failure_streak``, ``disabled_reason``)."""
        result: Webhook = self._run(_ops.get_webhook(webhook_id))
        return result

    def update_webhook(self, webhook_id: str, *, enabled: bool | None = None,
                       events: Iterable[str] | None = None, url: str | None = None) -> Webhook:  # fmt: skip
        """Enables (clearing the failure streak) or disables an endpoint, or changes its
        events or url; the endpoint after the change."""
        result: Webhook = self._run(
            _ops.update_webhook(webhook_id, enabled=enabled, events=events, url=url)
        )
        return result

    def delete_webhook(self, webhook_id: str) -> None:
        """Removes an endpoint with its queued events and its delivery log."""
        self._run(_ops.delete_webhook(webhook_id))

    def deliveries_page(self, webhook_id: str, *, limit: int | None = None,
                        before: str | None = None) -> DeliveryPage:  # fmt: skip
        """One page of an endpoint's delivery log, newest first."""
        result: DeliveryPage = self._run(_ops.deliveries_page(webhook_id, limit=limit, before=before))
        return result

    def deliveries(self, webhook_id: str, *, page_size: int = 100,
                   limit: int | None = None) -> Iterator[Delivery]:  # fmt: skip
        """An endpoint's whole delivery log, newest first, page by page; at most
        ``limit`` entries when given."""
        before: str | None = None
        seen = 0
        while True:
            size = page_size if limit is None else max(1, min(page_size, limit - seen))
            page = self.deliveries_page(webhook_id, limit=size, before=before)
            for d in page.deliveries:
                if limit is not None and seen >= limit:
                    return
                seen += 1
                yield d
            if page.next_cursor is None or not page.deliveries or (limit is not None and seen >= limit):
                return
            before = page.next_cursor

    def redeliver(self, webhook_id: str, delivery_id: str) -> JsonObject:
        """Queues a logged event for delivery again (``{"status": "queued"}``)."""
        result: JsonObject = self._run(_ops.redeliver(webhook_id, delivery_id))
        return result

    # -- operations -------------------------------------------------------------------

    def metrics(self) -> str:
        """The Prometheus metrics text."""
        result: str = self._run(_ops.metrics())
        return result

    def openapi(self) -> JsonObject:
        """The server's OpenAPI document."""
        result: JsonObject = self._run(_ops.openapi())
        return result

    # -- kinds: score configs and the summary ----------------------------------------

    def put_score_config(self, name: str, data_type: str, *, min: float | None = None,
                         max: float | None = None, categories: Iterable[str] | None = None,
                         threshold: float | None = None,
                         description: str | None = None) -> JsonObject:  # fmt: skip
        """Creates a score config (admin), or writes a new version of it when a field
        differs. Answers ``{config, result}`` with result ``created``, ``updated`` or
        ``unchanged``."""
        body = _score_config_body(name, data_type, min, max, categories, threshold, description)
        result: JsonObject = self._run(_ops.put_score_config(body))
        return result

    def get_score_config(self, name: str) -> ScoreConfig:
        """One score config of the org."""
        config: ScoreConfig = self._run(_ops.get_score_config(name))
        return config

    def score_configs(self) -> builtins.list[ScoreConfig]:
        """Every score config of the org, by name."""
        configs: builtins.list[ScoreConfig] = self._run(_ops.list_score_configs())
        return configs

    def score_config_history(self, name: str) -> builtins.list[JsonObject]:
        """Every version of a score config, oldest first."""
        history: builtins.list[JsonObject] = self._run(_ops.score_config_history(name))
        return history

    def summary(self, window_hours: int | None = None, *, model: str | None = None,
                provider: str | None = None) -> FeedbackSummary:  # fmt: skip
        """Counts by kind and type, average rating overall and per config, label
        distribution, per model and per provider, in a window of hours."""
        result: FeedbackSummary = self._run(_ops.summary(window_hours, model, provider))
        return result

    def health_check(self, timeout: float = 5.0) -> Health:
        """Probes ``/healthz`` and ``/readyz`` once, without retries; never raises."""
        s = self._settings
        start = time.monotonic()
        try:
            with httpx.Client(base_url=s.base_url, timeout=timeout, transport=s.transport) as h:
                alive = h.get("/healthz").status_code == 200
                r = h.get("/readyz")
        except httpx.HTTPError as e:
            return Health(False, False, (time.monotonic() - start) * 1000, f"unreachable: {e!r}")
        ms = (time.monotonic() - start) * 1000
        if r.status_code == 200:
            return Health(alive, True, ms)
        try:
            detail = str(r.json().get("details", ""))
        except (ValueError, AttributeError):
            detail = r.text[:200]
        return Health(alive, False, ms, detail or f"status {r.status_code}")


class AsyncClient(_Background):
    """The asyncio client: the methods of :class:`Client` as coroutines (``list`` and
    ``by_adapter`` are async iterators). :meth:`feedback` queues for the same background
    thread and never blocks the event loop unless the queue is full under ``"block"``."""

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_queue: int = 10_000,
        batch_size: int = 200,
        flush_interval: float = 0.2,
        full_policy: FullPolicy = "block",
        on_error: ErrorHook | None = None,
        shutdown_timeout: float = 30.0,
    ) -> None:
        self._settings = _settings(base_url, token, timeout, retry, async_transport=transport)
        self._t = AsyncTransport(self._settings)
        self._sender = None
        self._sender_options = {
            "max_queue": max_queue,
            "batch_size": batch_size,
            "flush_interval": flush_interval,
            "full_policy": full_policy,
            "on_error": on_error,
            "shutdown_timeout": shutdown_timeout,
        }

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Shuts the background queue down (in a thread) and closes connections."""
        import asyncio

        await asyncio.to_thread(self.shutdown, self._sender_options["shutdown_timeout"])
        await self._t.close()

    async def _run(self, op: Op[Any]) -> Any:
        return await self._t.run(op)

    async def submit(
        self,
        type: str | None,
        question: str,
        answer: str,
        *,
        correction: str | None = None,
        comment: str | None = None,
        user_id: str | None = None,
        interaction_id: str | None = None,
        session_id: str | None = None,
        model_version: str | None = None,
        adapter_id: str | None = None,
        adapter_version: str | None = None,
        score: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> SubmitResult:
        """See :meth:`Client.submit`."""
        body = _ops.feedback_body(
            type, question, answer, correction=correction, comment=comment,
            user_id=user_id, interaction_id=interaction_id, session_id=session_id,
            model_version=model_version, adapter_id=adapter_id,
            adapter_version=adapter_version, score=score, metadata=metadata, extra=extra,
        )  # fmt: skip
        result: SubmitResult = await self._run(_ops.submit(body, idempotency_key))
        return result

    async def submit_many(self, items: Iterable[Mapping[str, Any]]) -> BatchResult:
        """See :meth:`Client.submit_many`."""
        keyed = _ops.keyed(items)
        return BatchResult.merge([await self._run(_ops.submit_batch(c)) for c in _chunks(keyed)])

    async def get(self, feedback_id: str) -> Feedback:
        """See :meth:`Client.get`."""
        result: Feedback = await self._run(_ops.get(feedback_id))
        return result

    async def list_page(self, *, cursor: str | None = None, limit: int | None = None,
                        type: str | None = None, status: str | None = None,
                        unused: bool | None = None, model: str | None = None,
                        adapter: str | None = None, session: str | None = None,
                        kind: str | None = None) -> FeedbackPage:  # fmt: skip
        """See :meth:`Client.list_page`."""
        result: FeedbackPage = await self._run(
            _ops.list_page(cursor=cursor, limit=limit, type=type, status=status, unused=unused,
                           model=model, adapter=adapter, session=session, kind=kind)  # fmt: skip
        )
        return result

    async def list(self, *, type: str | None = None, status: str | None = None,
                   unused: bool | None = None, model: str | None = None, adapter: str | None = None,
                   session: str | None = None, kind: str | None = None, page_size: int = 100,
                   limit: int | None = None) -> AsyncIterator[Feedback]:  # fmt: skip
        """See :meth:`Client.list` (an async iterator)."""
        cursor: str | None = None
        seen = 0
        while True:
            size = page_size if limit is None else max(1, min(page_size, limit - seen))
            page = await self.list_page(cursor=cursor, limit=size, type=type, status=status,
                                        unused=unused, model=model, adapter=adapter,
                                        session=session, kind=kind)  # fmt: skip
            for item in page.feedback:
                if limit is not None and seen >= limit:
                    return
                seen += 1
                yield item
            if page.next_cursor is None or (limit is not None and seen >= limit):
                return
            cursor = page.next_cursor

    async def find_by_session(self, session_id: str, limit: int | None = None) -> builtins.list[Feedback]:
        """See :meth:`Client.find_by_session`."""
        return [f async for f in self.list(session=session_id, limit=limit, page_size=1000)]

    async def find_by_type(self, type: str, limit: int = 100) -> builtins.list[Feedback]:
        """See :meth:`Client.find_by_type`."""
        return [f async for f in self.list(type=type, limit=limit, page_size=min(limit, 1000))]

    async def stats(self, *, adapter: str | None = None, model: str | None = None,
                    hours: int | None = None) -> Stats:  # fmt: skip
        """See :meth:`Client.stats`."""
        result: Stats = await self._run(_ops.stats(adapter=adapter, model=model, hours=hours))
        return result

    async def aggregate(self, window_hours: int = 24, *, adapter: str | None = None,
                        model: str | None = None) -> Summary:  # fmt: skip
        """See :meth:`Client.aggregate`."""
        stats = await self.stats(adapter=adapter, model=model, hours=window_hours)
        return _summary(stats, window_hours)

    async def link(self, feedback_id: str, adapter_id: str,
                   metadata: Mapping[str, Any] | None = None) -> LinkResult:  # fmt: skip
        """See :meth:`Client.link`."""
        result: LinkResult = await self._run(_ops.link(feedback_id, adapter_id, metadata))
        return result

    async def by_adapter_page(self, adapter_id: str, *, cursor: str | None = None,
                              limit: int | None = None, unused: bool | None = None,
                              include_descendants: bool | None = None,
                              kind: str | None = None) -> FeedbackPage:  # fmt: skip
        """See :meth:`Client.by_adapter_page`."""
        result: FeedbackPage = await self._run(
            _ops.by_adapter_page(adapter_id, cursor=cursor, limit=limit, unused=unused,
                                 include_descendants=include_descendants, kind=kind)  # fmt: skip
        )
        return result

    async def by_adapter(self, adapter_id: str, *, unused: bool | None = None,
                         include_descendants: bool | None = None, kind: str | None = None,
                         page_size: int = 100) -> AsyncIterator[Feedback]:  # fmt: skip
        """See :meth:`Client.by_adapter` (an async iterator)."""
        cursor: str | None = None
        while True:
            page = await self.by_adapter_page(adapter_id, cursor=cursor, limit=page_size,
                                              unused=unused,
                                              include_descendants=include_descendants,
                                              kind=kind)  # fmt: skip
            for item in page.feedback:
                yield item
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def history(self, feedback_id: str) -> builtins.list[JsonObject]:
        """See :meth:`Client.history`."""
        result: builtins.list[JsonObject] = await self._run(_ops.history(feedback_id))
        return result

    async def impact(self, feedback_id: str) -> JsonObject:
        """See :meth:`Client.impact`."""
        result: JsonObject = await self._run(
            _ops.obj("GET", f"/feedback/{_ops.seg(feedback_id)}/impact")
        )
        return result

    async def review(self, feedback_id: str, status: str, reason: str) -> JsonObject:
        """See :meth:`Client.review`."""
        result: JsonObject = await self._run(_ops.review(feedback_id, status, reason))
        return result

    async def mark_used(self, ids: Iterable[str]) -> JsonObject:
        """See :meth:`Client.mark_used`."""
        result: JsonObject = await self._run(
            _ops.obj("POST", "/feedback/mark-used", {"ids": [*ids]}, safe=False)
        )
        return result

    async def create_adapter(self, adapter_id: str, *, version: str | None = None,
                             base_model: str | None = None, derived_from: str | None = None,
                             metadata: Mapping[str, Any] | None = None) -> JsonObject:  # fmt: skip
        """See :meth:`Client.create_adapter`."""
        result: JsonObject = await self._run(
            _ops.create_adapter(adapter_id, version=version, base_model=base_model,
                                derived_from=derived_from, metadata=metadata)  # fmt: skip
        )
        return result

    async def get_adapter(self, adapter_id: str) -> JsonObject:
        """See :meth:`Client.get_adapter`."""
        result: JsonObject = await self._run(_ops.obj("GET", f"/adapters/{_ops.seg(adapter_id)}"))
        return result

    async def lineage(self, adapter_id: str) -> JsonObject:
        """See :meth:`Client.lineage`."""
        result: JsonObject = await self._run(
            _ops.obj("GET", f"/adapters/{_ops.seg(adapter_id)}/lineage")
        )
        return result

    async def descendants(self, adapter_id: str) -> JsonObject:
        """See :meth:`Client.descendants`."""
        result: JsonObject = await self._run(
            _ops.obj("GET", f"/adapters/{_ops.seg(adapter_id)}/descendants")
        )
        return result

    async def claim_batch(self, *, adapter_id: str | None = None, model: str | None = None,
                          include_descendants: bool = False, limit: int | None = None,
                          lease_seconds: int | None = None) -> JsonObject:  # fmt: skip
        """See :meth:`Client.claim_batch`."""
        result: JsonObject = await self._run(
            _ops.claim(adapter_id=adapter_id, model=model, include_descendants=include_descendants,
                       limit=limit, lease_seconds=lease_seconds)  # fmt: skip
        )
        return result

    async def list_batches(self, *, trained_adapter_id: str | None = None,
                           state: str | None = None) -> JsonObject:  # fmt: skip
        """See :meth:`Client.list_batches`."""
        result: JsonObject = await self._run(
            _ops.obj("GET", "/training/batches", trained_adapter_id=trained_adapter_id, state=state)
        )
        return result

    async def get_batch(self, batch_id: int) -> JsonObject:
        """See :meth:`Client.get_batch`."""
        result: JsonObject = await self._run(_ops.obj("GET", f"/training/batches/{batch_id}"))
        return result

    async def commit_batch(self, batch_id: int, *, trained_adapter_id: str | None = None,
                           trained_adapter_version: str | None = None) -> JsonObject:  # fmt: skip
        """See :meth:`Client.commit_batch`."""
        body: JsonObject = {}
        if trained_adapter_id is not None:
            body["trained_adapter_id"] = trained_adapter_id
        if trained_adapter_version is not None:
            body["trained_adapter_version"] = trained_adapter_version
        result: JsonObject = await self._run(
            _ops.obj("POST", f"/training/batches/{batch_id}/commit", body)
        )
        return result

    async def abort_batch(self, batch_id: int) -> JsonObject:
        """See :meth:`Client.abort_batch`."""
        result: JsonObject = await self._run(
            _ops.obj("POST", f"/training/batches/{batch_id}/abort")
        )
        return result

    async def export_batch(self, batch_id: int, format: str = "sft") -> Export:
        """See :meth:`Client.export_batch`."""
        result: Export = await self._run(_ops.export(batch_id, format))
        return result

    async def query(self, cypher: str, params: Mapping[str, Any] | None = None) -> QueryResult:
        """See :meth:`Client.query`."""
        result: QueryResult = await self._run(_ops.query(cypher, params))
        return result

    async def named_queries(self) -> JsonObject:
        """See :meth:`Client.named_queries`."""
        result: JsonObject = await self._run(_ops.obj("GET", "/graph/queries"))
        return result

    async def run_named(self, name: str, params: Mapping[str, Any] | None = None) -> QueryResult:
        """See :meth:`Client.run_named`."""
        result: QueryResult = await self._run(_ops.run_named(name, params))
        return result

    # -- erasure (admin) ----------------------------------------------------------------

    async def erase(self, scope: str, value: str) -> ErasureReceipt:
        """Erases one item (``scope="item"``, ``value`` its id) or every item of a user or
        a session (``"user"``, ``"session"``) and returns the receipt once all are erased
        and durable."""
        if scope not in _ops.ERASURE_SCOPES:
            raise ValueError(f"scope must be one of {', '.join(_ops.ERASURE_SCOPES)}, not {scope!r}")
        result: ErasureReceipt = await self._run(_ops.erase(scope, value))
        return result

    async def erase_item(self, feedback_id: str) -> ErasureReceipt:
        """Erases one item (``POST /feedback/{id}/erase``); the receipt."""
        result: ErasureReceipt = await self._run(_ops.erase_item(feedback_id))
        return result

    async def erasures_page(self, *, limit: int | None = None, before: str | None = None) -> ErasurePage:
        """One page of the org's erasure receipts, newest first."""
        result: ErasurePage = await self._run(_ops.erasures_page(limit=limit, before=before))
        return result

    async def erasures(self, *, page_size: int = 100, limit: int | None = None) -> AsyncIterator[ErasureReceipt]:
        """Every erasure receipt of the org, newest first, following ``next_before``; at
        most ``limit`` when given."""
        before: str | None = None
        seen = 0
        while True:
            size = page_size if limit is None else max(1, min(page_size, limit - seen))
            page = await self.erasures_page(limit=size, before=before)
            for receipt in page.erasures:
                if limit is not None and seen >= limit:
                    return
                seen += 1
                yield receipt
            if page.next_before is None or not page.erasures or (limit is not None and seen >= limit):
                return
            before = page.next_before

    async def get_erasure(self, erasure_id: str) -> ErasureReceipt:
        """One erasure receipt."""
        result: ErasureReceipt = await self._run(_ops.get_erasure(erasure_id))
        return result

    async def compact(self) -> CompactOutcome:
        """Makes erased bytes leave the disk now instead of at the scheduled rewrite."""
        result: CompactOutcome = await self._run(_ops.compact())
        return result

    # -- webhooks (admin) ---------------------------------------------------------------

    async def create_webhook(self, url: str, events: Iterable[str], *, secret: str | None = None,
                       description: str | None = None) -> Webhook:  # fmt: skip
        """Registers an endpoint for the named events. The answer's ``secret`` (drawn by
        the server unless given) is shown only this once: keep it to verify signatures."""
        result: Webhook = await self._run(
            _ops.create_webhook(url, events, secret=secret, description=description)
        )
        return result

    async def webhooks(self) -> builtins.list[Webhook]:
        """The org's endpoints."""
        result: builtins.list[Webhook] = await self._run(_ops.list_webhooks())
        return result

    async def get_webhook(self, webhook_id: str) -> Webhook:
        """One endpoint (``pending`` events, ``failure_streak``, ``disabled_reason``)."""
        result: Webhook = await self._run(_ops.get_webhook(webhook_id))
        return result

    async def update_webhook(self, webhook_id: str, *, enabled: bool | None = None,
                       events: Iterable[str] | None = None, url: str | None = None) -> Webhook:  # fmt: skip
        """Enables (clearing the failure streak) or disables an endpoint, or changes its
        events or url; the endpoint after the change."""
        result: Webhook = await self._run(
            _ops.update_webhook(webhook_id, enabled=enabled, events=events, url=url)
        )
        return result

    async def delete_webhook(self, webhook_id: str) -> None:
        """Removes an endpoint with its queued events and its delivery log."""
        await self._run(_ops.delete_webhook(webhook_id))

    async def deliveries_page(self, webhook_id: str, *, limit: int | None = None,
                        before: str | None = None) -> DeliveryPage:  # fmt: skip
        """One page of an endpoint's delivery log, newest first."""
        result: DeliveryPage = await self._run(_ops.deliveries_page(webhook_id, limit=limit, before=before))
        return result

    async def deliveries(self, webhook_id: str, *, page_size: int = 100,
                   limit: int | None = None) -> AsyncIterator[Delivery]:  # fmt: skip
        """An endpoint's whole delivery log, newest first, page by page; at most
        ``limit`` entries when given."""
        before: str | None = None
        seen = 0
        while True:
            size = page_size if limit is None else max(1, min(page_size, limit - seen))
            page = await self.deliveries_page(webhook_id, limit=size, before=before)
            for d in page.deliveries:
                if limit is not None and seen >= limit:
                    return
                seen += 1
                yield d
            if page.next_cursor is None or not page.deliveries or (limit is not None and seen >= limit):
                return
            before = page.next_cursor

    async def redeliver(self, webhook_id: str, delivery_id: str) -> JsonObject:
        """Queues a logged event for delivery again (``{"status": "queued"}``)."""
        result: JsonObject = await self._run(_ops.redeliver(webhook_id, delivery_id))
        return result

    async def metrics(self) -> str:
        """See :meth:`Client.metrics`."""
        result: str = await self._run(_ops.metrics())
        return result

    async def openapi(self) -> JsonObject:
        """See :meth:`Client.openapi`."""
        result: JsonObject = await self._run(_ops.openapi())
        return result

    # -- kinds: score configs and the summary ----------------------------------------

    async def put_score_config(self, name: str, data_type: str, *, min: float | None = None,
                               max: float | None = None, categories: Iterable[str] | None = None,
                               threshold: float | None = None,
                               description: str | None = None) -> JsonObject:  # fmt: skip
        """See :meth:`Client.put_score_config`."""
        body = _score_config_body(name, data_type, min, max, categories, threshold, description)
        result: JsonObject = await self._run(_ops.put_score_config(body))
        return result

    async def get_score_config(self, name: str) -> ScoreConfig:
        """One score config of the org."""
        config: ScoreConfig = await self._run(_ops.get_score_config(name))
        return config

    async def score_configs(self) -> builtins.list[ScoreConfig]:
        """Every score config of the org, by name."""
        configs: builtins.list[ScoreConfig] = await self._run(_ops.list_score_configs())
        return configs

    async def score_config_history(self, name: str) -> builtins.list[JsonObject]:
        """Every version of a score config, oldest first."""
        history: builtins.list[JsonObject] = await self._run(_ops.score_config_history(name))
        return history

    async def summary(self, window_hours: int | None = None, *, model: str | None = None,
                      provider: str | None = None) -> FeedbackSummary:  # fmt: skip
        """See :meth:`Client.summary`."""
        result: FeedbackSummary = await self._run(_ops.summary(window_hours, model, provider))
        return result

    async def health_check(self, timeout: float = 5.0) -> Health:
        """See :meth:`Client.health_check`."""
        s = self._settings
        start = time.monotonic()
        try:
            async with httpx.AsyncClient(
                base_url=s.base_url, timeout=timeout, transport=s.async_transport
            ) as h:
                alive = (await h.get("/healthz")).status_code == 200
                r = await h.get("/readyz")
        except httpx.HTTPError as e:
            return Health(False, False, (time.monotonic() - start) * 1000, f"unreachable: {e!r}")
        ms = (time.monotonic() - start) * 1000
        if r.status_code == 200:
            return Health(alive, True, ms)
        try:
            detail = str(r.json().get("details", ""))
        except (ValueError, AttributeError):
            detail = r.text[:200]
        return Health(alive, False, ms, detail or f"status {r.status_code}")


def item(
    type: str | None,
    question: str,
    answer: str,
    *,
    idempotency_key: str | None = None,
    **fields: Any,
) -> JsonObject:
    """One batch item for :meth:`Client.submit_many` (the submit fields, by name)."""
    body = _ops.feedback_body(type, question, answer, **fields)
    if idempotency_key is not None:
        body["idempotency_key"] = idempotency_key
    return body


__all__ = ["AsyncClient", "Client", "FeedgraphError", "item"]
