"""Read topics to their end from where the caller says, then follow: the one topic tail.

Everything that reads a topic outside a consumer group's committed offsets uses this: the
model follower (``models.v1`` from the start, then each update), the gateway's status
follower (from the positions in its own file, or the last hour), the canary's replay (a
range of ``uploads.v1``), drift's state restore and the tools (:mod:`.reader`).

The tail assigns every partition itself (no group membership, nothing committed), so each
process reads everything, and "caught up" has one meaning: every partition's position has
reached the end it had when the tail was opened, or the stop the caller gave. Positions,
not the last message seen, decide it: transaction markers and aborted messages take
offsets that no ``read_committed`` message is ever read from.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.exactly_once import FETCH_QUEUE_BACKOFF_MS, usable
from deeptrust.streams.retry import RetryPolicy

log = logging.getLogger(__name__)
T = TypeVar("T")

Partition = tuple[str, int]
"""(topic, partition)."""

METADATA_RETRY = RetryPolicy(initial_s=1.0, max_s=1.0, max_attempts=5)
"""Metadata asked of a topic created moments ago, whose partitions have no leader yet."""


class ConsumerFactory(Protocol):
    """Makes the tail's consumer (``confluent_kafka.Consumer``; a fake in unit tests)."""

    def __call__(self, config: dict[str, Any]) -> Consumer:
        """Return a consumer for ``config``."""
        ...


@dataclass(frozen=True)
class Position:
    """A place in every partition: explicit offsets first, else a time, else an edge.

    As a start the edge is the first retained message; as a stop, the end the partition
    has when the tail opens (a stop is never past that end).
    """

    offsets: Mapping[Partition, int] = field(default_factory=dict)
    since_ms: int | None = None
    """The first message at or after this broker timestamp (ms since the epoch)."""
    offset: int | None = None
    """The same offset on every partition not in ``offsets`` (clipped to what exists)."""
    from_end: bool = False
    """The end each partition has when the tail opens (only what arrives later is read)."""


BEGINNING = Position()
END = Position(from_end=True)


@dataclass(frozen=True)
class Bounds:
    """Where one partition is read from and where its reading is over (end exclusive)."""

    start: int
    stop: int


