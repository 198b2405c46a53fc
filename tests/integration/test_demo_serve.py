"""``deeptrust-dev demo --serve``'s last step on the real broker: the console on the demo's topics.

The demo's own run (Kafka, the stages, the language model) is too slow for the suite; this
starts from what it leaves behind (moderation events on the topic, an index, the object
store) and checks that the served console prints where it is, a working token and the
lanes' counts, and shows the oldest flagged image to the reviewer who signs in with it.
"""

from __future__ import annotations

import io
import re
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from rich.console import Console

from deeptrust.devtools.demo_serve import SERVE_SAMPLE_RATE, expected_lanes, serve_console
from deeptrust.devtools.local_broker import free_port
from deeptrust.processors.search_index import SearchIndex
from deeptrust.processors.settings import ProcessorSettings
from deeptrust.schemas.events import Caption, Detection, EnrichedEvent, ModerationEvent, Tags
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.objectstore import LocalObjectStore
from deeptrust.streams.producer import produce_one
from deeptrust.streams.topics import Topic, TopicNames
from tests.conftest import wait_for
from tests.images import SAMPLES

pytestmark = pytest.mark.integration


def enriched(store: LocalObjectStore, name: str, p: float, signals: list[str]) -> EnrichedEvent:
    return EnrichedEvent(
        event_id=str(uuid.uuid4()),
        image_id=f"demo-{Path(name).stem}",
        uri=store.put(name, (SAMPLES / name).read_bytes()).uri,
        uploaded_at=datetime.now(UTC),
        width=64,
        height=64,
        detection=Detection(
            ai_probability=p,
            label="ai_generated" if p >= 0.5 else "real",
            model="test",
            model_version="1",
            signals=signals,
        ),
        caption=Caption(text=f"a photograph: {Path(name).stem}", model="test"),
        tags=Tags(values=["photo"], model="test"),
    )


def as_moderation(event: EnrichedEvent, reason: str) -> ModerationEvent:
    return ModerationEvent.model_validate(
        {
            "event_id": str(uuid.uuid4()),
            "image_id": event.image_id,
            "uri": event.uri,
            "reason": reason,
            "ai_probability": event.detection.ai_probability,
            "caption": event.caption.text,
            "tags": event.tags.values,
            "signals": event.detection.signals,
        }
    )


def test_expected_lanes_follow_the_router(store: LocalObjectStore):
    settings = ProcessorSettings(moderation_threshold=0.5, moderation_sample_rate=0.0)
    events = [
        enriched(store, "astronaut.jpg", 0.9, []),  # flagged by probability
        enriched(store, "camera.jpg", 0.1, ["c2pa"]),  # flagged by provenance
        enriched(store, "coffee.jpg", 0.1, []),  # passes; a zero sample rate samples nothing
    ]
    assert expected_lanes(events, settings) == {"flagged": 2, "sampled": 0}
    everything = settings.model_copy(update={"moderation_sample_rate": 1.0})
    assert expected_lanes(events, everything) == {"flagged": 2, "sampled": 1}


def test_the_served_console_shows_the_demo_queue(
    kafka: KafkaSettings, topics: TopicNames, store: LocalObjectStore, tmp_path: Path
):
    flagged = [enriched(store, "astronaut.jpg", 0.9, []), enriched(store, "camera.jpg", 0.8, [])]
    sampled = [enriched(store, "coffee.jpg", 0.1, [])]
    for event, reason in [(e, "flagged") for e in flagged] + [(e, "sampled") for e in sampled]:
        moderation = as_moderation(event, reason)
        produce_one(kafka, topics(Topic.MODERATION), moderation, moderation.image_id)
    settings = ProcessorSettings(
        object_store_root=store.root,
        search_db=tmp_path / "search.db",
        moderation_sample_rate=SERVE_SAMPLE_RATE,
    )
    index = SearchIndex(settings.search_db)
    index.upsert([*flagged, *sampled])
    index.close()

    out = io.StringIO()
    stop = threading.Event()
    port = free_port()
    serving = threading.Thread(
        target=serve_console,
        args=(Console(file=out, width=200), kafka, settings, tmp_path / "state"),
        kwargs={
            "expected": {"flagged": 2, "sampled": 1},
            "host": "127.0.0.1",
            "port": port,
            "stop": stop,
        },
    )
    serving.start()
    try:
        wait_for(lambda: "search page" in out.getvalue(), 60, "the console's addresses")
        printed = out.getvalue()
        assert f"http://127.0.0.1:{port}/login" in printed
        assert "waiting: 2 flagged, 1 sampled" in printed
        assert f"http://127.0.0.1:{port}/search?q=cat" in printed
        token = re.search(r"reviewer demo, token (\S+)\)", printed)
        assert token is not None, printed

        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as browser:
            form = browser.get("/login").text
            csrf = re.search(r'name="csrf" value="([^"]+)"', form)
            assert csrf is not None
            review = browser.post(
                "/login",
                data={"csrf": csrf.group(1), "token": token.group(1)},
                follow_redirects=True,
            )
            assert review.status_code == 200
            assert 'data-image-id="demo-astronaut"' in review.text, "the oldest flagged image"
            assert '<span id="reviewer">demo</span>' in review.text
            found = browser.get("/search", params={"q": "photograph"}).text
            assert found.count('class="result"') == 3
    finally:
        stop.set()
        serving.join(30)
    assert not serving.is_alive()
