"""An operator restores the objects detect could not find and redrives its letters, once.

Once even after a redrive that died mid-transaction, and however often it is run.
"""

from datetime import UTC, datetime

import pytest

from deeptrust.schemas.events import DeadLetterEvent, DeadLetterRedrive, DetectedEvent, UploadEvent
from deeptrust.streams.reader import read_to_end, read_until
from deeptrust.streams.redrive import REDRIVE_HEADER, LetterFilter, original_message, redrive_record
from deeptrust.streams.redrive_kafka import RedriveSettings, read_letters, redrive_producer
from deeptrust.streams.stage import derived_event_id
from deeptrust.streams.topics import Topic
from tests.conftest import run_cli, send_raw_upload
from tests.events import pointing_at
from tests.images import jpeg_bytes

pytestmark = pytest.mark.integration

IMAGES = 3


def test_redrive_replays_what_detect_rejected_once_its_cause_is_fixed(
    kafka, topics, store, raw_producer, start_stage
):
    start_stage("detect")
    keys = {f"later-{i}": f"images/later-{i}.jpg" for i in range(IMAGES)}
    sent = {
        image_id: pointing_at((store.root / key).as_uri(), image_id)
        for image_id, key in keys.items()
    }
    for event in sent.values():
        send_raw_upload(raw_producer, topics, event)

    dead = read_until(
        kafka, topics(Topic.DEAD_LETTERS), DeadLetterEvent, lambda r: len(r) >= IMAGES, 30
    )
    assert {d.event.original_key: d.event.reason for d in dead} == dict.fromkeys(
        sent, "missing_object"
    )
    letter_ids = {d.event.original_key: d.headers["event-id"] for d in dead}

    listed = run_cli(kafka, "dlq", "list", "--stage", "detect", "--reason", "missing_object")
    rows = {line.split()[0]: line.split() for line in listed.splitlines()[1:-1]}
    assert set(rows) == set(letter_ids.values())
    assert all(row[2:4] == ["detect", "missing_object"] and row[6] == "no" for row in rows.values())
    assert listed.splitlines()[-1] == f"{IMAGES} dead letters (detect missing_object: {IMAGES})"

    one = letter_ids["later-0"]
    shown = run_cli(kafka, "dlq", "show", one[:8])
    assert f"dead letter  {one}" in shown
    assert f'"event_id": "{sent["later-0"].event_id}"' in shown, "the original event, decoded"

    dry = run_cli(kafka, "dlq", "redrive", "--reason", "missing_object", "--dry-run")
    assert dry.splitlines()[-1] == (
        f"would redrive {IMAGES}, skipped 0 (already redriven), refused 0; "
        "dry run: nothing was sent"
    )
    assert len(read_to_end(kafka, topics(Topic.UPLOADS), UploadEvent, 10)) == IMAGES
    assert read_to_end(kafka, topics(Topic.REDRIVEN), DeadLetterRedrive, 10) == []

    for image_id, key in keys.items():
        assert store.put(key, jpeg_bytes()).uri == sent[image_id].uri

    # A redrive that died mid-transaction: its messages and marks are in the log, uncommitted.
    crashed = redrive_producer(kafka, RedriveSettings())
    crashed.begin_transaction()
    for letter in read_letters(kafka, LetterFilter(), 10):
        out = original_message(letter)
        crashed.produce(
            out.topic, value=out.value, key=out.key, headers=out.headers, partition=out.partition
        )
        mark = redrive_record(letter, datetime.now(UTC))
        crashed.produce(topics(Topic.REDRIVEN), mark.value, mark.key, headers=mark.headers)
    assert crashed.flush(10) == 0

    redriven = run_cli(kafka, "dlq", "redrive", "--stage", "detect")
    assert redriven.splitlines()[-1] == (
        f"redriven {IMAGES}, skipped 0 (already redriven), refused 0"
    ), "the crashed redrive's marks were aborted with its messages"
    del crashed  # fenced: nothing more to do with it

    detected = read_until(
        kafka,
        topics(Topic.DETECTED),
        DetectedEvent,
        lambda r: set(sent) <= {d.event.image_id for d in r},
        30,
    )
    assert {d.event.image_id: d.event.event_id for d in detected} == {
        image_id: derived_event_id(event.event_id, "detect", Topic.DETECTED)
        for image_id, event in sent.items()
    }, "the outputs have the ids the first attempt would have given them"

    again = run_cli(kafka, "dlq", "redrive")
    assert again.splitlines()[-1] == f"redriven 0, skipped {IMAGES} (already redriven), refused 0"

    uploads = read_to_end(kafka, topics(Topic.UPLOADS), UploadEvent, 10)
    back = [u for u in uploads if REDRIVE_HEADER in u.headers]
    assert len(uploads) == 2 * IMAGES, "each upload once as sent and once redriven, not twice"
    assert {u.event.image_id: (u.event.event_id, u.headers["event-id"]) for u in back} == {
        image_id: (event.event_id, event.event_id) for image_id, event in sent.items()
    }
    assert {u.event.image_id: u.headers[REDRIVE_HEADER] for u in back} == letter_ids
    marks = read_to_end(kafka, topics(Topic.REDRIVEN), DeadLetterRedrive, 10)
    assert sorted(m.event.dead_letter_id for m in marks) == sorted(letter_ids.values())
    assert len(read_to_end(kafka, topics(Topic.DEAD_LETTERS), DeadLetterEvent, 10)) == IMAGES
    assert len(read_to_end(kafka, topics(Topic.DETECTED), DetectedEvent, 10)) == IMAGES
