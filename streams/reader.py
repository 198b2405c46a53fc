"""Read a topic's committed events from the beginning: for the demo, tests and tools.

A fresh consumer group with ``read_committed`` sees exactly what downstream consumers see:
nothing from aborted transactions, nothing from open ones.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition
from pydantic import BaseModel

from deeptrust.streams.codec import decode, headers_dict
from deeptrust.streams.config import KafkaSettings

E = TypeVar("E", bound=BaseModel)


@dataclass(frozen=True)
class Received(Generic[E]):
    """One decoded event with where it came from."""

    event: E
    partition: int
    offset: int
    headers: dict[str, str]


def read_until(
    kafka: KafkaSettings,
    topic: str,
    model: type[E],
    done: Callable[[list[Received[E]]], bool],
    timeout_s: float,
    isolation: str = "read_committed",
) -> list[Received[E]]:
    """Read ``topic`` from the start until ``done(received)`` holds or ``timeout_s`` passes.

    Returns everything read; the caller checks ``done`` again to tell success from timeout.
    """
    consumer = _fresh_consumer(kafka, isolation)
    received: list[Received[E]] = []
    deadline = time.monotonic() + timeout_s
    try:
        consumer.subscribe([topic])
        while not done(received) and time.monotonic() < deadline:
            for message in consumer.consume(500, 0.5):
                if message.error() is None:
                    received.append(_received(message, model))
    finally:
        consumer.close()
    return received


def follow(
    kafka: KafkaSettings, topic: str, model: type[E], from_beginning: bool = False
) -> Iterator[Received[E]]:
    """Yield committed events of ``topic`` as they arrive (from now, or from the start)."""
    consumer = _fresh_consumer(kafka, "read_committed", "earliest" if from_beginning else "latest")
    try:
        consumer.subscribe([topic])
        while True:
            for message in consumer.consume(100, 0.5):
                if message.error() is None:
                    yield _received(message, model)
    finally:
        consumer.close()


def _fresh_consumer(kafka: KafkaSettings, isolation: str, start: str = "earliest") -> Consumer:
    """A consumer in a group of its own that commits nothing."""
    return Consumer(
        {
            **kafka.client_config(),
            "group.id": f"reader-{uuid.uuid4().hex}",
            "auto.offset.reset": start,
            "enable.auto.commit": False,
            "isolation.level": isolation,
        }
    )


def _received(message: Message, model: type[E]) -> Received[E]:
    return Received(
        event=decode(message.value(), message.headers(), model),
        partition=message.partition() or 0,
        offset=message.offset() or 0,
        headers=headers_dict(message.headers()),
    )


def read_to_end(
    kafka: KafkaSettings,
    topic: str,
    model: type[E],
    timeout_s: float,
    since_ms: int | None = None,
) -> list[Received[E]]:
    """Read every committed event of ``topic`` up to its current end, then stop.

    The end is the high watermark when the call starts; transaction markers count as
    offsets, so the read is over when the consumer's position reaches it on every partition.
    With ``since_ms`` (milliseconds since the epoch) each partition is read from its first
    message at or after that time rather than from the beginning: at scale a topic holds
    days of traffic and a caller may want minutes of it.
    """
    consumer = _fresh_consumer(kafka, "read_committed")
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s).topics[topic]
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)[1]
            for p in metadata.partitions
        }
        starts = {p: 0 for p in ends}
        if since_ms is not None:
            asked = [TopicPartition(topic, p, since_ms) for p in ends]
            for found in consumer.offsets_for_times(asked, timeout=timeout_s):
                # No message that late: nothing to read on this partition.
                offset = found.offset if found.offset >= 0 else ends[found.partition]
                starts[found.partition] = offset
        consumer.assign(
            [
                TopicPartition(topic, p, OFFSET_BEGINNING if since_ms is None else start)
                for p, start in starts.items()
            ]
        )
        pending = {p for p, end in ends.items() if end > starts[p]}
        received: list[Received[E]] = []
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: partitions {sorted(pending)} not read to the end")
            received += [
                _received(message, model)
                for message in consumer.consume(500, 0.2)
                if message.error() is None
            ]
            positions = consumer.position([TopicPartition(topic, p) for p in pending])
            pending -= {tp.partition for tp in positions if tp.offset >= ends[tp.partition]}
        return received
    finally:
        consumer.close()
