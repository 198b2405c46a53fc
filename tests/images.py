"""Image bytes for tests: real sample photographs, and deliberately broken ones."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, PngImagePlugin

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "images"


def sample_paths() -> list[Path]:
    return sorted(p for p in SAMPLES.iterdir() if p.suffix in {".jpg", ".png"})


def jpeg_bytes(
    size: tuple[int, int] = (64, 48), colour: tuple[int, int, int] = (30, 120, 200)
) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def small_photo(path: Path, size: int = 96) -> bytes:
    """A real photograph, downscaled so a test can push hundreds of them quickly."""
    image = Image.open(path).convert("RGB")
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def generator_png(parameters: str = "a castle, Steps: 20, Sampler: Euler a, Model: sdxl") -> bytes:
    """A PNG carrying an Automatic1111-style ``parameters`` text chunk."""
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", parameters)
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 100, 50)).save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


def truncated_jpeg() -> bytes:
    data = small_photo(sample_paths()[0], size=256)
    return data[: len(data) // 2]


def corrupt_bytes() -> bytes:
    return b"this is not an image at all" * 10
