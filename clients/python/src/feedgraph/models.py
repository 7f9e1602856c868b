"""Typed views of the server's answers.

Each model keeps the fields a client relies on as typed attributes and the whole answer in
``raw``, so fields a newer server adds (feedback kinds, for one) are never lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

#: A JSON object as decoded by the client.
JsonObject = dict[str, Any]

#: Thumbs up or down, as the server spells it.
FeedbackType = Literal["positive", "negative"]
#: What validation decided about an item.
ValidationStatus = Literal["pending", "approved", "rejected", "flagged"]


def _opt_str(d: JsonObject, key: str) -> str | None:
    v = d.get(key)
    return v if isinstance(v, str) else None


def _int(d: JsonObject, key: str) -> int:
    v = d.get(key)
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def _opt_float(d: JsonObject, key: str) -> float | None:
    v = d.get(key)
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    return None


@dataclass(frozen=True)
class Feedback:
    """One stored feedback item (``GET /feedback/{id}``)."""

    id: str
    type: str
    question: str
    answer: str
    validation_status: str
    created_at: int
    updated_at: int
    version: int
    used_for_training: bool
    training_batch_id: int
    correction: str | None
    comment: str | None
    user_id: str | None
    session_id: str | None
    interaction_id: str | None
    model_version: str | None
    adapter_id: str | None
    adapter_version: str | None
    score: float | None
    metadata: JsonObject
    validation_reasons: list[JsonObject]
    raw: JsonObject = field(repr=False, compare=False)
    #: ``thumbs``, ``rating``, ``text``, ``correction`` or ``label``.
    kind: str = "thumbs"
    #: The ground-truth label of a ``label`` item.
    label: str | None = None
    #: The model provider, when the sender gave one.
    provider: str | None = None
    #: The score config the rating or label was checked against.
    score_config: str | None = None

    @classmethod
    def from_json(cls, d: JsonObject) -> Feedback:
        """Reads a feedback record."""
        meta = d.get("metadata")
        reasons = d.get("validation_reasons")
        return cls(
            id=str(d.get("id", "")),
            type=str(d.get("type", "")),
            question=str(d.get("question", "")),
            answer=str(d.get("answer", "")),
            validation_status=str(d.get("validation_status", "")),
            created_at=_int(d, "created_at"),
            updated_at=_int(d, "updated_at"),
            version=_int(d, "version"),
            used_for_training=bool(d.get("used_for_training", False)),
            training_batch_id=_int(d, "training_batch_id"),
            correction=_opt_str(d, "correction"),
            comment=_opt_str(d, "comment"),
            user_id=_opt_str(d, "user_id"),
            session_id=_opt_str(d, "session_id"),
            interaction_id=_opt_str(d, "interaction_id"),
            model_version=_opt_str(d, "model_version"),
            adapter_id=_opt_str(d, "adapter_id"),
            adapter_version=_opt_str(d, "adapter_version"),
            score=_opt_float(d, "score"),
            metadata=meta if isinstance(meta, dict) else {},
            validation_reasons=reasons if isinstance(reasons, list) else [],
            raw=d,
            kind=str(d.get("kind") or "thumbs"),
            label=_opt_str(d, "label"),
            provider=_opt_str(d, "provider"),
            score_config=_opt_str(d, "score_config"),
        )


@dataclass(frozen=True)
class SubmitResult:
    """The answer to a submit: the new item's id and what validation decided."""

    id: str
    type: str
    validation_status: str
    validation_reasons: list[JsonObject]
    created_at: int
    #: True when the idempotency key had been used before: nothing new was stored.
    replayed: bool
    raw: JsonObject = field(repr=False, compare=False)
    #: The kind (the server leaves it out of the seed's thumbs answer).
    kind: str = "thumbs"

    @classmethod
    def from_json(cls, d: JsonObject, replayed: bool = False) -> SubmitResult:
        """Reads a submit answer."""
        reasons = d.get("validation_reasons")
        return cls(
            id=str(d.get("id", "")),
            type=str(d.get("type", "")),
            validation_status=str(d.get("validation_status", "")),
            validation_reasons=reasons if isinstance(reasons, list) else [],
            created_at=_int(d, "created_at"),
            replayed=replayed,
            raw=d,
            kind=str(d.get("kind") or "thumbs"),
        )


