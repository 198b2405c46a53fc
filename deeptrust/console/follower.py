"""Follows ``moderation.v1`` into the review queue, and ``feedback.v1`` out of it.

The queue is rebuilt at every start: the queued items are forgotten and both topics are
read from their first retained message (a :class:`~deeptrust.streams.tail.TopicTail`, no
consumer group, so every console process sees every item), then followed. Decisions and
leases live on in the console's file, so a rebuilt queue leaves out what was decided; a
feedback event from elsewhere (``deeptrust feedback``, another console) takes its image out
too. The console is ready once both topics are read to the end they had at start.

A message that does not decode as its topic's event is skipped, logged and counted: the
console reads topics other stages own, and their dead letters are those stages' to write.
"""

from __future__ import annotations

import logging
import threading

from confluent_kafka import Message

from deeptrust.console.metrics import ConsoleMetrics
from deeptrust.console.queue import QueuedItem, ReviewQueue
from deeptrust.schemas.events import FeedbackEvent, ModerationEvent
from deeptrust.streams.codec import decode
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.errors import InvalidInput
from deeptrust.streams.tail import BEGINNING, TopicTail
from deeptrust.streams.topics import Topic, TopicNames

log = logging.getLogger(__name__)


class QueueFollower:
    """Keeps a :class:`ReviewQueue` in step with the moderation and feedback topics."""

    def __init__(
        self,
        kafka: KafkaSettings,
        queue: ReviewQueue,
        metrics: ConsoleMetrics,
        timeout_s: float = 10.0,
    ) -> None:
        names = TopicNames(kafka.topic_prefix)
        self._moderation = names(Topic.MODERATION)
        self._feedback = names(Topic.FEEDBACK)
        self._queue = queue
        self._metrics = metrics
        self._tail = TopicTail(
            kafka, [self._moderation, self._feedback], timeout_s=timeout_s, name="console"
        )
        self._stop = threading.Event()
        self._caught_up = threading.Event()
        self._thread = threading.Thread(target=self._run, name="console-queue", daemon=True)

    def start(self) -> None:
        """Start following in the background."""
        self._thread.start()

    def close(self) -> None:
        """Stop following and close the consumer."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def ready(self) -> bool:
        """True once both topics are read to their end at start, and following goes on."""
        return self._caught_up.is_set() and self._thread.is_alive()

    def alive(self) -> bool:
        """False when the follower thread has died."""
        return self._thread.ident is None or self._thread.is_alive()

    def _run(self) -> None:
        try:
            self._queue.clear_items()
            self._tail.open(BEGINNING)
            while not self._stop.is_set():
                self._apply(self._tail.poll(0.2))
                if not self._caught_up.is_set() and self._tail.caught_up:
                    log.info("review queue: caught up %s", self._queue.waiting())
                    self._caught_up.set()
        except Exception:
            log.exception("the review queue follower stopped")
            raise
        finally:
            self._tail.close()

    def _apply(self, messages: list[Message]) -> None:
        items: list[QueuedItem] = []
        decided: dict[str, str] = {}
        for message in messages:
            topic = message.topic()
            try:
                if topic == self._moderation:
                    event = decode(message.value(), message.headers(), ModerationEvent)
                    _, timestamp_ms = message.timestamp()
                    items.append(
                        QueuedItem(
                            event,
                            timestamp_ms / 1000,
                            message.partition() or 0,
                            message.offset() or 0,
                        )
                    )
                elif topic == self._feedback:
                    feedback = decode(message.value(), message.headers(), FeedbackEvent)
                    decided[feedback.image_id] = feedback.event_id
            except InvalidInput as error:
                self._metrics.skipped.labels(topic=str(topic), reason=error.reason.value).inc()
                log.warning(
                    "review queue skips %s[%s]@%s: %s",
                    topic,
                    message.partition(),
                    message.offset(),
                    error,
                )
        if items:
            self._queue.add(items)
        if decided:
            self._queue.decided_elsewhere(decided)
