"""Prometheus metrics of webhook delivery, beside the stage metrics in the same registry.

Outcomes are counted per subscription: ``delivered`` (a 2xx), ``retried`` (one failed
attempt that will be tried again) and ``dead_lettered`` (given up, sent to the DLQ). Every
series exists at zero from start-up so that ``rate()`` sees the first failure.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram

OUTCOMES = ("delivered", "retried", "dead_lettered")
_SECONDS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class WebhookMetrics:
    """Deliveries by subscription and outcome, and the time each HTTP attempt took."""

    def __init__(self, registry: CollectorRegistry, subscriptions: Iterable[str]) -> None:
        self._deliveries = Counter(
            "deeptrust_webhook_deliveries",
            "Webhook delivery outcomes: delivered, retried (per failed attempt), dead_lettered.",
            ["subscription", "outcome"],
            registry=registry,
        )
        self._seconds = Histogram(
            "deeptrust_webhook_request_seconds",
            "Seconds per webhook HTTP attempt, answered or not.",
            ["subscription"],
            buckets=_SECONDS_BUCKETS,
            registry=registry,
        )
        for name in subscriptions:
            self._seconds.labels(name)
            for outcome in OUTCOMES:
                self._deliveries.labels(name, outcome)

    def delivered(self, subscription: str) -> None:
        """Count an alert the receiver accepted."""
        self._deliveries.labels(subscription, "delivered").inc()

    def retried(self, subscription: str) -> None:
        """Count a failed attempt that will be repeated."""
        self._deliveries.labels(subscription, "retried").inc()

    def dead_lettered(self, subscription: str) -> None:
        """Count an alert given up on and committed to the dead-letter topic."""
        self._deliveries.labels(subscription, "dead_lettered").inc()

    def request(self, subscription: str, seconds: float) -> None:
        """Record how long one HTTP attempt took."""
        self._seconds.labels(subscription).observe(seconds)
