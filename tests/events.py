"""Events for tests, with every required field filled in."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from schemas.events import ModelUpdateEvent, UploadEvent


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


def model_update(uri: str, sha256: str, **overrides: Any) -> ModelUpdateEvent:
    """A production update of the followed detector, as the training service announces one."""
    fields: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "model": "deeptrust-detector",
        "version": "2",
        "alias": "production",
        "task": "detect",
        "backend": "mobilenet-probe",
        "artifact_uri": uri,
        "artifact_sha256": sha256,
        "run_id": "run-test",
        "updated_at": datetime.now(UTC),
    }
    return ModelUpdateEvent.model_validate(fields | overrides)
