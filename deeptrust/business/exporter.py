"""The business metrics as Prometheus gauges, refreshed from the topics on an interval.

Gauges, not counters: every value is an estimate recomputed from the whole record, and it
may go down. An estimate that is undefined (no reviews yet) is exported as NaN, so a
dashboard shows a gap rather than a misleading zero. The registry is the exporter's own.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Gauge, start_http_server

from deeptrust.business.estimators import Interval
from deeptrust.business.report import BusinessReport

log = logging.getLogger(__name__)

_BOUNDS = ("estimate", "low", "high")


class BusinessGauges:
    """One gauge per metric; interval metrics carry a ``bound`` label."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry

        def bounded(name: str, doc: str) -> Gauge:
            return Gauge(f"deeptrust_business_{name}", doc, ["bound"], registry=r)

        def plain(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(f"deeptrust_business_{name}", doc, list(labels), registry=r)

        self._precision = bounded("flag_precision", "Flagged images moderators confirmed AI.")
        self._recall = bounded("recall", "AI images the detector flagged (estimated).")
        self._miss_rate = bounded("miss_rate", "AI images the detector missed: 1 - recall.")
        self._unflagged = bounded("unflagged_ai_share", "AI share of unflagged images.")
        self._missed = bounded("missed_images", "Missed AI images, Horvitz-Thompson total.")
        self._lanes = plain("lane_images", "Images per review lane.", ("lane", "state"))
        self._pairs = plain("reviewer_pairs", "Images decided by two reviewers.")
        self._agreement = plain("reviewer_agreement", "Share of pairs that agreed.")
        self._kappa = plain("reviewer_kappa", "Cohen's kappa of the pairs.")
        self._impressions = plain("search_impressions", "Search result pages shown.")
        self._ctr = bounded("search_click_through_rate", "Pages with results clicked.")
        self._zero = bounded("search_zero_result_rate", "Pages with no results.")
        self._mrr = plain("search_mean_reciprocal_rank", "Mean 1/rank of the first click.")
        self._refreshed = plain("report_timestamp_seconds", "When the report was last computed.")
        self._skipped = plain(
            "skipped_records", "Records left out as not decodable, by topic.", ("topic",)
        )

    def update(self, report: BusinessReport) -> None:
        """Set every gauge from ``report``."""
        for gauge, interval in (
            (self._precision, report.precision),
            (self._recall, report.recall),
            (self._miss_rate, report.miss_rate),
            (self._unflagged, report.unflagged_ai_share),
            (self._missed, report.missed),
            (self._ctr, report.search.click_through_rate),
            (self._zero, report.search.zero_result_rate),
        ):
            _set_bounds(gauge, interval)
        for name, lane in (("flagged", report.flagged), ("sampled", report.sampled)):
            self._lanes.labels(name, "entered").set(lane.entered)
            self._lanes.labels(name, "reviewed").set(lane.reviewed)
            self._lanes.labels(name, "confirmed_ai").set(lane.confirmed_ai)
        agreement = report.agreement
        self._pairs.set(0 if agreement is None else agreement.pairs)
        self._agreement.set(_value(None if agreement is None else agreement.percent))
        self._kappa.set(_value(None if agreement is None else agreement.kappa))
        self._impressions.set(report.search.impressions)
        self._mrr.set(_value(report.search.mean_reciprocal_rank))
        for topic, count in report.skipped.items():
            self._skipped.labels(topic).set(count)
        self._refreshed.set(time.time())


def serve(
    compute: Callable[[], BusinessReport],
    port: int,
    interval_s: float,
    stop: threading.Event,
    initial: BusinessReport | None = None,
) -> None:
    """Serve ``/metrics`` on ``port`` and recompute the report every ``interval_s`` until ``stop``.

    ``initial``, a report just computed, is served first and the first refresh waits.
    A refresh that fails (the broker away) keeps the last values and is tried again next
    interval; ``deeptrust_business_report_timestamp_seconds`` tells how old they are.
    """
    gauges = BusinessGauges()
    server, thread = start_http_server(port, registry=gauges.registry)
    try:
        if initial is not None:
            gauges.update(initial)
            stop.wait(interval_s)
        while not stop.is_set():
            try:
                report = compute()
            except Exception:  # keep serving the last values; log and retry next interval
                log.exception("the business report could not be refreshed")
            else:
                gauges.update(report)
            stop.wait(interval_s)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _set_bounds(gauge: Gauge, interval: Interval | None) -> None:
    values = (
        (None, None, None) if interval is None else (interval.estimate, interval.low, interval.high)
    )
    for bound, value in zip(_BOUNDS, values, strict=True):
        gauge.labels(bound).set(_value(value))


def _value(value: float | None) -> float:
    return math.nan if value is None else value
