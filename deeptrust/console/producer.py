"""One idempotent producer for the console's events, with a future per event.

A decision is answered only once the broker has its feedback event (``acks=all``), so the
reviewer never sees "recorded" for a label that was lost; a search interaction is sent
without waiting, since a results page must not stall on the broker. One background thread
serves the delivery reports of both.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, InvalidStateError

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from pydantic import BaseModel

from deeptrust.streams.codec import encode
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.producer import DeliveryFailed

log = logging.getLogger(__name__)


class AckedProducer:
    """Sends events and resolves each one's future from its own delivery report."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self._producer = Producer(
            {**kafka.client_config(), "enable.idempotence": True, "acks": "all"}
        )
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="console-delivery", daemon=True)
        self.failures = 0
        """Events the broker did not take (each also logged)."""

    def start(self) -> None:
        """Serve delivery reports in the background."""
        self._poller.start()

    def close(self, timeout_s: float = 10.0) -> None:
        """Deliver what is in flight (up to ``timeout_s``), then stop and close the client.

        Closed explicitly: a client left to the garbage collector goes on dialling the
        broker as long as anything still holds the console's parts.
        """
        self._producer.flush(timeout_s)
        self._stop.set()
        if self._poller.is_alive():
            self._poller.join(timeout_s)
        self._producer.close()

    def alive(self) -> bool:
        """False when the delivery-report thread has died after starting."""
        return self._poller.ident is None or self._poller.is_alive()

    def send(self, topic: str, event: BaseModel, key: str) -> Future[None]:
        """Produce ``event`` keyed by ``key``; the future resolves on its acknowledgement."""
        future: Future[None] = Future()
        encoded = encode(event, key=key)

        def report(error: KafkaError | None, message: Message) -> None:
            try:
                if error is None:
                    future.set_result(None)
                    return
                self.failures += 1
                log.warning("%s: event for %r not delivered: %s", topic, key, error)
                future.set_exception(DeliveryFailed(f"{topic} {key!r}: {error}"))
            except InvalidStateError:  # the waiter gave up and cancelled it
                pass

        try:
            self._producer.produce(
                topic,
                key=encoded.key,
                value=encoded.value,
                headers=encoded.headers,
                on_delivery=report,
            )
        except (BufferError, KafkaException) as error:
            future.set_exception(DeliveryFailed(f"{topic} {key!r}: {error}"))
        return future

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.1)
