"""HMAC-SHA256 signatures of webhook bodies, so a receiver can tell our alerts from forgeries.

The signature covers the exact bytes of the body and travels as ``sha256=<hex>`` in
``X-DeepTrust-Signature``. It says nothing about freshness: a replayed body carries an event
id the receiver has already seen, which is why receivers deduplicate by event id anyway.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-DeepTrust-Signature"
PREFIX = "sha256="


def sign(secret: str, body: bytes) -> str:
    """The signature header value of ``body`` under ``secret``."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return f"{PREFIX}{digest}"


def verify(secret: str, body: bytes, signature: str | None) -> bool:
    """Tell whether ``signature`` is ``body``'s under ``secret`` (in constant time)."""
    if not signature:
        return False
    return hmac.compare_digest(sign(secret, body).encode(), signature.strip().encode())
