"""Checking the signature of a webhook request, for receivers of feedgraph's events.

Every delivery carries ``Feedgraph-Signature: t=<unix seconds>,v1=<hex>``, where ``v1`` is
the HMAC-SHA256, under the endpoint's secret, of ``t``, a dot and the raw request body.
"""

from __future__ import annotations

import hashlib
import hmac
import time

#: The header that carries the signature.
SIGNATURE_HEADER = "Feedgraph-Signature"


def verify_signature(
    secret: str | bytes,
    header: str | None,
    body: bytes | str,
    tolerance: float = 300,
    *,
    now: float | None = None,
) -> bool:
    """True when ``header`` (the ``Feedgraph-Signature`` value) signs ``body`` (the raw
    request body, not re-encoded JSON) under ``secret``, and its timestamp is within
    ``tolerance`` seconds of ``now`` (default: the current time). A missing or malformed
    header, a wrong signature or a stale timestamp is False, never an exception.
    ``tolerance <= 0`` skips the timestamp check."""
    if not header:
        return False
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if sep:
            fields.setdefault(key.strip(), []).append(value.strip())
    stamps = fields.get("t", [])
    if len(stamps) != 1 or not stamps[0].isascii() or not stamps[0].isdigit():
        return False
    t = stamps[0]
    if tolerance > 0:
        current = time.time() if now is None else now
        if abs(current - int(t)) > tolerance:
            return False
    key_bytes = secret.encode() if isinstance(secret, str) else secret
    payload = body.encode() if isinstance(body, str) else body
    expected = hmac.new(key_bytes, t.encode() + b"." + payload, hashlib.sha256).hexdigest()
    # Any of several v1 values may match (a receiver mid-way through a secret rotation).
    return any(
        sig.isascii() and hmac.compare_digest(expected, sig.lower()) for sig in fields.get("v1", [])
    )


__all__ = ["SIGNATURE_HEADER", "verify_signature"]
