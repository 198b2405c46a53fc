"""A stage on the service runtime: consume → micro-batch → prepare/process → produce → commit.

Each batch is one Kafka transaction holding the stage's outputs, its dead letters and the
consumer offsets; the runtime (:mod:`deeptrust.streams.service`) owns the clients, the transaction
and
recovery. What this module adds is what a batch of model work needs:

- Invalid inputs (:class:`~deeptrust.streams.errors.InvalidInput`) are dead-lettered in the same
  transaction and never retried.
- Any other failure retries the whole batch with backoff, keeping the messages in memory
  and the consumer in its group. After ``max_attempts`` the batch is bisected to find the
  items that fail on their own: those are dead-lettered (``processing_failed``, with the
  exception) and the rest commit, so one poison pill cannot stall its partition. When every
  item fails, the last input that went through is tried as a control: if it fails too, the
  trouble is the stage's (a model server down), nothing is dead-lettered, and the batch is
  retried with backoff capped at ``max_backoff_s`` for as long as it takes.
- With ``prepare_threads`` above 0, the next batch is read ahead and prepared on that many
  threads while this one is in the model (:mod:`deeptrust.streams.prepare`). It is still
  committed after this one, in a transaction of its own, and dropped unprepared-for if the
  partitions move first: the guarantees are those of one batch at a time.
- The dead-letter budget's tallies ride on the committed offsets' metadata, so a stage that
  crash-loops cannot dead-letter the stream a few hundred messages per restart.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Message, TopicPartition
from pydantic import BaseModel, Field, PrivateAttr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from deeptrust.streams.codec import TRACE_ID, Encoded, decode, encode, headers_dict
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.dead_letters import DeadLetterBudget, Tally, dead_letter, size
from deeptrust.streams.errors import InvalidInput, Reason
from deeptrust.streams.exactly_once import Identity, random_instance_id
from deeptrust.streams.metrics import StageMetrics
from deeptrust.streams.prepare import Outcome, Preparer
from deeptrust.streams.retry import RetryPolicy
from deeptrust.streams.service import Commit, KafkaClients, ServiceRuntime, Session, Strategy
from deeptrust.streams.stage import Output, ReportsMetrics, Result, Stage
from deeptrust.streams.topics import (
    DEAD_LETTER_LIMIT_BYTES,
    RECORD_LIMIT_BYTES,
    Topic,
    TopicNames,
)

log = logging.getLogger(__name__)


class RunnerSettings(BaseSettings):
    """How a service batches, retries and identifies itself (``DEEPTRUST_RUNNER_*``)."""

    model_config = SettingsConfigDict(env_prefix="DEEPTRUST_RUNNER_")

    instance_id: str | None = None
    """Stable and unique per replica (a StatefulSet pod's name); unset, a random one."""
    max_batch: int = 32
    max_wait_s: float = 0.5
    max_attempts: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 60.0
    kafka_timeout_s: float = 30.0
    transaction_timeout_ms: int = 60_000
    session_timeout_ms: int = 10_000
    dlq_window: int = 1000
    dlq_max_ratio: float = 0.5
    dlq_min_inputs: int = 100
    dlq_max_consecutive: int = 100
    prepare_threads: int = Field(default=0, ge=0)
    """Threads that prepare the next batch while this one is in the model; 0: inline.

    Inline by default: on two CPUs, where fetch and decode are CPU work (a local store),
    preparing ahead slowed the detect stage on the broker from 26.8 to 20.7 uploads/s (the
    decode threads take cores from the model's). Worth raising where fetches wait on the
    network (S3), which this project could not measure."""
    _random_id: str = PrivateAttr(default_factory=random_instance_id)
    """Drawn once, so every client of this process shares it."""

    @field_validator("instance_id")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        """``DEEPTRUST_RUNNER_INSTANCE_ID=`` means no id, as an unset variable does."""
        return value if value and value.strip() else None

    @property
    def identity(self) -> Identity:
        """The configured id (stable), else this settings object's random one."""
        if self.instance_id is not None:
            return Identity(self.instance_id, stable=True)
        return Identity(self._random_id, stable=False)

    def singleton(self, instance_id: str = "0") -> RunnerSettings:
        """These settings for a service that must never run twice (drift).

        Without a configured id it takes a fixed one rather than a random one: a second copy
        then collides loudly (``FENCED_INSTANCE_ID`` stops it) instead of silently taking
        half the partitions, and the restarted process fences its predecessor before it
        reads the state that predecessor may still be writing.
        """
        if self.instance_id is not None:
            return self
        return self.model_validate(self.model_dump() | {"instance_id": instance_id})

    def batch_retry(self) -> RetryPolicy:
        """The backoff between attempts at one batch; poison pills are sought after the last."""
        return RetryPolicy(self.backoff_s, self.max_backoff_s, self.max_attempts)

    def budget(self) -> DeadLetterBudget:
        """A fresh dead-letter budget with these caps."""
        return DeadLetterBudget(
            self.dlq_window, self.dlq_max_ratio, self.dlq_min_inputs, self.dlq_max_consecutive
        )


class StageRunner:
    """Runs one :class:`Stage` against Kafka until told to stop."""

    def __init__(
        self,
        stage: Stage[Any, Any],
        kafka: KafkaSettings,
        settings: RunnerSettings,
        metrics: StageMetrics,
        clients: KafkaClients | None = None,
    ) -> None:
        self._strategy = StageStrategy(stage, kafka, settings, metrics)
        self._runtime = ServiceRuntime(
            self._strategy,
            kafka,
            settings,
            metrics,
            settings.max_batch,
            settings.max_wait_s,
            clients=clients,
        )

    def run(self, stop: threading.Event) -> None:
        """Process batches until ``stop`` is set; the batch in hand is always finished."""
        self._runtime.run(stop)


class StageStrategy(Strategy):
    """What the runtime does with a stage's batches."""

    def __init__(
        self,
        stage: Stage[Any, Any],
        kafka: KafkaSettings,
        settings: RunnerSettings,
        metrics: StageMetrics,
    ) -> None:
        self.name = stage.name
        self.topics = (stage.input_topic,)
        self._stage = stage
        self._settings = settings
        self._metrics = metrics
        self._topic_names = TopicNames(kafka.topic_prefix)
        self._retry = settings.batch_retry()
        self._budget = settings.budget()
        self._control: Message | None = None
        """The last input the stage processed: the control when every item of a batch fails."""
        self._preparer = Preparer(self._prepare_one, settings.prepare_threads)

    def setup(self) -> None:
        """Register the stage's own metrics and load its models."""
        if isinstance(self._stage, ReportsMetrics):
            self._stage.register_metrics(self._metrics.registry)
        self._stage.setup()

    def start(self, session: Session) -> None:
        """Fresh clients: the tallies are re-read with the partitions; nothing is ahead."""
        self._budget = self._settings.budget()
        self._preparer.drop()

    def revoked(self, session: Session, partitions: list[TopicPartition]) -> None:
        """Forget the tallies of partitions another instance now owns."""
        for partition in partitions:
            self._budget.forget(partition.partition)

    def close(self) -> None:
        """Stop the prepare threads and release the stage's models."""
        self._preparer.close()
        self._stage.close()

    def handle(self, messages: list[Message], session: Session) -> Commit | None:
        """Run the stage on the batch and return its outputs and offsets as one commit."""
        if not messages:
            return None
        self._metrics.consumed(len(messages))
        encoded = [
            self._encode(message, result)
            for message, result in zip(messages, self._results(messages, session), strict=True)
        ]
        results = [result for result, _ in encoded]
        self._seed(messages, session)
        outcomes: dict[int, list[bool]] = {}
        for message, result in zip(messages, results, strict=True):
            outcomes.setdefault(message.partition() or 0, []).append(
                isinstance(result, InvalidInput)
            )
        tallies = self._budget.after(outcomes)
        records = [record for _, produced in encoded for record in produced]

        def committed() -> None:
            self._budget.record(tallies)
            self._count(results)

        return Commit(records, _offsets(messages, tallies), committed)

    def _results(self, messages: list[Message], session: Session) -> list[Result]:
        """The stage's results, retried with backoff; poison pills found and rejected."""
        attempt = 0
        while True:
            attempt += 1
            try:
                started = time.perf_counter()
                results = self._run_stage(messages, self._prepared(messages, session, attempt))
                self._metrics.batch(len(messages), time.perf_counter() - started)
                self._control = messages[-1]
                return results
            except Exception as exception:
                self._metrics.failed_batch()
                failure = exception
            if attempt % self._settings.max_attempts == 0:
                isolated = self._isolate(messages)
                if isolated is not None:
                    return isolated
            delay = self._retry.delay_s(attempt)
            log.warning(
                "batch of %d, attempt %d failed (%s: %s); retrying in %.1fs",
                *(len(messages), attempt, type(failure).__name__, failure, delay),
            )
            session.pause_for(delay)

    def _prepared(self, messages: list[Message], session: Session, attempt: int) -> list[Outcome]:
        """Prepare the batch (taking what was prepared ahead); then start on the next one.

        Reading ahead after this batch is prepared leaves the prepare threads to the next
        batch while this one is in the model. Retries prepare again, inline of the attempt.
        """
        if attempt > 1:
            return self._preparer.now(messages, session.wait)
        outcomes = self._preparer.take(messages, session.wait)
        if self._preparer.pipelined:
            self._preparer.ahead(session.read_ahead())
        return outcomes

    def _prepare_one(self, message: Message) -> Any:
        """Decode one message and prepare it (in a prepare thread when there are some)."""
        event = decode(message.value(), message.headers(), self._stage.input_model)
        return self._stage.prepare(event)

    def _isolate(self, messages: list[Message]) -> list[Result] | None:
        """Bisect the batch for the items that fail alone; ``None`` if the stage is broken."""
        results: dict[int, Result] = {}
        failures: dict[int, Exception] = {}

        def visit(indices: list[int]) -> None:
            try:
                found = self._run_stage([messages[i] for i in indices])
                results.update(zip(indices, found, strict=True))
            except Exception as exception:
                if len(indices) == 1:
                    failures[indices[0]] = exception
                    return
                middle = len(indices) // 2
                visit(indices[:middle])
                visit(indices[middle:])

        everything = list(range(len(messages)))
        if len(everything) == 1:
            visit(everything)
        else:
            visit(everything[: len(everything) // 2])
            visit(everything[len(everything) // 2 :])
        if not results and not self._control_passes():
            log.error("every item failed, and so did the control: the stage is not working")
            return None
        for index, exception in failures.items():
            log.error(
                "%s[%d]@%d fails on its own: dead-lettering it",
                *(messages[index].topic(), messages[index].partition(), messages[index].offset()),
                exc_info=exception,
            )
            results[index] = InvalidInput(
                Reason.PROCESSING_FAILED, f"{type(exception).__name__}: {exception}"
            )
        return [results[index] for index in everything]

    def _control_passes(self) -> bool:
        """Run the stage on the last input that went through; its outputs are discarded."""
        if self._control is None:
            return False
        try:
            self._run_stage([self._control])
        except Exception:
            return False
        return True

    def _run_stage(
        self, messages: Sequence[Message], outcomes: Sequence[Outcome] | None = None
    ) -> list[Result]:
        """Prepare (unless ``outcomes`` are given) and process ``messages``, one result each."""
        if outcomes is None:
            outcomes = [self._preparer.outcome(message) for message in messages]
        results: list[Result | None] = [None] * len(messages)
        prepared: list[tuple[int, Any]] = []
        for index, outcome in enumerate(outcomes):
            if isinstance(outcome, InvalidInput):
                results[index] = outcome
            else:
                prepared.append((index, outcome))
        outputs = self._stage.process([item for _, item in prepared]) if prepared else []
        if len(outputs) != len(prepared):
            raise RuntimeError(f"stage returned {len(outputs)} results for {len(prepared)} items")
        for (index, _), output in zip(prepared, outputs, strict=True):
            results[index] = output
        filled = [result for result in results if result is not None]
        assert len(filled) == len(messages), "every message is either rejected or processed"
        return filled

    def _seed(self, messages: list[Message], session: Session) -> None:
        """Read the tallies of partitions first seen since they were assigned."""
        unseen = sorted({m.partition() or 0 for m in messages} - set(self._budget.tallies))
        if not unseen:
            return
        topic = messages[0].topic() or ""
        for found in session.committed([TopicPartition(topic, p) for p in unseen]):
            self._budget.seed(found.partition, Tally.decode(found.metadata))

    def _encode(self, message: Message, result: Result) -> tuple[Result, list[tuple[str, Encoded]]]:
        """The records a result produces; an output over the record limit rejects its input.

        A record the broker would refuse fails the whole transaction, batch after batch:
        the input that made it is the poison, so it is dead-lettered instead.
        """
        if not isinstance(result, InvalidInput):
            trace_id = headers_dict(message.headers()).get(TRACE_ID)
            records = [
                (self._topic_names(out.topic), encode(out.event, _image_id(out), trace_id))
                for out in result
            ]
            sizes = [(topic, size(record)) for topic, record in records]
            oversized = [(topic, bytes_) for topic, bytes_ in sizes if bytes_ > RECORD_LIMIT_BYTES]
            if not oversized:
                return result, records
            topic, bytes_ = oversized[0]
            result = InvalidInput(
                Reason.OUTPUT_TOO_LARGE,
                f"{topic}: {bytes_} bytes, over the {RECORD_LIMIT_BYTES}-byte record limit",
            )
        letter = dead_letter(self._stage.name, message, result, DEAD_LETTER_LIMIT_BYTES)
        return result, [(self._topic_names(Topic.DEAD_LETTERS), letter)]

    def _count(self, results: list[Result]) -> None:
        now = datetime.now(UTC)
        for result in results:
            if isinstance(result, InvalidInput):
                log.warning("dead-lettered: %s", result)
                self._metrics.dead_lettered(result.reason.value)
                continue
            for output in result:
                self._metrics.produced(output.topic.value)
                uploaded_at = getattr(output.event, "uploaded_at", None)
                if isinstance(uploaded_at, datetime):
                    self._metrics.lag((now - uploaded_at).total_seconds())


def _offsets(messages: list[Message], tallies: dict[int, Tally]) -> list[TopicPartition]:
    """The next offset to consume per partition, carrying the partition's tally."""
    next_offsets: dict[tuple[str, int], int] = {}
    for message in messages:
        key = (message.topic() or "", message.partition() or 0)
        next_offsets[key] = max(next_offsets.get(key, 0), (message.offset() or 0) + 1)
    return [
        TopicPartition(topic, partition, offset, tallies[partition].encode())
        for (topic, partition), offset in next_offsets.items()
    ]


def _image_id(output: Output) -> str:
    event: BaseModel = output.event
    image_id: str = getattr(event, "image_id")  # noqa: B009
    return image_id