@dataclass(frozen=True)
class BatchItemResult:
    """The result of one item of a batch submit."""

    index: int
    status: int
    idempotency_key: str | None
    replayed: bool
    #: The stored item (on success).
    result: SubmitResult | None
    #: The error category and details (on failure).
    error: str | None
    details: str | None

    @property
    def ok(self) -> bool:
        """Whether the item is stored (new or replayed)."""
        return self.result is not None

    @classmethod
    def from_json(cls, d: JsonObject) -> BatchItemResult:
        """Reads one result."""
        fb = d.get("feedback")
        replayed = bool(d.get("replayed", False))
        return cls(
            index=_int(d, "index"),
            status=_int(d, "status"),
            idempotency_key=_opt_str(d, "idempotency_key"),
            replayed=replayed,
            result=SubmitResult.from_json(fb, replayed) if isinstance(fb, dict) else None,
            error=_opt_str(d, "error"),
            details=_opt_str(d, "details"),
        )


@dataclass(frozen=True)
class BatchResult:
    """The answer to a batch submit: counts and one result per item, in order."""

    created: int
    replayed: int
    failed: int
    results: list[BatchItemResult]

    @classmethod
    def from_json(cls, d: JsonObject) -> BatchResult:
        """Reads a batch answer."""
        results = d.get("results")
        return cls(
            created=_int(d, "created"),
            replayed=_int(d, "replayed"),
            failed=_int(d, "failed"),
            results=[BatchItemResult.from_json(r) for r in results]
            if isinstance(results, list)
            else [],
        )

    @classmethod
    def merge(cls, parts: list[BatchResult]) -> BatchResult:
        """Joins the answers of consecutive chunks, renumbering the indexes."""
        results: list[BatchItemResult] = []
        for p in parts:
            offset = len(results)
            for r in p.results:
                results.append(
                    BatchItemResult(
                        index=r.index + offset,
                        status=r.status,
                        idempotency_key=r.idempotency_key,
                        replayed=r.replayed,
                        result=r.result,
                        error=r.error,
                        details=r.details,
                    )
                )
        return cls(
            created=sum(p.created for p in parts),
            replayed=sum(p.replayed for p in parts),
            failed=sum(p.failed for p in parts),
            results=results,
        )


@dataclass(frozen=True)
class FeedbackPage:
    """One page of a list, newest first; ``next_cursor`` is ``None`` on the last page."""

    feedback: list[Feedback]
    next_cursor: str | None
    raw: JsonObject = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: JsonObject) -> FeedbackPage:
        """Reads a list answer (``GET /feedback`` or ``by-adapter``)."""
        items = d.get("feedback")
        return cls(
            feedback=[Feedback.from_json(f) for f in items] if isinstance(items, list) else [],
            next_cursor=_opt_str(d, "next_cursor"),
            raw=d,
        )


@dataclass(frozen=True)
class Stats:
    """The counters of ``GET /feedback/stats``."""

    total_feedback: int
    positive_count: int
    negative_count: int
    pending_validation: int
    approved_count: int
    rejected_count: int
    flagged_count: int
    unused_for_training: int
    used_for_training: int
    positive_ratio: float
    average_score: float | None
    raw: JsonObject = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: JsonObject) -> Stats:
        """Reads a stats answer."""
        return cls(
            total_feedback=_int(d, "total_feedback"),
            positive_count=_int(d, "positive_count"),
            negative_count=_int(d, "negative_count"),
            pending_validation=_int(d, "pending_validation"),
            approved_count=_int(d, "approved_count"),
            rejected_count=_int(d, "rejected_count"),
            flagged_count=_int(d, "flagged_count"),
            unused_for_training=_int(d, "unused_for_training"),
            used_for_training=_int(d, "used_for_training"),
            positive_ratio=_opt_float(d, "positive_ratio") or 0.0,
            average_score=_opt_float(d, "average_score"),
            raw=d,
        )


