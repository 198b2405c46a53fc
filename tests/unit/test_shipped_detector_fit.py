"""The shipped detector's fit and thresholds, on toy features whose answers are known."""

import numpy as np

from deeptrust.training.detector.shipped import (
    evaluate,
    fit_shipped_head,
    rates,
)


def identity(pixels: np.ndarray) -> np.ndarray:
    return pixels.reshape(len(pixels), -1).astype(np.float64)


def test_the_head_sees_every_family_and_its_band_sits_on_real_calibration_scores():
    rng = np.random.default_rng(0)
    real_train = rng.normal(0.0, 1.0, (400, 2))
    fakes = {"a": rng.normal((3.0, 0.0), 1.0, (200, 2)), "b": rng.normal((0.0, 3.0), 1.0, (200, 2))}
    calibration = rng.normal(0.0, 1.0, (1000, 2))
    head = fit_shipped_head(identity, real_train, fakes, calibration, l2=1.0)
    assert 0 < head.inconclusive_threshold < head.threshold < 1
    assert head.metadata["families"] == {"a": 200, "b": 200}
    on_calibration = rates(head, head.probability(calibration))
    assert on_calibration.ai_generated <= 0.01
    assert on_calibration.not_real <= 0.05
    # Held-out draws of the same distributions: close to the calibrated rates, and both
    # families mostly caught (they sit three standard deviations away).
    held_out = evaluate(
        head,
        identity,
        rng.normal(0.0, 1.0, (2000, 2)),
        {"a": rng.normal((3.0, 0.0), 1.0, (500, 2))},
        [],
    )
    assert held_out["real crops"].not_real < 0.08
    assert held_out["a"].not_real > 0.5
