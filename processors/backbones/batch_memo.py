"""Remember what a backbone computed for the last batch, by the identity of its images.

The detect stage hands the same decoded images to two models built on one backbone: the
pixel detector (a probe on MobileNetV2 features) and the embedder (the features
themselves). With a shared memo the second model's pass is a lookup, so the network runs
once per batch, and neither model needs to know the other exists.

The memo holds weak references only: it never keeps a batch of decoded images (up to
hundreds of megabytes) alive after the stage has dropped it, and an identity match is
trustworthy because a referent that is still alive cannot share its ``id`` with another.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

V = TypeVar("V")


class LastBatchMemo(Generic[V]):
    """The result for the most recent batch, returned again for exactly the same items."""

    def __init__(self) -> None:
        self._refs: list[weakref.ref[Any]] = []
        self._value: V | None = None
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def lookup_or_compute(self, batch: Sequence[Any], compute: Callable[[], V]) -> V:
        """Return the remembered result if ``batch`` holds the same objects, else compute it."""
        with self._lock:
            if self._value is not None and self._same_items(batch):
                self.hits += 1
                return self._value
            self.misses += 1
            value = compute()
            try:
                self._refs = [weakref.ref(item) for item in batch]
            except TypeError:  # items that cannot be weakly referenced are never remembered
                self._refs, self._value = [], None
                return value
            self._value = value
            return value

    def _same_items(self, batch: Sequence[Any]) -> bool:
        if len(batch) != len(self._refs) or not batch:
            return False
        return all(ref() is item for ref, item in zip(self._refs, batch, strict=True))