@dataclass(frozen=True)
class Summary:
    """What ``aggregate(window_hours)`` answers: the module-style summary of a window."""

    window_hours: int
    total_count: int
    #: Items per type (``positive``, ``negative``; more once the server has kinds).
    count_by_type: dict[str, int]
    positive_ratio: float
    #: Mean score of the items that carry one (``None`` when none does).
    average_rating: float | None


@dataclass(frozen=True)
class LinkResult:
    """The answer to ``link``: the FEEDBACK_FOR edge, and whether this call made it."""

    feedback_id: str
    adapter_id: str
    created: bool
    raw: JsonObject = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: JsonObject) -> LinkResult:
        """Reads a link answer."""
        return cls(
            feedback_id=str(d.get("feedback_id", "")),
            adapter_id=str(d.get("adapter_id", "")),
            created=bool(d.get("created", False)),
            raw=d,
        )


@dataclass(frozen=True)
class QueryResult:
    """The answer of a graph query: column names, rows and the run's stats."""

    columns: list[str]
    rows: list[list[Any]]
    stats: JsonObject

    @classmethod
    def from_json(cls, d: JsonObject) -> QueryResult:
        """Reads a query answer."""
        cols = d.get("columns")
        rows = d.get("rows")
        stats = d.get("stats")
        return cls(
            columns=[str(c) for c in cols] if isinstance(cols, list) else [],
            rows=rows if isinstance(rows, list) else [],
            stats=stats if isinstance(stats, dict) else {},
        )

    def records(self) -> list[JsonObject]:
        """The rows as ``{column: value}`` dicts."""
        return [dict(zip(self.columns, row)) for row in self.rows]


@dataclass(frozen=True)
class Export:
    """A training batch exported for a trainer: JSONL lines and the server's counts."""

    format: str
    lines: list[JsonObject]
    items: int
    skipped: int
    retracted: int
    text: str = field(repr=False)


@dataclass(frozen=True)
class Health:
    """What ``health_check()`` found; it never raises."""

    #: The process answers ``/healthz``.
    alive: bool
    #: ``/readyz`` says the store is open and writable.
    ready: bool
    #: Round trip of the readiness probe, in milliseconds.
    latency_ms: float
    #: Why it is not ready (empty when it is).
    detail: str = ""

    @property
    def healthy(self) -> bool:
        """Alive and ready."""
        return self.alive and self.ready


@dataclass(frozen=True)
class ScoreConfig:
    """An org's typed scale for ratings or labels (``/score-configs``), versioned."""

    name: str
    #: ``numeric`` (``min``..``max``), ``categorical`` (``categories``) or ``boolean``.
    data_type: str
    min: float | None
    max: float | None
    categories: list[str]
    #: Scores at or above it are positive (ratings sent without ``type``, KTO exports).
    threshold: float | None
    description: str | None
    version: int
    raw: JsonObject = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: JsonObject) -> ScoreConfig:
        """Reads a score config."""
        cats = d.get("categories")
        return cls(
            name=str(d.get("name", "")),
            data_type=str(d.get("data_type", "")),
            min=_opt_float(d, "min"),
            max=_opt_float(d, "max"),
            categories=[str(c) for c in cats] if isinstance(cats, list) else [],
            threshold=_opt_float(d, "threshold"),
            description=_opt_str(d, "description"),
            version=_int(d, "version"),
            raw=d,
        )


