"""What the pipeline has made of each image, for ``GET /v1/uploads/{image_id}``.

A follower thread reads three topics — uploads (the image exists: pending), enriched (the
final result) and the dead letters of the image stages (failed, with the reason) — and keeps
the latest state per image id in a SQLite file.

Every gateway process reads every partition (a :class:`~deeptrust.streams.tail.TopicTail`,
no consumer group): a request for an image can reach any replica, so every replica needs
every result, whereas a shared group would split the partitions and each replica would know
only its share. The read positions are stored
in the same SQLite transaction as the results they produced, not committed to Kafka, so the
file and its position never disagree: a restarted process resumes where its file left off.
A partition the file has no position for (a fresh file: a new pod) starts at the first
message of the last ``lookback_s`` seconds (``offsets_for_times``), not at the earliest
retained one: at production rates a week of retention is hundreds of millions of messages,
hours of reading and a file full of results nobody asks for.

The follower is ready once the tail has caught up: every partition read up to the end it had
when the follower started. Until then a replica would answer 404 for images it has simply
not read yet, so it gets no traffic. Partitions added to the topics later are read after a
restart.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

from confluent_kafka import Message

from deeptrust.schemas.events import DeadLetterEvent, EnrichedEvent, UploadEvent
from deeptrust.streams.codec import MessageHeaders, decode
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.errors import InvalidInput
from deeptrust.streams.tail import Position, TopicTail
from deeptrust.streams.topics import Topic, TopicNames

log = logging.getLogger(__name__)

PRUNE_CHUNK = 1000
"""Rows one pruning transaction deletes at most, so the store's lock is never held long."""


class State(IntEnum):
    """An image's state; a later message never moves an image to a lower state."""

    PENDING = 0
    DEAD_LETTERED = 1
    ENRICHED = 2


@dataclass(frozen=True)
class Update:
    """A new state for one image; ``body`` is the JSON the status endpoint answers with."""

    image_id: str
    state: State
    body: str


@dataclass(frozen=True)
class ImageStatus:
    """The latest known state of one image."""

    image_id: str
    state: State
    body: str
    updated_at: float


IMAGE_STAGE_INPUTS = (Topic.UPLOADS, Topic.DETECTED, Topic.CAPTIONED)
"""The inputs of detect, caption and tag: a dead letter from one of them is a lost image."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    image_id TEXT PRIMARY KEY,
    state INTEGER NOT NULL,
    body TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS images_updated_at ON images (updated_at);
CREATE TABLE IF NOT EXISTS positions (
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
);
"""
_UPSERT = """
INSERT INTO images (image_id, state, body, updated_at) VALUES (?, ?, ?, ?)
ON CONFLICT (image_id) DO UPDATE
SET state = excluded.state, body = excluded.body, updated_at = excluded.updated_at
WHERE excluded.state >= images.state
"""
_PRUNE = """
DELETE FROM images WHERE rowid IN (SELECT rowid FROM images WHERE updated_at < ? LIMIT ?)
"""
_ADVANCE = """
INSERT INTO positions (topic, partition, next_offset) VALUES (?, ?, ?)
ON CONFLICT (topic, partition) DO UPDATE
SET next_offset = max(next_offset, excluded.next_offset)
"""


