"""The mobilenet-probe detector: the shipped head, the backend, the probe's math, the split.

The backend tests run the real backbone and the shipped head on the sample photographs.
The training code is tested in its torch-free parts (the probe and the data split); the
generators need the ``train`` extra and are exercised by ``make train-detector``.
"""

import numpy as np
import pytest
from PIL import Image

import deeptrust.processors.registry  # noqa: F401 - registers the model backends
from deeptrust.processors.backbones.mobilenet_v2 import EMBEDDING_DIMENSIONS, WEIGHTS_SHA256
from deeptrust.processors.detectors.mobilenet_probe import (
    MobileNetProbeDetector,
    ProbeHead,
    shipped_head_path,
    sigmoid,
)
from deeptrust.processors.models import ModelSpec, load_model
from deeptrust.schemas.events import Detection
from deeptrust.streams.images import FetchedImage, decode_image
from deeptrust.training.detector import data
from deeptrust.training.detector.evaluate import Metrics
from deeptrust.training.detector.probe import balanced_weights, choose_l2, fit_logistic, train_head
from tests.images import generator_png, sample_paths


def fetched(raw: bytes) -> FetchedImage:
    return FetchedImage(data=raw, decoded=decode_image(raw))


@pytest.fixture(scope="module")
def detector() -> MobileNetProbeDetector:
    model = load_model(ModelSpec("detect", "mobilenet-probe", "mobilenet-probe"))
    assert isinstance(model, MobileNetProbeDetector)
    return model


def test_shipped_head_loads_and_its_metadata_is_consistent():
    head = ProbeHead.load(shipped_head_path())
    meta = head.metadata
    assert head.dimensions == EMBEDDING_DIMENSIONS
    assert np.all(np.isfinite(head.weights))
    assert np.isfinite(head.bias)
    assert np.all(head.scale > 0)
    assert 0 < head.threshold < 1
    assert meta["backbone_weights_sha256"] == WEIGHTS_SHA256
    assert meta["input_resolution"] == 64
    assert meta["quick"] is False
    train = {photo["name"] for photo in meta["train_photos"]}
    test = {photo["name"] for photo in meta["test_photos"]}
    assert train
    assert test
    assert not train & test
    assert all(len(digest) == 64 for digest in meta["data_sha256"].values())
    counts = meta["test_metrics"]
    assert counts["tn"] + counts["fp"] == meta["sizes"]["real_test"]
    assert counts["tp"] + counts["fn"] == 2 * meta["sizes"]["fake_test_per_generator"]
    assert shipped_head_path().stat().st_size < 100_000


def test_head_round_trips_through_its_file(tmp_path):
    rng = np.random.default_rng(0)
    head = ProbeHead(rng.normal(size=4), 0.3, rng.normal(size=4), np.ones(4), 0.4, {"a": [1]})
    head.save(tmp_path / "head.npz")
    loaded = ProbeHead.load(tmp_path / "head.npz")
    features = rng.normal(size=(5, 4))
    np.testing.assert_allclose(loaded.probability(features), head.probability(features), 1e-5)
    assert loaded.threshold == 0.4
    assert loaded.metadata == {"a": [1]}
    assert loaded.inconclusive_threshold is None


def test_a_head_with_an_inconclusive_band_labels_three_ways_and_keeps_its_band(tmp_path):
    head = ProbeHead(np.ones(2), 0.0, np.zeros(2), np.ones(2), 0.8, inconclusive_threshold=0.3)
    assert [head.label(p) for p in (0.1, 0.3, 0.5, 0.8, 0.95)] == [
        "real",
        "inconclusive",
        "inconclusive",
        "ai_generated",
        "ai_generated",
    ]
    head.save(tmp_path / "banded.npz")
    loaded = ProbeHead.load(tmp_path / "banded.npz")
    assert loaded.inconclusive_threshold == 0.3
    assert loaded.digest() == head.digest()
    plain = ProbeHead(np.ones(2), 0.0, np.zeros(2), np.ones(2), 0.8)
    assert plain.digest() != head.digest(), "the band is part of the head's version"
    with pytest.raises(ValueError, match="inconclusive threshold"):
        ProbeHead(np.ones(2), 0.0, np.zeros(2), np.ones(2), 0.5, inconclusive_threshold=0.6)


def test_head_rejects_mismatched_parts():
    with pytest.raises(ValueError, match="one length"):
        ProbeHead(np.ones(3), 0.0, np.zeros(2), np.ones(3))
    with pytest.raises(ValueError, match="positive"):
        ProbeHead(np.ones(2), 0.0, np.zeros(2), np.array([1.0, 0.0]))


def test_backend_gives_a_probability_for_each_sample_photo(detector):
    images = [fetched(path.read_bytes()) for path in sample_paths()]
    verdicts = detector.predict(images)
    assert len(verdicts) == len(images)
    for verdict in verdicts:
        assert isinstance(verdict, Detection)
        assert 0.0 <= verdict.ai_probability <= 1.0
        expected = "ai_generated" if verdict.ai_probability >= detector.head.threshold else "real"
        assert verdict.label == expected
        assert verdict.model == "mobilenet-probe"
        assert verdict.model_version.startswith("1+")
        assert verdict.signals == []


