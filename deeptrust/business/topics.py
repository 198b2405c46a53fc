"""Build the report's observations from the topics, read to their current end.

Reads through :class:`~deeptrust.streams.tail.TopicTail` (committed events only, nothing
committed back). A record that does not decode is skipped and counted, not fatal: one bad
record must not take the business metrics down, and the count says it happened.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

from pydantic import BaseModel

from deeptrust.business.observations import Decision, Interaction, Observations, Routed
from deeptrust.business.report import BusinessReport, build_report
from deeptrust.schemas.events import (
    DetectedEvent,
    FeedbackEvent,
    ModerationEvent,
    SearchInteractionEvent,
)
from deeptrust.streams.codec import PRODUCED_AT, decode, headers_dict
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.errors import InvalidInput
from deeptrust.streams.tail import BEGINNING, Position, TopicTail
from deeptrust.streams.topics import Topic, TopicNames

log = logging.getLogger(__name__)

E = TypeVar("E", bound=BaseModel)
R = TypeVar("R")


def read_observations(
    kafka: KafkaSettings,
    sample_rate: float,
    timeout_s: float = 30.0,
    since_ms: int | None = None,
    with_detected: bool = True,
) -> Observations:
    """Read moderation, feedback, search interactions (and detected) up to their ends."""
    names = TopicNames(kafka.topic_prefix)
    tally: Counter[str] = Counter()

    def read(topic: Topic, model: type[E], make: Callable[[E, dict[str, str]], R]) -> list[R]:
        return _read(kafka, names(topic), model, make, timeout_s, since_ms, tally)

    return Observations(
        sample_rate=sample_rate,
        routed=read(Topic.MODERATION, ModerationEvent, _routed),
        decisions=read(Topic.FEEDBACK, FeedbackEvent, _decision),
        interactions=read(Topic.SEARCH_INTERACTIONS, SearchInteractionEvent, _interaction),
        detected=read(Topic.DETECTED, DetectedEvent, lambda e, _: (e.image_id, e.uploaded_at))
        if with_detected
        else None,
        skipped=tally,
    )


def _routed(event: ModerationEvent, headers: dict[str, str]) -> Routed:
    # moderation.v1 carries no time of its own; the producer's header says when it was routed.
    stamp = headers.get(PRODUCED_AT)
    return Routed(event.image_id, event.reason, datetime.fromisoformat(stamp) if stamp else None)


def _decision(event: FeedbackEvent, _headers: dict[str, str]) -> Decision:
    return Decision(event.image_id, event.reviewer, event.label, event.decided_at)


def _interaction(event: SearchInteractionEvent, _headers: dict[str, str]) -> Interaction:
    return Interaction(
        session_id=event.session_id,
        query=event.query,
        kind=event.kind,
        at=event.occurred_at,
        results=tuple(event.results),
        image_id=event.image_id,
        rank=event.rank,
    )


def _read(
    kafka: KafkaSettings,
    topic: str,
    model: type[E],
    make: Callable[[E, dict[str, str]], R],
    timeout_s: float,
    since_ms: int | None,
    skipped: Counter[str],
) -> list[R]:
    tail = TopicTail(kafka, [topic], timeout_s=timeout_s, name="business-report")
    found: list[R] = []
    try:
        tail.open(BEGINNING if since_ms is None else Position(since_ms=since_ms))
        for message in tail.read_to_end(timeout_s):
            try:
                event = decode(message.value(), message.headers(), model)
            except InvalidInput as error:
                log.warning("%s: skipping offset %s: %s", topic, message.offset(), error)
                skipped[topic] += 1
                continue
            found.append(make(event, headers_dict(message.headers())))
    finally:
        tail.close()
    return found


def current_report(
    kafka: KafkaSettings, sample_rate: float, timeout_s: float = 30.0, with_detected: bool = False
) -> BusinessReport:
    """The report over everything on the topics now: for a page, ``business_rows(...)`` of it.

    ``detected.v1`` is left out by default: it is the whole image stream, and a page
    should not read it on every view.
    """
    return build_report(read_observations(kafka, sample_rate, timeout_s, None, with_detected))
