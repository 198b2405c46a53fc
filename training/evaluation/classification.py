"""Binary detection metrics with AI-generated as the positive class, calibration, and their plots.

Counts and the rates derived from them are the detector training's own
:class:`~deeptrust.training.detector.evaluate.Metrics`; this module adds what needs scores rather
than decisions: ROC-AUC and calibration (expected calibration error, reliability curve,
Brier score).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from deeptrust.training.detector.evaluate import Metrics

DEFAULT_BINS = 10


def _arrays(labels: npt.ArrayLike, scores: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Labels as bool and scores as float, checked to be one-dimensional and of one length."""
    truth = np.asarray(labels)
    values = np.asarray(scores, np.float64)
    if truth.ndim != 1 or values.shape != truth.shape:
        raise ValueError(f"labels {truth.shape} and scores {values.shape} must be 1-d, same length")
    if not np.isin(truth, (0, 1)).all():
        raise ValueError("labels must be 0 (human) or 1 (AI-generated)")
    return truth.astype(bool), values


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values``; tied values share the mean of the ranks they span."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values), np.float64)
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + 1 + end) / 2  # mean of start+1 .. end
    return ranks


def roc_auc(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float | None:
    """Area under the ROC curve, from ranks (Mann-Whitney U); None with only one class present.

    It is the probability that a random AI-generated image scores above a random human one,
    a tie counting one half: U = (sum of positives' ranks) - P(P+1)/2, AUC = U / (P N).
    """
    truth, values = _arrays(labels, scores)
    positives = int(truth.sum())
    negatives = len(truth) - positives
    if positives == 0 or negatives == 0:
        return None
    rank_sum = float(average_ranks(values)[truth].sum())
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


@dataclass(frozen=True)
class ReliabilityBin:
    """One equal-width probability bin: its edges, its size, mean prediction, observed rate."""

    lower: float
    upper: float
    count: int
    mean_probability: float
    positive_rate: float


@dataclass(frozen=True)
class Calibration:
    """How far predicted probabilities are from observed frequencies.

    ``ece`` is the count-weighted mean of |mean probability - share of AI-generated| over
    non-empty equal-width bins of the positive-class probability; ``brier`` the mean
    squared error of the probability against the 0/1 truth.
    """

    ece: float
    brier: float
    bins: tuple[ReliabilityBin, ...]


def calibration(
    labels: npt.ArrayLike, probabilities: npt.ArrayLike, bins: int = DEFAULT_BINS
) -> Calibration:
    """Expected calibration error, Brier score and the reliability curve's points.

    Bins are [0, 1/b), [1/b, 2/b), ..., [(b-1)/b, 1]: a probability of exactly 1 falls in
    the last. Empty bins appear in the curve with count 0 and NaN means.
    """
    truth, values = _arrays(labels, probabilities)
    if len(values) == 0:
        raise ValueError("calibration of no predictions")
    if ((values < 0) | (values > 1)).any():
        raise ValueError("probabilities must lie in [0, 1]")
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.minimum((values * bins).astype(int), bins - 1)
    points = []
    gap = 0.0
    for b in range(bins):
        member = index == b
        count = int(member.sum())
        mean = float(values[member].mean()) if count else math.nan
        rate = float(truth[member].mean()) if count else math.nan
        if count:
            gap += count * abs(mean - rate)
        points.append(ReliabilityBin(float(edges[b]), float(edges[b + 1]), count, mean, rate))
    brier = float(np.mean((values - truth) ** 2))
    return Calibration(gap / len(values), brier, tuple(points))


@dataclass(frozen=True)
class ClassificationReport:
    """Everything about one detector on one labelled set, at one threshold."""

    counts: Metrics
    roc_auc: float | None
    calibration: Calibration
    threshold: float

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """Flat ``name -> float``; ROC-AUC is left out where it is undefined (one class)."""
        values = {
            "count": float(self.counts.tp + self.counts.fp + self.counts.tn + self.counts.fn),
            "accuracy": self.counts.accuracy,
            "precision": self.counts.precision,
            "recall": self.counts.recall,
            "f1": self.counts.f1,
            "false_positive_rate": self.counts.false_positive_rate,
            "tp": float(self.counts.tp),
            "fp": float(self.counts.fp),
            "tn": float(self.counts.tn),
            "fn": float(self.counts.fn),
            "ece": self.calibration.ece,
            "brier": self.calibration.brier,
        }
        if self.roc_auc is not None:
            values["roc_auc"] = self.roc_auc
        return {f"{prefix}{name}": value for name, value in values.items()}


def confusion_matrix(labels: npt.ArrayLike, predicted: npt.ArrayLike) -> np.ndarray:
    """2x2 counts, rows the truth and columns the prediction, human first: [[TN, FP], [FN, TP]]."""
    truth, decisions = _arrays(labels, predicted)
    counts = Metrics.of(truth, decisions.astype(bool))
    return np.array([[counts.tn, counts.fp], [counts.fn, counts.tp]], np.int64)


def evaluate_binary(
    labels: npt.ArrayLike,
    probabilities: npt.ArrayLike,
    threshold: float = 0.5,
    bins: int = DEFAULT_BINS,
) -> ClassificationReport:
    """Decisions at ``threshold`` (probability >= threshold is AI-generated), AUC, calibration."""
    truth, values = _arrays(labels, probabilities)
    return ClassificationReport(
        counts=Metrics.of(truth, values >= threshold),
        roc_auc=roc_auc(truth, values),
        calibration=calibration(truth, values, bins),
        threshold=threshold,
    )


def _figure(size: tuple[float, float]) -> Figure:
    """A figure drawn by Agg into files only: no pyplot state, no window."""
    figure = Figure(figsize=size)
    FigureCanvasAgg(figure)
    return figure


def plot_confusion_matrix(report: ClassificationReport, path: Path) -> Path:
    """The confusion matrix as a PNG: counts and shares of each true class."""
    counts = report.counts
    matrix = np.array([[counts.tn, counts.fp], [counts.fn, counts.tp]], np.float64)
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    figure = _figure((4.2, 3.6))
    axes = figure.add_subplot()
    axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    names = ["human", "AI-generated"]
    axes.set_xticks([0, 1], names)
    axes.set_yticks([0, 1], names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("truth")
    for row in range(2):
        for column in range(2):
            colour = "white" if shares[row, column] > 0.5 else "black"
            text = f"{int(matrix[row, column])}\n{shares[row, column]:.1%}"
            axes.text(column, row, text, ha="center", va="center", color=colour)
    axes.set_title(f"threshold {report.threshold:g}")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path


def plot_reliability(curve: Calibration, path: Path) -> Path:
    """The reliability diagram as a PNG: observed share per bin against the diagonal."""
    figure = _figure((4.8, 4.8))
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    filled = [point for point in curve.bins if point.count]
    axes.bar(
        [point.lower for point in filled],
        [point.positive_rate for point in filled],
        width=[point.upper - point.lower for point in filled],
        align="edge",
        edgecolor="black",
        alpha=0.6,
        label="share AI-generated",
    )
    axes.plot(
        [point.mean_probability for point in filled],
        [point.positive_rate for point in filled],
        marker="o",
        color="tab:red",
        label="bin mean",
    )
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_xlabel("predicted probability of AI-generated")
    axes.set_ylabel("observed share AI-generated")
    axes.set_title(f"ECE {curve.ece:.3f}, Brier {curve.brier:.3f}")
    axes.legend(loc="upper left")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path


def write_artefacts(report: ClassificationReport, folder: Path) -> dict[str, Path]:
    """Both plots into ``folder``, by artefact name."""
    return {
        "confusion_matrix": plot_confusion_matrix(report, folder / "confusion_matrix.png"),
        "reliability": plot_reliability(report.calibration, folder / "reliability.png"),
    }
