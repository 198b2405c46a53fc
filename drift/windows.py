"""Windows of embeddings, closed by count or by age, whichever comes first.

Count windows give the detector a fixed sample size (its threshold is calibrated for one);
the age limit makes sure a quiet stream is still judged regularly. A window closed by age
with fewer embeddings than ``min_count`` is carried over rather than judged on too little
data. The clock is injected, so tests drive time directly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypedDict

import numpy as np


class WindowState(TypedDict):
    """The open window as plain, JSON-serialisable data."""

    vectors: list[list[float]]
    image_ids: list[str]
    opened_at: float | None


@dataclass(frozen=True)
class Window:
    """A closed window: its embeddings, the images they came from, and when it ran."""

    vectors: np.ndarray
    image_ids: tuple[str, ...]
    opened_at: float
    closed_at: float
    closed_by: str


@dataclass
class Windower:
    """Collects embeddings into windows of ``max_count``, or older than ``max_age_s``."""

    max_count: int
    max_age_s: float
    min_count: int
    clock: Callable[[], float] = time.time
    _vectors: list[list[float]] = field(default_factory=list, init=False)
    _image_ids: list[str] = field(default_factory=list, init=False)
    _opened_at: float | None = field(default=None, init=False)

    def add(self, image_id: str, vector: list[float]) -> Window | None:
        """Add one embedding; return the window it completed, if any."""
        if self._opened_at is None:
            self._opened_at = self.clock()
        self._vectors.append(vector)
        self._image_ids.append(image_id)
        if len(self._vectors) >= self.max_count:
            return self._close("count")
        return self.poll()

    def poll(self) -> Window | None:
        """Close the open window if it is old enough and big enough to judge."""
        if self._opened_at is None or len(self._vectors) < self.min_count:
            return None
        if self.clock() - self._opened_at >= self.max_age_s:
            return self._close("age")
        return None

    def _close(self, reason: str) -> Window:
        assert self._opened_at is not None
        window = Window(
            vectors=np.asarray(self._vectors, dtype=np.float64),
            image_ids=tuple(self._image_ids),
            opened_at=self._opened_at,
            closed_at=self.clock(),
            closed_by=reason,
        )
        self._vectors, self._image_ids, self._opened_at = [], [], None
        return window

    def to_state(self) -> dict[str, object]:
        """Return the open window as plain data, to survive a restart."""
        return {
            "vectors": self._vectors,
            "image_ids": self._image_ids,
            "opened_at": self._opened_at,
        }

    def restore(self, state: dict[str, object]) -> None:
        """Reopen the window saved by :meth:`to_state`."""
        self._vectors = [list(map(float, v)) for v in state["vectors"]]  # type: ignore[attr-defined]
        self._image_ids = [str(i) for i in state["image_ids"]]  # type: ignore[attr-defined]
        opened_at = state["opened_at"]
        self._opened_at = float(opened_at) if isinstance(opened_at, (int, float)) else None
