"""One shift, one retrain request: a cooldown between requests.

A distribution that moved stays moved, so every window after the shift is drifted too.
Without a cooldown each of them would ask for retraining; with one, the first does and the
rest are reported (drift reports and alerts still flow) without a new request until the
cooldown has passed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Cooldown:
    """Allows an action at most once per ``period_s``."""

    period_s: float
    clock: Callable[[], float] = time.time
    last_at: float | None = field(default=None)

    def ready(self) -> bool:
        """Tell whether the action may happen now."""
        return self.last_at is None or self.clock() - self.last_at >= self.period_s

    def mark(self) -> None:
        """Record that the action happened now."""
        self.last_at = self.clock()
