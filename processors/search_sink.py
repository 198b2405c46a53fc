"""The search sink: keeps the search index up to date from enriched.v1.

Each image is indexed by its caption, its tags and their broader terms, so ``deeptrust
search animal`` finds a photo tagged ``ladybug``. It emits nothing; the runner still
commits its offsets in a transaction after each batch is indexed. The index write and the
offset commit are not one transaction, but the index upserts by image id, so a batch
indexed twice after a crash leaves the same index.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from deeptrust.processors.search_index import SearchIndex
from deeptrust.schemas.events import EnrichedEvent
from deeptrust.streams.stage import Result
from deeptrust.streams.topics import Topic


class SearchSink:
    """enriched.v1 → the SQLite FTS5 index."""

    name = "search"
    input_topic = Topic.ENRICHED
    input_model = EnrichedEvent

    def __init__(self, path: Path) -> None:
        self._path = path
        self._index: SearchIndex | None = None

    def setup(self) -> None:
        """Open (or create) the index."""
        self._index = SearchIndex(self._path)

    def prepare(self, event: EnrichedEvent) -> EnrichedEvent:
        """Nothing to fetch."""
        return event

    def process(self, items: Sequence[EnrichedEvent]) -> list[Result]:
        """Index the batch; nothing is emitted."""
        assert self._index is not None, "setup() not called"
        self._index.upsert(list(items))
        return [[] for _ in items]

    def close(self) -> None:
        """Close the index."""
        if self._index is not None:
            self._index.close()
            self._index = None
