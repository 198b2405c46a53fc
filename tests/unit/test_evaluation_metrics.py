"""Detection metrics, calibration, plots and slices, against hand computation.

ROC-AUC is also checked against its definition by counting pairs; JPEG quality estimates
against files libjpeg wrote at known qualities; image traits on the sample photographs.
"""

import io
import itertools
import math
import sys

import numpy as np
import pytest
from PIL import Image

from deeptrust.training.evaluation.classification import (
    average_ranks,
    calibration,
    confusion_matrix,
    evaluate_binary,
    roc_auc,
    write_artefacts,
)
from deeptrust.training.evaluation.slices import (
    STANDARD_LUMINANCE,
    ImageTraits,
    evaluate_slices,
    ijg_luminance_table,
    image_traits,
    slice_metrics,
    slice_names,
)
from tests.images import SAMPLES


def encode(image: Image.Image, fmt: str = "JPEG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


# --- ranks and ROC-AUC ----------------------------------------------------------------


def test_average_ranks_share_ties():
    assert average_ranks(np.array([30.0, 10.0, 20.0, 20.0])).tolist() == [4.0, 1.0, 2.5, 2.5]


def test_roc_auc_by_hand():
    # positives 0.35 and 0.8 against negatives 0.1 and 0.4: 0.35 beats 0.1 only, 0.8 both:
    # 3 of 4 pairs.
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert roc_auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)  # a tie counts one half
    assert roc_auc([1, 1, 0], [0.2, 0.3, 0.9]) == pytest.approx(0.0)
    assert roc_auc([1, 1, 1], [0.2, 0.3, 0.9]) is None


def pair_count_auc(labels, scores):
    """The definition: P(positive scores above negative), ties one half, over all pairs."""
    positives = [s for s, y in zip(scores, labels, strict=True) if y == 1]
    negatives = [s for s, y in zip(scores, labels, strict=True) if y == 0]
    wins = sum(
        1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(positives, negatives)
    )
    return wins / (len(positives) * len(negatives))


@pytest.mark.parametrize("seed", range(5))
def test_roc_auc_from_ranks_equals_counting_pairs_with_many_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 200)
    scores = np.round(rng.uniform(size=200) * 0.6 + labels * 0.3, 1)  # coarse: many ties
    assert len(np.unique(scores)) < 20
    assert roc_auc(labels, scores) == pytest.approx(pair_count_auc(labels, scores), abs=1e-12)


# --- counts and rates -----------------------------------------------------------------


LABELS = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
PROBABILITIES = [0.9, 0.8, 0.6, 0.3, 0.7, 0.4, 0.2, 0.1, 0.1, 0.05]


def test_counts_and_rates_at_the_threshold_by_hand():
    # at 0.5: positives 0.9, 0.8, 0.6 caught, 0.3 missed; negative 0.7 called AI-generated
    assert confusion_matrix(LABELS, np.array(PROBABILITIES) >= 0.5).tolist() == [[5, 1], [1, 3]]
    report = evaluate_binary(LABELS, PROBABILITIES)
    metrics = report.metrics()
    assert metrics["tp"] == 3
    assert metrics["fp"] == 1
    assert metrics["tn"] == 5
    assert metrics["fn"] == 1
    assert metrics["accuracy"] == pytest.approx(8 / 10)
    assert metrics["precision"] == pytest.approx(3 / 4)
    assert metrics["recall"] == pytest.approx(3 / 4)
    assert metrics["f1"] == pytest.approx(3 / 4)
    assert metrics["false_positive_rate"] == pytest.approx(1 / 6)
    # pairs: 0.9 and 0.8 beat all 6 negatives, 0.6 beats 5 (not 0.7), 0.3 beats 4 -> 21 of 24
    assert metrics["roc_auc"] == pytest.approx(21 / 24)
    assert all(isinstance(value, float) for value in metrics.values())
    assert report.metrics("test/")["test/f1"] == metrics["f1"]


def test_a_single_class_set_has_no_auc_key():
    metrics = evaluate_binary([0, 0, 0], [0.1, 0.7, 0.2]).metrics()
    assert "roc_auc" not in metrics
    assert metrics["fp"] == 1.0
    assert metrics["precision"] == 0.0


