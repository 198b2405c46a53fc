import io

import pytest
from PIL import Image

from deeptrust.streams.errors import InvalidInput, Reason
from deeptrust.streams.images import decode_image
from tests.images import corrupt_bytes, jpeg_bytes, sample_paths, truncated_jpeg


def reason_of(data, **limits):
    with pytest.raises(InvalidInput) as caught:
        decode_image(data, **limits)
    return caught.value.reason


def test_sample_photographs_decode_to_rgb():
    for path in sample_paths():
        decoded = decode_image(path.read_bytes())
        assert decoded.image.mode == "RGB"
        assert decoded.format in {"JPEG", "PNG"}


def test_corrupt_bytes_are_undecodable():
    assert reason_of(corrupt_bytes()) is Reason.UNDECODABLE_IMAGE


def test_truncated_jpeg_is_undecodable():
    assert reason_of(truncated_jpeg()) is Reason.UNDECODABLE_IMAGE


def test_pixel_limit_is_checked_before_decoding():
    assert reason_of(jpeg_bytes((200, 100)), max_pixels=10_000) is Reason.TOO_MANY_PIXELS


def test_decompression_bomb_is_refused():
    buffer = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(buffer, "PNG")  # a few KB, 400 megapixels
    assert len(buffer.getvalue()) < 200_000
    assert reason_of(buffer.getvalue()) is Reason.TOO_MANY_PIXELS
