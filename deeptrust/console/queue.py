"""The review queue: items from ``moderation.v1``, leased to one reviewer at a time.

Each lane (flagged, sampled) is served oldest first: by the broker's timestamp of the
moderation event, then partition and offset. Showing an item to a reviewer leases it to
them for ``lease_s``; nobody else is shown it until the lease ends or they decide. A
decision names the lease it was made under, so the same decision sent twice (a double key
press, a retried POST) is recorded once, and its feedback event id is derived from the
lease id, so a resend after a crash carries the same id. Undo reopens the reviewer's last
decision under a new lease; the decision made then replaces it (``feedback.v1`` keeps the
latest decision per image).

Every method takes the time (``now``, Unix seconds) from its caller, so tests decide it.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from deeptrust.console.db import Database
from deeptrust.schemas.events import ModerationEvent

Lane = Literal["flagged", "sampled"]
LANES: tuple[Lane, ...] = ("flagged", "sampled")
Label = Literal["ai_generated", "real"]
FEEDBACK_NAMESPACE = uuid.UUID("5d0f0a43-8f3e-4d0e-9d43-6b2f1c0c9e21")
"""Namespace of feedback event ids: ``uuid5(namespace, lease id)``."""


@dataclass(frozen=True)
class QueuedItem:
    """A moderation event where the console read it."""

    event: ModerationEvent
    queued_at: float
    partition: int
    offset: int


@dataclass(frozen=True)
class Leased:
    """An item shown to one reviewer, and the lease its decision must name."""

    event: ModerationEvent
    lane: Lane
    lease_id: str
    expires_at: float


@dataclass(frozen=True)
class Decision:
    """A recorded decision and the id of its feedback event."""

    lease_id: str
    image_id: str
    reviewer: str
    label: Label
    lane: Lane
    uri: str
    decided_at: float
    event_id: str
    delivered: bool


class Outcome(StrEnum):
    """What became of a decision sent to :meth:`ReviewQueue.decide`."""

    RECORDED = "recorded"
    DUPLICATE = "duplicate"
    """Already recorded under this lease: nothing new is sent."""
    LEASE_LOST = "lease_lost"
    """Another reviewer holds the item now, or it was decided meanwhile."""


_LEASED_BY = (
    "SELECT i.body, i.lane, l.lease_id, l.expires_at FROM leases l JOIN items i USING (image_id) "
    "WHERE l.reviewer = ? AND l.expires_at > ? AND i.lane = ? AND i.decided_elsewhere = 0 "
    "AND i.image_id NOT IN (SELECT image_id FROM decisions WHERE undone = 0) "
    "ORDER BY i.queued_at, i.partition, i.offset LIMIT 1"
)
_OLDEST_FREE = (
    "SELECT image_id, body FROM items WHERE lane = ? AND decided_elsewhere = 0 "
    "AND image_id NOT IN (SELECT image_id FROM decisions WHERE undone = 0) "
    "AND image_id NOT IN (SELECT image_id FROM leases WHERE expires_at > ? AND reviewer != ?) "
    "AND image_id NOT IN (SELECT image_id FROM skips WHERE reviewer = ?) "
    "ORDER BY queued_at, partition, offset LIMIT 1"
)
_WAITING = (
    "SELECT lane, count(*) FROM items WHERE decided_elsewhere = 0 "
    "AND image_id NOT IN (SELECT image_id FROM decisions WHERE undone = 0) GROUP BY lane"
)
_DECISION_COLUMNS = (
    "lease_id, image_id, reviewer, label, lane, uri, decided_at, event_id, delivered"
)


def feedback_event_id(lease_id: str) -> str:
    """The feedback event id of the decision made under ``lease_id`` (stable on resend)."""
    return str(uuid.uuid5(FEEDBACK_NAMESPACE, lease_id))


class ReviewQueue:
    """Items, leases and decisions in the console's file."""

    def __init__(self, db: Database, lease_s: float) -> None:
        self._db = db
        self.lease_s = lease_s

    def clear_items(self) -> None:
        """Forget the queued items (decisions and leases stay): the topic refills them."""
        with self._db.write() as db:
            db.execute("DELETE FROM items")

    def add(self, items: list[QueuedItem]) -> None:
        """Queue moderation events; a repeated event keeps its first place in the queue."""
        with self._db.write() as db:
            db.executemany(
                "INSERT INTO items (image_id, event_id, lane, queued_at, partition, offset, body) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (image_id) DO UPDATE "
                "SET body = excluded.body, lane = excluded.lane",
                [
                    (
                        i.event.image_id,
                        i.event.event_id,
                        i.event.reason,
                        i.queued_at,
                        i.partition,
                        i.offset,
                        i.event.model_dump_json(),
                    )
                    for i in items
                ],
            )

    def decided_elsewhere(self, decisions: dict[str, str]) -> None:
        """Take out images decided outside this console (image id to feedback event id).

        A feedback event this console produced itself is left to the console's own record,
        which knows whether it was undone since.
        """
        with self._db.write() as db:
            for image_id, event_id in decisions.items():
                ours = db.execute(
                    "SELECT 1 FROM decisions WHERE event_id = ?", (event_id,)
                ).fetchone()
                if ours is None:
                    db.execute(
                        "UPDATE items SET decided_elsewhere = 1 WHERE image_id = ?", (image_id,)
                    )

    def lease_next(self, reviewer: str, lane: Lane, now: float) -> Leased | None:
        """The item this reviewer holds in ``lane``, else the oldest free one, leased to them."""
        with self._db.write() as db:
            held = db.execute(_LEASED_BY, (reviewer, now, lane)).fetchone()
            if held is not None:
                return Leased(ModerationEvent.model_validate_json(held[0]), lane, held[2], held[3])
            free = db.execute(_OLDEST_FREE, (lane, now, reviewer, reviewer)).fetchone()
            if free is None:
                return None
            return _lease(db, free[0], reviewer, lane, now + self.lease_s, free[1])

    def decide(
        self, reviewer: str, lease_id: str, label: Label, now: float
    ) -> tuple[Outcome, Decision | None]:
        """Record a decision made under ``lease_id``; at most once per lease."""
        with self._db.write() as db:
            existing = _decision(db, "lease_id = ?", (lease_id,))
            if existing is not None:
                return Outcome.DUPLICATE, existing
            lease = db.execute(
                "SELECT l.image_id, i.lane, i.body FROM leases l JOIN items i USING (image_id) "
                "WHERE l.lease_id = ? AND l.reviewer = ?",
                (lease_id, reviewer),
            ).fetchone()
            if lease is None:  # taken over after it expired, or never this reviewer's
                return Outcome.LEASE_LOST, None
            image_id, lane, body = lease
            if _decision(db, "image_id = ? AND undone = 0", (image_id,)) is not None:
                return Outcome.LEASE_LOST, None
            uri = ModerationEvent.model_validate_json(body).uri
            decision = Decision(
                lease_id,
                image_id,
                reviewer,
                label,
                lane,
                uri,
                now,
                feedback_event_id(lease_id),
                delivered=False,
            )
            db.execute(
                f"INSERT INTO decisions ({_DECISION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0)",  # noqa: S608
                (lease_id, image_id, reviewer, label, lane, uri, now, decision.event_id),
            )
            db.execute("DELETE FROM leases WHERE lease_id = ?", (lease_id,))
            db.execute("DELETE FROM skips WHERE image_id = ?", (image_id,))
            return Outcome.RECORDED, decision

    def delivered(self, lease_id: str) -> None:
        """Note that the broker acknowledged a decision's feedback event."""
        with self._db.write() as db:
            db.execute("UPDATE decisions SET delivered = 1 WHERE lease_id = ?", (lease_id,))

    def withdraw(self, decision: Decision, now: float) -> None:
        """Take back a decision whose event was not acknowledged; the lease is theirs again."""
        with self._db.write() as db:
            db.execute("DELETE FROM decisions WHERE lease_id = ?", (decision.lease_id,))
            db.execute(
                "INSERT OR REPLACE INTO leases VALUES (?, ?, ?, ?)",
                (decision.image_id, decision.reviewer, decision.lease_id, now + self.lease_s),
            )

    def undelivered(self) -> list[Decision]:
        """Decisions recorded whose events were never acknowledged (a crash in between)."""
        with self._db.read() as db:
            rows = db.execute(
                f"SELECT {_DECISION_COLUMNS} FROM decisions WHERE delivered = 0 ORDER BY rowid"  # noqa: S608
            ).fetchall()
        return [_as_decision(row) for row in rows]

    def skip(self, reviewer: str, lease_id: str) -> None:
        """Pass an item on: this reviewer is not shown it again; others may take it now."""
        with self._db.write() as db:
            row = db.execute(
                "SELECT image_id FROM leases WHERE lease_id = ? AND reviewer = ?",
                (lease_id, reviewer),
            ).fetchone()
            if row is not None:
                db.execute("INSERT OR IGNORE INTO skips VALUES (?, ?)", (reviewer, row[0]))
                db.execute("DELETE FROM leases WHERE lease_id = ?", (lease_id,))

    def undo(self, reviewer: str, now: float) -> Leased | None:
        """Reopen this reviewer's last decision, leased to them again; None if none is left."""
        with self._db.write() as db:
            last = _decision(
                db, "reviewer = ? AND undone = 0 ORDER BY rowid DESC LIMIT 1", (reviewer,)
            )
            if last is None:
                return None
            body = db.execute(
                "SELECT body FROM items WHERE image_id = ?", (last.image_id,)
            ).fetchone()
            if body is None:  # no longer on the topic
                return None
            db.execute("UPDATE decisions SET undone = 1 WHERE lease_id = ?", (last.lease_id,))
            return _lease(db, last.image_id, reviewer, last.lane, now + self.lease_s, body[0])

    def waiting(self) -> dict[Lane, int]:
        """Items not yet decided, per lane (leased ones included)."""
        with self._db.read() as db:
            counts = dict(db.execute(_WAITING).fetchall())
        return {lane: int(counts.get(lane, 0)) for lane in LANES}

    def uri_of(self, image_id: str) -> str | None:
        """The object-store URI of a queued image (what the image route may serve)."""
        with self._db.read() as db:
            row = db.execute("SELECT body FROM items WHERE image_id = ?", (image_id,)).fetchone()
        return None if row is None else str(json.loads(row[0])["uri"])


def _lease(
    db: sqlite3.Connection, image_id: str, reviewer: str, lane: Lane, expires_at: float, body: str
) -> Leased:
    lease_id = uuid.uuid4().hex
    db.execute(
        "INSERT OR REPLACE INTO leases VALUES (?, ?, ?, ?)",
        (image_id, reviewer, lease_id, expires_at),
    )
    return Leased(ModerationEvent.model_validate_json(body), lane, lease_id, expires_at)


def _decision(db: sqlite3.Connection, where: str, args: tuple[object, ...]) -> Decision | None:
    row = db.execute(f"SELECT {_DECISION_COLUMNS} FROM decisions WHERE {where}", args).fetchone()  # noqa: S608
    return None if row is None else _as_decision(row)


def _as_decision(row: tuple[object, ...]) -> Decision:
    lease_id, image_id, reviewer, label, lane, uri, decided_at, event_id, delivered = row
    return Decision(
        str(lease_id),
        str(image_id),
        str(reviewer),
        label,  # type: ignore[arg-type]
        lane,  # type: ignore[arg-type]
        str(uri),
        float(decided_at),  # type: ignore[arg-type]
        str(event_id),
        bool(delivered),
    )
