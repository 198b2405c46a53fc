"""Metrics per slice of the test set: where a detector is weak hides in an overall number.

Slices come from the file itself (resolution, greyscale or colour by its pixels, JPEG
quality from its quantization tables, faces where OpenCV is installed) and from an
optional per-example failure-mode tag (``painting``, ``drawing``, ``heavy_filter``). A
slice with fewer than ``min_count`` examples is reported with its count and no metrics:
with 50 examples a rate near one half is already uncertain by about +-0.07.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image

from deeptrust.training.evaluation.classification import ClassificationReport, evaluate_binary
from deeptrust.training.evaluation.faces import FaceCounter

DEFAULT_MIN_COUNT = 50
GREY_SIDE = 256  # greyness is judged on a reduced copy: averaging grey pixels keeps them grey
GREY_TOLERANCE = 8  # max - min channel, in 0..255: JPEG's chroma rounding stays below it
GREY_SHARE = 0.99  # this share of pixels within the tolerance makes an image greyscale
MEGAPIXEL = 1_000_000
RESOLUTION_BUCKETS = ((0.25, "under_0.25mp"), (1.0, "0.25_to_1mp"), (float("inf"), "over_1mp"))
JPEG_QUALITY_BUCKETS = ((70, "jpeg_q_under_70"), (90, "jpeg_q_70_to_89"), (101, "jpeg_q_90_up"))
JPEG_FORMATS = frozenset({"JPEG", "MPO"})

# ITU-T T.81 Annex K, Table K.1: the luminance table IJG's libjpeg scales, in row order
# (the order Pillow's ``quantization`` uses).
STANDARD_LUMINANCE = np.array(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    np.int64,
).ravel()


def ijg_luminance_table(quality: int) -> np.ndarray:
    """The luminance table libjpeg writes at ``quality`` (1-100), baseline-clamped to 1..255.

    IJG scaling: s = 5000 / q below 50, else 200 - 2q (in percent); entry = (base s + 50) // 100.
    """
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return np.clip((STANDARD_LUMINANCE * scale + 50) // 100, 1, 255)


_IJG_TABLES = np.stack([ijg_luminance_table(quality) for quality in range(1, 101)])


def estimate_jpeg_quality(tables: Mapping[int, Sequence[int]]) -> int | None:
    """The IJG quality whose luminance table is closest (sum of absolute differences).

    Exact for files written by libjpeg (Pillow, most software); for a camera's or an
    editor's own tables it is the nearest equivalent on the same scale. None without a
    64-entry luminance table.
    """
    luminance = tables.get(0)
    if luminance is None or len(luminance) != 64:
        return None
    errors = np.abs(_IJG_TABLES - np.asarray(luminance, np.int64)).sum(axis=1)
    return int(np.argmin(errors)) + 1


def is_greyscale(image: Image.Image) -> bool:
    """True when the pixels are grey, whatever the mode: an RGB file of a grey photo is grey."""
    if image.mode in {"1", "L", "LA", "I", "I;16", "F"}:
        return True
    reduced = image.convert("RGB")
    reduced.thumbnail((GREY_SIDE, GREY_SIDE), Image.Resampling.BILINEAR)
    pixels = np.asarray(reduced, np.int16)
    spread = pixels.max(axis=2) - pixels.min(axis=2)
    return float(np.mean(spread <= GREY_TOLERANCE)) >= GREY_SHARE


@dataclass(frozen=True)
class ImageTraits:
    """What slices are drawn from, measured on the file. ``faces`` is None when not counted."""

    width: int
    height: int
    format: str
    greyscale: bool
    jpeg_quality: int | None
    faces: int | None = None

    @property
    def megapixels(self) -> float:
        """Width times height, in millions of pixels."""
        return self.width * self.height / MEGAPIXEL


def image_traits(data: bytes, faces: FaceCounter | None = None) -> ImageTraits:
    """Measure one image file's traits (the bytes of an example that passed quality checks)."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        quality = None
        if image.format in JPEG_FORMATS:
            quality = estimate_jpeg_quality(getattr(image, "quantization", None) or {})
        return ImageTraits(
            width=image.width,
            height=image.height,
            format=image.format or "unknown",
            greyscale=is_greyscale(image),
            jpeg_quality=quality,
            faces=None if faces is None else faces(image),
        )


def slice_names(traits: ImageTraits, tags: Sequence[str] = ()) -> list[tuple[str, str]]:
    """The (family, slice) pairs an image belongs to: one per family, one per tag."""
    resolution = next(name for limit, name in RESOLUTION_BUCKETS if traits.megapixels < limit)
    if traits.format in JPEG_FORMATS and traits.jpeg_quality is not None:
        compression = next(n for limit, n in JPEG_QUALITY_BUCKETS if traits.jpeg_quality < limit)
    else:
        compression = traits.format.lower() if traits.format == "PNG" else "other"
    names = [
        ("resolution", resolution),
        ("colour", "greyscale" if traits.greyscale else "colour"),
        ("compression", compression),
    ]
    if traits.faces is not None:
        names.append(("faces", "faces" if traits.faces else "no_faces"))
    names += [("failure_mode", tag) for tag in sorted(set(tags))]
    return names


@dataclass(frozen=True)
class SliceResult:
    """One slice: its size, and its metrics when it is large enough to trust."""

    family: str
    name: str
    count: int
    report: ClassificationReport | None

    def metrics(self) -> dict[str, float]:
        """``slice/<family>/<name>/<metric>``; only the count for a slice too small to judge."""
        prefix = f"slice/{self.family}/{self.name}/"
        if self.report is None:
            return {f"{prefix}count": float(self.count)}
        return self.report.metrics(prefix)


def evaluate_slices(
    labels: npt.ArrayLike,
    probabilities: npt.ArrayLike,
    traits: Sequence[ImageTraits],
    tags: Sequence[Sequence[str]] | None = None,
    threshold: float = 0.5,
    min_count: int = DEFAULT_MIN_COUNT,
) -> list[SliceResult]:
    """Metrics of every slice present, sorted by family and name."""
    truth = np.asarray(labels)
    values = np.asarray(probabilities, np.float64)
    if not len(truth) == len(values) == len(traits) or (
        tags is not None and len(tags) != len(truth)
    ):
        raise ValueError("labels, probabilities, traits and tags must have one entry per example")
    members: dict[tuple[str, str], list[int]] = {}
    for index, trait in enumerate(traits):
        for key in slice_names(trait, tags[index] if tags is not None else ()):
            members.setdefault(key, []).append(index)
    results = []
    for (family, name), indices in sorted(members.items()):
        chosen = np.asarray(indices)
        report = (
            evaluate_binary(truth[chosen], values[chosen], threshold)
            if len(indices) >= min_count
            else None
        )
        results.append(SliceResult(family, name, len(indices), report))
    return results


def slice_metrics(results: Sequence[SliceResult]) -> dict[str, float]:
    """All slices' metrics in one flat ``name -> float`` mapping."""
    merged: dict[str, float] = {}
    for result in results:
        merged |= result.metrics()
    return merged
