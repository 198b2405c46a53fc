"""Real photographs available offline, split by photograph, cut into crops at several scales.

No package ships AI-generated images, and the real side is small too: the 8 sample
photographs of ``samples/images`` and the 12 nature photographs of Debian's
``mate-backgrounds`` (GPL-2+; ``deeptrust-dev debian mate-backgrounds`` unpacks it with
``apt-get download`` and prints where, and the caller passes that folder in). Every crop remembers
its photograph, and the split is made over photographs before any crop is cut, so no
photograph contributes to both sides of an evaluation.

No torch here: this module is also imported by the unit tests in the main environment.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples" / "images"
DEBIAN_PACKAGE = "mate-backgrounds"
DEBIAN_FOLDER = "usr/share/backgrounds/mate/nature"
MAX_SIDE = 1024  # photographs are bounded first, so a crop's scale means the same everywhere

SAMPLE_LICENCES = {
    "astronaut.jpg": "public domain (NASA), via scikit-image",
    "camera.jpg": "CC0 (Lav Varshney), via scikit-image",
    "chelsea.png": "CC0 (Stefan van der Walt), via scikit-image",
    "coffee.jpg": "CC0 (Rachel Michetti), via scikit-image",
    "coins.jpg": "no known copyright restrictions (Brooklyn Museum), via scikit-image",
    "grace_hopper.jpg": "public domain (US Navy), via matplotlib",
    "hubble_deep_field.jpg": "public domain (NASA), via scikit-image",
    "rocket.jpg": "public domain (SpaceX), via scikit-image",
}
DEBIAN_LICENCE = "GPL-2+ (Debian mate-backgrounds; authors in its copyright file)"


@dataclass(frozen=True)
class Photo:
    """One real photograph: where it came from, its licence, its file's hash, its pixels."""

    name: str
    source: str
    licence: str
    sha256: str
    image: Image.Image


@dataclass(frozen=True)
class Crop:
    """A square crop of ``photo`` covering ``scale`` of its shorter side."""

    photo: str
    scale: float
    image: Image.Image


def _photo(path: Path, source: str, licence: str) -> Photo:
    data = path.read_bytes()
    image = Image.open(io.BytesIO(data)).convert("RGB")
    image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    return Photo(path.name, source, licence, hashlib.sha256(data).hexdigest(), image)


def sample_photos(folder: Path = SAMPLES) -> list[Photo]:
    """The repository's sample photographs."""
    return [
        _photo(path, "samples", SAMPLE_LICENCES.get(path.name, "see samples/README.md"))
        for path in sorted(folder.iterdir())
        if path.suffix.lower() in {".jpg", ".jpeg", ".png"}
    ]


def debian_photos(root: Path) -> list[Photo]:
    """The nature photographs of ``mate-backgrounds``, unpacked under ``root``."""
    return [
        _photo(path, "mate-backgrounds", DEBIAN_LICENCE)
        for path in sorted((root / DEBIAN_FOLDER).iterdir())
    ]


def split_photos(
    photos: Sequence[Photo], test_fraction: float, seed: int
) -> tuple[list[Photo], list[Photo]]:
    """Split photographs (not crops) into train and test, the same share of each source.

    Stratifying by source keeps both kinds of photograph (objects and portraits, nature
    close-ups) on both sides; at least one photograph of each source stays in training.
    """
    rng = np.random.default_rng(seed)
    train: list[Photo] = []
    test: list[Photo] = []
    for source in sorted({photo.source for photo in photos}):
        group = [photo for photo in photos if photo.source == source]
        order = rng.permutation(len(group))
        count = min(len(group) - 1, max(1, round(test_fraction * len(group))))
        test += [group[i] for i in order[:count]]
        train += [group[i] for i in order[count:]]
    return train, test


def random_crops(
    photos: Sequence[Photo],
    count: int,
    rng: np.random.Generator,
    size: int,
    scales: tuple[float, float] = (0.1, 0.9),
    min_side: int = 64,
) -> list[Crop]:
    """``count`` square crops resized to ``size``, their side drawn log-uniformly in ``scales``.

    Photographs are drawn uniformly, so a small photograph counts as much as a large one.
    No crop is cut smaller than ``min_side`` pixels, so none is an upscaled thumbnail.
    """
    low, high = np.log(scales[0]), np.log(scales[1])
    crops = []
    for _ in range(count):
        photo = photos[int(rng.integers(len(photos)))]
        width, height = photo.image.size
        short = min(width, height)
        scale = float(np.exp(rng.uniform(low, high)))
        side = min(short, max(min_side, round(short * scale)))
        left = int(rng.integers(0, width - side + 1))
        top = int(rng.integers(0, height - side + 1))
        crop = photo.image.crop((left, top, left + side, top + side))
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        resized = crop.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
        crops.append(Crop(photo.name, side / short, resized))
    return crops


def to_array(images: Iterable[Image.Image]) -> np.ndarray:
    """Stack RGB images of one size into a (N, H, W, 3) uint8 array."""
    return np.stack([np.asarray(image.convert("RGB"), np.uint8) for image in images])


def to_images(pixels: np.ndarray) -> list[Image.Image]:
    """The inverse of :func:`to_array`."""
    return [Image.fromarray(np.ascontiguousarray(row, np.uint8), "RGB") for row in pixels]


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    """``image`` after one JPEG round trip at ``quality`` (Pillow's default 4:2:0 subsampling)."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def digest(pixels: np.ndarray) -> str:
    """SHA-256 of an array's shape and bytes: names a data set in the head's metadata."""
    sha = hashlib.sha256(str(pixels.shape).encode())
    sha.update(np.ascontiguousarray(pixels).tobytes())
    return sha.hexdigest()
