"""N uploads in, exactly N enriched events out, in order per image, on the real broker."""

import subprocess
import sys

import pytest

import deeptrust.processors.registry  # noqa: F401 - registers the backends the stages use
from deeptrust.processors.heuristics.keyword_tags import KeywordTagger
from deeptrust.processors.heuristics.statistics_caption import describe
from deeptrust.processors.models import ModelSpec, load_model
from deeptrust.processors.moderation import in_sample
from deeptrust.processors.settings import ProcessorSettings
from deeptrust.schemas.events import EnrichedEvent, ModerationEvent
from deeptrust.streams.images import FetchedImage, decode_image
from deeptrust.streams.reader import read_to_end, read_until
from deeptrust.streams.stage import derived_event_id
from deeptrust.streams.topics import Topic
from tests.conftest import wait_for
from tests.images import generator_png, sample_paths, small_photo

pytestmark = pytest.mark.integration
SAMPLE_RATE = 0.3


def enriched_id(upload_event_id: str) -> str:
    detected = derived_event_id(upload_event_id, "detect", Topic.DETECTED)
    captioned = derived_event_id(detected, "caption", Topic.CAPTIONED)
    return derived_event_id(captioned, "tag", Topic.ENRICHED)


def test_every_upload_is_enriched_exactly_once_in_order(
    kafka, topics, uploads, start_stage, tmp_path
):
    for name in ("detect", "caption", "tag", "search"):
        start_stage(name)
    start_stage("moderation", DEEPTRUST_MODERATION_SAMPLE_RATE=str(SAMPLE_RATE))

    photos = [small_photo(path, 160) for path in sample_paths()]
    sent = [
        uploads.upload(data, f"{index}.jpg", image_id=f"img-{index}", metadata={"round": str(r)})
        for r in range(3)
        for index, data in enumerate(photos)
    ]
    sent.append(uploads.upload(generator_png(), "generated.png", image_id="img-generated"))
    uploads.flush()
    expected = {enriched_id(event.event_id): event for event in sent}

    def all_arrived(received):
        return expected.keys() <= {item.event.event_id for item in received}

    assert all_arrived(read_until(kafka, topics(Topic.ENRICHED), EnrichedEvent, all_arrived, 120))
    received = read_to_end(kafka, topics(Topic.ENRICHED), EnrichedEvent, 30)

    assert sorted(item.event.event_id for item in received) == sorted(expected)
    for image_id in {event.image_id for event in sent}:
        produced_order = [enriched_id(e.event_id) for e in sent if e.image_id == image_id]
        consumed = sorted(
            (i for i in received if i.event.image_id == image_id), key=lambda i: i.offset
        )
        assert [item.event.event_id for item in consumed] == produced_order
        assert len({item.partition for item in consumed}) == 1

    generated = next(i.event for i in received if i.event.image_id == "img-generated")
    assert generated.detection.signals == ["png-text:parameters"]
    detector = ProcessorSettings().model_spec("detect")
    assert generated.detection.model == detector.label == "mobilenet-blocks"
    probe = load_model(detector)
    local = probe.predict([FetchedImage(photos[0], decode_image(photos[0]))])[0]
    for photo in (i.event for i in received if i.event.image_id == "img-0"):
        assert photo.detection.ai_probability == pytest.approx(local.ai_probability, abs=1e-4)
        assert photo.detection.label == local.label
        assert photo.detection.signals == []
    expected_caption = describe(decode_image(photos[0]).image)
    tagger = KeywordTagger(ModelSpec("tag", "keywords", "keywords"))
    for photo in (i.event for i in received if i.event.image_id == "img-0"):
        assert photo.caption.text == expected_caption
        assert photo.caption.model == "image-statistics"
        assert photo.tags.values == tagger.tags(expected_caption)
        assert photo.tags.values

    flagged = {
        e.image_id
        for e in (i.event for i in received)
        if e.detection.ai_probability >= ProcessorSettings().moderation_threshold
        or e.detection.label != "real"
        or e.detection.signals
    }
    assert "img-generated" in flagged
    should_review = [e for e in sent if e.image_id in flagged or in_sample(e.image_id, SAMPLE_RATE)]
    # Moderation reads enriched.v1 beside the test: wait for it to catch up, then count all.
    read_until(
        kafka,
        topics(Topic.MODERATION),
        ModerationEvent,
        lambda found: len(found) >= len(should_review),
        120,
    )
    moderated = read_to_end(kafka, topics(Topic.MODERATION), ModerationEvent, 30)
    assert len(moderated) == len(should_review)
    assert {m.event.reason for m in moderated if m.event.image_id == "img-generated"} == {"flagged"}

    greyscale = {
        e.image_id for e in (i.event for i in received) if "black-and-white" in e.caption.text
    }
    assert greyscale, "the samples include greyscale photographs"

    def search_hits() -> set[str]:
        search = subprocess.run(
            [sys.executable, "-m", "deeptrust.cli", "search", "black and white photo"],
            env={"DEEPTRUST_SEARCH_DB": str(tmp_path / "search.db"), "PATH": ""},
            capture_output=True,
            text=True,
            check=True,
        )
        return {line.split("\t")[0] for line in search.stdout.splitlines()}

    # The search stage indexes enriched.v1 on its own schedule: wait for it to catch up.
    wait_for(
        lambda: greyscale <= search_hits(), 120, "the search index to hold the greyscale photos"
    )
