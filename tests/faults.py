"""What the fault tests share: uploads in numbered ranges, and the exactly-once count."""

from __future__ import annotations

from collections import Counter

from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.reader import read_to_end, read_until
from tests.images import sample_paths, small_photo


def upload(uploads, first: int, last: int, flush: bool = True) -> set[str]:
    """Upload photos ``img-first`` .. ``img-(last-1)``; librdkafka queues them if need be."""
    photos = [small_photo(path, 64) for path in sample_paths()]
    sent = [
        uploads.upload(photos[i % len(photos)], f"{i}.jpg", image_id=f"img-{i}")
        for i in range(first, last)
    ]
    if flush:
        uploads.flush()
    return {event.image_id for event in sent}


def assert_exactly_once(kafka: KafkaSettings, topic: str, model, expected: set[str]) -> None:
    def complete(received) -> bool:
        return expected <= {item.event.image_id for item in received}

    read_until(kafka, topic, model, complete, 180)
    counts = Counter(item.event.image_id for item in read_to_end(kafka, topic, model, 60))
    assert set(counts) == expected, f"lost: {sorted(expected - set(counts))[:5]}"
    duplicated = {image_id: n for image_id, n in counts.items() if n > 1}
    assert duplicated == {}
