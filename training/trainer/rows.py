"""Feature rows the probe head trains on, held in memory or read from a file row by row.

A job's frozen-backbone features are one 1280-d float32 row per image: 5 KB each, so 80,000
images hold 400 MB as float32 (twice that as float64, and a standardised copy again). The
retrain service writes a job's rows into one raw file (:func:`write_row_file`) and reads the
rows each batch needs with ``os.pread``, which maps nothing into the process: the page cache
keeps the file warm, and the training process's memory stays that of one batch. Tests and
small callers hand arrays (:class:`ArrayRows`) to the same loop.

numpy only: the service packs rows before a torch worker reads them.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

CHUNK_ROWS = 2048
"""Rows per read when a whole file is streamed (statistics, validation)."""


class FeatureRows(Protocol):
    """Labelled rows by index, with what names their content."""

    @property
    def dim(self) -> int:
        """Features per row."""
        ...

    @property
    def labels(self) -> np.ndarray:
        """0/1 labels, one per row."""
        ...

    @property
    def identity(self) -> bytes:
        """A digest of the rows' content (not their labels)."""
        ...

    def __len__(self) -> int: ...

    def take(self, indices: Sequence[int]) -> np.ndarray:
        """The rows at ``indices`` as float64, in that order."""
        ...

    def statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-column mean and population standard deviation over every row."""
        ...


@dataclass(frozen=True)
class ArrayRows:
    """Rows already in memory (``(N, D)``), as the probe loop always took them."""

    x: np.ndarray
    labels: np.ndarray

    @property
    def dim(self) -> int:
        """Columns of ``x``."""
        return int(self.x.shape[1])

    @property
    def identity(self) -> bytes:
        """SHA-256 of the shape and the float64 bytes."""
        sha = hashlib.sha256(repr(self.x.shape).encode())
        sha.update(np.ascontiguousarray(self.x, np.float64).tobytes())
        return sha.digest()

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def take(self, indices: Sequence[int]) -> np.ndarray:
        """Fancy indexing."""
        rows: np.ndarray = np.asarray(self.x[list(indices)], np.float64)
        return rows

    def statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """numpy's own mean and std over the whole array."""
        x = np.asarray(self.x, np.float64)
        return x.mean(axis=0), x.std(axis=0)


@dataclass(frozen=True)
class RowFile:
    """``count`` float32 rows of ``dim`` values, back to back in ``path`` (no header).

    Picklable (a path and numbers), so a loader's worker process can read it too.
    """

    path: Path
    count: int
    dim: int
    labels: np.ndarray = field(repr=False)
    identity: bytes = field(repr=False)

    def __len__(self) -> int:
        return self.count

    @property
    def _row_bytes(self) -> int:
        return self.dim * 4

    def _read(self, fd: int, start: int, rows: int) -> np.ndarray:
        size = rows * self._row_bytes
        data = os.pread(fd, size, start * self._row_bytes)
        if len(data) != size:
            raise ValueError(f"{self.path} is shorter than its {self.count} rows")
        return np.frombuffer(data, np.float32).reshape(rows, self.dim)

    def take(self, indices: Sequence[int]) -> np.ndarray:
        """One ``pread`` per row, nothing mapped."""
        out = np.empty((len(indices), self.dim), np.float64)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            for slot, index in enumerate(indices):
                if not 0 <= index < self.count:
                    raise IndexError(f"row {index} of {self.count}")
                out[slot] = self._read(fd, int(index), 1)[0]
        finally:
            os.close(fd)
        return out

    def chunks(self) -> Iterable[np.ndarray]:
        """Every row in order, :data:`CHUNK_ROWS` at a time, as float64."""
        fd = os.open(self.path, os.O_RDONLY)
        try:
            for start in range(0, self.count, CHUNK_ROWS):
                rows = min(CHUNK_ROWS, self.count - start)
                yield self._read(fd, start, rows).astype(np.float64)
        finally:
            os.close(fd)

    def statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std in one pass, merging chunks (Chan et al.), in float64."""
        count, mean, m2 = 0, np.zeros(self.dim), np.zeros(self.dim)
        for chunk in self.chunks():
            n = chunk.shape[0]
            chunk_mean = chunk.mean(axis=0)
            chunk_m2 = ((chunk - chunk_mean) ** 2).sum(axis=0)
            delta = chunk_mean - mean
            total = count + n
            mean = mean + delta * (n / total)
            m2 = m2 + chunk_m2 + delta**2 * (count * n / total)
            count = total
        if count == 0:
            raise ValueError(f"{self.path} holds no rows")
        return mean, np.sqrt(m2 / count)


def write_row_file(
    path: Path,
    keys: Sequence[str],
    labels: np.ndarray,
    row_of: Callable[[str], np.ndarray],
    namespace: str,
) -> RowFile:
    """Write the row of each key (``row_of(key)``, e.g. a cache lookup) into ``path``.

    The identity is the digest of ``namespace`` (what computed the rows: the backbone's
    weights) and the keys in order, so two files of the same images under the same backbone
    are the same data without comparing their bytes.
    """
    if len(keys) != len(labels):
        raise ValueError(f"{len(keys)} keys but {len(labels)} labels")
    sha = hashlib.sha256(f"{namespace}\n{len(keys)}\n".encode())
    dim = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        for key in keys:
            row = np.ascontiguousarray(row_of(key), np.float32).reshape(-1)
            if dim and row.shape[0] != dim:
                raise ValueError(f"row of {key} has {row.shape[0]} values, earlier rows {dim}")
            dim = row.shape[0]
            handle.write(row.tobytes())
            sha.update(key.encode())
    return RowFile(path, len(keys), dim, np.asarray(labels, np.float64), sha.digest())
