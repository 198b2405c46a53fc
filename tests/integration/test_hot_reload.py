"""A promoted detector version reaches a running detect stage without a restart.

The stage follows ``models.v1`` (``DEEPTRUST_DETECT_FOLLOW``). The promoted head is the
shipped one with its bias raised by 20, so every photograph it judges is "ai_generated"
and its ``model_version`` carries a different digest: both show which model judged an
image. Uploads keep flowing while the model changes; none may be lost or judged twice.
"""

from __future__ import annotations

import dataclasses
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from deeptrust.devtools.processes import StageProcess
from deeptrust.processors.detectors.block_probe import shipped_head_path
from deeptrust.processors.detectors.mobilenet_probe import ProbeHead
from deeptrust.schemas.events import DetectedEvent, Detection
from deeptrust.streams.codec import decode
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.objectstore import LocalObjectStore, StoredObject
from deeptrust.streams.producer import UploadProducer, produce_one
from deeptrust.streams.reader import read_to_end
from deeptrust.streams.topics import Topic, TopicNames
from tests.conftest import wait_for
from tests.events import model_update
from tests.images import sample_paths, small_photo

pytestmark = pytest.mark.integration
MODEL = "deeptrust-detector"
SHIPPED_VERSION = f"1+{ProbeHead.load(shipped_head_path()).digest()[:12]}"


def shifted_head() -> ProbeHead:
    """The shipped head, but every photograph scores far above the threshold."""
    head = ProbeHead.load(shipped_head_path())
    return dataclasses.replace(head, bias=head.bias + 20.0)


PROMOTED_VERSION = f"2+{shifted_head().digest()[:12]}"


def put_shifted_head(store: LocalObjectStore, tmp_path: Path) -> StoredObject:
    """Store the shifted head as the training service stores an artefact."""
    path = tmp_path / "shifted.npz"
    shifted_head().save(path)
    return store.put(f"models/{MODEL}/2/head.npz", path.read_bytes())


def put_shipped_head(store: LocalObjectStore, version: str) -> StoredObject:
    """Store a copy of the shipped head as the artefact of ``version``."""
    return store.put(f"models/{MODEL}/{version}/head.npz", shipped_head_path().read_bytes())


def announce(kafka: KafkaSettings, topics: TopicNames, stored: StoredObject, **fields: Any) -> None:
    """Produce a model update as the training service does (keyed ``model:alias``)."""
    event = model_update(stored.uri, stored.sha256, **fields)
    produce_one(kafka, topics(Topic.MODELS), event, event.key)


