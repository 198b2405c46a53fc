"""Controlled distribution shifts of real photographs, for measuring drift detectors.

A stream of "uploads" is simulated by random crops of real photographs at random scales;
a shift is a transformation applied to every image of a stream at a chosen strength. The
shifts are the ones a photo platform actually sees: softer images (blur), heavier
compression (JPEG quality), a colour cast (a new camera pipeline or filter), smaller
images (downscaling), and a different source of images altogether (chosen by the caller).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, ImageFilter

Shift = Callable[[Image.Image], Image.Image]


def random_crops(
    photos: Sequence[Image.Image], count: int, rng: np.random.Generator, size: int = 160
) -> list[Image.Image]:
    """Return ``count`` crops covering 30-90% of a random photo's side, resized to ``size``."""
    crops = []
    for _ in range(count):
        photo = photos[int(rng.integers(len(photos)))]
        width, height = photo.size
        side = int(min(width, height) * rng.uniform(0.3, 0.9))
        left = int(rng.integers(0, width - side + 1))
        top = int(rng.integers(0, height - side + 1))
        crop = photo.crop((left, top, left + side, top + side))
        crops.append(crop.resize((size, size), Image.Resampling.BILINEAR))
    return crops


def blur(radius: float) -> Shift:
    """Gaussian blur of ``radius`` pixels: out-of-focus or over-smoothed uploads."""
    return lambda image: image.filter(ImageFilter.GaussianBlur(radius))


def jpeg(quality: int) -> Shift:
    """Recompression at JPEG ``quality``: a client that compresses harder."""

    def recompress(image: Image.Image) -> Image.Image:
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, "JPEG", quality=quality)
        return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")

    return recompress


def colour_cast(strength: float) -> Shift:
    """A warm cast: red up and blue down by ``strength`` (0-1) of the channel range."""
    offset = np.array([1.0, 0.0, -1.0]) * strength * 255

    def cast(image: Image.Image) -> Image.Image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.float64) + offset
        return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))

    return cast


def downscale(factor: float) -> Shift:
    """Shrink by ``factor`` and scale back: detail lost to small uploads."""

    def shrink(image: Image.Image) -> Image.Image:
        width, height = image.size
        small = (max(1, int(width / factor)), max(1, int(height / factor)))
        reduced = image.resize(small, Image.Resampling.BILINEAR)
        return reduced.resize((width, height), Image.Resampling.BILINEAR)

    return shrink


SHIFTS: dict[str, Callable[[float], Shift]] = {
    "blur": blur,
    "jpeg": lambda quality: jpeg(int(quality)),
    "colour-cast": colour_cast,
    "downscale": downscale,
}
"""Each shift by name, built from its strength."""
