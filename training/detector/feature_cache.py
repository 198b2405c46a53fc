"""Frozen features on disk, one file per image and variant, keyed by the image's content.

The CLIP tower runs at a few images a second on these CPUs, and the benchmark scores the
same images again in every fold, seed and rerun. Each image's features are stored under
``<root>/<extractor>/<variant>/<hash[:2]>/<hash>.npy``, where ``hash`` is the SHA-256 of
the image's shape and bytes and ``extractor`` names the network and its pre-processing: a
rerun, a reordered set or a set that shares images with another computes only images it has
never seen. Files are written to a temporary name and renamed, so an interrupted run never
leaves a torn entry.

No torch here: the unit tests run it on toy data.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

Compute = Callable[[np.ndarray], Mapping[str, np.ndarray]]
"""Images (N, H, W, 3) uint8 -> each variant's (N, D) features."""


def image_hash(image: np.ndarray) -> str:
    """SHA-256 of one image's shape, dtype and bytes."""
    sha = hashlib.sha256(f"{image.shape}{image.dtype}".encode())
    sha.update(np.ascontiguousarray(image).tobytes())
    return sha.hexdigest()


class FeatureCache:
    """Features of images by content hash, for the variants one forward pass produces."""

    def __init__(self, root: Path, extractor: str, variants: Sequence[str]) -> None:
        if not variants or len(set(variants)) != len(variants):
            raise ValueError("need distinct variant names")
        self.root = root / extractor
        self.variants = tuple(variants)
        self.computed = 0
        """Images this cache had to compute (the others were read from disk)."""

    def _path(self, variant: str, key: str) -> Path:
        return self.root / variant / key[:2] / f"{key}.npy"

    def _read(self, key: str) -> dict[str, np.ndarray] | None:
        paths = {variant: self._path(variant, key) for variant in self.variants}
        if not all(path.is_file() for path in paths.values()):
            return None
        return {variant: np.load(path) for variant, path in paths.items()}

    def _write(self, key: str, features: Mapping[str, np.ndarray]) -> None:
        for variant in self.variants:
            path = self._path(variant, key)
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
            np.save(temporary, np.asarray(features[variant]))
            temporary.replace(path)

    def features(
        self, pixels: np.ndarray, compute: Compute, chunk: int = 16
    ) -> dict[str, np.ndarray]:
        """Each variant's (N, D) features of ``pixels``, computing only the missing images.

        Missing images are computed ``chunk`` at a time and written as each chunk finishes,
        so an interrupted run keeps what it computed.
        """
        if len(pixels) == 0:
            raise ValueError("no images")
        keys = [image_hash(image) for image in pixels]
        found: dict[str, dict[str, np.ndarray]] = {}
        missing: list[int] = []
        for index, key in enumerate(keys):
            if key in found:
                continue
            cached = self._read(key)
            if cached is None:
                missing.append(index)
                found[key] = {}  # the first occurrence of a duplicate computes it
            else:
                found[key] = cached
        for start in range(0, len(missing), chunk):
            indices = missing[start : start + chunk]
            computed = compute(pixels[indices])
            for row, index in enumerate(indices):
                entry = {variant: np.asarray(computed[variant][row]) for variant in self.variants}
                self._write(keys[index], entry)
                found[keys[index]] = entry
            self.computed += len(indices)
        return {
            variant: np.stack([found[key][variant] for key in keys]) for variant in self.variants
        }
