"""The one service loop every long-running Kafka service runs on.

A stage, the drift processor, the alert notifier and the retrain consumer differ in what
they do with the messages they read and what they commit, not in how they talk to Kafka.
:class:`ServiceRuntime` owns the clients (a read_committed consumer in a static group and a
transactional producer that fences its predecessor), readiness, heartbeat, lag, the
transaction, shutdown and recovery; a :class:`Strategy` says what to do with each batch and
returns a :class:`Commit` (records to produce, offsets to commit) for one transaction.

Recovery happens in process. A fenced producer, a transaction the broker aborted, a broker
that is gone for minutes: the runtime drops the work in hand, re-creates its clients (same
transactional id, same static member id, so it takes its partitions straight back) and the
strategy resumes from the committed offsets and state, as Kafka Streams does with a migrated
task. ``/readyz`` says not ready while the service is cut off, and
``deeptrust_recoveries_total{cause}`` counts each recovery. Only configuration and permission
errors stop the process (:mod:`deeptrust.streams.kafka_errors`).

A strategy may read the next batch while it works on the one in hand
(:meth:`Session.read_ahead`), to prepare it in other threads; the runtime hands that batch
to the next ``handle``. Each batch keeps the revocation count from before it was consumed,
so a rebalance at any point after voids the commit of every batch read before it.

Three things are never tried again on the same clients: a transactional call that hangs
past its timeout (:mod:`deeptrust.streams.bounded`), a transaction that timed out or lost
its connection (the coordinator the clients know may be gone), and a batch whose partitions
were revoked before it committed (the consumer reads them again from the committed offsets,
or another member does: committing it would duplicate its outputs).
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from typing import Any, ClassVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from deeptrust.streams.bounded import StuckCall, within
from deeptrust.streams.codec import Encoded
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.exactly_once import (
    Instance,
    commit_with_offsets,
    consumer_config,
    init_transactions,
    producer_config,
)
from deeptrust.streams.kafka_errors import (
    CUT_OFF_CODES,
    Action,
    ServiceStopped,
    action_for,
    describe,
    error_of,
    why_stopped,
)
from deeptrust.streams.lag import LagProbe
from deeptrust.streams.metrics import StageMetrics
from deeptrust.streams.retry import RetryPolicy
from deeptrust.streams.topics import Topic, TopicNames

log = logging.getLogger(__name__)

RECONNECT = RetryPolicy(initial_s=0.5, max_s=10.0)
"""Waits between attempts to get working clients back: soon at first, then every 10 s."""
COMMIT_RETRY = RetryPolicy(initial_s=0.5, max_s=5.0, max_attempts=5)
"""Retriable transaction errors (a coordinator moving, a timeout) before re-creating."""
KEEP_ALIVE_POLL_S = 1.0
"""How often a paused consumer polls while long work runs: its group membership lives on it."""
CONNECTION_PROBE_S = 1.0
"""How often a cut-off service asks the cluster for metadata to learn it is back."""
HEALTH_PROBE_S = 5.0
"""How often a service in touch asks for metadata anyway: an idle one learns it is cut off."""
HEALTH_PROBE_TIMEOUT_S = 2.0
"""How long that request may take before the service counts itself cut off."""
RECREATE_CODES = frozenset({KafkaError._TIMED_OUT, KafkaError._TRANSPORT})
"""Transaction errors after which the clients are re-created rather than tried again: the
coordinator they know may be gone, and librdkafka may not look for the new one in time."""


class Interrupted(Exception):
    """Stop was requested while the strategy waited: the work in hand is not committed."""


class Reconnected(KafkaException):
    """The cluster answers again after an outage that these clients only rode out."""

    def __init__(self) -> None:
        super().__init__(
            KafkaError(
                KafkaError._TRANSPORT,
                "in touch with the cluster again after an outage; fresh clients resolve what "
                "the old ones left open",
                fatal=True,
            )
        )


class Revoked(KafkaException):
    """Partitions were revoked while a batch was in hand: it is dropped, not committed."""

    def __init__(self) -> None:
        super().__init__(
            KafkaError(
                KafkaError.REBALANCE_IN_PROGRESS,
                "partitions were revoked before the batch committed; resuming from the "
                "committed offsets",
                fatal=True,
            )
        )


@dataclass(frozen=True)
class Batch:
    """Messages consumed together, and how many revocations had been seen before."""

    messages: list[Message]
    revocations: int


@dataclass(frozen=True)
class Commit:
    """One transaction: records to produce and the input offsets they complete."""

    records: Sequence[tuple[str, Encoded]]
    offsets: Sequence[TopicPartition]
    committed: Callable[[], None] = field(default=lambda: None)
    """Called once the transaction is committed (counting, forgetting what it covered)."""


class Strategy(ABC):
    """What a service does with its input; the runtime does everything Kafka."""

    name: str
    topics: Sequence[Topic]
    max_batch: int | None = None
    """Messages per step; ``None`` takes the runner settings' ``max_batch``."""
    consumer_overrides: ClassVar[dict[str, Any]] = {}

    def setup(self) -> None:  # noqa: B027 - optional hook
        """Load models and open resources, once, before the first clients exist."""

    def start(self, session: Session) -> None:  # noqa: B027 - optional hook
        """Begin on fresh clients: forget in-memory work, restore state from Kafka."""

    def assigned(self, session: Session, partitions: list[TopicPartition]) -> None:  # noqa: B027
        """Partitions were assigned to this instance."""

    def revoked(self, session: Session, partitions: list[TopicPartition]) -> None:  # noqa: B027
        """Partitions were taken away: drop state kept for them."""

    @abstractmethod
    def handle(self, messages: list[Message], session: Session) -> Commit | None:
        """Process one poll's messages (maybe none); return what to commit, if anything."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what ``setup`` acquired."""


