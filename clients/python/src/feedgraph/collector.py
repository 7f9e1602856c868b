"""Collector conveniences on top of a client: every kind of feedback (thumbs, ratings,
text, corrections, labels), with shared defaults.

::

    collector = FeedbackCollector(client, model_version="llama-2-7b", adapter_id="help_lora")
    collector.collect_thumbs(True, question=prompt, answer=reply, session_id=sid)
    with collector.context("answer", question=prompt) as op:
        op.set_result(model(prompt))
    op.thumbs_down(correction="The right answer is ...")

Every ``collect_*`` method sends through the background queue by default (it returns the
item's idempotency key at once); ``wait=True`` submits synchronously and returns the new
item's id.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Union

from .models import Feedback, Summary

if TYPE_CHECKING:
    from .client import Client
    from .testing import InMemoryClient

#: Submit fields the client sends as kind fields (``extra``).
_KIND_FIELDS = ("kind", "label", "provider", "score_config")


#: What a collector sends through: the real client or the in-memory test double.
SyncFeedbackClient = Union["Client", "InMemoryClient"]


class FeedbackCollector:
    """Collects feedback on model answers, with shared defaults for every item
    (``model_version``, ``adapter_id``, ``adapter_version``, ``user_id``, ``session_id``,
    ``metadata``)."""

    def __init__(self, client: SyncFeedbackClient, **defaults: Any) -> None:
        self.client = client
        self.defaults = defaults

    def _send(self, type: str | None, question: str, answer: str, wait: bool,
              kw: dict[str, Any]) -> str:  # fmt: skip
        fields = {**self.defaults, **{k: v for k, v in kw.items() if v is not None}}
        meta = {**self.defaults.get("metadata", {}), **(kw.get("metadata") or {})}
        if meta:
            fields["metadata"] = meta
        extra = {k: fields.pop(k) for k in _KIND_FIELDS if k in fields}
        if extra:
            fields["extra"] = {**extra, **fields.get("extra", {})}
        if wait:
            return self.client.submit(type, question, answer, **fields).id
        return self.client.feedback(type, question, answer, **fields)

    def collect_thumbs(
        self, up: bool, *, question: str, answer: str, wait: bool = False, **fields: Any
    ) -> str:
        """Thumbs up (``up=True``) or down on an answer; ``fields`` are any submit fields
        (``comment``, ``session_id``, ``metadata``...)."""
        return self._send("positive" if up else "negative", question, answer, wait, fields)

    def collect_correction(
        self,
        *,
        question: str,
        original: str,
        corrected: str,
        wait: bool = False,
        **fields: Any,
    ) -> str:
        """A wrong answer and the output the user expected (kind ``correction``, negative:
        the DPO export's rejected/chosen pair)."""
        return self._send(
            None, question, original, wait, {**fields, "kind": "correction", "correction": corrected}
        )

    def collect_rating(
        self,
        rating: float,
        *,
        question: str,
        answer: str,
        score_config: str | None = None,
        type: str | None = None,
        wait: bool = False,
        **fields: Any,
    ) -> str:
        """A numeric rating on an answer (kind ``rating``). With a ``score_config`` the
        server checks the rating against it, and its threshold decides ``type`` when none
        is given; without one, ``type`` is required."""
        kw = {**fields, "kind": "rating", "score": rating, "score_config": score_config}
        return self._send(type, question, answer, wait, kw)

    def collect_text(
        self,
        text: str,
        *,
        question: str,
        answer: str,
        type: str,
        wait: bool = False,
        **fields: Any,
    ) -> str:
        """Free text on an answer (kind ``text``); ``type`` says whether it praises
        (``positive``) or faults (``negative``) the answer."""
        return self._send(type, question, answer, wait, {**fields, "kind": "text", "comment": text})

    def collect_label(
        self,
        label: str,
        *,
        input_data: Any,
        answer: str,
        score_config: str | None = None,
        wait: bool = False,
        **fields: Any,
    ) -> str:
        """A ground-truth label for an input (kind ``label``); ``input_data`` is sent as
        the question (JSON text when it is not a string), ``answer`` is the model's output
        for it. With a categorical ``score_config`` the label must be one of its
        categories."""
        question = input_data if isinstance(input_data, str) else json.dumps(input_data)
        kw = {**fields, "kind": "label", "label": label, "score_config": score_config}
        return self._send(None, question, answer, wait, kw)

    def get_feedback(self, type: str | None = None, limit: int = 100) -> list[Feedback]:
        """The newest items, of one type when given."""
        if type is not None:
            return self.client.find_by_type(type, limit)
        return [*self.client.list(limit=limit)]

    def aggregate(self, window_hours: int = 24) -> Summary:
        """The summary of the last ``window_hours``."""
        return self.client.aggregate(window_hours)

    def context(self, operation: str, *, question: str | None = None,
                **metadata: Any) -> FeedbackContext:  # fmt: skip
        """A context manager that records an operation's input, result, duration and
        error, for feedback on it later."""
        return FeedbackContext(self, operation, question=question, metadata=metadata)


class FeedbackContext:
    """Records one operation (input, result, how long it took, whether it failed) so that
    the user's verdict on it can be sent with that context. Works with ``with`` and
    ``async with``."""

    def __init__(
        self,
        collector: FeedbackCollector,
        operation: str,
        *,
        question: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self.collector = collector
        self.operation = operation
        self.input: str | None = question
        self.result: str | None = None
        self.error: str | None = None
        self.duration_ms: float | None = None
        self.metadata: dict[str, Any] = dict(metadata or {})
        self._start = 0.0

    def set_input(self, input_data: Any) -> None:
        """The operation's input (the question)."""
        self.input = str(input_data)

    def set_result(self, result: Any) -> None:
        """The operation's result (the answer)."""
        self.result = str(result)

    def __enter__(self) -> FeedbackContext:
        self._start = time.monotonic()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.duration_ms = (time.monotonic() - self._start) * 1000
        if exc is not None:
            self.error = f"{exc_type.__name__ if exc_type else 'Error'}: {exc}"

    async def __aenter__(self) -> FeedbackContext:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def _context(self) -> dict[str, Any]:
        ctx: dict[str, Any] = {"operation": self.operation, **self.metadata}
        if self.duration_ms is not None:
            ctx["duration_ms"] = round(self.duration_ms, 3)
        if self.error is not None:
            ctx["error"] = self.error
        return ctx

    def _qa(self) -> tuple[str, str]:
        if self.input is None or self.result is None:
            raise ValueError("set the operation's input and result before sending feedback")
        return self.input, self.result

    def thumbs_up(self, *, wait: bool = False, **fields: Any) -> str:
        """Thumbs up on this operation's result."""
        q, a = self._qa()
        meta = {**self._context(), **fields.pop("metadata", {})}
        return self.collector.collect_thumbs(True, question=q, answer=a, wait=wait,
                                             metadata=meta, **fields)  # fmt: skip

    def thumbs_down(self, *, correction: str | None = None, wait: bool = False,
                    **fields: Any) -> str:  # fmt: skip
        """Thumbs down on this operation's result, with a correction when known."""
        q, a = self._qa()
        meta = {**self._context(), **fields.pop("metadata", {})}
        return self.collector.collect_thumbs(False, question=q, answer=a, wait=wait,
                                             correction=correction, metadata=meta, **fields)  # fmt: skip
