"""Metrics per generator family of the test split: an overall number hides the family missed.

A family is named by an AI image's ``generator:<name>`` tag (the seed dataset writes it; a
Kaggle-layout folder may carry a ``generator`` column). Each family is scored against all
the test split's real images, with the leave-one-family-out benchmark's metrics
(:class:`~deeptrust.training.detector.metrics.HeldOutMetrics`), so a retrain's table reads
like ``docs/detector.md``'s. AI images without the tag are in no family's row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from deeptrust.training.datasets.example import GENERATOR_TAG
from deeptrust.training.detector.metrics import HeldOutMetrics


def generator_of(tags: Sequence[str]) -> str | None:
    """The family a ``generator:<name>`` tag names, if any."""
    for tag in tags:
        if tag.startswith(GENERATOR_TAG) and len(tag) > len(GENERATOR_TAG):
            return tag[len(GENERATOR_TAG) :]
    return None


def family_table(
    labels: np.ndarray,
    probabilities: np.ndarray,
    tags: Sequence[Sequence[str]],
    threshold: float,
) -> dict[str, HeldOutMetrics]:
    """Per family of the AI images: its metrics against every real image, at ``threshold``."""
    if not len(labels) == len(probabilities) == len(tags):
        raise ValueError("labels, probabilities and tags must be of one length")
    real = probabilities[labels == 0]
    if len(real) == 0:
        return {}
    families: dict[str, list[float]] = {}
    for label, probability, example_tags in zip(labels, probabilities, tags, strict=True):
        family = generator_of(example_tags) if label == 1 else None
        if family is not None:
            families.setdefault(family, []).append(float(probability))
    return {
        name: HeldOutMetrics.of(real, np.array(scores), threshold)
        for name, scores in sorted(families.items())
    }


def family_metrics(table: dict[str, HeldOutMetrics]) -> dict[str, float]:
    """The table as tracking metrics: ``family/<name>/<metric>``."""
    return {
        f"family/{name}/{metric}": value
        for name, row in table.items()
        for metric, value in asdict(row).items()
    }


def write_family_table(table: dict[str, HeldOutMetrics], path: Path) -> Path:
    """The table as Markdown (an evaluation artefact beside the plots)."""
    lines = [
        "| generator | AP | AUROC | TPR @ 1% FPR | TPR @ 5% FPR | real acc. | fake acc. |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in table.items():
        cells = (row.ap, row.auroc, row.tpr_1, row.tpr_5, row.real_accuracy, row.fake_accuracy)
        lines.append(f"| {name} | " + " | ".join(f"{value:.3f}" for value in cells) + " |")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