class TopicTail:
    """Every partition of some topics, from a start, read up to a stop, then followed."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topics: Sequence[str],
        *,
        isolation: str = "read_committed",
        timeout_s: float = 10.0,
        retry: RetryPolicy = METADATA_RETRY,
        consumer_factory: ConsumerFactory = Consumer,
        name: str = "tail",
    ) -> None:
        """Prepare to read ``topics``; nothing connects until :meth:`open`."""
        self.topics = tuple(topics)
        self._timeout_s = timeout_s
        self._retry = retry
        self._config = {
            **kafka.client_config(),
            # librdkafka wants a group id; with assign() and no commits it joins no group.
            "group.id": f"{kafka.topic_prefix}{name}-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",  # a start the topic no longer retains
            "isolation.level": isolation,
            "fetch.queue.backoff.ms": FETCH_QUEUE_BACKOFF_MS,
        }
        self._factory = consumer_factory
        self._consumer: Consumer | None = None
        self.bounds: dict[Partition, Bounds] = {}
        """Each partition's start and stop, fixed when the tail opened."""
        self._behind: set[Partition] = set()
        self._bounded = False

    def open(self, start: Position = BEGINNING, stop: Position | None = None) -> None:
        """Assign every partition at its start; note the stop that "caught up" means.

        Without ``stop`` the tail follows on past the end after catching up; with one,
        :meth:`poll` returns nothing at or past it.
        """
        if self._consumer is not None:
            raise RuntimeError("the tail is open already")
        consumer = self._factory(self._config)
        self._consumer = consumer
        try:
            partitions = [(t, p) for t in self.topics for p in self._partitions(consumer, t)]
            edges = {
                tp: self._retrying("watermarks", partial(_edges, consumer, tp, self._timeout_s))
                for tp in partitions
            }
            starts = self._resolve(consumer, start, edges, at_end=False)
            stops = self._resolve(consumer, stop or Position(), edges, at_end=True)
        except BaseException:
            self.close()
            raise
        self._bounded = stop is not None
        self.bounds = {tp: Bounds(starts[tp], max(stops[tp], starts[tp])) for tp in partitions}
        self._behind = {tp for tp, b in self.bounds.items() if b.stop > b.start}
        consumer.assign([TopicPartition(t, p, self.bounds[(t, p)].start) for t, p in partitions])
        for (topic, partition), bounds in sorted(self.bounds.items()):
            log.debug("%s[%d]: from %d to %d", topic, partition, bounds.start, bounds.stop)

    @property
    def caught_up(self) -> bool:
        """Whether every partition has been read up to its stop."""
        return self._consumer is not None and not self._behind

    def behind(self) -> list[Partition]:
        """The partitions not yet read up to their stop."""
        return sorted(self._behind)

    def poll(self, timeout_s: float, max_messages: int = 500) -> list[Message]:
        """The next messages (errors logged and left out; fatal ones raise)."""
        consumer = self._open()
        messages = [m for m in consumer.consume(max_messages, timeout_s) if usable(m)]
        if self._bounded:
            messages = [m for m in messages if _key(m) in self.bounds and _within(m, self.bounds)]
        if self._behind:
            asked = [TopicPartition(t, p) for t, p in sorted(self._behind)]
            for position in consumer.position(asked):
                tp = (position.topic, position.partition)
                if position.offset >= self.bounds[tp].stop:
                    self._behind.discard(tp)
            if self._bounded and not self._behind:
                consumer.unassign()
        return messages

    def read_to_end(self, timeout_s: float) -> list[Message]:
        """Everything up to the stop; ``TimeoutError`` naming the partitions left behind."""
        deadline = time.monotonic() + timeout_s
        messages: list[Message] = []
        while not self.caught_up:
            if time.monotonic() > deadline:
                left = ", ".join(f"{t}[{p}]" for t, p in self.behind())
                raise TimeoutError(f"not read to the end after {timeout_s}s: {left}")
            messages += self.poll(0.2)
        return messages

    def close(self) -> None:
        """Close the consumer; safe to call more than once."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.close()

    def _open(self) -> Consumer:
        if self._consumer is None:
            raise RuntimeError("open() the tail first")
        return self._consumer

    def _partitions(self, consumer: Consumer, topic: str) -> list[int]:
        def ask() -> list[int]:
            found = consumer.list_topics(topic, timeout=self._timeout_s).topics.get(topic)
            if found is None or found.error is not None or not found.partitions:
                reason = found.error if found is not None else "no such topic"
                raise KafkaException(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, str(reason)))
            return sorted(found.partitions)

        try:
            return self._retrying(f"{topic} metadata", ask)
        except KafkaException as error:
            raise RuntimeError(
                f"cannot read {topic}: {error} (create it with `deeptrust topics`)"
            ) from error

    def _resolve(
        self,
        consumer: Consumer,
        where: Position,
        edges: Mapping[Partition, tuple[int, int]],
        at_end: bool,
    ) -> dict[Partition, int]:
        """Each partition's offset for ``where``, within what the partition holds."""
        resolved = {}
        timed = []
        for tp, (low, high) in edges.items():
            if tp in where.offsets:
                resolved[tp] = min(max(where.offsets[tp], low), high)
            elif where.since_ms is not None:
                timed.append(tp)
            elif where.offset is not None:
                resolved[tp] = min(max(where.offset, low), high)
            elif where.from_end:
                resolved[tp] = high
            else:
                resolved[tp] = high if at_end else low
        if timed and where.since_ms is not None:
            asked = [TopicPartition(t, p, where.since_ms) for t, p in timed]
            found = self._retrying(
                "offsets_for_times", lambda: _times(consumer, asked, self._timeout_s)
            )
            for tp in timed:
                low, high = edges[tp]
                # -1: no message at or after that time; the partition's end.
                offset = found[tp]
                resolved[tp] = high if offset < 0 else min(max(offset, low), high)
        return resolved

    def _retrying(self, what: str, call: Callable[[], T]) -> T:
        attempt = 0
        while True:
            attempt += 1
            try:
                return call()
            except KafkaException as error:
                if self._retry.exhausted(attempt):
                    raise
                log.warning("%s failed (%s); trying again", what, error)
                time.sleep(self._retry.delay_s(attempt))


def _edges(consumer: Consumer, tp: Partition, timeout_s: float) -> tuple[int, int]:
    """The partition's first retained offset and its end, asked of the broker now."""
    low, high = consumer.get_watermark_offsets(TopicPartition(*tp), timeout=timeout_s)
    return int(low), int(high)


def _times(
    consumer: Consumer, asked: list[TopicPartition], timeout_s: float
) -> dict[Partition, int]:
    found = {}
    for answer in consumer.offsets_for_times(asked, timeout=timeout_s):
        if answer.error is not None:
            raise KafkaException(answer.error)
        found[(answer.topic, answer.partition)] = int(answer.offset)
    return found


def _key(message: Message) -> Partition:
    return (message.topic() or "", message.partition() or 0)


def _within(message: Message, bounds: Mapping[Partition, Bounds]) -> bool:
    return (message.offset() or 0) < bounds[_key(message)].stop
