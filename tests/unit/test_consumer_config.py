"""What every service's consumer is configured with, beyond its name (test_instance_ids.py)."""

from __future__ import annotations

from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.exactly_once import consumer_config
from deeptrust.streams.runner import RunnerSettings

LIBRDKAFKA_FETCH_QUEUE_BACKOFF_MS = 1000
"""librdkafka's default: how long a consumer whose prefetch queue filled waits to fetch."""


def test_a_consumer_that_drained_a_full_queue_does_not_wait_a_second_to_fetch_again():
    config = consumer_config(KafkaSettings(), "t.drift", RunnerSettings())

    assert config["fetch.queue.backoff.ms"] <= LIBRDKAFKA_FETCH_QUEUE_BACKOFF_MS / 50


def test_a_strategy_override_wins_over_the_runtime_default():
    config = consumer_config(
        KafkaSettings(), "t.drift", RunnerSettings(), **{"fetch.queue.backoff.ms": 250}
    )

    assert config["fetch.queue.backoff.ms"] == 250
