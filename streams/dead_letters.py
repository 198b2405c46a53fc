"""Dead letters: the rejected input, whole, with its reason; and the cap on their rate.

A single bad image is the input's fault and goes to the DLQ. When most of the recent inputs
are rejected, or many in a row, the fault is more likely the stage's (a broken model, a
wrong config), and dead-lettering the whole stream would hide it: :class:`DeadLetterBudget`
stops the stage instead, with nothing committed, so the inputs are processed again once it
is fixed.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from confluent_kafka import Message

from deeptrust.schemas.events import DeadLetterEvent
from deeptrust.streams.codec import Encoded, Headers, encode, headers_dict
from deeptrust.streams.errors import DeadLetterRateExceeded, InvalidInput

REASON_HEADER = "dlq-reason"
STAGE_HEADER = "dlq-stage"


def dead_letter(
    stage: str, message: Message, error: InvalidInput, max_bytes: int | None = None
) -> Encoded:
    """Build the dead-letter message for ``message`` that ``stage`` rejected.

    The input travels whole. Only if the letter would still be over ``max_bytes`` (a
    dead-letter topic with a smaller limit than ``deeptrust topics`` gives it) is the value
    cut to what fits, and the detail says so: a letter the broker refuses would fail the
    batch again and again, which loses more than a truncated copy does.
    """
    value = message.value() or b""
    letter = _letter(stage, message, error, value, error.detail)
    if max_bytes is None or size(letter) <= max_bytes:
        return letter
    room = max(0, (max_bytes - (size(letter) - len(value) * 4 // 3)) * 3 // 4 - 1024)
    detail = f"{error.detail} (original value truncated from {len(value)} to {room} bytes)"
    truncated = _letter(stage, message, error, value[:room], detail)
    if size(truncated) <= max_bytes:
        return truncated
    return _letter(stage, message, error, b"", f"{error.detail} (original value dropped)")


def size(record: Encoded) -> int:
    """The bytes a record takes: key, value and headers."""
    headers = sum(len(name) + len(value or b"") for name, value in record.headers)
    return len(record.key) + len(record.value) + headers


def _letter(
    stage: str, message: Message, error: InvalidInput, value: bytes, detail: str
) -> Encoded:
    key = message.key()
    original_headers = headers_dict(message.headers())
    event = DeadLetterEvent(
        stage=stage,
        reason=error.reason.value,
        detail=detail,
        source_topic=message.topic() or "",
        source_partition=message.partition() or 0,
        source_offset=message.offset() or 0,
        original_key=key.decode("utf-8", "replace") if key else None,
        original_value_b64=base64.b64encode(value).decode(),
        original_headers=original_headers,
        failed_at=datetime.now(UTC),
    )
    encoded = encode(event, key=event.original_key or "", trace_id=original_headers.get("trace-id"))
    extra: Headers = [(REASON_HEADER, error.reason.value.encode()), (STAGE_HEADER, stage.encode())]
    return Encoded(key=encoded.key, value=encoded.value, headers=encoded.headers + extra)


@dataclass(frozen=True)
class Tally:
    """Recent outcomes on one partition: kept with its committed offset, so restarts keep it.

    ``accepted`` and ``rejected`` cover about the last ``window`` inputs (older ones are
    scaled away, keeping the share); ``consecutive`` counts the dead letters since the last
    accepted input.
    """

    accepted: int = 0
    rejected: int = 0
    consecutive: int = 0

    def add(self, outcomes: Sequence[bool], window: int) -> Tally:
        """The tally after ``outcomes`` (True: dead-lettered), in offset order."""
        accepted = self.accepted + outcomes.count(False)
        rejected = self.rejected + outcomes.count(True)
        consecutive = self.consecutive
        for outcome in outcomes:
            consecutive = consecutive + 1 if outcome else 0
        total = accepted + rejected
        if total > window:
            rejected = round(rejected * window / total)
            accepted = window - rejected
        return Tally(accepted, rejected, consecutive)

    def encode(self) -> str:
        """The tally as offset-commit metadata."""
        return f"{_TALLY_PREFIX}{self.accepted}:{self.rejected}:{self.consecutive}"

    @classmethod
    def decode(cls, metadata: str | None) -> Tally:
        """The tally an offset commit carried; an empty one when it carried none."""
        if not metadata or not metadata.startswith(_TALLY_PREFIX):
            return cls()
        try:
            accepted, rejected, consecutive = map(int, metadata[len(_TALLY_PREFIX) :].split(":"))
        except ValueError:
            return cls()
        return cls(max(0, accepted), max(0, rejected), max(0, consecutive))


_TALLY_PREFIX = "dlq1:"


@dataclass
class DeadLetterBudget:
    """Stops a stage whose dead letters are no longer the input's fault.

    Raises when more than ``max_ratio`` of the last ``window`` inputs of the assigned
    partitions (once there are ``min_inputs``) would be rejected, or when a partition would
    reach ``max_consecutive`` dead letters in a row. The tallies travel with the committed
    offsets (:class:`Tally`), so a stage that crash-loops starts each run where the last one
    stopped instead of with a fresh allowance.
    """

    window: int = 1000
    max_ratio: float = 0.5
    min_inputs: int = 100
    max_consecutive: int = 100
    tallies: dict[int, Tally] = field(default_factory=dict)

    def knows(self, partition: int) -> bool:
        """Whether ``partition``'s tally was seeded since it was assigned."""
        return partition in self.tallies

    def seed(self, partition: int, tally: Tally) -> None:
        """Start ``partition`` from the tally its last committed offset carried."""
        self.tallies[partition] = tally

    def forget(self, partition: int) -> None:
        """Drop a revoked partition."""
        self.tallies.pop(partition, None)

    def after(self, outcomes: dict[int, list[bool]]) -> dict[int, Tally]:
        """The tallies of the partitions in ``outcomes`` once they are committed.

        Raises :class:`DeadLetterRateExceeded` when committing them would exceed a cap.
        """
        changed = {
            partition: self.tallies.get(partition, Tally()).add(results, self.window)
            for partition, results in outcomes.items()
        }
        merged = {**self.tallies, **changed}
        accepted = sum(tally.accepted for tally in merged.values())
        rejected = sum(tally.rejected for tally in merged.values())
        seen = accepted + rejected
        if seen >= self.min_inputs and rejected / seen > self.max_ratio:
            raise DeadLetterRateExceeded(
                f"{rejected / seen:.0%} of the last {seen} inputs would be dead-lettered "
                f"(cap {self.max_ratio:.0%}); stopping rather than rejecting the stream"
            )
        worst = max(changed.items(), key=lambda item: item[1].consecutive, default=None)
        if worst is not None and worst[1].consecutive >= self.max_consecutive:
            raise DeadLetterRateExceeded(
                f"partition {worst[0]}: {worst[1].consecutive} dead letters in a row "
                f"(cap {self.max_consecutive}); stopping rather than rejecting the stream"
            )
        return changed

    def record(self, tallies: dict[int, Tally]) -> None:
        """Keep the tallies of a committed batch."""
        self.tallies.update(tallies)
