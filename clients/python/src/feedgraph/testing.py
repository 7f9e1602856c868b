"""An in-memory stand-in for :class:`feedgraph.Client`, for the tests of code that sends
feedback: no server, no threads, the same method names for the feedback operations, and
the server's main rules (required fields, each kind's field, score configs, idempotency
keys, newest-first lists, cursors).
"""

from __future__ import annotations

import builtins
import hashlib

import itertools
import json
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from . import _ops
from .errors import ConflictError, NotFoundError, ValidationError
from .models import (
    ScoreConfig,
    BatchItemResult,
    BatchResult,
    ErasurePage,
    ErasureReceipt,
    Feedback,
    FeedbackPage,
    Health,
    JsonObject,
    Stats,
    SubmitResult,
    Summary,
)

_FIELDS = {
    "type", "question", "answer", "correction", "comment", "user_id", "interaction_id",
    "session_id", "model_version", "adapter_id", "adapter_version", "score", "metadata",
    "kind", "label", "provider", "score_config",
}  # fmt: skip

#: The field each kind requires besides question and answer.
_KIND_NEEDS = {"thumbs": None, "rating": "score", "text": "comment",
               "correction": "correction", "label": "label"}  # fmt: skip


class InMemoryClient:
    """Keeps submitted items in memory. ``items`` lists them oldest first."""

    def __init__(self) -> None:
        self.items: list[Feedback] = []
        self._keys: dict[str, tuple[str, str]] = {}
        self._seq = itertools.count(1)
        self._lock = threading.Lock()
        #: Score configs by name (current version) and every version written.
        self.configs: dict[str, ScoreConfig] = {}
        self.config_versions: dict[str, list[JsonObject]] = {}
        #: Erasure receipts, oldest first.
        self.erasure_receipts: list[ErasureReceipt] = []
        self._erasure_seq = itertools.count(1)

    def _store(self, body: Mapping[str, Any], key: str | None) -> SubmitResult:
        unknown = set(body) - _FIELDS
        if unknown:
            raise ValidationError(f"unknown field {sorted(unknown)[0]!r}", status=400)
        body = dict(body)
        self._check_kind(body)
        if body.get("type") not in ("positive", "negative"):
            raise ValidationError("'type' must be positive or negative", status=400)
        for f in ("question", "answer"):
            v = body.get(f)
            if not isinstance(v, str) or not v.strip():
                raise ValidationError(f"'{f}' is required", status=400)
        digest = json.dumps(body, sort_keys=True)
        with self._lock:
            if key is not None and key in self._keys:
                fid, seen = self._keys[key]
                if seen != digest:
                    raise ConflictError("idempotency key used with another body", status=409)
                return SubmitResult.from_json(self._find(fid).raw, replayed=True)
            now = int(time.time() * 1000)
            raw: JsonObject = {
                **body,
                "id": f"feedback-{next(self._seq):026d}",
                "validation_status": "approved",
                "validation_reasons": [],
                "created_at": now,
                "updated_at": now,
                "version": 1,
                "used_for_training": False,
                "training_batch_id": 0,
                "metadata": dict(body.get("metadata") or {}),
            }
            fb = Feedback.from_json(raw)
            self.items.append(fb)
            if key is not None:
                self._keys[key] = (fb.id, digest)
        return SubmitResult.from_json(raw)

    def _check_kind(self, body: dict[str, Any]) -> None:
        """The server's kind rules: the kind's field, a label only on labels, the named
        score config's range or categories, and the type a kind may leave out."""
        kind = body.get("kind") or "thumbs"
        if kind not in _KIND_NEEDS:
            raise ValidationError(f"invalid value for 'kind': unknown kind {kind!r}", status=400)
        need = _KIND_NEEDS[kind]
        if need is not None and body.get(need) in (None, ""):
            raise ValidationError(f"missing required field {need!r}", status=400)
        if "label" in body and kind != "label":
            raise ValidationError("invalid value for 'label': only label items carry one", status=400)
        name = body.get("score_config")
        config = self.configs.get(name) if name is not None else None
        if name is not None and config is None:
            raise ValidationError(f"invalid value for 'score_config': no config {name!r}", status=400)
        score = body.get("score")
        if config is not None:
            wants = "label" if config.data_type == "categorical" else "rating"
            if kind != wants:
                raise ValidationError(f"invalid value for 'score_config': for {wants} items", status=400)
            if config.data_type == "categorical" and body.get("label") not in config.categories:
                raise ValidationError("invalid value for 'label': not a category", status=400)
            if config.data_type == "boolean" and score not in (0, 1):
                raise ValidationError("invalid value for 'score': 0 or 1", status=400)
            if config.data_type == "numeric" and isinstance(score, (int, float)) and not (
                (config.min is None or score >= config.min) and (config.max is None or score <= config.max)
            ):
                raise ValidationError("invalid value for 'score': outside the range", status=400)
        if body.get("type") is None:
            threshold = None if config is None else (
                config.threshold if config.threshold is not None
                else (1.0 if config.data_type == "boolean" else None)
            )  # fmt: skip
            if kind == "correction":
                body["type"] = "negative"
            elif kind == "label":
                body["type"] = "positive"
            elif kind == "rating" and threshold is not None and isinstance(score, (int, float)):
                body["type"] = "positive" if score >= threshold else "negative"
        body.setdefault("kind", "thumbs")

    def put_score_config(self, name: str, data_type: str, *, min: float | None = None,
                         max: float | None = None, categories: Iterable[str] | None = None,
                         threshold: float | None = None,
                         description: str | None = None) -> JsonObject:  # fmt: skip
        """Creates a score config, or a new version when a field differs."""
        if data_type not in ("numeric", "categorical", "boolean"):
            raise ValidationError("invalid value for 'data_type'", status=400)
        if data_type == "numeric" and (min is None or max is None or min >= max):
            raise ValidationError("a numeric config needs min below max", status=400)
        if data_type == "categorical" and not categories:
            raise ValidationError("missing required field 'categories'", status=400)
        cur = self.configs.get(name)
        raw: JsonObject = {
            "name": name, "data_type": data_type, "min": min, "max": max,
            "categories": list(categories or []), "threshold": threshold,
            "description": description, "version": 1,
        }  # fmt: skip
        if cur is not None:
            same = {k: v for k, v in cur.raw.items() if k != "version"} == {
                k: v for k, v in raw.items() if k != "version"
            }
            if same:
                return {"config": cur.raw, "result": "unchanged"}
            raw["version"] = cur.version + 1
        config = ScoreConfig.from_json(raw)
        self.configs[name] = config
        self.config_versions.setdefault(name, []).append(raw)
        return {"config": raw, "result": "created" if cur is None else "updated"}

    def get_score_config(self, name: str) -> ScoreConfig:
        """One score config (:class:`~feedgraph.errors.NotFoundError` if unknown)."""
        if name not in self.configs:
            raise NotFoundError(f"Score config '{name}' not found", status=404)
        return self.configs[name]

    def score_configs(self) -> builtins.list[ScoreConfig]:
        """Every score config, by name."""
        return [self.configs[n] for n in sorted(self.configs)]

    def _find(self, fid: str) -> Feedback:
        for f in self.items:
            if f.id == fid:
                return f
        raise NotFoundError(f"Feedback '{fid}' not found", status=404)

    def submit(self, type: str | None, question: str, answer: str, *,
               idempotency_key: str | None = None, extra: Mapping[str, Any] | None = None,
               **fields: Any) -> SubmitResult:  # fmt: skip
        """Stores one item at once."""
        body = _ops.feedback_body(type, question, answer, extra=extra, **fields)
        return self._store(body, idempotency_key)

    def feedback(self, type: str | None, question: str, answer: str, *,
                 idempotency_key: str | None = None, **fields: Any) -> str:  # fmt: skip
        """Stores one item at once (there is no queue); returns its idempotency key."""
        key = idempotency_key or _ops.new_key()
        self.submit(type, question, answer, idempotency_key=key, **fields)
        return key

    def submit_many(self, items: Iterable[Mapping[str, Any]]) -> BatchResult:
        """Stores each item; one result per item."""
        results = []
        for i, raw in enumerate(_ops.keyed(items)):
            key = raw.pop("idempotency_key")
            try:
                r = self._store(raw, key)
                results.append(BatchItemResult(i, 201, key, r.replayed, r, None, None))
            except (ValidationError, ConflictError) as e:
                results.append(BatchItemResult(i, e.status or 400, key, False, None, e.error, str(e)))
        created = sum(1 for r in results if r.ok and not r.replayed)
        replayed = sum(1 for r in results if r.replayed)
        return BatchResult(created, replayed, len(results) - created - replayed, results)

    def flush(self, timeout: float | None = None) -> bool:
        """Nothing to wait for."""
        return True

    def shutdown(self, timeout: float | None = None) -> bool:
        """Nothing to stop."""
        return True

    def get(self, feedback_id: str) -> Feedback:
        """One item (:class:`~feedgraph.errors.NotFoundError` if unknown)."""
        return self._find(feedback_id)

    def _matching(self, type: str | None, session: str | None,
                  kind: str | None = None) -> builtins.list[Feedback]:  # fmt: skip
        return [
            f
            for f in reversed(self.items)
            if (type is None or f.type == type) and (session is None or f.session_id == session)
            and (kind is None or f.kind == kind)
        ]

    def list_page(self, *, cursor: str | None = None, limit: int | None = None,
                  type: str | None = None, session: str | None = None,
                  kind: str | None = None) -> FeedbackPage:  # fmt: skip
        """One page, newest first, with the server's cursor rules."""
        items = self._matching(type, session, kind)
        start = 0
        if cursor is not None:
            ids = [f.id for f in items]
            if cursor not in ids:
                raise ValidationError("'cursor' names no item", status=400)
            start = ids.index(cursor) + 1
        size = limit or 100
        page = items[start : start + size]
        more = start + size < len(items)
        return FeedbackPage(page, page[-1].id if more and page else None, {})

    def list(self, *, type: str | None = None, session: str | None = None,
             kind: str | None = None, page_size: int = 100,
             limit: int | None = None) -> Iterator[Feedback]:  # fmt: skip
        """Every matching item, newest first."""
        items = self._matching(type, session, kind)
        return iter(items if limit is None else items[:limit])

    def find_by_session(self, session_id: str, limit: int | None = None) -> builtins.list[Feedback]:
        """Every item of one session, newest first."""
        return [*self.list(session=session_id, limit=limit)]

    def find_by_type(self, type: str, limit: int = 100) -> builtins.list[Feedback]:
        """The newest ``limit`` items of one type."""
        return [*self.list(type=type, limit=limit)]

    def stats(self, *, hours: int | None = None, **_: Any) -> Stats:
        """The counters (validation is not modelled: every item is approved)."""
        since = 0 if hours is None else int(time.time() * 1000) - hours * 3_600_000
        items = [f for f in self.items if f.created_at >= since]
        pos = sum(1 for f in items if f.type == "positive")
        scores = [f.score for f in items if f.score is not None]
        return Stats(
            total_feedback=len(items),
            positive_count=pos,
            negative_count=len(items) - pos,
            pending_validation=0,
            approved_count=len(items),
            rejected_count=0,
            flagged_count=0,
            unused_for_training=len(items),
            used_for_training=0,
            positive_ratio=pos / len(items) if items else 0.0,
            average_score=sum(scores) / len(scores) if scores else None,
            raw={},
        )

    def aggregate(self, window_hours: int = 24, **_: Any) -> Summary:
        """The summary of the last ``window_hours``."""
        s = self.stats(hours=window_hours)
        return Summary(
            window_hours=window_hours,
            total_count=s.total_feedback,
            count_by_type={"positive": s.positive_count, "negative": s.negative_count},
            positive_ratio=s.positive_ratio,
            average_rating=s.average_score,
        )

    def health_check(self, timeout: float = 5.0) -> Health:
        """Always healthy."""
        return Health(True, True, 0.0)

    # -- erasure --------------------------------------------------------------------------

    def erase(self, scope: str, value: str, *, actor: str = "test") -> ErasureReceipt:
        """Erases like the server: question and answer emptied, correction, comment and
        metadata dropped, the personal ids removed; the receipt keeps a user's or session's
        value only as its SHA-256. An unknown item id is a :class:`NotFoundError`."""
        if scope not in _ops.ERASURE_SCOPES:
            raise ValidationError(f"invalid value for 'scope': {scope!r}", status=400)
        value = value.strip()
        if not value:
            raise ValidationError("'value' must name the item, user or session to erase", status=400)
        now = int(time.time() * 1000)
        with self._lock:
            if scope == "item":
                self._find(value)
                subject = value
                hit = [f for f in self.items if f.id == value]
            else:
                subject = "sha256:" + hashlib.sha256(value.encode()).hexdigest()
                attr = "user_id" if scope == "user" else "session_id"
                hit = [f for f in self.items if getattr(f, attr) == value]
            ids = sorted(f.id for f in hit)
            for i, f in enumerate(self.items):
                if f.id not in ids or f.raw.get("erased_at") is not None:
                    continue
                raw = {k: v for k, v in f.raw.items()
                       if k not in ("correction", "comment", "user_id", "session_id", "interaction_id")}  # fmt: skip
                raw.update(question="", answer="", metadata={}, erased_at=now, erased_by=actor,
                           version=f.version + 1, updated_at=now)  # fmt: skip
                self.items[i] = Feedback.from_json(raw)
            receipt = ErasureReceipt.from_json({
                "id": f"erasure-{next(self._erasure_seq):026d}", "org_id": "test", "scope": scope,
                "subject": subject, "requested_by": actor, "requested_at": now, "state": "done",
                "item_ids": ids, "items": len(ids), "versions": len(ids), "finished_at": now,
            })  # fmt: skip
            self.erasure_receipts.append(receipt)
        return receipt

    def erase_item(self, feedback_id: str) -> ErasureReceipt:
        """Erases one item."""
        return self.erase("item", feedback_id)

    def erasures_page(self, *, limit: int | None = None, before: str | None = None) -> ErasurePage:
        """One page of receipts, newest first."""
        receipts = self.erasure_receipts[::-1]
        if before is not None:
            receipts = [r for r in receipts if r.id < before]
        size = limit or 100
        page = receipts[:size]
        more = len(receipts) > size
        return ErasurePage(page, page[-1].id if more and page else None, {})

    def erasures(self, *, page_size: int = 100, limit: int | None = None) -> Iterator[ErasureReceipt]:
        """Every receipt, newest first."""
        receipts = self.erasure_receipts[::-1]
        return iter(receipts if limit is None else receipts[:limit])

    def get_erasure(self, erasure_id: str) -> ErasureReceipt:
        """One receipt (:class:`~feedgraph.errors.NotFoundError` if unknown)."""
        for r in self.erasure_receipts:
            if r.id == erasure_id:
                return r
        raise NotFoundError(f"Erasure '{erasure_id}' not found", status=404)

    # -- webhooks: not modelled -------------------------------------------------------------

    def _no_webhooks(self, *_: Any, **__: Any) -> Any:
        raise NotImplementedError(
            "InMemoryClient does not model webhooks: test them against a real feedgraph "
            "server, or check receivers with feedgraph.verify_signature"
        )

    create_webhook = webhooks = get_webhook = update_webhook = delete_webhook = _no_webhooks
    deliveries_page = deliveries = redeliver = _no_webhooks
