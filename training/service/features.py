"""Frozen-backbone features per image, cached by content hash.

The backbone never changes during training, so an image's features are computed once and
reused by every grid point of a sweep and by every later retrain that sees the image again.
The cache is keyed by the backbone's weights as well, so new weights never meet old features.
Missing features are computed batch by batch: a loader's worker processes read, decode and
preprocess the images (:mod:`deeptrust.training.trainer.streaming`), this process runs the
network, so no more than a few batches of pixels are in memory at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from deeptrust.processors.backbones.mobilenet_v2 import WEIGHTS_SHA256, MobileNetV2, preprocess
from deeptrust.processors.models import ModelSpec
from deeptrust.streams.atomic_file import write_atomically
from deeptrust.training.trainer.loading import LoaderOptions

BATCH = 32
DIMENSIONS = 1280


class FeatureCache:
    """Raw 1280-d pooled MobileNetV2 features (what the probe head reads), one file per image."""

    def __init__(
        self, folder: Path, threads: int = 2, loading: LoaderOptions | None = None
    ) -> None:
        self._folder = folder / f"mobilenet-v2-{WEIGHTS_SHA256[:12]}"
        self._threads = threads
        self._loading = loading or LoaderOptions()
        self._backbone: MobileNetV2 | None = None

    @property
    def namespace(self) -> str:
        """What computed the rows: the backbone and its weights."""
        return f"mobilenet-v2:{WEIGHTS_SHA256}"

    def _path(self, sha256: str) -> Path:
        return self._folder / sha256[:2] / f"{sha256}.npy"

    def _network(self, pixels: np.ndarray) -> np.ndarray:
        if self._backbone is None:
            options = {"intra_op_threads": str(self._threads)}
            self._backbone = MobileNetV2(
                ModelSpec("embed", "mobilenet-v2", "mobilenet-v2", "1", options)
            )
            self._backbone.load()
        features: np.ndarray = self._backbone.run_pixels(pixels).features
        return features

    def fill(self, items: Sequence[tuple[str, str]], read: Callable[[str], bytes]) -> int:
        """Compute and store the features of the ``(sha256, uri)`` pairs not cached yet.

        Returns how many were computed.
        """
        from deeptrust.training.trainer.streaming import (
            ImageDataset,
            ImageRef,
            InOrder,
            loader,
            shutdown,
        )

        missing = list({sha: uri for sha, uri in items if not self._path(sha).exists()}.items())
        if not missing:
            return 0
        refs = [ImageRef(uri, sha) for sha, uri in missing]
        batches = loader(
            ImageDataset(refs, read, preprocess), InOrder(len(refs), BATCH), self._loading
        )
        try:
            for pixels, indices in batches:
                rows = self._network(pixels.numpy())
                for index, row in zip(indices.tolist(), rows, strict=True):
                    self._store(refs[index].sha256, row)
        finally:
            shutdown(batches)
        return len(missing)

    def row(self, sha256: str) -> np.ndarray:
        """The cached features of one image (:meth:`fill` first)."""
        row: np.ndarray = np.load(self._path(sha256))
        return row

    def features(
        self, items: Sequence[tuple[str, str]], read: Callable[[str], bytes]
    ) -> np.ndarray:
        """Features for ``(sha256, uri)`` pairs, in order; computes and stores the missing ones.

        The result holds every row: callers pass a bounded chunk.
        """
        self.fill(items, read)
        if not items:
            return np.zeros((0, DIMENSIONS), np.float32)
        return np.stack([self.row(sha) for sha, _ in items])

    def _store(self, sha256: str, row: np.ndarray) -> None:
        """Write atomically, so a killed job never leaves a truncated file behind."""
        write_atomically(
            self._path(sha256), lambda file: np.save(file, np.asarray(row, np.float32))
        )
