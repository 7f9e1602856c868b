"""Every API operation as data: the request to send, whether it may be repeated, and how to
read the answer. The sync and async clients run the same operations, so they cannot drift.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from .models import (
    ScoreConfig,
    FeedbackSummary,
    BatchResult,
    CompactOutcome,
    Export,
    Feedback,
    FeedbackPage,
    JsonObject,
    LinkResult,
    QueryResult,
    DeliveryPage,
    ErasurePage,
    ErasureReceipt,
    Stats,
    SubmitResult,
    Webhook,
)

T = TypeVar("T")

API = "/api/v1/llm"

#: The most items one batch request carries (the server's default `batch.max_items`).
MAX_BATCH_ITEMS = 1000


def seg(value: str) -> str:
    """One path segment, percent-encoded."""
    return quote(value, safe="")


def new_key() -> str:
    """A fresh idempotency key."""
    return uuid.uuid4().hex


@dataclass
class Op(Generic[T]):
    """One request and the reading of its answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: dict[str, str] | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    #: May be sent again after an ambiguous failure (no answer after sending, or a write
    #: whose outcome is unknown): reads, idempotent writes and keyed submits.
    safe: bool = True


def _json(r: httpx.Response) -> JsonObject:
    data = r.json()
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    return data


def _params(**kw: object) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in kw.items():
        if v is None:
            continue
        if isinstance(v, bool):
            out[k] = "true" if v else "false"
        else:
            out[k] = str(v)
    return out


