"""The webhook notifier on Kafka: alerts.v1 in, webhooks out, undeliverable alerts to dlq.v1.

It reads alerts in its own consumer group, one at a time, and commits an alert's offset
only once every subscription that wants it has either accepted it or been given up on, in
which case a dead letter (reason ``undeliverable_alert``) is written in the same
transaction as the offset. A crash before that commit delivers the alert again after the
restart, so delivery is at least once and receivers deduplicate by event id; nothing is
lost.

Trade-offs, chosen for simplicity at alert rates (a few an hour, not thousands a second):

- One alert at a time. Its deliveries to different subscriptions run concurrently, a
  thread per subscription, so a slow endpoint costs the others nothing for that alert; but
  the next alert waits for the slowest subscription's retries (bounded by the retry
  policy: about 15 s for a refused connection, 270 s at worst at the defaults).
  Independent progress per subscription would need a consumer group (and offsets) per
  subscription; not worth it until alerts are frequent.
- While deliveries run the consumer polls with its partitions paused (the runtime's
  ``Session.wait``), so it stays in its group; ``max.poll.interval.ms`` is raised to
  fifteen minutes all the same, and the subscriptions file is refused at start-up when a
  delivery could take more than half of that (``retry.DELIVERY_BUDGET_S``), so that an
  alert's delivery stays bounded.
- A delivery that raises (a bug, a client error that is not an HTTP error) fails that
  subscription alone: it is dead-lettered and the alert's other deliveries stand.
- A new group starts at the oldest retained alert (``auto.offset.reset=earliest``), since
  losing an alert is worse than repeating old ones, which receivers can skip by event id.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, ClassVar

from confluent_kafka import Message

from deeptrust.schemas.events import AlertEvent
from deeptrust.streams.codec import Encoded, decode
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.dead_letters import dead_letter
from deeptrust.streams.errors import InvalidInput, Reason
from deeptrust.streams.exactly_once import offset_after
from deeptrust.streams.metrics import StageMetrics
from deeptrust.streams.runner import RunnerSettings
from deeptrust.streams.service import Commit, KafkaClients, ServiceRuntime, Session, Strategy
from deeptrust.streams.topics import Topic, TopicNames
from deeptrust.webhooks.delivery import Delivery, WebhookSender
from deeptrust.webhooks.metrics import WebhookMetrics
from deeptrust.webhooks.retry import MAX_POLL_INTERVAL_S
from deeptrust.webhooks.subscriptions import Subscription

log = logging.getLogger(__name__)
NAME = "alert-webhooks"
SUBSCRIPTION_DLQ_HEADER = "dlq-subscription"
MAX_POLL_MS = int(MAX_POLL_INTERVAL_S * 1000)


class AlertWebhookService:
    """Delivers every alert to the subscriptions that want it, until told to stop."""

    name = NAME

    def __init__(
        self,
        subscriptions: Sequence[Subscription],
        sender: WebhookSender,
        webhook_metrics: WebhookMetrics,
        kafka: KafkaSettings,
        runner: RunnerSettings,
        metrics: StageMetrics,
        group_id: str | None = None,
        clients: KafkaClients | None = None,
    ) -> None:
        strategy = AlertWebhookStrategy(subscriptions, sender, webhook_metrics, kafka, metrics)
        self._runtime = ServiceRuntime(
            strategy,
            kafka,
            runner,
            metrics,
            1,
            runner.max_wait_s,
            group_id=group_id,
            clients=clients,
        )
        log.info(
            "delivering %s to %d subscription(s) as group %s",
            *(Topic.ALERTS.value, len(subscriptions), self._runtime.group_id),
        )

    def run(self, stop: threading.Event) -> None:
        """Deliver until ``stop`` is set; the alert in hand is delivered and committed first."""
        self._runtime.run(stop)


class AlertWebhookStrategy(Strategy):
    """One alert at a time: deliver to every subscription, then commit with its dead letters."""

    name = NAME
    topics = (Topic.ALERTS,)
    max_batch = 1
    consumer_overrides: ClassVar[dict[str, Any]] = {"max.poll.interval.ms": MAX_POLL_MS}

    def __init__(
        self,
        subscriptions: Sequence[Subscription],
        sender: WebhookSender,
        webhook_metrics: WebhookMetrics,
        kafka: KafkaSettings,
        metrics: StageMetrics,
    ) -> None:
        self._subscriptions = tuple(subscriptions)
        self._sender = sender
        self._webhook_metrics = webhook_metrics
        self._metrics = metrics
        self._topics = TopicNames(kafka.topic_prefix)
        self._pool: ThreadPoolExecutor | None = None

    def setup(self) -> None:
        """One thread per subscription: the slowest bounds an alert, not their sum."""
        workers = max(1, len(self._subscriptions))
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="webhook")

    def close(self) -> None:
        """Let deliveries in flight end, then close the HTTP client."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._sender.close()

    def handle(self, messages: list[Message], session: Session) -> Commit | None:
        """Deliver the alert and commit its offset with what could not be delivered."""
        if not messages:
            return None
        message = messages[0]
        self._metrics.consumed(1)
        started = time.perf_counter()
        try:
            alert = decode(message.value(), message.headers(), AlertEvent)
        except InvalidInput as error:
            return self._commit(message, [(error, None)])
        wanted = [s for s in self._subscriptions if s.filter.matches(alert)]
        deliveries = self._deliver(alert, wanted, session)
        failed = [
            (_undeliverable(delivery), delivery.subscription.name)
            for delivery in deliveries
            if not delivery.delivered
        ]
        self._metrics.batch(1, time.perf_counter() - started)
        return self._commit(message, failed)

    def _deliver(
        self, alert: AlertEvent, wanted: Sequence[Subscription], session: Session
    ) -> list[Delivery]:
        """Deliver to every subscription at once; the session keeps the consumer alive."""
        assert self._pool is not None, "setup() runs before the first alert"
        futures: list[Future[Delivery]] = [
            self._pool.submit(self._sender.deliver, subscription, alert) for subscription in wanted
        ]
        session.wait(futures)
        return [
            _settled(subscription, future, alert)
            for subscription, future in zip(wanted, futures, strict=True)
        ]

    def _commit(
        self, message: Message, rejected: Sequence[tuple[InvalidInput, str | None]]
    ) -> Commit:
        """Dead-letter what could not be delivered and commit the alert's offset, atomically."""
        dlq = self._topics(Topic.DEAD_LETTERS)
        records = [(dlq, _dead_letter(message, error, name)) for error, name in rejected]

        def committed() -> None:
            for error, name in rejected:
                self._metrics.dead_lettered(error.reason.value)
                if name is not None:
                    self._webhook_metrics.dead_lettered(name)

        return Commit(records, [offset_after(message)], committed)


