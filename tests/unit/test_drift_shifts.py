import numpy as np
from PIL import Image, ImageStat

from deeptrust.drift.shifts import SHIFTS, colour_cast, random_crops
from tests.images import sample_paths


def photos():
    return [Image.open(path).convert("RGB") for path in sample_paths()[:3]]


def test_crops_are_reproducible_and_sized():
    first = random_crops(photos(), 5, np.random.default_rng(0), size=64)
    second = random_crops(photos(), 5, np.random.default_rng(0), size=64)
    assert [c.size for c in first] == [(64, 64)] * 5
    assert [c.tobytes() for c in first] == [c.tobytes() for c in second]


def test_every_shift_changes_the_pixels_and_keeps_the_size():
    (crop,) = random_crops(photos(), 1, np.random.default_rng(1), size=96)
    for name, build in SHIFTS.items():
        strength = {"blur": 2, "jpeg": 10, "colour-cast": 0.2, "downscale": 4}[name]
        shifted = build(strength)(crop)
        assert shifted.size == crop.size
        difference = np.abs(np.asarray(shifted, float) - np.asarray(crop, float)).mean()
        assert difference > 1.0, name


def test_colour_cast_warms_the_image():
    (crop,) = random_crops(photos(), 1, np.random.default_rng(2), size=96)
    red, _, blue = ImageStat.Stat(colour_cast(0.2)(crop)).mean
    red0, _, blue0 = ImageStat.Stat(crop).mean
    assert red > red0
    assert blue < blue0
