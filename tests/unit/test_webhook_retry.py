"""Which failed attempts are retried, after how long, and when delivery gives up."""

import pytest

from deeptrust.webhooks.retry import AttemptResult, RetryPolicy, parse_retry_after

POLICY = RetryPolicy(max_attempts=5, initial_backoff_s=1.0, max_backoff_s=6.0)


@pytest.mark.parametrize("status", [500, 502, 503, 504, 599, 408, 429, None])
def test_server_trouble_timeouts_and_throttling_are_retried(status):
    result = AttemptResult(status, "failed")
    assert result.retriable
    assert POLICY.next_delay(1, result) == 1.0


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 410, 413, 422, 301, 302, 304])
def test_client_errors_and_redirects_are_not_retried(status):
    result = AttemptResult(status, "refused")
    assert not result.retriable
    assert POLICY.next_delay(1, result) is None


@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_2xx_is_delivered_and_never_retried(status):
    result = AttemptResult(status)
    assert result.delivered
    assert POLICY.next_delay(1, result) is None


def test_backoff_doubles_up_to_the_cap():
    assert [POLICY.backoff_s(attempt) for attempt in range(1, 6)] == [1, 2, 4, 6, 6]


def test_attempts_are_bounded():
    failing = AttemptResult(503, "HTTP 503")
    delays = [POLICY.next_delay(attempt, failing) for attempt in range(1, 6)]
    assert delays == [1, 2, 4, 6, None], "five attempts in all, four waits"
    assert RetryPolicy(max_attempts=1).next_delay(1, failing) is None


def test_retry_after_lengthens_the_wait_but_never_past_the_cap():
    assert POLICY.next_delay(1, AttemptResult(429, "slow down", retry_after_s=3)) == 3
    assert POLICY.next_delay(1, AttemptResult(503, "busy", retry_after_s=3600)) == 6
    assert POLICY.next_delay(3, AttemptResult(429, "slow down", retry_after_s=1)) == 4


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        *[("5", 5.0), (" 12 ", 12.0), ("0", 0.0), (None, None), ("", None), ("-1", None)],
        *[("Wed, 21 Oct 2026 07:28:00 GMT", None), ("1.5", None)],
    ],
)
def test_retry_after_is_read_in_seconds_only(header, seconds):
    assert parse_retry_after(header) == seconds


def test_a_final_failure_is_never_retried():
    result = AttemptResult(None, "InvalidURL: Invalid port: 'abc'", final=True)
    assert not result.retriable
    assert POLICY.next_delay(1, result) is None


def test_worst_case_counts_every_phase_timeout_and_the_longest_waits():
    # 5 attempts x (connect + send + read) x 2 s, then 4 waits, each up to the cap (a
    # Retry-After can lengthen a doubling wait up to it)
    assert POLICY.worst_case_s(2.0) == 5 * 3 * 2.0 + 4 * 6.0
    assert RetryPolicy(max_attempts=1).worst_case_s(10) == 30
