from datetime import UTC, datetime

import pytest

from deeptrust.alerts import AlertFilter, one_line
from deeptrust.schemas.events import AlertEvent


def alert(kind="drift", severity="warning"):
    return AlertEvent(
        event_id="a1",
        kind=kind,
        severity=severity,
        subject="mobilenet-v2@1",
        summary="embedding drift",
        raised_at=datetime(2026, 1, 1, 12, 0, tzinfo=UTC),
        source="drift",
    )


def test_filter_by_minimum_severity():
    warning_and_up = AlertFilter(min_severity="warning")
    assert not warning_and_up.matches(alert(severity="info"))
    assert warning_and_up.matches(alert(severity="warning"))
    assert warning_and_up.matches(alert(severity="critical"))


def test_filter_by_kind():
    drift_only = AlertFilter(kinds={"drift"})
    assert drift_only.matches(alert(kind="drift"))
    assert not drift_only.matches(alert(kind="drift-reference"))
    assert AlertFilter().matches(alert(kind="anything", severity="info"))


def test_unknown_severity_is_refused():
    with pytest.raises(ValueError, match="severity"):
        AlertFilter(min_severity="urgent")


def test_one_line():
    assert one_line(alert()) == (
        "2026-01-01T12:00:00+00:00 WARNING  drift mobilenet-v2@1: embedding drift"
    )
