"""The retrain consumer: retrain.v1 in, one job at a time, a candidate on models.v1 out.

A request retrains the detector and, when the service has captioned data
(``DEEPTRUST_TRAINING_CAPTION_DATASETS``), the captioner after it: drift in the uploads'
embeddings concerns every model that reads them. Both candidates are announced in the
request's one transaction; a retried request finds the job that finished already answered
from its registry, so neither trains twice.

A job takes minutes, far longer than Kafka lets a consumer go without polling, so the job
runs in a worker thread while the consumer keeps polling with its partitions paused: it
stays in the group, takes no new request, and reports itself alive. The candidate's
announcement and the request's offset are committed in one transaction, and a request that
already produced a version is answered from the registry, so a redelivered request never
trains twice. A request that keeps failing goes to the dead-letter topic after
``max_attempts`` tries, with the error, rather than blocking every later request; the tries
are counted on disk before each job starts (:mod:`deeptrust.training.service.attempts`), so a job
that
kills the process counts too.

While a job runs, the service runtime's session keeps the consumer polling with its
partitions paused (``Session.wait``): a message the poll returns anyway (from a partition
assigned by a rebalance, which starts unpaused) is put back and read again once the job is
over, instead of being lost and later skipped by a commit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar, Protocol

from confluent_kafka import Message
from prometheus_client import Counter, Histogram

from deeptrust.schemas.events import RetrainRequestEvent
from deeptrust.streams.codec import decode, encode
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.dead_letters import dead_letter
from deeptrust.streams.errors import InvalidInput, Reason
from deeptrust.streams.exactly_once import offset_after
from deeptrust.streams.metrics import StageMetrics
from deeptrust.streams.retry import RetryPolicy
from deeptrust.streams.runner import RunnerSettings
from deeptrust.streams.service import Commit, KafkaClients, ServiceRuntime, Session, Strategy
from deeptrust.streams.topics import Topic, TopicNames
from deeptrust.training.service.attempts import ATTEMPTS_FILE, AttemptLog
from deeptrust.training.service.job import JobOutcome

log = logging.getLogger(__name__)
NAME = "retrain"
MAX_POLL_MS = 600_000
"""Kafka's limit between polls; the paused loop polls every second, so it is never near."""
JOB_BUCKETS = (10, 30, 60, 120, 300, 600, 1200, 3600, 7200)
JOB_RETRY = RetryPolicy(initial_s=2.0, max_s=30.0)
"""Between attempts at one request; their number is the runner's ``max_attempts``."""


class Job(Protocol):
    """A retrain job (the detector's ``RetrainJob``, the captioner's ``CaptionRetrainJob``)."""

    @property
    def work_dir(self) -> Path:
        """Where it keeps its checkpoints (and the consumer its attempt log)."""
        ...

    def run(self, request_id: str, evidence: dict[str, str] | None = None) -> JobOutcome:
        """Train and register a candidate for ``request_id``, once."""
        ...

    def discard_checkpoints(self, request_id: str) -> None:
        """Forget what a request given up on left behind."""
        ...


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
    """Consumes retrain requests and runs their jobs, one request at a time."""

    name = NAME

    def __init__(
        self,
        job: Job,
        kafka: KafkaSettings,
        runner: RunnerSettings,
        metrics: StageMetrics,
        attempts: AttemptLog | None = None,
        clients: KafkaClients | None = None,
        caption_job: Job | None = None,
    ) -> None:
        strategy = RetrainStrategy(job, kafka, runner, metrics, attempts, caption_job)
        self._runtime = ServiceRuntime(
            strategy, kafka, runner, metrics, 1, runner.max_wait_s, clients=clients
        )

    def run(self, stop: threading.Event) -> None:
        """Serve requests until ``stop`` is set; a job in progress is finished first."""
        self._runtime.run(stop)


