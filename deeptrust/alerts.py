"""Choosing and showing alerts: the filter a subscriber gives, and one line per alert.

Subscribers pick alerts by kind (``drift``, ``drift-reference``, ...) and by a minimum
severity (``info`` < ``warning`` < ``critical``); ``deeptrust alerts tail`` is the
terminal subscriber.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from deeptrust.schemas.events import AlertEvent

SEVERITIES = ("info", "warning", "critical")


@dataclass(frozen=True)
class AlertFilter:
    """Alerts of these kinds (all when empty) at or above ``min_severity``."""

    kinds: Collection[str] = ()
    min_severity: str = "info"

    def __post_init__(self) -> None:
        if self.min_severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}")

    def matches(self, alert: AlertEvent) -> bool:
        """Tell whether a subscriber with this filter wants ``alert``."""
        wanted_kind = not self.kinds or alert.kind in self.kinds
        rank = SEVERITIES.index
        return wanted_kind and rank(alert.severity) >= rank(self.min_severity)


def one_line(alert: AlertEvent) -> str:
    """The alert as a terminal line: time, severity, kind, subject, summary."""
    raised = alert.raised_at.isoformat(timespec="seconds")
    return f"{raised} {alert.severity.upper():8} {alert.kind} {alert.subject}: {alert.summary}"
