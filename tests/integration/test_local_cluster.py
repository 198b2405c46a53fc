"""A three-node cluster keeps every acknowledged or committed message, once, through a
rolling restart, while a transactional and an ``acks=all`` producer keep writing and a
read_committed consumer keeps reading."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from deeptrust.devtools.local_cluster import LocalCluster
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.topics import Topic, TopicNames, create_topics
from tests.conftest import wait_for

pytestmark = pytest.mark.integration

PARTITIONS = 3
END = b"end"
"""The last message each writer puts on each partition: a reader that has seen them all has
read everything before them."""


class Worker(threading.Thread):
    """A thread that runs ``loop`` until told to stop and keeps what it raised."""

    def __init__(self, loop: Callable[[threading.Event], None]) -> None:
        super().__init__(daemon=True)
        self.loop = loop
        self.halt = threading.Event()
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            self.loop(self.halt)
        except BaseException as error:  # handed to the test thread
            self.failure = error


def finish(workers: list[Worker], timeout_s: float) -> None:
    """Tell every worker to stop, wait for them, raise the first failure."""
    for worker in workers:
        worker.halt.set()
    for worker in workers:
        worker.join(timeout_s)
        assert not worker.is_alive(), "worker did not finish"
    for worker in workers:
        if worker.failure is not None:
            raise worker.failure


class TransactionalWriter:
    """Five keys per transaction; only a commit that returned counts as written."""

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        self.topic = topic
        self.producer = Producer(
            {**kafka.client_config(), "transactional.id": f"rolling-{uuid.uuid4().hex}"}
        )
        self.committed: list[bytes] = []
        self.transactions = 0
        self.aborted = 0

    def loop(self, halt: threading.Event) -> None:
        self.producer.init_transactions(60)
        while not halt.wait(0.02):
            keys = [f"t-{len(self.committed) + i}".encode() for i in range(5)]
            self._commit([(key, None) for key in keys])
            self.committed += keys
            self.transactions += 1
        self._commit([(END, partition) for partition in range(PARTITIONS)])

    def _commit(self, messages: list[tuple[bytes, int | None]]) -> None:
        while True:
            self.producer.begin_transaction()
            for key, partition in messages:
                if partition is None:
                    self.producer.produce(self.topic, key=key, value=key)
                else:
                    self.producer.produce(self.topic, key=key, value=key, partition=partition)
            try:
                _retrying(self.producer.commit_transaction)
                return
            except KafkaException as error:
                if not error.args[0].txn_requires_abort():
                    raise
                self.aborted += 1
                _retrying(self.producer.abort_transaction)


def _retrying(call: Callable[[float], None]) -> None:
    """Commit or abort, again while the error says a retry may succeed."""
    while True:
        try:
            call(60)
            return
        except KafkaException as error:
            if not error.args[0].retriable():
                raise


class AcksAllWriter:
    """An idempotent ``acks=all`` producer; a key counts once its delivery is reported.

    One message in flight at a time: pipelined idempotent sends across a leader change can
    take librdkafka's out-of-order-sequence path, where it bumps the producer epoch and may
    fail or repeat a message (confluentinc/librdkafka#4953), a matter of the client and not
    of the cluster. A message whose delivery failed may or may not have been written, but
    never twice.
    """

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        self.topic = topic
        self.producer = Producer(
            {
                **kafka.client_config(),
                "enable.idempotence": True,
                "max.in.flight.requests.per.connection": 1,
            }
        )
        self.delivered: list[bytes] = []
        self.failed: list[bytes] = []
        self.errors: list[KafkaError] = []

    def on_delivery(self, error: KafkaError | None, message: Message) -> None:
        key = message.key() or b""
        if error is not None:
            self.errors.append(error)
            self.failed.append(key)
        elif key != END:
            self.delivered.append(key)

    def loop(self, halt: threading.Event) -> None:
        sent = 0
        while not halt.wait(0.02):
            key = f"a-{sent}".encode()
            self.send(key, None)
            sent += 1
        for partition in range(PARTITIONS):
            self.send(END, partition)

    def send(self, key: bytes, partition: int | None) -> None:
        if partition is None:
            self.producer.produce(self.topic, key=key, value=key, on_delivery=self.on_delivery)
        else:
            self.producer.produce(
                self.topic, key=key, value=key, partition=partition, on_delivery=self.on_delivery
            )
        assert self.producer.flush(60) == 0, "a message still undelivered"


class Reader:
    """read_committed, partitions assigned (no group to rebalance), counts every key."""

    def __init__(self, kafka: KafkaSettings, topics: list[str]) -> None:
        self.consumer = Consumer(
            {
                **kafka.client_config(),
                "group.id": f"rolling-{uuid.uuid4().hex}",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
            }
        )
        self.consumer.assign(
            [TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in range(PARTITIONS)]
        )
        self.expected_ends = {(t, p) for t in topics for p in range(PARTITIONS)}
        self.ends: set[tuple[str, int]] = set()
        self.counts: Counter[bytes] = Counter()

    def loop(self, halt: threading.Event) -> None:
        # Read until every writer's end marker is in; a minute after the halt, give up.
        halted_at: float | None = None
        while self.ends != self.expected_ends:
            if halt.is_set():
                halted_at = halted_at or time.monotonic()
                if time.monotonic() - halted_at > 60:
                    break
            message = self.consumer.poll(0.2)
            if message is None:
                continue
            if message.error() is not None:
                raise KafkaException(message.error())
            if message.key() == END:
                self.ends.add((message.topic() or "", message.partition() or 0))
            else:
                self.counts[message.key() or b""] += 1
        self.consumer.close()


def test_a_rolling_restart_loses_and_duplicates_nothing(cluster: LocalCluster) -> None:
    kafka = KafkaSettings(
        bootstrap_servers=cluster.bootstrap_servers, topic_prefix=f"t{uuid.uuid4().hex[:10]}."
    )
    create_topics(kafka, partitions=PARTITIONS, replication_factor=3)
    names = TopicNames(kafka.topic_prefix)
    transactional_topic, acks_all_topic = names(Topic.UPLOADS), names(Topic.DETECTED)
    admin = AdminClient(kafka.client_config())
    metadata = admin.list_topics(timeout=10)
    for topic in (transactional_topic, acks_all_topic):
        assert [len(p.replicas) for p in metadata.topics[topic].partitions.values()] == [3] * 3
    resource = ConfigResource(ResourceType.TOPIC, transactional_topic)
    described = admin.describe_configs([resource])[resource].result(timeout=10)
    assert described["min.insync.replicas"].value == "2"

    transactional = TransactionalWriter(kafka, transactional_topic)
    acks_all = AcksAllWriter(kafka, acks_all_topic)
    reader = Reader(kafka, [transactional_topic, acks_all_topic])
    workers = [Worker(transactional.loop), Worker(acks_all.loop), Worker(reader.loop)]
    for worker in workers:
        worker.start()
    try:
        wait_for(lambda: transactional.transactions >= 5, 60, "transactions before the restart")

        def writes_go_on(node_id: int) -> None:
            transactions, delivered = transactional.transactions, len(acks_all.delivered)
            wait_for(
                lambda: (
                    transactional.transactions >= transactions + 5
                    and len(acks_all.delivered) >= delivered + 5
                ),
                60,
                f"commits and acks=all deliveries while node {node_id} is down",
            )

        cluster.restart_rolling(timeout_s=120, while_down=writes_go_on)
    finally:
        finish(workers, timeout_s=90)

    assert END not in acks_all.failed, "an end marker was not delivered"
    written = Counter(transactional.committed + acks_all.delivered)
    assert set(written.values()) == {1}, "a writer reused a key"
    read_once_or_never = {key: reader.counts[key] for key in acks_all.failed}
    assert set(read_once_or_never.values()) <= {0, 1}, "a failed message was written twice"
    read = reader.counts - Counter(read_once_or_never)
    assert read == written, "every commit and every acknowledged message read exactly once"
    health = cluster.health()
    assert health.brokers == {1, 2, 3}
    assert health.under_replicated == ()
