"""The events the console writes: decisions on ``feedback.v1``, interactions of searchers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from deeptrust.console.queue import Decision
from deeptrust.schemas.events import FeedbackEvent, SearchInteractionEvent


def feedback_event(decision: Decision) -> FeedbackEvent:
    """The feedback event of a decision; its id comes from the lease, stable on resend."""
    return FeedbackEvent(
        event_id=decision.event_id,
        image_id=decision.image_id,
        uri=decision.uri,
        label=decision.label,
        reviewer=decision.reviewer,
        decided_at=datetime.fromtimestamp(decision.decided_at, UTC),
        note=f"console: {decision.lane}",
    )


def impression(
    session_id: str, query: str, results: list[str], now: datetime
) -> SearchInteractionEvent:
    """A results page as the searcher saw it: the image ids in rank order."""
    return SearchInteractionEvent(
        event_id=str(uuid.uuid4()),
        session_id=session_id,
        query=query,
        kind="impression",
        results=results,
        occurred_at=now,
    )


def click(
    session_id: str, query: str, results: list[str], image_id: str, now: datetime
) -> SearchInteractionEvent:
    """A result picked from a page; its rank is its place among ``results`` (1-based)."""
    return SearchInteractionEvent(
        event_id=str(uuid.uuid4()),
        session_id=session_id,
        query=query,
        kind="click",
        results=results,
        image_id=image_id,
        rank=results.index(image_id) + 1 if image_id in results else None,
        occurred_at=now,
    )
