"""The fixed train/test split: each file's side is decided by its content hash alone.

No random generator and no position: adding, removing or reordering examples never moves
another example across, and byte-identical copies always land together, so a duplicate
cannot leak a training image into the test set. The content hash is hashed once more with
a fixed namespace, so the split is independent of any other rule that draws on the same
digest (a sample for review, a canary share).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

TEST_FRACTION = 0.2
NAMESPACE = b"deeptrust/train-test-split/v1:"

Item = TypeVar("Item")


def test_share(sha256: str) -> float:
    """Where a file falls in [0, 1): the first 8 bytes of its namespaced hash, as a fraction."""
    draw = hashlib.sha256(NAMESPACE + bytes.fromhex(sha256)).digest()
    return int.from_bytes(draw[:8], "big") / 2**64


def is_test(sha256: str, test_fraction: float = TEST_FRACTION) -> bool:
    """True when the file with content hash ``sha256`` belongs to the test set."""
    return test_share(sha256) < test_fraction


@dataclass(frozen=True)
class Split(Generic[Item]):
    """Train and test, each in input order."""

    train: tuple[Item, ...]
    test: tuple[Item, ...]


def split_by_content(
    items: Iterable[Item],
    sha256_of: Callable[[Item], str],
    test_fraction: float = TEST_FRACTION,
) -> Split[Item]:
    """Split anything that knows its file's SHA-256 (quality results, manifest rows)."""
    train: list[Item] = []
    test: list[Item] = []
    for item in items:
        (test if is_test(sha256_of(item), test_fraction) else train).append(item)
    return Split(tuple(train), tuple(test))
