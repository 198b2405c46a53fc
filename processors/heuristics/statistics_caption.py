"""A caption written from measured image statistics.

It says only what the pixels measurably show: brightness, dominant colours, how much
detail, greyscale or colour, and the frame's orientation. Every caption it writes names
this model, so no reader mistakes it for a learned captioner's description of content.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from deeptrust.processors.models import ModelSpec, register

_HUE_NAMES = (  # hue upper bounds on a 0..1 scale, and their names
    (0.04, "red"),
    (0.11, "orange"),
    (0.18, "yellow"),
    (0.45, "green"),
    (0.55, "cyan"),
    (0.72, "blue"),
    (0.83, "purple"),
    (0.95, "pink"),
    (1.01, "red"),
)
_SIZE = 128


def describe(image: Image.Image) -> str:
    """Return a one-sentence description of ``image``'s measurable properties."""
    width, height = image.size
    small = image.convert("RGB").resize((_SIZE, _SIZE), Image.Resampling.BILINEAR)
    hsv = np.asarray(small.convert("HSV"), dtype=np.float32).reshape(-1, 3) / 255.0
    saturation, value = hsv[:, 1], hsv[:, 2]
    grey = np.asarray(small.convert("L"), dtype=np.float32) / 255.0
    detail = float(np.mean(np.hypot(*np.gradient(grey))))

    words = []
    mean_value = float(value.mean())
    if mean_value < 0.3:
        words.append("dark")
    elif mean_value > 0.65:
        words.append("bright")
    if detail > 0.06:
        words.append("detailed")
    elif detail < 0.02:
        words.append("smooth")
    if width > height * 1.15:
        words.append("landscape-format")
    elif height > width * 1.15:
        words.append("portrait-format")
    else:
        words.append("square")

    if float(saturation.mean()) < 0.08:
        return f"a {', '.join(words)} black-and-white photo"
    return f"a {', '.join(words)} colour photo in mostly {' and '.join(_colours(hsv))} tones"


def _colours(hsv: np.ndarray) -> list[str]:
    """Return the one or two colour names that cover most of the image."""
    hue, saturation, value = hsv[:, 0], hsv[:, 1], hsv[:, 2]
    bounds = np.array([bound for bound, _ in _HUE_NAMES])
    names = np.array([name for _, name in _HUE_NAMES], dtype=object)[
        np.searchsorted(bounds, hue, "right")
    ]
    names = np.where(saturation < 0.15, np.where(value > 0.8, "white", "grey"), names)
    names = np.where(value < 0.2, "black", names)
    labels, counts = np.unique(names.astype(str), return_counts=True)
    order = np.argsort(-counts, kind="stable")
    chosen = [str(labels[order[0]])]
    if len(order) > 1 and counts[order[1]] > 0.2 * len(hsv):
        chosen.append(str(labels[order[1]]))
    return chosen


class StatisticsCaptioner:
    """Captions a batch of images from their statistics."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec

    def load(self) -> None:
        """Nothing to load: captions are computed from pixels."""

    def predict(self, batch: Sequence[Image.Image]) -> list[str]:
        """Return one caption per image."""
        return [describe(image) for image in batch]


register("caption", "image-statistics")(StatisticsCaptioner)
