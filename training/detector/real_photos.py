"""More kinds of real image for the benchmark: KDE's photographs, screenshots, edited photos.

A detector must not learn "a face, a screenshot or a retouched photo means generated", so
its real side has to contain them. What installs offline:

- the photographs among Debian's ``plasma-workspace-wallpapers`` (each wallpaper's
  ``metadata.json`` names its author and licence; the digital artworks are left out: they
  are made by people, but they are not photographs, and a detector's real class here means
  camera images and screen renders);
- screenshots: real renders of matplotlib figures (plots, text, a table, UI-like panels),
  drawn at screen resolution from a seed, so they are reproducible and need no download;
- edited photographs: a real photograph cropped, colour-graded and captioned (text drawn
  on it), kept on its original's side of the split.

No torch here.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

from deeptrust.training.detector.data import MAX_SIDE, Photo

PLASMA_PACKAGE = "plasma-workspace-wallpapers"
PLASMA_FOLDER = "usr/share/wallpapers"
PLASMA_PHOTOS = (
    "BytheWater",
    "ColdRipple",
    "ColorfulCups",
    "DarkestHour",
    "EveningGlow",
    "FallenLeaf",
    "Grey",
    "OneStandsOut",
    "Path",
    "summer_1am",
)
"""The wallpapers that are photographs (checked by eye); the rest are digital artworks
(Kite, a sky with a drawn kite, is left out as a composite)."""
SCREENSHOT_LICENCE = "rendered by the project with matplotlib (no third-party content)"


def _bounded(image: Image.Image) -> Image.Image:
    image = image.convert("RGB")
    image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    return image


def _plasma_licence(folder: Path) -> str:
    meta = json.loads((folder / "metadata.json").read_text())
    plugin = meta.get("KPlugin", {})
    authors = ", ".join(author.get("Name", "?") for author in plugin.get("Authors", []))
    return f"{plugin.get('License', 'GPL-2+ (Debian copyright file)')} ({authors}), via Debian"


def plasma_photos(package: Path, names: Sequence[str] = PLASMA_PHOTOS) -> list[Photo]:
    """The photographs of ``plasma-workspace-wallpapers``, unpacked under ``package``.

    Each wallpaper ships many sizes of one picture; the smallest whose shorter side reaches
    ``MAX_SIDE`` (else the largest) is read, so every photograph is downscaled the same way.
    """
    root = package / PLASMA_FOLDER
    photos = []
    for name in names:
        folder = root / name
        files = [p for p in (folder / "contents" / "images").iterdir() if p.is_file()]

        def sides(path: Path) -> tuple[int, int]:
            width, height = (int(v) for v in path.stem.split("x"))
            return width, height

        large = [p for p in files if min(sides(p)) >= MAX_SIDE]
        path = (
            min(large, key=lambda p: sides(p)[0])
            if large
            else max(files, key=lambda p: sides(p)[0])
        )
        raw = path.read_bytes()
        image = _bounded(Image.open(io.BytesIO(raw)))
        sha = hashlib.sha256(raw).hexdigest()
        photos.append(
            Photo(f"{name}.{path.suffix[1:]}", PLASMA_PACKAGE, _plasma_licence(folder), sha, image)
        )
    return photos


def screenshot(seed: int, size: tuple[int, int] = (1280, 800)) -> Image.Image:
    """A screen-sized render of a matplotlib "dashboard": plots, text, a table, panels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rng = np.random.default_rng(seed)
    dpi = 100
    figure = Figure(figsize=(size[0] / dpi, size[1] / dpi), dpi=dpi)
    FigureCanvasAgg(figure)
    figure.patch.set_facecolor(["#ffffff", "#f3f3f3", "#20252b"][seed % 3])
    dark = seed % 3 == 2
    ink = "#e8e8e8" if dark else "#202020"
    grid = figure.add_gridspec(2, 3)
    kinds = rng.permutation(["line", "bar", "scatter", "image", "text", "table"])
    for index, kind in enumerate(kinds):
        axes = figure.add_subplot(grid[index // 3, index % 3])
        axes.set_facecolor("#2b3036" if dark else "#ffffff")
        axes.tick_params(colors=ink, labelsize=8)
        x = np.arange(40)
        if kind == "line":
            for _ in range(int(rng.integers(1, 4))):
                axes.plot(x, np.cumsum(rng.normal(size=40)), linewidth=1.5)
            axes.set_title(f"Throughput run {seed}", color=ink, fontsize=10)
        elif kind == "bar":
            axes.bar(np.arange(8), rng.uniform(1, 10, 8), color=f"C{seed % 10}")
            axes.set_title("Uploads per hour", color=ink, fontsize=10)
        elif kind == "scatter":
            axes.scatter(rng.normal(size=120), rng.normal(size=120), s=8, c=rng.uniform(size=120))
            axes.set_title("Embedding drift", color=ink, fontsize=10)
        elif kind == "image":
            axes.imshow(
                rng.normal(size=(24, 24)).cumsum(0), cmap=["viridis", "magma", "gray"][seed % 3]
            )
            axes.set_xticks([])
            axes.set_yticks([])
        elif kind == "text":
            axes.axis("off")
            words = ["moderation", "queue", "flagged", "latency", "p99", "broker", "topic", "lag"]
            for row in range(8):
                line = " ".join(rng.choice(words, int(rng.integers(2, 6))))
                axes.text(
                    0.0,
                    1 - row / 8,
                    f"{row + 1:02d}  {line}",
                    color=ink,
                    fontsize=9,
                    family="monospace",
                )
        else:
            axes.axis("off")
            cells = [[f"{v:.2f}" for v in rng.uniform(0, 1, 3)] for _ in range(6)]
            axes.table(cellText=cells, colLabels=["AP", "AUROC", "TPR"], loc="center")
    figure.suptitle(f"DeepTrust dashboard · panel {seed}", color=ink, fontsize=13)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, facecolor=figure.get_facecolor())
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def screenshots(count: int) -> list[Photo]:
    """``count`` rendered screenshots, one "photograph" each for the split."""
    shots = []
    for seed in range(count):
        image = _bounded(screenshot(seed))
        sha = hashlib.sha256(image.tobytes()).hexdigest()
        shots.append(
            Photo(f"screenshot-{seed:02d}.png", "screenshots", SCREENSHOT_LICENCE, sha, image)
        )
    return shots


def edited(photo: Photo, seed: int) -> Photo:
    """``photo`` cropped, colour-graded (one of several filters) and captioned.

    The edit keeps the original's licence and name (with an ``edited-`` prefix); callers
    put it on the same side of the split as its original.
    """
    rng = np.random.default_rng(seed)
    image = photo.image
    width, height = image.size
    keep = rng.uniform(0.6, 0.9)
    side_w, side_h = round(width * keep), round(height * keep)
    left = int(rng.integers(0, width - side_w + 1))
    top = int(rng.integers(0, height - side_h + 1))
    image = image.crop((left, top, left + side_w, top + side_h))
    grade = int(rng.integers(4))
    if grade == 0:
        image = ImageEnhance.Color(image).enhance(rng.uniform(1.3, 1.8))
        image = ImageEnhance.Contrast(image).enhance(rng.uniform(1.1, 1.4))
    elif grade == 1:
        image = ImageOps.grayscale(image).convert("RGB")
    elif grade == 2:
        warm = np.asarray(image, np.float32) * np.array([1.12, 1.0, 0.85], np.float32)
        image = Image.fromarray(np.clip(warm, 0, 255).astype(np.uint8))
    else:
        image = image.filter(ImageFilter.UnsharpMask(radius=2, percent=150, threshold=2))
    draw = ImageDraw.Draw(image)
    caption = ["Summer 2026", "#nofilter", "Best day ever!", "for sale", "DeepTrust"][seed % 5]
    font_size = max(16, image.size[1] // 12)
    x, y = (
        int(rng.integers(10, max(11, image.size[0] // 3))),
        int(rng.integers(10, max(11, image.size[1] - font_size - 10))),
    )
    draw.text((x + 2, y + 2), caption, fill=(0, 0, 0), font_size=font_size)
    draw.text((x, y), caption, fill=(255, 255, 255), font_size=font_size)
    return Photo(
        f"edited-{photo.name}",
        photo.source,
        photo.licence + "; edited by the project",
        photo.sha256,
        image,
    )
