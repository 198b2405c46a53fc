"""An upload read as square tiles at the scales the block probe learnt, never squashed to 224.

Training crops (``training/detector/data.py``: ``random_crops``) are squares of 10-90% of a
photograph's shorter side, after its longer side is bounded to 1024 px (Lanczos), resized
to 64 px (bilinear). Pixel traces live at that scale, so an upload is read the same way,
deterministically: squares of a quarter of its shorter side on a 2x2 grid and one of half
of it in the centre (5 tiles), each resized to 64 px. Larger squares are left out: they are
downscaled the most, so they keep the least of the pixel traces, and each tile costs the
stage a network run (14 tiles, adding a 3x3 grid and a nine-tenths square, held the detect
stage to about 20 uploads a second on two cores; the target is 30).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

MAX_SIDE = 1024
"""The longer side an image is bounded to first, as the training photographs were."""
TILE = 64
SCALES = ((0.25, 2), (0.5, 1))
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