def feedback_body(
    type: str | None,
    question: str,
    answer: str,
    *,
    kind: str | None = None,
    label: str | None = None,
    provider: str | None = None,
    score_config: str | None = None,
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
) -> JsonObject:
    """The body of a submit, leaving out what is not set (``type`` too: a rating with a
    thresholded score config, a correction or a label may go without). ``extra`` carries
    fields a newer server accepts before this client names them."""
    body: JsonObject = {"question": question, "answer": answer}
    if type is not None:
        body = {"type": type, **body}
    optional: dict[str, Any] = {
        "kind": kind,
        "label": label,
        "provider": provider,
        "score_config": score_config,
        "correction": correction,
        "comment": comment,
        "user_id": user_id,
        "interaction_id": interaction_id,
        "session_id": session_id,
        "model_version": model_version,
        "adapter_id": adapter_id,
        "adapter_version": adapter_version,
        "score": score,
        "metadata": dict(metadata) if metadata is not None else None,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    if extra:
        body.update(extra)
    return body


def submit(body: JsonObject, idempotency_key: str | None) -> Op[SubmitResult]:
    """``POST /feedback`` with an idempotency key (made up when not given)."""
    key = idempotency_key or new_key()
    return Op(
        "POST",
        f"{API}/feedback",
        lambda r: SubmitResult.from_json(
            _json(r), r.headers.get("idempotent-replayed") == "true"
        ),
        body=body,
        headers={"Idempotency-Key": key},
    )


def keyed(items: Iterable[Mapping[str, Any]]) -> list[JsonObject]:
    """Batch items, each with an idempotency key (a fresh one where missing)."""
    out = []
    for item in items:
        d = dict(item)
        if not d.get("idempotency_key"):
            d["idempotency_key"] = new_key()
        out.append(d)
    return out


def submit_batch(items: list[JsonObject]) -> Op[BatchResult]:
    """``POST /feedback/batch``; items must carry their keys (see :func:`keyed`)."""
    return Op(
        "POST",
        f"{API}/feedback/batch",
        lambda r: BatchResult.from_json(_json(r)),
        body={"items": items},
    )


def get(feedback_id: str) -> Op[Feedback]:
    """``GET /feedback/{id}``."""
    return Op("GET", f"{API}/feedback/{seg(feedback_id)}", lambda r: Feedback.from_json(_json(r)))


def list_page(
    *,
    limit: int | None = None,
    type: str | None = None,
    status: str | None = None,
    unused: bool | None = None,
    model: str | None = None,
    adapter: str | None = None,
    session: str | None = None,
    cursor: str | None = None,
    kind: str | None = None,
) -> Op[FeedbackPage]:
    """``GET /feedback`` (one page)."""
    return Op(
        "GET",
        f"{API}/feedback",
        lambda r: FeedbackPage.from_json(_json(r)),
        params=_params(
            limit=limit,
            type=type,
            status=status,
            unused=unused,
            model=model,
            adapter=adapter,
            session=session,
            kind=kind,
            cursor=cursor,
        ),
    )


def by_adapter_page(
    adapter_id: str,
    *,
    limit: int | None = None,
    unused: bool | None = None,
    include_descendants: bool | None = None,
    cursor: str | None = None,
    kind: str | None = None,
) -> Op[FeedbackPage]:
    """``GET /feedback/by-adapter/{adapter_id}`` (one page; ``raw`` has ``total_linked``)."""
    return Op(
        "GET",
        f"{API}/feedback/by-adapter/{seg(adapter_id)}",
        lambda r: FeedbackPage.from_json(_json(r)),
        params=_params(
            limit=limit,
            unused=unused,
            include_descendants=include_descendants,
            kind=kind,
            cursor=cursor,
        ),
    )


def stats(
    *, adapter: str | None = None, model: str | None = None, hours: int | None = None
) -> Op[Stats]:
    """``GET /feedback/stats``."""
    return Op(
        "GET",
        f"{API}/feedback/stats",
        lambda r: Stats.from_json(_json(r)),
        params=_params(adapter=adapter, model=model, hours=hours),
    )


def link(
    feedback_id: str, adapter_id: str, metadata: Mapping[str, Any] | None = None
) -> Op[LinkResult]:
    """``POST /feedback/{id}/link`` (idempotent)."""
    body: JsonObject = {"adapter_id": adapter_id}
    if metadata is not None:
        body["metadata"] = dict(metadata)
    return Op(
        "POST",
        f"{API}/feedback/{seg(feedback_id)}/link",
        lambda r: LinkResult.from_json(_json(r)),
        body=body,
    )


def history(feedback_id: str) -> Op[list[JsonObject]]:
    """``GET /feedback/{id}/history``: the versions, oldest first."""

    def parse(r: httpx.Response) -> list[JsonObject]:
        versions = _json(r).get("versions")
        return [v for v in versions if isinstance(v, dict)] if isinstance(versions, list) else []

    return Op("GET", f"{API}/feedback/{seg(feedback_id)}/history", parse)


def obj(method: str, path: str, body: Any = None, *, safe: bool = True, **params: object) -> Op[JsonObject]:
    """An operation answering a JSON object, returned as is."""
    return Op(method, f"{API}{path}", _json, params=_params(**params) or None, body=body, safe=safe)


def review(feedback_id: str, status: str, reason: str) -> Op[JsonObject]:
    """``PATCH /feedback/{id}`` (admin)."""
    return obj(
        "PATCH",
        f"/feedback/{seg(feedback_id)}",
        {"validation_status": status, "reason": reason},
    )


def create_adapter(
    adapter_id: str,
    *,
    version: str | None = None,
    base_model: str | None = None,
    derived_from: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Op[JsonObject]:
    """``POST /adapters`` (admin; repeating the same request changes nothing)."""
    body: JsonObject = {"id": adapter_id}
    for k, v in (("version", version), ("base_model", base_model), ("derived_from", derived_from)):
        if v is not None:
            body[k] = v
    if metadata is not None:
        body["metadata"] = dict(metadata)
    return obj("POST", "/adapters", body)


def claim(
    *,
    adapter_id: str | None = None,
    model: str | None = None,
    include_descendants: bool = False,
    limit: int | None = None,
    lease_seconds: int | None = None,
) -> Op[JsonObject]:
    """``POST /training/batches`` (trainer). Not repeated after an ambiguous failure: a
    second claim would lease other items (the first lease then just runs out)."""
    body: JsonObject = {"include_descendants": include_descendants}
    for k, v in (
        ("adapter_id", adapter_id),
        ("model", model),
        ("limit", limit),
        ("lease_seconds", lease_seconds),
    ):
        if v is not None:
            body[k] = v
    return obj("POST", "/training/batches", body, safe=False)


def export(batch_id: int, fmt: str) -> Op[Export]:
    """``GET /training/batches/{id}/export?format=``."""

    def parse(r: httpx.Response) -> Export:
        text = r.text
        lines = [json.loads(line) for line in text.splitlines() if line.strip()]

        def count(h: str) -> int:
            try:
                return int(r.headers.get(h, "0"))
            except ValueError:
                return 0

        return Export(
            format=fmt,
            lines=lines,
            items=count("x-feedgraph-items"),
            skipped=count("x-feedgraph-skipped"),
            retracted=count("x-feedgraph-retracted"),
            text=text,
        )

    return Op(
        "GET",
        f"{API}/training/batches/{batch_id}/export",
        parse,
        params={"format": fmt},
    )


def query(cypher: str, params: Mapping[str, Any] | None = None) -> Op[QueryResult]:
    """``POST /graph/query`` (read-only)."""
    body: JsonObject = {"query": cypher}
    if params is not None:
        body["params"] = dict(params)
    return Op("POST", f"{API}/graph/query", lambda r: QueryResult.from_json(_json(r)), body=body)


def run_named(name: str, params: Mapping[str, Any] | None = None) -> Op[QueryResult]:
    """``POST /graph/queries/{name}``."""
    body: JsonObject = {}
    if params is not None:
        body["params"] = dict(params)
    return Op(
        "POST",
        f"{API}/graph/queries/{seg(name)}",
        lambda r: QueryResult.from_json(_json(r)),
        body=body,
    )


def metrics() -> Op[str]:
    """``GET /metrics`` (Prometheus text)."""
    return Op("GET", "/metrics", lambda r: r.text)


def openapi() -> Op[JsonObject]:
    """``GET /openapi.json``."""
    return Op("GET", "/openapi.json", _json)


def put_score_config(body: JsonObject) -> Op[JsonObject]:
    """``POST /score-configs`` (admin): create, or a new version when a field differs."""
    return Op("POST", f"{API}/score-configs", _json, body=body)


def get_score_config(name: str) -> Op[ScoreConfig]:
    """``GET /score-configs/{name}``."""
    return Op("GET", f"{API}/score-configs/{seg(name)}", lambda r: ScoreConfig.from_json(_json(r)))


def list_score_configs() -> Op[list[ScoreConfig]]:
    """``GET /score-configs``."""

    def parse(r: httpx.Response) -> list[ScoreConfig]:
        configs = _json(r).get("score_configs")
        return [ScoreConfig.from_json(c) for c in configs if isinstance(c, dict)] if isinstance(configs, list) else []

    return Op("GET", f"{API}/score-configs", parse)


def score_config_history(name: str) -> Op[list[JsonObject]]:
    """``GET /score-configs/{name}/history``."""

    def parse(r: httpx.Response) -> list[JsonObject]:
        v = r.json()
        return [e for e in v if isinstance(e, dict)] if isinstance(v, list) else []

    return Op("GET", f"{API}/score-configs/{seg(name)}/history", parse)


def summary(window_hours: int | None = None, model: str | None = None,
            provider: str | None = None) -> Op[FeedbackSummary]:  # fmt: skip
    """``GET /feedback/summary``: counts by kind, ratings, labels, per model and provider."""
    return Op(
        "GET",
        f"{API}/feedback/summary",
        lambda r: FeedbackSummary.from_json(_json(r)),
        params=_params(window_hours=window_hours, model=model, provider=provider),
    )


# -- erasure (admin) ------------------------------------------------------------------------

#: What an erasure covers: one item, or every item of a user or a session.
ERASURE_SCOPES = ("item", "user", "session")


def erase(scope: str, value: str) -> Op[ErasureReceipt]:
    """``POST /erasures {scope, value}``. Repeating it after an ambiguous failure is
    harmless (erased items stay tombstones; at worst a second receipt is written)."""
    return Op(
        "POST",
        f"{API}/erasures",
        lambda r: ErasureReceipt.from_json(_json(r)),
        body={"scope": scope, "value": value},
    )


def erase_item(feedback_id: str) -> Op[ErasureReceipt]:
    """``POST /feedback/{id}/erase``."""
    return Op(
        "POST",
        f"{API}/feedback/{seg(feedback_id)}/erase",
        lambda r: ErasureReceipt.from_json(_json(r)),
    )


def erasures_page(*, limit: int | None = None, before: str | None = None) -> Op[ErasurePage]:
    """``GET /erasures?limit&before`` (one page, newest first)."""
    return Op(
        "GET",
        f"{API}/erasures",
        lambda r: ErasurePage.from_json(_json(r)),
        params=_params(limit=limit, before=before),
    )


def get_erasure(erasure_id: str) -> Op[ErasureReceipt]:
    """``GET /erasures/{id}``."""
    return Op(
        "GET", f"{API}/erasures/{seg(erasure_id)}", lambda r: ErasureReceipt.from_json(_json(r))
    )


def compact() -> Op[CompactOutcome]:
    """``POST /admin/compact``: make erased bytes leave the disk now (see
    :class:`CompactOutcome`)."""
    return Op("POST", f"{API}/admin/compact", lambda r: CompactOutcome.from_json(_json(r)))


# -- webhooks (admin) -----------------------------------------------------------------------


def _webhook(r: httpx.Response) -> Webhook:
    return Webhook.from_json(_json(r))


def create_webhook(
    url: str,
    events: Iterable[str],
    *,
    secret: str | None = None,
    description: str | None = None,
) -> Op[Webhook]:
    """``POST /webhooks``. Not repeated after an ambiguous failure: it would register a
    second endpoint."""
    body: JsonObject = {"url": url, "events": list(events)}
    if secret is not None:
        body["secret"] = secret
    if description is not None:
        body["description"] = description
    return Op("POST", f"{API}/webhooks", _webhook, body=body, safe=False)


def list_webhooks() -> Op[list[Webhook]]:
    """``GET /webhooks``."""

    def parse(r: httpx.Response) -> list[Webhook]:
        hooks = _json(r).get("webhooks")
        return [Webhook.from_json(h) for h in hooks if isinstance(h, dict)] if isinstance(hooks, list) else []

    return Op("GET", f"{API}/webhooks", parse)


def get_webhook(webhook_id: str) -> Op[Webhook]:
    """``GET /webhooks/{id}``."""
    return Op("GET", f"{API}/webhooks/{seg(webhook_id)}", _webhook)


def update_webhook(
    webhook_id: str,
    *,
    enabled: bool | None = None,
    events: Iterable[str] | None = None,
    url: str | None = None,
) -> Op[Webhook]:
    """``PATCH /webhooks/{id}`` (only the fields given)."""
    body: JsonObject = {}
    if enabled is not None:
        body["enabled"] = enabled
    if events is not None:
        body["events"] = list(events)
    if url is not None:
        body["url"] = url
    return Op("PATCH", f"{API}/webhooks/{seg(webhook_id)}", _webhook, body=body)


def delete_webhook(webhook_id: str) -> Op[None]:
    """``DELETE /webhooks/{id}`` (204, no body)."""
    return Op("DELETE", f"{API}/webhooks/{seg(webhook_id)}", lambda r: None)


def deliveries_page(
    webhook_id: str, *, limit: int | None = None, before: str | None = None
) -> Op[DeliveryPage]:
    """``GET /webhooks/{id}/deliveries?limit&before`` (one page, newest first)."""
    return Op(
        "GET",
        f"{API}/webhooks/{seg(webhook_id)}/deliveries",
        lambda r: DeliveryPage.from_json(_json(r)),
        params=_params(limit=limit, before=before),
    )


def redeliver(webhook_id: str, delivery_id: str) -> Op[JsonObject]:
    """``POST /webhooks/{id}/deliveries/{delivery_id}/redeliver`` (202 ``{"status":
    "queued"}``). Not repeated after an ambiguous failure: it would queue the event twice."""
    return Op(
        "POST",
        f"{API}/webhooks/{seg(webhook_id)}/deliveries/{seg(delivery_id)}/redeliver",
        _json,
        safe=False,
    )
