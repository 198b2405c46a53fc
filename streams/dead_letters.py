"""Dead letters: the rejected input, whole, with its reason; and the cap on their rate.

A single bad image is the input's fault and goes to the DLQ. When most of the recent inputs
are rejected, the fault is more likely the stage's (a broken model, a wrong config), and
dead-lettering the whole stream would hide it: :class:`DeadLetterBudget` stops the stage
instead, with nothing committed, so the inputs are processed again once it is fixed.
"""

from __future__ import annotations

import base64
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime

from confluent_kafka import Message

from schemas.events import DeadLetterEvent
from streams.codec import Encoded, Headers, encode, headers_dict
from streams.errors import DeadLetterRateExceeded, InvalidInput

REASON_HEADER = "dlq-reason"
STAGE_HEADER = "dlq-stage"


def dead_letter(stage: str, message: Message, error: InvalidInput) -> Encoded:
    """Build the dead-letter message for ``message`` that ``stage`` rejected."""
    key = message.key()
    original_headers = headers_dict(message.headers())
    event = DeadLetterEvent(
        stage=stage,
        reason=error.reason.value,
        detail=error.detail,
        source_topic=message.topic() or "",
        source_partition=message.partition() or 0,
        source_offset=message.offset() or 0,
        original_key=key.decode("utf-8", "replace") if key else None,
        original_value_b64=base64.b64encode(message.value() or b"").decode(),
        original_headers=original_headers,
        failed_at=datetime.now(UTC),
    )
    encoded = encode(event, key=event.original_key or "", trace_id=original_headers.get("trace-id"))
    extra: Headers = [(REASON_HEADER, error.reason.value.encode()), (STAGE_HEADER, stage.encode())]
    return Encoded(key=encoded.key, value=encoded.value, headers=encoded.headers + extra)


@dataclass
class DeadLetterBudget:
    """Raises when more than ``max_ratio`` of the last ``window`` inputs were rejected."""

    window: int = 1000
    max_ratio: float = 0.5
    min_inputs: int = 100

    def __post_init__(self) -> None:
        self._outcomes: deque[bool] = deque(maxlen=self.window)

    def check(self, accepted: int, rejected: int) -> None:
        """Raise if committing a batch with this outcome would exceed the cap."""
        outcomes = deque(self._outcomes, maxlen=self.window)
        outcomes.extend([False] * accepted + [True] * rejected)
        seen = len(outcomes)
        if seen == 0:
            return
        share = sum(outcomes) / seen
        if seen >= self.min_inputs and share > self.max_ratio:
            raise DeadLetterRateExceeded(
                f"{share:.0%} of the last {seen} inputs would be dead-lettered "
                f"(cap {self.max_ratio:.0%}); stopping rather than rejecting the stream"
            )

    def record(self, accepted: int, rejected: int) -> None:
        """Record the outcome of a committed batch."""
        self._outcomes.extend([False] * accepted + [True] * rejected)
