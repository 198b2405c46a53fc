"""One shift, one retrain request: a cooldown between requests.

A distribution that moved stays moved, so every window after the shift is drifted too.
Without a cooldown each of them would ask for retraining; with one, the first does and the
rest are reported (drift reports and alerts still flow) without a new request until the
cooldown has passed. Times are passed in, in event time, so a replay decides the same way.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Cooldown:
    """Allows an action at most once per ``period_s``."""

    period_s: float
    last_at: float | None = None

    def ready(self, now: float) -> bool:
        """Tell whether the action may happen at ``now``."""
        return self.last_at is None or now - self.last_at >= self.period_s

    def mark(self, now: float) -> None:
        """Record that the action happened at ``now``."""
        self.last_at = now
