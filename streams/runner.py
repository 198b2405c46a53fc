"""The stage runner: consume → micro-batch → prepare/process → produce → commit, exactly once.

Each batch is one Kafka transaction holding the stage's outputs, its dead letters and the
consumer offsets (``send_offsets_to_transaction``). Downstream consumers read committed
data only, so a crash anywhere before the commit leaves no trace of the batch, and the
restarted stage (same transactional id, which fences the dead one) processes it again.

Invalid inputs are dead-lettered inside the same transaction and never retried. Any other
failure (a model error, a broker hiccup) retries the whole batch with backoff, keeping the
messages in memory, and stops the process after ``max_attempts`` with nothing committed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition
from pydantic import BaseModel
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.codec import TRACE_ID, Encoded, decode, encode, headers_dict
from streams.config import KafkaSettings
from streams.dead_letters import DeadLetterBudget, dead_letter
from streams.errors import DeadLetterRateExceeded, InvalidInput
from streams.exactly_once import (
    commit_with_offsets,
    fenced_producer,
    transactional_consumer,
    usable,
)
from streams.lag import LagProbe
from streams.metrics import StageMetrics
from streams.stage import Output, ReportsMetrics, Result, Stage
from streams.topics import Topic, TopicNames

log = logging.getLogger(__name__)


class RunnerSettings(BaseSettings):
    """How a stage batches, retries and identifies itself (``DEEPTRUST_RUNNER_*``)."""

    model_config = SettingsConfigDict(env_prefix="DEEPTRUST_RUNNER_")

    instance_id: str = "0"
    max_batch: int = 32
    max_wait_s: float = 0.5
    max_attempts: int = 5
    backoff_s: float = 0.5
    kafka_timeout_s: float = 30.0
    transaction_timeout_ms: int = 60_000
    session_timeout_ms: int = 10_000
    dlq_window: int = 1000
    dlq_max_ratio: float = 0.5
    dlq_min_inputs: int = 100


class _Batch:
    """The messages of one poll with what the stage made of each."""

    def __init__(self, messages: list[Message]) -> None:
        self.messages = messages
        self.results: list[Result] = []

    def offsets(self) -> list[TopicPartition]:
        """Return the next offset to consume per partition, for the transaction."""
        next_offsets: dict[tuple[str, int], int] = {}
        for message in self.messages:
            key = (message.topic() or "", message.partition() or 0)
            next_offsets[key] = max(next_offsets.get(key, 0), (message.offset() or 0) + 1)
        return [TopicPartition(t, p, o) for (t, p), o in next_offsets.items()]


class StageRunner:
    """Runs one :class:`Stage` against Kafka until told to stop."""

    def __init__(
        self,
        stage: Stage[Any, Any],
        kafka: KafkaSettings,
        settings: RunnerSettings,
        metrics: StageMetrics,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._stage = stage
        self._kafka = kafka
        self._settings = settings
        self._metrics = metrics
        self._sleep = sleep
        self._topics = TopicNames(kafka.topic_prefix)
        self._group_id = f"{kafka.topic_prefix}{stage.name}"
        self._budget = DeadLetterBudget(
            settings.dlq_window, settings.dlq_max_ratio, settings.dlq_min_inputs
        )
        self._lag = LagProbe(metrics)

    def run(self, stop: threading.Event) -> None:
        """Process batches until ``stop`` is set; the batch in hand is always finished."""
        if isinstance(self._stage, ReportsMetrics):
            self._stage.register_metrics(self._metrics.registry)
        self._stage.setup()
        consumer = transactional_consumer(self._kafka, self._group_id, self._settings)
        try:
            producer = fenced_producer(self._kafka, self._group_id, self._settings)
            consumer.subscribe([self._topics(self._stage.input_topic)])
            self._metrics.set_ready(True)
            log.info("stage %s consuming %s", self._stage.name, self._stage.input_topic.value)
            while not stop.is_set():
                messages = consumer.consume(self._settings.max_batch, self._settings.max_wait_s)
                self._metrics.heartbeat()
                self._lag.sample(consumer)
                batch = _Batch([m for m in messages if usable(m)])
                if batch.messages:
                    self._handle(batch, consumer, producer)
        finally:
            self._metrics.set_ready(False)
            consumer.close()
            self._stage.close()
            log.info("stage %s stopped", self._stage.name)

    def _handle(self, batch: _Batch, consumer: Consumer, producer: Producer) -> None:
        self._metrics.consumed(len(batch.messages))
        for attempt in range(1, self._settings.max_attempts + 1):
            try:
                started = time.perf_counter()
                batch.results = self._run_stage(batch.messages)
                self._metrics.batch(len(batch.messages), time.perf_counter() - started)
                self._commit(batch, consumer, producer)
                return
            except DeadLetterRateExceeded:
                raise
            except KafkaException as exception:
                if exception.args[0].fatal():
                    raise
                self._retry_or_raise(attempt, exception)
            except Exception as exception:
                self._retry_or_raise(attempt, exception)

    def _retry_or_raise(self, attempt: int, exception: Exception) -> None:
        self._metrics.failed_batch()
        if attempt >= self._settings.max_attempts:
            log.error("giving up on batch after %d attempts", attempt)
            raise exception
        delay = self._settings.backoff_s * 2 ** (attempt - 1)
        log.warning("batch attempt %d failed (%s); retrying in %.1fs", attempt, exception, delay)
        self._sleep(delay)

    def _run_stage(self, messages: Sequence[Message]) -> list[Result]:
        results: list[Result | None] = [None] * len(messages)
        prepared: list[tuple[int, Any]] = []
        for index, message in enumerate(messages):
            try:
                event = decode(message.value(), message.headers(), self._stage.input_model)
                prepared.append((index, self._stage.prepare(event)))
            except InvalidInput as error:
                results[index] = error
        outputs = self._stage.process([item for _, item in prepared]) if prepared else []
        if len(outputs) != len(prepared):
            raise RuntimeError(f"stage returned {len(outputs)} results for {len(prepared)} items")
        for (index, _), output in zip(prepared, outputs, strict=True):
            results[index] = output
        filled = [result for result in results if result is not None]
        assert len(filled) == len(messages), "every message is either rejected or processed"
        return filled

    def _commit(self, batch: _Batch, consumer: Consumer, producer: Producer) -> None:
        rejected = sum(isinstance(result, InvalidInput) for result in batch.results)
        self._budget.check(len(batch.results) - rejected, rejected)
        records = [
            record
            for message, result in zip(batch.messages, batch.results, strict=True)
            for record in self._encode(message, result)
        ]
        commit_with_offsets(
            producer,
            consumer,
            records,
            batch.offsets(),
            self._settings.kafka_timeout_s,
            self._settings.max_attempts,
        )
        self._budget.record(len(batch.results) - rejected, rejected)
        self._count_committed(batch)

    def _encode(self, message: Message, result: Result) -> list[tuple[str, Encoded]]:
        if isinstance(result, InvalidInput):
            return [
                (self._topics(Topic.DEAD_LETTERS), dead_letter(self._stage.name, message, result))
            ]
        trace_id = headers_dict(message.headers()).get(TRACE_ID)
        return [
            (self._topics(output.topic), encode(output.event, _image_id(output), trace_id))
            for output in result
        ]

    def _count_committed(self, batch: _Batch) -> None:
        now = datetime.now(UTC)
        for result in batch.results:
            if isinstance(result, InvalidInput):
                log.warning("dead-lettered: %s", result)
                self._metrics.dead_lettered(result.reason.value)
                continue
            for output in result:
                self._metrics.produced(output.topic.value)
                uploaded_at = getattr(output.event, "uploaded_at", None)
                if isinstance(uploaded_at, datetime):
                    self._metrics.lag((now - uploaded_at).total_seconds())


def _image_id(output: Output) -> str:
    event: BaseModel = output.event
    image_id: str = getattr(event, "image_id")  # noqa: B009
    return image_id
