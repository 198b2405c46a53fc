"""The notifier's handling of one alert's deliveries: one broken subscription stops no other.

Only the part between Kafka and HTTP runs here (no broker, no HTTP): deliveries to a
subscription that raise instead of returning must become that subscription's dead letter.
The integration test runs the whole service on the real broker.
"""

from concurrent.futures import ThreadPoolExecutor

from prometheus_client import CollectorRegistry

from deeptrust.webhooks.delivery import Delivery, WebhookSender
from deeptrust.webhooks.metrics import WebhookMetrics
from deeptrust.webhooks.retry import RetryPolicy
from deeptrust.webhooks.service import AlertWebhookService, _undeliverable
from deeptrust.webhooks.subscriptions import Subscription
from schemas.events import AlertEvent
from streams.config import KafkaSettings
from streams.errors import Reason
from streams.metrics import StageMetrics
from streams.runner import RunnerSettings
from tests.events import alert_event

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


def service(subs: list[Subscription]) -> AlertWebhookService:
    registry = CollectorRegistry()
    webhook_metrics = WebhookMetrics(registry, [s.name for s in subs])
    sender = BuggySender(RetryPolicy(), webhook_metrics, sleep=lambda _: None)
    return AlertWebhookService(
        subs,
        sender,
        webhook_metrics,
        KafkaSettings(bootstrap_servers="127.0.0.1:1", topic_prefix="unit."),
        RunnerSettings(),
        StageMetrics("alert-webhooks", registry),
    )


def test_a_delivery_that_raises_is_that_subscriptions_failure_only():
    subs = subscriptions()
    notifier = service(subs)
    with ThreadPoolExecutor(max_workers=len(subs)) as pool:
        deliveries = notifier._deliver(ALERT, subs, pool)
    assert [(d.subscription.name, d.delivered) for d in deliveries] == [
        ("first", True),
        ("buggy", False),
        ("last", True),
    ]
    failed = deliveries[1]
    assert failed.last_error == "internal error: ValueError: Port out of range 0-65535"
    letter = _undeliverable(failed)
    assert letter.reason is Reason.UNDELIVERABLE_ALERT
    assert letter.detail.startswith("subscription buggy (http://receiver/buggy): not delivered")
