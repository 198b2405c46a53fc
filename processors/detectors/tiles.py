"""An upload read as square tiles at the scales the block probe learnt, never squashed to 224.

Training crops (``training/detector/data.py``: ``random_crops``) are squares of 10-90% of a
photograph's shorter side, after its longer side is bounded to 1024 px (Lanczos), resized
to 64 px (bilinear). Pixel traces live at that scale, so an upload is read the same way,
deterministically: squares of a quarter, a half and nine tenths of its shorter side, on
grids of 3x3, 2x2 and one in the centre (14 tiles), each resized to 64 px.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

MAX_SIDE = 1024
"""The longer side an image is bounded to first, as the training photographs were."""
TILE = 64
SCALES = ((0.25, 3), (0.5, 2), (0.9, 1))
"""(side as a fraction of the shorter side, tiles per axis)."""
TILES_PER_IMAGE = sum(per_axis * per_axis for _, per_axis in SCALES)


def tiles(image: Image.Image) -> np.ndarray:
    """The image's ``TILES_PER_IMAGE`` tiles, (N, 64, 64, 3) uint8 RGB."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    if max(rgb.size) > MAX_SIDE:
        rgb = rgb.copy()  # thumbnail works in place; the caller's image stays as it was
        rgb.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    width, height = rgb.size
    short = min(width, height)
    out = []
    for fraction, per_axis in SCALES:
        side = min(short, max(TILE, round(short * fraction)))
        for top in _starts(height, side, per_axis):
            for left in _starts(width, side, per_axis):
                tile = rgb.crop((left, top, left + side, top + side))
                resized = tile.resize((TILE, TILE), Image.Resampling.BILINEAR, reducing_gap=None)
                out.append(np.asarray(resized, np.uint8))
    return np.stack(out)


def _starts(length: int, side: int, count: int) -> list[int]:
    """``count`` offsets of a ``side``-long window spread evenly over ``length``."""
    if count == 1:
        return [(length - side) // 2]
    return [round(i * (length - side) / (count - 1)) for i in range(count)]
