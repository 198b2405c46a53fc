"""What every consumer (a service's, a tail's) is configured with, beyond its name.

Names and ids: test_instance_ids.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.exactly_once import consumer_config
from deeptrust.streams.runner import RunnerSettings
from deeptrust.streams.tail import TopicTail

LIBRDKAFKA_FETCH_QUEUE_BACKOFF_MS = 1000
"""librdkafka's default: how long a consumer whose prefetch queue filled waits to fetch."""


def test_a_consumer_that_drained_a_full_queue_does_not_wait_a_second_to_fetch_again() -> None:
    config = consumer_config(KafkaSettings(), "t.drift", RunnerSettings())

    assert config["fetch.queue.backoff.ms"] <= LIBRDKAFKA_FETCH_QUEUE_BACKOFF_MS / 50


def test_a_strategy_override_wins_over_the_runtime_default() -> None:
    config = consumer_config(
        KafkaSettings(), "t.drift", RunnerSettings(), **{"fetch.queue.backoff.ms": 250}
    )

    assert config["fetch.queue.backoff.ms"] == 250


class Made(Exception):
    """Raised by the consumer factory once it has seen the tail's configuration."""


def test_a_tail_catching_up_does_not_wait_a_second_to_fetch_again() -> None:
    seen: list[dict[str, Any]] = []

    def factory(config: dict[str, Any]) -> Any:
        seen.append(config)
        raise Made

    with pytest.raises(Made):
        TopicTail(KafkaSettings(), ["t.uploads.v1"], consumer_factory=factory).open()

    assert seen[0]["fetch.queue.backoff.ms"] <= LIBRDKAFKA_FETCH_QUEUE_BACKOFF_MS / 50
