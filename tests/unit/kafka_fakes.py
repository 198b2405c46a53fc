"""In-memory stand-ins for confluent-kafka's clients, for the runtime's failure paths only.

The integration tests run the runtime on the real broker; these let a unit test script what
no real broker does on demand (fence a producer on the third commit, refuse a permission)
and check what the runtime does about it. A transaction becomes visible only on commit.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from deeptrust.streams.codec import Encoded, encode


@dataclass
class FakeMessage:
    _topic: str
    _partition: int
    _offset: int
    _value: bytes
    _headers: list[tuple[str, bytes]]
    _key: bytes = b""
    _error: KafkaError | None = None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value

    def headers(self) -> list[tuple[str, bytes]]:
        return self._headers

    def key(self) -> bytes:
        return self._key

    def error(self) -> KafkaError | None:
        return self._error

    def timestamp(self) -> tuple[int, int]:
        return (0, 0)


def error_message(code: int) -> FakeMessage:
    """What ``consume`` returns for a consumer-level error."""
    return FakeMessage("", 0, -1, b"", [], _error=KafkaError(code))


@dataclass
class FakeCluster:
    """Topics, committed offsets and committed records; scripted failures."""

    partitions: int = 1
    logs: dict[tuple[str, int], list[FakeMessage]] = field(default_factory=dict)
    committed: dict[tuple[str, int], TopicPartition] = field(default_factory=dict)
    records: list[tuple[str, Encoded]] = field(default_factory=list)
    commit_failures: list[KafkaException] = field(default_factory=list)
    """Raised by the next commits, one each, before any commit succeeds."""
    consume_errors: list[FakeMessage] = field(default_factory=list)
    """Returned by the next ``consume`` calls, one each, before any message."""
    client_errors: list[KafkaError] = field(default_factory=list)
    """Handed to the consumer's ``error_cb`` by the next ``consume`` calls, one each."""
    unreachable_probes: int = 0
    """Metadata requests that fail, one each, as they do while every broker is down."""
    stuck_sends: int = 0
    """``send_offsets_to_transaction`` calls that never return (until ``release`` is set)."""
    release: threading.Event = field(default_factory=threading.Event)
    revoke_on_consume: int = 0
    """Consumes that return messages and then lose the assignment in a rebalance, one each."""
    revoke_at_consume: set[int] = field(default_factory=set)
    """Which consumes returning messages (counted from 1) then lose the assignment."""
    consumes: int = 0
    """Consumes that returned messages so far."""
    producers: int = 0
    consumers: int = 0
    made: list[FakeConsumer | FakeProducer] = field(default_factory=list)
    """Every client made, to check that each was closed."""
    on_commit: Callable[[], None] | None = None

    def append(self, topic: str, event: Any, key: str, partition: int = 0) -> None:
        encoded = encode(event, key)
        log = self.logs.setdefault((topic, partition), [])
        log.append(
            FakeMessage(topic, partition, len(log), encoded.value, encoded.headers, encoded.key)  # type: ignore[arg-type]
        )

    def append_raw(self, topic: str, value: bytes, partition: int = 0) -> None:
        log = self.logs.setdefault((topic, partition), [])
        log.append(FakeMessage(topic, partition, len(log), value, []))

    def factory(self) -> FakeClients:
        return FakeClients(self)

    def committed_to(self, topic: str) -> list[tuple[str, Encoded]]:
        return [record for record in self.records if record[0] == topic]


class FakeClients:
    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster

    def consumer(self, config: dict[str, Any]) -> FakeConsumer:
        self.cluster.consumers += 1
        consumer = FakeConsumer(self.cluster, config)
        self.cluster.made.append(consumer)
        return consumer

    def producer(self, config: dict[str, Any]) -> FakeProducer:
        self.cluster.producers += 1
        producer = FakeProducer(self.cluster, config)
        self.cluster.made.append(producer)
        return producer


