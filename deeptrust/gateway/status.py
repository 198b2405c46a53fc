"""What the pipeline has made of each image, for ``GET /v1/uploads/{image_id}``.

A follower thread reads three topics — uploads (the image exists: pending), enriched (the
final result) and the dead letters of the image stages (failed, with the reason) — and keeps
the latest state per image id in a SQLite file.

Every gateway process consumes in a consumer group of its own: a request for an image can
reach any replica, so every replica needs every result, whereas a shared group would split
the partitions and each replica would know only its share. The read positions are stored
in the same SQLite transaction as the results they produced, not committed to Kafka, so the
file and its position never disagree: a restarted process resumes where its file left off.
A partition the file has no position for (a fresh file: a new pod) starts at the first
message of the last ``lookback_s`` seconds (``offsets_for_times``), not at the earliest
retained one: at production rates a week of retention is hundreds of millions of messages,
hours of reading and a file full of results nobody asks for. The group id need not be
stable either: it names the host, the process and a nonce, so that uvicorn workers sharing
a pod (or two followers in one test process) never share a group.

The follower is ready once every partition it was assigned has been read up to the end it
had when assigned (or librdkafka reported reaching its end, which also covers the offsets
of transaction markers and aborted messages, which no message is read from): until then a
replica would answer 404 for images it has simply not read yet, so it gets no traffic.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import IntEnum
from functools import partial
from pathlib import Path
from typing import TypeVar

from confluent_kafka import (
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from deeptrust.schemas.events import DeadLetterEvent, EnrichedEvent, UploadEvent
from deeptrust.streams.codec import MessageHeaders, decode
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.errors import InvalidInput
from deeptrust.streams.retry import RetryPolicy
from deeptrust.streams.topics import Topic, TopicNames

log = logging.getLogger(__name__)
T = TypeVar("T")

PRUNE_CHUNK = 1000
METADATA_RETRY = RetryPolicy(initial_s=1.0, max_s=1.0, max_attempts=5)
"""Offsets asked of a topic created moments ago, whose partitions have no leader yet."""
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


def _offsets(
    consumer: Consumer, asked: list[TopicPartition], timeout_s: float
) -> dict[tuple[str, int], int]:
    """The first offset at or after each partition's timestamp (-1: none), or raise."""
    found = {}
    for answer in consumer.offsets_for_times(asked, timeout=timeout_s):
        if answer.error is not None:
            raise KafkaException(answer.error)
        found[(answer.topic, answer.partition)] = answer.offset
    return found


def _ends(consumer: Consumer, partition: TopicPartition, timeout_s: float) -> tuple[int, int]:
    """The partition's first and next offsets, asked of the broker now."""
    where = TopicPartition(partition.topic, partition.partition)
    low, high = consumer.get_watermark_offsets(where, timeout=timeout_s, cached=False)
    return int(low), int(high)


