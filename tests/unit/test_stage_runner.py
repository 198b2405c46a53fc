"""The stage runner's retry, recovery, poison-pill and budget paths, on scripted clients."""

from __future__ import annotations

import base64
import threading
from collections.abc import Sequence

import pytest
from confluent_kafka import KafkaError, KafkaException

from deeptrust.schemas.events import DeadLetterEvent, UploadEvent
from deeptrust.streams import bounded, service
from deeptrust.streams.dead_letters import Tally, dead_letter, size
from deeptrust.streams.errors import DeadLetterRateExceeded, InvalidInput, Reason
from deeptrust.streams.kafka_errors import ServiceStopped
from deeptrust.streams.metrics import StageMetrics
from deeptrust.streams.runner import RunnerSettings, StageRunner
from deeptrust.streams.stage import Output, Result
from deeptrust.streams.topics import Topic
from tests.events import upload_event
from tests.unit.kafka_fakes import FakeCluster, FakeMessage, FakeProducer, error_message

PREFIX = "t."
UPLOADS = f"{PREFIX}uploads.v1"
DETECTED = f"{PREFIX}detected.v1"
DLQ = f"{PREFIX}dlq.v1"


class EchoStage:
    """Emits each upload to detected.v1; fails as scripted."""

    name = "echo"
    input_topic = Topic.UPLOADS
    input_model = UploadEvent

    def __init__(self, poison: Sequence[str] = (), outage_calls: int = 0) -> None:
        self.poison = set(poison)
        self.outage_calls = outage_calls
        self.calls = 0
        self.wrong_count_calls = 0

    def setup(self) -> None:
        pass

    def prepare(self, event: UploadEvent) -> UploadEvent:
        if event.image_id.startswith("invalid"):
            raise InvalidInput(Reason.MISSING_OBJECT, event.image_id)
        return event

    def process(self, items: Sequence[UploadEvent]) -> list[Result]:
        self.calls += 1
        if self.outage_calls > 0:
            self.outage_calls -= 1
            raise ConnectionError("model server down")
        if self.wrong_count_calls > 0:
            self.wrong_count_calls -= 1
            return []
        bad = [item.image_id for item in items if item.image_id in self.poison]
        if bad:
            raise ValueError(f"cannot process {bad[0]}")
        return [[Output(Topic.DETECTED, item)] for item in items]

    def close(self) -> None:
        pass


DEFAULTS: dict[str, object] = {
    "max_batch": 8,
    "max_attempts": 2,
    "backoff_s": 0.0,
    "max_backoff_s": 0.0,
}


