"""The leave-one-family-out benchmark's pure logic on toy data: metrics, splits, grid, tables.

Expected values are worked out by hand in the comments, never by the code under test. The
full benchmark (generators, detectors) needs torch and runs as ``make bench-detector``.
"""

import functools
import math
import operator

import numpy as np
import pytest
from PIL import Image

from deeptrust.training.detector import benchmark
from deeptrust.training.detector.data import Photo
from deeptrust.training.detector.metrics import (
    HeldOutMetrics,
    Spread,
    auroc,
    average_precision,
    threshold_at_fpr,
    tpr_at_fpr,
)
from deeptrust.training.detector.real_photos import edited, screenshot
from deeptrust.training.detector.robustness import CONDITIONS, blur, rescale

TEN_REAL = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]


def test_average_precision_by_hand():
    # Ranked: 0.9 fake (P 1, R 1/2), 0.8 real, 0.7 fake (P 2/3, R 1), 0.1 real.
    # AP = 1/2 * 1 + 1/2 * 2/3 = 5/6.
    assert average_precision([0.8, 0.1], [0.9, 0.7]) == pytest.approx(5 / 6)


def test_average_precision_takes_tied_scores_together():
    # One threshold flags both: precision 1/2 at recall 1.
    assert average_precision([0.5], [0.5]) == pytest.approx(0.5)
    # A perfect ranking has AP 1 whatever the scale.
    assert average_precision([-3.0, -2.0], [5.0, 7.0, 9.0]) == pytest.approx(1.0)


def test_auroc_by_hand():
    # Pairs (fake, real): (0.9,0.8) win, (0.9,0.1) win, (0.7,0.8) loss, (0.7,0.1) win: 3/4.
    assert auroc([0.8, 0.1], [0.9, 0.7]) == pytest.approx(0.75)
    # A tie counts one half.
    assert auroc([0.5], [0.5]) == pytest.approx(0.5)


def test_threshold_flags_at_most_the_allowed_share_of_real_scores():
    # 10 real scores, 10% allowed: only 1.0 may be flagged, so the threshold is just above 0.9.
    threshold = threshold_at_fpr(TEN_REAL, 0.10)
    assert 0.9 < threshold <= 1.0
    # 5% of 10 is 0 images: the threshold sits above the highest real score.
    assert threshold_at_fpr(TEN_REAL, 0.05) > 1.0
    # Everything allowed: nothing can be above the threshold's reach.
    assert threshold_at_fpr(TEN_REAL, 1.0) == -math.inf


def test_threshold_does_not_flag_ties_beyond_the_allowance():
    # Four real scores of 0.7 and one of 0.2: 20% allowed is one image, but the top four
    # are tied, so none of them may be flagged.
    threshold = threshold_at_fpr([0.7, 0.7, 0.7, 0.7, 0.2], 0.20)
    assert threshold > 0.7


def test_tpr_at_fpr_by_hand():
    # Threshold just above 0.9 (10% of TEN_REAL): 0.95 and 1.5 reach it, 0.85 does not.
    assert tpr_at_fpr(TEN_REAL, [0.95, 0.85, 1.5], 0.10) == pytest.approx(2 / 3)


def test_held_out_metrics_report_both_class_accuracies_at_the_given_threshold():
    # Threshold 0.75: real 0.8, 0.9, 1.0 flagged (7 of 10 correct); fake 0.95 and 1.5 flagged.
    metrics = HeldOutMetrics.of(TEN_REAL, [0.95, 0.5, 1.5], 0.75)
    assert metrics.real_accuracy == pytest.approx(0.7)
    assert metrics.fake_accuracy == pytest.approx(2 / 3)
    # 1% of 10 real is 0 images: threshold above 1.0; only 1.5 reaches it.
    assert metrics.tpr_1 == pytest.approx(1 / 3)


def test_spread_is_the_mean_and_sample_deviation():
    # Mean 0.9; deviations -0, +0.1, -0.1: sum of squares 0.02 / (3 - 1) = 0.01, std 0.1.
    spread = Spread.of([0.9, 1.0, 0.8])
    assert spread.mean == pytest.approx(0.9)
    assert spread.std == pytest.approx(0.1)
    assert (spread.low, spread.high, spread.count) == (0.8, 1.0, 3)
    assert spread.text(2) == "0.90 ± 0.10"
    assert Spread.of([0.5]).std == 0.0


