"""Sending an operation: headers, retries with backoff, and errors as exceptions.

Retried: connection failures before the request went out (always), no answer after it
went out (only for operations that are safe to repeat), 429 (after ``Retry-After``) and 503
(a write whose outcome is unknown only when safe to repeat). Submits always carry an
idempotency key, so a repeated submit never stores twice.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from . import __about__
from ._ops import Op
from .errors import ConnectionFailed, FeedgraphError, error_for_status

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry."""

    #: Retries after the first attempt (0 turns retrying off).
    max_retries: int = 5
    #: First backoff in seconds; it doubles on each retry, with jitter.
    backoff: float = 0.2
    #: Longest backoff between two attempts, in seconds.
    max_backoff: float = 5.0
    #: Longest ``Retry-After`` honoured, in seconds (a longer one is capped).
    max_retry_after: float = 60.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (from 0)."""
        if retry_after is not None:
            return max(0.0, min(retry_after, self.max_retry_after))
        base = min(self.max_backoff, self.backoff * float(2**attempt))
        return base / 2 + random.uniform(0, base / 2)


def _retry_after(r: httpx.Response) -> float | None:
    v = r.headers.get("retry-after")
    if v is None:
        return None
    try:
        return float(v)
    except ValueError:
        return None


def raise_for(r: httpx.Response) -> None:
    """Raises the matching :class:`FeedgraphError` for an error answer."""
    if r.status_code < 400:
        return
    error: str | None = None
    details: str | None = None
    try:
        body: Any = r.json()
        if isinstance(body, dict):
            e, d = body.get("error"), body.get("details")
            error = e if isinstance(e, str) else None
            details = d if isinstance(d, str) else None
    except ValueError:
        details = r.text[:500] or None
    raise error_for_status(
        r.status_code, error, details, r.headers.get("x-request-id"), _retry_after(r)
    )


def _retry_answer(op: Op[Any], r: httpx.Response) -> tuple[bool, float | None]:
    """Whether an answer calls for a retry, and the server's wait hint."""
    if r.status_code == 429:
        return True, _retry_after(r)
    if r.status_code == 503:
        outcome_unknown = False
        try:
            body = r.json()
            outcome_unknown = isinstance(body, dict) and body.get("error") == "Write outcome unknown"
        except ValueError:
            pass
        return (op.safe or not outcome_unknown), _retry_after(r)
    if r.status_code in (502, 504):
        return op.safe, None
    return False, None


def _retry_failure(op: Op[Any], e: httpx.TransportError) -> bool:
    """Whether a request that got no answer may be sent again."""
    if isinstance(e, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
        return True  # it never reached the server
    return op.safe


@dataclass(frozen=True)
class Settings:
    """Everything needed to make a transport (also in a worker thread or a forked child)."""

    base_url: str
    token: str | None
    timeout: float
    retry: RetryPolicy
    transport: httpx.BaseTransport | None = None
    async_transport: httpx.AsyncBaseTransport | None = None

    def headers(self) -> dict[str, str]:
        """Headers of every request."""
        h = {"User-Agent": f"feedgraph-python/{__about__.VERSION}"}
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        return h


class SyncTransport:
    """A blocking transport (one httpx connection pool). After ``fork()`` the child makes
    a pool of its own instead of sharing the parent's sockets."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pid = os.getpid()
        self._http = self._make()

    def _make(self) -> httpx.Client:
        s = self.settings
        return httpx.Client(
            base_url=s.base_url, headers=s.headers(), timeout=s.timeout, transport=s.transport
        )

    def _client(self) -> httpx.Client:
        if os.getpid() != self._pid:
            self._pid = os.getpid()
            self._http = self._make()
        return self._http

    def send(self, op: Op[Any]) -> httpx.Response:
        """Sends ``op`` with retries; the answer, whatever its status."""
        retry = self.settings.retry
        attempt = 0
        while True:
            try:
                r = self._client().request(
                    op.method, op.path, params=op.params, json=op.body, headers=op.headers
                )
            except httpx.TransportError as e:
                if attempt < retry.max_retries and _retry_failure(op, e):
                    time.sleep(retry.delay(attempt))
                    attempt += 1
                    continue
                raise ConnectionFailed(
                    f"no answer from {self.settings.base_url}: {e!r}"
                ) from e
            again, hint = _retry_answer(op, r)
            if again and attempt < retry.max_retries:
                r.close()
                time.sleep(retry.delay(attempt, hint))
                attempt += 1
                continue
            return r

    def run(self, op: Op[T]) -> T:
        """Sends ``op`` and reads its answer, raising on an error status."""
        r = self.send(op)
        raise_for(r)
        try:
            return op.parse(r)
        except ValueError as e:
            raise FeedgraphError(f"unreadable answer from {op.path}: {e}", status=r.status_code) from e

    def close(self) -> None:
        """Closes the connection pool."""
        self._http.close()


class AsyncTransport:
    """The asyncio counterpart of :class:`SyncTransport`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        s = settings
        self._http = httpx.AsyncClient(
            base_url=s.base_url, headers=s.headers(), timeout=s.timeout, transport=s.async_transport
        )

    async def send(self, op: Op[Any]) -> httpx.Response:
        """Sends ``op`` with retries; the answer, whatever its status."""
        retry = self.settings.retry
        attempt = 0
        while True:
            try:
                r = await self._http.request(
                    op.method, op.path, params=op.params, json=op.body, headers=op.headers
                )
            except httpx.TransportError as e:
                if attempt < retry.max_retries and _retry_failure(op, e):
                    await asyncio.sleep(retry.delay(attempt))
                    attempt += 1
                    continue
                raise ConnectionFailed(
                    f"no answer from {self.settings.base_url}: {e!r}"
                ) from e
            again, hint = _retry_answer(op, r)
            if again and attempt < retry.max_retries:
                await r.aclose()
                await asyncio.sleep(retry.delay(attempt, hint))
                attempt += 1
                continue
            return r

    async def run(self, op: Op[T]) -> T:
        """Sends ``op`` and reads its answer, raising on an error status."""
        r = await self.send(op)
        raise_for(r)
        try:
            return op.parse(r)
        except ValueError as e:
            raise FeedgraphError(f"unreadable answer from {op.path}: {e}", status=r.status_code) from e

    async def close(self) -> None:
        """Closes the connection pool."""
        await self._http.aclose()
