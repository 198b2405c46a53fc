"""alibi-detect's KS test behind the detector interface (runs in .venv-alibi: make test-alibi).

In the main environment the optional extra is absent and the module is skipped; `make
test` runs it in the environment that has the extra.
"""

import numpy as np
import pytest

pytest.importorskip("alibi_detect", reason="optional extra: runs in .venv-alibi (make test)")

from deeptrust.drift.detectors import DetectorConfig, build_detectors, combined

DIM, RANK = 64, 6
MIXING = np.random.default_rng(42).normal(size=(RANK, DIM))


def embeddings(rng, n, shift=0.0):
    return rng.normal(loc=shift, size=(n, RANK)) @ MIXING + 0.3 * rng.normal(size=(n, DIM))


@pytest.fixture(scope="module")
def detectors():
    reference = embeddings(np.random.default_rng(1), 2000)
    config = DetectorConfig(window_size=200, false_alarm_rate=0.05, n_components=8, seed=3)
    return build_detectors(["kl-histogram", "alibi-ks"], reference, config)


def test_alibi_ks_is_quiet_on_a_stable_stream(detectors):
    ks = detectors[1]
    assert ks.name == "alibi-ks"
    rng = np.random.default_rng(7)
    alarms = [ks.predict(embeddings(rng, 200)).is_drift for _ in range(100)]
    assert np.mean(alarms) <= 0.10


def test_alibi_ks_flags_a_shift_on_the_same_scale_as_kl(detectors):
    window = embeddings(np.random.default_rng(8), 200, shift=0.5)
    results = [detector.predict(window) for detector in detectors]
    for result in results:
        assert result.is_drift
        assert result.statistic > result.threshold
        assert len(result.per_component) == 8
    assert results[1].p_value < 0.05
    assert combined(results, "all")
