"""The Kafka settings and transaction calls behind read-process-write exactly once.

What the service runtime (:mod:`deeptrust.streams.service`) makes its clients with: a consumer
that reads committed data only and never commits by itself, a transactional producer named
after the replica, and commit and abort calls that tell retriable errors from fatal ones.

A replica given a stable id (a StatefulSet pod's name) keeps its transactional id and static
group membership across restarts, so the restarted process fences its dead predecessor and
takes its partitions back at once. One given none gets a random id of its own: it can never
share a transactional id with another replica, and zombies are still fenced, by the consumer
group's generation that every commit carries (KIP-447, ``send_offsets_to_transaction`` with
the group metadata); only a crash costs more, since nobody aborts its open transaction before
``transaction.timeout.ms``. docs/architecture.md has the reasoning.
Every blocking transactional call runs within a deadline (:mod:`deeptrust.streams.bounded`): one
that hangs past it raises ``StuckCall``, and its clients are given up.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition

from deeptrust.streams.bounded import StuckCall, within
from deeptrust.streams.codec import Encoded
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.topics import BATCH_OVERHEAD_BYTES, DEAD_LETTER_LIMIT_BYTES

log = logging.getLogger(__name__)
FETCH_QUEUE_BACKOFF_MS = 10
"""How soon a consumer whose prefetch queue was full asks for more. librdkafka waits 1 s by
default, so a service that drains its queue faster than that (drift reading a backlog) sits
idle until the next fetch: drift on the broker ran at 10,253 to 11,621 embeddings/s with
the default and at 18,730 and 18,781 with 10 ms (``bench/drift_throughput.py``). Topic tails
(:mod:`deeptrust.streams.tail`) use it too: reading 1,000,000 records of 200 bytes to the
end took 5.08, 2.23 and 2.32 s with the default, 4.35, 1.66 and 1.50 s with 10 ms."""


@dataclass(frozen=True)
class Identity:
    """What one replica's clients are named after."""

    id: str
    """The end of the transactional id (and of the static member id, when stable)."""
    stable: bool
    """Given by the deployment and kept across restarts: only then is membership static."""


def random_instance_id() -> str:
    """An id no other process has: for a replica started without one (the pid is a hint)."""
    return f"p{os.getpid()}-{uuid.uuid4().hex[:12]}"


class Instance(Protocol):
    """What names one instance of a consumer-producer loop and bounds its waits."""

    @property
    def identity(self) -> Identity:
        """The same for every client this instance creates, for the life of the process."""
        ...

    session_timeout_ms: int
    transaction_timeout_ms: int
    kafka_timeout_s: float


def consumer_config(
    kafka: KafkaSettings, group_id: str, instance: Instance, **overrides: Any
) -> dict[str, Any]:
    """A read_committed consumer whose offsets go in transactions; static with a stable id.

    Static membership lets a restarted replica take its partitions straight back; it is only
    right for an id that comes back, so a replica with a random id joins as a dynamic member.
    """
    identity = instance.identity
    static = {"group.instance.id": f"{group_id}-{identity.id}"} if identity.stable else {}
    return {
        **kafka.client_config(),
        "group.id": group_id,
        **static,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
        "session.timeout.ms": instance.session_timeout_ms,
        "fetch.queue.backoff.ms": FETCH_QUEUE_BACKOFF_MS,
        **overrides,
    }


def producer_config(kafka: KafkaSettings, group_id: str, instance: Instance) -> dict[str, Any]:
    """A transactional producer named after the instance, so it fences its predecessors.

    A stable id survives restarts, and ``init_transactions`` aborts what a crashed
    predecessor left open, so nothing it wrote half-way can hide the state a restarted
    instance is about to read. A random id lasts as long as the process: the clients it
    re-creates after an error still fence the ones they replace.
    """
    return {
        **kafka.client_config(),
        "transactional.id": f"{group_id}-{instance.identity.id}",
        "transaction.timeout.ms": instance.transaction_timeout_ms,
        # Bounds every request, and so every transactional call: without it a call to a
        # broker that went away blocks for librdkafka's default of 60 s whatever its timeout.
        "socket.timeout.ms": int(instance.kafka_timeout_s * 1000),
        "linger.ms": 5,
        # Dead letters may be larger than a pipeline record (streams/topics.py); the runner
        # keeps every other record under RECORD_LIMIT_BYTES itself.
        "message.max.bytes": DEAD_LETTER_LIMIT_BYTES + BATCH_OVERHEAD_BYTES,
    }


def fenced_producer(kafka: KafkaSettings, group_id: str, instance: Instance) -> Producer:
    """A transactional producer of ``producer_config`` that has fenced its predecessors.

    For one-shot tools (a redrive); the long-running services get theirs from the runtime.
    """
    producer = Producer(producer_config(kafka, group_id, instance))
    init_transactions(producer, instance.kafka_timeout_s)
    return producer


def init_transactions(producer: Producer, timeout_s: float) -> None:
    """Fence the predecessors with this transactional id and abort what they left open."""
    within(timeout_s, "init_transactions", lambda: producer.init_transactions(timeout_s))


def commit_transaction(producer: Producer, timeout_s: float, max_attempts: int) -> None:
    """Commit, repeating the call while librdkafka says the error is retriable."""
    for attempt in range(1, max_attempts + 1):
        try:
            within(timeout_s, "commit_transaction", lambda: producer.commit_transaction(timeout_s))
            return
        except KafkaException as exception:
            if (
                isinstance(exception, StuckCall)
                or not exception.args[0].retriable()
                or attempt == max_attempts
            ):
                raise
            log.warning("commit attempt %d: %s; retrying", attempt, exception)


def commit_with_offsets(
    producer: Producer,
    consumer: Consumer,
    records: Sequence[tuple[str, Encoded]],
    offsets: list[TopicPartition],
    timeout_s: float,
    max_attempts: int,
) -> None:
    """Produce ``records`` and commit ``offsets`` in one transaction, or abort and re-raise.

    Either every record becomes visible with the offsets that consumed its inputs, or none
    does and the inputs are read again: the step every exactly-once loop here ends with.
    """
    producer.begin_transaction()
    try:
        for topic, encoded in records:
            producer.produce(topic, key=encoded.key, value=encoded.value, headers=encoded.headers)
        group = consumer.consumer_group_metadata()
        within(
            timeout_s,
            "send_offsets_to_transaction",
            lambda: producer.send_offsets_to_transaction(offsets, group, timeout_s),
        )
        commit_transaction(producer, timeout_s, max_attempts)
    except StuckCall:
        raise  # the producer is still busy with the stuck call: it is given up, not aborted
    except BaseException:
        abort_transaction(producer, timeout_s)
        raise


def offset_after(message: Message) -> TopicPartition:
    """The offset to commit once ``message`` is done: the next one on its partition."""
    return TopicPartition(
        message.topic() or "", message.partition() or 0, (message.offset() or 0) + 1
    )


def abort_transaction(producer: Producer, timeout_s: float) -> None:
    """Abort the open transaction so its work can be redone from scratch."""
    try:
        within(timeout_s, "abort_transaction", lambda: producer.abort_transaction(timeout_s))
    except KafkaException as exception:
        if exception.args[0].fatal():
            raise
        log.warning("abort failed: %s", exception)


def usable(message: Message) -> bool:
    """Tell a message from a consumer error: fatal errors raise, others are logged and skipped."""
    error = message.error()
    if error is None:
        return True
    if error.fatal():
        raise KafkaException(error)
    log.warning("consumer error on %s: %s", message.topic(), error)
    return False
