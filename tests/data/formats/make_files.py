"""Writes the format fixtures beside this file, each by the encoder that format's users meet.

Run once, in a throwaway environment with the encoders the project does not depend on:
``python -m venv /tmp/enc && /tmp/enc/bin/pip install pillow==13.0.0 pillow-heif==1.8.1
pillow-jxl-plugin==1.3.8 && /tmp/enc/bin/python tests/data/formats/make_files.py``.
Pillow writes JPEG, PNG, APNG, GIF, WebP, AVIF, TIFF and BMP; pillow-heif (libheif with
x265, as iOS writes HEIC with an HEVC encoder) writes HEIC; pillow-jxl-plugin (libjxl)
writes JPEG XL. Every picture is the same 64x48 crop of ``samples/images/astronaut.jpg``
(NASA, public domain), so a test can compare what each decoder returns with it.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pillow_heif
import pillow_jxl  # noqa: F401 - registers the JPEG XL plugin
from PIL import Image

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
SIZE = (64, 48)
P3_PATCH = (200, 120, 60)
"""The Display P3 colour of the profile fixtures' flat patch."""

# Display P3's primaries adapted to D50 and D50 itself, as ICC matrix profiles state them.
P3_COLORANTS = (
    (0.515102, 0.241182, -0.001050),
    (0.291965, 0.692236, 0.041882),
    (0.157153, 0.066582, 0.784378),
)
D50 = (0.964203, 1.0, 0.824905)


def upright() -> Image.Image:
    photo = Image.open(ROOT / "samples" / "images" / "astronaut.jpg").convert("RGB")
    side = min(photo.size)
    return photo.crop((0, 0, side, side * 3 // 4)).resize(SIZE, Image.Resampling.LANCZOS)


def p3_profile(gamma: float = 2.2) -> bytes:
    """An ICC v2 RGB display profile: Display P3 primaries, D65 white, a pure gamma curve."""

    def s15(value: float) -> bytes:
        return struct.pack(">i", round(value * 65536))

    def xyz(triple: tuple[float, float, float]) -> bytes:
        return b"XYZ \0\0\0\0" + b"".join(s15(v) for v in triple)

    def text(value: str) -> bytes:
        raw = value.encode("ascii") + b"\0"
        return b"desc\0\0\0\0" + struct.pack(">I", len(raw)) + raw + b"\0" * (12 + 67)

    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0"
    tags = [
        (b"desc", text("Display P3 (gamma 2.2), test fixture")),
        (b"cprt", b"text\0\0\0\0No copyright, test fixture\0"),
        (b"wtpt", xyz(D50)),
        (b"rXYZ", xyz(P3_COLORANTS[0])),
        (b"gXYZ", xyz(P3_COLORANTS[1])),
        (b"bXYZ", xyz(P3_COLORANTS[2])),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
    ]
    table_size = 4 + 12 * len(tags)
    offset = 128 + table_size
    entries, blobs = [], b""
    for signature, blob in tags:
        while len(blob) % 4:
            blob += b"\0"
        entries.append(signature + struct.pack(">II", offset + len(blobs), len(blob)))
        blobs += blob
    body = struct.pack(">I", len(tags)) + b"".join(entries) + blobs
    size = 128 + len(body)
    header = (
        struct.pack(">I", size)
        + b"\0\0\0\0"
        + b"\x02\x10\0\0"
        + b"mntrRGB XYZ "
        + b"\0" * 12
        + b"acsp"
        + b"\0" * 24
        + b"\0\0\0\0"
        + xyz(D50)[8:]
        + b"\0" * 48
    )
    assert len(header) == 128
    return header + body


def exif_orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


def main() -> None:
    picture = upright()
    # Stored turned a quarter left, tagged "rotate 90 clockwise to show" (orientation 6),
    # as a phone held upright writes its sensor's rows.
    turned = picture.rotate(90, expand=True)
    turned.save(HERE / "orientation-6.jpg", quality=95, exif=exif_orientation(6))
    patch = Image.new("RGB", SIZE, P3_PATCH)
    patch.save(HERE / "display-p3.jpg", quality=100, subsampling=0, icc_profile=p3_profile())
    pillow_heif.register_heif_opener()
    turned.save(HERE / "iphone.heic", quality=90, exif=exif_orientation(6))
    patch.save(HERE / "display-p3.heic", quality=100, icc_profile=p3_profile())
    picture.save(HERE / "photo.png")
    picture.save(HERE / "photo.webp", quality=90)
    picture.save(HERE / "photo.avif", quality=90)
    picture.save(HERE / "photo.tiff")
    picture.save(HERE / "photo.bmp")
    frames = [picture, picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT), patch]
    frames[0].save(HERE / "animated.gif", save_all=True, append_images=frames[1:], duration=100)
    frames[0].save(HERE / "animated.webp", save_all=True, append_images=frames[1:], duration=100)
    frames[0].save(HERE / "animated.png", save_all=True, append_images=frames[1:], duration=100)
    picture.save(HERE / "photo.jxl", quality=90)
    # A DNG is a TIFF whose first directory carries DNGVersion (tag 50706).
    dng = io.BytesIO()
    picture.save(dng, "TIFF", tiffinfo={50706: b"\x01\x04\x00\x00"})
    (HERE / "camera.dng").write_bytes(dng.getvalue())
    (HERE / "drawing.svg").write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" width="64" height="48">'
        '<rect width="64" height="48" fill="#c8783c"/></svg>\n'
    )


if __name__ == "__main__":
    main()
