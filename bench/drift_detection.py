"""Detection and false-alarm rates of the drift detectors on real photographs.

Run: ``make bench-drift`` (or ``python bench/drift_detection.py`` in an environment with
the ``alibi`` extra for the alibi-detect column). Writes ``docs/drift-benchmark.md``.

The "upload stream" is random crops (30-90% of the side, 160 px) of real photographs: the
8 sample photographs and the 12 nature photographs of Debian's ``mate-backgrounds``
package (GPL-2+, fetched with ``apt-get download`` into ``~/.cache/deeptrust/debian``).
Each crop, after its shift, is saved as a JPEG of quality 90 as an uploader would, and
embedded by each embedding model of ``--embedders`` (default: MobileNetV2 and CLIP
ViT-B/16 int8, both on ONNX Runtime), on the very same crops.
The reference window and the live pools are drawn independently. Every window of a
condition is a random draw (without replacement) of ``--window`` embeddings from that
condition's pool, and every detector judges the very same windows:

- unshifted: crops of the same photographs (false-alarm rate);
- blur, JPEG quality, colour cast, downscaling: the same crops transformed (the JPEG
  shift recompresses at a lower quality before the upload's own encoding);
- another source: a share of each window replaced by crops of the package's digital
  wallpapers (abstract and desktop art instead of photographs).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image

import deeptrust.processors.registry  # noqa: F401 - registers the model backends
from deeptrust.devtools.debian import debian_package
from deeptrust.drift.detectors import DETECTORS, DetectorConfig, DriftDetector
from deeptrust.drift.shifts import SHIFTS, jpeg, random_crops
from deeptrust.processors.models import load_model
from deeptrust.processors.settings import ProcessorSettings

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "drift-benchmark.md"
PACKAGE = "mate-backgrounds"
UPLOAD_QUALITY = 90
STRENGTHS: dict[str, tuple[float, ...]] = {
    "blur": (0.5, 1.0, 2.0),
    "jpeg": (50, 20, 8),
    "colour-cast": (0.05, 0.1, 0.2),
    "downscale": (1.5, 2.0, 4.0),
    "other-source": (0.1, 0.25, 0.5),
}
UNITS = {
    "blur": "radius {:g} px",
    "jpeg": "quality {:g}",
    "colour-cast": "{:.0%} of range",
    "downscale": "factor {:g}",
    "other-source": "{:.0%} of window",
}


def debian_images(folders: Sequence[str]) -> list[Image.Image]:
    """Images of ``mate-backgrounds`` in ``folders`` (the package is fetched once)."""
    base = debian_package(PACKAGE) / "usr/share/backgrounds/mate"
    paths = sorted(p for folder in folders for p in (base / folder).iterdir())
    return [_bounded(Image.open(path)) for path in paths]


def _bounded(image: Image.Image, side: int = 1024) -> Image.Image:
    image = image.convert("RGB")
    image.thumbnail((side, side))
    return image


@dataclass
class Pools:
    """Embeddings per condition, and the reference."""

    model: str
    reference: np.ndarray
    unshifted: np.ndarray
    shifted: dict[tuple[str, float], np.ndarray]
    other_source: np.ndarray


def embed_pools(
    photos: list[Image.Image], art: list[Image.Image], args: argparse.Namespace, backend: str
) -> Pools:
    """Crop, shift and embed everything once with the ``embed`` backend ``backend``."""
    embedder = load_model(ProcessorSettings(embed_backend=backend).model_spec("embed"))

    upload = jpeg(UPLOAD_QUALITY)

    def embed(images: list[Image.Image]) -> np.ndarray:
        """Embed images as they would arrive: JPEG-encoded by the uploader."""
        return np.asarray(embedder.predict([upload(image) for image in images]), np.float64)

    rng = np.random.default_rng(args.seed)
    reference = embed(random_crops(photos, args.reference, rng))
    unshifted = embed(random_crops(photos, args.pool * 4, rng))
    base = random_crops(photos, args.pool, rng)
    shifted = {}
    for name, strengths in STRENGTHS.items():
        if name == "other-source":
            continue
        for strength in strengths:
            shift = SHIFTS[name](strength)
            shifted[(name, strength)] = embed([shift(image) for image in base])
    art_pool = embed(random_crops(art, args.pool, rng))
    return Pools(embedder.spec.label, reference, unshifted, shifted, art_pool)


def rate(
    detector: DriftDetector,
    draw: Callable[[np.random.Generator], np.ndarray],
    windows: int,
    seed: int,
) -> float:
    """Share of ``windows`` windows (drawn by ``draw``) that the detector calls drift."""
    rng = np.random.default_rng(seed)
    return float(np.mean([detector.predict(draw(rng)).is_drift for _ in range(windows)]))


@dataclass
class Column:
    """One embedding model's detectors, and how long its pools took to embed."""

    pools: Pools
    detectors: dict[str, DriftDetector]
    embedded_s: float


