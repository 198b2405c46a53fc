"""Windows of embeddings, closed by count or by age, whichever comes first.

Count windows give the detector the sample size its threshold was calibrated for; the age
limit makes sure a slow stream is still judged regularly. Age is measured in event time (the
embeddings' timestamps), so replaying the same messages after a restart rebuilds the same
windows. A stream that goes silent would leave its last window open forever, so
:meth:`Windower.poll` also closes a window after ``max_age_s`` of wall-clock silence. A
window that ages out with fewer than ``min_count`` embeddings is carried over rather than
judged on too little data.

Each window remembers the first and last offset it holds per partition: the drift service
commits consumer offsets no further than the first offset of any open window, so a restart
re-reads exactly the embeddings that were not yet judged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Window:
    """A closed window: its embeddings, the images they came from, and its time span."""

    vectors: np.ndarray
    image_ids: tuple[str, ...]
    opened_at: float
    closed_at: float
    closed_by: str
    last_offsets: dict[int, int]


@dataclass
class Windower:
    """Collects embeddings into windows of ``max_count``, or older than ``max_age_s``."""

    max_count: int
    max_age_s: float
    min_count: int
    _vectors: list[Sequence[float] | np.ndarray] = field(default_factory=list, init=False)
    _image_ids: list[str] = field(default_factory=list, init=False)
    _opened_at: float | None = field(default=None, init=False)
    _latest_at: float = field(default=0.0, init=False)
    _last_received: float = field(default=0.0, init=False)
    _first_offsets: dict[int, int] = field(default_factory=dict, init=False)
    _last_offsets: dict[int, int] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        if not 1 <= self.min_count <= self.max_count:
            raise ValueError("need 1 <= min_count <= max_count")

    def __len__(self) -> int:
        return len(self._vectors)

    def add(
        self,
        image_id: str,
        vector: Sequence[float] | np.ndarray,
        at: float,
        partition: int,
        offset: int,
        received_at: float,
    ) -> Window | None:
        """Add one embedding with its event time, position and arrival (wall-clock) time.

        Return the window it closed, if any.
        """
        if self._opened_at is None:
            self._opened_at = at
        self._latest_at = max(self._latest_at, at)
        self._last_received = received_at
        self._vectors.append(vector)
        self._image_ids.append(image_id)
        self._first_offsets.setdefault(partition, offset)
        self._last_offsets[partition] = max(self._last_offsets.get(partition, offset), offset)
        if len(self._vectors) >= self.max_count:
            return self._close("count", self._latest_at)
        if len(self._vectors) >= self.min_count and at - self._opened_at >= self.max_age_s:
            return self._close("age", self._latest_at)
        return None

    def poll(self, now: float) -> Window | None:
        """Close the open window if nothing arrived for ``max_age_s`` before ``now``."""
        if self._opened_at is None or len(self._vectors) < self.min_count:
            return None
        if now - self._last_received >= self.max_age_s:
            return self._close("age", self._latest_at)
        return None

    def first_offsets(self) -> dict[int, int]:
        """The first offset per partition held by the open window (empty when none is open)."""
        return dict(self._first_offsets)

    def _close(self, reason: str, closed_at: float) -> Window:
        assert self._opened_at is not None
        window = Window(
            vectors=np.asarray(self._vectors, dtype=np.float64),
            image_ids=tuple(self._image_ids),
            opened_at=self._opened_at,
            closed_at=closed_at,
            closed_by=reason,
            last_offsets=dict(self._last_offsets),
        )
        self._vectors, self._image_ids, self._opened_at = [], [], None
        self._first_offsets, self._last_offsets, self._latest_at = {}, {}, 0.0
        return window
