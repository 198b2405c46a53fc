"""What an upload is, judged from its bytes: type by signature, then a header-only parse.

The client's ``Content-Type`` and file name are not trusted: the type comes from the file's
magic bytes (:func:`deeptrust.streams.formats.identify`, the table the stages decode by),
and Pillow must be able to read the header of that format. A format the pipeline refuses
(RAW, JPEG XL, SVG...) gets a 415 that names it and says what to send instead. Pixels are not
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

from deeptrust.streams import images  # noqa: F401 - registers the HEIF reader with Pillow
from deeptrust.streams.formats import ImageFormat, identify


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


def sniff(data: bytes) -> ImageFormat | None:
    """Return the format the bytes are in, or None when no listed image format."""
    return identify(data)


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

    def check_image(self, data: bytes) -> ImageFormat:
        """Check an upload's size, type and header; return its sniffed format.

        413 when too large (bytes or pixels), 415 when the bytes are not an allowed image
        type, 422 when they claim an allowed type but its header does not parse.
        """
        self.check_size(len(data))
        signature = sniff(data)
        allowed = ", ".join(sorted(self.allowed_types))
        if signature is None:
            raise UploadRejected(
                415, Rejection.UNSUPPORTED_TYPE, f"no known image format; allowed: {allowed}"
            )
        if not signature.accepted:
            raise UploadRejected(
                415, Rejection.UNSUPPORTED_TYPE, f"{signature.mime}: {signature.refusal}"
            )
        if signature.mime not in self.allowed_types:
            raise UploadRejected(
                415, Rejection.UNSUPPORTED_TYPE, f"{signature.mime}; allowed: {allowed}"
            )
        width, height = _header_size(data, signature.mime, signature.decoder)
        if width * height > self.max_pixels:
            raise UploadRejected(
                413,
                Rejection.TOO_MANY_PIXELS,
                f"{width}x{height} pixels; the limit is {self.max_pixels}",
            )
        return signature


def _header_size(data: bytes, mime: str, decoder: str | None) -> tuple[int, int]:
    """Width and height from the header alone, or 422 when the header is not readable."""
    try:
        with warnings.catch_warnings():
            # Pillow warns (and past twice the limit, raises) on huge images; the pixel
            # check that follows is the gateway's own and gives the client a clear answer.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[decoder] if decoder else []) as image:
                width, height = image.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise UploadRejected(
            422, Rejection.UNDECODABLE_IMAGE, f"not a readable {mime} file"
        ) from error
    except Image.DecompressionBombError as error:
        raise UploadRejected(413, Rejection.TOO_MANY_PIXELS, str(error)) from error
    if width < 1 or height < 1:
        raise UploadRejected(422, Rejection.UNDECODABLE_IMAGE, f"{width}x{height} pixels")
    return width, height
