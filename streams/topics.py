"""Topic names (with the configurable prefix) and their creation.

The prefix gives a canary, a test or a demo run its own set of topics on a shared cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from deeptrust.streams.config import KafkaSettings


class Topic(StrEnum):
    """Every topic of the pipeline, without its prefix."""

    UPLOADS = "uploads.v1"
    DETECTED = "detected.v1"
    EMBEDDINGS = "embeddings.v1"
    CAPTIONED = "captioned.v1"
    ENRICHED = "enriched.v1"
    MODERATION = "moderation.v1"
    DEAD_LETTERS = "dlq.v1"
    REDRIVEN = "dlq-redriven.v1"
    DRIFT = "drift.v1"
    ALERTS = "alerts.v1"
    RETRAIN = "retrain.v1"
    DRIFT_STATE = "drift-state.v1"
    FEEDBACK = "feedback.v1"
    MODELS = "models.v1"
    SEARCH_INTERACTIONS = "search-interactions.v1"


RECORD_LIMIT_BYTES = 1_000_000
"""The largest record a stage writes to a pipeline topic: librdkafka's default
``message.max.bytes``, under the broker's default limit (1,048,588 bytes)."""
DEAD_LETTER_LIMIT_BYTES = 8 * 1024 * 1024
"""The largest dead letter: it carries its input base64-encoded (a third larger) with the
reason, so ``dlq.v1`` is created with room for the largest input a topic can hold."""
BATCH_OVERHEAD_BYTES = 64 * 1024
"""Room for the record batch's framing above the largest record."""

COMPACTED = frozenset({Topic.DRIFT_STATE, Topic.FEEDBACK, Topic.MODELS, Topic.REDRIVEN})
"""Changelog topics: only the latest value per key matters, so the log is compacted."""


@dataclass(frozen=True)
class TopicNames:
    """Resolves a :class:`Topic` to its full name under one prefix."""

    prefix: str

    def __call__(self, topic: Topic) -> str:
        """Return the full name of ``topic``."""
        return f"{self.prefix}{topic.value}"


def create_topics(
    settings: KafkaSettings,
    partitions: int = 6,
    replication_factor: int = 1,
    timeout_s: float = 30.0,
) -> list[str]:
    """Create every pipeline topic that does not exist yet; return the names created."""
    names = TopicNames(settings.topic_prefix)
    admin = AdminClient(settings.client_config())
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    wanted = [
        _new_topic(names(topic), topic, partitions, replication_factor)
        for topic in Topic
        if names(topic) not in existing
    ]
    if not wanted:
        return []
    futures = admin.create_topics(wanted, operation_timeout=timeout_s)
    for future in futures.values():
        future.result(timeout=timeout_s)
    return sorted(futures)


def _new_topic(name: str, topic: Topic, partitions: int, replication_factor: int) -> NewTopic:
    """Describe one topic; a changelog gets one partition (one writer) and compaction.

    The dead-letter topic takes records up to :data:`DEAD_LETTER_LIMIT_BYTES`.
    """
    if topic in COMPACTED:
        return NewTopic(
            name,
            num_partitions=1,
            replication_factor=replication_factor,
            config={"cleanup.policy": "compact"},
        )
    config = {}
    if topic is Topic.DEAD_LETTERS:
        config["max.message.bytes"] = str(DEAD_LETTER_LIMIT_BYTES + BATCH_OVERHEAD_BYTES)
    return NewTopic(
        name, num_partitions=partitions, replication_factor=replication_factor, config=config
    )