def _retrying(what: str, call: Callable[[], T], policy: RetryPolicy = METADATA_RETRY) -> T:
    """``call``, tried again on a Kafka error (a new topic has no leader yet)."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return call()
        except KafkaException as error:
            if policy.exhausted(attempt):
                raise
            log.warning("status follower: %s failed (%s); trying again", what, error)
            time.sleep(policy.delay_s(attempt))


def instance_group_id(kafka: KafkaSettings) -> str:
    """A consumer group for this process alone (see the module's docstring for why)."""
    host, pid, nonce = socket.gethostname(), os.getpid(), uuid.uuid4().hex[:8]
    return f"{kafka.topic_prefix}gateway-status-{host}-{pid}-{nonce}"


class StatusFollower:
    """Follows uploads, enriched results and dead letters into a :class:`StatusStore`."""

    def __init__(
        self,
        kafka: KafkaSettings,
        store: StatusStore,
        retention_s: float,
        group_id: str | None = None,
        lookback_s: float = 3600.0,
        timeout_s: float = 10.0,
    ) -> None:
        self._names = TopicNames(kafka.topic_prefix)
        self._store = store
        self._retention_s = retention_s
        self._lookback_s = lookback_s
        self._timeout_s = timeout_s
        self._consumer = Consumer(
            {
                **kafka.client_config(),
                "group.id": group_id or instance_group_id(kafka),
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",  # a stored position the topic no longer has
                "isolation.level": "read_committed",
                "enable.partition.eof": True,  # tells when a partition has been read to its end
            }
        )
        self._stop = threading.Event()
        self._assigned = threading.Event()
        self._caught_up = threading.Event()
        self._behind: dict[tuple[str, int], int] = {}
        """Partitions not read up to the end they had when assigned, and that end."""
        self._thread = threading.Thread(target=self._run, name="gateway-status", daemon=True)

    def start(self) -> None:
        """Subscribe and start following in the background."""
        topics = [self._names(t) for t in (Topic.UPLOADS, Topic.ENRICHED, Topic.DEAD_LETTERS)]
        self._consumer.subscribe(topics, on_assign=self._on_assign)
        self._thread.start()

    def close(self) -> None:
        """Stop following and leave the group."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def ready(self) -> bool:
        """True once the follower has its partitions, has caught up on them, and runs."""
        return self._assigned.is_set() and self._caught_up.is_set() and self._thread.is_alive()

    def alive(self) -> bool:
        """False when the follower thread has died (the process should be restarted)."""
        return self._thread.ident is None or self._thread.is_alive()

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Resume each partition where the status file left off, or ``lookback_s`` ago.

        Also note the end of each partition now: the follower is ready once it got there.
        """
        fresh = []
        for partition in partitions:
            stored = self._store.position(partition.topic, partition.partition)
            if stored is None:
                fresh.append(partition)
            else:
                partition.offset = stored
        if fresh:
            since_ms = int((time.time() - self._lookback_s) * 1000)
            asked = [TopicPartition(p.topic, p.partition, since_ms) for p in fresh]
            found = _retrying(
                "offsets_for_times", lambda: _offsets(consumer, asked, self._timeout_s)
            )
            for partition in fresh:
                offset = found[(partition.topic, partition.partition)]
                # -1: no message since then; start at the end
                partition.offset = offset if offset >= 0 else OFFSET_END
        for partition in partitions:
            low, high = _retrying(
                "get_watermark_offsets", partial(_ends, consumer, partition, self._timeout_s)
            )
            if partition.offset == OFFSET_END:
                partition.offset = high
            if high > max(partition.offset, low):
                self._behind[(partition.topic, partition.partition)] = high
            log.info(
                "status follower: %s[%d] from offset %d (end %d)",
                *(partition.topic, partition.partition, partition.offset, high),
            )
        consumer.assign(partitions)
        self._assigned.set()
        self._note_progress({}, set())

    def _run(self) -> None:
        last_prune = 0.0
        try:
            while not self._stop.is_set():
                self._apply(self._consumer.consume(500, 0.2))
                if time.monotonic() - last_prune > 600:
                    self._store.prune(time.time() - self._retention_s)
                    last_prune = time.monotonic()
        except Exception:
            log.exception("the status follower stopped")
            raise
        finally:
            self._consumer.close()

    def _note_progress(
        self, positions: dict[tuple[str, int], int], ends: set[tuple[str, int]]
    ) -> None:
        """Strike off partitions read to their end; ready when none is left."""
        for key, offset in positions.items():
            end = self._behind.get(key)
            if end is not None and offset >= end:
                del self._behind[key]
        for key in ends:
            self._behind.pop(key, None)
        if not self._behind and self._assigned.is_set() and not self._caught_up.is_set():
            log.info("status follower: caught up")
            self._caught_up.set()

    def _apply(self, messages: list[Message]) -> None:
        updates: list[Update] = []
        positions: dict[tuple[str, int], int] = {}
        ends: set[tuple[str, int]] = set()
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    ends.add((message.topic() or "", message.partition() or 0))
                else:
                    log.warning("status follower: %s", error)
                continue
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
        if not self._caught_up.is_set():
            self._note_progress(positions, ends)
