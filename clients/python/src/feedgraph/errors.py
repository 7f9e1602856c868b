"""Exceptions raised by the feedgraph client.

Every error the server answers has the body ``{"error": ..., "details": ...}``; the client
raises one exception class per kind of failure, each carrying the HTTP ``status``, the
server's ``error`` category and its ``details``.
"""

from __future__ import annotations


class FeedgraphError(Exception):
    """Base class of every error this package raises."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error: str | None = None,
        details: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        #: HTTP status of the answer (``None`` when no answer came).
        self.status = status
        #: The server's short category, e.g. ``"Invalid request"``.
        self.error = error
        #: What the server says is wrong.
        self.details = details
        #: The ``x-request-id`` of the failed request, to find it in the server's log.
        self.request_id = request_id


class ConnectionFailed(FeedgraphError):
    """No answer from the server (refused, reset, timed out) after every retry."""


class ValidationError(FeedgraphError):
    """400 (or 413/415): the request or an item breaks the API's rules."""


class AuthenticationError(FeedgraphError):
    """401: the token is missing, expired or invalid."""


class ForbiddenError(FeedgraphError):
    """403: the token's role does not allow the operation."""


class NotFoundError(FeedgraphError):
    """404: no such record in the caller's org."""


class ConflictError(FeedgraphError):
    """409: the request contradicts stored state (e.g. an idempotency key reused with
    another body)."""


class RateLimitedError(FeedgraphError):
    """429: over a rate limit; ``retry_after`` is the server's hint in seconds."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        status: int | None = None,
        error: str | None = None,
        details: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(
            message, status=status, error=error, details=details, request_id=request_id
        )
        #: Seconds the server asked to wait (the ``Retry-After`` header).
        self.retry_after = retry_after


class UnavailableError(FeedgraphError):
    """503: the server is starting, or refuses writes after a failed sync, or a write's
    outcome is unknown (``outcome_unknown``)."""

    @property
    def outcome_unknown(self) -> bool:
        """True when a write reached the store but its sync failed: retry with the same
        idempotency key to find out."""
        return self.error == "Write outcome unknown"


class ServerError(FeedgraphError):
    """500 or another unexpected status."""


class KindNotAvailable(NotImplementedError):
    """Kept for code written against the first release, whose collector raised it for
    ratings, text and labels; the server now takes every kind and nothing raises it."""


class QueueFull(FeedgraphError):
    """The background queue is full and its policy is ``"raise"``."""


def error_for_status(
    status: int,
    error: str | None,
    details: str | None,
    request_id: str | None = None,
    retry_after: float | None = None,
) -> FeedgraphError:
    """The exception for an error answer."""
    message = f"{status} {error or 'error'}: {details or ''}".rstrip(": ")
    if status == 429:
        return RateLimitedError(
            message,
            retry_after=retry_after,
            status=status,
            error=error,
            details=details,
            request_id=request_id,
        )
    cls: type[FeedgraphError]
    if status in (400, 413, 415, 422):
        cls = ValidationError
    elif status == 401:
        cls = AuthenticationError
    elif status == 403:
        cls = ForbiddenError
    elif status == 404:
        cls = NotFoundError
    elif status == 409:
        cls = ConflictError
    elif status == 503:
        cls = UnavailableError
    else:
        cls = ServerError
    return cls(message, status=status, error=error, details=details, request_id=request_id)
