"""The retrain consumer's bookkeeping: messages polled during a job, attempts across restarts.

The logic under test is the consumer's own (what it pauses, where it seeks, what it counts
and when it gives up), so these tests drive it with an in-memory consumer (partitions as
lists, positions, pauses, an eager rebalance) and a job double, and record the transaction
instead of running one. The real broker path is covered by test_retrain_end_to_end.py and
by the restart test at the end of this file.

Runs in .venv-train (the consumer imports the job, which imports mlflow).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mlflow")

from confluent_kafka import TopicPartition

from deeptrust.schemas.events import (
    DeadLetterEvent,
    RetrainRequestEvent,
)
from deeptrust.streams.codec import decode, encode
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.metrics import StageMetrics
from deeptrust.streams.retry import RetryPolicy
from deeptrust.streams.runner import RunnerSettings
from deeptrust.streams.service import Session
from deeptrust.streams.topics import Topic, TopicNames
from deeptrust.training.service import consumer as consumer_module
from deeptrust.training.service.attempts import ATTEMPTS_FILE, AttemptLog
from deeptrust.training.service.consumer import RetrainService, RetrainStrategy
from tests.events import model_update, retrain_request

PREFIX = "unit."
TOPIC = TopicNames(PREFIX)(Topic.RETRAIN)


class MessageDouble:
    """What the consumer reads off a confluent-kafka message."""

    def __init__(self, topic: str, partition: int, offset: int, event: RetrainRequestEvent):
        encoded = encode(event, event.key)
        self._where = (topic, partition, offset)
        self._key, self._value, self._headers = encoded.key, encoded.value, encoded.headers

    def topic(self) -> str:
        return self._where[0]

    def partition(self) -> int:
        return self._where[1]

    def offset(self) -> int:
        return self._where[2]

    def error(self) -> None:
        return None

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes:
        return self._value

    def headers(self) -> list[tuple[str, bytes]]:
        return list(self._headers)


class ConsumerDouble:
    """One topic's partitions in memory, with librdkafka's position, pause and seek rules.

    ``poll`` returns the next message of the first assigned, unpaused partition that has
    one. ``rebalance`` is an eager rebalance: the new assignment starts unpaused at the
    committed offsets, through ``on_assign`` when one is given.
    """

    def __init__(self, partitions: dict[int, list[RetrainRequestEvent]], assigned: set[int]):
        self.logs = {
            p: [MessageDouble(TOPIC, p, o, e) for o, e in enumerate(events)]
            for p, events in partitions.items()
        }
        self.assigned = set(assigned)
        self.paused: set[int] = set()
        self.committed = dict.fromkeys(partitions, 0)
        self.position = dict(self.committed)
        self.before_poll: Callable[[], None] = lambda: None
        self.returned: list[tuple[int, int]] = []

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(TOPIC, p) for p in sorted(self.assigned)]

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned = {tp.partition for tp in partitions}
        self.paused = set()
        self.position = {p: self.committed[p] for p in self.assigned}

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused |= {tp.partition for tp in partitions}

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused -= {tp.partition for tp in partitions}

    def seek(self, partition: TopicPartition) -> None:
        assert partition.partition in self.assigned, "librdkafka seeks assigned partitions only"
        self.position[partition.partition] = partition.offset

    def poll(self, timeout: float) -> MessageDouble | None:
        self.before_poll()
        for p in sorted(self.assigned - self.paused):
            if self.position[p] < len(self.logs[p]):
                message = self.logs[p][self.position[p]]
                self.position[p] += 1
                self.returned.append((p, message.offset()))
                return message
        return None

    def rebalance(
        self,
        partitions: set[int],
        on_assign: Callable[[Any, list[TopicPartition]], None] | None,
    ) -> None:
        assignment = [TopicPartition(TOPIC, p) for p in sorted(partitions)]
        if on_assign is None:
            self.assign(assignment)
        else:
            on_assign(self, assignment)


class JobDouble:
    """Counts calls; ``run`` does what the test says."""

    def __init__(self, work_dir: Path, run: Callable[[str], Any]) -> None:
        self.work_dir = work_dir
        self.calls: list[str] = []
        self.discarded: list[str] = []
        self._run = run

    def run(self, request_id: str, evidence: dict[str, str] | None = None) -> Any:
        self.calls.append(request_id)
        return self._run(request_id)

    def discard_checkpoints(self, request_id: str) -> None:
        self.discarded.append(request_id)


def strategy(
    job: JobDouble, max_attempts: int = 3, caption_job: JobDouble | None = None
) -> RetrainStrategy:
    """The retrain consumer's strategy, set up (its job thread started)."""
    retrain = RetrainStrategy(
        job,  # type: ignore[arg-type]
        KafkaSettings(bootstrap_servers="127.0.0.1:1", topic_prefix=PREFIX),
        RunnerSettings(max_attempts=max_attempts),
        StageMetrics("retrain"),
        caption_job=caption_job,  # type: ignore[arg-type]
    )
    retrain.setup()
    return retrain


