"""Decode untrusted image bytes into pixels, within limits.

Pillow reads the header first, so the pixel limit is enforced before any decompression
(no decompression bombs); a truncated or corrupt file fails on the full decode. Both become
:class:`InvalidInput` with their own reason.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from deeptrust.streams.errors import InvalidInput, Reason
from deeptrust.streams.objectstore import ObjectStore

DEFAULT_MAX_PIXELS = 40_000_000


@dataclass(frozen=True)
class DecodedImage:
    """An RGB image with what the format carried beside the pixels."""

    image: Image.Image
    format: str
    info: dict[str, object]
    exif: dict[int, object]


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode ``data`` into an RGB image, or raise :class:`InvalidInput`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise InvalidInput(
                    Reason.TOO_MANY_PIXELS, f"{width}x{height} exceeds {max_pixels} pixels"
                )
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise InvalidInput(Reason.TOO_MANY_PIXELS, str(error)) from error
    except UnidentifiedImageError as error:
        raise InvalidInput(Reason.UNDECODABLE_IMAGE, "not a recognised image format") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise InvalidInput(Reason.UNDECODABLE_IMAGE, f"corrupt or truncated: {error}") from error
    exif = {int(tag): value for tag, value in image.getexif().items()}
    return DecodedImage(
        image=image.convert("RGB"),
        format=image.format or "unknown",
        info={str(key): value for key, value in image.info.items()},
        exif=exif,
    )


@dataclass(frozen=True)
class FetchedImage:
    """An image's raw bytes (for provenance checks) and its decoded pixels."""

    data: bytes
    decoded: DecodedImage


def fetch_image(store: ObjectStore, uri: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> FetchedImage:
    """Fetch ``uri`` through the store's policy and decode it, or raise :class:`InvalidInput`."""
    data = store.get(uri)
    return FetchedImage(data=data, decoded=decode_image(data, max_pixels))
