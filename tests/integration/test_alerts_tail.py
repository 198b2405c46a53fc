"""``deeptrust alerts tail`` prints the alerts a subscriber asked for, from the real topic."""

from datetime import UTC, datetime

import pytest

from deeptrust.schemas.events import AlertEvent
from deeptrust.streams.codec import encode
from deeptrust.streams.topics import Topic
from tests.conftest import run_cli

pytestmark = pytest.mark.integration


def test_tail_filters_by_kind_and_severity(kafka, topics, raw_producer):
    for index, (kind, severity) in enumerate(
        [
            ("drift-reference", "info"),
            ("drift", "warning"),
            ("other", "critical"),
            ("drift", "critical"),
        ]
    ):
        alert = AlertEvent(
            event_id=f"a{index}",
            kind=kind,
            severity=severity,
            subject="mobilenet-v2@1",
            summary=f"alert {index}",
            raised_at=datetime.now(UTC),
            source="test",
        )
        encoded = encode(alert, alert.key)
        raw_producer.produce(
            topics(Topic.ALERTS), key=encoded.key, value=encoded.value, headers=encoded.headers
        )
    assert raw_producer.flush(10) == 0

    tailed = run_cli(
        kafka,
        *("alerts", "tail", "--kind", "drift", "--severity", "warning"),
        *("--from-beginning", "--max", "2"),
        timeout_s=60,
    )
    lines = tailed.splitlines()
    assert [line.split(": ", 1)[1] for line in lines] == ["alert 1", "alert 3"]
    assert "WARNING" in lines[0]
    assert "CRITICAL" in lines[1]
