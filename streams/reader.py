"""Read a topic's committed events, decoded: for the demo, tests, tools and restores.

Built on :class:`~deeptrust.streams.tail.TopicTail`: every partition assigned, nothing
committed, ``read_committed`` by default, so a reader sees exactly what downstream consumers
see: nothing from aborted transactions, nothing from open ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from confluent_kafka import Message
from pydantic import BaseModel

from deeptrust.streams.codec import decode, headers_dict
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.tail import BEGINNING, END, Position, TopicTail

E = TypeVar("E", bound=BaseModel)


@dataclass(frozen=True)
class Received(Generic[E]):
    """One decoded event with where it came from."""

    event: E
    partition: int
    offset: int
    headers: dict[str, str]
    timestamp_ms: int
    """The record's timestamp: when its producer sent it, unless the topic says otherwise."""


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
    tail = TopicTail(kafka, [topic], isolation=isolation, name="reader")
    received: list[Received[E]] = []
    deadline = time.monotonic() + timeout_s
    try:
        tail.open(BEGINNING)
        while not done(received) and time.monotonic() < deadline:
            received += [_received(message, model) for message in tail.poll(0.5)]
    finally:
        tail.close()
    return received


def follow(
    kafka: KafkaSettings, topic: str, model: type[E], from_beginning: bool = False
) -> Iterator[Received[E]]:
    """Yield committed events of ``topic`` as they arrive (from now, or from the start)."""
    tail = TopicTail(kafka, [topic], name="follower")
    try:
        tail.open(BEGINNING if from_beginning else END)
        while True:
            for message in tail.poll(0.5, max_messages=100):
                yield _received(message, model)
    finally:
        tail.close()


def read_to_end(
    kafka: KafkaSettings,
    topic: str,
    model: type[E],
    timeout_s: float,
    since_ms: int | None = None,
) -> list[Received[E]]:
    """Read every committed event of ``topic`` up to its current end, then stop.

    With ``since_ms`` (milliseconds since the epoch) each partition is read from its first
    message at or after that time rather than from the beginning: at scale a topic holds
    days of traffic and a caller may want minutes of it.
    """
    tail = TopicTail(kafka, [topic], timeout_s=timeout_s, name="reader")
    try:
        tail.open(BEGINNING if since_ms is None else Position(since_ms=since_ms))
        return [_received(message, model) for message in tail.read_to_end(timeout_s)]
    finally:
        tail.close()


def _received(message: Message, model: type[E]) -> Received[E]:
    return Received(
        event=decode(message.value(), message.headers(), model),
        partition=message.partition() or 0,
        offset=message.offset() or 0,
        headers=headers_dict(message.headers()),
        timestamp_ms=message.timestamp()[1],
    )
