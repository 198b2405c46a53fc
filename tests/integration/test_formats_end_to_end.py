"""`deeptrust produce` on one real file of every format: accepted ones are enriched, refused
ones are named at upload and never reach the topic (docs/formats.md)."""

from __future__ import annotations

import pytest

from deeptrust.schemas.events import EnrichedEvent, UploadEvent
from deeptrust.streams.reader import read_to_end, read_until
from deeptrust.streams.topics import Topic
from tests.conftest import run_cli
from tests.unit.test_formats import ACCEPTED_FILES, FILES, PROFILE_FILES, REFUSED_FILES

pytestmark = pytest.mark.integration


def test_every_accepted_format_is_enriched_and_every_refused_one_named(
    kafka, topics, store, start_stage
):
    for name in ("detect", "caption", "tag"):
        start_stage(name)
    output = run_cli(
        kafka,
        "produce",
        str(FILES),
        env={"DEEPTRUST_OBJECT_STORE_ROOT": str(store.root)},
        fails=True,
    )
    for name in REFUSED_FILES:
        assert f"refused {name}:" in output
    accepted = [*ACCEPTED_FILES, *PROFILE_FILES]
    assert f"produced {len(accepted)} upload events" in output

    uploads = read_to_end(kafka, topics(Topic.UPLOADS), UploadEvent, 30)
    by_image = {item.event.image_id: item.event.metadata["filename"] for item in uploads}
    assert sorted(by_image.values()) == sorted(accepted)
    enriched = read_until(
        kafka,
        topics(Topic.ENRICHED),
        EnrichedEvent,
        lambda got: by_image.keys() <= {item.event.image_id for item in got},
        120,
    )
    events = {item.event.image_id: item.event for item in enriched}
    assert events.keys() == by_image.keys()
    for image_id, event in events.items():
        assert (event.width, event.height) == (64, 48), by_image[image_id]
        assert event.caption.text
