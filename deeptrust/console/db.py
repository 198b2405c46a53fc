"""The console's SQLite file: one connection, one lock, explicit write transactions.

Every change that reads before it writes (take the oldest free item, then lease it) runs in
``BEGIN IMMEDIATE``, which takes SQLite's write lock first: two uvicorn workers sharing the
file cannot both see an item free and both lease it.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    image_id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL,
    lane TEXT NOT NULL,
    queued_at REAL NOT NULL,
    partition INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    body TEXT NOT NULL,
    decided_elsewhere INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS items_order ON items (lane, queued_at, partition, offset);
CREATE TABLE IF NOT EXISTS leases (
    image_id TEXT PRIMARY KEY,
    reviewer TEXT NOT NULL,
    lease_id TEXT NOT NULL UNIQUE,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS decisions (
    lease_id TEXT PRIMARY KEY,
    image_id TEXT NOT NULL,
    reviewer TEXT NOT NULL,
    label TEXT NOT NULL,
    lane TEXT NOT NULL,
    uri TEXT NOT NULL,
    decided_at REAL NOT NULL,
    event_id TEXT NOT NULL UNIQUE,
    delivered INTEGER NOT NULL DEFAULT 0,
    undone INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS decisions_image ON decisions (image_id, undone);
CREATE TABLE IF NOT EXISTS skips (
    reviewer TEXT NOT NULL,
    image_id TEXT NOT NULL,
    PRIMARY KEY (reviewer, image_id)
);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY,
    public_id TEXT NOT NULL,
    reviewer TEXT,
    csrf TEXT NOT NULL,
    expires_at REAL NOT NULL
);
"""


class Database:
    """The console's state file, shared by the session and queue stores."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            path, check_same_thread=False, timeout=10.0, isolation_level=None
        )
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(SCHEMA)

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that holds SQLite's write lock from its first statement."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """The connection, for statements that only read."""
        with self._lock:
            yield self._db

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._db.close()
