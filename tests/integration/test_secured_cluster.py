"""The pipeline on a secured broker: SASL_SSL (SCRAM-SHA-512 over TLS) and ACLs.

Each stage logs in as its own principal, which may read only its input, write only its
outputs and the dead-letter topic, join only its group and run transactions only under its
group's name. A stage with a wrong password, or one that reaches for another stage's topic,
stops at start-up and says why: neither is a fault that waiting can fix.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deeptrust.devtools.local_broker import LocalBroker, free_port
from deeptrust.devtools.processes import StageProcess
from deeptrust.devtools.secured_kafka import BrokerSecurity, add_principal, stage_acls
from deeptrust.processors.search_index import SearchIndex
from deeptrust.schemas.events import DriftReportEvent, EnrichedEvent, Event, ModerationEvent
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.objectstore import LocalObjectStore
from deeptrust.streams.producer import UploadProducer
from deeptrust.streams.reader import Received, read_until
from deeptrust.streams.topics import Topic, TopicNames, create_topics
from tests.conftest import wait_for
from tests.images import sample_paths, small_photo

pytestmark = pytest.mark.integration
PREFIX = "secured."
TOPICS = TopicNames(PREFIX)
STAGES = {  # stage: (reads, writes), as docs/deploy.md's table lists them
    "detect": ([Topic.UPLOADS], [Topic.DETECTED, Topic.EMBEDDINGS]),
    "caption": ([Topic.DETECTED], [Topic.CAPTIONED]),
    "tag": ([Topic.CAPTIONED], [Topic.ENRICHED]),
    "moderation": ([Topic.ENRICHED], [Topic.MODERATION]),
    "search": ([Topic.ENRICHED], []),
    "drift": (
        [Topic.EMBEDDINGS, Topic.DRIFT_STATE],
        [Topic.DRIFT, Topic.ALERTS, Topic.RETRAIN, Topic.DRIFT_STATE],
    ),
}
# Small drift windows, so a report comes out of a test's worth of uploads.
DRIFT = {
    "DEEPTRUST_DRIFT_REFERENCE_SIZE": "40",
    "DEEPTRUST_DRIFT_WINDOW_SIZE": "20",
    "DEEPTRUST_DRIFT_MIN_COUNT": "20",
}
UPLOADS = 64


@pytest.fixture(scope="module")
def secured(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LocalBroker, BrokerSecurity]]:
    home = tmp_path_factory.mktemp("secured")
    security = BrokerSecurity(home / "tls")
    broker = LocalBroker(
        home / "kafka", port=free_port(), controller_port=free_port(), security=security
    )
    broker.start(timeout_s=180)
    try:
        admin = security.admin_settings(broker.bootstrap_servers, topic_prefix=PREFIX)
        create_topics(admin, partitions=2)
        for stage, (reads, writes) in STAGES.items():
            add_principal(
                admin, stage, f"{stage}-pw", stage_acls(TOPICS, PREFIX + stage, reads, writes)
            )
        # Detect's group and transactional ids, but caption's input instead of its own.
        misgranted = stage_acls(TOPICS, PREFIX + "detect", [Topic.DETECTED], [Topic.DETECTED])
        add_principal(admin, "misgranted", "misgranted-pw", misgranted)
        uploader = stage_acls(TOPICS, PREFIX + "uploader", [], [Topic.UPLOADS])
        add_principal(admin, "uploader", "uploader-pw", uploader)
        yield broker, security
    finally:
        broker.stop()


def environment(settings: KafkaSettings, store: LocalObjectStore) -> dict[str, str]:
    assert settings.sasl_password is not None
    return {
        "DEEPTRUST_KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "DEEPTRUST_KAFKA_TOPIC_PREFIX": settings.topic_prefix,
        "DEEPTRUST_KAFKA_SECURITY_PROTOCOL": settings.security_protocol,
        "DEEPTRUST_KAFKA_SASL_MECHANISM": str(settings.sasl_mechanism),
        "DEEPTRUST_KAFKA_SASL_USERNAME": str(settings.sasl_username),
        "DEEPTRUST_KAFKA_SASL_PASSWORD": settings.sasl_password.get_secret_value(),
        "DEEPTRUST_KAFKA_SSL_CA_LOCATION": str(settings.ssl_ca_location),
        "DEEPTRUST_OBJECT_STORE_ROOT": str(store.root),
        "DEEPTRUST_RUNNER_MAX_WAIT_S": "0.1",
    }


def stage_as(
    name: str,
    user: str,
    password: str,
    secured,
    store: LocalObjectStore,
    tmp_path: Path,
    **extra: str,
) -> StageProcess:
    broker, security = secured
    settings = security.settings(broker.bootstrap_servers, user, password, topic_prefix=PREFIX)
    env = {**environment(settings, store), **extra}
    stage = StageProcess(name, env, free_port(), tmp_path / f"{name}-as-{user}.log")
    stage.start()
    return stage


def test_the_pipeline_runs_with_a_principal_per_stage(secured, tmp_path):
    broker, security = secured
    store = LocalObjectStore.at(tmp_path / "objects")
    search_db = tmp_path / "search.db"
    extra = {
        "DEEPTRUST_MODERATION_SAMPLE_RATE": "1.0",  # every image reaches the review queue
        "DEEPTRUST_SEARCH_DB": str(search_db),
        "DEEPTRUST_DRIFT_REFERENCE_DIR": str(tmp_path / "references"),
        **DRIFT,
    }
    stages = [
        stage_as(name, name, f"{name}-pw", secured, store, tmp_path, **extra) for name in STAGES
    ]
    try:
        for stage in stages:
            stage.wait_ready(120)
        uploader = security.settings(
            broker.bootstrap_servers, "uploader", "uploader-pw", topic_prefix=PREFIX
        )
        uploads = UploadProducer(uploader, store, source="test")
        photos = [small_photo(p, 96) for p in sample_paths()]
        sent = [
            uploads.upload(photos[n % len(photos)], "p.jpg", image_id=f"secured-{n}").image_id
            for n in range(UPLOADS)
        ]
        uploads.flush()
        admin = security.admin_settings(broker.bootstrap_servers, topic_prefix=PREFIX)

        def every(topic: Topic, schema: type[Event]) -> set[str]:
            def arrived(got: list[Received[Any]]) -> bool:
                return set(sent) <= {item.event.image_id for item in got}

            got = read_until(admin, TOPICS(topic), schema, arrived, 120)
            return {item.event.image_id for item in got}

        assert every(Topic.ENRICHED, EnrichedEvent) == set(sent)
        assert every(Topic.MODERATION, ModerationEvent) == set(sent)
        reports = read_until(admin, TOPICS(Topic.DRIFT), DriftReportEvent, bool, 120)
        assert reports[0].event.window.size >= 20
        index = SearchIndex(search_db)
        try:
            wait_for(lambda: index.count() == UPLOADS, 60, "the search index to hold every image")
        finally:
            index.close()
        for stage in stages:
            assert stage.returncode is None, f"{stage.name} stopped:\n{stage.log_tail()}"
    finally:
        for stage in stages:
            stage.terminate()


@pytest.mark.parametrize(
    ("stage", "user", "password", "said"),
    [
        ("detect", "detect", "not-the-password", "Authentication failed"),
        ("detect", "caption", "caption-pw", "Transactional Id authorization failed"),
        ("detect", "misgranted", "misgranted-pw", "Topic authorization failed"),
    ],
    ids=["wrong-password", "another-stage's-principal", "not-its-input-topic"],
)
def test_a_stage_that_may_not_run_stops_at_start_up_saying_why(
    secured, tmp_path, stage, user, password, said
):
    store = LocalObjectStore.at(tmp_path / "objects")
    process = stage_as(stage, user, password, secured, store, tmp_path)
    try:
        wait_for(lambda: process.returncode is not None, 90, f"{stage} as {user} to stop")
        assert process.returncode != 0
        log = process.log_tail(60)
        assert said.lower() in log.lower(), log
        assert "re-creating the clients" not in log, "a retry loop, not a stop"
    finally:
        process.terminate()
