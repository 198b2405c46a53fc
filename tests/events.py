"""Events for tests, with every required field filled in."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from deeptrust.schemas.events import (
    AlertEvent,
    DriftVerdict,
    DriftWindow,
    ModelUpdateEvent,
    RetrainRequestEvent,
    UploadEvent,
)


def upload_event(**overrides: object) -> UploadEvent:
    fields: dict[str, object] = dict(
        event_id="e-1",
        image_id="img-1",
        uri="file:///tmp/x.jpg",
        content_type="image/jpeg",
        size_bytes=10,
        sha256="a" * 64,
        uploaded_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    return UploadEvent.model_validate(fields | overrides)


def pointing_at(uri: str, image_id: str) -> UploadEvent:
    """An upload event for ``uri``, which a test may leave empty, corrupt or missing."""
    return upload_event(
        event_id=str(uuid.uuid4()),
        image_id=image_id,
        uri=uri,
        size_bytes=1,
        sha256="0" * 64,
        uploaded_at=datetime.now(UTC),
    )


def model_update(uri: str, sha256: str, **overrides: Any) -> ModelUpdateEvent:
    """A production update of the followed detector, as the training service announces one."""
    fields: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "model": "deeptrust-detector",
        "version": "2",
        "alias": "production",
        "task": "detect",
        "backend": "mobilenet-blocks",
        "artifact_uri": uri,
        "artifact_sha256": sha256,
        "run_id": "run-test",
        "updated_at": datetime.now(UTC),
    }
    return ModelUpdateEvent.model_validate(fields | overrides)


def retrain_request(event_id: str | None = None) -> RetrainRequestEvent:
    """A retrain request as the drift processor words one: one window, one drift verdict."""
    now = datetime.now(UTC)
    return RetrainRequestEvent(
        event_id=event_id or str(uuid.uuid4()),
        model="mobilenet-v2",
        model_version="1",
        requested_at=now,
        reference_digest="0" * 16,
        window=DriftWindow(index=3, opened_at=now, closed_at=now, size=200, closed_by="count"),
        verdicts=[
            DriftVerdict(
                detector="kl-histogram",
                statistic=2.5,
                threshold=1.0,
                p_value=0.001,
                is_drift=True,
                false_alarm_rate=0.01,
            )
        ],
        drift_report_id=str(uuid.uuid4()),
    )


def alert_event(**overrides: Any) -> AlertEvent:
    """A drift warning about one model version."""
    fields: dict[str, Any] = {
        "event_id": "a-1",
        "kind": "drift",
        "severity": "warning",
        "subject": "mobilenet-v2@1",
        "summary": "embeddings drifted",
        "raised_at": datetime(2026, 1, 1, tzinfo=UTC),
        "source": "drift",
    }
    return AlertEvent.model_validate(fields | overrides)
