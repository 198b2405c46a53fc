"""The two kinds of failure a stage knows.

:class:`InvalidInput` is the input's fault: it is never retried, it goes to the
dead-letter topic with its reason, and the stage moves on. Any other exception is treated
as transient trouble: the batch is retried with backoff and nothing is committed until it
succeeds, so nothing is lost.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Machine-readable reasons an input is dead-lettered."""

    UNDECODABLE_MESSAGE = "undecodable_message"
    SCHEMA_VIOLATION = "schema_violation"
    WRONG_SCHEMA = "wrong_schema"
    MISSING_OBJECT = "missing_object"
    DISALLOWED_URI = "disallowed_uri"
    OBJECT_TOO_LARGE = "object_too_large"
    UNDECODABLE_IMAGE = "undecodable_image"
    UNSUPPORTED_FORMAT = "unsupported_format"
    """A format the pipeline recognises and refuses (streams/formats.py), such as RAW."""
    TOO_MANY_PIXELS = "too_many_pixels"
    INCOMPATIBLE_EMBEDDING = "incompatible_embedding"
    TRAINING_FAILED = "training_failed"
    UNDELIVERABLE_ALERT = "undeliverable_alert"
    OUTPUT_TOO_LARGE = "output_too_large"
    """What the stage made of this input is over the record limit the broker enforces."""
    PROCESSING_FAILED = "processing_failed"
    """The stage failed on this item alone, batch after batch, while others went through."""


class InvalidInput(Exception):
    """An input that no retry can fix; carries the reason the dead letter will show."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


class DeadLetterRateExceeded(RuntimeError):
    """Too large a share of recent inputs was rejected: the stage, not the input, is broken."""
