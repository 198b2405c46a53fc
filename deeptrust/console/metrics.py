"""The console's Prometheus metrics, in a registry of its own (never the global one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class ConsoleMetrics:
    """Decisions, refusals, search interactions and skipped topic messages."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.decisions = Counter(
            "deeptrust_console_decisions",
            "Decisions recorded, by lane and label (a repeated decision is not counted).",
            ["lane", "label"],
            registry=r,
        )
        self.refused = Counter(
            "deeptrust_console_refused_requests",
            "Requests refused, by reason (csrf, sign_in, lease_lost).",
            ["reason"],
            registry=r,
        )
        self.interactions = Counter(
            "deeptrust_console_search_interactions",
            "Search impressions and clicks sent to search-interactions.v1.",
            ["kind"],
            registry=r,
        )
        self.skipped = Counter(
            "deeptrust_console_skipped_messages",
            "Messages of moderation.v1 or feedback.v1 that did not decode, by reason.",
            ["topic", "reason"],
            registry=r,
        )
