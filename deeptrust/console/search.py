"""The search page: a query box, results with thumbnails, and a record of what was found.

Each results page shown is an impression on ``search-interactions.v1`` (the ids in rank
order, none when nothing matched, so the zero-result rate can be counted), and each result
picked is a click with its rank. Both name the browser's session by its public id, never
its cookie. They are sent without waiting for the broker: a search must not stall on it,
and a lost interaction is counted (``AckedProducer.failures``) rather than shown as an error.
Searching needs no sign-in; the session is anonymous unless a reviewer is signed in.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Literal
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool

from deeptrust.console import events
from deeptrust.console.metrics import ConsoleMetrics
from deeptrust.console.producer import AckedProducer
from deeptrust.console.review import image_response
from deeptrust.console.sessions import SessionStore
from deeptrust.console.settings import ConsoleSettings
from deeptrust.console.thumbnails import Thumbnails
from deeptrust.console.web import checked_form, current, field, page, set_cookie
from deeptrust.processors.search_index import SearchHit, SearchIndex
from deeptrust.schemas.events import SearchInteractionEvent

Filter = Literal["all", "hide_ai", "only_ai"]
FILTERS: tuple[tuple[Filter, str], ...] = (
    ("all", "All images"),
    ("hide_ai", "Hide AI-generated"),
    ("only_ai", "Only AI-generated"),
)
LABEL_OF: dict[Filter, str | None] = {"all": None, "hide_ai": "real", "only_ai": "ai_generated"}
IDS_SEPARATOR = " "


class LockedIndex:
    """The search index behind a lock: one SQLite connection, many request threads."""

    def __init__(self, index: SearchIndex) -> None:
        self._index = index
        self._lock = threading.Lock()

    def search(self, query: str, limit: int, label: str | None) -> list[SearchHit]:
        """The index's hits for ``query``."""
        with self._lock:
            return self._index.search(query, limit, label=label)

    def uri_of(self, image_id: str) -> str | None:
        """The URI of an indexed image."""
        with self._lock:
            return self._index.uri_of(image_id)


def search_router(
    settings: ConsoleSettings,
    sessions: SessionStore,
    index: LockedIndex,
    producer: AckedProducer,
    interactions_topic: str,
    thumbnails: Thumbnails,
    metrics: ConsoleMetrics,
    clock: Callable[[], float],
) -> APIRouter:
    """The routes of the search page."""
    router = APIRouter()

    def record(event: SearchInteractionEvent) -> None:
        producer.send(interactions_topic, event, event.session_id)
        metrics.interactions.labels(kind=event.kind).inc()

    @router.get("/search", include_in_schema=False)
    async def search_page(
        request: Request,
        q: Annotated[str, Query(max_length=200)] = "",
        filter: Annotated[Filter, Query()] = "all",
    ) -> Response:
        now = clock()
        session = current(request, sessions, now) or sessions.create(now)
        query = q.strip()
        hits: list[SearchHit] = []
        if query:
            hits = await run_in_threadpool(
                index.search, query, settings.search_limit, LABEL_OF[filter]
            )
            shown = [hit.image_id for hit in hits]
            record(events.impression(session.public_id, query, shown, _at(now)))
        response = page(
            "search.html",
            session=session,
            query=query,
            hits=hits,
            shown=IDS_SEPARATOR.join(hit.image_id for hit in hits),
            filters=FILTERS,
            current_filter=filter,
        )
        set_cookie(response, session, settings.secure_cookies, settings.session_s)
        return response

    @router.post("/search/click", include_in_schema=False)
    async def click(request: Request) -> Response:
        now = clock()
        session, form = await checked_form(request, sessions, now)
        query = field(form, "q")
        image_id = field(form, "image_id")
        shown = field(form, "results", 60_000).split(IDS_SEPARATOR)
        record(events.click(session.public_id, query, shown, image_id, _at(now)))
        target = f"/search/view/{quote(image_id, safe='')}?{urlencode({'q': query})}"
        return RedirectResponse(target, status_code=303)

    @router.get("/search/view/{image_id}", include_in_schema=False)
    def view(
        request: Request, image_id: str, q: Annotated[str, Query(max_length=200)] = ""
    ) -> Response:
        session = current(request, sessions, clock())
        return page("view.html", session=session, image_id=image_id, query=q)

    @router.get("/search/image/{image_id}", include_in_schema=False)
    async def search_image(
        image_id: str, size: Annotated[int, Query(ge=32, le=2048)] = 240
    ) -> Response:
        uri = await run_in_threadpool(index.uri_of, image_id)
        return await image_response(thumbnails, uri, size)

    return router


def _at(now: float) -> datetime:
    return datetime.fromtimestamp(now, UTC)
