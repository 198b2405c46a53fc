"""The console's application: review and search routes around parts the caller owns.

``create_app`` starts nothing itself; whoever built the parts starts and closes them
(``lifespan``), as with the gateway, so a test builds exactly what the server runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from fastapi import FastAPI, Request
from fastapi.exceptions import HTTPException
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from deeptrust.console.follower import QueueFollower
from deeptrust.console.metrics import ConsoleMetrics
from deeptrust.console.producer import AckedProducer
from deeptrust.console.queue import ReviewQueue
from deeptrust.console.report_page import CachedRows, report_router
from deeptrust.console.review import review_router
from deeptrust.console.search import LockedIndex, search_router
from deeptrust.console.sessions import SessionStore
from deeptrust.console.settings import ConsoleSettings
from deeptrust.console.thumbnails import Thumbnails
from deeptrust.console.web import STATIC_DIR, Csrf, message, secure_headers

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def create_app(
    settings: ConsoleSettings,
    sessions: SessionStore,
    queue: ReviewQueue,
    follower: QueueFollower,
    producer: AckedProducer,
    index: LockedIndex,
    thumbnails: Thumbnails,
    topics: tuple[str, str],
    metrics: ConsoleMetrics | None = None,
    lifespan: Lifespan | None = None,
    clock: Callable[[], float] = time.time,
    report: CachedRows | None = None,
) -> FastAPI:
    """Build the console; ``topics`` are the feedback and search-interactions topics.

    ``report`` serves the business metrics page (``/report``) when given.
    """
    metrics = metrics or ConsoleMetrics()
    feedback_topic, interactions_topic = topics
    app = FastAPI(title="DeepTrust console", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.middleware("http")(secure_headers)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.include_router(
        review_router(
            settings,
            sessions,
            queue,
            producer,
            feedback_topic,
            thumbnails,
            metrics,
            clock,
            follower.ready,
        )
    )
    app.include_router(
        search_router(
            settings, sessions, index, producer, interactions_topic, thumbnails, metrics, clock
        )
    )

    if report is not None:
        app.include_router(report_router(sessions, report, clock))

    @app.exception_handler(HTTPException)
    async def refused(_: Request, error: HTTPException) -> HTMLResponse:
        if isinstance(error, Csrf):
            metrics.refused.labels(reason="csrf").inc()
        return message("Refused", str(error.detail), error.status_code)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> JSONResponse:
        """Liveness: the queue follower and the delivery thread run."""
        alive = follower.alive() and producer.alive()
        return JSONResponse({"status": "ok" if alive else "unavailable"}, 200 if alive else 503)

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> JSONResponse:
        """Readiness: the queue is rebuilt from the topics."""
        ready = follower.ready()
        return JSONResponse({"status": "ready" if ready else "unavailable"}, 200 if ready else 503)

    @app.get("/metrics", include_in_schema=False)
    def prometheus() -> Response:
        """Prometheus text format, from the console's own registry."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
