"""Binary detection metrics with "AI-generated" as the positive class, and their tables."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Metrics:
    """Confusion counts (positive = AI-generated) and the rates derived from them."""

    tp: int
    fp: int
    tn: int
    fn: int

    @classmethod
    def of(cls, truth: np.ndarray, predicted: np.ndarray) -> Metrics:
        """Count ``predicted`` against ``truth`` (both boolean, True = AI-generated)."""
        t, p = np.asarray(truth, bool), np.asarray(predicted, bool)
        return cls(
            tp=int(np.sum(t & p)),
            fp=int(np.sum(~t & p)),
            tn=int(np.sum(~t & ~p)),
            fn=int(np.sum(t & ~p)),
        )

    @property
    def precision(self) -> float:
        """Share of images called AI-generated that are (0 when none is called so)."""
        called = self.tp + self.fp
        return self.tp / called if called else 0.0

    @property
    def recall(self) -> float:
        """Share of AI-generated images that are caught."""
        positives = self.tp + self.fn
        return self.tp / positives if positives else 0.0

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall."""
        total = self.precision + self.recall
        return 2 * self.precision * self.recall / total if total else 0.0

    @property
    def false_positive_rate(self) -> float:
        """Share of real photographs wrongly called AI-generated."""
        negatives = self.tn + self.fp
        return self.fp / negatives if negatives else 0.0

    @property
    def accuracy(self) -> float:
        """Share of all images labelled correctly."""
        total = self.tp + self.fp + self.tn + self.fn
        return (self.tp + self.tn) / total if total else 0.0

    def row(self) -> str:
        """The metrics as markdown table cells."""
        return (
            f"{self.f1:.3f} | {self.precision:.3f} | {self.recall:.3f} | "
            f"{self.false_positive_rate:.3f} | {self.tp} / {self.fp} / {self.tn} / {self.fn}"
        )

    def as_dict(self) -> dict[str, float | int]:
        """The counts and rates, for the head's metadata."""
        return {
            "tp": self.tp,
            "fp": self.fp,
            "tn": self.tn,
            "fn": self.fn,
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "f1": round(self.f1, 4),
        }


HEADER = (
    "| trained on | tested on | test images | F1 | precision | recall | false-positive rate "
    "| TP / FP / TN / FN |\n|---|---|---|---:|---:|---:|---:|---|"
)


def confusion_matrix(metrics: Metrics) -> str:
    """A 2x2 markdown confusion matrix (rows: truth, columns: prediction)."""
    return "\n".join(
        [
            "| truth \\ predicted | real | AI-generated |",
            "|---|---:|---:|",
            f"| real | {metrics.tn} | {metrics.fp} |",
            f"| AI-generated | {metrics.fn} | {metrics.tp} |",
        ]
    )
