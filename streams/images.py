"""Decode untrusted image bytes into the pixels a person would see, within limits.

Only the formats :mod:`deeptrust.streams.formats` accepts are opened (HEIC and HEIF through
pi-heif's plugin), by Pillow's reader for that format alone. Pillow reads the header first,
so the pixel limit is enforced before any decompression (no decompression bombs); a
truncated or corrupt file fails on the full decode. What a model sees is the photo the right
way up (the EXIF orientation applied; HEIF's own rotation is applied by libheif), in sRGB
(an embedded colour profile, such as a phone's Display P3, converted), and for an animated
file its first frame. Every refusal is an :class:`InvalidInput` with its reason.
"""

from __future__ import annotations

import functools
import hashlib
import io
import warnings
from dataclasses import dataclass

import pi_heif
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from deeptrust.streams.errors import InvalidInput, Reason
from deeptrust.streams.formats import DECODERS, identify
from deeptrust.streams.objectstore import ObjectStore

pi_heif.register_heif_opener()
Image.init()
READERS = tuple(name for name in DECODERS if name in Image.OPEN)
"""The accepted formats this Pillow can read (AVIF needs Pillow 11.3 or later)."""
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))

DEFAULT_MAX_PIXELS = 40_000_000
SRGB_PROFILES = frozenset({"2b3aa1645779a9e634744faf9b01e9102b0c9b88fd6deced7934df86b949af7e"})
"""SHA-256 of embedded profiles that already are sRGB (HP's "sRGB IEC61966-2.1", 3,144 bytes,
which cameras and editors embed): converting them to sRGB only costs time."""
CACHED_PROFILE_BYTES = 64 * 1024
"""Colour profiles up to this size keep their built transform (phone profiles are a few KB)."""


@dataclass(frozen=True)
class DecodedImage:
    """An RGB image with what the format carried beside the pixels."""

    image: Image.Image
    format: str
    info: dict[str, object]
    exif: dict[int, object]


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode ``data`` into an upright sRGB image, or raise :class:`InvalidInput`."""
    found = identify(data)
    if found is not None and not found.accepted:
        raise InvalidInput(Reason.UNSUPPORTED_FORMAT, f"{found.name}: {found.refusal}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=READERS)
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
    info = {str(key): value for key, value in image.info.items()}
    info["frames"] = getattr(image, "n_frames", 1)
    return DecodedImage(
        image=_as_seen(image), format=image.format or "unknown", info=info, exif=exif
    )


def _as_seen(image: Image.Image) -> Image.Image:
    """The first frame, turned by its EXIF orientation, in sRGB RGB."""
    upright = ImageOps.exif_transpose(image)
    profile = image.info.get("icc_profile")
    if profile and hashlib.sha256(profile).hexdigest() in SRGB_PROFILES:
        profile = None
    if profile and upright.mode in ("RGB", "RGBA", "CMYK"):
        build = _cached_to_srgb if len(profile) <= CACHED_PROFILE_BYTES else _to_srgb
        try:
            converted = ImageCms.applyTransform(upright, build(bytes(profile), upright.mode))
        except (ImageCms.PyCMSError, OSError, ValueError) as error:
            raise InvalidInput(
                Reason.UNDECODABLE_IMAGE, f"unreadable colour profile: {error}"
            ) from error
        if converted is not None:
            return converted
    return upright.convert("RGB")


def _to_srgb(profile: bytes, mode: str) -> ImageCms.ImageCmsTransform:
    """The transform from an embedded colour profile to sRGB, for images of ``mode``.

    Building it (parsing the profile, linking the two) costs several times more than
    applying it to a photo, so :func:`_cached_to_srgb` keeps the few a platform sees. No
    one-pixel cache inside LittleCMS: the transform is shared by the prepare threads.
    """
    source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
    return ImageCms.buildTransform(source, SRGB, mode, "RGB", flags=ImageCms.Flags.NOCACHE)


_cached_to_srgb = functools.lru_cache(maxsize=32)(_to_srgb)


@dataclass(frozen=True)
class FetchedImage:
    """An image's raw bytes (for provenance checks) and its decoded pixels."""

    data: bytes
    decoded: DecodedImage


def fetch_image(store: ObjectStore, uri: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> FetchedImage:
    """Fetch ``uri`` through the store's policy and decode it, or raise :class:`InvalidInput`."""
    data = store.get(uri)
    return FetchedImage(data=data, decoded=decode_image(data, max_pixels))
