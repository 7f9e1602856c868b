"""feedgraph: the Python client of the feedgraph feedback store.

::

    from feedgraph import Client

    with Client("http://127.0.0.1:8080", token) as fg:
        fg.feedback("positive", question="How do I shard?", answer="Use SHARD BY.")
        print(fg.aggregate(window_hours=24))
"""

from __future__ import annotations

from .__about__ import VERSION as __version__
from ._transport import RetryPolicy
from .background import BackgroundSender
from .client import AsyncClient, Client, item
from .collector import FeedbackCollector, FeedbackContext
from .errors import (
    AuthenticationError,
    ConflictError,
    ConnectionFailed,
    FeedgraphError,
    ForbiddenError,
    KindNotAvailable,
    NotFoundError,
    QueueFull,
    RateLimitedError,
    ServerError,
    UnavailableError,
    ValidationError,
)
from .models import (
    BatchItemResult,
    BatchResult,
    Delivery,
    DeliveryPage,
    ErasurePage,
    CompactOutcome,
    ErasureReceipt,
    Export,
    Feedback,
    FeedbackPage,
    Health,
    LinkResult,
    QueryResult,
    ScoreConfig,
    FeedbackSummary,
    Stats,
    SubmitResult,
    Summary,
    Webhook,
)
from .webhooks import SIGNATURE_HEADER, verify_signature

__all__ = [
    "AsyncClient",
    "AuthenticationError",
    "BackgroundSender",
    "BatchItemResult",
    "BatchResult",
    "Client",
    "ConflictError",
    "ConnectionFailed",
    "Delivery",
    "DeliveryPage",
    "ErasurePage",
    "CompactOutcome",
    "ErasureReceipt",
    "Export",
    "Feedback",
    "FeedbackCollector",
    "FeedbackContext",
    "FeedbackPage",
    "FeedgraphError",
    "ForbiddenError",
    "Health",
    "KindNotAvailable",
    "LinkResult",
    "NotFoundError",
    "QueryResult",
    "QueueFull",
    "RateLimitedError",
    "RetryPolicy",
    "SIGNATURE_HEADER",
    "ServerError",
    "ScoreConfig",
    "FeedbackSummary",
    "Stats",
    "SubmitResult",
    "Summary",
    "UnavailableError",
    "ValidationError",
    "Webhook",
    "__version__",
    "item",
    "verify_signature",
]
