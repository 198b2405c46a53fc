"""The embedded search index: SQLite with FTS5 over captions, tags and broader terms.

Writes are upserts keyed by image id, so the sink may see an event twice (after a crash,
before its offsets were committed) and the index still holds it once. The tags' broader
terms (``insect``, ``animal`` for a ladybug) are indexed in a column of their own that
weighs half as much in the ranking: a search for ``dog`` finds the golden retriever, and
puts a photo tagged ``dog`` itself no lower.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from deeptrust.schemas.events import EnrichedEvent

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    image_id TEXT PRIMARY KEY,
    uri TEXT NOT NULL,
    caption TEXT NOT NULL,
    tags TEXT NOT NULL,
    ai_probability REAL NOT NULL,
    label TEXT NOT NULL,
    uploaded_at TEXT NOT NULL,
    broader TEXT NOT NULL DEFAULT ''
);
"""
_FTS_SCHEMA = """
CREATE VIRTUAL TABLE IF NOT EXISTS images_fts USING fts5(
    image_id UNINDEXED, caption, tags, broader, tokenize = 'porter unicode61'
)
"""
_SEPARATOR = ", "  # between terms, which may have spaces ("golden retriever")
_TERM = re.compile(r"\w+")


@dataclass(frozen=True)
class SearchHit:
    """One image matching a query."""

    image_id: str
    caption: str
    tags: list[str]
    ai_probability: float
    score: float
    broader: list[str] = field(default_factory=list)
    uri: str = ""
    label: str = ""


class SearchIndex:
    """A full-text index of enriched images in one SQLite file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._add_broader_terms()
        self._db.execute(_FTS_SCHEMA)

    def _add_broader_terms(self) -> None:
        """Upgrade an index made before broader terms: add the column, rebuild the FTS table."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(images)")}
        if "broader" in columns:
            return
        with self._db:
            self._db.execute("ALTER TABLE images ADD COLUMN broader TEXT NOT NULL DEFAULT ''")
            self._db.execute("DROP TABLE IF EXISTS images_fts")
            self._db.execute(_FTS_SCHEMA)
            self._db.execute(
                "INSERT INTO images_fts (image_id, caption, tags, broader) "
                "SELECT image_id, caption, tags, broader FROM images"
            )

    def upsert(self, events: list[EnrichedEvent]) -> None:
        """Index ``events`` in one transaction, replacing earlier versions of each image."""
        with self._db:
            for event in events:
                tags = _SEPARATOR.join(event.tags.values)
                broader = _SEPARATOR.join(event.tags.broader)
                self._db.execute(
                    "INSERT OR REPLACE INTO images VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        event.image_id,
                        event.uri,
                        event.caption.text,
                        tags,
                        event.detection.ai_probability,
                        event.detection.label,
                        event.uploaded_at.isoformat(),
                        broader,
                    ),
                )
                self._db.execute("DELETE FROM images_fts WHERE image_id = ?", (event.image_id,))
                self._db.execute(
                    "INSERT INTO images_fts (image_id, caption, tags, broader) VALUES (?, ?, ?, ?)",
                    (event.image_id, event.caption.text, tags, broader),
                )

    def search(self, query: str, limit: int = 10, label: str | None = None) -> list[SearchHit]:
        """Return the images best matching any word of ``query``, best first.

        With ``label`` (``real`` or ``ai_generated``), only images the detector labelled so.
        """
        terms = _TERM.findall(query.lower())
        if not terms:
            return []
        match = " OR ".join(f'"{term}"' for term in terms)
        rows = self._db.execute(
            # bm25 weights by FTS column: image_id (not indexed), caption, tags, broader.
            "SELECT i.image_id, i.caption, i.tags, i.ai_probability, "
            "bm25(images_fts, 0.0, 1.0, 1.0, 0.5) AS score, i.broader, i.uri, i.label "
            "FROM images_fts JOIN images i USING (image_id) "
            "WHERE images_fts MATCH ? AND (? IS NULL OR i.label = ?) ORDER BY score LIMIT ?",
            (match, label, label, limit),
        ).fetchall()
        return [
            SearchHit(r[0], r[1], _terms(r[2]), r[3], -r[4], _terms(r[5]), r[6], r[7]) for r in rows
        ]

    def uri_of(self, image_id: str) -> str | None:
        """The object-store URI of an indexed image, or None."""
        row = self._db.execute("SELECT uri FROM images WHERE image_id = ?", (image_id,)).fetchone()
        return None if row is None else str(row[0])

    def count(self) -> int:
        """Return how many images the index holds."""
        return int(self._db.execute("SELECT count(*) FROM images").fetchone()[0])

    def close(self) -> None:
        """Close the database."""
        self._db.close()


def _terms(joined: str) -> list[str]:
    """Split a stored list of terms."""
    return joined.split(_SEPARATOR) if joined else []
