"""``alerts notify`` delivers alerts to real HTTP receivers from the real alerts topic.

Four receivers run in this process: a healthy one (signed), one that answers 503 twice
before accepting, one that always fails (its alert must end on dlq.v1 while the service
carries on), and one subscribed to another kind that must receive nothing. The notifier
runs as its own process, as it does in a pod.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from deeptrust.devtools.local_broker import free_port
from deeptrust.devtools.processes import StageProcess
from deeptrust.schemas.events import AlertEvent, DeadLetterEvent
from deeptrust.streams.codec import encode
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.reader import read_until
from deeptrust.streams.topics import Topic, TopicNames
from deeptrust.webhooks.signing import verify
from tests.conftest import wait_for

pytestmark = pytest.mark.integration

SECRET = "healthy-signing-secret"


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def event_id(self) -> str:
        return self.headers["X-DeepTrust-Event-Id"]


@dataclass
class Receiver:
    """A webhook endpoint on a free port; ``answer(n)`` is the status of its n-th request."""

    answer: Callable[[int], int]
    requests: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with lock:
                    receiver.requests.append(Received(dict(self.headers.items()), body))
                    status = receiver.answer(len(receiver.requests))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                """Quiet."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def event_ids(self) -> list[str]:
        return [request.event_id for request in self.requests]


def webhook_sample(notifier: StageProcess, name: str, **labels: str) -> float:
    """One sample of the notifier's own families, which carry no ``stage`` label."""
    return notifier.metrics().get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def receivers() -> Iterator[dict[str, Receiver]]:
    started = {
        "healthy": Receiver(lambda n: 200),
        "flaky": Receiver(lambda n: 503 if n <= 2 else 200),
        "broken": Receiver(lambda n: 500),
        "other": Receiver(lambda n: 200),
    }
    yield started
    for receiver in started.values():
        receiver.server.shutdown()
        receiver.server.server_close()


@pytest.fixture
def subscriptions(tmp_path: Path, receivers: dict[str, Receiver]) -> Path:
    r = receivers
    path = tmp_path / "subscriptions.toml"
    path.write_text(
        f"""
[retry]
max_attempts = 3
initial_backoff_s = 0.05
max_backoff_s = 0.2

[[subscription]]
name = "healthy"
url = "{r["healthy"].url}"
kinds = ["drift"]
min_severity = "warning"
secret_env = "TEST_HEALTHY_SECRET"

[[subscription]]
name = "flaky"
url = "{r["flaky"].url}"
kinds = ["drift"]

[[subscription]]
name = "broken"
url = "{r["broken"].url}"
kinds = ["drift"]
min_severity = "critical"
timeout_s = 5

[[subscription]]
name = "other"
url = "{r["other"].url}"
kinds = ["retrain"]
"""
    )
    return path


@pytest.fixture
def start_notifier(
    kafka: KafkaSettings, subscriptions: Path, tmp_path: Path
) -> Iterator[Callable[[], StageProcess]]:
    started: list[StageProcess] = []

    def start() -> StageProcess:
        notifier = StageProcess(
            "alert-webhooks",
            {
                "DEEPTRUST_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
                "DEEPTRUST_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
                "DEEPTRUST_RUNNER_MAX_WAIT_S": "0.1",
                "TEST_HEALTHY_SECRET": SECRET,
            },
            free_port(),
            tmp_path / f"notifier-{len(started)}.log",
            args=("alerts", "notify", "--subscriptions", str(subscriptions)),
        )
        notifier.start()
        started.append(notifier)
        notifier.wait_ready()
        return notifier

    yield start
    for notifier in started:
        notifier.terminate()


def send_alerts(raw_producer, topics: TopicNames, *specs: tuple[str, str, str]) -> list[AlertEvent]:
    """Produce alerts (id, kind, severity) on one subject, so one partition keeps their order."""
    alerts = []
    for event_id, kind, severity in specs:
        alert = AlertEvent(
            event_id=event_id,
            kind=kind,
            severity=severity,
            subject="mobilenet-v2@1",
            summary=f"{kind} {severity}",
            raised_at=datetime.now(UTC),
            source="test",
            labels={"model": "mobilenet-v2"},
        )
        encoded = encode(alert, alert.key)
        raw_producer.produce(
            topics(Topic.ALERTS), key=encoded.key, value=encoded.value, headers=encoded.headers
        )
        alerts.append(alert)
    assert raw_producer.flush(10) == 0
    return alerts


