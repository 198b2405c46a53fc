"""Malformed events on every stage's input topic: each is dead-lettered with its reason, the
stage stays up, and the partition moves on (issue: secrets and inputs at the edges).

The messages are what a buggy or hostile producer sends: bytes that are not UTF-8, not
JSON, JSON of the wrong types, nesting deeper than any parser's stack, a string near the
broker's message limit, a tombstone, headers that lie about the schema or are not UTF-8.
"""

from __future__ import annotations

import json

import pytest

from deeptrust.devtools.local_broker import free_port
from deeptrust.devtools.processes import StageProcess
from deeptrust.schemas.events import DeadLetterEvent
from deeptrust.streams.dead_letters import REASON_HEADER
from deeptrust.streams.reader import read_until
from deeptrust.streams.topics import Topic
from tests.conftest import wait_for
from tests.events import upload_event

pytestmark = pytest.mark.integration

NEAR_LIMIT = 900_000
"""Bytes of one string: under the broker's 1 MB message limit, over it once base64'd."""


def malformed(schema: str) -> list[tuple[str, bytes | None, list[tuple[str, bytes]]]]:
    """(key, value, headers) of every kind of bad message, claiming ``schema`` v1."""
    right = [("schema", schema.encode()), ("schema-version", b"1")]
    valid_body = upload_event().model_dump(mode="json")
    wrong_types = {**valid_body, "event_id": 5, "image_id": ["a"], "size_bytes": "many"}
    return [
        ("not-utf8", b"\xff\xfe\xfd\x00\x80", right),
        ("not-json", b"{this is not json", right),
        ("wrong-types", json.dumps(wrong_types).encode(), right),
        ("deep", b"[" * 200_000 + b"]" * 200_000, right),
        ("huge", json.dumps({**valid_body, "event_id": "x" * NEAR_LIMIT}).encode(), right),
        ("tombstone", None, right),
        ("no-headers", json.dumps(valid_body).encode(), []),
        ("lying-headers", json.dumps(valid_body).encode(), [("schema", b"feedback"), *right[1:]]),
        ("bad-header-bytes", b"{}", [("schema", b"\xff\xfe"), ("schema-version", b"\xc0")]),
    ]


INPUTS = {
    "detect": (Topic.UPLOADS, "upload"),
    "caption": (Topic.DETECTED, "detected"),
    "tag": (Topic.CAPTIONED, "captioned"),
    "moderation": (Topic.ENRICHED, "enriched"),
    "search": (Topic.ENRICHED, "enriched"),
    "drift": (Topic.EMBEDDINGS, "embedding"),
}


def send_and_check(kafka, topics, raw_producer, process, stage: str, topic: Topic, schema: str):
    """Send every malformed message to ``topic``; each is dead-lettered once, all stay up."""
    bad = malformed(schema)
    for key, value, headers in bad:
        raw_producer.produce(topics(topic), key=key.encode(), value=value, headers=headers)
    assert raw_producer.flush(30) == 0
    keys = {key for key, _, _ in bad}

    def all_lettered(got) -> bool:
        mine = {item.event.original_key for item in got if item.event.stage == stage}
        return keys <= mine

    letters = read_until(kafka, topics(Topic.DEAD_LETTERS), DeadLetterEvent, all_lettered, 120)
    assert all_lettered(letters), process.log_tail()
    reasons = {
        item.event.original_key: item.headers[REASON_HEADER]
        for item in letters
        if item.event.stage == stage
    }
    assert reasons["wrong-types"] == "schema_violation"
    assert reasons["no-headers"] == reasons["lying-headers"] == "wrong_schema"
    assert reasons["not-json"] == reasons["deep"] == "undecodable_message"
    assert len(reasons) == len(bad), "each once"
    wait_for(lambda: process.get("/healthz") == 200, 30, f"{stage} healthy")
    assert process.returncode is None


@pytest.mark.parametrize("stage", INPUTS)
def test_every_malformed_message_is_dead_lettered_and_the_stage_stays_up(
    stage, kafka, topics, raw_producer, start_stage
):
    topic, schema = INPUTS[stage]
    process = start_stage(stage)
    send_and_check(kafka, topics, raw_producer, process, stage, topic, schema)


def test_the_alert_notifier_dead_letters_malformed_alerts_and_stays_up(
    kafka, topics, raw_producer, tmp_path
):
    subscriptions = tmp_path / "subscriptions.toml"
    subscriptions.write_text('[[subscription]]\nname = "x"\nurl = "http://127.0.0.1:9/"\n')
    notifier = StageProcess(
        "alert-webhooks",
        {
            "DEEPTRUST_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "DEEPTRUST_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
            "DEEPTRUST_RUNNER_MAX_WAIT_S": "0.1",
        },
        free_port(),
        tmp_path / "notifier.log",
        args=("alerts", "notify", "--subscriptions", str(subscriptions)),
    )
    notifier.start()
    try:
        notifier.wait_ready()
        send_and_check(
            kafka, topics, raw_producer, notifier, "alert-webhooks", Topic.ALERTS, "alert"
        )
    finally:
        notifier.terminate()