def session_on(consumer: ConsumerDouble, retrain: RetrainStrategy) -> Session:
    """The runtime's session over the in-memory consumer (no producer: nothing commits)."""
    return Session(
        consumer,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        threading.Event(),
        StageMetrics("retrain"),
        retrain,
        kafka_timeout_s=1.0,
    )


def finish_after(
    future: Future[Any], polls: int, then: Callable[[int], None]
) -> Callable[[], None]:
    """A ``before_poll`` hook: call ``then(n)`` on poll n, complete ``future`` after ``polls``."""
    count = 0

    def hook() -> None:
        nonlocal count
        count += 1
        then(count)
        if count == polls:
            future.set_result("outcome")

    return hook


def test_a_message_polled_during_a_job_is_put_back_not_lost(tmp_path):
    """A partition assigned mid-job starts unpaused: what it returns must be read later."""
    first, waiting = retrain_request(), retrain_request()
    consumer = ConsumerDouble({0: [first], 1: [waiting]}, assigned={0})
    consumer.position[0] = 1  # the first request is the one being trained
    session = session_on(consumer, strategy(JobDouble(tmp_path, lambda _: None)))
    future: Future[Any] = Future()

    def rebalance_without_callback(poll: int) -> None:
        if poll == 2:  # e.g. a cooperative or racing assignment the callback did not see
            consumer.rebalance({0, 1}, on_assign=None)
            consumer.position[0] = 1

    consumer.before_poll = finish_after(future, 4, rebalance_without_callback)
    session.wait([future])
    assert future.result() == "outcome"

    assert (1, 0) in consumer.returned, "the double returned the waiting request mid-job"
    assert consumer.paused == set(), "everything assigned is resumed after the job"
    consumer.before_poll = lambda: None
    again = consumer.poll(0)
    assert again is not None, "the request polled during the job was dropped"
    assert decode(again.value(), again.headers(), RetrainRequestEvent).event_id == (
        waiting.event_id
    )


def test_partitions_assigned_during_a_job_stay_paused_until_it_ends(tmp_path):
    waiting = retrain_request()
    consumer = ConsumerDouble({0: [], 1: [waiting]}, assigned={0})
    session = session_on(consumer, strategy(JobDouble(tmp_path, lambda _: None)))
    future: Future[Any] = Future()
    paused_after_rebalance: list[set[int]] = []

    def rebalance(poll: int) -> None:
        if poll == 2:
            consumer.rebalance({0, 1}, on_assign=session.on_assign)
            paused_after_rebalance.append(set(consumer.paused))

    consumer.before_poll = finish_after(future, 4, rebalance)
    session.wait([future])

    assert paused_after_rebalance == [{0, 1}]
    assert consumer.returned == [], "nothing is fetched while a job runs"
    consumer.before_poll = lambda: None
    assert consumer.poll(0) is not None, "after the job the new partition is read"
    # Outside a job, an assignment is taken as it comes.
    consumer.rebalance({1}, on_assign=session.on_assign)
    assert consumer.paused == set()


