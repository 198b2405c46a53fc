"""The embedded search index: SQLite with FTS5 over captions and tags.

Writes are upserts keyed by image id, so the sink may see an event twice (after a crash,
before its offsets were committed) and the index still holds it once.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from schemas.events import EnrichedEvent

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    image_id TEXT PRIMARY KEY,
    uri TEXT NOT NULL,
    caption TEXT NOT NULL,
    tags TEXT NOT NULL,
    ai_probability REAL NOT NULL,
    label TEXT NOT NULL,
    uploaded_at TEXT NOT NULL
);
CREATE VIRTUAL TABLE IF NOT EXISTS images_fts USING fts5(
    image_id UNINDEXED, caption, tags, tokenize = 'porter unicode61'
);
"""
_TERM = re.compile(r"\w+")


@dataclass(frozen=True)
class SearchHit:
    """One image matching a query."""

    image_id: str
    caption: str
    tags: list[str]
    ai_probability: float
    score: float


class SearchIndex:
    """A full-text index of enriched images in one SQLite file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def upsert(self, events: list[EnrichedEvent]) -> None:
        """Index ``events`` in one transaction, replacing earlier versions of each image."""
        with self._db:
            for event in events:
                tags = " ".join(event.tags.values)
                self._db.execute(
                    "INSERT OR REPLACE INTO images VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        event.image_id,
                        event.uri,
                        event.caption.text,
                        tags,
                        event.detection.ai_probability,
                        event.detection.label,
                        event.uploaded_at.isoformat(),
                    ),
                )
                self._db.execute("DELETE FROM images_fts WHERE image_id = ?", (event.image_id,))
                self._db.execute(
                    "INSERT INTO images_fts (image_id, caption, tags) VALUES (?, ?, ?)",
                    (event.image_id, event.caption.text, tags),
                )

    def search(self, query: str, limit: int = 10) -> list[SearchHit]:
        """Return the images best matching any word of ``query``, best first."""
        terms = _TERM.findall(query.lower())
        if not terms:
            return []
        match = " OR ".join(f'"{term}"' for term in terms)
        rows = self._db.execute(
            "SELECT i.image_id, i.caption, i.tags, i.ai_probability, bm25(images_fts) AS score "
            "FROM images_fts JOIN images i USING (image_id) "
            "WHERE images_fts MATCH ? ORDER BY score LIMIT ?",
            (match, limit),
        ).fetchall()
        return [SearchHit(r[0], r[1], r[2].split(), r[3], -r[4]) for r in rows]

    def count(self) -> int:
        """Return how many images the index holds."""
        return int(self._db.execute("SELECT count(*) FROM images").fetchone()[0])

    def close(self) -> None:
        """Close the database."""
        self._db.close()
