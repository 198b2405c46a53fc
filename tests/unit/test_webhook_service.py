"""The notifier's handling of one alert's deliveries: one broken subscription stops no other.

Only the part between Kafka and HTTP runs here (no broker, no HTTP): deliveries to a
subscription that raise instead of returning must become that subscription's dead letter.
The integration test runs the whole service on the real broker.
"""

import threading

from prometheus_client import CollectorRegistry

from deeptrust.schemas.events import AlertEvent, DeadLetterEvent
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.errors import Reason
from deeptrust.streams.metrics import StageMetrics
from deeptrust.streams.runner import RunnerSettings
from deeptrust.webhooks.delivery import Delivery, WebhookSender
from deeptrust.webhooks.metrics import WebhookMetrics
from deeptrust.webhooks.retry import RetryPolicy
from deeptrust.webhooks.service import SUBSCRIPTION_DLQ_HEADER, AlertWebhookService
from deeptrust.webhooks.subscriptions import Subscription
from tests.events import alert_event
from tests.unit.kafka_fakes import FakeCluster

ALERT = alert_event()


class BuggySender(WebhookSender):
    """Delivers to every subscription but 'buggy', for which it raises."""

    def deliver(self, subscription: Subscription, alert: AlertEvent) -> Delivery:
        if subscription.name == "buggy":
            raise ValueError("Port out of range 0-65535")
        return Delivery(subscription, True, 1)


def subscriptions() -> list[Subscription]:
    return [
        Subscription(name=name, url=f"http://receiver/{name}")
        for name in ("first", "buggy", "last")
    ]


def test_a_delivery_that_raises_is_that_subscriptions_failure_only():
    subs = subscriptions()
    registry = CollectorRegistry()
    webhook_metrics = WebhookMetrics(registry, [s.name for s in subs])
    sender = BuggySender(RetryPolicy(), webhook_metrics, sleep=lambda _: None)
    cluster = FakeCluster()
    cluster.append("unit.alerts.v1", ALERT, ALERT.subject)
    stop = threading.Event()
    cluster.on_commit = stop.set
    notifier = AlertWebhookService(
        subs,
        sender,
        webhook_metrics,
        KafkaSettings(topic_prefix="unit."),
        RunnerSettings(),
        StageMetrics("alert-webhooks", registry),
        clients=cluster.factory(),
    )

    notifier.run(stop)

    [(_, letter)] = cluster.committed_to("unit.dlq.v1")
    assert (SUBSCRIPTION_DLQ_HEADER, b"buggy") in letter.headers
    event = DeadLetterEvent.model_validate_json(letter.value)
    assert event.reason == Reason.UNDELIVERABLE_ALERT.value
    assert event.detail.startswith("subscription buggy (http://receiver/buggy): not delivered")
    assert event.detail.endswith("internal error: ValueError: Port out of range 0-65535")
    assert cluster.committed[("unit.alerts.v1", 0)].offset == 1