class Crash(BaseException):
    """Stands for the process dying inside the job (OOM kill): no handler sees it."""


def test_a_request_that_keeps_killing_the_process_is_dead_lettered_on_the_next_start(tmp_path):
    request = retrain_request()

    def crash(request_id: str) -> None:
        # The attempt is on disk before the job starts, so it survives the crash.
        assert AttemptLog(tmp_path / ATTEMPTS_FILE).count(request_id) == len(job.calls)
        raise Crash

    job = JobDouble(tmp_path, crash)
    for _ in range(2):  # two process lifetimes, each killed by the job
        consumer = ConsumerDouble({0: [request]}, assigned={0})
        retrain = strategy(job, max_attempts=2)
        with pytest.raises(Crash):
            retrain.handle([consumer.poll(0)], session_on(consumer, retrain))  # type: ignore[list-item]

    consumer = ConsumerDouble({0: [request]}, assigned={0})
    retrain = strategy(job, max_attempts=2)
    commit = retrain.handle([consumer.poll(0)], session_on(consumer, retrain))  # type: ignore[list-item]
    retrain.close()

    assert len(job.calls) == 2, "the third start must not run the job again"
    assert commit is not None
    ((topic, encoded),) = commit.records
    assert topic == TopicNames(PREFIX)(Topic.DEAD_LETTERS)
    letter = decode(encoded.value, encoded.headers, DeadLetterEvent)
    assert letter.reason == "training_failed"
    assert "started 2 times without finishing" in letter.detail
    assert [(tp.partition, tp.offset) for tp in commit.offsets] == [(0, 1)]
    commit.committed()  # what the runtime calls once the transaction is committed
    assert AttemptLog(tmp_path / ATTEMPTS_FILE).count(request.event_id) == 0
    assert job.discarded == [request.event_id]


def test_failed_attempts_count_across_restarts_and_success_clears_them(tmp_path, monkeypatch):
    monkeypatch.setattr(consumer_module, "JOB_RETRY", RetryPolicy(initial_s=0.0, max_s=0.0))
    request = retrain_request()
    candidate = model_update("file:///models/2.npz", "0" * 64)
    outcomes: list[Callable[[], Any]] = [
        lambda: (_ for _ in ()).throw(RuntimeError("flaky")),
        lambda: type("Outcome", (), {"version": "2", "event": candidate})(),
    ]
    job = JobDouble(tmp_path, lambda _: outcomes.pop(0)())
    log = AttemptLog(tmp_path / ATTEMPTS_FILE)
    consumer = ConsumerDouble({0: [request]}, assigned={0})
    first = strategy(job)
    assert first.handle([consumer.poll(0)], session_on(consumer, first)) is None  # type: ignore[list-item]
    first.close()
    assert log.count(request.event_id) == 1
    assert consumer.position[0] == 0, "a failed request is read again"

    restarted = strategy(job)  # a new process: the count comes from the file
    commit = restarted.handle([consumer.poll(0)], session_on(consumer, restarted))  # type: ignore[list-item]
    restarted.close()
    assert commit is not None
    ((topic, _),) = commit.records
    assert topic == TopicNames(PREFIX)(Topic.MODELS)
    commit.committed()
    assert job.calls == [request.event_id] * 2
    assert log.count(request.event_id) == 0
    assert not (tmp_path / ATTEMPTS_FILE).read_text().count(request.event_id)