def _settled(subscription: Subscription, future: Future[Delivery], alert: AlertEvent) -> Delivery:
    """The delivery's outcome; one that raised is that subscription's failure, not a crash.

    Crashing would restart the notifier on the same alert, which would crash it again: one
    broken subscription would stop every other one for good.
    """
    error = future.exception()
    if error is None:
        return future.result()
    log.error(
        "alert %s to %s: delivery failed unexpectedly; dead-lettering it",
        *(alert.event_id, subscription.name),
        exc_info=error,
    )
    return Delivery(subscription, False, 0, f"internal error: {type(error).__name__}: {error}")


def _undeliverable(delivery: Delivery) -> InvalidInput:
    """The reason and detail of the dead letter for a delivery given up on."""
    subscription = delivery.subscription
    return InvalidInput(
        Reason.UNDELIVERABLE_ALERT,
        f"subscription {subscription.name} ({subscription.display_url}): not delivered "
        f"after {delivery.attempts} attempt(s): {delivery.last_error}",
    )


def _dead_letter(message: Message, error: InvalidInput, subscription: str | None) -> Encoded:
    """The stages' dead letter, plus the subscription in a header for filtering."""
    encoded = dead_letter(NAME, message, error)
    if subscription is None:
        return encoded
    extra = (SUBSCRIPTION_DLQ_HEADER, subscription.encode())
    return Encoded(key=encoded.key, value=encoded.value, headers=[*encoded.headers, extra])
