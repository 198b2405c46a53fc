"""One alert to one subscriber: headers, signature, retries and giving up (HTTP stubbed).

The HTTP side is httpx's MockTransport here; the integration test posts to real servers.
"""

import json

import httpx
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from deeptrust.schemas.events import AlertEvent
from deeptrust.webhooks.delivery import WebhookSender
from deeptrust.webhooks.metrics import WebhookMetrics
from deeptrust.webhooks.retry import RetryPolicy
from deeptrust.webhooks.signing import verify
from deeptrust.webhooks.subscriptions import Subscription
from tests.events import alert_event

ALERT = alert_event()
POLICY = RetryPolicy(max_attempts=4, initial_backoff_s=1.0, max_backoff_s=3.0)


class Receiver:
    """Answers with the given statuses in turn (the last one forever); keeps the requests."""

    def __init__(self, *answers: int | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return httpx.Response(answer, text="no such hook" if answer == 404 else "")


def sender_for(receiver: Receiver) -> tuple[WebhookSender, list[float], CollectorRegistry]:
    waits: list[float] = []
    registry = CollectorRegistry()
    sender = WebhookSender(
        POLICY,
        WebhookMetrics(registry, ["hook"]),
        httpx.Client(transport=httpx.MockTransport(receiver)),
        sleep=waits.append,
    )
    return sender, waits, registry


def count(registry: CollectorRegistry, outcome: str) -> float:
    value = registry.get_sample_value(
        "deeptrust_webhook_deliveries_total", {"subscription": "hook", "outcome": outcome}
    )
    return value or 0.0


def subscription(secret: str | None = None, **fields: object) -> Subscription:
    """A subscription as parse_subscriptions leaves it: with its secret resolved."""
    checked = Subscription.model_validate({"name": "hook", "url": "http://receiver/hook"} | fields)
    return checked.model_copy(update={"secret": SecretStr(secret) if secret else None})


def test_posts_the_alert_with_its_headers_and_signature():
    receiver = Receiver(204)
    sender, waits, registry = sender_for(receiver)
    delivery = sender.deliver(subscription(secret="s3cret"), ALERT)
    assert (delivery.delivered, delivery.attempts, waits) == (True, 1, [])
    (request,) = receiver.requests
    assert request.method == "POST"
    assert AlertEvent.model_validate(json.loads(request.content)) == ALERT
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-deeptrust-event-id"] == "a-1"
    assert request.headers["x-deeptrust-subscription"] == "hook"
    assert request.headers["x-deeptrust-attempt"] == "1"
    assert verify("s3cret", request.content, request.headers["x-deeptrust-signature"])
    assert count(registry, "delivered") == 1
    assert (
        registry.get_sample_value(
            "deeptrust_webhook_request_seconds_count", {"subscription": "hook"}
        )
        == 1
    )


def test_unsigned_without_a_secret():
    receiver = Receiver(200)
    sender, _, _ = sender_for(receiver)
    sender.deliver(subscription(), ALERT)
    assert "x-deeptrust-signature" not in receiver.requests[0].headers


def test_transient_failures_are_retried_with_backoff_then_delivered():
    receiver = Receiver(503, httpx.ConnectError("refused"), 429, 200)
    sender, waits, registry = sender_for(receiver)
    delivery = sender.deliver(subscription(), ALERT)
    assert (delivery.delivered, delivery.attempts) == (True, 4)
    assert waits == [1.0, 2.0, 3.0]
    assert [r.headers["x-deeptrust-attempt"] for r in receiver.requests] == ["1", "2", "3", "4"]
    assert len({r.content for r in receiver.requests}) == 1, "every attempt sends the same body"
    assert (count(registry, "retried"), count(registry, "delivered")) == (3, 1)


def test_gives_up_after_max_attempts_with_the_last_error():
    receiver = Receiver(httpx.ReadTimeout("slow"))
    sender, waits, registry = sender_for(receiver)
    delivery = sender.deliver(subscription(timeout_s=2), ALERT)
    assert (delivery.delivered, delivery.attempts) == (False, 4)
    assert "timeout" in delivery.last_error
    assert len(waits) == 3
    assert (count(registry, "retried"), count(registry, "delivered")) == (3, 0)
    assert count(registry, "dead_lettered") == 0, "the service counts it once committed"


def test_a_refusal_is_final_at_once():
    receiver = Receiver(404)
    sender, waits, _ = sender_for(receiver)
    delivery = sender.deliver(subscription(), ALERT)
    assert (delivery.delivered, delivery.attempts, waits) == (False, 1, [])
    assert delivery.last_error == "HTTP 404: no such hook"


def test_redirects_are_not_followed():
    def redirect(request: httpx.Request) -> httpx.Response:
        return httpx.Response(307, headers={"Location": "http://elsewhere/"})

    sender = WebhookSender(
        POLICY,
        WebhookMetrics(CollectorRegistry(), ["hook"]),
        httpx.Client(transport=httpx.MockTransport(redirect)),
        sleep=lambda _: None,
    )
    delivery = sender.deliver(subscription(), ALERT)
    assert (delivery.delivered, delivery.attempts, delivery.last_error) == (False, 1, "HTTP 307")


def test_metrics_exist_at_zero_from_the_start():
    registry = CollectorRegistry()
    WebhookMetrics(registry, ["a", "b"])
    for name in ("a", "b"):
        for outcome in ("delivered", "retried", "dead_lettered"):
            labels = {"subscription": name, "outcome": outcome}
            assert registry.get_sample_value("deeptrust_webhook_deliveries_total", labels) == 0


def unchecked(url: str) -> Subscription:
    """A subscription the file's checks would refuse, as if one slipped through."""
    return Subscription.model_construct(name="hook", url=url, timeout_s=1.0, secret=None)


def test_an_unusable_url_fails_that_delivery_without_raising():
    """httpx.InvalidURL is no HTTPError: it must not escape (and crash the notifier)."""
    receiver = Receiver(200)
    sender, waits, registry = sender_for(receiver)
    delivery = sender.deliver(unchecked("http://receiver:abc/hook"), ALERT)
    assert (delivery.delivered, delivery.attempts, waits) == (False, 1, []), "final: no retry"
    assert delivery.last_error.startswith("InvalidURL")
    assert receiver.requests == []
    assert count(registry, "retried") == 0


def test_a_port_out_of_range_is_given_up_on_without_raising():
    """display_url (for the log of giving up) used to raise on it."""
    receiver = Receiver(500)
    sender, _, _ = sender_for(receiver)
    delivery = sender.deliver(unchecked("http://receiver:99999/hook"), ALERT)
    assert (delivery.delivered, delivery.attempts) == (False, 4)


def test_any_exception_from_an_attempt_is_a_final_failure():
    receiver = Receiver(RuntimeError("a bug in the transport"))
    sender, waits, _ = sender_for(receiver)
    delivery = sender.deliver(subscription(), ALERT)
    assert (delivery.delivered, delivery.attempts, waits) == (False, 1, [])
    assert delivery.last_error == "RuntimeError: a bug in the transport"
