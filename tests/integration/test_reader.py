"""The topic tail and the readers on it, on the real broker: starts, stops, markers."""

from __future__ import annotations

import uuid

from confluent_kafka import Producer

from deeptrust.schemas.events import UploadEvent
from deeptrust.streams.codec import encode
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.reader import read_to_end
from deeptrust.streams.tail import END, Bounds, Position, TopicTail
from deeptrust.streams.topics import Topic, TopicNames
from tests.conftest import wait_for
from tests.events import upload_event

T0 = 1_790_000_000_000  # a fixed moment, in milliseconds since the epoch


def produce_at(producer: Producer, topic: str, event: UploadEvent, timestamp_ms: int) -> None:
    encoded = encode(event, event.image_id)
    producer.produce(
        topic,
        key=encoded.key,
        value=encoded.value,
        headers=encoded.headers,
        timestamp=timestamp_ms,
    )


def test_reading_from_a_time_skips_what_came_before_on_every_partition(
    kafka: KafkaSettings, topics: TopicNames, raw_producer: Producer
) -> None:
    topic = topics(Topic.UPLOADS)
    for second in range(6):  # ids spread over the partitions by key
        event = upload_event(event_id=f"e-{second}", image_id=f"img-{second}")
        produce_at(raw_producer, topic, event, T0 + 1000 * second)
    assert raw_producer.flush(10) == 0

    def ids(since_ms: int | None) -> list[str]:
        read = read_to_end(kafka, topic, UploadEvent, 30, since_ms)
        return sorted(item.event.event_id for item in read)

    assert ids(None) == [f"e-{s}" for s in range(6)]
    stamped = {
        item.event.event_id: item.timestamp_ms
        for item in read_to_end(kafka, topic, UploadEvent, 30)
    }
    assert stamped == {f"e-{s}": T0 + 1000 * s for s in range(6)}, "as their producer sent them"
    assert ids(T0 + 3000) == ["e-3", "e-4", "e-5"]
    assert ids(T0 + 2500) == ["e-3", "e-4", "e-5"], "the first message at or after the time"
    assert ids(T0 + 60_000) == [], "nothing that late"


def fill_partition(producer: Producer, topic: str, count: int, prefix: str = "p") -> None:
    for n in range(count):
        producer.produce(topic, key=f"{prefix}-{n}", value=f"{prefix}-{n}", partition=0)
    assert producer.flush(10) == 0


def keys(messages) -> list[str]:
    return [message.key().decode() for message in messages]


def test_a_tail_with_a_stop_reads_that_range_and_nothing_past_it(kafka, topics, raw_producer):
    topic = topics(Topic.UPLOADS)
    fill_partition(raw_producer, topic, 5)
    tail = TopicTail(kafka, [topic])
    try:
        tail.open(Position(offset=1), stop=Position(offsets={(topic, 0): 3}))
        assert keys(tail.read_to_end(30)) == ["p-1", "p-2"]
        assert tail.caught_up
        assert tail.poll(0.5) == []
    finally:
        tail.close()


def test_offsets_given_for_a_partition_win_over_the_time(kafka, topics, raw_producer):
    topic = topics(Topic.UPLOADS)
    fill_partition(raw_producer, topic, 4)
    tail = TopicTail(kafka, [topic])
    try:
        # Nothing is that late: every partition but the one with an offset starts at its end.
        tail.open(Position(offsets={(topic, 0): 2}, since_ms=T0 * 10))
        assert keys(tail.read_to_end(30)) == ["p-2", "p-3"]
    finally:
        tail.close()


def test_an_aborted_transaction_at_the_end_still_counts_as_caught_up(kafka, topics):
    topic = topics(Topic.UPLOADS)
    transactional = Producer(
        {**kafka.client_config(), "transactional.id": f"tail-{uuid.uuid4().hex}"}
    )
    transactional.init_transactions(30)
    transactional.begin_transaction()
    for n in range(3):
        transactional.produce(topic, key=f"a-{n}", value="aborted", partition=0)
    assert transactional.flush(30) == 0, "written to the log, so the abort must mark them"
    transactional.abort_transaction(30)

    def stable_end() -> int:
        """Where partition 0 ends for read_committed: past the marker once it is written."""
        probe = TopicTail(kafka, [topic])
        try:
            probe.open()
            return probe.bounds[(topic, 0)].stop
        finally:
            probe.close()

    wait_for(lambda: stable_end() == 4, 30, "three aborted messages and the abort marker")
    tail = TopicTail(kafka, [topic])
    try:
        tail.open()
        assert tail.bounds[(topic, 0)] == Bounds(start=0, stop=4)
        assert tail.read_to_end(30) == []
        assert tail.caught_up
    finally:
        tail.close()


def test_a_tail_from_the_end_follows_only_what_arrives_later(kafka, topics, raw_producer):
    topic = topics(Topic.UPLOADS)
    fill_partition(raw_producer, topic, 3, prefix="before")
    tail = TopicTail(kafka, [topic])
    try:
        tail.open(END)
        assert tail.caught_up
        fill_partition(raw_producer, topic, 2, prefix="after")
        seen: list[str] = []

        def both_arrived() -> bool:
            seen.extend(keys(tail.poll(0.2)))
            return len(seen) >= 2

        wait_for(both_arrived, 30, "the two later messages")
        assert seen == ["after-0", "after-1"]
    finally:
        tail.close()
