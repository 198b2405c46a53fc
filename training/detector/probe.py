"""The linear probe: L2-regularised logistic regression on standardised frozen features.

Ojha et al. (2023) showed that a linear classifier on a frozen, generally pretrained
backbone generalises across generators better than a network trained end to end on one
generator's images; this is that recipe on the project's MobileNetV2. Newton's method on
1280 dimensions converges in a few steps, so no solver library is needed, and the fitted
head is the runtime's :class:`~deeptrust.processors.detectors.mobilenet_probe.ProbeHead` itself, so
training and serving share one ``probability``.

No torch here: the unit tests fit it in the main environment.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from deeptrust.processors.detectors.mobilenet_probe import ProbeHead, sigmoid

MIN_SCALE = 1e-6


def balanced_weights(labels: np.ndarray) -> np.ndarray:
    """Per-sample weights that give each class the same total weight (mean weight 1)."""
    labels = np.asarray(labels)
    weights = np.empty(len(labels), np.float64)
    classes = np.unique(labels)
    for value in classes:
        mask = labels == value
        weights[mask] = len(labels) / (len(classes) * mask.sum())
    return weights


def fit_logistic(
    features: np.ndarray,
    labels: np.ndarray,
    l2: float,
    sample_weight: np.ndarray | None = None,
    max_iter: int = 50,
    tol: float = 1e-9,
) -> tuple[np.ndarray, float]:
    """Minimise mean weighted log-loss + ``l2``/2 |w|² (bias unpenalised) by Newton steps.

    Returns the weights and the bias. Each step solves with the exact Hessian and halves
    itself until the objective decreases, so it cannot diverge on separable data (the L2
    term keeps the optimum finite).
    """
    x = np.asarray(features, np.float64)
    y = np.asarray(labels, np.float64)
    n, d = x.shape
    s = np.ones(n) if sample_weight is None else np.asarray(sample_weight, np.float64)
    design = np.hstack([x, np.ones((n, 1))])
    penalty = np.full(d + 1, l2)
    penalty[-1] = 0.0
    theta = np.zeros(d + 1)

    def objective(t: np.ndarray) -> float:
        z = design @ t
        # log(1 + e^z) - y z, computed stably
        loss = np.logaddexp(0.0, z) - y * z
        return float(np.dot(s, loss) / n + 0.5 * np.dot(penalty * t, t))

    current = objective(theta)
    for _ in range(max_iter):
        p = sigmoid(design @ theta)
        gradient = design.T @ (s * (p - y)) / n + penalty * theta
        curvature = s * p * (1.0 - p) / n
        hessian = (design * curvature[:, None]).T @ design + np.diag(penalty + 1e-12)
        step = np.linalg.solve(hessian, gradient)
        size = 1.0
        while size > 1e-6:
            candidate = theta - size * step
            value = objective(candidate)
            if value <= current:
                break
            size /= 2
        else:
            break
        theta, improvement, current = candidate, current - value, value
        if improvement < tol:
            break
    return theta[:-1], float(theta[-1])


def train_head(
    features: np.ndarray,
    labels: np.ndarray,
    l2: float,
    threshold: float = 0.5,
    metadata: dict[str, object] | None = None,
) -> ProbeHead:
    """Standardise with the training set's statistics, fit with balanced classes."""
    x = np.asarray(features, np.float64)
    mean = x.mean(axis=0)
    scale = np.maximum(x.std(axis=0), MIN_SCALE)
    weights, bias = fit_logistic((x - mean) / scale, labels, l2, balanced_weights(labels))
    return ProbeHead(weights, bias, mean, scale, threshold, dict(metadata or {}))


def choose_l2(
    features: np.ndarray,
    labels: np.ndarray,
    folds: np.ndarray,
    grid: Sequence[float],
) -> tuple[float, dict[float, float]]:
    """The ``l2`` of ``grid`` with the best mean balanced accuracy over the given folds.

    ``folds`` assigns each sample a fold; callers give all crops of one photograph (and
    one generator sample) the same fold, so validation never sees a training photograph.
    """
    scores: dict[float, float] = {}
    for l2 in grid:
        accuracies = []
        for fold in np.unique(folds):
            held = folds == fold
            head = train_head(features[~held], labels[~held], l2)
            predicted = head.probability(features[held]) >= head.threshold
            truth = labels[held].astype(bool)
            recall_fake = float(np.mean(predicted[truth])) if truth.any() else 0.0
            recall_real = float(np.mean(~predicted[~truth])) if (~truth).any() else 0.0
            accuracies.append((recall_fake + recall_real) / 2)
        scores[l2] = float(np.mean(accuracies))
    best = max(grid, key=lambda value: (scores[value], value))
    return best, scores
