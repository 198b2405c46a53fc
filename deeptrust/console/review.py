"""The review pages: sign-in, the queue per lane, decisions, skip and undo.

A decision is answered only once the broker has its feedback event; if it does not
acknowledge in time the decision is withdrawn and the lease given back, so pressing the key
again sends it again, under the same lease and so with the same event id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, cast, get_args

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool

from deeptrust.console.events import feedback_event
from deeptrust.console.metrics import ConsoleMetrics
from deeptrust.console.producer import AckedProducer
from deeptrust.console.queue import LANES, Label, Lane, Outcome, ReviewQueue
from deeptrust.console.sessions import SessionStore, reviewer_for
from deeptrust.console.settings import ConsoleSettings
from deeptrust.console.thumbnails import Thumbnails
from deeptrust.console.web import (
    COOKIE,
    checked_form,
    current,
    field,
    message,
    page,
    set_cookie,
)
from deeptrust.streams.errors import InvalidInput
from deeptrust.streams.producer import DeliveryFailed

log = logging.getLogger(__name__)

CHOICES = (("a", "ai_generated", "AI-generated"), ("r", "real", "Real"))
LANE_MEANING = {
    "flagged": "flagged: the detector's probability reached the threshold, or the file "
    "carries provenance evidence",
    "sampled": "sampled: a random share of the images the detector passed",
}


def review_router(
    settings: ConsoleSettings,
    sessions: SessionStore,
    queue: ReviewQueue,
    producer: AckedProducer,
    feedback_topic: str,
    thumbnails: Thumbnails,
    metrics: ConsoleMetrics,
    clock: Callable[[], float],
    ready: Callable[[], bool],
) -> APIRouter:
    """The routes of sign-in and review; no item is leased before ``ready()`` (the rebuild)."""
    router = APIRouter()
    tokens = {name: token.get_secret_value() for name, token in settings.reviewers.items()}

    def to_login() -> RedirectResponse:
        return RedirectResponse("/login", status_code=303)

    def to_lane(lane: str, notice: str | None = None) -> RedirectResponse:
        lane = lane if lane in LANES else "flagged"
        suffix = f"&notice={notice}" if notice else ""
        return RedirectResponse(f"/review?lane={lane}{suffix}", status_code=303)

    @router.get("/", include_in_schema=False)
    def home(request: Request) -> Response:
        signed_in = (s := current(request, sessions, clock())) is not None and s.reviewer
        return RedirectResponse("/review" if signed_in else "/login", status_code=303)

    @router.get("/login", include_in_schema=False)
    def login_page(request: Request) -> Response:
        now = clock()
        session = current(request, sessions, now) or sessions.create(now)
        response = page("login.html", session=session, error=None)
        set_cookie(response, session, settings.secure_cookies, settings.session_s)
        return response

    @router.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        now = clock()
        session, form = await checked_form(request, sessions, now)
        reviewer = reviewer_for(field(form, "token", 1000), tokens)
        if reviewer is None:
            metrics.refused.labels(reason="sign_in").inc()
            return page("login.html", 401, session=session, error="unknown token")
        signed_in = sessions.sign_in(session, reviewer, now)
        response = RedirectResponse("/review?lane=flagged", status_code=303)
        set_cookie(response, signed_in, settings.secure_cookies, settings.session_s)
        return response

    @router.post("/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        session, _ = await checked_form(request, sessions, clock())
        sessions.end(session)
        response = to_login()
        response.delete_cookie(COOKIE, path="/")
        return response

    @router.get("/review", include_in_schema=False)
    def review_page(
        request: Request,
        lane: Annotated[Lane, Query()] = "flagged",
        notice: Annotated[str | None, Query(max_length=40)] = None,
    ) -> Response:
        now = clock()
        session = current(request, sessions, now)
        if session is None or session.reviewer is None:
            return to_login()
        if not ready():  # a half-read topic would lease a newer item before an older one
            return message(
                "Rebuilding the queue",
                "The queue is being read from moderation.v1; reload in a moment.",
                503,
                back=f"/review?lane={lane}",
            )
        item = queue.lease_next(session.reviewer, lane, now)
        notices = {
            "recorded": "Recorded.",
            "duplicate": "Already recorded: nothing was sent again.",
            "lease_lost": "That item's lease had passed to another reviewer; nothing recorded.",
            "skipped": "Skipped.",
            "reopened": "Reopened your last decision: decide again.",
            "nothing_to_undo": "No decision of yours to undo.",
        }
        return page(
            "review.html",
            session=session,
            lane=lane,
            lanes=LANES,
            waiting=queue.waiting(),
            item=item,
            notice=notices.get(notice or ""),
            choices=CHOICES,
            lane_meaning=LANE_MEANING,
            detector_label=(
                "AI-generated (flagged)" if lane == "flagged" else "real (passed by the detector)"
            ),
            expires=(
                datetime.fromtimestamp(item.expires_at, UTC).strftime("%H:%M:%S UTC")
                if item
                else ""
            ),
        )

    @router.post("/review/decide", include_in_schema=False)
    async def decide(request: Request) -> Response:
        now = clock()
        session, form = await checked_form(request, sessions, now)
        if session.reviewer is None:
            return to_login()
        label = field(form, "label")
        if label not in get_args(Label):
            return message("Bad request", f"unknown label {label!r}", 400)
        lane = field(form, "lane")
        outcome, decision = await run_in_threadpool(
            queue.decide,
            session.reviewer,
            field(form, "lease_id"),
            cast(Label, label),
            now,
        )
        if outcome is Outcome.LEASE_LOST:
            metrics.refused.labels(reason="lease_lost").inc()
            return to_lane(lane, "lease_lost")
        if decision is None:  # RECORDED and DUPLICATE always carry the decision
            raise RuntimeError("a recorded decision went missing")
        if outcome is Outcome.DUPLICATE and decision.delivered:
            return to_lane(lane, "duplicate")
        event = feedback_event(decision)
        try:
            delivered = producer.send(feedback_topic, event, event.image_id)
            await asyncio.wait_for(asyncio.wrap_future(delivered), settings.delivery_timeout_s)
        except (TimeoutError, DeliveryFailed) as error:
            log.warning("decision on %s not acknowledged: %s", decision.image_id, error)
            await run_in_threadpool(queue.withdraw, decision, clock())
            return message(
                "Not recorded",
                "The broker did not acknowledge the decision; press the key again.",
                503,
                back=f"/review?lane={lane}",
            )
        await run_in_threadpool(queue.delivered, decision.lease_id)
        if outcome is Outcome.RECORDED:
            metrics.decisions.labels(lane=decision.lane, label=decision.label).inc()
        return to_lane(lane, outcome.value)

    @router.post("/review/skip", include_in_schema=False)
    async def skip(request: Request) -> Response:
        session, form = await checked_form(request, sessions, clock())
        if session.reviewer is None:
            return to_login()
        await run_in_threadpool(queue.skip, session.reviewer, field(form, "lease_id"))
        return to_lane(field(form, "lane"), "skipped")

    @router.post("/review/undo", include_in_schema=False)
    async def undo(request: Request) -> Response:
        now = clock()
        session, form = await checked_form(request, sessions, now)
        if session.reviewer is None:
            return to_login()
        reopened = await run_in_threadpool(queue.undo, session.reviewer, now)
        if reopened is None:
            return to_lane(field(form, "lane"), "nothing_to_undo")
        return to_lane(reopened.lane, "reopened")

    @router.get("/review/image/{image_id}", include_in_schema=False)
    async def review_image(
        request: Request, image_id: str, size: Annotated[int, Query(ge=32, le=2048)] = 640
    ) -> Response:
        session = current(request, sessions, clock())
        if session is None or session.reviewer is None:
            return Response(status_code=401)
        uri = queue.uri_of(image_id)
        return await image_response(thumbnails, uri, size)

    return router


async def image_response(thumbnails: Thumbnails, uri: str | None, size: int) -> Response:
    """A JPEG of the image behind ``uri`` (found server-side by image id), or 404."""
    if uri is None:
        return Response(status_code=404)
    try:
        data = await run_in_threadpool(thumbnails.jpeg, uri, size)
    except InvalidInput as error:
        log.warning("cannot show %s: %s", uri, error)
        return Response(status_code=404)
    return Response(
        data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=300"}
    )