class FakeConsumer:
    def __init__(self, cluster: FakeCluster, config: dict[str, Any]) -> None:
        self.cluster = cluster
        self.config = config
        self.positions: dict[tuple[str, int], int] = {}
        self.paused: set[tuple[str, int]] = set()
        self.subscribed: list[str] = []
        self.on_assign: Callable[..., None] | None = None
        self.on_revoke: Callable[..., None] | None = None
        self.closed = False

    def subscribe(self, topics: list[str], on_assign: Any = None, on_revoke: Any = None) -> None:
        self.subscribed = topics
        self.on_assign = on_assign
        self.on_revoke = on_revoke

    def assign(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            committed = self.cluster.committed.get((tp.topic, tp.partition))
            self.positions[(tp.topic, tp.partition)] = committed.offset if committed else 0

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t, p in self.positions]

    def _ensure_assigned(self) -> None:
        if not self.positions and self.subscribed:
            partitions = [
                TopicPartition(t, p)
                for t in self.subscribed
                for p in range(self.cluster.partitions)
            ]
            if self.on_assign is not None:
                self.on_assign(self, partitions)
            else:
                self.assign(partitions)

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        self._ensure_assigned()
        if self.cluster.client_errors:
            self.config["error_cb"](self.cluster.client_errors.pop(0))
            return []
        if self.cluster.consume_errors:
            return [self.cluster.consume_errors.pop(0)]
        if self.cluster.unreachable_probes > 0:
            return []  # nothing is fetched from a cluster no broker of which answers
        taken: list[FakeMessage] = []
        for key, position in sorted(self.positions.items()):
            if key in self.paused:
                continue
            log = self.cluster.logs.get(key, [])
            batch = log[position : position + num_messages - len(taken)]
            taken += batch
            self.positions[key] = position + len(batch)
        if taken:
            self.cluster.consumes += 1
        if taken and self.cluster.revoke_on_consume > 0:
            self.cluster.revoke_on_consume -= 1
            self._rebalance()
        elif taken and self.cluster.consumes in self.cluster.revoke_at_consume:
            self._rebalance()
        return taken

    def _rebalance(self) -> None:
        """Lose the assignment and get it back: positions go back to the committed offsets."""
        partitions = self.assignment()
        if self.on_revoke is not None:
            self.on_revoke(self, partitions)
        self.positions = {}
        self._ensure_assigned()

    def poll(self, timeout: float) -> FakeMessage | None:
        found = self.consume(1, timeout)
        return found[0] if found else None

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused |= {(tp.topic, tp.partition) for tp in partitions}

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused -= {(tp.topic, tp.partition) for tp in partitions}

    def seek(self, tp: TopicPartition) -> None:
        self.positions[(tp.topic, tp.partition)] = tp.offset

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        found = []
        for tp in partitions:
            stored = self.cluster.committed.get((tp.topic, tp.partition))
            found.append(stored or TopicPartition(tp.topic, tp.partition, -1001))
        return found

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [
            TopicPartition(tp.topic, tp.partition, self.positions[(tp.topic, tp.partition)])
            for tp in partitions
        ]

    def get_watermark_offsets(self, tp: TopicPartition, **_: Any) -> tuple[int, int]:
        return 0, len(self.cluster.logs.get((tp.topic, tp.partition), []))

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
        if self.cluster.unreachable_probes > 0:
            self.cluster.unreachable_probes -= 1
            raise KafkaException(KafkaError(KafkaError._TRANSPORT, "connection refused"))
        return type("Metadata", (), {"brokers": {1: "fake"}})()

    def consumer_group_metadata(self) -> str:
        return "group-metadata"

    def close(self) -> None:
        self.closed = True


class FakeProducer:
    def __init__(self, cluster: FakeCluster, config: dict[str, Any]) -> None:
        self.cluster = cluster
        self.config = config
        self.pending: list[tuple[str, Encoded]] = []
        self.offsets: list[TopicPartition] = []
        self.fenced = False
        self.closed = False

    def init_transactions(self, timeout: float) -> None:
        pass

    def poll(self, timeout: float) -> int:
        return 0

    def begin_transaction(self) -> None:
        if self.fenced:
            raise KafkaException(KafkaError(KafkaError._FENCED, "fenced", fatal=True))
        self.pending, self.offsets = [], []

    def produce(self, topic: str, key: bytes, value: bytes, headers: Any) -> None:
        self.pending.append((topic, Encoded(key, value, headers)))

    def send_offsets_to_transaction(self, offsets: list[TopicPartition], *_: Any) -> None:
        if self.cluster.stuck_sends > 0:
            self.cluster.stuck_sends -= 1
            self.fenced = True  # what the replacement's init_transactions does to it
            self.cluster.release.wait()
            raise KafkaException(KafkaError(KafkaError._FENCED, "fenced", fatal=True))
        self.offsets = list(offsets)

    def commit_transaction(self, timeout: float) -> None:
        if self.cluster.commit_failures:
            failure = self.cluster.commit_failures.pop(0)
            if failure.args[0].fatal():
                self.fenced = True
            raise failure
        self.cluster.records += self.pending
        for tp in self.offsets:
            self.cluster.committed[(tp.topic, tp.partition)] = tp
        self.pending, self.offsets = [], []
        if self.cluster.on_commit is not None:
            self.cluster.on_commit()

    def abort_transaction(self, timeout: float) -> None:
        if self.fenced:
            raise KafkaException(KafkaError(KafkaError._FENCED, "fenced", fatal=True))
        self.pending, self.offsets = [], []

    def close(self) -> bool:
        self.pending, self.offsets = [], []
        self.closed = True
        return True