def test_backend_reports_provenance_findings_beside_the_pixel_score(detector):
    (verdict,) = detector.predict([fetched(generator_png())])
    assert verdict.signals == ["png-text:parameters"]
    assert 0.0 <= verdict.ai_probability <= 1.0


def test_backend_refuses_a_head_trained_on_other_backbone_weights(tmp_path):
    head = ProbeHead.load(shipped_head_path())
    other = ProbeHead(
        head.weights,
        head.bias,
        head.mean,
        head.scale,
        head.threshold,
        {**head.metadata, "backbone_weights_sha256": "0" * 64},
    )
    other.save(tmp_path / "other.npz")
    spec = ModelSpec(
        "detect", "mobilenet-probe", "x", options={"head": str(tmp_path / "other.npz")}
    )
    with pytest.raises(ValueError, match="backbone weights"):
        load_model(spec)


def test_sigmoid_is_stable_at_the_extremes():
    values = sigmoid(np.array([-1000.0, 0.0, 1000.0]))
    np.testing.assert_allclose(values, [0.0, 0.5, 1.0])
    assert np.all(np.isfinite(values))


def test_logistic_regression_separates_a_separable_problem():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(-2, 0.5, (40, 3)), rng.normal(2, 0.5, (40, 3))])
    y = np.concatenate([np.zeros(40), np.ones(40)])
    head = train_head(x, y, l2=0.01)
    probabilities = head.probability(x)
    assert np.array_equal(probabilities >= 0.5, y == 1)
    assert probabilities[y == 1].min() > 0.9
    assert probabilities[y == 0].max() < 0.1
    # the gradient of the penalised objective is zero at the optimum
    weights, bias = fit_logistic(x, y, l2=0.01)
    p = sigmoid(x @ weights + bias)
    np.testing.assert_allclose(x.T @ (p - y) / len(y) + 0.01 * weights, 0, atol=1e-6)
    np.testing.assert_allclose(np.sum(p - y), 0, atol=1e-6)


def test_stronger_regularisation_shrinks_the_weights():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(60, 4))
    y = (x[:, 0] + 0.3 * rng.normal(size=60) > 0).astype(float)
    small, _ = fit_logistic(x, y, l2=0.001)
    large, _ = fit_logistic(x, y, l2=1.0)
    assert np.linalg.norm(large) < np.linalg.norm(small)


def test_balanced_weights_give_each_class_the_same_total():
    labels = np.array([0, 0, 0, 1])
    weights = balanced_weights(labels)
    assert weights[labels == 0].sum() == pytest.approx(weights[labels == 1].sum())
    assert weights.mean() == pytest.approx(1.0)


def test_choose_l2_returns_a_grid_value_and_its_scores():
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(-1, 1, (30, 2)), rng.normal(1, 1, (30, 2))])
    y = np.concatenate([np.zeros(30), np.ones(30)])
    best, scores = choose_l2(x, y, np.arange(60) % 3, (0.01, 1.0))
    assert best in (0.01, 1.0)
    assert set(scores) == {0.01, 1.0}
    assert all(0.5 < score <= 1.0 for score in scores.values())


def test_metrics_count_the_confusion_matrix():
    truth = np.array([1, 1, 1, 0, 0], bool)
    predicted = np.array([1, 1, 0, 1, 0], bool)
    metrics = Metrics.of(truth, predicted)
    assert (metrics.tp, metrics.fp, metrics.tn, metrics.fn) == (2, 1, 1, 1)
    assert metrics.precision == pytest.approx(2 / 3)
    assert metrics.recall == pytest.approx(2 / 3)
    assert metrics.f1 == pytest.approx(2 / 3)


def _photos(names_by_source: dict[str, int]) -> list[data.Photo]:
    return [
        data.Photo(f"{source}-{i}", source, "test", "0" * 64, Image.new("RGB", (200, 150)))
        for source, count in names_by_source.items()
        for i in range(count)
    ]


def test_split_puts_each_photo_on_one_side_and_keeps_every_source_in_training():
    photos = _photos({"samples": 8, "nature": 12})
    train, test = data.split_photos(photos, 0.3, seed=0)
    train_names, test_names = {p.name for p in train}, {p.name for p in test}
    assert not train_names & test_names
    assert train_names | test_names == {p.name for p in photos}
    assert {p.source for p in train} == {p.source for p in test} == {"samples", "nature"}
    assert data.split_photos(photos, 0.3, seed=0) == (train, test)


def test_crops_of_the_split_do_not_leak_photos_across_it():
    photos = _photos({"samples": 8, "nature": 12})
    train, test = data.split_photos(photos, 0.3, seed=0)
    rng = np.random.default_rng(0)
    train_crops = data.random_crops(train, 200, rng, size=64)
    test_crops = data.random_crops(test, 100, rng, size=64)
    assert {c.photo for c in train_crops} <= {p.name for p in train}
    assert {c.photo for c in test_crops} <= {p.name for p in test}
    assert not {c.photo for c in train_crops} & {c.photo for c in test_crops}
    assert all(c.image.size == (64, 64) for c in train_crops + test_crops)
    assert all(0 < c.scale <= 1 for c in train_crops)
