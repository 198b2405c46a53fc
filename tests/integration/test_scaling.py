"""A stage scaled from one replica to three and back to one mid-stream.

Uploads keep arriving while two replicas join (each takes a partition from the first, which
must drop what it had read from them) and leave again (their partitions go back to the
first once their static membership times out). Every upload's events must be read back
exactly once (read_committed, by image id), the replica that stayed still runs, and the two
that were stopped exited cleanly.
"""

from __future__ import annotations

import time

import pytest

from deeptrust.schemas.events import DetectedEvent
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.topics import Topic, TopicNames
from tests.conftest import StartStage
from tests.faults import assert_exactly_once, upload

pytestmark = pytest.mark.integration
CHUNK = 8
"""Uploads sent at a time while the replicas come and go."""
PACE_S = 0.5
"""Between chunks: a steady stream, not one burst that is over before a replica joins."""


def test_scaling_detect_from_one_to_three_replicas_and_back_mid_stream(
    kafka: KafkaSettings, topics: TopicNames, uploads, start_stage: StartStage
):
    batches = {"DEEPTRUST_RUNNER_MAX_BATCH": "8"}
    first = start_stage("detect", **batches)
    expected = upload(uploads, 0, 40)
    sent = 40

    def upload_until(condition, timeout_s: float, what: str) -> None:
        nonlocal expected, sent
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert time.monotonic() < deadline, f"timed out after {timeout_s}s waiting for {what}"
            expected |= upload(uploads, sent, sent + CHUNK)
            sent += CHUNK
            time.sleep(PACE_S)

    def produced(stage) -> float:
        return stage.metric("deeptrust_produced_total", topic=Topic.DETECTED.value)

    upload_until(lambda: produced(first) >= 24, 90, "the first replica under way")
    added = [
        start_stage("detect", DEEPTRUST_RUNNER_INSTANCE_ID=str(instance), **batches)
        for instance in (1, 2)
    ]
    upload_until(lambda: all(produced(r) > 0 for r in added), 120, "the new replicas producing")

    for replica in added:
        assert replica.terminate() == 0, replica.log_tail()
    after_scale_down = produced(first)
    upload_until(lambda: produced(first) > after_scale_down + 3 * CHUNK, 120, "the first alone")

    assert_exactly_once(kafka, topics(Topic.DETECTED), DetectedEvent, expected)
    assert first.returncode is None, first.log_tail()