def main() -> None:
    """Measure every detector on every condition, for every embedder, and write the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--embedders", nargs="+", default=["mobilenet-v2", "clip-vit-b16-int8"])
    parser.add_argument("--window", type=int, default=200)
    parser.add_argument("--reference", type=int, default=1000)
    parser.add_argument("--pool", type=int, default=800)
    parser.add_argument("--windows", type=int, default=100)
    parser.add_argument("--stable-windows", type=int, default=500)
    parser.add_argument("--false-alarm-rate", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    started = time.perf_counter()
    photos = [_bounded(Image.open(p)) for p in sorted((ROOT / "samples/images").iterdir())]
    photos += debian_images(["nature"])
    art = debian_images(["abstract", "desktop"])
    config = DetectorConfig(args.window, args.false_alarm_rate, n_components=8, seed=args.seed)
    columns: list[Column] = []
    missing: set[str] = set()
    for backend in args.embedders:
        embedding_started = time.perf_counter()
        pools = embed_pools(photos, art, args, backend)
        embedded_s = time.perf_counter() - embedding_started
        detectors: dict[str, DriftDetector] = {}
        for name, factory in DETECTORS.items():
            try:
                detectors[name] = factory(pools.reference, config)
            except ImportError:
                missing.add(name)
        columns.append(Column(pools, detectors, embedded_s))
        print(f"{pools.model}: embedded in {embedded_s:.0f} s", flush=True)

    def sample(pool: np.ndarray) -> Callable[[np.random.Generator], np.ndarray]:
        return lambda rng: pool[rng.choice(len(pool), args.window, replace=False)]

    def mixed(pools: Pools, share: float) -> Callable[[np.random.Generator], np.ndarray]:
        foreign = round(args.window * share)

        def draw(rng: np.random.Generator) -> np.ndarray:
            own = pools.unshifted[rng.choice(len(pools.unshifted), args.window - foreign, False)]
            other = pools.other_source[rng.choice(len(pools.other_source), foreign, False)]
            return np.concatenate([own, other])

        return draw

    def draw_for(
        pools: Pools, name: str, strength: float
    ) -> Callable[[np.random.Generator], np.ndarray]:
        if name == "other-source":
            return mixed(pools, strength)
        return sample(pools.shifted[(name, strength)])

    conditions: list[
        tuple[str, str, Callable[[Pools], Callable[[np.random.Generator], np.ndarray]], int]
    ] = [
        (
            "unshifted (false alarms)",
            "-",
            lambda pools: sample(pools.unshifted),
            args.stable_windows,
        )
    ]
    for name, strengths in STRENGTHS.items():
        for strength in strengths:
            conditions.append(
                (
                    name,
                    UNITS[name].format(strength),
                    lambda pools, n=name, s=strength: draw_for(pools, n, s),
                    args.windows,
                )
            )

    names = [f"{c.pools.model}: {d}" for c in columns for d in c.detectors]
    header = "| shift | strength | " + " | ".join(names) + " |"
    rows = [header, "|---|---|" + "---:|" * len(names)]
    for index, (name, strength, draw, windows) in enumerate(conditions):
        rates = [
            rate(detector, draw(column.pools), windows, args.seed + index)
            for column in columns
            for detector in column.detectors.values()
        ]
        rows.append(f"| {name} | {strength} | " + " | ".join(f"{r:.2f}" for r in rates) + " |")
        print(rows[-1], flush=True)

    models = ", ".join(
        f"`{c.pools.model}` ({c.pools.reference.shape[1]}-d, {c.embedded_s:.0f} s to crop and "
        "embed)"
        for c in columns
    )
    command = (
        "make bench-drift"
        if _defaults(parser, args)
        else "bench/drift_detection.py " + " ".join(_changed(parser, args))
    )
    lines = [
        "# Drift detection on real photographs",
        "",
        f"Produced by `{command}` (`bench/drift_detection.py`) on "
        f"{datetime.now(UTC):%Y-%m-%d}, {os.cpu_count()} cores, in "
        f"{time.perf_counter() - started:.0f} s. Do not edit by hand.",
        "",
        f"- Embedding models, on the same crops: {models}.",
        f"- Photographs: {len(photos)} (8 samples + 12 from Debian's mate-backgrounds); "
        f"other source: {len(art)} digital wallpapers from the same package.",
        f"- Uploads: crops saved as JPEG quality {UPLOAD_QUALITY} after their shift. "
        f"Reference: {args.reference} embeddings of random crops. Window: "
        f"**{args.window}** embeddings. Stated false-alarm rate: {args.false_alarm_rate}; "
        "8 principal components.",
        f"- Each cell is the share of windows called drift: {args.stable_windows} windows "
        f"for the unshifted row (its false-alarm rate), {args.windows} per shifted row, "
        f"drawn from pools of {args.pool * 4} (unshifted) and {args.pool} (each shift) "
        "embeddings. Every detector of every model judges windows of the same draws.",
        "- Detectors: `kl-histogram` is the built-in KL divergence (equal-mass histograms "
        "per component, bootstrap threshold); `alibi-ks` is alibi-detect's "
        "Kolmogorov-Smirnov test per component with a Bonferroni correction"
        + (f" (not installed in this run: {', '.join(sorted(missing))})." if missing else "."),
        "",
        *rows,
        "",
        "Caveats: crops of 20 photographs are a narrow stand-in for a photo platform's "
        "uploads, and windows drawn from a finite pool are not fully independent, so "
        "rates near 0 or 1 are resolved to a few hundredths at best.",
        "",
    ]
    OUTPUT.write_text("\n".join(lines))
    print(f"wrote {OUTPUT}")


def _changed(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """The options given other values than their defaults, as command-line words."""
    words = []
    for key, value in vars(args).items():
        if value != parser.get_default(key):
            values = value if isinstance(value, list) else [value]
            words += [f"--{key.replace('_', '-')}", *map(str, values)]
    return words


def _defaults(parser: argparse.ArgumentParser, args: argparse.Namespace) -> bool:
    return not _changed(parser, args)


if __name__ == "__main__":
    main()
