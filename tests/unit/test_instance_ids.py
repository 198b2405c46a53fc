"""What a replica's clients are named after: a stable id when one is given, else its own.

Two replicas started without an id must never share a transactional id or a static member
id (they would fence each other forever); one given an id keeps it, so its restart fences
the dead process at once; drift, which must never run twice, keeps a fixed id instead.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from deeptrust.drift.service import DriftService
from deeptrust.drift.settings import DriftSettings
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.exactly_once import consumer_config, producer_config
from deeptrust.streams.kafka_errors import ServiceStopped
from deeptrust.streams.metrics import StageMetrics
from deeptrust.streams.redrive_kafka import RedriveSettings
from deeptrust.streams.runner import RunnerSettings, StageRunner
from tests.unit.kafka_fakes import FakeClients, FakeCluster, FakeConsumer, FakeProducer
from tests.unit.test_stage_runner import DETECTED, PREFIX, EchoStage, settings, uploads

GROUP = "t.detect"
KAFKA = KafkaSettings(topic_prefix=PREFIX)


@pytest.fixture(autouse=True)
def no_id_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEEPTRUST_RUNNER_INSTANCE_ID", raising=False)


def test_two_replicas_without_an_id_never_share_a_transactional_id():
    first, second = RunnerSettings(), RunnerSettings()

    first_id = producer_config(KAFKA, GROUP, first)["transactional.id"]
    second_id = producer_config(KAFKA, GROUP, second)["transactional.id"]

    assert first_id != second_id
    assert first_id.startswith(f"{GROUP}-")
    assert second_id.startswith(f"{GROUP}-")
    for replica in (first, second):
        assert "group.instance.id" not in consumer_config(KAFKA, GROUP, replica), "dynamic"


def test_a_process_keeps_its_random_id_for_every_client_it_creates():
    replica = RunnerSettings()

    ids = {producer_config(KAFKA, GROUP, replica)["transactional.id"] for _ in range(3)}

    assert len(ids) == 1, "re-created clients must fence the ones they replace"


def test_a_configured_id_names_the_transactional_id_and_the_static_member(monkeypatch):
    monkeypatch.setenv("DEEPTRUST_RUNNER_INSTANCE_ID", "dt-deeptrust-detect-2")
    replica = RunnerSettings()

    assert producer_config(KAFKA, GROUP, replica)["transactional.id"] == (
        "t.detect-dt-deeptrust-detect-2"
    )
    consumer = consumer_config(KAFKA, GROUP, replica)
    assert consumer["group.instance.id"] == "t.detect-dt-deeptrust-detect-2"
    assert consumer["group.id"] == GROUP
    restarted = RunnerSettings()
    assert producer_config(KAFKA, GROUP, restarted) == producer_config(KAFKA, GROUP, replica)


@pytest.mark.parametrize("blank", ["", "  "])
def test_a_blank_id_counts_as_none(monkeypatch, blank):
    monkeypatch.setenv("DEEPTRUST_RUNNER_INSTANCE_ID", blank)
    replica = RunnerSettings()

    assert replica.instance_id is None
    assert replica.identity.stable is False
    assert "group.instance.id" not in consumer_config(KAFKA, GROUP, replica)


def test_drift_without_an_id_takes_a_fixed_one_so_a_second_copy_collides():
    unset = RunnerSettings(max_batch=7).singleton()
    assert (unset.identity.id, unset.identity.stable, unset.max_batch) == ("0", True, 7)
    assert RunnerSettings().singleton().identity == unset.identity
    given = RunnerSettings(instance_id="dt-deeptrust-drift-0").singleton()
    assert given.identity.id == "dt-deeptrust-drift-0"


def test_the_redrive_keeps_its_one_operator_id():
    config = producer_config(KAFKA, "t.dlq-redrive", RedriveSettings())
    assert config["transactional.id"] == "t.dlq-redrive-operator"


class RecordingClients(FakeClients):
    """The fakes, keeping the configuration of every client the runtime creates."""

    def __init__(self, cluster: FakeCluster) -> None:
        super().__init__(cluster)
        self.consumer_configs: list[dict[str, Any]] = []
        self.producer_configs: list[dict[str, Any]] = []

    def consumer(self, config: dict[str, Any]) -> FakeConsumer:
        self.consumer_configs.append(config)
        return super().consumer(config)

    def producer(self, config: dict[str, Any]) -> FakeProducer:
        self.producer_configs.append(config)
        return super().producer(config)


def run_stage(runner: RunnerSettings, clients: RecordingClients, outputs: int) -> None:
    stop = threading.Event()
    clients.cluster.on_commit = lambda: (
        stop.set() if len(clients.cluster.committed_to(DETECTED)) >= outputs else None
    )
    StageRunner(EchoStage(), KAFKA, runner, StageMetrics("echo"), clients).run(stop)


def test_a_stage_without_an_id_recovers_under_its_own_random_id_as_a_dynamic_member():
    cluster = FakeCluster()
    uploads(cluster, "a", "b")
    cluster.commit_failures.append(
        KafkaException(KafkaError(KafkaError._FENCED, "old epoch", fatal=True))
    )
    first, second = RecordingClients(cluster), RecordingClients(FakeCluster())
    uploads(second.cluster, "c")

    run_stage(settings(), first, outputs=2)
    run_stage(settings(), second, outputs=1)

    ids = [config["transactional.id"] for config in first.producer_configs]
    assert len(ids) == 2, "the fenced producer was replaced"
    assert ids[0] == ids[1], "the new producer fences the old one under the same id"
    (other,) = {config["transactional.id"] for config in second.producer_configs}
    assert other != ids[0], "another replica gets another id"
    for config in first.consumer_configs + second.consumer_configs:
        assert "group.instance.id" not in config
        assert config["group.id"] == "t.echo"


def test_a_stage_with_an_id_is_a_static_member_under_it():
    clients = RecordingClients(FakeCluster())
    uploads(clients.cluster, "a")

    run_stage(settings(instance_id="dt-deeptrust-echo-1"), clients, outputs=1)

    (producer,) = clients.producer_configs
    (consumer,) = clients.consumer_configs
    assert producer["transactional.id"] == "t.echo-dt-deeptrust-echo-1"
    assert consumer["group.instance.id"] == "t.echo-dt-deeptrust-echo-1"


class RefusingClients(RecordingClients):
    """Keep the producer's configuration, then refuse it as a wrong setting would."""

    def producer(self, config: dict[str, Any]) -> FakeProducer:
        self.producer_configs.append(config)
        raise KafkaException(KafkaError(KafkaError._INVALID_ARG, "refused by the test"))


def test_the_drift_service_runs_under_the_fixed_id_without_one_configured(tmp_path):
    clients = RefusingClients(FakeCluster())
    drift = DriftService(
        DriftSettings(reference_dir=tmp_path),
        KAFKA,
        RunnerSettings(),
        StageMetrics("drift"),
        clients=clients,
    )

    with pytest.raises(ServiceStopped, match="refused by the test"):
        drift.run(threading.Event())

    (producer,) = clients.producer_configs
    assert producer["transactional.id"] == "t.drift-0"
