"""Frozen-backbone features per image, cached by content hash.

The backbone never changes during training, so an image's features are computed once and
reused by every grid point of a sweep and by every later retrain that sees the image again.
The cache is keyed by the backbone's weights as well, so new weights never meet old features.
Two networks feed the two probe backends (:class:`PooledMobileNet`, :class:`TiledBlocks`).
Missing features are computed batch by batch: a loader's worker processes read, decode and
preprocess the images (:mod:`deeptrust.training.trainer.streaming`), this process runs the
network, so no more than a few batches of pixels are in memory at once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from deeptrust.processors.backbones.mobilenet_v2 import (
    EMBEDDING_DIMENSIONS,
    WEIGHTS_SHA256,
    MobileNetV2,
    preprocess,
)
from deeptrust.processors.detectors.block_probe import BLOCKS, BlockFeatures
from deeptrust.processors.detectors.tiles import SCALES, TILE, tiles
from deeptrust.processors.models import ModelSpec
from deeptrust.streams.atomic_file import write_atomically
from deeptrust.training.trainer.loading import LoaderOptions

BATCH = 32


class FeatureNetwork(Protocol):
    """A frozen network whose per-image rows a probe head reads, as its detect backend does."""

    @property
    def namespace(self) -> str:
        """What computes the rows (network and weights): rows of two namespaces never mix."""
        ...

    @property
    def dimensions(self) -> int:
        """The length of a row."""
        ...

    def transform(self, image: Any) -> np.ndarray:
        """One decoded image to the network's input (runs in the loader's workers)."""
        ...

    def rows(self, inputs: np.ndarray) -> np.ndarray:
        """A batch of transformed images to their rows."""
        ...


class PooledMobileNet:
    """Raw 1280-d pooled MobileNetV2 features of the 224 px view: the ``mobilenet-probe``'s."""

    namespace = f"mobilenet-v2:{WEIGHTS_SHA256}"
    dimensions = EMBEDDING_DIMENSIONS

    def __init__(self, threads: int = 2) -> None:
        self._threads = threads
        self._backbone: MobileNetV2 | None = None

    transform = staticmethod(preprocess)

    def rows(self, inputs: np.ndarray) -> np.ndarray:
        """The backbone's pooled features."""
        if self._backbone is None:
            options = {"intra_op_threads": str(self._threads)}
            self._backbone = MobileNetV2(
                ModelSpec("embed", "mobilenet-v2", "mobilenet-v2", "1", options)
            )
            self._backbone.load()
        features: np.ndarray = self._backbone.run_pixels(inputs).features
        return features


class TiledBlocks:
    """712-d MobileNetV2 block features averaged over the image's tiles: ``mobilenet-blocks``'."""

    namespace = f"mobilenet-v2-blocks{list(BLOCKS)}-tiles{list(SCALES)}x{TILE}:{WEIGHTS_SHA256}"
    """The tiling is part of it: rows of another tile layout are another image's reading."""
    dimensions = BlockFeatures.dimensions

    def __init__(self, threads: int = 2) -> None:
        self._features = BlockFeatures(threads)

    transform = staticmethod(tiles)

    def rows(self, inputs: np.ndarray) -> np.ndarray:
        """The tile-mean block features (:class:`BlockFeatures`, as the stage computes them)."""
        return self._features.of_tiles(inputs)


class FeatureCache:
    """One network's rows, one file per image, in a folder named by the network's namespace."""

    def __init__(
        self, folder: Path, network: FeatureNetwork, loading: LoaderOptions | None = None
    ) -> None:
        digest = hashlib.sha256(network.namespace.encode()).hexdigest()[:16]
        self._folder = folder / digest
        self._network = network
        self._loading = loading or LoaderOptions()

    @property
    def namespace(self) -> str:
        """What computed the rows: the network and its weights."""
        return self._network.namespace

    @property
    def dimensions(self) -> int:
        """The length of a row."""
        return self._network.dimensions

    def _path(self, sha256: str) -> Path:
        return self._folder / sha256[:2] / f"{sha256}.npy"

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
            ImageDataset(refs, read, self._network.transform),
            InOrder(len(refs), BATCH),
            self._loading,
        )
        try:
            for pixels, indices in batches:
                rows = self._network.rows(pixels.numpy())
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
            return np.zeros((0, self.dimensions), np.float32)
        return np.stack([self.row(sha) for sha, _ in items])

    def _store(self, sha256: str, row: np.ndarray) -> None:
        """Write atomically, so a killed job never leaves a truncated file behind."""
        write_atomically(
            self._path(sha256), lambda file: np.save(file, np.asarray(row, np.float32))
        )
