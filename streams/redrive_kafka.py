"""Read the dead letters, and send chosen ones back exactly once per letter.

Each batch of redriven messages and the records that mark their letters redriven
(``dlq-redriven.v1``, compacted, keyed by dead-letter id) commit in one transaction: a
message is back on its topic if and only if its letter is marked. The producer's
transactional id is one per topic set, so a redrive first fences any other (a crashed or a
concurrent one) and aborts what it left open, and only then reads the marks: what it
decides from can no longer change under it (read before fencing, a concurrent redrive could
still commit marks it did not see). A crash mid-redrive therefore neither loses a
letter (it is unmarked, the next redrive sends it) nor repeats one (it is marked).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from confluent_kafka import Producer

from deeptrust.schemas.events import DeadLetterEvent, DeadLetterRedrive
from deeptrust.streams.codec import EVENT_ID
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.exactly_once import (
    Identity,
    abort_transaction,
    commit_transaction,
    fenced_producer,
)
from deeptrust.streams.reader import read_to_end
from deeptrust.streams.redrive import (
    Decision,
    Letter,
    LetterFilter,
    Verdict,
    original_message,
    plan,
    redrive_record,
)
from deeptrust.streams.topics import Topic, TopicNames


class MissingTopic(RuntimeError):
    """The marks topic does not exist: without it nothing could be redriven exactly once."""


@dataclass
class RedriveSettings:
    """How the redrive's transactional producer is named and how long it waits."""

    instance_id: str = "operator"
    kafka_timeout_s: float = 60.0
    transaction_timeout_ms: int = 60_000
    session_timeout_ms: int = 10_000
    max_attempts: int = 5
    transaction_size: int = 500

    @property
    def identity(self) -> Identity:
        """One fixed id per topic set: each redrive fences the one before it."""
        return Identity(self.instance_id, stable=True)


def read_letters(kafka: KafkaSettings, wanted: LetterFilter, timeout_s: float) -> list[Letter]:
    """Every committed dead letter, read from ``wanted.since`` on (all when unset)."""
    topic = TopicNames(kafka.topic_prefix)(Topic.DEAD_LETTERS)
    return [
        Letter(
            id=received.headers.get(EVENT_ID, ""), event=received.event, headers=received.headers
        )
        for received in read_to_end(kafka, topic, DeadLetterEvent, timeout_s, wanted.since_ms)
    ]


def read_redriven(kafka: KafkaSettings, timeout_s: float) -> dict[str, DeadLetterRedrive]:
    """The letters already sent back, by id."""
    topic = TopicNames(kafka.topic_prefix)(Topic.REDRIVEN)
    records = read_to_end(kafka, topic, DeadLetterRedrive, timeout_s)
    return {r.event.dead_letter_id: r.event for r in records}


def redrive_producer(kafka: KafkaSettings, settings: RedriveSettings) -> Producer:
    """The one transactional producer of this topic set's redrives, its predecessors fenced."""
    return fenced_producer(kafka, f"{kafka.topic_prefix}dlq-redrive", settings)


def redrive(
    kafka: KafkaSettings,
    letters: Sequence[Letter],
    settings: RedriveSettings,
    limit: int | None = None,
    dry_run: bool = False,
) -> list[Decision]:
    """Decide each of ``letters`` and, unless ``dry_run``, send back those to redrive.

    A dry run fences nothing and writes nothing: it only reads the marks.
    """
    marks = TopicNames(kafka.topic_prefix)(Topic.REDRIVEN)
    producer = None
    if not dry_run:
        producer = redrive_producer(kafka, settings)
        found = producer.list_topics(marks, settings.kafka_timeout_s).topics.get(marks)
        if found is None or found.error is not None:
            raise MissingTopic(f"{marks} does not exist; `deeptrust topics` creates it")
    decisions = plan(
        letters,
        read_redriven(kafka, settings.kafka_timeout_s),
        TopicNames(kafka.topic_prefix),
        limit,
    )
    if producer is not None:
        chosen = [d.letter for d in decisions if d.verdict is Verdict.REDRIVE]
        for start in range(0, len(chosen), settings.transaction_size):
            _send(producer, chosen[start : start + settings.transaction_size], marks, settings)
    return decisions


def _send(
    producer: Producer, letters: Sequence[Letter], marks: str, settings: RedriveSettings
) -> None:
    """Produce ``letters``' original messages and their marks in one transaction."""
    producer.begin_transaction()
    try:
        now = datetime.now(UTC)
        for letter in letters:
            out = original_message(letter)
            producer.produce(
                out.topic,
                key=out.key,
                value=out.value,
                headers=out.headers,
                partition=out.partition,
            )
            mark = redrive_record(letter, now)
            producer.produce(marks, key=mark.key, value=mark.value, headers=mark.headers)
        commit_transaction(producer, settings.kafka_timeout_s, settings.max_attempts)
    except BaseException:
        abort_transaction(producer, settings.kafka_timeout_s)
        raise
