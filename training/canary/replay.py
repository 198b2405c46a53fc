"""Copies a range of a stage's input topic into a canary's own topics, message for message.

The copy keeps key, value and headers, so each event keeps its id and partition key: the
canary's stage (detect on uploads, caption on detected images) derives the same output ids
as production's did, and the two outputs on one input can be paired by id. A range is given
by time (the broker's timestamps) or by offsets, on every partition.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime

from confluent_kafka import Producer

from deeptrust.schemas.events import Event, UploadEvent
from deeptrust.streams.codec import decode
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.errors import InvalidInput
from deeptrust.streams.tail import Position, TopicTail


@dataclass(frozen=True)
class ReplayRange:
    """Which uploads to replay: a time window or an offset window (end exclusive)."""

    since: datetime | None = None
    until: datetime | None = None
    from_offset: int | None = None
    to_offset: int | None = None

    def __post_init__(self) -> None:
        """Refuse a range that mixes time and offsets, whose meaning would be unclear."""
        by_time = self.since is not None or self.until is not None
        by_offset = self.from_offset is not None or self.to_offset is not None
        if by_time and by_offset:
            raise ValueError("give a time range or an offset range, not both")


@dataclass(frozen=True)
class ReplayCopy:
    """What was copied: the input events (decodable ones) and how many messages in all."""

    events: tuple[Event, ...]
    messages: int
    first_timestamp_ms: int | None


def _positions(window: ReplayRange) -> tuple[Position, Position]:
    """Where the copy starts and where it stops, on every partition."""

    def at(moment: datetime | None, offset: int | None) -> Position:
        if moment is not None:
            return Position(since_ms=int(moment.timestamp() * 1000))
        return Position(offset=offset)

    start = at(window.since, window.from_offset)
    stop = at(window.until, window.to_offset)
    return start, stop


def copy_range(
    kafka: KafkaSettings,
    source_topic: str,
    target_topic: str,
    window: ReplayRange,
    timeout_s: float = 120.0,
    event_type: type[Event] = UploadEvent,
) -> ReplayCopy:
    """Copy ``window`` of ``source_topic`` (of ``event_type``) into ``target_topic``."""
    tail = TopicTail(kafka, [source_topic], timeout_s=timeout_s, name="replay")
    producer = Producer({**kafka.client_config(), "enable.idempotence": True, "acks": "all"})
    try:
        tail.open(*_positions(window))
        events: list[Event] = []
        messages = 0
        first: int | None = None
        for message in tail.read_to_end(timeout_s):
            producer.produce(
                target_topic, key=message.key(), value=message.value(), headers=message.headers()
            )
            producer.poll(0)
            messages += 1
            stamp = message.timestamp()[1]
            first = stamp if first is None else min(first, stamp)
            # An undecodable event is copied all the same: the canary must dead-letter it
            # as production did.
            with contextlib.suppress(InvalidInput):
                events.append(decode(message.value(), message.headers(), event_type))
        if producer.flush(timeout_s) != 0:
            raise RuntimeError(f"{target_topic}: not every replayed message was delivered")
        return ReplayCopy(tuple(events), messages, first)
    finally:
        tail.close()
