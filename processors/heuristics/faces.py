"""People, which ImageNet's classes never name, found by their faces: OpenCV's Haar cascades.

The cascades (frontal and profile faces, Viola-Jones, BSD licence) ship inside the PyPI
package ``opencv-python-headless`` (the ``faces`` extra); nothing is downloaded. A face
counts when it is at least ``MIN_FACE`` of the image's shorter side, so texture in a
flower or a lawn is not taken for a distant face. Said in words for a caption: ``person``
and ``face`` for one face, ``people`` and ``faces`` for more, and ``portrait`` when a face
is at least ``PORTRAIT_FACE`` of the shorter side.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

MIN_FACE = 0.08
PORTRAIT_FACE = 0.2
_CASCADES = ("haarcascade_frontalface_alt2.xml", "haarcascade_profileface.xml")
_SIDE = 640  # detection runs on a copy no larger than this, for speed and steady scales


@dataclass
class FaceFinder:
    """Counts faces in an image; ``load()`` reads the cascades."""

    min_neighbours: int = 10
    """Overlapping detections a face needs. At 6 a leaf of Debian's `Blinds.jpg` was a
    face; at 10 none of the 20 bench photographs has a false face (docs/metrics.md)."""
    _cascades: list[Any] = field(default_factory=list, init=False, repr=False)

    def load(self) -> None:
        """Read the frontal and profile cascades from OpenCV's package data."""
        try:
            import cv2
        except ImportError as error:
            raise RuntimeError(
                "face finding needs the `faces` extra: pip install 'deeptrust[faces]'"
            ) from error

        root = Path(cv2.data.haarcascades)  # type: ignore[attr-defined]  # untyped package data
        self._cascades = [cv2.CascadeClassifier(str(root / name)) for name in _CASCADES]
        if any(cascade.empty() for cascade in self._cascades):
            raise RuntimeError(f"OpenCV's face cascades are missing under {root}")

    def faces(self, image: Image.Image) -> list[tuple[float, float, float, float]]:
        """Face boxes (x, y, width, height) as fractions of the image, overlaps merged."""
        assert self._cascades, "load() not called"
        grey = image.convert("L")
        grey.thumbnail((_SIDE, _SIDE))
        pixels = np.asarray(grey)
        side = min(pixels.shape)
        smallest = max(20, int(MIN_FACE * side))
        found: list[tuple[int, int, int, int]] = []
        for cascade in self._cascades:
            for flipped in (False, True):  # the profile cascade sees faces turned left only
                view = pixels[:, ::-1] if flipped else pixels
                boxes = cascade.detectMultiScale(
                    np.ascontiguousarray(view),
                    1.1,
                    self.min_neighbours,
                    minSize=(smallest, smallest),
                )
                for x, y, w, h in boxes:
                    x = pixels.shape[1] - x - w if flipped else x
                    found.append((int(x), int(y), int(w), int(h)))
        merged = _merge(found)
        height, width = pixels.shape
        return [(x / width, y / height, w / width, h / height) for x, y, w, h in merged]

    def people_words(self, image: Image.Image) -> list[str]:
        """``person``/``people``, ``face``/``faces``, ``portrait``; empty without a face."""
        faces = self.faces(image)
        if not faces:
            return []
        words = ["person", "face"] if len(faces) == 1 else ["people", "faces"]
        width, height = image.size
        shorter = min(width, height)
        largest = max(w * width for _, _, w, _ in faces)
        if largest >= PORTRAIT_FACE * shorter:
            words.append("portrait")
        return words


def _merge(boxes: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
    """Keep the largest of boxes whose centres fall inside one another (one face, twice)."""
    kept: list[tuple[int, int, int, int]] = []
    for box in sorted(boxes, key=lambda b: -b[2] * b[3]):
        x, y, w, h = box
        cx, cy = x + w / 2, y + h / 2
        if not any(kx <= cx <= kx + kw and ky <= cy <= ky + kh for kx, ky, kw, kh in kept):
            kept.append(box)
    return kept
