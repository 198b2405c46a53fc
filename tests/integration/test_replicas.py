"""Replicas of a stage started without an instance id share the work and never fence each other.

Each gets an id of its own (a random transactional id, dynamic group membership), so two
started alike both join the group, split its partitions and commit side by side, and what
they write together is every upload's events once (read committed, counted by image id).
"""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient, ConsumerGroupDescription

from deeptrust.schemas.events import DetectedEvent
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.topics import Topic, TopicNames
from tests.conftest import StartStage, wait_for
from tests.faults import assert_exactly_once, upload

pytestmark = pytest.mark.integration
UPLOADS = 240
NO_ID = {"DEEPTRUST_RUNNER_INSTANCE_ID": ""}
"""Set but blank, as unset: whatever the test's own environment says, these have no id."""


def describe_group(kafka: KafkaSettings, group: str) -> ConsumerGroupDescription:
    admin = AdminClient(kafka.client_config())
    description: ConsumerGroupDescription = admin.describe_consumer_groups([group])[group].result(
        timeout=10
    )
    return description


def assignments(kafka: KafkaSettings, group: str) -> list[set[int]]:
    """The partitions each member of ``group`` holds now."""
    return [
        {tp.partition for tp in member.assignment.topic_partitions}
        for member in describe_group(kafka, group).members
    ]


def test_two_replicas_without_an_id_split_the_partitions_and_process_each_upload_once(
    kafka: KafkaSettings, topics: TopicNames, uploads, start_stage: StartStage
):
    group = f"{kafka.topic_prefix}detect"
    first = start_stage("detect", DEEPTRUST_RUNNER_MAX_BATCH="8", **NO_ID)
    second = start_stage("detect", DEEPTRUST_RUNNER_MAX_BATCH="8", **NO_ID)

    def both_hold_partitions() -> bool:
        held = assignments(kafka, group)
        return len(held) == 2 and all(held)

    wait_for(both_hold_partitions, 60, "both replicas to hold partitions")
    first_held, second_held = assignments(kafka, group)
    assert first_held.isdisjoint(second_held)
    assert first_held | second_held == {0, 1, 2}
    members = describe_group(kafka, group).members
    assert [member.group_instance_id for member in members] == [None, None], "dynamic members"

    expected = upload(uploads, 0, UPLOADS)
    assert_exactly_once(kafka, topics(Topic.DETECTED), DetectedEvent, expected)

    for replica in (first, second):
        assert replica.returncode is None, replica.log_tail()
        assert replica.metric("deeptrust_consumed_total") > 0, replica.log_tail()
        assert replica.metric("deeptrust_recoveries_total", cause="fenced") == 0
    consumed = sum(replica.metric("deeptrust_consumed_total") for replica in (first, second))
    assert consumed == UPLOADS, "each upload was read by one replica, once"
