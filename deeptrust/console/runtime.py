"""One console process: its parts built from settings, started and closed with the app.

``deeptrust console`` asks uvicorn for :func:`app_from_env` as a factory; tests and the demo
build :class:`ConsoleParts` from explicit settings instead.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI

from deeptrust.business.report import business_rows
from deeptrust.business.topics import current_report
from deeptrust.console.app import create_app
from deeptrust.console.db import Database
from deeptrust.console.events import feedback_event
from deeptrust.console.follower import QueueFollower
from deeptrust.console.metrics import ConsoleMetrics
from deeptrust.console.producer import AckedProducer
from deeptrust.console.queue import ReviewQueue
from deeptrust.console.report_page import CachedRows
from deeptrust.console.search import LockedIndex
from deeptrust.console.sessions import SessionStore
from deeptrust.console.settings import ConsoleSettings
from deeptrust.console.thumbnails import Thumbnails
from deeptrust.processors.search_index import SearchIndex
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.objectstore import ObjectStore
from deeptrust.streams.producer import DeliveryFailed
from deeptrust.streams.topics import Topic, TopicNames

log = logging.getLogger(__name__)


@dataclass
class ConsoleParts:
    """Everything one console process runs besides the HTTP server."""

    settings: ConsoleSettings
    kafka: KafkaSettings
    store: ObjectStore
    search_db: Path
    sample_rate: float
    """The moderation router's sampling rate, which the report's estimates weight by."""
    metrics: ConsoleMetrics = field(default_factory=ConsoleMetrics)
    db: Database = field(init=False)
    sessions: SessionStore = field(init=False)
    queue: ReviewQueue = field(init=False)
    follower: QueueFollower = field(init=False)
    producer: AckedProducer = field(init=False)
    index: SearchIndex = field(init=False)

    def __post_init__(self) -> None:
        self.db = Database(self.settings.state_db)
        self.sessions = SessionStore(self.db, self.settings.session_s)
        self.queue = ReviewQueue(self.db, self.settings.lease_s)
        self.follower = QueueFollower(self.kafka, self.queue, self.metrics)
        self.producer = AckedProducer(self.kafka)
        self.index = SearchIndex(self.search_db)
        names = TopicNames(self.kafka.topic_prefix)
        self.topics = (names(Topic.FEEDBACK), names(Topic.SEARCH_INTERACTIONS))

    def start(self) -> None:
        """Resend decisions a crash left unacknowledged, then follow the queue."""
        self.producer.start()
        for decision in self.queue.undelivered():
            event = feedback_event(decision)
            try:
                self.producer.send(self.topics[0], event, event.image_id).result(
                    self.settings.delivery_timeout_s
                )
            except (TimeoutError, DeliveryFailed) as error:  # kept for the next start
                log.warning("the decision on %s is still not sent: %s", decision.image_id, error)
                continue
            self.queue.delivered(decision.lease_id)
            log.info("resent the decision on %s (%s)", decision.image_id, event.event_id)
        self.follower.start()

    def close(self) -> None:
        """Deliver what is in flight, stop following, close the files."""
        self.producer.close()
        self.follower.close()
        self.index.close()
        self.db.close()

    def app(self, managed: bool = True) -> FastAPI:
        """The application; with ``managed`` its lifespan starts and closes these parts."""

        @asynccontextmanager
        async def lifespan(_: FastAPI) -> AsyncIterator[None]:
            self.start()
            try:
                yield
            finally:
                self.close()

        return create_app(
            self.settings,
            self.sessions,
            self.queue,
            self.follower,
            self.producer,
            LockedIndex(self.index),
            Thumbnails(self.store),
            self.topics,
            self.metrics,
            lifespan=lifespan if managed else None,
            report=CachedRows(
                lambda: business_rows(current_report(self.kafka, self.sample_rate)),
                time.monotonic,
                self.settings.report_refresh_s,
            ),
        )


def app_from_env() -> FastAPI:
    """The console configured by the environment (the uvicorn factory of the server)."""
    from deeptrust.processors.settings import ProcessorSettings

    processors = ProcessorSettings()
    parts = ConsoleParts(
        ConsoleSettings(),
        KafkaSettings(),
        processors.object_store(),
        processors.search_db,
        processors.moderation_sample_rate,
    )
    return parts.app()
