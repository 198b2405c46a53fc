"""One real Kafka broker per test session; each test gets its own topic prefix.

The broker is the project's own (``deeptrust.devtools.local_broker``): Kafka 4.3.1 from Maven
Central, KRaft, on free loopback ports, in a temporary directory.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer

from deeptrust.devtools.local_broker import LocalBroker, free_port
from deeptrust.devtools.local_cluster import LocalCluster
from deeptrust.devtools.local_s3 import LocalS3
from deeptrust.devtools.processes import StageProcess
from deeptrust.schemas.events import UploadEvent
from deeptrust.streams.codec import encode
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.objectstore import LocalObjectStore
from deeptrust.streams.producer import UploadProducer
from deeptrust.streams.topics import Topic, TopicNames, create_topics


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    home = tmp_path_factory.mktemp("kafka")
    local = LocalBroker(home, port=free_port(), controller_port=free_port())
    local.start(timeout_s=180)
    yield local
    # Clients the tests dropped but a reference cycle still holds would go on dialling the
    # stopped broker until the process exits: collect them first.
    gc.collect()
    local.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalS3]:
    """A real S3 API server (moto's) for the session; each test makes its own bucket."""
    server = LocalS3(tmp_path_factory.mktemp("s3"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """Three KRaft nodes of a test's own (replication 3, min ISR 2), for rolling restarts."""
    local = LocalCluster.on_free_ports(tmp_path / "cluster", brokers=3)
    try:
        local.start(timeout_s=180)
        yield local
    finally:
        local.stop()


@pytest.fixture
def kafka(broker: LocalBroker) -> KafkaSettings:
    settings = KafkaSettings(
        bootstrap_servers=broker.bootstrap_servers, topic_prefix=f"t{uuid.uuid4().hex[:10]}."
    )
    create_topics(settings, partitions=3)
    return settings


@pytest.fixture
def topics(kafka: KafkaSettings) -> TopicNames:
    return TopicNames(kafka.topic_prefix)


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore.at(tmp_path / "objects")


@pytest.fixture
def uploads(kafka: KafkaSettings, store: LocalObjectStore) -> Iterator[UploadProducer]:
    producer = UploadProducer(kafka, store, source="test")
    yield producer
    producer.close()  # or it dials the broker until collected, long after a test stops it


@pytest.fixture
def raw_producer(kafka: KafkaSettings) -> Iterator[Producer]:
    producer = Producer(kafka.client_config())
    yield producer
    producer.flush(10)
    producer.purge()
    producer.close()


StartStage = Callable[..., StageProcess]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Iterator[None]:
    """Keep each phase's report on the test, so fixtures can tell that it failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def start_stage(
    kafka: KafkaSettings, store: LocalObjectStore, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[StartStage]:
    """Start a stage process against this test's topics; all are stopped at the end.

    When the test failed, every stage still running first prints its threads' stacks into
    its log: a stalled stage shows where it is stuck.
    """
    started: list[StageProcess] = []

    def start(name: str, *, module: str | None = None, **env: str) -> StageProcess:
        """Start stage ``name``; with ``module``, ``python -m MODULE`` runs it instead."""
        stage = StageProcess(
            name,
            {
                "DEEPTRUST_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
                "DEEPTRUST_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
                "DEEPTRUST_OBJECT_STORE_ROOT": str(store.root),
                "DEEPTRUST_SEARCH_DB": str(tmp_path / "search.db"),
                "DEEPTRUST_RUNNER_MAX_WAIT_S": "0.1",
                **env,
            },
            free_port(),
            tmp_path / "logs" / f"{name}-{len(started)}.log",
            **({} if module is None else {"program": (sys.executable, "-m", module)}),
        )
        stage.start()
        started.append(stage)
        stage.wait_ready()
        return stage

    yield start
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        for stage in started:
            stage.dump_stacks()
    for stage in started:
        stage.terminate()


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail the test with ``what`` after the deadline."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.05)


def send_raw_upload(producer: Producer, topics: TopicNames, event: UploadEvent) -> None:
    """Emit an upload event without storing anything (for events that point nowhere)."""
    encoded = encode(event, key=event.image_id)
    producer.produce(
        topics(Topic.UPLOADS), key=encoded.key, value=encoded.value, headers=encoded.headers
    )
    producer.flush(10)


def run_cli(
    kafka: KafkaSettings,
    *args: str,
    timeout_s: float = 120,
    env: dict[str, str] | None = None,
    fails: bool = False,
) -> str:
    """Run ``deeptrust ARGS...`` against this test's topics; return its stdout.

    With ``fails`` the command must exit non-zero, and its stdout and stderr come back.
    """
    finished = subprocess.run(
        [sys.executable, "-m", "deeptrust.cli", *args],
        env={
            **os.environ,
            **(env or {}),
            "DEEPTRUST_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "DEEPTRUST_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        },
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if fails:
        assert finished.returncode != 0, finished.stdout
        return finished.stdout + finished.stderr
    assert finished.returncode == 0, finished.stdout + finished.stderr
    return finished.stdout
