"""The retrain consumer: retrain.v1 in, one job at a time, a candidate on models.v1 out.

A job takes minutes, far longer than Kafka lets a consumer go without polling, so the job
runs in a worker thread while the consumer keeps polling with its partitions paused: it
stays in the group, takes no new request, and reports itself alive. The candidate's
announcement and the request's offset are committed in one transaction, and a request that
already produced a version is answered from the registry, so a redelivered request never
trains twice. A request that keeps failing goes to the dead-letter topic after
``max_attempts`` tries, with the error, rather than blocking every later request.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

from confluent_kafka import Consumer, Message, Producer, TopicPartition
from prometheus_client import Counter, Histogram

from schemas.events import RetrainRequestEvent
from streams.codec import decode, encode
from streams.config import KafkaSettings
from streams.dead_letters import dead_letter
from streams.errors import InvalidInput, Reason
from streams.exactly_once import (
    commit_with_offsets,
    fenced_producer,
    transactional_consumer,
    usable,
)
from streams.metrics import StageMetrics
from streams.runner import RunnerSettings
from streams.topics import Topic, TopicNames
from training.service.job import JobOutcome, RetrainJob

log = logging.getLogger(__name__)
NAME = "retrain"
MAX_POLL_MS = 600_000
"""Kafka's limit between polls; the paused loop polls every second, so it is never near."""
JOB_BUCKETS = (10, 30, 60, 120, 300, 600, 1200, 3600, 7200)


class RetrainMetrics:
    """Jobs by outcome and how long they took, in the stage's registry."""

    def __init__(self, metrics: StageMetrics) -> None:
        registry = metrics.registry
        self.jobs = Counter(
            "deeptrust_retrain_jobs", "Retrain jobs by outcome.", ["outcome"], registry=registry
        )
        self.seconds = Histogram(
            "deeptrust_retrain_job_seconds",
            "Seconds per retrain job.",
            buckets=JOB_BUCKETS,
            registry=registry,
        )


class RetrainService:
    """Consumes retrain requests and runs them through a :class:`RetrainJob`, one at a time."""

    name = NAME

    def __init__(
        self,
        job: RetrainJob,
        kafka: KafkaSettings,
        runner: RunnerSettings,
        metrics: StageMetrics,
    ) -> None:
        self._job = job
        self._kafka = kafka
        self._runner = runner
        self._metrics = metrics
        self._retrain_metrics = RetrainMetrics(metrics)
        self._topics = TopicNames(kafka.topic_prefix)
        self._group_id = f"{kafka.topic_prefix}{NAME}"
        self._failures: dict[str, int] = {}

    def run(self, stop: threading.Event) -> None:
        """Serve requests until ``stop`` is set; a job in progress is finished first."""
        producer = fenced_producer(self._kafka, self._group_id, self._runner)
        consumer = transactional_consumer(
            self._kafka, self._group_id, self._runner, **{"max.poll.interval.ms": MAX_POLL_MS}
        )
        worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="retrain-job")
        try:
            consumer.subscribe([self._topics(Topic.RETRAIN)])
            self._metrics.set_ready(True)
            log.info("retrain consumer waiting on %s", Topic.RETRAIN.value)
            while not stop.is_set():
                message = consumer.poll(self._runner.max_wait_s)
                self._metrics.heartbeat()
                if message is not None and usable(message):
                    self._handle(message, consumer, producer, worker)
        finally:
            self._metrics.set_ready(False)
            worker.shutdown(wait=True)
            consumer.close()
            log.info("retrain consumer stopped")

    def _handle(
        self, message: Message, consumer: Consumer, producer: Producer, worker: ThreadPoolExecutor
    ) -> None:
        self._metrics.consumed(1)
        try:
            request = decode(message.value(), message.headers(), RetrainRequestEvent)
        except InvalidInput as error:
            self._commit(message, consumer, producer, None, error)
            return
        evidence = {
            "embedding_model": request.key,
            "drift_report_id": request.drift_report_id,
            "reason": request.reason,
        }
        started = time.perf_counter()
        try:
            outcome = self._wait(worker.submit(self._job.run, request.event_id, evidence), consumer)
        except Exception as error:
            self._failed(request, message, consumer, producer, error)
            return
        self._retrain_metrics.seconds.observe(time.perf_counter() - started)
        self._commit(message, consumer, producer, outcome, None)
        self._retrain_metrics.jobs.labels("registered").inc()
        self._failures.pop(request.event_id, None)
        log.info("request %s: version %s is the candidate", request.event_id, outcome.version)

    def _wait(self, future: Future[JobOutcome], consumer: Consumer) -> JobOutcome:
        """Keep the consumer in its group (paused, heartbeating) until the job ends."""
        assignment = consumer.assignment()
        consumer.pause(assignment)
        try:
            while not future.done():
                consumer.poll(1.0)  # returns nothing while paused; keeps the membership alive
                self._metrics.heartbeat()
            return future.result()
        finally:
            consumer.resume(assignment)

    def _failed(
        self,
        request: RetrainRequestEvent,
        message: Message,
        consumer: Consumer,
        producer: Producer,
        error: Exception,
    ) -> None:
        attempts = self._failures.get(request.event_id, 0) + 1
        self._failures[request.event_id] = attempts
        self._retrain_metrics.jobs.labels("failed").inc()
        log.exception("request %s: attempt %d failed", request.event_id, attempts, exc_info=error)
        if attempts < self._runner.max_attempts:
            # Read the request again: rewind to it and let the next poll return it.
            tp = TopicPartition(
                self._topics(Topic.RETRAIN), message.partition() or 0, message.offset() or 0
            )
            consumer.seek(tp)
            time.sleep(min(30.0, 2.0**attempts))  # backoff before retrying a failed job
            return
        invalid = InvalidInput(
            Reason.TRAINING_FAILED, f"retrain job failed {attempts} times: {error}"
        )
        self._commit(message, consumer, producer, None, invalid)
        self._failures.pop(request.event_id, None)

    def _commit(
        self,
        message: Message,
        consumer: Consumer,
        producer: Producer,
        outcome: JobOutcome | None,
        rejected: InvalidInput | None,
    ) -> None:
        """Announce the candidate (or dead-letter the request) and commit its offset, atomically."""
        records = []
        if outcome is not None:
            records.append((self._topics(Topic.MODELS), encode(outcome.event, outcome.event.key)))
        if rejected is not None:
            records.append((self._topics(Topic.DEAD_LETTERS), dead_letter(NAME, message, rejected)))
        next_offset = TopicPartition(
            self._topics(Topic.RETRAIN), message.partition() or 0, (message.offset() or 0) + 1
        )
        commit_with_offsets(
            producer,
            consumer,
            records,
            [next_offset],
            self._runner.kafka_timeout_s,
            self._runner.max_attempts,
        )
        if outcome is not None:
            self._metrics.produced(Topic.MODELS.value)
        if rejected is not None:
            self._metrics.dead_lettered(rejected.reason.value)
