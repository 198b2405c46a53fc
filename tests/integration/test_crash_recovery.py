"""A stage killed with SIGKILL and restarted loses and duplicates nothing.

Killed mid-stream between batches, and killed with a transaction open whose records are
already on the broker (between produce and commit): the restarted instance's producer
fences the dead one's and aborts what it left open.
"""

from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from deeptrust.schemas.events import DetectedEvent, EmbeddingEvent
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.reader import read_to_end, read_until
from deeptrust.streams.stage import derived_event_id
from deeptrust.streams.topics import Topic, TopicNames
from tests.conftest import StartStage, wait_for
from tests.faults import assert_exactly_once, upload
from tests.images import sample_paths, small_photo

pytestmark = pytest.mark.integration
UPLOADS = 400


def committed_offsets(kafka, group: str, topic: str) -> int:
    """Sum the group's committed offsets on ``topic``.

    A read_committed client asks for stable offsets (KIP-447) and waits while the killed
    stage's transaction is pending; read_uncommitted returns the last committed ones.
    """
    consumer = Consumer(
        {**kafka.client_config(), "group.id": group, "isolation.level": "read_uncommitted"}
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        committed = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        return sum(max(tp.offset, 0) for tp in committed)
    finally:
        consumer.close()


def test_sigkill_mid_stream_loses_and_duplicates_nothing(kafka, topics, uploads, start_stage):
    photos = [small_photo(path, 64) for path in sample_paths()]
    sent = [uploads.upload(photos[i % len(photos)], "p.jpg") for i in range(UPLOADS)]
    uploads.flush()
    # The restart is the same replica (as a StatefulSet restarts a pod under its name): with
    # its id it fences the killed process's open transaction at once, instead of waiting for
    # the broker to abort it after the transaction timeout.
    # Batches prepared ahead on threads, so the read-ahead path meets a SIGKILL too.
    batch_env = {
        "DEEPTRUST_RUNNER_MAX_BATCH": "8",
        "DEEPTRUST_RUNNER_INSTANCE_ID": "detect-0",
        "DEEPTRUST_RUNNER_PREPARE_THREADS": "2",
    }

    first = start_stage("detect", **batch_env)
    wait_for(
        lambda: first.metric("deeptrust_produced_total", topic=Topic.DETECTED.value) >= 40,
        60,
        "progress",
    )
    first.kill()
    group = f"{kafka.topic_prefix}detect"
    done_before_kill = committed_offsets(kafka, group, topics(Topic.UPLOADS))
    assert 0 < done_before_kill < UPLOADS, "the kill must land mid-stream"

    second = start_stage("detect", **batch_env)
    wait_for(
        lambda: committed_offsets(kafka, group, topics(Topic.UPLOADS)) == UPLOADS, 120, "catch-up"
    )

    expected = sorted(derived_event_id(e.event_id, "detect", Topic.DETECTED) for e in sent)
    detected = read_to_end(kafka, topics(Topic.DETECTED), DetectedEvent, 30)
    assert sorted(i.event.event_id for i in detected) == expected
    embeddings = read_to_end(kafka, topics(Topic.EMBEDDINGS), EmbeddingEvent, 30)
    assert len(embeddings) == UPLOADS
    assert len({i.event.event_id for i in embeddings}) == UPLOADS

    def lag_by_partition():
        return {
            dict(labels)["partition"]: value
            for (name, labels), value in second.metrics().items()
            if name == "deeptrust_consumer_lag_messages"
        }

    wait_for(lambda: len(lag_by_partition()) == 3, 30, "a lag sample of every partition")
    wait_for(lambda: sum(lag_by_partition().values()) == 0, 30, "zero lag once caught up")


def test_sigkill_with_a_transaction_open_loses_and_duplicates_nothing(
    kafka: KafkaSettings, topics: TopicNames, uploads, start_stage: StartStage, tmp_path: Path
):
    expected = upload(uploads, 0, 120)
    held_file = tmp_path / "held"
    batches = {"DEEPTRUST_RUNNER_MAX_BATCH": "8"}
    held = start_stage(
        "detect",
        module="tests.held_commit",
        HOLD_AFTER="3",
        HOLD_FILE=str(held_file),
        **batches,
    )
    wait_for(held_file.exists, 90, "detect to hold its fourth transaction open")
    held_ids = set(held_file.read_text().split())
    assert held_ids, "the held transaction produced records"

    # The held batch's records are on the broker, in a transaction that never commits.
    def on_the_broker(received) -> bool:
        return held_ids <= {item.event.image_id for item in received}

    uncommitted = read_until(
        kafka, topics(Topic.DETECTED), DetectedEvent, on_the_broker, 30, "read_uncommitted"
    )
    assert on_the_broker(uncommitted)
    held.kill()

    detect = start_stage("detect", **batches)
    assert_exactly_once(kafka, topics(Topic.DETECTED), DetectedEvent, expected)
    assert_exactly_once(kafka, topics(Topic.EMBEDDINGS), EmbeddingEvent, expected)
    assert detect.returncode is None, detect.log_tail()