def test_with_a_captioner_job_one_request_announces_both_candidates_in_one_commit(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(consumer_module, "JOB_RETRY", RetryPolicy(initial_s=0.0, max_s=0.0))
    request = retrain_request()
    detector = model_update("file:///models/d.npz", "0" * 64)
    captioner = model_update(
        "file:///models/c.tar.gz",
        "1" * 64,
        model="deeptrust-captioner",
        task="caption",
        backend="hf-blip",
    )

    def answered(event: Any) -> Any:
        return type("Outcome", (), {"version": event.version, "event": event})()

    detector_job = JobDouble(tmp_path, lambda _: answered(detector))
    failures = [RuntimeError("the store is slow")]

    def caption_run(_: str) -> Any:
        if failures:
            raise failures.pop()
        return answered(captioner)

    caption_job = JobDouble(tmp_path, caption_run)
    consumer = ConsumerDouble({0: [request]}, assigned={0})
    retrain = strategy(detector_job, caption_job=caption_job)
    assert retrain.handle([consumer.poll(0)], session_on(consumer, retrain)) is None  # type: ignore[list-item]
    commit = retrain.handle([consumer.poll(0)], session_on(consumer, retrain))  # type: ignore[list-item]
    retrain.close()

    assert commit is not None
    models = TopicNames(PREFIX)(Topic.MODELS)
    assert [topic for topic, _ in commit.records] == [models, models]
    announced = [decode(r.value, r.headers, type(detector)) for _, r in commit.records]
    assert [event.model for event in announced] == ["deeptrust-detector", "deeptrust-captioner"]
    # The retry asked the detector's job again, which answers a request it registered from
    # its registry (RetrainJob.run); only the captioner's job had more to do.
    assert detector_job.calls == caption_job.calls == [request.event_id] * 2


def test_a_request_given_up_on_discards_every_jobs_checkpoints(tmp_path):
    request = retrain_request()

    def fails(_: str) -> Any:
        raise RuntimeError("broken")

    detector_job = JobDouble(tmp_path, lambda _: None)
    caption_job = JobDouble(tmp_path, fails)
    consumer = ConsumerDouble({0: [request]}, assigned={0})
    retrain = strategy(detector_job, max_attempts=1, caption_job=caption_job)
    commit = retrain.handle([consumer.poll(0)], session_on(consumer, retrain))  # type: ignore[list-item]
    retrain.close()

    assert commit is not None
    ((topic, _),) = commit.records
    assert topic == TopicNames(PREFIX)(Topic.DEAD_LETTERS)
    commit.committed()
    assert detector_job.discarded == caption_job.discarded == [request.event_id]


def test_the_attempt_log_survives_a_garbled_file(tmp_path):
    log = AttemptLog(tmp_path / "attempts.json")
    assert log.start("a") == 1
    assert log.start("a") == 2
    assert log.start("b") == 1
    log.clear("a")
    assert (log.count("a"), log.count("b")) == (0, 1)
    (tmp_path / "attempts.json").write_text("{not json", encoding="utf-8")
    assert log.count("b") == 0
    assert log.start("b") == 1


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_on_the_broker_a_request_that_killed_the_process_is_dead_lettered_at_start(
    kafka, topics, tmp_path
):
    """A real consumer group and transaction: the crashed request's count is on disk."""
    from deeptrust.streams.producer import produce_one
    from deeptrust.streams.reader import read_to_end

    request = retrain_request()
    produce_one(kafka, topics(Topic.RETRAIN), request, request.key)
    log = AttemptLog(tmp_path / ATTEMPTS_FILE)
    log.start(request.event_id)  # what the process that died in the job left behind
    job = JobDouble(tmp_path, lambda _: pytest.fail("a job ran for the crashed request"))
    runner = RunnerSettings(max_attempts=1, max_wait_s=0.1, instance_id=uuid.uuid4().hex[:6])
    retrain = RetrainService(job, kafka, runner, StageMetrics("retrain"))  # type: ignore[arg-type]
    stop = threading.Event()
    thread = threading.Thread(target=retrain.run, args=(stop,), daemon=True)
    thread.start()
    try:
        deadline = datetime.now(UTC).timestamp() + 60
        letters: list[Any] = []
        while not letters and datetime.now(UTC).timestamp() < deadline:
            letters = read_to_end(kafka, topics(Topic.DEAD_LETTERS), DeadLetterEvent, 10)
        assert [r.event.reason for r in letters] == ["training_failed"]
        assert letters[0].event.original_key == request.key
        assert log.count(request.event_id) == 0
    finally:
        stop.set()
        thread.join(30)
    assert job.calls == []
