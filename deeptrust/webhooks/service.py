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
- The consumer is not polled while deliveries run, so ``max.poll.interval.ms`` is raised
  to fifteen minutes, and the subscriptions file is refused at start-up when a delivery
  could take more than half of that (``retry.DELIVERY_BUDGET_S``): a delivery that outlived
  the interval would get the member evicted, its commit would fail, and the restarted
  process would start on the same alert again, forever.
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
from concurrent.futures import ALL_COMPLETED, Future, ThreadPoolExecutor, wait

from confluent_kafka import Consumer, Message, Producer

from deeptrust.webhooks.delivery import Delivery, WebhookSender
from deeptrust.webhooks.metrics import WebhookMetrics
from deeptrust.webhooks.retry import MAX_POLL_INTERVAL_S
from deeptrust.webhooks.subscriptions import Subscription
from schemas.events import AlertEvent
from streams.codec import Encoded, decode
from streams.config import KafkaSettings
from streams.dead_letters import dead_letter
from streams.errors import InvalidInput, Reason
from streams.exactly_once import (
    commit_with_offsets,
    fenced_producer,
    offset_after,
    transactional_consumer,
    usable,
)
from streams.lag import LagProbe
from streams.metrics import StageMetrics
from streams.runner import RunnerSettings
from streams.topics import Topic, TopicNames

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
    ) -> None:
        self._subscriptions = tuple(subscriptions)
        self._sender = sender
        self._webhook_metrics = webhook_metrics
        self._kafka = kafka
        self._runner = runner
        self._metrics = metrics
        self._topics = TopicNames(kafka.topic_prefix)
        self._group_id = group_id or f"{kafka.topic_prefix}{NAME}"
        self._lag = LagProbe(metrics)

    def run(self, stop: threading.Event) -> None:
        """Deliver until ``stop`` is set; the alert in hand is delivered and committed first."""
        producer = fenced_producer(self._kafka, self._group_id, self._runner)
        consumer = transactional_consumer(
            self._kafka, self._group_id, self._runner, **{"max.poll.interval.ms": MAX_POLL_MS}
        )
        workers = max(1, len(self._subscriptions))  # all at once: the slowest bounds an alert
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="webhook")
        try:
            consumer.subscribe([self._topics(Topic.ALERTS)])
            self._metrics.set_ready(True)
            log.info(
                "delivering %s to %d subscription(s) as group %s",
                *(Topic.ALERTS.value, len(self._subscriptions), self._group_id),
            )
            while not stop.is_set():
                message = consumer.poll(self._runner.max_wait_s)
                self._metrics.heartbeat()
                self._lag.sample(consumer)
                if message is not None and usable(message):
                    self._handle(message, consumer, producer, pool)
        finally:
            self._metrics.set_ready(False)
            pool.shutdown(wait=True)
            consumer.close()
            self._sender.close()
            log.info("webhook notifier stopped")

    def _handle(
        self, message: Message, consumer: Consumer, producer: Producer, pool: ThreadPoolExecutor
    ) -> None:
        self._metrics.consumed(1)
        started = time.perf_counter()
        try:
            alert = decode(message.value(), message.headers(), AlertEvent)
        except InvalidInput as error:
            self._commit(message, consumer, producer, [(error, None)])
            return
        wanted = [s for s in self._subscriptions if s.filter.matches(alert)]
        deliveries = self._deliver(alert, wanted, pool)
        failed = [
            (_undeliverable(delivery), delivery.subscription.name)
            for delivery in deliveries
            if not delivery.delivered
        ]
        self._commit(message, consumer, producer, failed)
        self._metrics.batch(1, time.perf_counter() - started)

    def _deliver(
        self, alert: AlertEvent, wanted: Sequence[Subscription], pool: ThreadPoolExecutor
    ) -> list[Delivery]:
        """Deliver to every subscription at once; report the loop alive while they run."""
        futures: list[Future[Delivery]] = [
            pool.submit(self._sender.deliver, subscription, alert) for subscription in wanted
        ]
        pending = set(futures)
        while pending:
            _, pending = wait(pending, timeout=1.0, return_when=ALL_COMPLETED)
            self._metrics.heartbeat()  # waiting on bounded work is not a stalled loop
        return [
            _settled(subscription, future, alert)
            for subscription, future in zip(wanted, futures, strict=True)
        ]

    def _commit(
        self,
        message: Message,
        consumer: Consumer,
        producer: Producer,
        rejected: Sequence[tuple[InvalidInput, str | None]],
    ) -> None:
        """Dead-letter what could not be delivered and commit the alert's offset, atomically."""
        dlq = self._topics(Topic.DEAD_LETTERS)
        records = [(dlq, _dead_letter(message, error, name)) for error, name in rejected]
        next_offset = offset_after(message)
        commit_with_offsets(
            producer,
            consumer,
            records,
            [next_offset],
            self._runner.kafka_timeout_s,
            self._runner.max_attempts,
        )
        for error, name in rejected:
            self._metrics.dead_lettered(error.reason.value)
            if name is not None:
                self._webhook_metrics.dead_lettered(name)


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