class KafkaClients:
    """Makes the runtime's clients; tests of its failure paths inject their own."""

    def consumer(self, config: dict[str, Any]) -> Consumer:
        """A consumer with ``config``."""
        return Consumer(config)

    def producer(self, config: dict[str, Any]) -> Producer:
        """A producer with ``config``."""
        return Producer(config)


class ClientErrors:
    """What librdkafka reports through ``error_cb``, kept for the loop to act on.

    Losing every broker, and failed authentication, are client-level errors: they never come
    back from ``consume`` as messages, only through this callback, which librdkafka calls
    from inside the client's own ``poll``/``consume`` on the loop's thread.
    """

    def __init__(self) -> None:
        self.cut_off: str | None = None
        self.stopping: KafkaError | None = None

    def __call__(self, error: KafkaError) -> None:
        """Note one error (the ``error_cb`` of both clients)."""
        if action_for(error) is Action.STOP or error.fatal():
            self.stopping = self.stopping or error
        elif error.code() in CUT_OFF_CODES:
            self.cut_off = str(error)
        else:
            log.warning("kafka client: %s", error)

    def raise_if_stopping(self, producer: Producer) -> None:
        """Serve the producer's queued callbacks; raise the error that stops the service.

        A call that timed out (``init_transactions`` against a cluster that refuses these
        credentials) says only "timed out": the reason sits in the callback queue.
        """
        producer.poll(0)
        if self.stopping is not None:
            raise KafkaException(self.stopping)


