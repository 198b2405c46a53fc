"""The benchmark's torch parts on toy sizes: the NPR residual, the GAN variants, the cache.

Expected values are worked out by hand; the full benchmark runs as ``make bench-detector``.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from deeptrust.training.detector import families  # noqa: E402
from deeptrust.training.detector.benchmark import TrainingSet  # noqa: E402
from deeptrust.training.detector.detectors import NPRDetector, npr_residual  # noqa: E402


def test_npr_residual_is_zero_on_2x2_blocks_and_the_offset_elsewhere():
    # A nearest-upsampled image is constant on each 2x2 block: nothing left over.
    blocks = torch.arange(4.0).view(1, 1, 2, 2).repeat_interleave(2, -2).repeat_interleave(2, -1)
    assert torch.equal(npr_residual(blocks), torch.zeros_like(blocks))
    # A horizontal ramp 0, 1, 2, 3: each pixel minus its block's top-left -> 0, 1, 0, 1.
    ramp = torch.arange(4.0).view(1, 1, 1, 4).repeat(1, 1, 2, 1)
    assert npr_residual(ramp)[0, 0, 0].tolist() == [0.0, 1.0, 0.0, 1.0]
    # Odd sizes lose their last row and column.
    assert npr_residual(torch.zeros(1, 3, 5, 7)).shape == (1, 3, 4, 6)


@pytest.mark.parametrize("mode", families.UPSAMPLING)
def test_upsampling_generators_make_64x64_images_in_range(mode):
    generator = families.UpsamplingGenerator(latent=8, width=2, mode=mode).eval()
    out = generator(torch.randn(3, 8))
    assert out.shape == (3, 3, 64, 64)
    assert out.abs().max() <= 1.0


def test_unknown_upsampling_is_refused():
    with pytest.raises(ValueError, match="mode must be one of"):
        families.UpsamplingGenerator(8, 2, "bicubic")


def test_cache_makes_once_and_keys_by_recipe(tmp_path):
    calls = []

    def make() -> families.Made:
        calls.append(1)
        pixels = np.full((2, 4, 4, 3), len(calls), np.uint8)
        return families.Made(pixels, pixels[:1], 1.5, "note")

    key = families.cache_key("toy", {"steps": 1}, "abc")
    first = families.cached("toy", key, make, tmp_path)
    again = families.cached("toy", key, make, tmp_path)
    assert len(calls) == 1
    assert np.array_equal(first.train, again.train)
    assert again.note == "note"
    assert again.seconds == 1.5
    assert families.cache_key("toy", {"steps": 2}, "abc") != key
    assert families.cache_key("toy", {"steps": 1}, "abd") != key


def test_npr_detector_learns_to_spot_upsampled_images():
    # Real: independent noise per pixel; fake: noise at half resolution, nearest-upsampled.
    # Their NPR residuals differ completely (the fake's is zero), so a few epochs suffice.
    rng = np.random.default_rng(0)
    real = rng.integers(0, 256, (96, 16, 16, 3), dtype=np.uint8)
    fake = rng.integers(0, 256, (96, 8, 8, 3), dtype=np.uint8).repeat(2, 1).repeat(2, 2)
    detector = NPRDetector(width=4, epochs=4, batch=32, crop=12, learning_rate=1e-2)
    detector.fit(TrainingSet(real, ["noise"] * len(real), {"upsampled": fake}), seed=0)
    real_scores = detector.score(rng.integers(0, 256, (32, 16, 16, 3), dtype=np.uint8))
    fake_scores = detector.score(
        rng.integers(0, 256, (32, 8, 8, 3), dtype=np.uint8).repeat(2, 1).repeat(2, 2)
    )
    assert fake_scores.min() > real_scores.max()
