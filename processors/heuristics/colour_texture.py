"""A hand-made image embedding: colour distribution and edge structure.

An HSV colour histogram (hue by saturation by value) and a grid of gradient-orientation
histograms, square-rooted (Hellinger) and L2-normalised. It reacts to exactly the shifts
drift monitoring must see (colour casts, blur, compression, a new image source), costs a
millisecond, and needs no weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from deeptrust.processors.models import ModelSpec, register

THUMBNAIL = 96
HUE_BINS, SATURATION_BINS, VALUE_BINS = 8, 4, 4
ORIENTATION_BINS, GRID = 8, 2
DIMENSIONS = HUE_BINS * SATURATION_BINS * VALUE_BINS + ORIENTATION_BINS * GRID * GRID


class ColourTextureEmbedder:
    """Maps images to ``DIMENSIONS``-long unit vectors."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec

    def load(self) -> None:
        """Nothing to load: the embedding is computed from pixels."""

    def predict(self, batch: Sequence[Image.Image]) -> list[list[float]]:
        """Return one embedding per image."""
        return [embed(image).tolist() for image in batch]


def embed(image: Image.Image) -> np.ndarray:
    """Return the embedding of one image."""
    small = image.convert("RGB").resize((THUMBNAIL, THUMBNAIL), Image.Resampling.BILINEAR)
    colour = _colour_histogram(np.asarray(small.convert("HSV"), dtype=np.float32) / 256.0)
    texture = _orientation_histograms(np.asarray(small.convert("L"), dtype=np.float32) / 255.0)
    vector: np.ndarray = np.sqrt(np.concatenate([colour, texture]))
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def _colour_histogram(hsv: np.ndarray) -> np.ndarray:
    bins = (HUE_BINS, SATURATION_BINS, VALUE_BINS)
    histogram, _ = np.histogramdd(hsv.reshape(-1, 3), bins=bins, range=[(0, 1)] * 3)
    normalised: np.ndarray = histogram.ravel() / histogram.sum()
    return normalised


def _orientation_histograms(grey: np.ndarray) -> np.ndarray:
    dy, dx = np.gradient(grey)
    magnitude = np.hypot(dx, dy)
    orientation = (np.arctan2(dy, dx) % np.pi) / np.pi
    cells = []
    step = grey.shape[0] // GRID
    for row in range(GRID):
        for column in range(GRID):
            window = np.s_[row * step : (row + 1) * step, column * step : (column + 1) * step]
            histogram, _ = np.histogram(
                orientation[window], bins=ORIENTATION_BINS, range=(0, 1), weights=magnitude[window]
            )
            cells.append(histogram)
    stacked: np.ndarray = np.concatenate(cells)
    total = float(stacked.sum())
    return stacked / total if total > 0 else stacked


register("embed", "colour-texture")(ColourTextureEmbedder)
