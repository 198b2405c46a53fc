"""Events for tests, with every required field filled in."""

from __future__ import annotations

from datetime import UTC, datetime

from schemas.events import UploadEvent


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