def photo(name: str, source: str) -> Photo:
    return Photo(name, source, "test", name, Image.new("RGB", (80, 60)))


def test_three_way_split_keeps_each_photo_on_one_side_and_each_source_in_training():
    photos = [photo(f"a{i}", "a") for i in range(10)] + [photo(f"b{i}", "b") for i in range(6)]
    split = benchmark.split_three_ways(photos, 0.3, 0.2, seed=3)
    names = [[p.name for p in side] for side in (split.train, split.calibration, split.test)]
    assert sorted(functools.reduce(operator.iadd, names, [])) == sorted(p.name for p in photos)
    assert all(len(set(a) & set(b)) == 0 for a in names for b in names if a is not b)
    assert {p.source for p in split.train} == {"a", "b"}
    # 30% of 10 a-photos is 3 test; of the remaining 7, 0.2/0.7 is 2 for calibration.
    assert sum(p.source == "a" for p in split.test) == 3
    assert sum(p.source == "a" for p in split.calibration) == 2


def test_check_disjoint_catches_a_photo_on_two_sides():
    benchmark.check_disjoint({"train": ["x", "y", "x"], "test": ["z"]})
    with pytest.raises(AssertionError, match="y"):
        benchmark.check_disjoint({"train": ["x", "y"], "calibration": ["w"], "test": ["y"]})


def test_folds_hold_out_each_family_once():
    assert benchmark.folds(["a", "b", "c"]) == [
        ("a", ["b", "c"]),
        ("b", ["a", "c"]),
        ("c", ["a", "b"]),
    ]
    with pytest.raises(ValueError, match="distinct"):
        benchmark.folds(["a", "a"])


def test_evaluate_fixes_the_threshold_on_calibration_and_keeps_it_across_conditions():
    # Calibration: 5% of 20 is one image, so only the top score (2.0) may be flagged:
    # the threshold is just above 1.9.
    calibration = np.r_[np.linspace(0.1, 1.9, 19), 2.0]
    real = {"clean": np.array([0.0, 1.0, 1.95]), "JPEG q75": np.array([2.5, 2.5, 0.0])}
    fake = {"clean": np.array([3.0, 1.0]), "JPEG q75": np.array([3.0, 3.0])}
    threshold, by_condition = benchmark.evaluate(calibration, real, fake)
    assert 1.9 < threshold < 1.95
    # clean: real 1.95 is flagged (2 of 3 right); fake 3.0 flagged, 1.0 not.
    assert by_condition["clean"].real_accuracy == pytest.approx(2 / 3)
    assert by_condition["clean"].fake_accuracy == pytest.approx(0.5)
    # under JPEG the same threshold flags two of the real images.
    assert by_condition["JPEG q75"].real_accuracy == pytest.approx(1 / 3)
    assert by_condition["JPEG q75"].fake_accuracy == pytest.approx(1.0)


def metrics(ap: float, tpr_5: float) -> HeldOutMetrics:
    return HeldOutMetrics(
        ap=ap, auroc=0.0, tpr_1=0.0, tpr_5=tpr_5, real_accuracy=0.0, fake_accuracy=0.0
    )


def test_verdict_checks_each_target_on_seed_means():
    runs = [
        {"clean": metrics(0.96, 0.85), "JPEG q75": metrics(0.93, 0.81)},
        {"clean": metrics(0.98, 0.83), "JPEG q75": metrics(0.95, 0.79)},
    ]
    spreads = benchmark.aggregate(runs)
    # clean means: AP 0.97, TPR 0.84; JPEG: AP 0.94 (-0.03), TPR 0.80 (-0.04): all met.
    assert benchmark.verdict(spreads, ["JPEG q75"]).met
    worse = [{"clean": metrics(0.97, 0.84), "JPEG q75": metrics(0.90, 0.84)}]
    # AP drops 7 points under JPEG: not robust, though AP and recall are met.
    result = benchmark.verdict(benchmark.aggregate(worse), ["JPEG q75"])
    assert (result.ap, result.recall, result.robust) == (True, True, False)
    low = [{"clean": metrics(0.94, 0.79)}]
    result = benchmark.verdict(benchmark.aggregate(low), [])
    assert (result.ap, result.recall, result.robust) == (False, False, True)


