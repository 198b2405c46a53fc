"""The one retry policy: capped exponential backoff, with or without a last attempt.

Every retry in the project waits by one of these, configured for its use: a failed batch
(half a second, doubling, capped at a minute, forever for trouble that hits every item), a
service reconnecting after its clients were lost, a webhook delivery (bounded attempts), a
model artefact not yet in the store (minutes between tries). Only the numbers differ.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """How long to wait after each failed attempt, and when to stop trying."""

    initial_s: float
    max_s: float
    max_attempts: int | None = None
    """Attempts in all, the first included; ``None`` retries for as long as it takes."""
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.initial_s < 0 or self.max_s < 0 or self.multiplier < 1:
            raise ValueError(f"not a backoff: {self}")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1: {self}")

    def delay_s(self, attempt: int) -> float:
        """The wait after failed attempt number ``attempt`` (1-based)."""
        if attempt < 1:
            raise ValueError(f"attempts count from 1, got {attempt}")
        # Capped before it can overflow: 2.0 ** 2000 is inf, not an error, but keep it exact.
        exponent = min(attempt - 1, 64)
        return min(self.max_s, self.initial_s * self.multiplier**exponent)

    def exhausted(self, attempt: int) -> bool:
        """Whether attempt number ``attempt`` was the last one allowed."""
        return self.max_attempts is not None and attempt >= self.max_attempts

    def worst_case_s(self) -> float:
        """The longest the waits between all attempts can add up to (bounded policies only)."""
        if self.max_attempts is None:
            return float("inf")
        return sum(self.delay_s(attempt) for attempt in range(1, self.max_attempts))
