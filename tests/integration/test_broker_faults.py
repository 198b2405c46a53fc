"""Stages ride out what production clusters do: a broker outage, a fencing intruder, a shared id.

These tests run on a broker of their own (the session's is shared and must stay up), and
each ends with every upload's events read back exactly once (read_committed, counted by
image id) and every stage process still running.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Producer

from deeptrust.devtools.local_broker import LocalBroker, free_port
from deeptrust.devtools.processes import StageProcess
from deeptrust.schemas.events import CaptionedEvent, DetectedEvent
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.topics import Topic, TopicNames, create_topics
from tests.conftest import StartStage, wait_for
from tests.faults import assert_exactly_once, upload

pytestmark = pytest.mark.integration
UPLOADS = 240


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    broker = LocalBroker(
        tmp_path_factory.mktemp("kafka-faults"), port=free_port(), controller_port=free_port()
    )
    broker.start(timeout_s=180)
    yield broker
    broker.stop()


@pytest.fixture
def kafka(own_broker: LocalBroker) -> KafkaSettings:
    """This module's topics, on the broker it may restart (overrides the session's)."""
    settings = KafkaSettings(
        bootstrap_servers=own_broker.bootstrap_servers, topic_prefix=f"f{uuid.uuid4().hex[:10]}."
    )
    create_topics(settings, partitions=3)
    return settings


def recoveries(stage: StageProcess) -> float:
    """How often the stage re-created its clients, whatever the cause."""
    return sum(
        value
        for (name, _), value in stage.metrics().items()
        if name == "deeptrust_recoveries_total"
    )


@pytest.mark.parametrize("outage_s", [10.0, 90.0], ids=["10s", "90s"])
def test_stages_ride_out_a_broker_outage(
    kafka: KafkaSettings,
    topics: TopicNames,
    uploads,
    start_stage: StartStage,
    own_broker: LocalBroker,
    outage_s: float,
):
    batches = {"DEEPTRUST_RUNNER_MAX_BATCH": "8", "DEEPTRUST_RUNNER_KAFKA_TIMEOUT_S": "10"}
    detect = start_stage("detect", **batches)
    caption = start_stage("caption", **batches)
    expected = upload(uploads, 0, UPLOADS // 2)
    wait_for(
        lambda: detect.metric("deeptrust_produced_total", topic=Topic.DETECTED.value) >= 24,
        90,
        "detect under way",
    )

    own_broker.stop()
    down_since = time.monotonic()
    expected |= upload(uploads, UPLOADS // 2, UPLOADS, flush=False)  # sent once it is back
    wait_for(lambda: detect.get("/readyz") == 503, 60, "detect to report itself cut off")
    wait_for(lambda: caption.get("/readyz") == 503, 60, "caption to report itself cut off")
    # The outage itself: the broker stays down this long whatever the stages do meanwhile.
    remaining = outage_s - (time.monotonic() - down_since)
    if remaining > 0:
        time.sleep(remaining)
    own_broker.start(timeout_s=120)
    uploads.flush()

    assert_exactly_once(kafka, topics(Topic.DETECTED), DetectedEvent, expected)
    assert_exactly_once(kafka, topics(Topic.CAPTIONED), CaptionedEvent, expected)
    for stage in (detect, caption):
        assert stage.returncode is None, stage.log_tail()
        wait_for(lambda stage=stage: stage.get("/readyz") == 200, 60, f"{stage.name} ready again")
    # Detect had a batch in hand when the broker went: it re-created its clients, in process.
    assert recoveries(detect) >= 1, detect.log_tail()


def test_a_stage_fenced_by_an_intruder_recovers_in_process(
    kafka: KafkaSettings, topics: TopicNames, uploads, start_stage: StartStage
):
    detect = start_stage("detect", DEEPTRUST_RUNNER_MAX_BATCH="8", DEEPTRUST_RUNNER_INSTANCE_ID="0")
    expected = upload(uploads, 0, UPLOADS // 2)
    wait_for(
        lambda: detect.metric("deeptrust_produced_total", topic=Topic.DETECTED.value) >= 24,
        90,
        "detect under way",
    )

    # Another producer with detect's transactional id: the broker fences detect's producer.
    intruder = Producer(
        {**kafka.client_config(), "transactional.id": f"{kafka.topic_prefix}detect-0"}
    )
    intruder.init_transactions(30)
    expected |= upload(uploads, UPLOADS // 2, UPLOADS)

    assert_exactly_once(kafka, topics(Topic.DETECTED), DetectedEvent, expected)
    assert detect.returncode is None, detect.log_tail()
    assert recoveries(detect) >= 1, detect.log_tail()


def test_two_replicas_with_one_instance_id_are_refused_loudly(
    kafka: KafkaSettings, start_stage: StartStage
):
    first = start_stage("detect", DEEPTRUST_RUNNER_INSTANCE_ID="replica-0")
    second = start_stage("detect", DEEPTRUST_RUNNER_INSTANCE_ID="replica-0")  # a copied id

    def one_stopped() -> bool:
        return first.returncode is not None or second.returncode is not None

    wait_for(one_stopped, 90, "one of the two to stop on the collision")
    stopped, running = (first, second) if first.returncode is not None else (second, first)
    assert stopped.returncode != 0
    assert "same DEEPTRUST_RUNNER_INSTANCE_ID" in stopped.log_tail(60)
    assert running.returncode is None, running.log_tail()
