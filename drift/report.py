"""Pictures of drift: the statistic over time against its threshold, and the worst window.

``deeptrust drift report`` reads the drift topic and writes, per model version, a PNG of
each detector's statistic per window (drifted windows marked) with its threshold, and a
PNG of the worst window's statistic split by principal component, which says whether one
direction of the embedding space moved or all of them did.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a window

import matplotlib.pyplot as plt

from deeptrust.schemas.events import DriftReportEvent, DriftVerdict

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def write_report(reports: Sequence[DriftReportEvent], directory: Path) -> list[Path]:
    """Write the two PNGs for every model version in ``reports``; return their paths."""
    by_model: dict[str, list[DriftReportEvent]] = defaultdict(list)
    for report in reports:
        by_model[report.key].append(report)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for key, series in sorted(by_model.items()):
        series.sort(key=lambda report: report.window.index)
        stem = _UNSAFE.sub("_", key)
        written.append(_timeline(key, series, directory / f"{stem}-timeline.png"))
        written.append(_worst_window(key, series, directory / f"{stem}-worst-window.png"))
    return written


def _timeline(key: str, series: list[DriftReportEvent], path: Path) -> Path:
    detectors = [verdict.detector for verdict in series[0].verdicts]
    figure, axes = plt.subplots(
        len(detectors), 1, figsize=(10, 3.2 * len(detectors)), sharex=True, squeeze=False
    )
    times = [report.window.closed_at for report in series]
    for row, detector in enumerate(detectors):
        axis = axes[row][0]
        verdicts = [_verdict(report, detector) for report in series]
        statistics = [v.statistic for v in verdicts]
        axis.plot(times, statistics, marker="o", markersize=3, label="statistic")
        axis.step(
            times,
            [v.threshold for v in verdicts],
            where="mid",
            color="grey",
            linestyle="--",
            label="threshold",
        )
        drifted = [(t, v.statistic) for t, v in zip(times, verdicts, strict=True) if v.is_drift]
        if drifted:
            axis.scatter(*zip(*drifted, strict=True), color="crimson", zorder=3, label="drift")
        axis.set_ylabel(detector)
        axis.legend(loc="upper left")
        axis.grid(alpha=0.3)
    axes[0][0].set_title(f"Embedding drift of {key}: {len(series)} windows")
    axes[-1][0].set_xlabel("window closed at (UTC)")
    figure.autofmt_xdate()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _worst_window(key: str, series: list[DriftReportEvent], path: Path) -> Path:
    def severity(report: DriftReportEvent) -> float:
        return max(v.statistic / v.threshold for v in report.verdicts if v.threshold > 0)

    worst = max(series, key=severity)
    verdict = max(worst.verdicts, key=lambda v: v.statistic / v.threshold)
    figure, axis = plt.subplots(figsize=(8, 4))
    components = range(1, len(verdict.per_component) + 1)
    colours = ["crimson" if verdict.is_drift else "steelblue"] * len(verdict.per_component)
    axis.bar(components, verdict.per_component, color=colours)
    even_share = verdict.threshold / max(1, len(verdict.per_component))
    axis.axhline(
        even_share, color="grey", linestyle="--", label="threshold spread evenly over components"
    )
    axis.legend(loc="upper right", fontsize=8)
    axis.set_xticks(list(components))
    axis.set_xlabel("principal component of the reference")
    axis.set_ylabel(f"{verdict.detector} share")
    axis.set_title(
        f"{key}, window {worst.window.index} ({worst.window.size} embeddings, closed "
        f"{worst.window.closed_at:%Y-%m-%d %H:%M}): statistic {verdict.statistic:.3g} "
        f"vs threshold {verdict.threshold:.3g}",
        fontsize=9,
    )
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _verdict(report: DriftReportEvent, detector: str) -> DriftVerdict:
    return next(v for v in report.verdicts if v.detector == detector)
