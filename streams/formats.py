"""Every image format an upload may come in: which are enriched, which refused, and why.

One table serves the three places that judge a file: the gateway (415 for a refused format,
judged from the bytes), ``deeptrust produce`` (refuses before uploading) and the stages'
decoder (opens only the formats accepted here, so a file that slipped past the upload path
is dead-lettered as ``unsupported_format`` rather than handed to one of Pillow's many
other readers). docs/formats.md shows the table with what happens to each.

Formats are recognised by their first bytes, never by name or declared type. HEIC, HEIF
and AVIF are ISO base media files told apart by the brands of their ``ftyp`` box; a DNG is
a TIFF whose first directory carries ``DNGVersion``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass


@dataclass(frozen=True)
class ImageFormat:
    """One format: how it is recognised and whether the pipeline takes it."""

    name: str
    mime: str
    suffix: str
    decoder: str | None
    """Pillow's format name for it (HEIF through the pi-heif plugin); ``None``: refused."""
    refusal: str = ""
    """What the uploader is told when the format is refused."""

    @property
    def accepted(self) -> bool:
        """Whether the pipeline decodes and enriches this format."""
        return self.decoder is not None


JPEG = ImageFormat("JPEG", "image/jpeg", ".jpg", "JPEG")
PNG = ImageFormat("PNG", "image/png", ".png", "PNG")
GIF = ImageFormat("GIF", "image/gif", ".gif", "GIF")
WEBP = ImageFormat("WebP", "image/webp", ".webp", "WEBP")
HEIC = ImageFormat("HEIC", "image/heic", ".heic", "HEIF")
HEIF = ImageFormat("HEIF", "image/heif", ".heif", "HEIF")
AVIF = ImageFormat("AVIF", "image/avif", ".avif", "AVIF")
TIFF = ImageFormat("TIFF", "image/tiff", ".tif", "TIFF")
BMP = ImageFormat("BMP", "image/bmp", ".bmp", "BMP")
JPEG_XL = ImageFormat(
    "JPEG XL", "image/jxl", ".jxl", None, "JPEG XL is not accepted yet: send JPEG, HEIC or AVIF"
)
RAW = ImageFormat(
    "camera RAW",
    "image/x-raw",
    ".dng",
    None,
    "camera RAW files are not accepted: export the photo as JPEG or HEIC",
)
SVG = ImageFormat(
    "SVG", "image/svg+xml", ".svg", None, "vector drawings (SVG) are not accepted: send a raster"
)
PSD = ImageFormat(
    "Photoshop", "image/vnd.adobe.photoshop", ".psd", None, "Photoshop files are not accepted"
)
ICO = ImageFormat("ICO", "image/x-icon", ".ico", None, "icons are not accepted")

FORMATS = (JPEG, PNG, GIF, WEBP, HEIC, HEIF, AVIF, TIFF, BMP, JPEG_XL, RAW, SVG, PSD, ICO)
ACCEPTED = tuple(f for f in FORMATS if f.accepted)
DECODERS = tuple(dict.fromkeys(f.decoder for f in ACCEPTED if f.decoder))
"""The Pillow readers the stages may use, and no others."""

_HEIC_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"})
_HEIF_BRANDS = frozenset({b"mif1", b"msf1", b"mif2"})
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_RAW_BRANDS = frozenset({b"crx "})  # Canon CR3
_DNG_VERSION = 50706


def identify(data: bytes) -> ImageFormat | None:
    """The format the bytes are in, or ``None`` when they are in no format listed here."""
    head = data[:64]
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head.startswith((b"GIF87a", b"GIF89a")):
        return GIF
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return WEBP
    if head[4:8] == b"ftyp":
        return _iso_media(data)
    if head.startswith((b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n")):
        return JPEG_XL
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return RAW if _is_raw_tiff(data) else TIFF
    if head.startswith((b"IIRO", b"IIU\x00", b"FUJIFILMCCD-RAW")):
        return RAW  # Olympus ORF, Panasonic RW2, Fujifilm RAF
    if head.startswith(b"8BPS"):
        return PSD
    if head.startswith(b"\x00\x00\x01\x00"):
        return ICO
    if head.startswith(b"BM"):
        return BMP
    if _looks_like_svg(data):
        return SVG
    return None


def _iso_media(data: bytes) -> ImageFormat | None:
    """HEIC, HEIF, AVIF or CR3 by the ``ftyp`` box's major and compatible brands."""
    (size,) = struct.unpack(">I", data[:4])
    box = data[8 : max(16, min(size, 256))]
    brands = {box[:4]} | {box[i : i + 4] for i in range(8, len(box) - 3, 4)}
    if brands & _RAW_BRANDS:
        return RAW
    if brands & _AVIF_BRANDS:
        return AVIF
    if brands & _HEIC_BRANDS:
        return HEIC
    if brands & _HEIF_BRANDS:
        return HEIF
    return None  # an MP4 or QuickTime video, say: not an image


def _is_raw_tiff(data: bytes) -> bool:
    """Whether a TIFF is a camera RAW: a Canon CR2, or a DNG (``DNGVersion`` in IFD0)."""
    if data[8:10] == b"CR":
        return True
    order = "<" if data.startswith(b"II") else ">"
    try:
        (offset,) = struct.unpack(order + "I", data[4:8])
        (count,) = struct.unpack(order + "H", data[offset : offset + 2])
        for index in range(count):
            entry = offset + 2 + 12 * index
            (tag,) = struct.unpack(order + "H", data[entry : entry + 2])
            if tag == _DNG_VERSION:
                return True
    except struct.error:
        return False  # a directory past the end: Pillow will call it corrupt
    return False


def _looks_like_svg(data: bytes) -> bool:
    head = data[:512].lstrip().lower()
    return head.startswith((b"<svg", b"<?xml")) and b"<svg" in data[:4096].lower()
