"""KL divergence between a live window of embeddings and the reference, with a calibrated threshold.

Estimator: the reference is projected onto its principal components
(:mod:`deeptrust.drift.reduction`); each component is cut into equal-mass bins at the reference's
quantiles; a window's statistic is the sum over components of KL(window || reference)
between additively smoothed histograms. Equal-mass bins keep every reference bin equally
populated, so the smoothing never dominates a bin; the smoothing keeps the divergence
finite when a window leaves a bin empty; and the cost is O(window size times components).

Summing marginal divergences ignores dependence between components (PCA removes linear
correlation only) and the plug-in estimate is biased upwards for small windows, so the
threshold is not a fixed number: it is the (1 - false_alarm_rate) quantile of the statistic
over bootstrap windows of the same size drawn from a held-out half of the reference (computed
once per window size, since windows closed by age are smaller). A stable stream therefore
raises alarms at the stated rate, whatever the bias.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from deeptrust.drift.reduction import Matrix, Projection


@dataclass(frozen=True)
class KLConfig:
    """Everything that determines a detector, for reproducibility."""

    n_components: int = 8
    n_bins: int = 10
    smoothing: float = 0.5
    window_size: int = 500
    false_alarm_rate: float = 0.01
    n_bootstrap: int = 500
    seed: int = 0

    def to_dict(self) -> dict[str, float | int]:
        """Return the config as plain values (for reports and reloading)."""
        return asdict(self)


@dataclass(frozen=True)
class DriftResult:
    """The verdict on one window."""

    statistic: float
    threshold: float
    p_value: float
    is_drift: bool
    window_size: int
    per_component: tuple[float, ...]


class KLDriftDetector:
    """Fits on a reference in the constructor; ``score`` and ``predict`` judge windows."""

    name = "kl-histogram"

    def __init__(self, reference: Matrix, config: KLConfig | None = None) -> None:
        self.config = config or KLConfig()
        reference = np.asarray(reference, dtype=np.float64)
        rng = np.random.default_rng(self.config.seed)
        order = rng.permutation(len(reference))
        fit_half, calibration_half = np.array_split(reference[order], 2)
        self.projection = Projection.fit(fit_half, self.config.n_components)
        fit_scores = self.projection(fit_half)
        quantiles = np.linspace(0, 1, self.config.n_bins + 1)[1:-1]
        self._edges = np.quantile(fit_scores, quantiles, axis=0).T  # (components, bins - 1)
        self._reference = self._histograms(fit_scores)
        self._calibration = self.projection(calibration_half)
        self._nulls: dict[int, Matrix] = {}
        self.threshold = self.threshold_for(self.config.window_size)

    @property
    def false_alarm_rate(self) -> float:
        """The rate of false alarms on a stable stream that the threshold was set for."""
        return self.config.false_alarm_rate

    def score(self, window: Matrix) -> tuple[float, Matrix]:
        """Return the window's statistic and its per-component divergences."""
        return self._divergences(self.projection(np.asarray(window, dtype=np.float64)))

    def predict(self, window: Matrix) -> DriftResult:
        """Judge one window against the calibrated threshold."""
        statistic, per_component = self.score(window)
        null = self._null(len(window))
        exceeded = int(np.sum(null >= statistic))
        threshold = self.threshold_for(len(window))
        return DriftResult(
            statistic=statistic,
            threshold=threshold,
            p_value=(exceeded + 1) / (len(null) + 1),
            is_drift=statistic > threshold,
            window_size=len(window),
            per_component=tuple(float(value) for value in per_component),
        )

    def _histograms(self, scores: Matrix) -> Matrix:
        """Return smoothed bin probabilities per component: shape (components, bins)."""
        n_components, n_bins = self.projection.n_components, self.config.n_bins
        bins = np.stack(
            [np.searchsorted(self._edges[c], scores[:, c]) for c in range(n_components)], axis=1
        )
        flat = (bins + np.arange(n_components) * n_bins).ravel()
        counts = np.bincount(flat, minlength=n_components * n_bins).reshape(n_components, n_bins)
        smoothed = counts + self.config.smoothing
        probabilities: Matrix = smoothed / smoothed.sum(axis=1, keepdims=True)
        return probabilities

    def _divergences(self, scores: Matrix) -> tuple[float, Matrix]:
        live = self._histograms(scores)
        per_component: Matrix = np.sum(live * np.log(live / self._reference), axis=1)
        return float(per_component.sum()), per_component

    def threshold_for(self, window_size: int) -> float:
        """The threshold for windows of ``window_size`` (the estimator's bias depends on it)."""
        return float(np.quantile(self._null(window_size), 1 - self.config.false_alarm_rate))

    def _null(self, size: int) -> Matrix:
        """Bootstrap statistics of stable windows of ``size``, computed once per size."""
        if size not in self._nulls:
            n = len(self._calibration)
            rng = np.random.default_rng((self.config.seed, size))  # same draws on every replay
            draws = rng.integers(0, n, size=(self.config.n_bootstrap, size))
            self._nulls[size] = np.array(
                [self._divergences(self._calibration[rows])[0] for rows in draws]
            )
        return self._nulls[size]
