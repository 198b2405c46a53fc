"""Embeddings packed as base64 bytes: exact, compact, compatible with revision 1's list."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import jsonschema
import numpy as np
import pytest

from deeptrust.drift.monitor import DriftMonitor, Embedded
from deeptrust.drift.reference import ReferenceStore
from deeptrust.schemas.events import EmbeddingEvent
from deeptrust.schemas.files import RELEASED_DIR, load
from deeptrust.streams.codec import decode, encode
from deeptrust.streams.errors import InvalidInput, Reason
from deeptrust.streams.topics import Topic
from tests.unit.test_drift_monitor import Stream, of, settings, vectors

FIELDS = {
    "event_id": "e-1",
    "image_id": "img-1",
    "uploaded_at": datetime(2026, 12, 1, tzinfo=UTC),
    "model": "mobilenet-v2",
    "model_version": "1",
}
REVISION_1 = load(RELEASED_DIR / "embedding.v1.r1.schema.json")


def round_trip(event: EmbeddingEvent) -> EmbeddingEvent:
    message = encode(event, event.image_id)
    return decode(message.value, message.headers, EmbeddingEvent)


def test_float32_packs_little_endian_and_reads_back_exactly() -> None:
    event = EmbeddingEvent.packing([1.0, -2.5, 0.1], "float32", **FIELDS)
    assert event.packed is not None
    # 1.0, -2.5 and 0.1 as little-endian IEEE 754 single precision.
    assert event.packed.data == "AACAPwAAIMDNzMw9"
    assert event.vector == []
    read = round_trip(event)
    assert read.values().tolist() == [1.0, -2.5, float(np.float32(0.1))]
    assert read == event


def test_float16_halves_the_bytes_again_to_three_digits() -> None:
    event = EmbeddingEvent.packing([1.0, 0.333], "float16", **FIELDS)
    assert event.packed is not None
    assert event.packed.data == "ADxUNQ=="  # 0x3c00 (1.0) and 0x3554 (0.33301)
    assert round_trip(event).values() == pytest.approx([1.0, 0.333], abs=5e-4)


def test_the_list_encoding_is_what_revision_1_readers_accept() -> None:
    listed = EmbeddingEvent.packing(np.float32([0.5, 0.25]), "list", **FIELDS)
    packed = EmbeddingEvent.packing([0.5, 0.25], "float32", **FIELDS)

    jsonschema.validate(json.loads(listed.model_dump_json()), REVISION_1)
    with pytest.raises(jsonschema.ValidationError):  # why the writer keeps the list for them
        jsonschema.validate(json.loads(packed.model_dump_json()), REVISION_1)
    assert round_trip(listed).values().tolist() == [0.5, 0.25]


def test_a_revision_1_event_reads_as_before() -> None:
    body = {**FIELDS, "uploaded_at": "2026-12-01T00:00:00Z", "vector": [0.1, 0.2]}
    event = EmbeddingEvent.model_validate_json(json.dumps(body))
    assert event.values().tolist() == [0.1, 0.2], "float64 values kept as they were"


def test_packed_1280_floats_take_under_a_third_of_the_json_bytes() -> None:
    values = np.random.default_rng(0).normal(size=1280).astype(np.float32)
    listed = encode(EmbeddingEvent.packing(values, "list", **FIELDS), "img-1")
    packed = encode(EmbeddingEvent.packing(values, "float32", **FIELDS), "img-1")
    assert len(packed.value) * 3 < len(listed.value)


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ({}, "exactly one of vector and packed"),
        ({"vector": [1.0], "packed": {"dtype": "float32", "data": "AACAPw=="}}, "exactly one"),
        ({"packed": {"dtype": "float32", "data": "not base64!"}}, "not base64"),
        ({"packed": {"dtype": "float32", "data": "AAA="}}, "whole number of float32"),
        ({"packed": {"dtype": "float64", "data": "AACAPw=="}}, "packed.dtype"),
        ({"packed": {"dtype": "float32", "data": "AADAfw=="}}, "finite"),
    ],
    ids=["neither", "both", "not-base64", "ragged", "unknown-dtype", "nan"],
)
def test_a_bad_vector_is_a_schema_violation_saying_why(body: dict[str, object], why: str) -> None:
    event = EmbeddingEvent.packing([1.0], "list", **FIELDS)
    message = encode(event, event.image_id)
    value = json.loads(message.value) | body
    if "vector" not in body:
        value.pop("vector")
    with pytest.raises(InvalidInput) as raised:
        decode(json.dumps(value).encode(), message.headers, EmbeddingEvent)
    assert raised.value.reason is Reason.SCHEMA_VIOLATION
    assert why in str(raised.value)


class PackedStream(Stream):
    """The same feed, each embedding packed as float32."""

    def feed(self, rows):  # type: ignore[no-untyped-def]
        outputs = []
        for row in rows:
            event = EmbeddingEvent.packing(
                row,
                "float32",
                event_id=f"e{self.offset}",
                image_id=f"img-{self.offset}",
                uploaded_at=datetime.fromtimestamp(self.at, UTC),
                model=self.model,
                model_version=self.version,
            )
            outputs += self.monitor.add(Embedded(round_trip(event), self.at, 0, self.offset))
            self.offset += 1
            self.at += 1.0
        return outputs


def test_the_monitor_judges_packed_embeddings_as_it_judges_listed_ones(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rows = vectors(np.random.default_rng(3), 1600, shift=0.0).astype(np.float32)
    rows[1200:] += 1.5  # a shift the last window sees

    def reports(stream_type: type[Stream], home: str) -> list[tuple[int, bool, str]]:
        store = ReferenceStore(tmp_path / home)
        monitor = DriftMonitor(settings(tmp_path, reference_dir=tmp_path / home), store)
        found = of(stream_type(monitor).feed(rows), Topic.DRIFT)
        return [(r.window.index, r.is_drift, r.reference_digest) for r in found]

    listed, packed = reports(Stream, "listed"), reports(PackedStream, "packed")
    assert len(listed) == 3
    assert listed[-1][1], "the shifted window is drift"
    assert packed == listed
