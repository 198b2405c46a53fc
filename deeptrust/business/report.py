"""The business report: the estimators applied to one set of observations.

``build_report`` is pure; the CLI, the Prometheus exporter and the console page all show
the same :class:`BusinessReport`, the console through :func:`business_rows`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from deeptrust.business.estimators import (
    Agreement,
    Interval,
    Lane,
    SearchMetrics,
    agreement,
    miss_rate,
    recall,
    search_metrics,
)
from deeptrust.business.observations import (
    Observations,
    final_labels,
    impressions,
    lanes,
    reviewer_pairs,
)


@dataclass(frozen=True)
class BusinessReport:
    """The business metrics as of ``as_of`` (``None``: everything read)."""

    as_of: datetime | None
    sample_rate: float
    flagged: Lane
    sampled: Lane
    precision: Interval | None
    unflagged_ai_share: Interval | None
    missed: Interval | None
    recall: Interval | None
    miss_rate: Interval | None
    agreement: Agreement | None
    search: SearchMetrics
    unmatched_clicks: int
    detected: int | None
    """Distinct images on ``detected.v1``, or ``None`` when it was not read."""
    skipped: Mapping[str, int] = field(default_factory=dict)
    """Records left out because they did not decode, by topic."""

    @property
    def unflagged_seen(self) -> int | None:
        """Detected images that were not flagged: what ``sampled.population`` estimates."""
        return None if self.detected is None else self.detected - self.flagged.entered


def build_report(observations: Observations, as_of: datetime | None = None) -> BusinessReport:
    """Compute every business metric from ``observations`` (those known at ``as_of``)."""
    seen = observations if as_of is None else observations.until(as_of)
    lane_of = lanes(seen.routed)
    labels = final_labels(seen.decisions)
    flagged = _lane(lane_of, labels, "flagged", 1.0)
    sampled = _lane(lane_of, labels, "sampled", seen.sample_rate)
    pages, unmatched = impressions(seen.interactions)
    return BusinessReport(
        as_of=as_of,
        sample_rate=seen.sample_rate,
        flagged=flagged,
        sampled=sampled,
        precision=flagged.ai_share(),
        unflagged_ai_share=sampled.ai_share(),
        missed=sampled.ai_total(),
        recall=recall(flagged, sampled),
        miss_rate=miss_rate(flagged, sampled),
        agreement=agreement(reviewer_pairs(seen.decisions)),
        search=search_metrics(pages),
        unmatched_clicks=unmatched,
        detected=None if seen.detected is None else len({i for i, _ in seen.detected}),
        skipped=dict(seen.skipped),
    )


def timeline(observations: Observations, points: int = 12) -> list[BusinessReport]:
    """The report at ``points`` evenly spaced moments from the first event to the last."""
    times = observations.times()
    if not times:
        return []
    first, last = times[0], times[-1]
    if points < 2 or first == last:
        return [build_report(observations, last)]
    step = (last - first) / (points - 1)
    return [build_report(observations, first + step * i) for i in range(points)]


def _lane(
    lane_of: Mapping[str, str], labels: Mapping[str, str], lane: str, inclusion: float
) -> Lane:
    members = [image_id for image_id, routed in lane_of.items() if routed == lane]
    reviewed = [labels[i] for i in members if i in labels]
    return Lane(
        entered=len(members),
        reviewed=len(reviewed),
        confirmed_ai=sum(label == "ai_generated" for label in reviewed),
        inclusion=inclusion,
    )


def business_rows(report: BusinessReport) -> list[tuple[str, str]]:
    """(metric, value) rows for a table or a web page, numbers already formatted."""
    f, s, search = report.flagged, report.sampled, report.search
    rows = [
        ("flagged images (reviewed / entered)", f"{f.reviewed} / {f.entered}"),
        ("flag precision (Wilson 95%)", _percent(report.precision)),
        (
            f"sampled images at rate {report.sample_rate:g} (reviewed / entered)",
            f"{s.reviewed} / {s.entered}",
        ),
        ("unflagged images, estimated (sampled / rate)", f"{s.population:.0f}"),
    ]
    if report.unflagged_seen is not None:
        rows.append(("unflagged images seen on detected.v1 (check)", str(report.unflagged_seen)))
    rows += [
        ("AI share of unflagged images (Wilson 95%)", _percent(report.unflagged_ai_share)),
        ("missed AI images, Horvitz-Thompson (95%)", _count(report.missed)),
        ("recall (95%, Wilson box)", _percent(report.recall)),
        ("miss rate = 1 - recall (95%)", _percent(report.miss_rate)),
        ("reviewer agreement (pairs, percent, Cohen's kappa)", _agreement(report.agreement)),
        (
            "search impressions (clicks on no page)",
            f"{search.impressions} ({report.unmatched_clicks})",
        ),
        ("zero-result rate (Wilson 95%)", _percent(search.zero_result_rate)),
        ("click-through rate (Wilson 95%)", _percent(search.click_through_rate)),
        ("mean reciprocal rank of the first click", _number(search.mean_reciprocal_rank)),
    ]
    rows += [
        (f"records skipped on {topic} (not decodable)", str(n))
        for topic, n in sorted(report.skipped.items())
    ]
    return rows


def _percent(interval: Interval | None) -> str:
    if interval is None:
        return "n/a"
    return f"{interval.estimate:.1%} [{interval.low:.1%}, {interval.high:.1%}]"


def _count(interval: Interval | None) -> str:
    if interval is None:
        return "n/a"
    return f"{interval.estimate:.1f} [{interval.low:.1f}, {interval.high:.1f}]"


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _agreement(result: Agreement | None) -> str:
    if result is None:
        return "n/a"
    kappa = "n/a" if result.kappa is None else f"{result.kappa:.2f}"
    return f"{result.pairs}, {result.percent:.1%}, kappa {kappa}"