def test_rows_print_mean_and_spread_and_what_was_missed():
    spreads = benchmark.aggregate([{"clean": metrics(0.92, 0.5)}, {"clean": metrics(1.0, 0.7)}])
    verdict = benchmark.verdict(spreads, [])
    row = benchmark.main_row("det", "fam", spreads["clean"], verdict)
    # AP mean 0.96, std sqrt(2 * 0.04^2 / 1) = 0.0566; TPR mean 0.6, std sqrt(0.02) = 0.1414.
    assert row.startswith("| det | fam | 0.960 ± 0.057 |")
    assert "0.600 ± 0.141" in row
    assert row.endswith("| missed: recall |")
    assert benchmark.grid_row("det", "fam", spreads) == "| det | fam | 0.960 / 0.600 |"


def test_splice_replaces_only_the_benchmark_section():
    first = benchmark.splice("# Detector\n\ntext\n", "## Bench\nold")
    assert first.startswith("# Detector\n\ntext\n\n<!-- bench-detector:start -->\n## Bench\nold\n")
    second = benchmark.splice(first + "tail\n", "## Bench\nnew")
    assert "old" not in second
    assert "## Bench\nnew" in second
    assert second.startswith("# Detector\n\ntext\n")
    assert second.endswith("tail\n")
    # make train-detector rewrites the document and keeps the section.
    kept = benchmark.keep_benchmark(second, "# Detector v2\n")
    assert kept.startswith("# Detector v2\n")
    assert "## Bench\nnew" in kept
    assert benchmark.keep_benchmark("# no section", "# Detector v2\n") == "# Detector v2\n"


def test_conditions_apply_the_named_processing():
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    assert CONDITIONS["clean"](noise) is noise
    assert CONDITIONS["resize x0.5"](noise).size == (32, 32)
    assert CONDITIONS["resize x1.5"](noise).size == (96, 96)
    assert rescale(Image.new("RGB", (3, 3)), 0.1).size == (1, 1)
    original = np.asarray(noise, np.float64)

    def error(name: str) -> float:
        return float(np.abs(np.asarray(CONDITIONS[name](noise), np.float64) - original).mean())

    # Noise is what JPEG discards first: lower quality, larger error.
    assert 0 < error("JPEG q95") < error("JPEG q75") < error("JPEG q50")


def test_blur_spreads_a_point_and_keeps_a_flat_image_flat():
    flat = Image.new("RGB", (16, 16), (90, 120, 200))
    assert np.array_equal(np.asarray(blur(flat, 1.0)), np.asarray(flat))
    point = np.zeros((16, 16, 3), np.uint8)
    point[8, 8] = 255
    blurred = np.asarray(blur(Image.fromarray(point), 1.0))
    assert blurred[8, 8, 0] < 255
    assert blurred[8, 9, 0] > 0
    assert blurred[0, 0, 0] == 0


def test_edited_photo_is_cropped_graded_captioned_and_keeps_its_provenance():
    rng = np.random.default_rng(1)
    original = Photo(
        "p.jpg",
        "samples",
        "CC0",
        "abc",
        Image.fromarray(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)),
    )
    copy = edited(original, seed=0)
    assert copy.name == "edited-p.jpg"
    assert copy.source == "samples"
    assert copy.sha256 == "abc"
    assert copy.licence.startswith("CC0")
    width, height = copy.image.size
    assert 0.6 * 160 - 1 <= width <= 0.9 * 160 + 1
    assert 0.6 * 120 - 1 <= height <= 0.9 * 120 + 1


def test_screenshot_is_a_deterministic_screen_sized_render():
    first, again = screenshot(4, (320, 200)), screenshot(4, (320, 200))
    assert first.size == (320, 200)
    assert np.array_equal(np.asarray(first), np.asarray(again))
    # Not blank: a render with text and plots has many distinct colours.
    assert len(np.unique(np.asarray(first).reshape(-1, 3), axis=0)) > 50
