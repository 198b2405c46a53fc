"""Stages ride out a rolling restart of a three-node cluster (replication 3, min ISR 2).

Detect and caption run while each node in turn is stopped and started again, as an upgrade
does; uploads keep arriving while a node is down. Every upload's events must be read back
exactly once (read_committed, by image id) and both stages still run.
"""

from __future__ import annotations

import uuid

import pytest

from deeptrust.devtools.local_cluster import LocalCluster
from deeptrust.schemas.events import CaptionedEvent, DetectedEvent
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.topics import Topic, TopicNames, create_topics
from tests.conftest import StartStage, wait_for
from tests.faults import assert_exactly_once, upload

pytestmark = pytest.mark.integration
PER_NODE = 40
"""Uploads sent while each node is down."""


@pytest.fixture
def kafka(cluster: LocalCluster) -> KafkaSettings:
    """This test's topics on the cluster, three copies each (overrides the session's)."""
    settings = KafkaSettings(
        bootstrap_servers=cluster.bootstrap_servers, topic_prefix=f"r{uuid.uuid4().hex[:10]}."
    )
    create_topics(settings, partitions=3, replication_factor=3)
    return settings


def test_stages_ride_out_a_rolling_restart(
    kafka: KafkaSettings,
    topics: TopicNames,
    uploads,
    start_stage: StartStage,
    cluster: LocalCluster,
):
    detect = start_stage("detect", DEEPTRUST_RUNNER_MAX_BATCH="8")
    caption = start_stage("caption", DEEPTRUST_RUNNER_MAX_BATCH="8")
    expected = upload(uploads, 0, PER_NODE)
    sent = PER_NODE

    def while_down(node_id: int) -> None:
        nonlocal expected, sent
        expected |= upload(uploads, sent, sent + PER_NODE)
        sent += PER_NODE
        wait_for(
            lambda: (
                detect.metric("deeptrust_produced_total", topic=Topic.DETECTED.value)
                >= sent - PER_NODE // 2
            ),
            120,
            f"detect making progress while node {node_id} is down",
        )

    cluster.restart_rolling(timeout_s=180, while_down=while_down)

    assert_exactly_once(kafka, topics(Topic.DETECTED), DetectedEvent, expected)
    assert_exactly_once(kafka, topics(Topic.CAPTIONED), CaptionedEvent, expected)
    for stage in (detect, caption):
        assert stage.returncode is None, stage.log_tail()
