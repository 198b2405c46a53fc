"""Fit the shipped detector on every family and fix its two thresholds on real crops.

The leave-one-family-out benchmark picks the recipe; the shipped head is that recipe fitted
on all of its families at once, so it has seen every family the benchmark has. Its two
thresholds are set on the calibration photographs' crops, which neither the head nor the
generators saw: ``ai_generated`` where at most ``fpr_ai`` of those real crops score, and
``inconclusive`` from where at most ``fpr_inconclusive`` do. A run-time upload's score is
the mean over its tiles, whose spread on a real photograph is narrower than one crop's, so
the false-positive rates on whole images are at most these (measured, not assumed: see
``evaluate``).

No torch here: features come from the caller's extractor.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from deeptrust.processors.detectors.mobilenet_probe import ProbeHead, sigmoid
from deeptrust.training.detector.metrics import threshold_at_fpr
from deeptrust.training.detector.probe import train_head

Extractor = Callable[[np.ndarray], np.ndarray]


def fit_shipped_head(
    extract: Extractor,
    real_train: np.ndarray,
    fakes: Mapping[str, np.ndarray],
    real_calibration: np.ndarray,
    l2: float,
    fpr_ai: float = 0.01,
    fpr_inconclusive: float = 0.05,
    metadata: Mapping[str, object] | None = None,
) -> ProbeHead:
    """The probe on ``real_train`` against every family, with its calibrated thresholds."""
    if not 0.0 < fpr_ai < fpr_inconclusive < 1.0:
        raise ValueError("need 0 < fpr_ai < fpr_inconclusive < 1: the AI threshold admits fewer")
    fake = np.concatenate(list(fakes.values()))
    x = np.concatenate([extract(real_train), extract(fake)])
    y = np.concatenate([np.zeros(len(real_train)), np.ones(len(fake))])
    fitted = train_head(x, y, l2)
    calibration = fitted.probability(extract(real_calibration))
    strict = threshold_at_fpr(calibration, fpr_ai)
    lenient = threshold_at_fpr(calibration, fpr_inconclusive)
    if not 0.0 < lenient < strict < 1.0:
        raise ValueError(f"degenerate thresholds {lenient} and {strict} on the calibration set")
    return ProbeHead(
        fitted.weights,
        fitted.bias,
        fitted.mean,
        fitted.scale,
        strict,
        {
            **(metadata or {}),
            "l2": l2,
            "fpr_ai_generated": fpr_ai,
            "fpr_inconclusive": fpr_inconclusive,
            "calibration_crops": len(real_calibration),
            "families": {name: len(images) for name, images in fakes.items()},
            "real_training_crops": len(real_train),
        },
        inconclusive_threshold=lenient,
    )


@dataclass(frozen=True)
class Rates:
    """Shares of a set called ``ai_generated`` and called anything but ``real``."""

    ai_generated: float
    not_real: float
    count: int


def rates(head: ProbeHead, probabilities: np.ndarray) -> Rates:
    """How ``head``'s two thresholds split ``probabilities``."""
    labels = [head.label(float(p)) for p in probabilities]
    return Rates(
        sum(label == "ai_generated" for label in labels) / len(labels),
        sum(label != "real" for label in labels) / len(labels),
        len(labels),
    )


def image_probabilities(
    head: ProbeHead, extract: Extractor, tiled: Sequence[np.ndarray]
) -> np.ndarray:
    """Whole images' probabilities the run-time way: the mean log-odds over their tiles."""
    return np.array([float(sigmoid(head.logits(extract(t)).mean())) for t in tiled])


def evaluate(
    head: ProbeHead,
    extract: Extractor,
    real_test: np.ndarray,
    fake_test: Mapping[str, np.ndarray],
    real_test_images: Sequence[np.ndarray],
) -> dict[str, Rates]:
    """Rates on held-out real crops, each family's held-out images and whole real photos."""
    result = {"real crops": rates(head, head.probability(extract(real_test)))}
    for name, images in fake_test.items():
        result[name] = rates(head, head.probability(extract(images)))
    if real_test_images:
        result["real photographs"] = rates(
            head, image_probabilities(head, extract, real_test_images)
        )
    return result