class Detections:
    """Every committed detection so far, read by one consumer that keeps its place."""

    def __init__(self, kafka: KafkaSettings, topics: TopicNames) -> None:
        topic = topics(Topic.DETECTED)
        self._consumer = Consumer(
            {
                **kafka.client_config(),
                "group.id": f"test-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        partitions = self._consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        self.by_image: dict[str, list[Detection]] = {}

    def drain(self, timeout_s: float = 0.2) -> None:
        """Take in what has been committed since the last call."""
        for message in self._consumer.consume(500, timeout_s):
            if message.error() is None:
                event = decode(message.value(), message.headers(), DetectedEvent)
                self.by_image.setdefault(event.image_id, []).append(event.detection)

    def of(self, image_ids: list[str]) -> list[Detection]:
        """The detections of these images."""
        return [detection for i in image_ids for detection in self.by_image[i]]

    def versions(self) -> set[str]:
        """Every model version seen so far."""
        return {d.model_version for ds in self.by_image.values() for d in ds}

    def close(self) -> None:
        self._consumer.close()


class Feed:
    """Uploads photographs, remembering their image ids in order, and watches the stage."""

    def __init__(self, uploads: UploadProducer, detections: Detections) -> None:
        self._uploads = uploads
        self._detections = detections
        self._photos = [small_photo(path, 300) for path in sample_paths()]
        self.sent: list[str] = []
        self.stage: StageProcess | None = None
        self.health: list[str] = []
        self._last_probe = 0.0

    def upload(self, count: int) -> list[str]:
        """Upload ``count`` photographs and return their image ids."""
        ids = [
            self._uploads.upload(self._photos[len(self.sent) % len(self._photos)], "p.jpg").image_id
            for _ in range(count)
        ]
        self._uploads.flush()
        self.sent += ids
        return ids

    def all_detected(self) -> bool:
        """Tell whether every upload so far has a detection; check the stage on the way."""
        self._watch()
        self._detections.drain()
        return set(self.sent) <= self._detections.by_image.keys()

    def _watch(self) -> None:
        """Check that the process runs and, at most every quarter second, what /healthz says.

        A kubelet probes every few seconds; polling faster measures the test, not the stage.
        """
        if self.stage is None:
            return
        assert self.stage.returncode is None, self.stage.log_tail()
        now = time.monotonic()
        if now - self._last_probe < 0.25:
            return
        self._last_probe = now
        url = f"http://127.0.0.1:{self.stage.metrics_port}/healthz"
        try:
            # A generous timeout: this checks that the server stays up through a swap, not
            # its latency on a machine that other test processes share.
            with urllib.request.urlopen(url, timeout=15) as response:
                self.health.append(str(response.status))
        except (urllib.error.URLError, OSError) as error:
            self.health.append(repr(error))


@pytest.fixture
def detections(kafka: KafkaSettings, topics: TopicNames) -> Iterator[Detections]:
    reader = Detections(kafka, topics)
    yield reader
    reader.close()


@pytest.fixture
def follow_env(tmp_path: Path) -> dict[str, str]:
    return {
        "DEEPTRUST_DETECT_FOLLOW": MODEL,
        "DEEPTRUST_MODEL_CACHE_DIR": str(tmp_path / "model-cache"),
    }


def assert_each_upload_detected_once(
    kafka: KafkaSettings, topics: TopicNames, sent: list[str]
) -> None:
    """No image lost, none judged twice: exactly one committed detection per upload."""
    detected = read_to_end(kafka, topics(Topic.DETECTED), DetectedEvent, 30)
    counts = Counter(item.event.image_id for item in detected)
    assert counts.keys() == set(sent)
    assert set(counts.values()) == {1}


def test_a_running_stage_swaps_to_the_promoted_version_and_ignores_a_bad_one(
    kafka, topics, store, uploads, start_stage, detections, follow_env, tmp_path
):
    stage = start_stage("detect", **follow_env)
    feed = Feed(uploads, detections)
    feed.stage = stage

    before = feed.upload(8)
    wait_for(feed.all_detected, 30, "detections by the shipped model")
    assert {d.model_version for d in detections.of(before)} == {SHIPPED_VERSION}
    assert {d.label for d in detections.of(before)} == {"real"}

    announce(kafka, topics, put_shipped_head(store, "9"), version="9", alias="candidate")
    announce(kafka, topics, put_shifted_head(store, tmp_path), version="2")

    def promoted_version_served() -> bool:
        feed.upload(1)
        feed.all_detected()
        return PROMOTED_VERSION in detections.versions()

    wait_for(promoted_version_served, 40, f"a detection by {PROMOTED_VERSION}")
    after = feed.upload(8)
    wait_for(feed.all_detected, 30, "detections after the promotion")
    assert {d.model_version for d in detections.of(after)} == {PROMOTED_VERSION}
    assert {d.label for d in detections.of(after)} == {"ai_generated"}
    assert detections.versions() == {SHIPPED_VERSION, PROMOTED_VERSION}, "the candidate too"

    wrong_hash = put_shipped_head(store, "3")
    announce(kafka, topics, wrong_hash, version="3", artifact_sha256="0" * 64)
    wait_for(
        lambda: f"refused {MODEL} version 3" in stage.log_path.read_text(errors="replace"),
        20,
        "the stage to refuse the update whose hash does not match",
    )
    assert "sha256 mismatch" in stage.log_path.read_text(errors="replace")
    kept = feed.upload(8)
    wait_for(feed.all_detected, 30, "detections after the refused update")
    assert {d.model_version for d in detections.of(kept)} == {PROMOTED_VERSION}

    reloads = "deeptrust_model_reloads_total"
    assert stage.metric(reloads, stage="detect", model=MODEL, outcome="loaded") == 1
    assert stage.metric(reloads, stage="detect", model=MODEL, outcome="failed") == 1
    assert stage.metric("deeptrust_model_version", stage="detect", model=MODEL, version="2") == 1

    assert_each_upload_detected_once(kafka, topics, feed.sent)
    assert stage.returncode is None
    assert feed.health
    assert set(feed.health) == {"200"}, f"/healthz stayed up throughout: {set(feed.health)}"
    log = stage.log_path.read_text(errors="replace")
    assert log.count("stage detect consuming") == 1, "the stage never started over"


def test_a_stage_started_after_a_promotion_serves_it_from_the_first_batch(
    kafka, topics, store, uploads, start_stage, detections, follow_env, tmp_path
):
    announce(kafka, topics, put_shipped_head(store, "1"), version="1")
    promoted = put_shifted_head(store, tmp_path)
    announce(kafka, topics, promoted, version="2")
    announce(kafka, topics, put_shipped_head(store, "9"), version="9", alias="candidate")
    feed = Feed(uploads, detections)
    first = feed.upload(8)

    feed.stage = start_stage("detect", **follow_env)
    wait_for(feed.all_detected, 30, "detections by the promoted model")
    assert {d.model_version for d in detections.of(first)} == {PROMOTED_VERSION}
    assert {d.label for d in detections.of(first)} == {"ai_generated"}
    assert (Path(follow_env["DEEPTRUST_MODEL_CACHE_DIR"]) / f"{promoted.sha256}.npz").is_file()
    assert_each_upload_detected_once(kafka, topics, feed.sent)
