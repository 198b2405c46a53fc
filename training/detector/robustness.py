"""The robustness grid: the same post-processing applied to real and generated test images.

Uploads are recompressed, rescaled and blurred on their way to a platform; a detector that
only works on pristine pixels is of little use, and one that reacts to the processing
itself (calling every JPEG real, say) would show it here, because every condition is
applied to both classes alike ("Fake or JPEG?", 2024; Wang et al. 2020).

No torch here.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from PIL import Image, ImageFilter

from deeptrust.training.detector.data import jpeg

Transform = Callable[[Image.Image], Image.Image]


def identity(image: Image.Image) -> Image.Image:
    """The image as generated or cropped."""
    return image


def rescale(image: Image.Image, factor: float) -> Image.Image:
    """Resize by ``factor`` (antialiased bilinear, Pillow's default downscaling filter)."""
    width, height = image.size
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return image.resize(size, Image.Resampling.BILINEAR)


def blur(image: Image.Image, radius: float) -> Image.Image:
    """Gaussian blur of standard deviation ``radius`` pixels."""
    return image.filter(ImageFilter.GaussianBlur(radius))


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    return jpeg(image, quality)


CONDITIONS: dict[str, Transform] = {
    "clean": identity,
    "JPEG q95": partial(_jpeg, quality=95),
    "JPEG q75": partial(_jpeg, quality=75),
    "JPEG q50": partial(_jpeg, quality=50),
    "resize x0.5": partial(rescale, factor=0.5),
    "resize x1.5": partial(rescale, factor=1.5),
    "blur r1": partial(blur, radius=1.0),
}
"""Every test condition, by the name the tables print; ``clean`` first."""

TARGET_CONDITIONS = ("JPEG q75", "resize x0.5")
"""The conditions under which the targets allow at most a 5-point loss."""
