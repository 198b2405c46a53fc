"""One gateway process: its parts built from settings, started and closed with the app.

The server (``deeptrust gateway``) asks uvicorn for :func:`app_from_env` as a factory, so
each worker process builds its own producer, status follower and file handle after the
fork. Tests build :class:`GatewayParts` from explicit settings instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import FastAPI

from deeptrust.gateway.app import create_app
from deeptrust.gateway.delivery import AckedUploadProducer
from deeptrust.gateway.metrics import GatewayMetrics
from deeptrust.gateway.settings import GatewaySettings
from deeptrust.gateway.status import StatusFollower, StatusStore
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.objectstore import ObjectStore


@dataclass
class GatewayParts:
    """Everything one gateway process runs besides the HTTP server."""

    settings: GatewaySettings
    kafka: KafkaSettings
    store: ObjectStore
    uploads: AckedUploadProducer = field(init=False)
    status: StatusStore = field(init=False)
    follower: StatusFollower = field(init=False)
    metrics: GatewayMetrics = field(default_factory=GatewayMetrics)

    def __post_init__(self) -> None:
        self.uploads = AckedUploadProducer(self.kafka, self.store)
        self.status = StatusStore(self.settings.status_db)
        self.follower = StatusFollower(
            self.kafka,
            self.status,
            self.settings.status_retention_s,
            lookback_s=self.settings.status_lookback_s,
        )

    def start(self) -> None:
        """Start serving delivery reports and following results."""
        self.uploads.start()
        self.follower.start()

    def close(self) -> None:
        """Deliver what is in flight, stop following, close the status file."""
        self.uploads.close()
        self.follower.close()
        self.status.close()

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
            self.store,
            self.uploads,
            self.status,
            self.follower,
            self.metrics,
            lifespan=lifespan if managed else None,
        )


def app_from_env() -> FastAPI:
    """The gateway configured by the environment (the uvicorn factory of the server)."""
    from deeptrust.processors.settings import ProcessorSettings

    parts = GatewayParts(GatewaySettings(), KafkaSettings(), ProcessorSettings().object_store())
    return parts.app()
