import numpy as np
import pytest

from deeptrust.drift.detectors import DetectorConfig, build_detectors, combined
from deeptrust.drift.kl import DriftResult


def result(is_drift):
    return DriftResult(1.0, 0.5, 0.01, is_drift, 100, ())


def test_combination_rules():
    mixed = [result(True), result(False)]
    assert combined(mixed, "any")
    assert not combined(mixed, "all")
    assert combined([result(True)] * 2, "all")


def test_unknown_or_no_detector_is_refused():
    reference = np.random.default_rng(0).normal(size=(100, 4))
    config = DetectorConfig(window_size=50, false_alarm_rate=0.05, n_components=2)
    with pytest.raises(ValueError, match="unknown drift detectors"):
        build_detectors(["chi-square"], reference, config)
    with pytest.raises(ValueError, match="unknown drift detectors"):
        build_detectors([], reference, config)


def test_threshold_follows_the_window_size():
    reference = np.random.default_rng(1).normal(size=(2000, 8))
    config = DetectorConfig(window_size=400, false_alarm_rate=0.05, n_components=4)
    (kl,) = build_detectors(["kl-histogram"], reference, config)
    small = kl.predict(np.random.default_rng(2).normal(size=(50, 8)))
    large = kl.predict(np.random.default_rng(3).normal(size=(400, 8)))
    assert small.threshold > large.threshold, "smaller windows have a larger plug-in bias"
