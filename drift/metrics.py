"""Prometheus metrics of the drift processor, beside the stage metrics in the same registry.

The statistic and its threshold are exported per model version and detector, so a
dashboard can plot one against the other and an alert rule can fire on their ratio.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from deeptrust.schemas.events import DriftReportEvent, RetrainRequestEvent


class DriftMetrics:
    """Counts windows and requests; remembers the latest statistic per detector."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["model", "detector"]
        self._statistic = Gauge(
            "deeptrust_drift_statistic", "Latest window's statistic.", labels, registry=registry
        )
        self._threshold = Gauge(
            "deeptrust_drift_threshold", "Latest window's threshold.", labels, registry=registry
        )
        self._windows = Counter(
            "deeptrust_drift_windows", "Windows judged.", ["model", "verdict"], registry=registry
        )
        self._requests = Counter(
            "deeptrust_retrain_requests", "Retrain requests emitted.", ["model"], registry=registry
        )

    def report(self, report: DriftReportEvent) -> None:
        """Record a committed drift report."""
        for verdict in report.verdicts:
            self._statistic.labels(report.key, verdict.detector).set(verdict.statistic)
            self._threshold.labels(report.key, verdict.detector).set(verdict.threshold)
        self._windows.labels(report.key, "drift" if report.is_drift else "stable").inc()

    def retrain_requested(self, request: RetrainRequestEvent) -> None:
        """Record a committed retrain request."""
        self._requests.labels(request.key).inc()
