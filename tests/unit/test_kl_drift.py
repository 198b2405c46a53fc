"""The KL detector on synthetic embeddings: quiet at its false-alarm rate, loud under shift.

These check the statistics of the detector itself; how it does on real images and the
project's embedding model is measured by the drift benchmark.
"""

import numpy as np
import pytest

from deeptrust.drift.kl import KLConfig, KLDriftDetector
from deeptrust.drift.reduction import Projection

DIM, RANK = 64, 6


def embeddings(rng, n, shift=0.0, scale=1.0):
    """Low-rank structure plus noise, like real embeddings; ``shift`` moves the latent mean."""
    mixing = np.random.default_rng(42).normal(size=(RANK, DIM))
    latent = rng.normal(loc=shift, scale=scale, size=(n, RANK))
    return latent @ mixing + 0.3 * rng.normal(size=(n, DIM))


@pytest.fixture(scope="module")
def detector():
    rng = np.random.default_rng(1)
    config = KLConfig(window_size=200, false_alarm_rate=0.05, n_bootstrap=400, seed=3)
    return KLDriftDetector(embeddings(rng, 4000), config)


def test_projection_decorrelates_and_standardises():
    rng = np.random.default_rng(0)
    data = embeddings(rng, 3000)
    scores = Projection.fit(data, 4)(data)
    assert np.allclose(np.cov(scores.T), np.eye(4), atol=1e-6)


def test_stable_stream_alarms_near_the_stated_rate(detector):
    rng = np.random.default_rng(7)
    alarms = [detector.predict(embeddings(rng, 200)).is_drift for _ in range(200)]
    assert np.mean(alarms) <= 0.10


@pytest.mark.parametrize(("shift", "scale"), [(0.4, 1.0), (0.0, 1.5)], ids=["mean", "spread"])
def test_shifted_stream_is_detected(detector, shift, scale):
    rng = np.random.default_rng(8)
    results = [detector.predict(embeddings(rng, 200, shift, scale)) for _ in range(50)]
    assert np.mean([r.is_drift for r in results]) >= 0.9
    assert all(r.p_value < 0.05 for r in results if r.is_drift)


def test_result_carries_its_evidence(detector):
    result = detector.predict(embeddings(np.random.default_rng(9), 200, shift=1.0))
    assert result.is_drift
    assert result.statistic > result.threshold
    assert result.window_size == 200
    assert len(result.per_component) == detector.projection.n_components
    assert sum(result.per_component) == pytest.approx(result.statistic)


def test_same_reference_and_config_give_the_same_detector():
    rng = np.random.default_rng(5)
    reference = embeddings(rng, 1000)
    config = KLConfig(window_size=100, n_bootstrap=100)
    first = KLDriftDetector(reference, config)
    second = KLDriftDetector(reference, KLConfig(**config.to_dict()))
    assert first.threshold == second.threshold
    window = embeddings(rng, 100)
    assert first.score(window)[0] == second.score(window)[0]
