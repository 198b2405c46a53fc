"""PNGs of the business metrics over time: each point is the report as it stood then.

Cumulative, not per bucket: review counts are small, and an estimate over all decisions
made so far, with its interval narrowing as reviews arrive, is what a reader can trust.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only; never a window

import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from deeptrust.business.estimators import Interval
from deeptrust.business.report import BusinessReport

Pick = Callable[[BusinessReport], Interval | None]


def write_plots(series: Sequence[BusinessReport], directory: Path) -> list[Path]:
    """Write ``moderation.png`` and ``search.png`` for the timeline ``series``."""
    directory.mkdir(parents=True, exist_ok=True)
    return [
        _figure(
            series,
            directory / "moderation.png",
            "Detector, as confirmed by moderators (95% intervals)",
            [
                ("flag precision", lambda r: r.precision),
                ("recall", lambda r: r.recall),
                ("AI share of unflagged", lambda r: r.unflagged_ai_share),
            ],
        ),
        _figure(
            series,
            directory / "search.png",
            "Search, as users saw it (95% intervals)",
            [
                ("click-through rate", lambda r: r.search.click_through_rate),
                ("zero-result rate", lambda r: r.search.zero_result_rate),
                ("MRR of the first click", _mrr),
            ],
        ),
    ]


def _mrr(report: BusinessReport) -> Interval | None:
    value = report.search.mean_reciprocal_rank
    return None if value is None else Interval(value, value, value)


def _figure(
    series: Sequence[BusinessReport], path: Path, title: str, lines: list[tuple[str, Pick]]
) -> Path:
    figure, axis = plt.subplots(figsize=(10, 4.5))
    for label, pick in lines:
        _line(axis, series, label, pick)
    axis.set_title(title)
    axis.set_ylim(-0.02, 1.02)
    axis.set_ylabel("share")
    axis.set_xlabel("time (UTC)")
    axis.grid(alpha=0.3)
    axis.legend(loc="lower left")
    figure.autofmt_xdate()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _line(axis: Axes, series: Sequence[BusinessReport], label: str, pick: Pick) -> None:
    points = [(r.as_of, pick(r)) for r in series]
    known = [(t, v) for t, v in points if t is not None and v is not None]
    if not known:
        return
    times = np.asarray([t for t, _ in known])  # matplotlib's date units read datetimes
    (drawn,) = axis.plot(times, [v.estimate for _, v in known], marker="o", ms=3, label=label)
    axis.fill_between(
        times,
        [v.low for _, v in known],
        [v.high for _, v in known],
        alpha=0.15,
        color=drawn.get_color(),
    )