def test_labels_must_be_binary_and_aligned():
    with pytest.raises(ValueError, match="0 \\(human\\)"):
        evaluate_binary([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="same length"):
        evaluate_binary([0, 1, 1], [0.1, 0.2])


# --- calibration ----------------------------------------------------------------------


def test_expected_calibration_error_and_brier_by_hand():
    probabilities = [0.05, 0.15, 0.18, 0.72, 0.95, 1.0]
    labels = [0, 0, 1, 1, 1, 1]
    result = calibration(labels, probabilities, bins=10)
    # bin [0, .1): 0.05 vs 0/1 -> gap .05, 1 example
    # bin [.1, .2): mean .165 vs 1/2 -> gap .335, 2 examples
    # bin [.7, .8): 0.72 vs 1 -> gap .28, 1 example
    # bin [.9, 1]: mean .975 vs 1 -> gap .025, 2 examples (1.0 falls in the last bin)
    assert result.ece == pytest.approx((0.05 + 2 * 0.335 + 0.28 + 2 * 0.025) / 6)
    squared = [0.05**2, 0.15**2, 0.82**2, 0.28**2, 0.05**2, 0.0]
    assert result.brier == pytest.approx(sum(squared) / 6)
    counts = [point.count for point in result.bins]
    assert counts == [1, 2, 0, 0, 0, 0, 0, 1, 0, 2]
    assert result.bins[1].mean_probability == pytest.approx(0.165)
    assert result.bins[1].positive_rate == pytest.approx(0.5)
    assert math.isnan(result.bins[2].mean_probability)
    assert (result.bins[9].lower, result.bins[9].upper) == pytest.approx((0.9, 1.0))


def test_a_calibrated_predictor_has_zero_ece_but_not_zero_brier():
    # always 0.25, right one time in four: calibrated, yet uncertain
    result = calibration([1, 0, 0, 0], [0.25] * 4)
    assert result.ece == pytest.approx(0.0)
    assert result.brier == pytest.approx((0.75**2 + 3 * 0.25**2) / 4)


# --- plots ----------------------------------------------------------------------------


def test_artefacts_are_pngs_with_content(tmp_path):
    report = evaluate_binary(LABELS, PROBABILITIES)
    paths = write_artefacts(report, tmp_path / "plots")
    assert set(paths) == {"confusion_matrix", "reliability"}
    for path in paths.values():
        assert path.parent == tmp_path / "plots"
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert image.width > 300
            assert image.height > 300
            pixels = np.asarray(image.convert("L"))
        assert pixels.std() > 10  # drawn on, not a blank canvas


# --- slices: traits of real files -----------------------------------------------------


def test_ijg_tables_at_the_anchor_qualities():
    # quality 50 is the standard table itself (scale 100%); 100 makes every entry 1
    assert ijg_luminance_table(50).tolist() == STANDARD_LUMINANCE.tolist()
    assert ijg_luminance_table(100).tolist() == [1] * 64
    # quality 10: scale 500%; 16 * 5 = 80, and 121 * 5 = 605 is clamped to 255 (baseline)
    assert ijg_luminance_table(10)[0] == 80
    assert ijg_luminance_table(10).max() == 255


@pytest.mark.parametrize("quality", [10, 35, 50, 68, 75, 89, 90, 97])
def test_jpeg_quality_is_recovered_from_files_libjpeg_wrote(quality):
    image = Image.open(SAMPLES / "coffee.jpg").convert("RGB")
    assert image_traits(encode(image, quality=quality)).jpeg_quality == quality


def test_traits_of_the_sample_photographs():
    camera = image_traits((SAMPLES / "camera.jpg").read_bytes())
    assert (camera.width, camera.height, camera.format, camera.greyscale) == (
        512,
        512,
        "JPEG",
        True,
    )
    assert camera.jpeg_quality == 90  # samples/README.md: re-encoded at quality 90
    chelsea = image_traits((SAMPLES / "chelsea.png").read_bytes())
    assert (chelsea.format, chelsea.jpeg_quality, chelsea.greyscale) == ("PNG", None, False)
    assert image_traits((SAMPLES / "coffee.jpg").read_bytes()).greyscale is False


@pytest.mark.parametrize("quality", [30, 75, 95])
def test_greyscale_is_judged_by_pixels_not_mode(quality):
    coffee = Image.open(SAMPLES / "coffee.jpg")
    grey_as_rgb = coffee.convert("L").convert("RGB")  # an RGB file of a grey picture
    assert image_traits(encode(grey_as_rgb, quality=quality)).greyscale is True
    assert image_traits(encode(coffee.convert("RGB"), quality=quality)).greyscale is False


def test_faces_are_found_in_the_portraits_only():
    pytest.importorskip("cv2")
    from deeptrust.training.evaluation.faces import haar_face_counter

    counter = haar_face_counter()
    assert counter is not None
    found = {
        path.name: image_traits(path.read_bytes(), counter).faces
        for path in sorted(SAMPLES.iterdir())
    }
    with_faces = {name for name, count in found.items() if count}
    assert with_faces == {"astronaut.jpg", "grace_hopper.jpg"}


def test_without_opencv_there_is_no_face_counter_and_no_faces_slice(monkeypatch):
    from deeptrust.training.evaluation.faces import haar_face_counter

    monkeypatch.setitem(sys.modules, "cv2", None)  # makes "import cv2" fail
    assert haar_face_counter() is None
    names = slice_names(image_traits((SAMPLES / "astronaut.jpg").read_bytes(), faces=None))
    assert [family for family, _ in names] == ["resolution", "colour", "compression"]


def traits(width, height, fmt="JPEG", grey=False, quality=90, faces=None):
    return ImageTraits(width, height, fmt, grey, quality if fmt == "JPEG" else None, faces)


def test_slice_names_by_hand():
    # 400 x 400 = 0.16 MP; 1000 x 872 = 0.872 MP; 1200 x 1000 = 1.2 MP
    assert slice_names(traits(400, 400, quality=69)) == [
        ("resolution", "under_0.25mp"),
        ("colour", "colour"),
        ("compression", "jpeg_q_under_70"),
    ]
    assert slice_names(traits(1000, 872, grey=True, quality=70), ["painting"])[:3] == [
        ("resolution", "0.25_to_1mp"),
        ("colour", "greyscale"),
        ("compression", "jpeg_q_70_to_89"),
    ]
    assert slice_names(traits(1200, 1000, fmt="PNG", faces=2), ["painting", "drawing"]) == [
        ("resolution", "over_1mp"),
        ("colour", "colour"),
        ("compression", "png"),
        ("faces", "faces"),
        ("failure_mode", "drawing"),
        ("failure_mode", "painting"),
    ]
    assert ("compression", "other") in slice_names(traits(100, 100, fmt="WEBP"))
    assert ("compression", "jpeg_q_90_up") in slice_names(traits(100, 100, quality=90))


def test_slice_metrics_are_the_metrics_of_their_members_and_small_slices_get_a_count_only():
    # six small colour JPEGs (q95), four large greyscale PNGs, two of them paintings
    small = traits(300, 300, quality=95)
    large = traits(1200, 1000, fmt="PNG", grey=True)
    all_traits = [small] * 6 + [large] * 4
    labels = [1, 1, 1, 0, 0, 0, 1, 1, 0, 0]
    probabilities = [0.9, 0.8, 0.3, 0.6, 0.2, 0.1, 0.7, 0.4, 0.45, 0.6]
    tags = [()] * 6 + [("painting",), (), ("painting",), ()]
    results = evaluate_slices(labels, probabilities, all_traits, tags, min_count=4)
    metrics = slice_metrics(results)

    # small: TP 0.9, 0.8; FN 0.3; FP 0.6; TN 0.2, 0.1 -> precision 2/3, recall 2/3
    assert metrics["slice/resolution/under_0.25mp/count"] == 6.0
    assert metrics["slice/resolution/under_0.25mp/precision"] == pytest.approx(2 / 3)
    assert metrics["slice/resolution/under_0.25mp/recall"] == pytest.approx(2 / 3)
    assert metrics["slice/compression/jpeg_q_90_up/accuracy"] == pytest.approx(4 / 6)
    # large: TP 0.7; FN 0.4; TN 0.45; FP 0.6 -> accuracy 1/2; AUC: 0.7 beats both, 0.4 none
    assert metrics["slice/colour/greyscale/accuracy"] == pytest.approx(0.5)
    assert metrics["slice/resolution/over_1mp/roc_auc"] == pytest.approx(2 / 4)
    # two paintings: below min_count, so their count and nothing else
    painting = {key: value for key, value in metrics.items() if "/painting/" in key}
    assert painting == {"slice/failure_mode/painting/count": 2.0}
    assert [(r.family, r.name) for r in results] == sorted((r.family, r.name) for r in results)


def test_slices_refuse_misaligned_inputs():
    with pytest.raises(ValueError, match="one entry per example"):
        evaluate_slices([1, 0], [0.5, 0.5], [traits(100, 100)])
