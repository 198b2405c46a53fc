"""What an upload is, judged from its bytes: type by signature, then a header-only parse.

The client's ``Content-Type`` and file name are not trusted: the type comes from the file's
magic bytes, and Pillow must be able to read the header of that format. Pixels are not
decoded here (that costs tens of milliseconds per photo, on the request's clock); a file
whose body is broken past the header is dead-lettered by the detect stage as
``undecodable_image``, and the status endpoint reports it.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from enum import StrEnum

from PIL import Image, UnidentifiedImageError


class Rejection(StrEnum):
    """Why the gateway refused an upload (the ``reason`` label of the rejected counter)."""

    UNAUTHORIZED = "unauthorized"
    TOO_LARGE = "too_large"
    TOO_MANY_PIXELS = "too_many_pixels"
    UNSUPPORTED_TYPE = "unsupported_type"
    UNDECODABLE_IMAGE = "undecodable_image"
    BAD_REQUEST = "bad_request"
    DISALLOWED_URI = "disallowed_uri"
    MISSING_OBJECT = "missing_object"
    FETCH_FAILED = "fetch_failed"
    UNAVAILABLE = "unavailable"


class UploadRejected(Exception):
    """An upload the gateway refuses, with the HTTP status and reason the client gets."""

    def __init__(self, status: int, reason: Rejection, detail: str) -> None:
        super().__init__(f"{status} {reason.value}: {detail}")
        self.status = status
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Signature:
    """A file format recognised by its first bytes."""

    mime: str
    pillow_format: str
    suffix: str


_SIGNATURES: tuple[tuple[bytes, int, Signature], ...] = (
    (b"\xff\xd8\xff", 0, Signature("image/jpeg", "JPEG", ".jpg")),
    (b"\x89PNG\r\n\x1a\n", 0, Signature("image/png", "PNG", ".png")),
    (b"GIF87a", 0, Signature("image/gif", "GIF", ".gif")),
    (b"GIF89a", 0, Signature("image/gif", "GIF", ".gif")),
    (b"WEBP", 8, Signature("image/webp", "WEBP", ".webp")),  # after "RIFF" and a size
    (b"BM", 0, Signature("image/bmp", "BMP", ".bmp")),
    (b"II*\x00", 0, Signature("image/tiff", "TIFF", ".tif")),
    (b"MM\x00*", 0, Signature("image/tiff", "TIFF", ".tif")),
)


def sniff(data: bytes) -> Signature | None:
    """Return the format the bytes start with, or None when no known image format does."""
    for magic, offset, signature in _SIGNATURES:
        if data[offset : offset + len(magic)] == magic and (
            offset == 0 or data.startswith(b"RIFF")
        ):
            return signature
    return None


@dataclass(frozen=True)
class Limits:
    """What the gateway accepts: bytes, pixels and types."""

    max_bytes: int
    max_pixels: int
    allowed_types: frozenset[str]

    def check_size(self, size: int) -> None:
        """Refuse ``size`` bytes (413) when over the limit."""
        if size > self.max_bytes:
            raise UploadRejected(
                413, Rejection.TOO_LARGE, f"{size} bytes; the limit is {self.max_bytes}"
            )

    def check_image(self, data: bytes) -> Signature:
        """Check an upload's size, type and header; return its sniffed format.

        413 when too large (bytes or pixels), 415 when the bytes are not an allowed image
        type, 422 when they claim an allowed type but its header does not parse.
        """
        self.check_size(len(data))
        signature = sniff(data)
        if signature is None or signature.mime not in self.allowed_types:
            found = signature.mime if signature else "no known image format"
            allowed = ", ".join(sorted(self.allowed_types))
            raise UploadRejected(415, Rejection.UNSUPPORTED_TYPE, f"{found}; allowed: {allowed}")
        width, height = _header_size(data, signature)
        if width * height > self.max_pixels:
            raise UploadRejected(
                413,
                Rejection.TOO_MANY_PIXELS,
                f"{width}x{height} pixels; the limit is {self.max_pixels}",
            )
        return signature


def _header_size(data: bytes, signature: Signature) -> tuple[int, int]:
    """Width and height from the header alone, or 422 when the header is not readable."""
    try:
        with warnings.catch_warnings():
            # Pillow warns (and past twice the limit, raises) on huge images; the pixel
            # check that follows is the gateway's own and gives the client a clear answer.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[signature.pillow_format]) as image:
                width, height = image.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise UploadRejected(
            422, Rejection.UNDECODABLE_IMAGE, f"not a readable {signature.mime} file"
        ) from error
    except Image.DecompressionBombError as error:
        raise UploadRejected(413, Rejection.TOO_MANY_PIXELS, str(error)) from error
    if width < 1 or height < 1:
        raise UploadRejected(422, Rejection.UNDECODABLE_IMAGE, f"{width}x{height} pixels")
    return width, height