@dataclass(frozen=True)
class FeedbackSummary:
    """The server's kind-aware summary (``GET /feedback/summary``)."""

    window_hours: int | None
    total_count: int
    average_rating: float | None
    count_by_type: dict[str, int]
    count_by_kind: dict[str, int]
    #: Per score config: ``{"count": n, "average": mean}``.
    ratings_by_config: dict[str, JsonObject]
    label_distribution: dict[str, int]
    #: Per model version / provider (``(none)`` for items without one).
    by_model: dict[str, JsonObject]
    by_provider: dict[str, JsonObject]
    raw: JsonObject = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: JsonObject) -> FeedbackSummary:
        """Reads a summary."""

        def counts(key: str) -> dict[str, int]:
            v = d.get(key)
            return {str(k): int(n) for k, n in v.items()} if isinstance(v, dict) else {}

        def objects(key: str) -> dict[str, JsonObject]:
            v = d.get(key)
            if not isinstance(v, dict):
                return {}
            return {str(k): o for k, o in v.items() if isinstance(o, dict)}

        w = d.get("window_hours")
        return cls(
            window_hours=int(w) if isinstance(w, int) else None,
            total_count=_int(d, "total_count"),
            average_rating=_opt_float(d, "average_rating"),
            count_by_type=counts("count_by_type"),
            count_by_kind=counts("count_by_kind"),
            ratings_by_config=objects("ratings_by_config"),
            label_distribution=counts("label_distribution"),
            by_model=objects("by_model"),
            by_provider=objects("by_provider"),
            raw=d,
        )


def _opt_int(d: JsonObject, key: str) -> int | None:
    v = d.get(key)
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _str_list(d: JsonObject, key: str) -> list[str]:
    v = d.get(key)
    return [s for s in v if isinstance(s, str)] if isinstance(v, list) else []


@dataclass(frozen=True)
class ErasureReceipt:
    """The receipt of an erasure (``POST /erasures``, ``GET /erasures/{id}``).

    ``subject`` is the feedback id for scope ``item``, ``sha256:<hex>`` of the value for
    ``user`` and ``session``, and ``created_before:<ms>`` for ``retention`` runs."""

    id: str
    org_id: str
    scope: str
    subject: str
    requested_by: str
    requested_at: int
    #: ``running`` or ``done``.
    state: str
    item_ids: list[str]
    #: Items erased.
    items: int
    #: Stored history versions whose content was removed.
    versions: int
    finished_at: int | None
    #: On sled: when the old files holding the erased bytes were deleted (ms since epoch);
    #: ``None`` until the rewrite after the erasure ran, and on PostgreSQL.
    bytes_gone_at: int | None
    #: On sled, while ``bytes_gone_at`` is ``None``: when the scheduled rewrite starts.
    bytes_due_by: int | None
    raw: JsonObject = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: JsonObject) -> ErasureReceipt:
        """Reads a receipt."""
        return cls(
            id=str(d.get("id", "")),
            org_id=str(d.get("org_id", "")),
            scope=str(d.get("scope", "")),
            subject=str(d.get("subject", "")),
            requested_by=str(d.get("requested_by", "")),
            requested_at=_int(d, "requested_at"),
            state=str(d.get("state", "")),
            item_ids=_str_list(d, "item_ids"),
            items=_int(d, "items"),
            versions=_int(d, "versions"),
            finished_at=_opt_int(d, "finished_at"),
            bytes_gone_at=_opt_int(d, "bytes_gone_at"),
            bytes_due_by=_opt_int(d, "bytes_due_by"),
            raw=d,
        )