class StatusStore:
    """Results per image and the follower's read positions, in one SQLite file.

    Writes are monotonic (states only rise, positions only advance), so two processes
    following the same topics into one file (uvicorn workers in a pod) agree.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, timeout=5.0)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)

    def apply(self, updates: Iterable[Update], positions: dict[tuple[str, int], int]) -> None:
        """Record ``updates`` and the positions after them in one transaction."""
        now = time.time()
        with self._lock, self._db:
            self._db.executemany(
                _UPSERT, [(u.image_id, int(u.state), u.body, now) for u in updates]
            )
            self._db.executemany(
                _ADVANCE, [(topic, part, offset) for (topic, part), offset in positions.items()]
            )

    def mark_pending(self, image_id: str) -> None:
        """Record an upload this process accepted, so its own next GET finds it."""
        self.apply([pending(image_id)], {})

    def get(self, image_id: str) -> ImageStatus | None:
        """The latest state of ``image_id``, or None if it was never seen."""
        with self._lock:
            row = self._db.execute(
                "SELECT state, body, updated_at FROM images WHERE image_id = ?", (image_id,)
            ).fetchone()
        if row is None:
            return None
        return ImageStatus(image_id, State(row[0]), row[1], row[2])

    def position(self, topic: str, partition: int) -> int | None:
        """The next offset to read from a partition, or None before its first message."""
        with self._lock:
            row = self._db.execute(
                "SELECT next_offset FROM positions WHERE topic = ? AND partition = ?",
                (topic, partition),
            ).fetchone()
        return None if row is None else int(row[0])

    def positions(self) -> dict[tuple[str, int], int]:
        """The next offset to read from every partition the file has read from."""
        with self._lock:
            rows = self._db.execute("SELECT topic, partition, next_offset FROM positions")
            return {(str(topic), int(part)): int(offset) for topic, part, offset in rows}

    def prune(self, older_than: float, chunk: int = PRUNE_CHUNK) -> int:
        """Drop results last updated before ``older_than`` (Unix seconds); return how many.

        In transactions of at most ``chunk`` rows, releasing the lock (and SQLite's write
        lock) between them, so requests and the follower are never held up for long.
        """
        total = 0
        while True:
            with self._lock, self._db:
                cursor = self._db.execute(_PRUNE, (older_than, chunk))
            total += cursor.rowcount
            if cursor.rowcount < chunk:
                return total

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._db.close()


def pending(image_id: str) -> Update:
    """The state of an image whose upload event exists and whose result does not yet."""
    return Update(image_id, State.PENDING, json.dumps({"status": "pending", "image_id": image_id}))


def update_from(
    names: TopicNames, topic: str, value: bytes | None, headers: MessageHeaders
) -> Update | None:
    """Turn one message of a followed topic into an update, or None if it concerns none.

    Raises :class:`InvalidInput` for a message that does not decode as its topic's event.
    """
    if topic == names(Topic.UPLOADS):
        return pending(decode(value, headers, UploadEvent).image_id)
    if topic == names(Topic.ENRICHED):
        enriched = decode(value, headers, EnrichedEvent)
        return Update(enriched.image_id, State.ENRICHED, enriched.model_dump_json())
    if topic == names(Topic.DEAD_LETTERS):
        dead = decode(value, headers, DeadLetterEvent)
        inputs = {names(t) for t in IMAGE_STAGE_INPUTS}
        if dead.source_topic not in inputs or not dead.original_key:
            return None
        body = {
            "status": "dead_lettered",
            "image_id": dead.original_key,
            "stage": dead.stage,
            "reason": dead.reason,
            "detail": dead.detail,
            "failed_at": dead.failed_at.isoformat(),
        }
        return Update(dead.original_key, State.DEAD_LETTERED, json.dumps(body))
    return None


class StatusFollower:
    """Follows uploads, enriched results and dead letters into a :class:`StatusStore`."""

    def __init__(
        self,
        kafka: KafkaSettings,
        store: StatusStore,
        retention_s: float,
        lookback_s: float = 3600.0,
        timeout_s: float = 10.0,
    ) -> None:
        self._names = TopicNames(kafka.topic_prefix)
        self._store = store
        self._retention_s = retention_s
        self._lookback_s = lookback_s
        topics = [self._names(t) for t in (Topic.UPLOADS, Topic.ENRICHED, Topic.DEAD_LETTERS)]
        self._tail = TopicTail(kafka, topics, timeout_s=timeout_s, name="gateway-status")
        self._stop = threading.Event()
        self._assigned = threading.Event()
        self._caught_up = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gateway-status", daemon=True)

    def start(self) -> None:
        """Start following in the background."""
        self._thread.start()

    def close(self) -> None:
        """Stop following and close the consumer."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def ready(self) -> bool:
        """True once the follower has its partitions, has caught up on them, and runs."""
        return self._assigned.is_set() and self._caught_up.is_set() and self._thread.is_alive()

    def alive(self) -> bool:
        """False when the follower thread has died (the process should be restarted)."""
        return self._thread.ident is None or self._thread.is_alive()

    def _open(self) -> None:
        """Resume each partition where the status file left off, or ``lookback_s`` ago."""
        since_ms = int((time.time() - self._lookback_s) * 1000)
        self._tail.open(Position(offsets=self._store.positions(), since_ms=since_ms))
        for (topic, partition), bounds in sorted(self._tail.bounds.items()):
            log.info(
                "status follower: %s[%d] from offset %d (end %d)",
                *(topic, partition, bounds.start, bounds.stop),
            )
        self._assigned.set()

    def _run(self) -> None:
        last_prune = 0.0
        try:
            self._open()
            while not self._stop.is_set():
                self._apply(self._tail.poll(0.2))
                if not self._caught_up.is_set() and self._tail.caught_up:
                    log.info("status follower: caught up")
                    self._caught_up.set()
                if time.monotonic() - last_prune > 600:
                    self._store.prune(time.time() - self._retention_s)
                    last_prune = time.monotonic()
        except Exception:
            log.exception("the status follower stopped")
            raise
        finally:
            self._tail.close()

    def _apply(self, messages: list[Message]) -> None:
        updates: list[Update] = []
        positions: dict[tuple[str, int], int] = {}
        for message in messages:
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            if topic is None or partition is None or offset is None:
                continue
            positions[(topic, partition)] = offset + 1
            try:
                update = update_from(self._names, topic, message.value(), message.headers())
            except InvalidInput as error:
                log.warning("status follower skips %s[%d]@%d: %s", topic, partition, offset, error)
                continue
            if update is not None:
                updates.append(update)
        if positions:
            self._store.apply(updates, positions)