class RetrainStrategy(Strategy):
    """One request at a time; the job runs in a worker thread while the session waits."""

    name = NAME
    topics = (Topic.RETRAIN,)
    max_batch = 1
    consumer_overrides: ClassVar[dict[str, Any]] = {"max.poll.interval.ms": MAX_POLL_MS}

    def __init__(
        self,
        job: Job,
        kafka: KafkaSettings,
        runner: RunnerSettings,
        metrics: StageMetrics,
        attempts: AttemptLog | None = None,
        caption_job: Job | None = None,
    ) -> None:
        self._jobs = [job] if caption_job is None else [job, caption_job]
        self._runner = runner
        self._metrics = metrics
        self._retrain_metrics = RetrainMetrics(metrics)
        self._topics = TopicNames(kafka.topic_prefix)
        self._attempts = attempts or AttemptLog(job.work_dir / ATTEMPTS_FILE)
        self._worker: ThreadPoolExecutor | None = None

    def _run_jobs(self, request_id: str, evidence: dict[str, str]) -> list[JobOutcome]:
        """Every job for one request, in order (in the worker thread)."""
        return [job.run(request_id, evidence) for job in self._jobs]

    def setup(self) -> None:
        """The thread jobs run in, so the consumer can keep polling meanwhile."""
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="retrain-job")

    def close(self) -> None:
        """Let a job in progress finish."""
        if self._worker is not None:
            self._worker.shutdown(wait=True)

    def handle(self, messages: list[Message], session: Session) -> Commit | None:
        """Run the request's job; commit its candidate, or dead-letter it, or try later."""
        if not messages:
            return None
        message = messages[0]
        self._metrics.consumed(1)
        try:
            request = decode(message.value(), message.headers(), RetrainRequestEvent)
        except InvalidInput as error:
            return self._commit(message, [], error)
        request_id = request.event_id
        started_before = self._attempts.count(request_id)
        if started_before >= self._runner.max_attempts:
            # Every earlier attempt started and none finished: the job takes the process down.
            self._retrain_metrics.jobs.labels("failed").inc()
            return self._give_up(
                request_id,
                message,
                f"retrain job started {started_before} times without finishing: "
                "the process died during the last attempt",
            )
        evidence = {
            "embedding_model": request.key,
            "drift_report_id": request.drift_report_id,
            "reason": request.reason,
        }
        attempt = self._attempts.start(request_id)  # on disk before the job can crash us
        started = time.perf_counter()
        assert self._worker is not None, "setup() runs before the first request"
        future = self._worker.submit(self._run_jobs, request_id, evidence)
        session.wait([future])
        try:
            outcomes = future.result()
        except Exception as error:
            self._retrain_metrics.jobs.labels("failed").inc()
            log.exception("request %s: attempt %d failed", request_id, attempt, exc_info=error)
            if attempt >= self._runner.max_attempts:
                return self._give_up(
                    request_id, message, f"retrain job failed {attempt} times: {error}"
                )
            # Read the request again after a backoff of seconds, not the batch backoff: a job
            # takes minutes and its usual failures (MLflow, the store) are slow to clear.
            session.rewind(message)
            session.pause_for(JOB_RETRY.delay_s(attempt))
            return None
        self._retrain_metrics.seconds.observe(time.perf_counter() - started)

        def registered() -> None:
            self._retrain_metrics.jobs.labels("registered").inc()
            self._attempts.clear(request_id)
            for outcome in outcomes:
                log.info(
                    "request %s: %s version %s is the candidate",
                    request_id,
                    outcome.event.model,
                    outcome.version,
                )

        return self._commit(message, outcomes, None, registered)

    def _give_up(self, request_id: str, message: Message, detail: str) -> Commit:
        """Dead-letter the request (``training_failed``) and forget its attempts."""
        invalid = InvalidInput(Reason.TRAINING_FAILED, detail)

        def forget() -> None:
            self._attempts.clear(request_id)
            for job in self._jobs:
                job.discard_checkpoints(request_id)
            log.error("request %s dead-lettered: %s", request_id, detail)

        return self._commit(message, [], invalid, forget)

    def _commit(
        self,
        message: Message,
        outcomes: list[JobOutcome],
        rejected: InvalidInput | None,
        then: Callable[[], None] | None = None,
    ) -> Commit:
        """Announce the candidates (or dead-letter the request), commit its offset, atomically."""
        records = [
            (self._topics(Topic.MODELS), encode(outcome.event, outcome.event.key))
            for outcome in outcomes
        ]
        if rejected is not None:
            records.append((self._topics(Topic.DEAD_LETTERS), dead_letter(NAME, message, rejected)))

        def committed() -> None:
            for _ in outcomes:
                self._metrics.produced(Topic.MODELS.value)
            if rejected is not None:
                self._metrics.dead_lettered(rejected.reason.value)
            if then is not None:
                then()

        return Commit(records, [offset_after(message)], committed)
