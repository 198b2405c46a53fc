"""Which dead letters a redrive selects and refuses, and the message it sends back."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

from deeptrust.dlq_cli import aligned, describe, totals
from deeptrust.drift.service import NAME as DRIFT_NAME
from deeptrust.processors.caption import CaptionStage
from deeptrust.processors.detect import DetectStage
from deeptrust.processors.moderation import ModerationRouter
from deeptrust.processors.search_sink import SearchSink
from deeptrust.processors.tag import TagStage
from deeptrust.schemas.events import DeadLetterEvent, DeadLetterRedrive
from deeptrust.streams.codec import Encoded, decode
from deeptrust.streams.redrive import (
    REDRIVE_HEADER,
    STAGE_INPUTS,
    Letter,
    LetterFilter,
    Verdict,
    original_message,
    plan,
    redrive_record,
    select,
)
from deeptrust.streams.topics import Topic, TopicNames
from deeptrust.webhooks.service import NAME as WEBHOOKS_NAME

NAMES = TopicNames("p.")
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def letter(
    letter_id: str = "dl-1",
    stage: str = "detect",
    reason: str = "missing_object",
    failed_at: datetime = T0,
    source_topic: str = "p.uploads.v1",
    key: str | None = "img-1",
    value: bytes = b'{"event_id": "e-1"}',
    headers: dict[str, str] | None = None,
) -> Letter:
    event = DeadLetterEvent(
        stage=stage,
        reason=reason,
        detail="object not found",
        source_topic=source_topic,
        source_partition=2,
        source_offset=17,
        original_key=key,
        original_value_b64=base64.b64encode(value).decode(),
        original_headers={"event-id": "e-1", "trace-id": "t-1"} if headers is None else headers,
        failed_at=failed_at,
    )
    return Letter(id=letter_id, event=event, headers={"event-id": letter_id})


def ids(letters: list[Letter]) -> list[str]:
    return [one.id for one in letters]


def test_every_criterion_must_hold():
    letters = [
        letter("a", stage="detect", reason="missing_object"),
        letter("b", stage="caption", reason="missing_object", source_topic="p.detected.v1"),
        letter("c", stage="detect", reason="undecodable_image"),
    ]
    assert ids(select(letters, LetterFilter())) == ["a", "b", "c"]
    assert ids(select(letters, LetterFilter(stages=frozenset({"detect"})))) == ["a", "c"]
    assert ids(select(letters, LetterFilter(reasons=frozenset({"missing_object"})))) == ["a", "b"]
    both = LetterFilter(stages=frozenset({"detect"}), reasons=frozenset({"missing_object"}))
    assert ids(select(letters, both)) == ["a"]
    assert ids(select(letters, LetterFilter(ids=frozenset({"b", "c"})))) == ["b", "c"]
    many = LetterFilter(reasons=frozenset({"missing_object", "undecodable_image"}))
    assert ids(select(letters, many)) == ["a", "b", "c"]


def test_time_bounds_are_half_open_on_the_failure_time():
    letters = [
        letter(f"at{minutes}", failed_at=T0 + timedelta(minutes=minutes)) for minutes in (0, 5, 10)
    ]
    window = LetterFilter(since=T0 + timedelta(minutes=5), until=T0 + timedelta(minutes=10))
    assert ids(select(letters, window)) == ["at5"]
    assert ids(select(letters, LetterFilter(until=T0 + timedelta(minutes=5)))) == ["at0"]


def test_the_read_starts_at_since_in_epoch_milliseconds():
    assert LetterFilter(since=datetime(2026, 1, 1, tzinfo=UTC)).since_ms == 1_767_225_600_000
    assert LetterFilter().since_ms is None


def test_selected_letters_come_oldest_first_and_once():
    late, early = letter("late", failed_at=T0 + timedelta(seconds=1)), letter("early")
    assert ids(select([late, early, late], LetterFilter())) == ["early", "late"]


def test_plan_skips_the_redriven_and_refuses_what_has_nowhere_to_go():
    letters = [
        letter("done"),
        letter("unknown", stage="resize"),
        letter("elsewhere", source_topic="other.uploads.v1"),
        letter("not-input", stage="caption", source_topic="p.uploads.v1"),
        letter(letter_id=""),
        letter("fresh"),
    ]
    decisions = plan(letters, {"done"}, NAMES)
    verdicts = {d.letter.id: d.verdict for d in decisions}
    assert verdicts == {
        "done": Verdict.ALREADY_REDRIVEN,
        "unknown": Verdict.REFUSED,
        "elsewhere": Verdict.REFUSED,
        "not-input": Verdict.REFUSED,
        "": Verdict.REFUSED,
        "fresh": Verdict.REDRIVE,
    }
    why = {d.letter.id: d.why for d in decisions}
    assert "unknown stage 'resize'" in why["unknown"]
    assert "'other.uploads.v1' is not detect's input 'p.uploads.v1'" in why["elsewhere"]
    assert "'p.uploads.v1' is not caption's input 'p.detected.v1'" in why["not-input"]
    assert "event-id" in why[""]


def test_limit_counts_only_letters_that_go_back():
    letters = [letter("done"), letter("x"), letter("y"), letter("z")]
    decisions = plan(letters, {"done"}, NAMES, limit=2)
    assert [(d.letter.id, d.verdict) for d in decisions] == [
        ("done", Verdict.ALREADY_REDRIVEN),
        ("x", Verdict.REDRIVE),
        ("y", Verdict.REDRIVE),
    ]


def test_the_original_message_goes_back_byte_for_byte_to_its_partition():
    value = b"\x89PNG\r\n\x1a\n\xff"
    out = original_message(letter("dl-9", value=value))
    assert (out.topic, out.partition, out.key, out.value) == ("p.uploads.v1", 2, b"img-1", value)
    assert out.headers == [
        ("event-id", b"e-1"),
        ("trace-id", b"t-1"),
        (REDRIVE_HEADER, b"dl-9"),
    ]


def test_a_letter_redriven_again_carries_only_its_own_mark():
    again = letter("dl-2", headers={"event-id": "e-1", REDRIVE_HEADER: "dl-1"})
    assert original_message(again).headers == [("event-id", b"e-1"), (REDRIVE_HEADER, b"dl-2")]


def test_a_keyless_message_goes_back_keyless():
    assert original_message(letter(key=None)).key is None


def test_the_mark_is_keyed_by_the_letter_and_names_the_event():
    mark = redrive_record(letter("dl-3"), T0)
    assert mark.key == b"dl-3"
    record = decode(mark.value, mark.headers, DeadLetterRedrive)
    assert (record.dead_letter_id, record.original_event_id, record.redriven_at) == (
        "dl-3",
        "e-1",
        T0,
    )
    assert (record.source_topic, record.source_partition, record.source_offset) == (
        "p.uploads.v1",
        2,
        17,
    )


def test_every_service_that_dead_letters_is_known_with_the_topic_it_reads():
    stages = (DetectStage, CaptionStage, TagStage, ModerationRouter, SearchSink)
    services = {
        DRIFT_NAME: Topic.EMBEDDINGS,
        "retrain": Topic.RETRAIN,  # deeptrust.training.service.consumer.NAME, behind mlflow
        WEBHOOKS_NAME: Topic.ALERTS,
    }
    assert dict(STAGE_INPUTS) == {s.name: s.input_topic for s in stages} | services


def test_show_decodes_the_original_event_when_it_is_json():
    shown = describe(letter("dl-4", value=b'{"event_id": "e-1", "image_id": "img-1"}'), None)
    assert shown[0] == "dead letter  dl-4"
    assert "redriven     no" in shown
    assert '    "image_id": "img-1"' in shown, "indented below its title"
    assert "  trace-id: t-1" in shown, "the original headers"


def test_show_gives_the_size_and_first_bytes_of_a_value_that_is_not_json():
    value = b"\x89PNG" + bytes(100)
    shown = describe(letter(value=value), None)
    assert shown[-1] == f"  104 bytes, not JSON: {value[:64]!r}…"


def test_show_says_when_a_letter_was_redriven():
    mark = decode_mark(redrive_record(letter("dl-5"), T0))
    assert "redriven     yes, at 2026-03-01T12:00:00+00:00" in describe(letter("dl-5"), mark)


def test_totals_count_each_outcome():
    decisions = plan([letter("done"), letter("x"), letter("odd", stage="resize")], {"done"}, NAMES)
    assert totals(decisions, dry_run=False) == (
        "redriven 1, skipped 1 (already redriven), refused 1"
    )
    assert totals(decisions, dry_run=True).startswith("would redrive 1, skipped 1")


def test_the_table_aligns_its_columns():
    assert aligned([("ID", "STAGE"), ("dl-10", "detect")]) == ["ID     STAGE", "dl-10  detect"]


def decode_mark(mark: Encoded) -> DeadLetterRedrive:
    return decode(mark.value, mark.headers, DeadLetterRedrive)
