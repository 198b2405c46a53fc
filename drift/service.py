"""The drift processor on Kafka: embeddings.v1 in; drift, alerts and retrain topics out.

Unlike a stage it keeps state across messages (open windows), so it does not commit after
every batch. Each transaction holds its outputs, dead letters, the changed state records
(``drift-state.v1``, compacted) and consumer offsets that go no further than the first
embedding of any open window. A crash therefore loses nothing and repeats nothing: the
restarted processor reads its state, re-reads the embeddings of the open windows, skips
those its state says were already judged, and carries on. It runs as a single instance
(one consumer sees every partition), which one core sustains well above 300 embeddings a
second (``bench/drift_throughput.py``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from confluent_kafka import Consumer, Message, Producer, TopicPartition

from drift.metrics import DriftMetrics
from drift.monitor import DriftMonitor, Embedded
from drift.reference import ReferenceStore
from drift.settings import DriftSettings
from schemas.events import DriftReportEvent, DriftStateRecord, EmbeddingEvent, RetrainRequestEvent
from streams.codec import TRACE_ID, decode, encode, headers_dict
from streams.config import KafkaSettings
from streams.dead_letters import DeadLetterBudget, dead_letter
from streams.errors import InvalidInput
from streams.exactly_once import (
    commit_with_offsets,
    fenced_producer,
    transactional_consumer,
    usable,
)
from streams.lag import LagProbe
from streams.metrics import StageMetrics
from streams.reader import read_to_end
from streams.runner import RunnerSettings
from streams.stage import Output
from streams.topics import Topic, TopicNames

log = logging.getLogger(__name__)
NAME = "drift"


class DriftService:
    """Runs a :class:`DriftMonitor` against Kafka until told to stop."""

    name = NAME

    def __init__(
        self,
        settings: DriftSettings,
        kafka: KafkaSettings,
        runner: RunnerSettings,
        metrics: StageMetrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._kafka = kafka
        self._runner = runner
        self._metrics = metrics
        self._drift_metrics = DriftMetrics(metrics.registry)
        self._clock = clock
        self._topics = TopicNames(kafka.topic_prefix)
        self._group_id = f"{kafka.topic_prefix}{NAME}"
        self._monitor = DriftMonitor(settings, ReferenceStore(settings.reference_dir), clock)
        self._budget = DeadLetterBudget(
            runner.dlq_window, runner.dlq_max_ratio, runner.dlq_min_inputs
        )
        self._lag = LagProbe(metrics)
        self._accepted = 0  # inputs taken since the last commit, for the dead-letter budget
        self._next_offsets: dict[int, int] = {}
        self._committed: dict[int, int] = {}
        self._last_commit = clock()

    def run(self, stop: threading.Event) -> None:
        """Judge windows until ``stop`` is set; what was consumed is committed or replayed."""
        # Fence a crashed predecessor first, so its open transaction cannot hide state.
        producer = fenced_producer(self._kafka, self._group_id, self._runner)
        self._monitor.restore(self._load_states())
        consumer = transactional_consumer(self._kafka, self._group_id, self._runner)
        try:
            consumer.subscribe([self._topics(Topic.EMBEDDINGS)])
            self._metrics.set_ready(True)
            log.info("drift processor consuming %s", Topic.EMBEDDINGS.value)
            while not stop.is_set():
                messages = consumer.consume(self._runner.max_batch, self._runner.max_wait_s)
                self._metrics.heartbeat()
                self._lag.sample(consumer)
                self._step([m for m in messages if usable(m)], consumer, producer)
        finally:
            self._metrics.set_ready(False)
            consumer.close()
            log.info("drift processor stopped")

    def _load_states(self) -> list[DriftStateRecord]:
        topic = self._topics(Topic.DRIFT_STATE)
        latest: dict[str, DriftStateRecord] = {}
        for received in read_to_end(
            self._kafka, topic, DriftStateRecord, self._runner.kafka_timeout_s
        ):
            latest[received.event.key] = received.event
        log.info("restored drift state for %s", sorted(latest) or "no model version")
        return list(latest.values())

    def _step(self, messages: Sequence[Message], consumer: Consumer, producer: Producer) -> None:
        outputs: list[tuple[Output, str | None]] = []
        rejected: list[tuple[Message, InvalidInput]] = []
        if messages:
            self._metrics.consumed(len(messages))
        started = time.perf_counter()
        for message in messages:
            partition, offset = message.partition() or 0, message.offset() or 0
            self._next_offsets[partition] = max(self._next_offsets.get(partition, 0), offset + 1)
            try:
                event = decode(message.value(), message.headers(), EmbeddingEvent)
                item = Embedded(event, _timestamp(message, self._clock), partition, offset)
                closed = self._monitor.add(item)
            except InvalidInput as error:
                rejected.append((message, error))
                continue
            if closed:  # one message in a window's worth: parse its trace only then
                trace_id = headers_dict(message.headers()).get(TRACE_ID)
                outputs += [(output, trace_id) for output in closed]
        self._accepted += len(messages) - len(rejected)
        outputs += [(output, None) for output in self._monitor.poll()]
        if messages:
            self._metrics.batch(len(messages), time.perf_counter() - started)
        offsets = self._commit_offsets()
        due = self._clock() - self._last_commit >= self._settings.commit_interval_s
        if outputs or rejected or (due and offsets != self._committed):
            self._commit(outputs, rejected, offsets, consumer, producer)

    def _commit_offsets(self) -> dict[int, int]:
        """Per partition, how far the consumer may commit: not past any open window."""
        pending = self._monitor.pending_offsets()
        return {
            partition: min(next_offset, pending.get(partition, next_offset))
            for partition, next_offset in self._next_offsets.items()
        }

    def _commit(
        self,
        outputs: list[tuple[Output, str | None]],
        rejected: list[tuple[Message, InvalidInput]],
        offsets: dict[int, int],
        consumer: Consumer,
        producer: Producer,
    ) -> None:
        self._budget.check(self._accepted, len(rejected))
        states = self._monitor.take_changed()
        topic = self._topics(Topic.EMBEDDINGS)
        records = [
            (
                self._topics(output.topic),
                encode(output.event, getattr(output.event, "key"), trace_id),  # noqa: B009
            )
            for output, trace_id in outputs
        ]
        records += [
            (self._topics(Topic.DEAD_LETTERS), dead_letter(NAME, message, error))
            for message, error in rejected
        ]
        records += [(self._topics(Topic.DRIFT_STATE), encode(state, state.key)) for state in states]
        # On failure the transaction is aborted, but the monitor has moved on in memory; only
        # a restart (replaying from the committed offsets and state) makes memory and Kafka
        # agree again, so the error propagates.
        commit_with_offsets(
            producer,
            consumer,
            records,
            [TopicPartition(topic, p, o) for p, o in sorted(offsets.items())],
            self._runner.kafka_timeout_s,
            self._runner.max_attempts,
        )
        self._committed, self._last_commit = offsets, self._clock()
        self._budget.record(self._accepted, len(rejected))
        self._accepted = 0
        self._count(outputs, rejected)

    def _count(
        self, outputs: list[tuple[Output, str | None]], rejected: list[tuple[Message, InvalidInput]]
    ) -> None:
        for output, _ in outputs:
            self._metrics.produced(output.topic.value)
            if isinstance(output.event, DriftReportEvent):
                self._drift_metrics.report(output.event)
            elif isinstance(output.event, RetrainRequestEvent):
                self._drift_metrics.retrain_requested(output.event)
        for _, error in rejected:
            log.warning("dead-lettered: %s", error)
            self._metrics.dead_lettered(error.reason.value)


def _timestamp(message: Message, clock: Callable[[], float]) -> float:
    """The message's timestamp in seconds (event time), or now if the broker gave none."""
    kind, milliseconds = message.timestamp()
    return milliseconds / 1000.0 if kind and milliseconds > 0 else clock()
