"""Every format in docs/formats.md, on a real file of it (tests/data/formats/make_files.py).

Accepted formats decode to the photo a person sees: the right way up, in sRGB, the first
frame of an animation. Refused ones are named at upload (the gateway's 415) and, should
one reach a stage anyway, dead-lettered as ``unsupported_format``.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deeptrust.gateway.sniff import Limits, Rejection, UploadRejected
from deeptrust.streams.errors import InvalidInput, Reason
from deeptrust.streams.formats import ACCEPTED, identify
from deeptrust.streams.images import SRGB_PROFILES, decode_image

FILES = Path(__file__).resolve().parents[1] / "data" / "formats"
SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "images"
REFERENCE = np.asarray(Image.open(FILES / "photo.png").convert("RGB"), dtype=np.float64)
"""The 64x48 picture every fixture holds, losslessly."""
GATEWAY = Limits(10_000_000, 10_000_000, frozenset(f.mime for f in ACCEPTED))

ACCEPTED_FILES = {
    "orientation-6.jpg": "image/jpeg",
    "iphone.heic": "image/heic",
    "photo.png": "image/png",
    "photo.webp": "image/webp",
    "photo.avif": "image/avif",
    "photo.tiff": "image/tiff",
    "photo.bmp": "image/bmp",
    "animated.gif": "image/gif",
    "animated.webp": "image/webp",
    "animated.png": "image/png",
}
PROFILE_FILES = ("display-p3.jpg", "display-p3.heic")
"""A flat Display P3 patch in a JPEG and in a HEIC, each with its ICC profile."""
REFUSED_FILES = {
    "photo.jxl": "image/jxl",
    "camera.dng": "image/x-raw",
    "drawing.svg": "image/svg+xml",
}


def difference(image: Image.Image) -> float:
    """Mean absolute difference from the reference, in 8-bit levels."""
    return float(np.abs(np.asarray(image, dtype=np.float64) - REFERENCE).mean())


@pytest.mark.parametrize(("name", "mime"), ACCEPTED_FILES.items())
def test_an_accepted_format_decodes_to_the_upright_picture(name, mime):
    data = (FILES / name).read_bytes()
    found = identify(data)
    assert found is not None
    assert (found.mime, found.accepted) == (mime, True)
    assert GATEWAY.check_image(data) == found
    decoded = decode_image(data)
    assert decoded.image.mode == "RGB"
    assert decoded.image.size == (64, 48), "landscape, as the photographer held it"
    assert difference(decoded.image) < 10, "the same picture, up to the codec's loss"


def test_the_orientation_is_applied_not_just_read():
    data = (FILES / "orientation-6.jpg").read_bytes()
    stored = Image.open(FILES / "orientation-6.jpg").convert("RGB")
    assert stored.size == (48, 64), "the file holds the sensor's rows, turned"
    assert decode_image(data).exif[0x0112] == 6
    assert difference(decode_image(data).image) < 10


@pytest.mark.parametrize("name", ["animated.gif", "animated.webp", "animated.png"])
def test_an_animation_is_judged_by_its_first_frame(name):
    decoded = decode_image((FILES / name).read_bytes())
    assert decoded.info["frames"] == 3
    assert difference(decoded.image) < 10


def p3_to_srgb(p3: tuple[int, int, int]) -> np.ndarray:
    """Display P3 (gamma 2.2, as the fixtures' profile says) to sRGB, worked by hand."""
    p3_to_xyz = np.array(  # columns: the profile's D50-adapted colorants
        [
            [0.515102, 0.291965, 0.157153],
            [0.241182, 0.692236, 0.066582],
            [-0.00105, 0.041882, 0.784378],
        ]
    )
    srgb_to_xyz = np.array(  # sRGB's colorants adapted to D50 (ICC's sRGB profile)
        [
            [0.436066, 0.385147, 0.143066],
            [0.222488, 0.716873, 0.060608],
            [0.013916, 0.097076, 0.714096],
        ]
    )
    linear = np.linalg.solve(srgb_to_xyz, p3_to_xyz @ (np.array(p3) / 255.0) ** 2.2)
    assert ((linear >= 0) & (linear <= 1)).all(), "a colour inside both gamuts"
    encoded = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)
    return encoded * 255


@pytest.mark.parametrize("name", PROFILE_FILES)
def test_a_colour_profile_is_converted_to_srgb(name):
    data = (FILES / name).read_bytes()
    raw = np.asarray(Image.open(FILES / name).convert("RGB"), dtype=np.float64)[24, 32]
    seen = np.asarray(decode_image(data).image, dtype=np.float64)[24, 32]
    expected = p3_to_srgb((200, 120, 60))
    assert np.abs(seen - expected).max() <= 3, (seen, expected)
    assert np.abs(raw - expected).max() > 10, "unconverted values would be visibly off"


def test_an_embedded_srgb_profile_leaves_the_pixels_as_they_are():
    # chelsea.png carries HP's sRGB IEC61966-2.1 profile: already sRGB, nothing to convert.
    data = (SAMPLES / "chelsea.png").read_bytes()
    tagged = Image.open(io.BytesIO(data))
    assert hashlib.sha256(tagged.info["icc_profile"]).hexdigest() in SRGB_PROFILES
    assert np.array_equal(np.asarray(decode_image(data).image), np.asarray(tagged.convert("RGB")))


@pytest.mark.parametrize(("name", "mime"), REFUSED_FILES.items())
def test_a_refused_format_is_named_at_upload_and_dead_lettered_past_it(name, mime):
    data = (FILES / name).read_bytes()
    found = identify(data)
    assert found is not None
    assert (found.mime, found.accepted) == (mime, False)
    with pytest.raises(UploadRejected) as rejected:
        GATEWAY.check_image(data)
    assert (rejected.value.status, rejected.value.reason) == (415, Rejection.UNSUPPORTED_TYPE)
    assert found.refusal in rejected.value.detail
    with pytest.raises(InvalidInput) as invalid:
        decode_image(data)
    assert invalid.value.reason is Reason.UNSUPPORTED_FORMAT


def test_a_video_in_an_iso_media_box_is_no_image():
    mp4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00" * 32
    assert identify(mp4) is None
