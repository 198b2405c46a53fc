"""Score-based detection metrics for the leave-one-family-out benchmark.

AI-generated is the positive class and a higher score means "more likely generated". A
detector is judged at operating points fixed on *real photographs only* (the false-positive
rate is what a platform can measure on its own uploads), and real and generated accuracy
are reported separately, because a single accuracy hides a detector that calls everything
real. ROC-AUC is :func:`deeptrust.training.evaluation.classification.roc_auc` (ranks, Mann-Whitney).

No torch here: the unit tests run in the main environment.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from deeptrust.training.evaluation.classification import roc_auc


def _scores(values: npt.ArrayLike) -> np.ndarray:
    array = np.asarray(values, np.float64)
    if array.ndim != 1 or not np.isfinite(array).all():
        raise ValueError("scores must be a 1-d array of finite numbers")
    return array


def average_precision(real: npt.ArrayLike, fake: npt.ArrayLike) -> float:
    """Area under the precision-recall curve as a step sum: sum (R_k - R_{k-1}) P_k.

    One step per distinct score, from the highest down, so tied scores enter together
    (scikit-learn's definition). Needs at least one generated image.
    """
    negatives, positives = _scores(real), _scores(fake)
    if len(positives) == 0:
        raise ValueError("average precision needs at least one generated image")
    scores = np.concatenate([positives, negatives])
    truth = np.concatenate([np.ones(len(positives)), np.zeros(len(negatives))])
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_truth = scores[order], truth[order]
    group_ends = np.flatnonzero(np.r_[sorted_scores[1:] != sorted_scores[:-1], True])
    true_positives = np.cumsum(sorted_truth)[group_ends]
    flagged = group_ends + 1
    precision = true_positives / flagged
    recall = true_positives / len(positives)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def auroc(real: npt.ArrayLike, fake: npt.ArrayLike) -> float:
    """ROC-AUC: the chance a generated image scores above a real one (ties count half)."""
    negatives, positives = _scores(real), _scores(fake)
    labels = np.r_[np.zeros(len(negatives), int), np.ones(len(positives), int)]
    value = roc_auc(labels, np.r_[negatives, positives])
    if value is None:
        raise ValueError("ROC-AUC needs real and generated images")
    return value


def threshold_at_fpr(real: npt.ArrayLike, fpr: float) -> float:
    """The lowest threshold at which ``score >= threshold`` flags at most ``fpr`` of ``real``.

    At most floor(fpr * n) real scores lie at or above it: it sits just above the
    (k+1)-th highest real score, k = floor(fpr * n), so ties there are not flagged.
    """
    negatives = np.sort(_scores(real))[::-1]
    if not 0.0 <= fpr <= 1.0 or len(negatives) == 0:
        raise ValueError("fpr must be in [0, 1] and real scores non-empty")
    allowed = math.floor(fpr * len(negatives) + 1e-9)
    if allowed >= len(negatives):
        return -math.inf
    return float(np.nextafter(negatives[allowed], math.inf))


def flagged(scores: npt.ArrayLike, threshold: float) -> float:
    """The share of ``scores`` at or above ``threshold`` (called AI-generated)."""
    values = _scores(scores)
    return float(np.mean(values >= threshold)) if len(values) else math.nan


def tpr_at_fpr(real: npt.ArrayLike, fake: npt.ArrayLike, fpr: float) -> float:
    """Fake recall at the threshold that flags at most ``fpr`` of these real images."""
    return flagged(fake, threshold_at_fpr(real, fpr))


@dataclass(frozen=True)
class HeldOutMetrics:
    """One detector on one held-out family: ranking metrics and the two class accuracies.

    ``tpr_1``/``tpr_5`` use thresholds set on the test real photographs themselves (points
    of the test ROC curve); ``real_accuracy``/``fake_accuracy`` use the operating
    threshold fixed beforehand on separate calibration photographs, as a deployment would.
    """

    ap: float
    auroc: float
    tpr_1: float
    tpr_5: float
    real_accuracy: float
    fake_accuracy: float

    @classmethod
    def of(cls, real: npt.ArrayLike, fake: npt.ArrayLike, threshold: float) -> HeldOutMetrics:
        """Metrics of real and generated test scores, at the calibrated ``threshold``."""
        return cls(
            ap=average_precision(real, fake),
            auroc=auroc(real, fake),
            tpr_1=tpr_at_fpr(real, fake, 0.01),
            tpr_5=tpr_at_fpr(real, fake, 0.05),
            real_accuracy=1.0 - flagged(real, threshold),
            fake_accuracy=flagged(fake, threshold),
        )


@dataclass(frozen=True)
class Spread:
    """A metric over seeds: mean, sample standard deviation (n - 1), extremes, count."""

    mean: float
    std: float
    low: float
    high: float
    count: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        """The spread of ``values`` (std is 0 for a single value)."""
        array = np.asarray(values, np.float64)
        if array.ndim != 1 or len(array) == 0:
            raise ValueError("need at least one value")
        std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
        return cls(float(array.mean()), std, float(array.min()), float(array.max()), len(array))

    def text(self, digits: int = 3) -> str:
        """``mean ± std``, as the tables print it."""
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


def spread_by_field(results: Sequence[HeldOutMetrics]) -> dict[str, Spread]:
    """Each metric's spread over ``results`` (one per seed)."""
    names = HeldOutMetrics.__dataclass_fields__
    return {name: Spread.of([getattr(result, name) for result in results]) for name in names}
