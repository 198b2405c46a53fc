"""When a failed webhook attempt is worth repeating, and how long to wait first.

Trouble on the receiver's side or on the way there (no response, a timeout, 5xx, 408, 429)
is retried with exponential backoff, at most ``max_attempts`` tries in all, so one alert's
delivery takes a bounded time. Any other answer (a 4xx, a redirect) says the request itself
is wrong for that receiver; repeating it would only repeat the answer, so it is not retried.
A 429 or 503's ``Retry-After`` (in seconds) is honoured up to ``max_backoff_s``.

The notifier does not poll Kafka while it delivers an alert, so one alert's delivery must
end well inside the consumer's ``max.poll.interval.ms`` (:data:`MAX_POLL_INTERVAL_S`), or
the group evicts the notifier, the commit fails and the restarted process starts on the
same alert again, forever. :meth:`RetryPolicy.worst_case_s` is that delivery's longest
possible time; the subscriptions file is refused when it exceeds :data:`DELIVERY_BUDGET_S`.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from deeptrust.streams.retry import RetryPolicy as Backoff

RETRIED_CLIENT_ERRORS = frozenset({408, 429})

MAX_POLL_INTERVAL_S = 900
"""The notifier consumer's ``max.poll.interval.ms``, in seconds."""
DELIVERY_BUDGET_S = MAX_POLL_INTERVAL_S / 2
"""The longest one alert's delivery may take, at worst, to any subscription. The other half
of the poll interval is for committing it (the transaction has its own timeouts and
retries) and for the machine being slow."""
TIMED_PHASES = 3
"""``timeout_s`` bounds each of an attempt's connect, send and read, so an attempt can last
up to three times as long."""


@dataclass(frozen=True)
class AttemptResult:
    """One HTTP attempt: the status (``None`` when no response came) and what went wrong."""

    status: int | None
    error: str = ""
    retry_after_s: float | None = None
    final: bool = False
    """A failure no retry can fix (an unusable URL, a bug): never retried."""

    @property
    def delivered(self) -> bool:
        """A 2xx answer: the receiver has the alert."""
        return self.status is not None and 200 <= self.status < 300

    @property
    def retriable(self) -> bool:
        """Whether the failure may go away by itself (never true of a delivered attempt)."""
        if self.final:
            return False
        if self.status is None:
            return True
        return self.status in RETRIED_CLIENT_ERRORS or 500 <= self.status <= 599


class RetryPolicy(BaseModel):
    """Attempts and backoff for every subscription (the ``[retry]`` table of the file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int = Field(default=5, ge=1, le=20, description="Tries per alert, in all.")
    initial_backoff_s: float = Field(default=1.0, ge=0, le=60, description="First wait.")
    max_backoff_s: float = Field(default=30.0, ge=0, le=600, description="Longest wait.")

    def backoff_s(self, attempt: int, retry_after_s: float | None = None) -> float:
        """The wait after failed attempt number ``attempt`` (1-based): doubling, capped."""
        delay = self.policy().delay_s(attempt)
        if retry_after_s is not None:
            delay = min(self.max_backoff_s, max(delay, retry_after_s))
        return delay

    def policy(self) -> Backoff:
        """These settings as the project's one retry policy."""
        return Backoff(self.initial_backoff_s, self.max_backoff_s, self.max_attempts)

    def worst_case_s(self, timeout_s: float) -> float:
        """The longest delivering one alert to a subscription with ``timeout_s`` can take.

        Every attempt uses its connect, send and read timeouts in full, and every wait is
        ``max_backoff_s`` (a ``Retry-After`` can lengthen any wait up to that).
        """
        attempts = self.max_attempts * TIMED_PHASES * timeout_s
        return attempts + (self.max_attempts - 1) * self.max_backoff_s

    def next_delay(self, attempt: int, result: AttemptResult) -> float | None:
        """Seconds to wait before trying again after ``result``, or ``None`` to stop."""
        if result.delivered or not result.retriable or attempt >= self.max_attempts:
            return None
        return self.backoff_s(attempt, result.retry_after_s)


def parse_retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` header in seconds; the HTTP-date form is ignored (plain backoff)."""
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())
