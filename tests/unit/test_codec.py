import pytest

from deeptrust.schemas.events import DetectedEvent, UploadEvent
from deeptrust.streams.codec import (
    EVENT_ID,
    SCHEMA,
    SCHEMA_VERSION,
    TRACE_ID,
    decode,
    encode,
    headers_dict,
)
from deeptrust.streams.errors import InvalidInput, Reason
from tests.events import upload_event


def test_round_trip_keeps_event_key_and_headers():
    encoded = encode(upload_event(), key="img-1", trace_id="t-1")
    headers = headers_dict(encoded.headers)
    assert encoded.key == b"img-1"
    assert headers[SCHEMA] == "upload"
    assert headers[SCHEMA_VERSION] == "1"
    assert headers[EVENT_ID] == "e-1"
    assert headers[TRACE_ID] == "t-1"
    assert decode(encoded.value, encoded.headers, UploadEvent) == upload_event()


def test_wrong_schema_header_is_rejected():
    encoded = encode(upload_event(), key="img-1")
    with pytest.raises(InvalidInput) as caught:
        decode(encoded.value, encoded.headers, DetectedEvent)
    assert caught.value.reason is Reason.WRONG_SCHEMA


def test_non_json_value_is_rejected():
    encoded = encode(upload_event(), key="img-1")
    with pytest.raises(InvalidInput) as caught:
        decode(b"\xff\x00 not json", encoded.headers, UploadEvent)
    assert caught.value.reason is Reason.UNDECODABLE_MESSAGE


def test_missing_field_is_a_schema_violation_naming_the_field():
    encoded = encode(upload_event(), key="img-1")
    with pytest.raises(InvalidInput) as caught:
        decode(b'{"event_id": "e", "image_id": "i"}', encoded.headers, UploadEvent)
    assert caught.value.reason is Reason.SCHEMA_VIOLATION
    assert "uri" in caught.value.detail


def test_unknown_fields_from_a_newer_revision_are_ignored():
    encoded = encode(upload_event(), key="img-1")
    newer = encoded.value[:-1] + b', "added_later": 1}'
    assert decode(newer, encoded.headers, UploadEvent).image_id == "img-1"
