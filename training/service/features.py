"""Frozen-backbone features per image, cached by content hash.

The backbone never changes during training, so an image's features are computed once and
reused by every grid point of a sweep and by every later retrain that sees the image again.
The cache is keyed by the backbone's weights as well, so new weights never meet old features.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from deeptrust.processors.backbones.mobilenet_v2 import WEIGHTS_SHA256, MobileNetV2
from deeptrust.processors.models import ModelSpec
from deeptrust.streams.atomic_file import write_atomically
from deeptrust.streams.images import decode_image

BATCH = 32


class FeatureCache:
    """Raw 1280-d pooled MobileNetV2 features (what the probe head reads), one file per image."""

    def __init__(self, folder: Path, threads: int = 2) -> None:
        self._folder = folder / f"mobilenet-v2-{WEIGHTS_SHA256[:12]}"
        self._threads = threads
        self._backbone: MobileNetV2 | None = None

    def _path(self, sha256: str) -> Path:
        return self._folder / sha256[:2] / f"{sha256}.npy"

    def _infer(self, images: list[Image.Image]) -> np.ndarray:
        if self._backbone is None:
            options = {"intra_op_threads": str(self._threads)}
            self._backbone = MobileNetV2(
                ModelSpec("embed", "mobilenet-v2", "mobilenet-v2", "1", options)
            )
            self._backbone.load()
        features: np.ndarray = self._backbone.infer(images).features
        return features

    def features(
        self, items: Sequence[tuple[str, str]], read: Callable[[str], bytes]
    ) -> np.ndarray:
        """Features for ``(sha256, uri)`` pairs, in order; computes and stores the missing ones."""
        missing = [(sha, uri) for sha, uri in items if not self._path(sha).exists()]
        for start in range(0, len(missing), BATCH):
            chunk = missing[start : start + BATCH]
            images = [decode_image(read(uri)).image for _, uri in chunk]
            for (sha, _), row in zip(chunk, self._infer(images), strict=True):
                self._store(sha, row)
        if not items:
            return np.zeros((0, 1280), np.float32)
        return np.stack([np.load(self._path(sha)) for sha, _ in items])

    def _store(self, sha256: str, row: np.ndarray) -> None:
        """Write atomically, so a killed job never leaves a truncated file behind."""
        write_atomically(
            self._path(sha256), lambda file: np.save(file, np.asarray(row, np.float32))
        )
