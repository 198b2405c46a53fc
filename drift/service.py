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
from collections.abc import Callable

from confluent_kafka import Message, TopicPartition

from deeptrust.drift.metrics import DriftMetrics
from deeptrust.drift.monitor import DriftMonitor, Embedded
from deeptrust.drift.reference import ReferenceStore
from deeptrust.drift.settings import DriftSettings
from deeptrust.schemas.events import (
    DriftReportEvent,
    DriftStateRecord,
    EmbeddingEvent,
    RetrainRequestEvent,
)
from deeptrust.streams.codec import TRACE_ID, decode, encode, headers_dict
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.dead_letters import dead_letter
from deeptrust.streams.errors import InvalidInput
from deeptrust.streams.metrics import StageMetrics
from deeptrust.streams.reader import read_to_end
from deeptrust.streams.runner import RunnerSettings
from deeptrust.streams.service import Commit, KafkaClients, ServiceRuntime, Session, Strategy
from deeptrust.streams.stage import Output
from deeptrust.streams.topics import Topic, TopicNames

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
        clients: KafkaClients | None = None,
    ) -> None:
        runner = runner.singleton()  # one drift processor at most: a second must collide
        self._runtime = ServiceRuntime(
            DriftStrategy(settings, kafka, runner, metrics, clock),
            kafka,
            runner,
            metrics,
            runner.max_batch,
            runner.max_wait_s,
            clients=clients,
        )

    def run(self, stop: threading.Event) -> None:
        """Judge windows until ``stop`` is set; what was consumed is committed or replayed."""
        self._runtime.run(stop)


class DriftStrategy(Strategy):
    """Windows over embeddings; commits go no further than the oldest open window."""

    name = NAME
    topics = (Topic.EMBEDDINGS,)

    def __init__(
        self,
        settings: DriftSettings,
        kafka: KafkaSettings,
        runner: RunnerSettings,
        metrics: StageMetrics,
        clock: Callable[[], float],
    ) -> None:
        self._settings = settings
        self._kafka = kafka
        self._runner = runner
        self._metrics = metrics
        self._drift_metrics = DriftMetrics(metrics.registry)
        self._clock = clock
        self._topics = TopicNames(kafka.topic_prefix)
        self._start_fresh()

    def _start_fresh(self) -> None:
        self._monitor = DriftMonitor(
            self._settings, ReferenceStore(self._settings.reference_dir), self._clock
        )
        self._budget = self._runner.budget()
        self._outputs: list[tuple[Output, str | None]] = []
        self._rejected: list[tuple[Message, InvalidInput]] = []
        """Reports and dead letters not yet in a transaction (see ``publish_interval_s``)."""
        self._accepted: dict[int, int] = {}
        """Inputs taken per partition since the last commit, for the dead-letter budget."""
        self._next_offsets: dict[int, int] = {}
        self._committed: dict[int, int] = {}
        self._last_commit = self._clock()

    def start(self, session: Session) -> None:
        """Rebuild the windows from the committed state; the offsets replay the rest."""
        self._start_fresh()
        self._monitor.restore(self._load_states())

    def _load_states(self) -> list[DriftStateRecord]:
        topic = self._topics(Topic.DRIFT_STATE)
        latest: dict[str, DriftStateRecord] = {}
        for received in read_to_end(
            self._kafka, topic, DriftStateRecord, self._runner.kafka_timeout_s
        ):
            latest[received.event.key] = received.event
        log.info("restored drift state for %s", sorted(latest) or "no model version")
        return list(latest.values())

    def handle(self, messages: list[Message], session: Session) -> Commit | None:
        """Add the embeddings to their windows; commit what closed, and state, now and then.

        What closed is published at most every ``publish_interval_s``, offsets and state
        at least every ``commit_interval_s``; until then it is kept here, and fresh clients
        (``start``) drop it with the monitor, whose restored state judges those windows again.
        """
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
                self._rejected.append((message, error))
                continue
            self._accepted[partition] = self._accepted.get(partition, 0) + 1
            if closed:  # one message in a window's worth: parse its trace only then
                trace_id = headers_dict(message.headers()).get(TRACE_ID)
                self._outputs += [(output, trace_id) for output in closed]
        self._outputs += [(output, None) for output in self._monitor.poll()]
        if messages:
            self._metrics.batch(len(messages), time.perf_counter() - started)
        offsets = self._commit_offsets()
        since = self._clock() - self._last_commit
        pending = bool(self._outputs or self._rejected)
        publish = pending and since >= self._settings.publish_interval_s
        if publish or (since >= self._settings.commit_interval_s and offsets != self._committed):
            return self._commit(offsets)
        return None

    def _commit_offsets(self) -> dict[int, int]:
        """Per partition, how far the consumer may commit: not past any open window."""
        pending = self._monitor.pending_offsets()
        return {
            partition: min(next_offset, pending.get(partition, next_offset))
            for partition, next_offset in self._next_offsets.items()
        }

    def _commit(self, offsets: dict[int, int]) -> Commit:
        """Everything pending, the changed state and ``offsets``, as one transaction."""
        outputs, rejected = self._outputs, self._rejected
        outcomes = {p: [False] * n for p, n in self._accepted.items()}
        for message, _ in rejected:
            outcomes.setdefault(message.partition() or 0, []).append(True)
        tallies = self._budget.after(outcomes)
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
        # On failure the transaction is aborted, but the monitor has moved on in memory; the
        # runtime re-creates the clients and ``start`` rebuilds the monitor from the committed
        # state, so memory and Kafka agree again.

        def committed() -> None:
            self._committed, self._last_commit = offsets, self._clock()
            self._budget.record(tallies)
            self._accepted = {}
            self._outputs, self._rejected = [], []
            self._count(outputs, rejected)

        return Commit(
            records,
            [TopicPartition(topic, p, o) for p, o in sorted(offsets.items())],
            committed,
        )

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
