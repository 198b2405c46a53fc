"""The upload producer, with one delivery future per event so a 202 means "durable".

:class:`~deeptrust.streams.producer.UploadProducer` stores the bytes and emits the event
(idempotent,
``acks=all``); its ``flush`` waits for *every* event in flight, which would make concurrent
requests wait for one another and blame one request for another's failure. Here each event
gets its own future, resolved by the delivery report of that message alone, and a
background thread serves the reports (confluent-kafka's producer is thread-safe), so a
request waits only for its own acknowledgement.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, InvalidStateError

from confluent_kafka import KafkaError, KafkaException, Message

from deeptrust.schemas.events import UploadEvent
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.objectstore import ObjectStore
from deeptrust.streams.producer import DeliveryFailed, UploadProducer

log = logging.getLogger(__name__)


class AckedUploadProducer(UploadProducer):
    """An :class:`UploadProducer` whose every send returns a future of its delivery."""

    def __init__(self, kafka: KafkaSettings, store: ObjectStore, source: str = "gateway") -> None:
        super().__init__(kafka, store, source=source)
        self._pending: dict[bytes, Future[None]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="gateway-delivery", daemon=True)

    def start(self) -> None:
        """Start serving delivery reports in the background."""
        self._poller.start()

    def close(self, timeout_s: float = 10.0) -> int:
        """Deliver what is in flight (up to ``timeout_s``), stop the report thread, release."""
        self._producer.flush(timeout_s)
        self._stop.set()
        if self._poller.is_alive():
            self._poller.join(timeout_s)
        return super().close(0)

    def upload_acked(
        self, data: bytes, filename: str, image_id: str, metadata: dict[str, str]
    ) -> tuple[UploadEvent, Future[None]]:
        """Store ``data``, emit its event; return it and the future of its acknowledgement."""
        future = self._expect(image_id)
        try:
            event = self.upload(data, filename, image_id=image_id, metadata=metadata)
        except BaseException:
            self._forget(image_id)
            raise
        return event, future

    def send_acked(self, event: UploadEvent) -> Future[None]:
        """Emit an event whose object is already stored; return its acknowledgement future."""
        future = self._expect(event.image_id)
        try:
            self.send(event)
        except BaseException:
            self._forget(event.image_id)
            raise
        return future

    def alive(self) -> bool:
        """False when the delivery-report thread has died after starting."""
        return self._poller.ident is None or self._poller.is_alive()

    def broker_reachable(self, timeout_s: float) -> bool:
        """Tell whether the broker answers a metadata request for the uploads topic."""
        try:
            topics = self._producer.list_topics(self._topic, timeout=timeout_s).topics
        except KafkaException:
            return False
        found = topics.get(self._topic)
        return found is not None and found.error is None

    def _expect(self, image_id: str) -> Future[None]:
        future: Future[None] = Future()
        key = image_id.encode()
        with self._lock:
            if key in self._pending:
                raise ValueError(f"an upload of {image_id!r} is already in flight")
            self._pending[key] = future
        return future

    def _forget(self, image_id: str) -> None:
        with self._lock:
            self._pending.pop(image_id.encode(), None)

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        """Resolve the future of the message's image (events are keyed by image id)."""
        key = message.key()
        with self._lock:
            future = self._pending.pop(key, None) if isinstance(key, bytes) else None
        if future is None:
            super()._on_delivery(error, message)
            return
        try:
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(DeliveryFailed(f"{key!r}: {error}"))
        except InvalidStateError:  # the request gave up waiting and cancelled it
            log.warning("delivery of %r reported after its request timed out: %s", key, error)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.1)
