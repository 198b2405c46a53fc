"""read_to_end on the real broker: from the beginning, or from a point in time."""

from __future__ import annotations

from confluent_kafka import Producer

from deeptrust.schemas.events import UploadEvent
from deeptrust.streams.codec import encode
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.reader import read_to_end
from deeptrust.streams.topics import Topic, TopicNames
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
    assert ids(T0 + 3000) == ["e-3", "e-4", "e-5"]
    assert ids(T0 + 2500) == ["e-3", "e-4", "e-5"], "the first message at or after the time"
    assert ids(T0 + 60_000) == [], "nothing that late"
