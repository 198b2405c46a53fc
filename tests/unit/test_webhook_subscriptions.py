"""The subscriptions file: what it accepts, and that what it refuses is named clearly."""

from datetime import UTC, datetime
from pathlib import Path

import pytest

from deeptrust.schemas.events import AlertEvent
from deeptrust.webhooks.retry import DELIVERY_BUDGET_S, MAX_POLL_INTERVAL_S, RetryPolicy
from deeptrust.webhooks.service import MAX_POLL_MS
from deeptrust.webhooks.subscriptions import (
    Subscription,
    SubscriptionError,
    load_subscriptions,
)

FULL = """
[retry]
max_attempts = 3
initial_backoff_s = 0.5
max_backoff_s = 4

[[subscription]]
name = "oncall"
url = "https://user:pw@hooks.example.com/deeptrust?token=abc"
kinds = ["drift"]
min_severity = "warning"
secret_env = "ONCALL_SECRET"
timeout_s = 3

[[subscription]]
name = "audit-log"
url = "http://audit.internal:8080/alerts"
secret_file = "audit-secret.txt"
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "audit-secret.txt").write_text("from-a-file\n")  # as a mounted Secret
    path = tmp_path / "subscriptions.toml"
    path.write_text(text)
    return path


def alert(kind: str, severity: str) -> AlertEvent:
    return AlertEvent(
        event_id="a-1",
        kind=kind,
        severity=severity,
        subject="mobilenet-v2@1",
        summary="s",
        raised_at=datetime(2026, 1, 1, tzinfo=UTC),
        source="test",
    )


def test_full_file_is_read_with_secrets_resolved(tmp_path):
    loaded = load_subscriptions(write(tmp_path, FULL), {"ONCALL_SECRET": "from-env"})
    assert loaded.retry == RetryPolicy(max_attempts=3, initial_backoff_s=0.5, max_backoff_s=4)
    oncall, audit = loaded.subscriptions
    assert (oncall.name, oncall.kinds, oncall.min_severity, oncall.timeout_s) == (
        "oncall",
        ("drift",),
        "warning",
        3,
    )
    assert oncall.signing_secret() == "from-env"
    assert audit.signing_secret() == "from-a-file"
    assert (audit.kinds, audit.min_severity, audit.timeout_s) == ((), "info", 10.0)
    assert "from-a-file" not in repr(audit), "secrets stay out of reprs and logs"
    assert "from-a-file" not in audit.model_dump_json(), "nor in what is serialised"


def test_display_url_drops_credentials_and_query(tmp_path):
    oncall, audit = load_subscriptions(write(tmp_path, FULL), {"ONCALL_SECRET": "x"}).subscriptions
    assert oncall.display_url == "https://hooks.example.com/deeptrust"
    assert audit.display_url == "http://audit.internal:8080/alerts"


def test_filters_match_like_alerts_tail(tmp_path):
    oncall, audit = load_subscriptions(write(tmp_path, FULL), {"ONCALL_SECRET": "x"}).subscriptions
    assert oncall.filter.matches(alert("drift", "warning"))
    assert oncall.filter.matches(alert("drift", "critical"))
    assert not oncall.filter.matches(alert("drift", "info"))
    assert not oncall.filter.matches(alert("drift-reference", "critical"))
    assert audit.filter.matches(alert("anything", "info")), "no kinds: every kind"


def test_retry_defaults_apply_without_a_retry_table(tmp_path):
    text = '[[subscription]]\nname = "a"\nurl = "http://localhost/x"\n'
    assert load_subscriptions(write(tmp_path, text), {}).retry == RetryPolicy()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "subscription: Field required"),
        ("subscription = []", "at least one [[subscription]] is needed"),
        ("[[subscription]\n", "not valid TOML"),
        (
            '[[subscription]]\nname = "pager"\nurl = "ftp://host/x"\n',
            "subscription 1 ('pager') url: Value error, must be an http:// or https:// URL",
        ),
        (
            '[[subscription]]\nname = "pager"\nurl = "http:///x"\n',
            "subscription 1 ('pager') url",
        ),
        (
            '[[subscription]]\nname = "pager"\nurl = "http://h/x"\nmin_severity = "high"\n',
            "subscription 1 ('pager') min_severity: Input should be 'info', 'warning' or",
        ),
        (
            '[[subscription]]\nname = "pager"\nurl = "http://h/x"\nkind = ["drift"]\n',
            "subscription 1 ('pager') kind: Extra inputs are not permitted",
        ),
        (
            '[[subscription]]\nname = "has space"\nurl = "http://h/x"\n',
            "subscription 1 ('has space') name: String should match pattern",
        ),
        (
            '[[subscription]]\nurl = "http://h/x"\n',
            "subscription 1 name: Field required",
        ),
        (
            '[[subscription]]\nname = "a"\nurl = "http://h/x"\ntimeout_s = 0\n',
            "subscription 1 ('a') timeout_s: Input should be greater than 0",
        ),
        (
            '[[subscription]]\nname = "a"\nurl = "http://h/x"\nkinds = [""]\n',
            "kinds must be non-empty strings",
        ),
        (
            '[[subscription]]\nname = "a"\nurl = "http://h/x"\nsecret = "s"\n',
            "inline secrets are not accepted",
        ),
        (
            '[[subscription]]\nname = "a"\nurl = "http://h/x"\n'
            'secret_file = "f"\nsecret_env = "S"\n',
            "give secret_env or secret_file, not both",
        ),
        (
            '[[subscription]]\nname = "a"\nurl = "http://h/x"\n'
            '[[subscription]]\nname = "a"\nurl = "http://h/y"\n',
            "subscription names must be unique: a",
        ),
        (
            '[retry]\nmax_attempts = 0\n[[subscription]]\nname = "a"\nurl = "http://h/x"\n',
            "retry.max_attempts: Input should be greater than or equal to 1",
        ),
        (
            '[[subscription]]\nname = "pager"\nurl = "http://host:abc/x"\n',
            "subscription 1 ('pager') url: Value error, not a usable URL: Port could not be cast",
        ),
        (
            '[[subscription]]\nname = "pager"\nurl = "http://host:99999/x"\n',
            "subscription 1 ('pager') url: Value error, not a usable URL: Port out of range",
        ),
        (
            '[[subscription]]\nname = "pager"\nurl = "http://host:0/x"\n',
            "subscription 1 ('pager') url: Value error, not a usable URL: port 0",
        ),
        (
            '[[subscription]]\nname = "pager"\nurl = "http://[::1/x"\n',
            "subscription 1 ('pager') url: Value error, not a usable URL: Invalid IPv6 URL",
        ),
        (
            "[retry]\nmax_attempts = 20\nmax_backoff_s = 600\n"
            '[[subscription]]\nname = "ok"\nurl = "http://h/x"\ntimeout_s = 1\n'
            '[[subscription]]\nname = "slow"\nurl = "http://h/y"\ntimeout_s = 60\n',
            "delivering one alert could take longer than 450s",
        ),
    ],
    ids=[
        "empty",
        "no-subscriptions",
        "not-toml",
        "scheme",
        "no-host",
        "severity",
        "typo-key",
        "bad-name",
        "no-name",
        "zero-timeout",
        "empty-kind",
        "inline-secret",
        "two-secret-sources",
        "duplicate-names",
        "no-attempts",
        "port-not-a-number",
        "port-out-of-range",
        "port-zero",
        "broken-ipv6-host",
        "over-the-poll-budget",
    ],
)
def test_invalid_files_are_refused_with_where_and_why(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(SubscriptionError) as refused:
        load_subscriptions(path, {})
    assert str(path) in str(refused.value)
    assert message in str(refused.value)


def test_every_problem_is_reported_at_once(tmp_path):
    text = (
        '[[subscription]]\nname = "a"\nurl = "gopher://h"\n'
        '[[subscription]]\nname = "b"\nurl = "http://h/x"\nmin_severity = "loud"\n'
    )
    with pytest.raises(SubscriptionError) as refused:
        load_subscriptions(write(tmp_path, text), {})
    assert "subscription 1 ('a') url" in str(refused.value)
    assert "subscription 2 ('b') min_severity" in str(refused.value)
    assert "at least one" not in str(refused.value), "only real problems are listed"


def test_unset_secret_variable_is_an_error_naming_it(tmp_path):
    with pytest.raises(SubscriptionError, match="'oncall': secret_env ONCALL_SECRET is not set"):
        load_subscriptions(write(tmp_path, FULL), {})


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(SubscriptionError, match="cannot read"):
        load_subscriptions(tmp_path / "absent.toml", {})


def test_a_url_that_passes_is_one_httpx_can_use(tmp_path):
    """What the validator accepts must not fail when a delivery builds the request."""
    import httpx

    (audit,) = load_subscriptions(
        write(tmp_path, '[[subscription]]\nname = "a"\nurl = "http://[::1]:8080/x?t=1"\n'), {}
    ).subscriptions
    assert httpx.URL(audit.url).port == 8080
    assert audit.display_url == "http://::1:8080/x"


def test_display_url_never_raises(tmp_path):
    """Logging and dead-lettering a failed delivery must not crash on the URL it failed on."""
    for url in ("http://host:99999/x", "http://host:abc/x", "http://[::1/x"):
        unchecked = Subscription.model_construct(name="a", url=url)
        assert unchecked.display_url == "(unusable URL)"


def test_the_budget_names_every_subscription_over_it(tmp_path):
    text = (
        "[retry]\nmax_attempts = 10\nmax_backoff_s = 30\n"
        '[[subscription]]\nname = "fast"\nurl = "http://h/x"\ntimeout_s = 2\n'
        '[[subscription]]\nname = "slow"\nurl = "http://h/y"\ntimeout_s = 20\n'
        '[[subscription]]\nname = "slower"\nurl = "http://h/z"\ntimeout_s = 30\n'
    )
    with pytest.raises(SubscriptionError) as refused:
        load_subscriptions(write(tmp_path, text), {})
    message = str(refused.value)
    # 10 attempts x 3 phases x timeout + 9 waits of 30 s
    assert "subscription slow (870s), slower (1170s)" in message
    assert "fast" not in message
    assert "lower timeout_s, retry.max_attempts or retry.max_backoff_s" in message


def test_the_budget_is_well_inside_the_consumer_poll_interval(tmp_path):
    assert MAX_POLL_MS == MAX_POLL_INTERVAL_S * 1000
    assert DELIVERY_BUDGET_S <= MAX_POLL_INTERVAL_S / 2
    # The documented defaults fit, and so does the worst case of every accepted file.
    loaded = load_subscriptions(write(tmp_path, FULL), {"ONCALL_SECRET": "x"})
    assert loaded.worst_case_s == 3 * 3 * 10 + 2 * 4  # audit-log: 10 s timeouts
    assert RetryPolicy().worst_case_s(10) == 270 <= DELIVERY_BUDGET_S
