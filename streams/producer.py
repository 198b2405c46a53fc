"""The upload path: store an image, then emit its upload event keyed by image id.

The bytes go to the object store first, so an event never points at an object that is not
there yet. The producer is idempotent (acks=all), and :meth:`UploadProducer.flush` raises if
any event failed to be delivered, so a caller never believes an upload was accepted when it
was not.
"""

from __future__ import annotations

import mimetypes
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, Message, Producer
from pydantic import BaseModel

from deeptrust.schemas.events import UploadEvent
from deeptrust.streams.codec import encode
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.formats import FORMATS, identify
from deeptrust.streams.objectstore import ObjectStore
from deeptrust.streams.topics import Topic, TopicNames

IMAGE_SUFFIXES = frozenset(
    {f.suffix for f in FORMATS} | {".jpeg", ".tiff", ".cr2", ".cr3", ".nef", ".arw", ".raf"}
)
"""What a folder is searched for: every listed format, so a refused one is named, not missed."""


class DeliveryFailed(RuntimeError):
    """At least one upload event was not acknowledged by the broker."""


class UnsupportedUpload(ValueError):
    """An image in a format the pipeline refuses (streams/formats.py); nothing was stored."""


class UploadProducer:
    """Stores images and emits their upload events."""

    def __init__(self, kafka: KafkaSettings, store: ObjectStore, source: str = "upload") -> None:
        self._store = store
        self._source = source
        self._topic = TopicNames(kafka.topic_prefix)(Topic.UPLOADS)
        self._producer = Producer(
            {**kafka.client_config(), "enable.idempotence": True, "acks": "all", "linger.ms": 10}
        )
        self._failures: list[str] = []

    def upload(
        self,
        data: bytes,
        filename: str,
        image_id: str | None = None,
        metadata: dict[str, str] | None = None,
        refuse_unknown: bool = False,
    ) -> UploadEvent:
        """Store ``data`` and emit its upload event; delivery completes on :meth:`flush`.

        A format the pipeline refuses raises :class:`UnsupportedUpload` before anything is
        stored. Bytes in no known format are sent on (the detect stage dead-letters them
        with the decoder's reason, as it does a corrupt file) unless ``refuse_unknown``.
        """
        found = identify(data)
        if found is None and refuse_unknown:
            raise UnsupportedUpload(f"{filename}: not in an image format DeepTrust reads")
        if found is not None and not found.accepted:
            raise UnsupportedUpload(f"{filename}: {found.refusal}")
        image_id = image_id or uuid.uuid4().hex
        suffix = Path(filename).suffix.lower()
        stored = self._store.put(f"images/{image_id}{suffix}", data)
        event = UploadEvent(
            event_id=str(uuid.uuid4()),
            image_id=image_id,
            uri=stored.uri,
            content_type=found.mime
            if found is not None
            else mimetypes.guess_type(filename)[0] or "application/octet-stream",
            size_bytes=stored.size_bytes,
            sha256=stored.sha256,
            uploaded_at=datetime.now(UTC),
            source=self._source,
            metadata={"filename": Path(filename).name, **(metadata or {})},
        )
        self.send(event)
        return event

    def send(self, event: UploadEvent) -> None:
        """Emit an already-built upload event (the object must be stored)."""
        encoded = encode(event, key=event.image_id)
        self._producer.produce(
            self._topic,
            key=encoded.key,
            value=encoded.value,
            headers=encoded.headers,
            on_delivery=self._on_delivery,
        )
        self._producer.poll(0)

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._failures.append(f"{message.key()!r}: {error}")

    def flush(self, timeout_s: float = 60.0) -> None:
        """Wait until every event is acknowledged; raise :class:`DeliveryFailed` otherwise."""
        remaining = self._producer.flush(timeout_s)
        if remaining or self._failures:
            failures, self._failures = self._failures, []
            raise DeliveryFailed(f"{remaining} undelivered, failures: {failures[:5]}")

    def close(self, timeout_s: float = 10.0) -> int:
        """Deliver what is in flight (up to ``timeout_s``), then release the client.

        Returns how many events were given up undelivered. A client left to the garbage
        collector keeps dialling its brokers until then, long after they may be gone.
        """
        remaining = int(self._producer.flush(timeout_s))
        if remaining:  # purged, so close does not wait out message.timeout.ms for them
            self._producer.purge()
            self._producer.flush(0)
        self._producer.close()
        return remaining


def produce_one(kafka: KafkaSettings, topic: str, event: BaseModel, key: str) -> None:
    """Produce a single event (a label, a promotion) and wait until the broker has it.

    For the rare events people cause, where a command must not report success before the
    event is durable; streams of events go through a long-lived producer instead.
    """
    encoded = encode(event, key=key)
    producer = Producer({**kafka.client_config(), "enable.idempotence": True, "acks": "all"})
    producer.produce(topic, key=encoded.key, value=encoded.value, headers=encoded.headers)
    if producer.flush(30) != 0:
        raise DeliveryFailed(f"{topic}: the event for {key!r} was not delivered")


def image_files(paths: Iterable[Path]) -> list[Path]:
    """Expand files and folders into the image files they hold, sorted."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += [p for p in sorted(path.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]
        else:
            found.append(path)
    return found


def paced(
    items: Iterable[Any],
    rate: float | None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[Any]:
    """Yield ``items`` no faster than ``rate`` per second (all at once when ``rate`` is None).

    The schedule is absolute (item i is due at start + i/rate), so slow iterations are
    caught up rather than accumulating drift.
    """
    start = clock()
    for index, item in enumerate(items):
        if rate:
            delay = start + index / rate - clock()
            if delay > 0:
                sleep(delay)
        yield item