class Session:
    """One set of live clients, and what a strategy may ask of them while it works."""

    def __init__(
        self,
        consumer: Consumer,
        producer: Producer,
        stop: threading.Event,
        metrics: StageMetrics,
        strategy: Strategy,
        kafka_timeout_s: float,
        errors: ClientErrors | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_batch: int = 1,
        lag: LagProbe | None = None,
    ) -> None:
        self.consumer = consumer
        self._errors = errors or ClientErrors()
        self.producer = producer
        self._stop = stop
        self._metrics = metrics
        self._strategy = strategy
        self._kafka_timeout_s = kafka_timeout_s
        self._clock = clock
        self._busy = False
        self._cut_off = False
        self._unreachable = False
        """Whether a metadata request failed while cut off: no broker answered at all."""
        self._last_probe = clock()
        self._revocations = 0
        self._revocations_at_batch = 0
        self._max_batch = max_batch
        self._lag = lag
        self._ahead: Batch | None = None

    # -- rebalancing -------------------------------------------------------------------

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Take the assignment; while long work runs, keep the new partitions paused."""
        consumer.assign(partitions)
        self._strategy.assigned(self, partitions)
        if self._busy and partitions:
            consumer.pause(partitions)

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Let the strategy drop state for partitions that are no longer ours."""
        if partitions:
            self._revocations += 1
        self._strategy.revoked(self, partitions)

    # -- what a strategy may ask -------------------------------------------------------

    def committed(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        """The group's committed offsets (with their metadata) for ``partitions``."""
        found: list[TopicPartition] = self.consumer.committed(
            partitions, timeout=self._kafka_timeout_s
        )
        return found

    def rewind(self, message: Message) -> None:
        """Read ``message`` again on the next poll."""
        self.consumer.seek(
            TopicPartition(message.topic() or "", message.partition() or 0, message.offset() or 0)
        )

    def wait(self, futures: Iterable[Future[Any]]) -> None:
        """Keep the group membership alive while work in other threads runs to its end.

        Work done within :data:`KEEP_ALIVE_POLL_S` is only waited for: pausing a partition
        makes librdkafka throw away the messages it has prefetched for it, so pausing for
        every batch's prepare threads meant fetching every next batch again, and nothing
        was ever read ahead. Past that, the consumer polls with its partitions paused, so
        it takes nothing new; a message a poll returns anyway (from a partition assigned
        meanwhile, which starts unpaused) is put back: its partition is rewound to it and
        paused. Stop is not checked: the work in hand is finished first.
        """
        pending = set(futures)
        if not _still_pending(pending, KEEP_ALIVE_POLL_S):
            return
        # Block on the futures, not in the poll: the batch goes on the moment they are done.
        self._while_paused(
            lambda: bool(pending) and _still_pending(pending, KEEP_ALIVE_POLL_S), poll_s=0.0
        )

    def read_ahead(self) -> list[Message]:
        """Consume the next batch now, without waiting; the next ``handle`` gets it.

        For a strategy that prepares the next batch while it processes this one. Only what
        the client has already fetched is taken, so an idle topic costs no wait. Called
        again before that batch is handed over, it returns the same messages.
        """
        if self._ahead is None:
            self._ahead = self.read_batch(0.0)
        return self._ahead.messages

    def pause_for(self, seconds: float) -> None:
        """Back off for ``seconds`` without leaving the group; raise if stop is requested."""
        deadline = self._clock() + seconds
        self._while_paused(lambda: self._clock() < deadline and not self._stop.is_set())
        if self._stop.is_set():
            raise Interrupted

    def _while_paused(self, waiting: Callable[[], bool], poll_s: float = KEEP_ALIVE_POLL_S) -> None:
        """Poll with the partitions paused (every ``poll_s``) while ``waiting()`` holds."""
        self._busy = True
        self.consumer.pause(self.consumer.assignment())
        try:
            while waiting():
                message = self.consumer.poll(poll_s)
                self._metrics.heartbeat()
                if message is not None and self.usable(message):
                    self.rewind(message)
                    self.consumer.pause(
                        [TopicPartition(message.topic() or "", message.partition() or 0)]
                    )
        finally:
            self._busy = False
            self.consumer.resume(self.consumer.assignment())

    # -- used by the runtime -----------------------------------------------------------

    def usable(self, message: Message) -> bool:
        """Tell a message from a consumer error; note when the cluster is out of reach."""
        error = message.error()
        if error is None:
            return True
        if error.fatal() or error.code() == KafkaError._FATAL or action_for(error) is Action.STOP:
            raise KafkaException(error)
        if error.code() in CUT_OFF_CODES:
            self._mark_cut_off(str(error))
        else:
            log.warning("consumer error on %s: %s", message.topic(), error)
        return False

    def next_batch(self, wait_s: float) -> Batch:
        """The batch read ahead, if any, else one consumed now (waiting up to ``wait_s``).

        From here on it is the batch in hand: a revocation since it was consumed voids its
        commit.
        """
        batch, self._ahead = self._ahead or self.read_batch(wait_s), None
        self._revocations_at_batch = batch.revocations
        return batch

    def read_batch(self, wait_s: float) -> Batch:
        """Consume up to ``max_batch`` messages; act on errors, keep the usable ones."""
        revocations = self._revocations
        messages = self.consumer.consume(self._max_batch, wait_s)
        self._metrics.heartbeat()
        self.check_connection()
        usable = [message for message in messages if self.usable(message)]
        if self._lag is not None:
            self._lag.sample(self.consumer)
        return Batch(usable, revocations)

    def commit(self, commit: Commit) -> None:
        """Run ``commit`` as one transaction; retriable errors are retried, others raise.

        Raises :class:`Revoked` instead if partitions were revoked since the batch was
        consumed, and re-raises timeouts and transport errors for the clients to be
        re-created.
        """
        for attempt in range(1, (COMMIT_RETRY.max_attempts or 1) + 1):
            if self._revocations != self._revocations_at_batch:
                raise Revoked
            try:
                commit_with_offsets(
                    self.producer,
                    self.consumer,
                    commit.records,
                    list(commit.offsets),
                    self._kafka_timeout_s,
                    COMMIT_RETRY.max_attempts or 1,
                )
                break
            except KafkaException as exception:
                error = error_of(exception)
                if error is None or action_for(error) is not Action.RETRY:
                    raise
                self._mark_cut_off(f"transaction failed: {error}")
                if error.code() in RECREATE_CODES or COMMIT_RETRY.exhausted(attempt):
                    raise
                self._metrics.failed_batch()
                log.warning("transaction attempt %d: %s; retrying", attempt, error)
                self.pause_for(COMMIT_RETRY.delay_s(attempt))
        self._back_in_touch()
        if not self._unreachable:  # the cluster just answered: no health probe is due
            self._last_probe = self._clock()
        commit.committed()

    def check_connection(self) -> None:
        """Act on client errors; ask for metadata now and then, every second while cut off.

        An error that stops the service is raised here. A metadata request that fails marks
        the service cut off (an idle consumer may hear of no error otherwise). It is ready
        again once a transaction goes through or the cluster answers a metadata request; if
        no broker answered one meanwhile, its clients are re-created first
        (:class:`Reconnected`): clients that sat out an outage without a transaction failing
        can be left with their last transaction unresolved on the broker, and their consumer
        waiting on the group's committed offsets (KIP-447's stable offsets) that it holds
        pending. A new producer with the same transactional id resolves it.
        """
        self._errors.raise_if_stopping(self.producer)
        if self._errors.cut_off is not None:
            self._mark_cut_off(self._errors.cut_off)
            self._errors.cut_off = None  # and ask whether any broker answers, below
        interval = CONNECTION_PROBE_S if self._cut_off else HEALTH_PROBE_S
        if self._clock() - self._last_probe < interval:
            return
        self._last_probe = self._clock()
        timeout = CONNECTION_PROBE_S if self._cut_off else HEALTH_PROBE_TIMEOUT_S
        try:
            answered = bool(self.consumer.list_topics(timeout=timeout).brokers)
        except KafkaException as exception:
            self._mark_cut_off(f"no metadata: {exception}")
            self._unreachable = True
            return
        if answered and self._unreachable:
            log.info("%s: in touch with the cluster again", self._strategy.name)
            raise Reconnected
        if answered:
            self._back_in_touch()

    def _mark_cut_off(self, why: str) -> None:
        if not self._cut_off:
            log.warning("%s: cut off from the cluster (%s)", self._strategy.name, why)
            self._last_probe = float("-inf")  # ask at once whether it is back
        self._cut_off = True
        self._metrics.set_ready(False)

    def _back_in_touch(self) -> None:
        if self._cut_off:
            log.info("%s: in touch with the cluster again", self._strategy.name)
        self._cut_off = False
        self._unreachable = False
        self._metrics.set_ready(True)


def _still_pending(pending: set[Future[Any]], timeout_s: float = 0.0) -> bool:
    """Whether any of ``pending`` is unfinished after up to ``timeout_s``; drops the done."""
    done, not_done = wait(pending, timeout=timeout_s)
    pending.difference_update(done)
    return bool(not_done)


class ServiceRuntime:
    """Runs one :class:`Strategy` against Kafka until told to stop, surviving the cluster."""

    def __init__(
        self,
        strategy: Strategy,
        kafka: KafkaSettings,
        instance: Instance,
        metrics: StageMetrics,
        max_batch: int,
        max_wait_s: float,
        group_id: str | None = None,
        clients: KafkaClients | None = None,
        reconnect: RetryPolicy = RECONNECT,
    ) -> None:
        self._strategy = strategy
        self._kafka = kafka
        self._instance = instance
        self._metrics = metrics
        self._max_batch = strategy.max_batch or max_batch
        self._max_wait_s = max_wait_s
        self._group_id = group_id or f"{kafka.topic_prefix}{strategy.name}"
        self._clients = clients or KafkaClients()
        self._reconnect = reconnect
        self._topics = TopicNames(kafka.topic_prefix)
        self._lag = LagProbe(metrics)

    @property
    def group_id(self) -> str:
        """The consumer group, and the stem of the transactional id."""
        return self._group_id

    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set; re-create the clients whenever they are lost."""
        self._strategy.setup()
        failures = 0
        try:
            while not stop.is_set():
                try:
                    committed_any = self._serve(stop)
                    failures = 0 if committed_any else failures
                    continue
                except KafkaException as exception:
                    error = error_of(exception)
                    if error is None or action_for(error) is Action.STOP:
                        why = "unknown error" if error is None else why_stopped(error)
                        raise ServiceStopped(
                            f"{self._strategy.name}: {exception} ({why})"
                        ) from exception
                    if isinstance(exception, StuckCall):
                        self._metrics.recovered("stuck_call")
                    elif isinstance(exception, Reconnected):
                        self._metrics.recovered("reconnected")
                    else:
                        self._metrics.recovered(describe(error))
                failures += 1
                delay = self._reconnect.delay_s(failures)
                log.warning(
                    "%s: %s; re-creating the clients in %.1fs and resuming from the "
                    "committed offsets",
                    *(self._strategy.name, error, delay),
                )
                # Waited out of the handler: the exception's frames hold the old clients.
                stop.wait(delay)
        finally:
            self._strategy.close()
            log.info("%s stopped", self._strategy.name)

    def _serve(self, stop: threading.Event) -> bool:
        """One life of the clients: until stop (returns) or a Kafka error (raises).

        Returns whether anything was committed. The clients are closed at the end of their
        life, so none lingers dialling the cluster (or, a producer, bumping the epoch its
        successor holds), except a producer that a stuck call is still inside.
        """
        errors = ClientErrors()
        producer = self._clients.producer(
            {**producer_config(self._kafka, self._group_id, self._instance), "error_cb": errors}
        )
        consumer: Consumer | None = None
        abandoned = False
        committed_any = False
        try:
            # Fence a predecessor first: what it left open must not hide the state read next.
            try:
                init_transactions(producer, self._instance.kafka_timeout_s)
            except KafkaException:
                errors.raise_if_stopping(producer)
                raise
            overrides = {**self._strategy.consumer_overrides, "error_cb": errors}
            consumer = self._clients.consumer(
                consumer_config(self._kafka, self._group_id, self._instance, **overrides)
            )
            session = Session(
                consumer,
                producer,
                stop,
                self._metrics,
                self._strategy,
                self._instance.kafka_timeout_s,
                errors,
                max_batch=self._max_batch,
                lag=self._lag,
            )
            consumer.subscribe(
                [self._topics(topic) for topic in self._strategy.topics],
                on_assign=session.on_assign,
                on_revoke=session.on_revoke,
            )
            self._strategy.start(session)
            self._metrics.set_ready(True)
            topics = ", ".join(topic.value for topic in self._strategy.topics)
            log.info("stage %s consuming %s", self._strategy.name, topics)
            while not stop.is_set():
                batch = session.next_batch(self._max_wait_s)
                commit = self._strategy.handle(batch.messages, session)
                if commit is not None:
                    session.commit(commit)
                    committed_any = True
        except Interrupted:
            log.info("%s: stopping with the batch in hand uncommitted", self._strategy.name)
        except StuckCall:
            abandoned = True
            raise
        finally:
            self._metrics.set_ready(False)
            timeout_s = self._instance.kafka_timeout_s
            if consumer is not None:
                _close(timeout_s, "consumer", consumer.close)
            if not abandoned:
                _close(timeout_s, "producer", producer.close)
        return committed_any


def _close(timeout_s: float, what: str, close: Callable[[], object]) -> None:
    """Close a client within a deadline: a stuck close must not stall recovery."""
    try:
        within(timeout_s, f"closing the {what}", close)
    except (KafkaException, RuntimeError) as error:
        log.warning("closing the %s: %s", what, error)
