"""The retrain consumer: retrain.v1 in, one job at a time, a candidate on models.v1 out.

A job takes minutes, far longer than Kafka lets a consumer go without polling, so the job
runs in a worker thread while the consumer keeps polling with its partitions paused: it
stays in the group, takes no new request, and reports itself alive. The candidate's
announcement and the request's offset are committed in one transaction, and a request that
already produced a version is answered from the registry, so a redelivered request never
trains twice. A request that keeps failing goes to the dead-letter topic after
``max_attempts`` tries, with the error, rather than blocking every later request; the tries
are counted on disk before each job starts (:mod:`training.service.attempts`), so a job that
kills the process counts too.

While a job runs, a message the poll returns anyway (from a partition assigned by a
rebalance, which starts unpaused) is put back: the consumer seeks to it and pauses its
partition, so it is read again once the job is over instead of being lost and later
skipped by a commit.
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
    offset_after,
    transactional_consumer,
    usable,
)
from streams.metrics import StageMetrics
from streams.runner import RunnerSettings
from streams.topics import Topic, TopicNames
from training.service.attempts import ATTEMPTS_FILE, AttemptLog
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
        attempts: AttemptLog | None = None,
    ) -> None:
        self._job = job
        self._kafka = kafka
        self._runner = runner
        self._metrics = metrics
        self._retrain_metrics = RetrainMetrics(metrics)
        self._topics = TopicNames(kafka.topic_prefix)
        self._group_id = f"{kafka.topic_prefix}{NAME}"
        self._attempts = attempts or AttemptLog(job.work_dir / ATTEMPTS_FILE)
        self._busy = False
        """A job is running: whatever the consumer is assigned must stay paused."""

    def run(self, stop: threading.Event) -> None:
        """Serve requests until ``stop`` is set; a job in progress is finished first."""
        producer = fenced_producer(self._kafka, self._group_id, self._runner)
        consumer = transactional_consumer(
            self._kafka, self._group_id, self._runner, **{"max.poll.interval.ms": MAX_POLL_MS}
        )
        worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="retrain-job")
        try:
            consumer.subscribe([self._topics(Topic.RETRAIN)], on_assign=self._on_assign)
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
        request_id = request.event_id
        started_before = self._attempts.count(request_id)
        if started_before >= self._runner.max_attempts:
            # Every earlier attempt started and none finished: the job takes the process down.
            self._retrain_metrics.jobs.labels("failed").inc()
            self._give_up(
                request_id,
                message,
                consumer,
                producer,
                f"retrain job started {started_before} times without finishing: "
                "the process died during the last attempt",
            )
            return
        evidence = {
            "embedding_model": request.key,
            "drift_report_id": request.drift_report_id,
            "reason": request.reason,
        }
        attempt = self._attempts.start(request_id)  # on disk before the job can crash us
        started = time.perf_counter()
        try:
            outcome = self._wait(worker.submit(self._job.run, request_id, evidence), consumer)
        except Exception as error:
            self._failed(request_id, attempt, message, consumer, error)
            if attempt >= self._runner.max_attempts:
                self._give_up(
                    request_id,
                    message,
                    consumer,
                    producer,
                    f"retrain job failed {attempt} times: {error}",
                )
            return
        self._retrain_metrics.seconds.observe(time.perf_counter() - started)
        self._commit(message, consumer, producer, outcome, None)
        self._retrain_metrics.jobs.labels("registered").inc()
        self._attempts.clear(request_id)
        log.info("request %s: version %s is the candidate", request_id, outcome.version)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Take a (re)assignment; while a job runs, keep the new partitions paused."""
        consumer.assign(partitions)
        if self._busy and partitions:
            consumer.pause(partitions)
            log.info("assigned %d partitions during a job: paused", len(partitions))

    def _wait(self, future: Future[JobOutcome], consumer: Consumer) -> JobOutcome:
        """Keep the consumer in its group (paused, heartbeating) until the job ends.

        A message returned meanwhile (a partition assigned after the pause) is put back:
        seek to it, pause its partition, and it is polled again after the job.
        """
        self._busy = True
        consumer.pause(consumer.assignment())
        try:
            while not future.done():
                message = consumer.poll(1.0)  # keeps the membership alive
                self._metrics.heartbeat()
                if message is not None and usable(message):
                    self._put_back(message, consumer)
            return future.result()
        finally:
            self._busy = False
            consumer.resume(consumer.assignment())

    @staticmethod
    def _put_back(message: Message, consumer: Consumer) -> None:
        """Rewind ``message``'s partition to it and pause that partition."""
        topic, partition = message.topic() or "", message.partition() or 0
        offset = message.offset() or 0
        consumer.seek(TopicPartition(topic, partition, offset))
        consumer.pause([TopicPartition(topic, partition)])
        log.info("a job is running: %s[%d]@%d put back for later", topic, partition, offset)

    def _failed(
        self,
        request_id: str,
        attempt: int,
        message: Message,
        consumer: Consumer,
        error: Exception,
    ) -> None:
        """Count and log a failed attempt; rewind to the request if it gets another."""
        self._retrain_metrics.jobs.labels("failed").inc()
        log.exception("request %s: attempt %d failed", request_id, attempt, exc_info=error)
        if attempt < self._runner.max_attempts:
            # Read the request again: rewind to it and let the next poll return it.
            tp = TopicPartition(
                self._topics(Topic.RETRAIN), message.partition() or 0, message.offset() or 0
            )
            consumer.seek(tp)
            # Backoff before retrying: seconds, not the runner's half-second batch backoff,
            # since a job takes minutes and its usual failures (MLflow, the store) are slow.
            time.sleep(min(30.0, 2.0**attempt))

    def _give_up(
        self,
        request_id: str,
        message: Message,
        consumer: Consumer,
        producer: Producer,
        detail: str,
    ) -> None:
        """Dead-letter the request (``training_failed``) and forget its attempts."""
        invalid = InvalidInput(Reason.TRAINING_FAILED, detail)
        self._commit(message, consumer, producer, None, invalid)
        self._attempts.clear(request_id)
        self._job.discard_checkpoints(request_id)
        log.error("request %s dead-lettered: %s", request_id, detail)

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
        next_offset = offset_after(message)
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
