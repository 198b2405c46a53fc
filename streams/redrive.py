"""Choosing dead letters and rebuilding the messages a redrive sends back.

An operator who fixed what made a stage reject its input sends the rejected messages back to
the topic the stage reads. Everything here is pure (no broker): which letters a filter
selects, which of them may go back, and the message that goes: the original key, value
bytes and headers, so the event keeps its id and the stage's outputs get the ids they would
have had. ``deeptrust.streams.redrive_kafka`` does the reading and the transactional write.
"""

from __future__ import annotations

import base64
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from deeptrust.schemas.events import DeadLetterEvent, DeadLetterRedrive
from deeptrust.streams.codec import EVENT_ID, TRACE_ID, Encoded, Headers, encode
from deeptrust.streams.topics import Topic, TopicNames

REDRIVE_HEADER = "dlq-redrive-of"
"""Added to a redriven message: the id of the dead letter it came back from."""

STAGE_INPUTS: Mapping[str, Topic] = {
    "detect": Topic.UPLOADS,
    "caption": Topic.DETECTED,
    "tag": Topic.CAPTIONED,
    "moderation": Topic.ENRICHED,
    "search": Topic.ENRICHED,
    "drift": Topic.EMBEDDINGS,
    "retrain": Topic.RETRAIN,
    "alert-webhooks": Topic.ALERTS,
}
"""Every service that dead-letters, by the name it signs its letters with, and what it reads.

Kept here rather than asked of the stages, so the tool never imports model code; a unit
test checks it against the stages and services themselves.
"""


@dataclass(frozen=True)
class Letter:
    """One dead letter as read from ``dlq.v1``: its id (the ``event-id`` header) and body."""

    id: str
    event: DeadLetterEvent
    headers: Mapping[str, str]

    @property
    def original_event_id(self) -> str | None:
        """The rejected event's id, as its own headers gave it."""
        return self.event.original_headers.get(EVENT_ID)

    @property
    def original_value(self) -> bytes:
        """The rejected message's value, byte for byte."""
        return base64.b64decode(self.event.original_value_b64)


@dataclass(frozen=True)
class LetterFilter:
    """Which letters an operator means: every given criterion must hold (empty: any)."""

    stages: frozenset[str] = frozenset()
    reasons: frozenset[str] = frozenset()
    ids: frozenset[str] = frozenset()
    since: datetime | None = None
    until: datetime | None = None

    @property
    def since_ms(self) -> int | None:
        """The lower bound for reading: a letter is appended after it failed, never before."""
        return None if self.since is None else int(self.since.timestamp() * 1000)

    def matches(self, letter: Letter) -> bool:
        """Whether ``letter`` is one of those meant (``until`` is exclusive)."""
        event = letter.event
        return (
            (not self.stages or event.stage in self.stages)
            and (not self.reasons or event.reason in self.reasons)
            and (not self.ids or letter.id in self.ids)
            and (self.since is None or event.failed_at >= self.since)
            and (self.until is None or event.failed_at < self.until)
        )


def select(letters: Iterable[Letter], wanted: LetterFilter) -> list[Letter]:
    """The letters ``wanted`` names, oldest first, each once.

    Oldest first is also the order they are redriven in, so one image's letters go back in
    the order they were rejected.
    """
    unique = {letter.id: letter for letter in letters if wanted.matches(letter)}
    return sorted(unique.values(), key=lambda letter: (letter.event.failed_at, letter.id))


class Verdict(StrEnum):
    """What a redrive does with one selected letter."""

    REDRIVE = "redrive"
    ALREADY_REDRIVEN = "already redriven"
    REFUSED = "refused"


@dataclass(frozen=True)
class Decision:
    """One letter and what becomes of it, with the reason when it is refused."""

    letter: Letter
    verdict: Verdict
    why: str = ""


def refusal(letter: Letter, names: TopicNames) -> str | None:
    """Why ``letter`` cannot go back, or ``None`` when it can.

    A letter goes back only to the input topic of the stage that rejected it: sending it
    anywhere else would feed it to consumers that never saw it.
    """
    stage = letter.event.stage
    if not letter.id:
        return "no event-id header: it could not be marked redriven"
    if stage not in STAGE_INPUTS:
        return f"unknown stage {stage!r} (known: {', '.join(STAGE_INPUTS)})"
    expected = names(STAGE_INPUTS[stage])
    if letter.event.source_topic != expected:
        return f"source topic {letter.event.source_topic!r} is not {stage}'s input {expected!r}"
    return None


def plan(
    letters: Sequence[Letter],
    redriven: Container[str],
    names: TopicNames,
    limit: int | None = None,
) -> list[Decision]:
    """Decide each letter in order; stop once ``limit`` letters are to be redriven."""
    decisions: list[Decision] = []
    chosen = 0
    for letter in letters:
        if limit is not None and chosen >= limit:
            break
        if letter.id in redriven:
            decisions.append(Decision(letter, Verdict.ALREADY_REDRIVEN))
            continue
        why = refusal(letter, names)
        if why is not None:
            decisions.append(Decision(letter, Verdict.REFUSED, why))
            continue
        decisions.append(Decision(letter, Verdict.REDRIVE))
        chosen += 1
    return decisions


@dataclass(frozen=True)
class Outgoing:
    """A message to produce to an exact topic and partition."""

    topic: str
    partition: int
    key: bytes | None
    value: bytes
    headers: Headers


def original_message(letter: Letter) -> Outgoing:
    """The rejected message as it was, to its own partition, marked with the letter's id.

    Its own partition keeps it with the rest of its image's events whatever the producer's
    partitioner; a mark left by an earlier redrive is replaced, not repeated.
    """
    event = letter.event
    headers: Headers = [
        (name, value.encode())
        for name, value in event.original_headers.items()
        if name != REDRIVE_HEADER
    ]
    headers.append((REDRIVE_HEADER, letter.id.encode()))
    return Outgoing(
        topic=event.source_topic,
        partition=event.source_partition,
        key=None if event.original_key is None else event.original_key.encode(),
        value=letter.original_value,
        headers=headers,
    )


def redrive_record(letter: Letter, now: datetime) -> Encoded:
    """The changelog record that says ``letter`` went back, keyed by its id."""
    event = letter.event
    record = DeadLetterRedrive(
        dead_letter_id=letter.id,
        stage=event.stage,
        reason=event.reason,
        source_topic=event.source_topic,
        source_partition=event.source_partition,
        source_offset=event.source_offset,
        original_event_id=letter.original_event_id,
        redriven_at=now,
    )
    return encode(record, key=record.key, trace_id=event.original_headers.get(TRACE_ID))