@pytest.fixture(autouse=True, params=[0, 2], ids=["inline", "prepared-ahead"])
def prepare_threads(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every path holds with prepare inline and with the next batch prepared ahead."""
    monkeypatch.setitem(DEFAULTS, "prepare_threads", request.param)


def settings(**overrides: object) -> RunnerSettings:
    return RunnerSettings.model_validate(DEFAULTS | overrides)


def run_until(
    cluster: FakeCluster,
    stage: EchoStage,
    done,
    runner_settings: RunnerSettings | None = None,
    metrics: StageMetrics | None = None,
) -> StageMetrics:
    """Run the stage until ``done(cluster)`` holds after a commit (or it raises)."""
    from deeptrust.streams.config import KafkaSettings

    stop = threading.Event()
    previous = cluster.on_commit

    def check() -> None:
        if previous is not None:
            previous()
        if done(cluster):
            stop.set()

    cluster.on_commit = check
    metrics = metrics or StageMetrics(stage.name)
    kafka = KafkaSettings(topic_prefix=PREFIX)
    StageRunner(stage, kafka, runner_settings or settings(), metrics, cluster.factory()).run(stop)
    return metrics


def uploads(cluster: FakeCluster, *image_ids: str) -> None:
    for index, image_id in enumerate(image_ids):
        cluster.append(UPLOADS, upload_event(event_id=f"e-{index}", image_id=image_id), image_id)


def image_ids(cluster: FakeCluster, topic: str) -> list[str]:
    return [record.key.decode() for _, record in cluster.committed_to(topic)]


def sample(metrics: StageMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, {"stage": "echo", **labels})
    return 0.0 if value is None else value


def test_a_fenced_producer_is_replaced_and_the_batch_redone_once():
    cluster = FakeCluster()
    uploads(cluster, "a", "b", "c")
    fenced = KafkaException(KafkaError(KafkaError._FENCED, "old epoch", fatal=True))
    cluster.commit_failures.append(fenced)

    metrics = run_until(cluster, EchoStage(), lambda c: len(c.committed_to(DETECTED)) >= 3)

    assert image_ids(cluster, DETECTED) == ["a", "b", "c"]
    assert cluster.producers == 2
    assert cluster.consumers == 2
    assert sample(metrics, "deeptrust_recoveries_total", cause="fenced") == 1
    assert cluster.committed[(UPLOADS, 0)].offset == 3
    assert all(client.closed for client in cluster.made), "no client is left to dial on"


def test_a_retriable_commit_error_is_retried_on_the_same_clients():
    cluster = FakeCluster()
    uploads(cluster, "a", "b")
    busy = KafkaException(KafkaError(KafkaError.CONCURRENT_TRANSACTIONS, "busy", retriable=True))
    cluster.commit_failures.append(busy)

    run_until(cluster, EchoStage(), lambda c: len(c.committed_to(DETECTED)) >= 2)

    assert image_ids(cluster, DETECTED) == ["a", "b"]
    assert cluster.producers == 1


def test_a_timed_out_transaction_re_creates_the_clients():
    cluster = FakeCluster()
    uploads(cluster, "a", "b")
    timeout = KafkaException(KafkaError(KafkaError._TIMED_OUT, "slow", retriable=True))
    cluster.commit_failures += [timeout] * 5  # the commit call's own retries run out

    metrics = run_until(cluster, EchoStage(), lambda c: len(c.committed_to(DETECTED)) >= 2)

    assert image_ids(cluster, DETECTED) == ["a", "b"]
    assert cluster.producers == 2
    assert sample(metrics, "deeptrust_recoveries_total", cause="timed_out") == 1


def test_a_transactional_call_that_never_returns_is_given_up(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(bounded, "GRACE_S", 0.2)
    cluster = FakeCluster()
    uploads(cluster, "a", "b")
    cluster.stuck_sends = 1
    quick = settings(kafka_timeout_s=0.1)

    try:
        metrics = run_until(
            cluster, EchoStage(), lambda c: len(c.committed_to(DETECTED)) >= 2, quick
        )
    finally:
        cluster.release.set()

    assert image_ids(cluster, DETECTED) == ["a", "b"]
    assert cluster.producers == 2
    assert sample(metrics, "deeptrust_recoveries_total", cause="stuck_call") == 1
    stuck, replacement = (c for c in cluster.made if isinstance(c, FakeProducer))
    assert not stuck.closed, "a producer a call is stuck in is abandoned, not used again"
    assert replacement.closed


def test_a_batch_whose_partitions_were_revoked_is_not_committed():
    cluster = FakeCluster()
    uploads(cluster, "a", "b", "c")
    cluster.revoke_on_consume = 1  # the batch is read, then a rebalance takes it away

    metrics = run_until(cluster, EchoStage(), lambda c: len(c.committed_to(DETECTED)) >= 3)

    assert image_ids(cluster, DETECTED) == ["a", "b", "c"]
    assert cluster.committed[(UPLOADS, 0)].offset == 3
    assert sample(metrics, "deeptrust_recoveries_total", cause="rebalance_in_progress") == 1


def test_failed_authentication_stops_the_service():
    cluster = FakeCluster()
    uploads(cluster, "a")
    cluster.client_errors.append(KafkaError(KafkaError.SASL_AUTHENTICATION_FAILED))

    with pytest.raises(ServiceStopped, match="credentials"):
        run_until(cluster, EchoStage(), lambda c: False)
    assert cluster.records == []


def test_an_authorisation_error_stops_the_service():
    cluster = FakeCluster()
    uploads(cluster, "a")
    cluster.consume_errors.append(error_message(KafkaError.TOPIC_AUTHORIZATION_FAILED))

    with pytest.raises(ServiceStopped, match="not retried"):
        run_until(cluster, EchoStage(), lambda c: False)
    assert cluster.records == []


def test_a_lost_cluster_marks_the_service_not_ready_until_it_answers():
    cluster = FakeCluster()
    uploads(cluster, "a", "b")
    cluster.client_errors.append(KafkaError(KafkaError._ALL_BROKERS_DOWN))
    cluster.unreachable_probes = 1
    metrics = StageMetrics("echo")
    seen: list[tuple[str, bool]] = []

    class Watched(EchoStage):
        def process(self, items):
            seen.append(("processing", metrics.is_ready()))
            return super().process(items)

    one_at_a_time = settings(max_batch=1)
    done = lambda c: len(c.committed_to(DETECTED)) >= 2  # noqa: E731
    run_until(cluster, Watched(), done, one_at_a_time, metrics=metrics)

    # cut off while the first is processed; its commit shows the cluster is back
    assert seen == [("processing", False), ("processing", True)]


def test_clients_that_sat_out_an_outage_are_re_created_once_it_is_over(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setattr(service, "CONNECTION_PROBE_S", 0.0)  # probe on every poll
    cluster = FakeCluster()
    uploads(cluster, "a")
    cluster.client_errors.append(KafkaError(KafkaError._ALL_BROKERS_DOWN))
    cluster.unreachable_probes = 1  # no broker answers, then one does

    metrics = run_until(cluster, EchoStage(), lambda c: len(c.committed_to(DETECTED)) >= 1)

    assert image_ids(cluster, DETECTED) == ["a"]
    assert cluster.producers == 2
    assert sample(metrics, "deeptrust_recoveries_total", cause="reconnected") == 1
    assert all(client.closed for client in cluster.made)


def test_a_poison_pill_is_dead_lettered_alone_after_the_retries():
    cluster = FakeCluster()
    uploads(cluster, "warm")
    uploads(cluster, "a", "b", "pill", "c", "d")
    stage = EchoStage()

    def poison_after_first_batch(c: FakeCluster) -> bool:
        stage.poison = {"pill"}
        return len(c.committed_to(DETECTED)) + len(c.committed_to(DLQ)) >= 6

    metrics = run_until(cluster, stage, poison_after_first_batch, settings(max_batch=1))
    # one at a time first (max_batch=1 reads "warm" alone), then the rest in batches of 1
    assert image_ids(cluster, DETECTED) == ["warm", "a", "b", "c", "d"]
    [(_, letter)] = cluster.committed_to(DLQ)
    event = DeadLetterEvent.model_validate_json(letter.value)
    assert event.reason == "processing_failed"
    assert "ValueError: cannot process pill" in event.detail
    assert sample(metrics, "deeptrust_dead_lettered_total", reason="processing_failed") == 1


def test_a_poison_pill_inside_a_batch_is_found_by_bisection():
    cluster = FakeCluster()
    uploads(cluster, "warm")
    cluster_ids = ["a", "b", "c", "pill", "d", "e", "f"]
    stage = EchoStage()
    first = True

    def after_warm(c: FakeCluster) -> bool:
        nonlocal first
        if first:
            first = False
            uploads(c, *cluster_ids)
            stage.poison = {"pill"}
        return len(c.committed_to(DETECTED)) + len(c.committed_to(DLQ)) >= 8

    run_until(cluster, stage, after_warm)

    assert image_ids(cluster, DETECTED) == ["warm", "a", "b", "c", "d", "e", "f"]
    assert image_ids(cluster, DLQ) == ["pill"]


def test_an_outage_that_hits_every_item_is_retried_not_dead_lettered():
    cluster = FakeCluster()
    uploads(cluster, "warm")
    stage = EchoStage()
    first = True

    def outage_after_warm(c: FakeCluster) -> bool:
        nonlocal first
        if first:
            first = False
            uploads(c, "a", "b", "c")
            stage.outage_calls = 9  # batch attempts, the bisection and the control all fail
        return len(c.committed_to(DETECTED)) >= 4

    metrics = run_until(cluster, stage, outage_after_warm)

    assert image_ids(cluster, DETECTED) == ["warm", "a", "b", "c"]
    assert cluster.committed_to(DLQ) == []
    assert sample(metrics, "deeptrust_failed_batches_total") >= 4


def test_a_stage_returning_the_wrong_number_of_results_is_retried():
    cluster = FakeCluster()
    uploads(cluster, "a", "b")
    stage = EchoStage()
    stage.wrong_count_calls = 1

    metrics = run_until(cluster, stage, lambda c: len(c.committed_to(DETECTED)) >= 2)

    assert image_ids(cluster, DETECTED) == ["a", "b"]
    assert sample(metrics, "deeptrust_failed_batches_total") == 1


def test_the_dead_letter_tally_travels_with_the_committed_offset():
    cluster = FakeCluster()
    uploads(cluster, "a", "invalid-1", "b")

    run_until(cluster, EchoStage(), lambda c: len(c.committed_to(DETECTED)) >= 2)

    assert Tally.decode(cluster.committed[(UPLOADS, 0)].metadata) == Tally(2, 1, 0)


def test_a_restarted_stage_keeps_the_dead_letter_tally_of_its_predecessor():
    cluster = FakeCluster()
    uploads(cluster, *[f"invalid-{i}" for i in range(5)])
    tight = settings(dlq_max_consecutive=8, dlq_min_inputs=1000)
    run_until(cluster, EchoStage(), lambda c: len(c.committed_to(DLQ)) >= 5, tight)
    assert Tally.decode(cluster.committed[(UPLOADS, 0)].metadata).consecutive == 5

    uploads(cluster, *[f"invalid-{i}" for i in range(5, 10)])
    with pytest.raises(DeadLetterRateExceeded, match="in a row"):
        run_until(cluster, EchoStage(), lambda c: False, tight)
    assert len(cluster.committed_to(DLQ)) == 5


def test_a_member_fenced_by_another_with_its_instance_id_stops_and_says_why():
    cluster = FakeCluster()
    uploads(cluster, "a")
    cause = KafkaError(KafkaError.FENCED_INSTANCE_ID).str()
    cluster.consume_errors.append(
        FakeMessage("", 0, -1, b"", [], _error=KafkaError(KafkaError._FATAL, f"Fatal: {cause}"))
    )

    with pytest.raises(ServiceStopped, match="same DEEPTRUST_RUNNER_INSTANCE_ID"):
        run_until(cluster, EchoStage(), lambda c: False)


def test_an_output_over_the_record_limit_dead_letters_its_input_not_the_batch():
    cluster = FakeCluster()
    uploads(cluster, "a")
    # Valid, but its detected event would be over the limit the broker enforces.
    big = upload_event(event_id="e-big", image_id="big", metadata={"note": "x" * 1_000_001})
    cluster.append(UPLOADS, big, "big")
    uploads(cluster, "c")

    metrics = run_until(
        cluster,
        EchoStage(),
        lambda c: len(c.committed_to(DETECTED)) + len(c.committed_to(DLQ)) >= 3,
    )

    assert image_ids(cluster, DETECTED) == ["a", "c"]
    [(_, letter)] = cluster.committed_to(DLQ)
    event = DeadLetterEvent.model_validate_json(letter.value)
    assert (event.original_key, event.reason) == ("big", "output_too_large")
    assert f"{DETECTED}:" in event.detail
    assert len(base64.b64decode(event.original_value_b64)) > 1_000_000, "the input, whole"
    assert sample(metrics, "deeptrust_dead_lettered_total", reason="output_too_large") == 1


def test_a_dead_letter_over_the_topic_limit_keeps_what_fits_and_says_so():
    value = b"v" * 3_000_000
    message = FakeMessage(UPLOADS, 0, 7, value, [("schema", b"upload")], _key=b"k")
    whole = dead_letter("echo", message, InvalidInput(Reason.UNDECODABLE_MESSAGE, "not JSON"))
    assert (
        base64.b64decode(DeadLetterEvent.model_validate_json(whole.value).original_value_b64)
        == value
    )

    cut = dead_letter(
        "echo", message, InvalidInput(Reason.UNDECODABLE_MESSAGE, "not JSON"), 1_000_000
    )
    assert size(cut) <= 1_000_000
    event = DeadLetterEvent.model_validate_json(cut.value)
    kept = base64.b64decode(event.original_value_b64)
    assert value.startswith(kept)
    assert len(kept) > 500_000, "as much as fits, not nothing"
    assert f"truncated from {len(value)} to {len(kept)} bytes" in event.detail
