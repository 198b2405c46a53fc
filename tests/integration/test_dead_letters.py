"""Every kind of bad input lands in the dead-letter topic with its reason; the rest pass."""

import base64

import pytest

from deeptrust.schemas.events import DeadLetterEvent, DetectedEvent
from deeptrust.streams.codec import encode
from deeptrust.streams.dead_letters import REASON_HEADER
from deeptrust.streams.reader import read_until
from deeptrust.streams.topics import Topic
from tests.conftest import send_raw_upload, wait_for
from tests.events import pointing_at
from tests.images import corrupt_bytes, jpeg_bytes, truncated_jpeg

pytestmark = pytest.mark.integration


def test_bad_inputs_are_dead_lettered_with_reasons(
    kafka, topics, uploads, store, raw_producer, start_stage
):
    detect = start_stage("detect", DEEPTRUST_MAX_PIXELS="1000000")
    valid = [uploads.upload(jpeg_bytes(), "ok.jpg", image_id=f"ok-{i}") for i in range(3)]
    uploads.upload(corrupt_bytes(), "corrupt.jpg", image_id="bad-corrupt")
    uploads.upload(truncated_jpeg(), "truncated.jpg", image_id="bad-truncated")
    uploads.upload(jpeg_bytes((1200, 1000)), "huge.jpg", image_id="bad-pixels")
    uploads.flush()
    send_raw_upload(
        raw_producer, topics, pointing_at((store.root / "images/gone.jpg").as_uri(), "bad-missing")
    )
    send_raw_upload(raw_producer, topics, pointing_at("file:///etc/passwd", "bad-uri"))
    wrong = encode(
        DetectedEvent.model_validate(
            {
                **valid[0].model_dump(),
                "width": 1,
                "height": 1,
                "detection": {
                    "ai_probability": 0.1,
                    "label": "real",
                    "model": "m",
                    "model_version": "1",
                },
            }
        ),
        key="bad-schema",
    )
    raw_producer.produce(
        topics(Topic.UPLOADS), key=wrong.key, value=wrong.value, headers=wrong.headers
    )
    not_json = encode(valid[0], key="bad-json")
    raw_producer.produce(
        topics(Topic.UPLOADS), key=b"bad-json", value=b"\x89PNG...", headers=not_json.headers
    )
    raw_producer.flush(10)
    after = [uploads.upload(jpeg_bytes(), "ok.jpg", image_id=f"ok-after-{i}") for i in range(2)]
    uploads.flush()

    expected_reasons = {
        "bad-corrupt": "undecodable_image",
        "bad-truncated": "undecodable_image",
        "bad-pixels": "too_many_pixels",
        "bad-missing": "missing_object",
        "bad-uri": "disallowed_uri",
        "bad-schema": "wrong_schema",
        "bad-json": "undecodable_message",
    }
    dead = read_until(
        kafka,
        topics(Topic.DEAD_LETTERS),
        DeadLetterEvent,
        lambda r: len(r) >= len(expected_reasons),
        60,
    )
    assert {d.event.original_key: d.event.reason for d in dead} == expected_reasons
    for letter in dead:
        assert letter.headers[REASON_HEADER] == letter.event.reason
        assert letter.event.stage == "detect"
        assert letter.event.source_topic == topics(Topic.UPLOADS)
        assert letter.event.detail
    json_letter = next(d.event for d in dead if d.event.original_key == "bad-json")
    assert base64.b64decode(json_letter.original_value_b64) == b"\x89PNG..."

    wanted = {e.image_id for e in valid + after}
    detected = read_until(
        kafka,
        topics(Topic.DETECTED),
        DetectedEvent,
        lambda r: wanted <= {i.event.image_id for i in r},
        60,
    )
    assert {i.event.image_id for i in detected} == wanted

    wait_for(
        lambda: detect.metric("deeptrust_produced_total", topic=Topic.DETECTED.value) == 5,
        10,
        "metrics",
    )
    assert detect.metric("deeptrust_dead_lettered_total", reason="undecodable_image") == 2
    assert detect.metric("deeptrust_dead_lettered_total", reason="wrong_schema") == 1
    assert detect.metric("deeptrust_consumed_total") == 12
    assert detect.returncode is None, "the stage keeps running"
    assert detect.get("/healthz") == 200
    assert detect.terminate() == 0, "SIGTERM shuts the stage down cleanly"
