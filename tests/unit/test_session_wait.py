"""``Session.wait``: the group stays alive during long work, short work touches nothing.

Pausing a partition makes librdkafka throw away the messages it has prefetched for it, so a
consumer paused for every batch's prepare threads fetched every next batch again and never
had one to read ahead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, cast

import pytest
from confluent_kafka import Consumer, Message, Producer, TopicPartition

from deeptrust.streams import service
from deeptrust.streams.metrics import StageMetrics
from deeptrust.streams.service import Commit, Session, Strategy
from deeptrust.streams.topics import Topic
from tests.unit.kafka_fakes import FakeCluster, FakeConsumer, FakeProducer

DEADLINE_S = 10.0


class Idle(Strategy):
    name = "idle"
    topics = (Topic.UPLOADS,)

    def handle(self, messages: list[Message], session: Session) -> Commit | None:
        return None


class NotingConsumer(FakeConsumer):
    """Notes each pause, resume and poll, in order; ``on_poll`` runs inside each poll."""

    def __init__(self, cluster: FakeCluster) -> None:
        super().__init__(cluster, {})
        self.calls: list[str] = []
        self.on_poll: list[Callable[[], None]] = []

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.calls.append("pause")
        super().pause(partitions)

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.calls.append("resume")
        super().resume(partitions)

    def poll(self, timeout: float) -> Any:
        self.calls.append("poll")
        for action in self.on_poll:
            action()
        return super().poll(timeout)


def session_on(consumer: NotingConsumer) -> Session:
    cluster = consumer.cluster
    consumer.assign([TopicPartition("uploads.v1", 0)])
    return Session(
        cast(Consumer, consumer),
        cast(Producer, FakeProducer(cluster, {})),
        threading.Event(),
        StageMetrics("idle"),
        Idle(),
        kafka_timeout_s=1.0,
    )


def test_work_done_within_the_keep_alive_poll_never_pauses_the_partitions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(service, "KEEP_ALIVE_POLL_S", DEADLINE_S)
    consumer = NotingConsumer(FakeCluster())
    session = session_on(consumer)
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(sum, [1, 2, 3])
        session.wait([future])

    assert future.result() == 6
    assert consumer.calls == [], "nothing prefetched was thrown away"


def test_work_that_outlasts_the_keep_alive_poll_is_waited_for_paused_and_then_resumed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(service, "KEEP_ALIVE_POLL_S", 0.01)
    consumer = NotingConsumer(FakeCluster())
    session = session_on(consumer)
    future: Future[int] = Future()
    paused_while_polling: list[bool] = []

    def finish_the_work() -> None:
        if not future.done():
            future.set_result(7)

    consumer.on_poll = [
        lambda: paused_while_polling.append(("uploads.v1", 0) in consumer.paused),
        finish_the_work,
    ]

    session.wait([future])

    assert future.result() == 7
    assert paused_while_polling == [True], "the poll that kept the group alive took nothing"
    assert consumer.calls == ["pause", "poll", "resume"]
    assert consumer.paused == set()
