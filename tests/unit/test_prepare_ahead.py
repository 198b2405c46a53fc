"""Preparing the next batch while this one is in the model, with every guarantee kept."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass

import pytest

from deeptrust.schemas.events import UploadEvent
from deeptrust.streams.errors import InvalidInput, Reason
from deeptrust.streams.prepare import Preparer
from deeptrust.streams.stage import Output, Result
from deeptrust.streams.topics import Topic
from tests.unit.kafka_fakes import FakeCluster
from tests.unit.test_stage_runner import (
    DETECTED,
    DLQ,
    UPLOADS,
    image_ids,
    run_until,
    sample,
    settings,
    uploads,
)

DEADLINE_S = 10.0


@dataclass(frozen=True)
class Spot:
    """A message as the preparer sees it: where it was read, and a payload."""

    _offset: int
    payload: str

    def topic(self) -> str:
        return "t"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset


def spots(*payloads: str, start: int = 0) -> list[Spot]:
    return [Spot(start + index, payload) for index, payload in enumerate(payloads)]


def wait_all(futures: Iterable[Future[object]]) -> None:
    wait(list(futures), timeout=DEADLINE_S)


class Recorder:
    """``prepare_one`` that notes what it prepared, in which thread, and can be held."""

    def __init__(self) -> None:
        self.prepared: list[str] = []
        self.threads: set[str] = set()
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()

    def __call__(self, spot: Spot) -> str:
        self.started.set()
        assert self.gate.wait(DEADLINE_S), "the test never opened the gate"
        self.threads.add(threading.current_thread().name)
        self.prepared.append(spot.payload)
        if spot.payload.startswith("invalid"):
            raise InvalidInput(Reason.MISSING_OBJECT, spot.payload)
        if spot.payload.startswith("boom"):
            raise ConnectionError("object store down")
        return spot.payload.upper()


def test_the_batch_read_ahead_is_prepared_in_the_pool_before_it_is_taken() -> None:
    recorder = Recorder()
    preparer = Preparer(recorder, threads=2)
    try:
        ahead = spots("c", "d", start=2)
        recorder.gate.clear()
        preparer.ahead(ahead)
        assert recorder.started.wait(DEADLINE_S), "preparing began before the batch is taken"
        recorder.gate.set()

        assert preparer.take(ahead, wait_all) == ["C", "D"]
        assert all(name.startswith("prepare") for name in recorder.threads)
        assert sorted(recorder.prepared) == ["c", "d"], "each message prepared once"
    finally:
        preparer.close()


def test_a_batch_other_than_the_one_read_ahead_is_prepared_anew() -> None:
    recorder = Recorder()
    preparer = Preparer(recorder, threads=2)
    try:
        preparer.ahead(spots("c", "d", start=2))
        # Fresh clients re-read from the committed offset: offsets 0 and 1, not 2 and 3.
        assert preparer.take(spots("a", "b"), wait_all) == ["A", "B"]
    finally:
        preparer.close()


def test_an_invalid_item_is_its_own_outcome_and_any_other_failure_fails_the_take() -> None:
    recorder = Recorder()
    preparer = Preparer(recorder, threads=2)
    try:
        outcomes = preparer.now(spots("a", "invalid-b"), wait_all)
        assert outcomes[0] == "A"
        assert isinstance(outcomes[1], InvalidInput)
        assert outcomes[1].reason is Reason.MISSING_OBJECT

        preparer.ahead(spots("boom", start=2))
        with pytest.raises(ConnectionError, match="object store down"):
            preparer.take(spots("boom", start=2), wait_all)
    finally:
        preparer.close()


def test_without_threads_nothing_is_read_ahead_and_everything_is_inline() -> None:
    recorder = Recorder()
    preparer = Preparer(recorder, threads=0)
    assert not preparer.pipelined
    preparer.ahead(spots("c", start=2))
    assert recorder.prepared == [], "no pool, nothing prepared ahead"
    assert preparer.take(spots("a"), wait_all) == ["A"]
    assert recorder.threads == {threading.current_thread().name}
    preparer.close()


class OverlapStage:
    """Each batch's ``process`` waits until the next batch's first item was prepared."""

    name = "echo"
    input_topic = Topic.UPLOADS
    input_model = UploadEvent

    def __init__(self, last: str) -> None:
        self.last = last
        self.prepared: list[str] = []
        self.processed: list[list[str]] = []
        self.ahead_seen: list[bool] = []
        self._changed = threading.Condition()

    def setup(self) -> None:
        pass

    def prepare(self, event: UploadEvent) -> UploadEvent:
        with self._changed:
            self.prepared.append(event.image_id)
            self._changed.notify_all()
        if event.image_id.startswith("invalid"):
            raise InvalidInput(Reason.MISSING_OBJECT, event.image_id)
        return event

    def process(self, items: Sequence[UploadEvent]) -> list[Result]:
        ids = [item.image_id for item in items]
        self.processed.append(ids)
        if self.last not in ids:
            done = {image_id for batch in self.processed for image_id in batch}
            with self._changed:  # the next batch is prepared while this one is "in the model"
                seen = self._changed.wait_for(
                    lambda: any(image_id not in done for image_id in self.prepared),
                    timeout=DEADLINE_S,
                )
            self.ahead_seen.append(seen)
        return [[Output(Topic.DETECTED, item)] for item in items]

    def close(self) -> None:
        pass


def test_the_next_batch_is_prepared_while_this_one_is_in_the_model() -> None:
    cluster = FakeCluster()
    uploads(cluster, "a", "b", "c", "d", "e")
    stage = OverlapStage(last="e")

    run_until(
        cluster,
        stage,
        lambda c: len(c.committed_to(DETECTED)) >= 5,
        settings(max_batch=2, prepare_threads=2),
    )

    assert stage.ahead_seen == [True, True], "batches ab and cd each overlapped the next"
    assert stage.processed == [["a", "b"], ["c", "d"], ["e"]]
    assert image_ids(cluster, DETECTED) == ["a", "b", "c", "d", "e"]
    assert cluster.committed[(UPLOADS, 0)].offset == 5


def test_a_batch_read_ahead_whose_partitions_are_revoked_is_dropped_not_produced() -> None:
    cluster = FakeCluster()
    uploads(cluster, "a", "b", "c", "d")
    cluster.revoke_at_consume = {2}  # the read-ahead of c, d loses the assignment

    metrics = run_until(
        cluster,
        OverlapStage(last="d"),
        lambda c: len(c.committed_to(DETECTED)) >= 4,
        settings(max_batch=2, prepare_threads=2),
    )

    assert image_ids(cluster, DETECTED) == ["a", "b", "c", "d"], "each output exactly once"
    assert cluster.committed[(UPLOADS, 0)].offset == 4
    assert sample(metrics, "deeptrust_recoveries_total", cause="rebalance_in_progress") == 1


def test_an_invalid_input_read_ahead_is_dead_lettered_alone_in_its_own_batch() -> None:
    cluster = FakeCluster()
    uploads(cluster, "a", "b", "invalid-c", "d")

    run_until(
        cluster,
        OverlapStage(last="d"),
        lambda c: (UPLOADS, 0) in c.committed and c.committed[(UPLOADS, 0)].offset >= 4,
        settings(max_batch=2, prepare_threads=2),
    )

    assert image_ids(cluster, DETECTED) == ["a", "b", "d"]
    assert image_ids(cluster, DLQ) == ["invalid-c"]


def test_stopping_leaves_no_prepare_thread_behind() -> None:
    cluster = FakeCluster()
    uploads(cluster, "a", "b", "c", "d", "e")

    run_until(
        cluster,
        OverlapStage(last="e"),
        lambda c: len(c.committed_to(DETECTED)) >= 2,  # stop with c, d read ahead
        settings(max_batch=2, prepare_threads=2),
    )

    assert image_ids(cluster, DETECTED) == ["a", "b"], "what was read ahead is not committed"
    assert cluster.committed[(UPLOADS, 0)].offset == 2
    alive = [t.name for t in threading.enumerate() if t.name.startswith("prepare")]
    assert alive == [], "the pool's threads end with the service"