def test_alerts_reach_subscribers_with_retries_and_dead_letters(
    kafka, topics, raw_producer, receivers, start_notifier
):
    notifier = start_notifier()
    alerts = send_alerts(
        raw_producer,
        topics,
        ("a1", "drift", "warning"),  # healthy, flaky (after two 503s)
        ("a2", "drift", "critical"),  # healthy, flaky, broken (dead-lettered)
        ("a3", "drift", "info"),  # flaky only
        ("a4", "drift-reference", "critical"),  # nobody
        ("a5", "drift", "warning"),  # after the dead letter: healthy, flaky
    )
    healthy, flaky, broken, other = (receivers[n] for n in ("healthy", "flaky", "broken", "other"))

    wait_for(lambda: healthy.event_ids() == ["a1", "a2", "a5"], 60, "healthy's three alerts")
    wait_for(
        lambda: notifier.metric("deeptrust_consumed_total", stage="alert-webhooks") == 5,
        30,
        "all five alerts consumed",
    )
    wait_for(lambda: flaky.event_ids()[-1:] == ["a5"], 30, "flaky's last alert")

    # Healthy: the alerts it asked for, signed, with their event ids.
    by_id = {alert.event_id: alert for alert in alerts}
    for request in healthy.requests:
        assert AlertEvent.model_validate_json(request.body) == by_id[request.event_id]
        assert request.headers["X-DeepTrust-Subscription"] == "healthy"
        assert request.headers["Content-Type"] == "application/json"
        assert verify(SECRET, request.body, request.headers["X-DeepTrust-Signature"])
    # Flaky: a1 three times (503, 503, 200), then each later drift alert once; unsigned.
    assert flaky.event_ids() == ["a1", "a1", "a1", "a2", "a3", "a5"]
    assert [r.headers["X-DeepTrust-Attempt"] for r in flaky.requests[:3]] == ["1", "2", "3"]
    assert "X-DeepTrust-Signature" not in flaky.requests[0].headers
    # Broken: only the critical alert, three attempts; other: nothing at all.
    assert broken.event_ids() == ["a2", "a2", "a2"]
    assert other.requests == []
    assert notifier.returncode is None, "a dead letter does not stop the service"

    # The undeliverable alert is on dlq.v1, whole, with its reason and the receiver.
    (letter,) = read_until(
        kafka, topics(Topic.DEAD_LETTERS), DeadLetterEvent, lambda got: len(got) >= 1, 30
    )
    event = letter.event
    assert (event.stage, event.reason) == ("alert-webhooks", "undeliverable_alert")
    assert f"subscription broken ({broken.url})" in event.detail
    assert "after 3 attempt(s): HTTP 500" in event.detail
    assert event.source_topic == topics(Topic.ALERTS)
    original = AlertEvent.model_validate(json.loads(base64.b64decode(event.original_value_b64)))
    assert original == by_id["a2"]
    assert letter.headers["dlq-reason"] == "undeliverable_alert"
    assert letter.headers["dlq-subscription"] == "broken"

    # The counters say the same.
    def deliveries(name: str, outcome: str) -> float:
        return webhook_sample(
            notifier, "deeptrust_webhook_deliveries_total", subscription=name, outcome=outcome
        )

    wait_for(lambda: deliveries("broken", "dead_lettered") == 1, 10, "the dead-letter count")
    expected = {
        "healthy": (3, 0, 0),
        "flaky": (4, 2, 0),
        "broken": (0, 2, 1),
        "other": (0, 0, 0),
    }
    for name, (delivered, retried, dead) in expected.items():
        counted = tuple(deliveries(name, o) for o in ("delivered", "retried", "dead_lettered"))
        assert counted == (delivered, retried, dead), name
    assert (
        notifier.metric(
            "deeptrust_dead_lettered_total", stage="alert-webhooks", reason="undeliverable_alert"
        )
        == 1
    )
    seconds = "deeptrust_webhook_request_seconds_count"
    assert webhook_sample(notifier, seconds, subscription="broken") == 3
    assert notifier.get("/healthz") == 200

    # SIGTERM stops it cleanly; a restart in the same group redelivers nothing committed.
    assert notifier.terminate() == 0
    restarted = start_notifier()
    send_alerts(raw_producer, topics, ("a6", "drift", "warning"))
    wait_for(lambda: healthy.event_ids()[-1:] == ["a6"], 60, "the alert after the restart")
    assert healthy.event_ids() == ["a1", "a2", "a5", "a6"]
    assert broken.event_ids() == ["a2", "a2", "a2"]
    assert restarted.metric("deeptrust_consumed_total", stage="alert-webhooks") == 1
