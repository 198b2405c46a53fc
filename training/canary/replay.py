"""Copies a range of the uploads topic into a canary's own topics, message for message.

The copy keeps key, value and headers, so each upload keeps its event id and partition
key: the canary's detect stage derives the same output ids as production's did, and the
two verdicts on one upload can be paired by id. A range is given by time (the broker's
timestamps) or by offsets, on every partition.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from datetime import datetime

from confluent_kafka import Consumer, Producer, TopicPartition

from deeptrust.schemas.events import UploadEvent
from deeptrust.streams.codec import decode
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.errors import InvalidInput
from deeptrust.streams.exactly_once import usable


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
    """What was copied: the uploads (decodable ones) and how many messages in all."""

    uploads: tuple[UploadEvent, ...]
    messages: int
    first_timestamp_ms: int | None


def _bounds(
    consumer: Consumer, topic: str, partitions: list[int], window: ReplayRange, timeout_s: float
) -> dict[int, tuple[int, int]]:
    """Per partition, the first offset to copy and the offset to stop before."""
    bounds = {}
    for partition in partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout_s)
        start, end = low, high
        if window.from_offset is not None:
            start = max(low, window.from_offset)
        if window.to_offset is not None:
            end = min(high, window.to_offset)
        bounds[partition] = (start, end)
    if window.since is not None or window.until is not None:
        for partition, (start, end) in list(bounds.items()):
            if window.since is not None:
                start = _offset_at(consumer, topic, partition, window.since, timeout_s, end)
            if window.until is not None:
                end = _offset_at(consumer, topic, partition, window.until, timeout_s, end)
            bounds[partition] = (start, end)
    return bounds


def _offset_at(
    consumer: Consumer, topic: str, partition: int, moment: datetime, timeout_s: float, end: int
) -> int:
    """The first offset at or after ``moment``; the end if there is none."""
    milliseconds = int(moment.timestamp() * 1000)
    found = consumer.offsets_for_times([TopicPartition(topic, partition, milliseconds)], timeout_s)
    offset = found[0].offset
    return end if offset is None or offset < 0 else min(int(offset), end)


def copy_range(
    kafka: KafkaSettings,
    source_topic: str,
    target_topic: str,
    window: ReplayRange,
    timeout_s: float = 120.0,
) -> ReplayCopy:
    """Copy ``window`` of ``source_topic`` into ``target_topic``; return what was copied."""
    consumer = Consumer(
        {
            **kafka.client_config(),
            "group.id": "replay-unused",  # assigned partitions only: nothing is committed
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    producer = Producer({**kafka.client_config(), "enable.idempotence": True, "acks": "all"})
    try:
        metadata = consumer.list_topics(source_topic, timeout=timeout_s).topics[source_topic]
        bounds = _bounds(consumer, source_topic, sorted(metadata.partitions), window, timeout_s)
        pending = {p: (s, e) for p, (s, e) in bounds.items() if s < e}
        consumer.assign([TopicPartition(source_topic, p, s) for p, (s, _) in pending.items()])
        uploads: list[UploadEvent] = []
        messages = 0
        first: int | None = None
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{source_topic}: partitions {sorted(pending)} not copied")
            for message in consumer.consume(500, 0.5):
                if not usable(message):
                    continue
                partition, offset = message.partition() or 0, message.offset() or 0
                if partition not in pending or offset >= pending[partition][1]:
                    continue
                producer.produce(
                    target_topic,
                    key=message.key(),
                    value=message.value(),
                    headers=message.headers(),
                )
                producer.poll(0)
                messages += 1
                stamp = message.timestamp()[1]
                first = stamp if first is None else min(first, stamp)
                # An undecodable upload is copied all the same: the canary must dead-letter
                # it as production did.
                with contextlib.suppress(InvalidInput):
                    uploads.append(decode(message.value(), message.headers(), UploadEvent))
            positions = consumer.position([TopicPartition(source_topic, p) for p in pending])
            for position in positions:
                if position.offset >= pending[position.partition][1]:
                    del pending[position.partition]
        if producer.flush(timeout_s) != 0:
            raise RuntimeError(f"{target_topic}: not every replayed message was delivered")
        return ReplayCopy(tuple(uploads), messages, first)
    finally:
        consumer.close()
