"""The business metrics as a console page, for signed-in reviewers.

The rows come from ``deeptrust.business`` (``business_rows`` of the report over the topics,
the same numbers ``deeptrust report`` prints). Reading the topics takes a while on a real
stream, so a page shows the report at most ``refresh_s`` old rather than re-reading them on
every view.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from deeptrust.console.sessions import SessionStore
from deeptrust.console.web import current, page

Rows = list[tuple[str, str]]


class CachedRows:
    """``compute()``'s rows, recomputed when older than ``refresh_s``; one caller at a time."""

    def __init__(
        self, compute: Callable[[], Rows], clock: Callable[[], float], refresh_s: float
    ) -> None:
        self._compute = compute
        self._clock = clock
        self._refresh_s = refresh_s
        self._lock = threading.Lock()
        self._rows: Rows | None = None
        self._at = 0.0

    def __call__(self) -> tuple[Rows, float]:
        """The rows and their age in seconds (on this object's own clock)."""
        with self._lock:
            now = self._clock()
            if self._rows is None or now - self._at >= self._refresh_s:
                self._rows, self._at = self._compute(), now
            return self._rows, now - self._at


def report_router(
    sessions: SessionStore, rows: CachedRows, clock: Callable[[], float]
) -> APIRouter:
    """``GET /report``: the table, or the sign-in page for a visitor without a session."""
    router = APIRouter()

    @router.get("/report", include_in_schema=False)
    def report(request: Request) -> Response:
        session = current(request, sessions, clock())
        if session is None or not session.reviewer:
            return RedirectResponse("/login", status_code=303)
        table, age_s = rows()
        return page("report.html", session=session, rows=table, age_s=age_s)

    return router