@dataclass(frozen=True)
class CompactOutcome:
    """What ``POST /admin/compact`` did: on sled an online rewrite of the store, only while
    erased bytes wait for one; on PostgreSQL a ``VACUUM``, at most one a minute."""

    #: ``sled`` or ``postgres``.
    backend: str
    #: Whether anything ran (``False``: nothing was due).
    done: bool
    #: On sled, the rewrite's report (``keys``, ``caught_up``, ``took_ms``, ``pause_us``,
    #: ``bytes_before``, ``bytes_after``, ``finished_at``).
    rewrite: JsonObject | None
    raw: JsonObject = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: JsonObject) -> CompactOutcome:
        """Reads the outcome."""
        r = d.get("rewrite")
        return cls(
            backend=str(d.get("backend", "")),
            done=d.get("done") is True,
            rewrite=r if isinstance(r, dict) else None,
            raw=d,
        )


@dataclass(frozen=True)
class ErasurePage:
    """One page of ``GET /erasures``, newest first; ``next_before`` is ``None`` on the last."""

    erasures: list[ErasureReceipt]
    next_before: str | None
    raw: JsonObject = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: JsonObject) -> ErasurePage:
        """Reads a page of receipts."""
        items = d.get("erasures")
        return cls(
            erasures=[ErasureReceipt.from_json(e) for e in items if isinstance(e, dict)]
            if isinstance(items, list)
            else [],
            next_before=_opt_str(d, "next_before"),
            raw=d,
        )


@dataclass(frozen=True)
class Webhook:
    """A registered webhook endpoint (``/webhooks``). ``secret`` is set only in the answer
    to the registration, the one time the server shows it."""

    id: str
    url: str
    events: list[str]
    enabled: bool
    disabled_reason: str | None
    description: str | None
    created_at: int
    created_by: str
    #: Failed attempts in a row.
    failure_streak: int
    failing_since: int | None
    #: Events waiting for delivery.
    pending: int
    secret: str | None
    raw: JsonObject = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: JsonObject) -> Webhook:
        """Reads an endpoint."""
        return cls(
            id=str(d.get("id", "")),
            url=str(d.get("url", "")),
            events=_str_list(d, "events"),
            enabled=d.get("enabled") is True,
            disabled_reason=_opt_str(d, "disabled_reason"),
            description=_opt_str(d, "description"),
            created_at=_int(d, "created_at"),
            created_by=str(d.get("created_by", "")),
            failure_streak=_int(d, "failure_streak"),
            failing_since=_opt_int(d, "failing_since"),
            pending=_int(d, "pending"),
            secret=_opt_str(d, "secret"),
            raw=d,
        )


@dataclass(frozen=True)
class Delivery:
    """One attempt in an endpoint's delivery log."""

    id: str
    event_id: str
    #: The event type, e.g. ``feedback.submitted``.
    event: str
    #: 1 for the first attempt of the event.
    attempt: int
    at: int
    #: The receiver's HTTP status, if it answered.
    status: int | None
    #: Delivered (the receiver answered 2xx).
    ok: bool
    error: str | None
    #: Asked for by an admin (a redelivery).
    manual: bool
    #: The event body that was sent.
    payload: Any
    raw: JsonObject = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: JsonObject) -> Delivery:
        """Reads a log entry."""
        return cls(
            id=str(d.get("id", "")),
            event_id=str(d.get("event_id", "")),
            event=str(d.get("event", "")),
            attempt=_int(d, "attempt"),
            at=_int(d, "at"),
            status=_opt_int(d, "status"),
            ok=d.get("ok") is True,
            error=_opt_str(d, "error"),
            manual=d.get("manual") is True,
            payload=d.get("payload"),
            raw=d,
        )


@dataclass(frozen=True)
class DeliveryPage:
    """One page of a delivery log, newest first; ``next_cursor`` is ``None`` on the last."""

    deliveries: list[Delivery]
    next_cursor: str | None
    raw: JsonObject = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: JsonObject) -> DeliveryPage:
        """Reads a page of the log."""
        items = d.get("deliveries")
        return cls(
            deliveries=[Delivery.from_json(e) for e in items if isinstance(e, dict)]
            if isinstance(items, list)
            else [],
            next_cursor=_opt_str(d, "next_cursor"),
            raw=d,
        )
