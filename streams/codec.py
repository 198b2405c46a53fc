"""Encode events into Kafka messages and decode them back, with the design's headers.

Every message carries ``schema`` (name), ``schema-version``, ``event-id``, ``trace-id`` and
``produced-at`` headers, and is keyed by the image id. Decoding checks the headers and the
body against the expected event type and raises :class:`InvalidInput` otherwise.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from deeptrust.streams.errors import InvalidInput, Reason

Headers = list[tuple[str, str | bytes | None]]
MessageHeaders = dict[str, str | bytes | None] | Headers | None
"""Headers as confluent-kafka hands them over."""
E = TypeVar("E", bound=BaseModel)

SCHEMA = "schema"
SCHEMA_VERSION = "schema-version"
EVENT_ID = "event-id"
TRACE_ID = "trace-id"
PRODUCED_AT = "produced-at"


@dataclass(frozen=True)
class Encoded:
    """A message ready for ``Producer.produce``."""

    key: bytes
    value: bytes
    headers: Headers


def encode(event: BaseModel, key: str, trace_id: str | None = None) -> Encoded:
    """Serialise ``event`` with its headers; a new trace starts when none is given."""
    event_id = str(getattr(event, "event_id", None) or uuid.uuid4())
    headers = {
        SCHEMA: event.schema_name,  # type: ignore[attr-defined]
        SCHEMA_VERSION: str(event.schema_version),  # type: ignore[attr-defined]
        EVENT_ID: event_id,
        TRACE_ID: trace_id or uuid.uuid4().hex,
        PRODUCED_AT: datetime.now(UTC).isoformat(),
    }
    return Encoded(
        key=key.encode(),
        value=event.model_dump_json().encode(),
        headers=[(name, value.encode()) for name, value in headers.items()],
    )


def headers_dict(headers: MessageHeaders) -> dict[str, str]:
    """Return message headers as text, replacing bytes that are not UTF-8."""
    pairs = headers.items() if isinstance(headers, dict) else headers or []
    return {
        name: value.decode("utf-8", "replace") if isinstance(value, bytes) else value or ""
        for name, value in pairs
    }


def decode(value: bytes | None, headers: MessageHeaders, model: type[E]) -> E:
    """Parse a message into ``model``, or raise :class:`InvalidInput` saying why not."""
    found = headers_dict(headers)
    expected = (model.schema_name, str(model.schema_version))  # type: ignore[attr-defined]
    actual = (found.get(SCHEMA), found.get(SCHEMA_VERSION))
    if actual != expected:
        raise InvalidInput(
            Reason.WRONG_SCHEMA,
            f"expected schema {expected[0]} v{expected[1]}, headers say {actual[0]} v{actual[1]}",
        )
    if not value:
        raise InvalidInput(Reason.UNDECODABLE_MESSAGE, "empty message value")
    try:
        return model.model_validate_json(value)
    except ValidationError as error:
        if any(item["type"] == "json_invalid" for item in error.errors()):
            raise InvalidInput(Reason.UNDECODABLE_MESSAGE, "value is not JSON") from error
        fields = ", ".join(
            ".".join(map(str, item["loc"])) or item["msg"] for item in error.errors()[:5]
        )
        raise InvalidInput(Reason.SCHEMA_VIOLATION, f"invalid fields: {fields}") from error
