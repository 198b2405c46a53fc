"""The model follower without a broker: which update wins, what is refused, when the stage swaps.

The models are real (the ``mobilenet-blocks`` backend, the default, with the shipped head,
and a copy of it whose bias is raised by 20 so that every photograph comes out
"ai_generated"). Kafka is replaced by an in-memory one-partition log with the few consumer
calls the follower makes, so the start-up read and the follower thread run as they do
against the broker.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import TopicPartition
from prometheus_client import CollectorRegistry

import deeptrust.processors.registry  # noqa: F401 - registers the model backends
from deeptrust.processors.caption import CaptionStage
from deeptrust.processors.detect import DetectStage
from deeptrust.processors.detectors.block_probe import shipped_head_path
from deeptrust.processors.detectors.mobilenet_probe import ProbeHead
from deeptrust.processors.model_follower import (
    ArtefactCache,
    ModelFollower,
    Outcome,
    UpdateRefused,
    latest_production,
)
from deeptrust.processors.models import BatchModel, ModelSpec, load_model
from deeptrust.processors.registry import build_stage
from deeptrust.processors.settings import ProcessorSettings
from deeptrust.schemas.events import Detection, ModelUpdateEvent
from deeptrust.streams.codec import encode
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.objectstore import LocalObjectStore, StoredObject
from deeptrust.streams.topics import Topic, TopicNames
from tests.events import model_update, upload_event
from tests.images import sample_paths, small_photo

MODEL = "deeptrust-detector"
OPTIONS = {"intra_op_threads": "1"}
DETECTOR = ModelSpec("detect", "mobilenet-blocks", "mobilenet-blocks", options=OPTIONS)
EMBEDDER = ModelSpec("embed", "mobilenet-v2", "mobilenet-v2", options=OPTIONS)
KAFKA = KafkaSettings(bootstrap_servers="127.0.0.1:1", topic_prefix="unit.")
TOPIC = TopicNames(KAFKA.topic_prefix)(Topic.MODELS)
SHIPPED_DIGEST = ProbeHead.load(shipped_head_path()).digest()[:12]


def shifted_head() -> ProbeHead:
    """The shipped head, but every photograph scores far above the threshold."""
    head = ProbeHead.load(shipped_head_path())
    return dataclasses.replace(head, bias=head.bias + 20.0)


SHIFTED_DIGEST = shifted_head().digest()[:12]


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore.at(tmp_path / "objects")


@pytest.fixture
def shifted(store: LocalObjectStore, tmp_path: Path) -> StoredObject:
    path = tmp_path / "shifted.npz"
    shifted_head().save(path)
    return store.put("models/deeptrust-detector/2/head.npz", path.read_bytes())


@pytest.fixture
def shipped(store: LocalObjectStore) -> StoredObject:
    return store.put("models/deeptrust-detector/3/head.npz", shipped_head_path().read_bytes())


def update(stored: StoredObject | None = None, **overrides: Any) -> ModelUpdateEvent:
    """A production update of the followed model pointing at ``stored``."""
    if stored is None:
        return model_update("file:///nowhere/head.npz", "0" * 64, run_id="run-1", **overrides)
    return model_update(stored.uri, stored.sha256, run_id="run-1", **overrides)


class FakeMessage:
    """A consumed record: what ``decode`` and the follower read from a message."""

    def __init__(self, offset: int, value: bytes | None, headers: list[tuple[str, bytes]]):
        self._offset, self._value, self._headers = offset, value, headers

    def error(self) -> None:
        return None

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes]]:
        return self._headers

    def offset(self) -> int:
        return self._offset

    def partition(self) -> int:
        return 0

    def topic(self) -> str:
        return TOPIC


class FakeConsumer:
    """An in-memory one-partition models topic behind the consumer calls the follower uses."""

    def __init__(self, events: Sequence[ModelUpdateEvent] = ()) -> None:
        self.config: dict[str, Any] | None = None
        self.assigned: list[TopicPartition] = []
        self.closed = threading.Event()
        self._log: list[FakeMessage] = []
        self._position = 0
        self._arrived = threading.Condition()
        for event in events:
            self.append(event)

    def __call__(self, config: dict[str, Any]) -> FakeConsumer:
        """Be the follower's consumer factory."""
        self.config = config
        return self

    def append(self, event: ModelUpdateEvent | None, key: str = f"{MODEL}:production") -> None:
        with self._arrived:
            if event is None:
                self._log.append(FakeMessage(len(self._log), None, []))
            else:
                encoded = encode(event, key=event.key)
                headers = [(name, bytes(value or b"")) for name, value in encoded.headers]
                self._log.append(FakeMessage(len(self._log), encoded.value, headers))
            self._arrived.notify_all()

    def list_topics(self, topic: str, timeout: float) -> SimpleNamespace:
        return SimpleNamespace(topics={topic: SimpleNamespace(partitions={0: None}, error=None)})

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned = partitions

    def get_watermark_offsets(self, partition: TopicPartition, timeout: float) -> tuple[int, int]:
        with self._arrived:
            return 0, len(self._log)

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        with self._arrived:
            self._arrived.wait_for(lambda: self._position < len(self._log), timeout)
            taken = self._log[self._position : self._position + num_messages]
            self._position += len(taken)
            return taken

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        with self._arrived:
            return [TopicPartition(p.topic, p.partition, self._position) for p in partitions]

    def close(self) -> None:
        self.closed.set()


def follower_for(
    store: LocalObjectStore,
    tmp_path: Path,
    consumer: FakeConsumer | None = None,
    loader: Callable[[ModelSpec], BatchModel[Any, Any]] = load_model,
) -> ModelFollower:
    """A follower on the in-memory topic with short timeouts, caching under ``tmp_path``."""
    return ModelFollower(
        KAFKA,
        store,
        MODEL,
        DETECTOR,
        tmp_path / "cache",
        start_timeout_s=5,
        poll_timeout_s=0.05,
        consumer_factory=consumer or FakeConsumer(),  # type: ignore[arg-type]
        loader=loader,
    )


def stage_for(store: LocalObjectStore, follower: ModelFollower | None) -> DetectStage:
    """A detect stage on one thread per model, as the tests' two cores allow."""
    return DetectStage(store, DETECTOR, EMBEDDER, max_pixels=50_000_000, follower=follower)


def prepared_batch(stage: DetectStage, store: LocalObjectStore, tag: str) -> list[Any]:
    """Four stored photographs, fetched and decoded by the stage as the runner would."""
    photos = [small_photo(path, 300) for path in sample_paths()[:4]]
    stored = [store.put(f"images/{tag}-{i}.jpg", data) for i, data in enumerate(photos)]
    return [
        stage.prepare(upload_event(event_id=f"{tag}-{i}", image_id=f"{tag}-{i}", uri=obj.uri))
        for i, obj in enumerate(stored)
    ]


def detections(stage: DetectStage, items: list[Any]) -> list[Detection]:
    """Process one batch and return its verdicts."""
    results = stage.process(items)
    assert len(results) == len(items)
    verdicts = []
    for result in results:
        assert isinstance(result, list)
        verdicts.append(result[0].event.detection)  # type: ignore[attr-defined]
    return verdicts


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail with ``what`` after the deadline."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.01)


def test_latest_production_event_wins_and_the_rest_is_ignored():
    v2, v3, rollback = update(version="2"), update(version="3"), update(version="2")
    others = [
        update(version="9", alias="candidate"),
        update(version="8", model="other-detector"),
        update(version="7", backend="hf-vit"),
    ]
    assert latest_production([v2, *others], MODEL, DETECTOR) is v2
    assert latest_production([v2, v3, *others], MODEL, DETECTOR) is v3
    assert latest_production([v2, v3, rollback, *others], MODEL, DETECTOR) is rollback
    assert latest_production(others, MODEL, DETECTOR) is None
    assert latest_production([], MODEL, DETECTOR) is None


def test_events_for_other_models_and_candidates_are_ignored(store, tmp_path, shifted):
    follower = follower_for(store, tmp_path)
    for event in (
        update(shifted, alias="candidate"),
        update(shifted, model="other-detector"),
    ):
        assert follower.handle(event) is Outcome.IGNORED
    assert follower.take_pending() is None
    assert (follower.metrics.loaded, follower.metrics.failed) == (0, 0)
    assert not (tmp_path / "cache").exists()


def test_production_moving_to_another_backend_counts_as_a_failure(store, tmp_path, shifted):
    """The stage can no longer serve production: that must reach the failure counter."""
    follower = follower_for(store, tmp_path)
    assert follower.handle(update(shifted, backend="hf-vit")) is Outcome.FAILED
    assert "backend detect/hf-vit" in (follower.last_failure or "")
    assert (follower.metrics.loaded, follower.metrics.failed) == (0, 1)
    assert follower.retry_due() is None, "no retry can fix a backend mismatch"
    assert follower.take_pending() is None
    assert not (tmp_path / "cache").exists()


def test_an_artefact_not_yet_in_the_store_is_tried_again_with_backoff(store, tmp_path, monkeypatch):
    """A missing object may appear (a replica of the store catching up): retry, doubling."""
    clock = [1000.0]
    monkeypatch.setattr("deeptrust.processors.model_follower.time.monotonic", lambda: clock[0])
    follower = follower_for(store, tmp_path)
    head = shifted_head()
    target = store.root / "models" / "late" / "head.npz"
    target.parent.mkdir(parents=True)
    head.save(tmp_path / "late.npz")
    data = (tmp_path / "late.npz").read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()
    event = update(StoredObject(uri=target.as_uri(), size_bytes=len(data), sha256=sha256))
    assert follower.handle(event) is Outcome.FAILED
    assert "missing_object" in (follower.last_failure or "")
    assert follower.retry_due() is None, "not before the first delay"
    clock[0] += 1.0
    assert follower.retry_due() is Outcome.FAILED, "tried again after 1 s"
    clock[0] += 1.0
    assert follower.retry_due() is None, "the second delay is 2 s"
    target.write_bytes(data)
    clock[0] += 1.0
    assert follower.retry_due() is Outcome.LOADED
    assert (follower.metrics.loaded, follower.metrics.failed) == (1, 2)
    assert follower.retry_due() is None, "nothing left to retry"
    pending = follower.take_pending()
    assert pending is not None
    assert pending.version == "2"


def test_a_newer_update_replaces_a_pending_retry(store, tmp_path, shifted, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("deeptrust.processors.model_follower.time.monotonic", lambda: clock[0])
    follower = follower_for(store, tmp_path)
    missing = update(artifact_uri=(store.root / "models/none.npz").as_uri(), version="2")
    assert follower.handle(missing) is Outcome.FAILED
    assert follower.handle(update(shifted, version="3")) is Outcome.LOADED
    clock[0] += 600.0
    assert follower.retry_due() is None, "version 2 is no longer the one to serve"
    pending = follower.take_pending()
    assert pending is not None
    assert pending.version == "3"


def test_an_artefact_whose_hash_differs_is_refused_and_nothing_is_cached(store, tmp_path, shifted):
    follower = follower_for(store, tmp_path)
    assert follower.handle(update(shifted, artifact_sha256="0" * 64)) is Outcome.FAILED
    assert follower.last_failure is not None
    assert "sha256 mismatch" in follower.last_failure
    assert follower.take_pending() is None
    assert (follower.metrics.loaded, follower.metrics.failed) == (0, 1)
    assert follower.metrics.serving_version == "1"
    assert not list((tmp_path / "cache").glob("*"))


def test_missing_disallowed_and_unloadable_artefacts_are_refused(store, tmp_path):
    follower = follower_for(store, tmp_path)
    missing = update(artifact_uri=(store.root / "models/none.npz").as_uri())
    assert follower.handle(missing) is Outcome.FAILED
    assert "missing_object" in (follower.last_failure or "")
    outside = update(artifact_uri=(tmp_path / "elsewhere.npz").as_uri())
    assert follower.handle(outside) is Outcome.FAILED
    assert "disallowed_uri" in (follower.last_failure or "")
    junk = store.put("models/junk.npz", b"not a head file")
    assert follower.handle(update(junk)) is Outcome.FAILED
    assert "cannot load" in (follower.last_failure or "")
    assert (follower.metrics.loaded, follower.metrics.failed) == (0, 3)
    assert follower.take_pending() is None


def test_a_new_version_is_cached_by_its_hash_loaded_and_handed_over_once(store, tmp_path, shifted):
    follower = follower_for(store, tmp_path)
    assert follower.handle(update(shifted)) is Outcome.LOADED
    cached = tmp_path / "cache" / f"{shifted.sha256}.npz"
    assert cached.read_bytes() == Path(shifted.uri.removeprefix("file://")).read_bytes()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [cached.name]
    assert follower.metrics.serving_version == "1", "serving changes at the swap, not the load"
    pending = follower.take_pending()
    assert pending is not None
    assert (pending.version, pending.sha256) == ("2", shifted.sha256)
    assert pending.model.spec.options == {**OPTIONS, "head": str(cached)}
    assert follower.take_pending() is None
    assert follower.metrics.serving_version == "2"
    assert follower.handle(update(shifted)) is Outcome.CURRENT, "the same version again"
    assert follower.metrics.loaded == 1


def test_a_cached_artefact_is_used_when_the_store_no_longer_has_it(store, tmp_path, shifted):
    assert follower_for(store, tmp_path).handle(update(shifted)) is Outcome.LOADED
    Path(shifted.uri.removeprefix("file://")).unlink()
    restarted = follower_for(store, tmp_path)
    assert restarted.handle(update(shifted)) is Outcome.LOADED
    cache = ArtefactCache(store, tmp_path / "cache")
    path = cache.path_for(shifted.uri, shifted.sha256)
    path.write_bytes(b"tampered")
    with pytest.raises(UpdateRefused, match="missing_object"):
        cache.fetch(shifted.uri, shifted.sha256)


def test_unknown_backend_cannot_be_followed(store, tmp_path):
    provenance = ModelSpec("detect", "provenance", "provenance")
    with pytest.raises(ValueError, match="cannot follow"):
        ModelFollower(KAFKA, store, MODEL, provenance, tmp_path)


def test_start_serves_the_latest_production_version_from_the_first_batch(
    store, tmp_path, shifted, shipped
):
    consumer = FakeConsumer(
        [
            update(shipped, version="1"),
            update(shifted, version="2"),
            update(shipped, version="3", alias="candidate"),
        ]
    )
    consumer.append(None)  # a tombstone of some other key
    follower = follower_for(store, tmp_path, consumer)
    stage = stage_for(store, follower)
    stage.setup()
    try:
        assert consumer.config is not None
        assert consumer.config["isolation.level"] == "read_committed"
        assert consumer.config["enable.auto.commit"] is False
        # From the first retained offset (the fake's low watermark is 0).
        assert [(p.topic, p.partition, p.offset) for p in consumer.assigned] == [(TOPIC, 0, 0)]
        assert stage.model_version == "2"
        verdicts = detections(stage, prepared_batch(stage, store, "first"))
        assert {v.model_version for v in verdicts} == {f"2+{SHIFTED_DIGEST}"}
        assert {v.label for v in verdicts} == {"ai_generated"}
        assert (follower.metrics.loaded, follower.metrics.serving_version) == (1, "2")
    finally:
        stage.close()
    assert consumer.closed.is_set()


def test_follower_thread_loads_updates_and_the_stage_swaps_between_batches(
    store, tmp_path, shifted
):
    consumer = FakeConsumer()
    follower = follower_for(store, tmp_path, consumer)
    stage = stage_for(store, follower)
    stage.setup()
    try:
        assert stage.model_version == "1"
        before = detections(stage, prepared_batch(stage, store, "before"))
        assert {v.model_version for v in before} == {f"1+{SHIPPED_DIGEST}"}
        assert {v.label for v in before} == {"real"}

        consumer.append(update(shifted, version="2"))
        wait_until(lambda: follower.metrics.loaded == 1, 30, "the follower to load version 2")
        assert stage.model_version == "1", "no swap outside process()"
        after = detections(stage, prepared_batch(stage, store, "after"))
        assert {v.model_version for v in after} == {f"2+{SHIFTED_DIGEST}"}
        assert {v.label for v in after} == {"ai_generated"}
        assert stage.model_version == follower.metrics.serving_version == "2"

        consumer.append(update(shifted, version="3", artifact_sha256="f" * 64))
        wait_until(lambda: follower.metrics.failed == 1, 30, "the bad update to be refused")
        kept = detections(stage, prepared_batch(stage, store, "kept"))
        assert {v.model_version for v in kept} == {f"2+{SHIFTED_DIGEST}"}
        assert stage.model_version == "2"
    finally:
        stage.close()
    assert consumer.closed.is_set(), "close() stops the thread, which closes its consumer"


class OnFirstPredict:
    """A model that runs ``hook`` once, inside its first ``predict``: an update mid-batch."""

    def __init__(self, model: BatchModel[Any, Any], hooks: list[Callable[[], object]]) -> None:
        self.spec = model.spec
        self._model = model
        self._hooks = hooks

    def load(self) -> None:
        """Already loaded."""

    def predict(self, batch: Sequence[Any]) -> list[Any]:
        while self._hooks:
            self._hooks.pop()()
        return self._model.predict(batch)


def test_a_version_loaded_during_a_batch_waits_for_the_next_batch(
    store, tmp_path, shifted, shipped
):
    hooks: list[Callable[[], object]] = []
    follower = follower_for(
        store,
        tmp_path,
        FakeConsumer([update(shifted, version="2")]),
        loader=lambda spec: OnFirstPredict(load_model(spec), hooks),
    )
    stage = stage_for(store, follower)
    stage.setup()
    try:
        hooks.append(lambda: follower.handle(update(shipped, version="3")))
        during = detections(stage, prepared_batch(stage, store, "during"))
        assert not hooks, "version 3 was loaded while the batch ran"
        assert {v.model_version for v in during} == {f"2+{SHIFTED_DIGEST}"}
        assert {v.label for v in during} == {"ai_generated"}
        assert stage.model_version == "2"
        next_batch = detections(stage, prepared_batch(stage, store, "next"))
        assert {v.model_version for v in next_batch} == {f"3+{SHIPPED_DIGEST}"}
        assert {v.label for v in next_batch} == {"real"}
    finally:
        stage.close()


def test_reload_metrics_reach_the_registry_the_stage_is_given(store, tmp_path, shifted):
    follower = follower_for(store, tmp_path)
    stage = stage_for(store, follower)
    registry = CollectorRegistry()
    stage.register_metrics(registry)

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"stage": "detect", "model": MODEL, **labels})

    assert sample("deeptrust_model_reloads_total", outcome="loaded") == 0
    assert sample("deeptrust_model_reloads_total", outcome="failed") == 0
    assert sample("deeptrust_model_version", version="1") == 1
    follower.handle(update(shifted, artifact_sha256="0" * 64))
    follower.handle(update(shifted))
    follower.take_pending()
    assert sample("deeptrust_model_reloads_total", outcome="loaded") == 1
    assert sample("deeptrust_model_reloads_total", outcome="failed") == 1
    assert sample("deeptrust_model_version", version="2") == 1
    assert sample("deeptrust_model_version", version="1") is None


def test_a_stage_without_follower_is_unchanged(store):
    stage = stage_for(store, None)
    registry = CollectorRegistry()
    stage.register_metrics(registry)
    assert list(registry.collect()) == []
    stage.setup()
    try:
        verdicts = detections(stage, prepared_batch(stage, store, "plain"))
        assert {v.model_version for v in verdicts} == {f"1+{SHIPPED_DIGEST}"}
        assert stage.model_version == "1"
    finally:
        stage.close()


def test_settings_wire_a_follower_only_when_a_model_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("DEEPTRUST_OBJECT_STORE_ROOT", str(tmp_path / "objects"))
    plain = build_stage("detect", ProcessorSettings(), KAFKA)
    assert isinstance(plain, DetectStage)
    assert plain._detector.follower is None
    monkeypatch.setenv("DEEPTRUST_DETECT_FOLLOW", MODEL)
    monkeypatch.setenv("DEEPTRUST_MODEL_CACHE_DIR", str(tmp_path / "models"))
    settings = ProcessorSettings()
    assert (settings.detect_follow, settings.model_cache_dir) == (MODEL, tmp_path / "models")
    following = build_stage("detect", settings, KAFKA)
    assert isinstance(following, DetectStage)
    follower = following._detector.follower
    assert isinstance(follower, ModelFollower)
    assert (follower.model, follower.topic) == (MODEL, "unit.models.v1")
    assert follower.spec == settings.model_spec("detect")


def test_the_caption_stage_follows_its_own_model_when_its_backend_can_load_one(
    monkeypatch, tmp_path
):
    monkeypatch.setenv("DEEPTRUST_OBJECT_STORE_ROOT", str(tmp_path / "objects"))
    plain = build_stage("caption", ProcessorSettings(), KAFKA)
    assert isinstance(plain, CaptionStage)
    assert plain._captioner.follower is None
    monkeypatch.setenv("DEEPTRUST_CAPTION_FOLLOW", "deeptrust-captioner")
    with pytest.raises(ValueError, match="cannot follow models of backend 'image-statistics'"):
        build_stage("caption", ProcessorSettings(), KAFKA)
    monkeypatch.setenv("DEEPTRUST_CAPTION_BACKEND", "hf-blip")
    settings = ProcessorSettings()
    following = build_stage("caption", settings, KAFKA)
    assert isinstance(following, CaptionStage)
    follower = following._captioner.follower
    assert isinstance(follower, ModelFollower)
    assert follower.model == "deeptrust-captioner"
    assert follower.spec == settings.model_spec("caption")
    registry = CollectorRegistry()
    following.register_metrics(registry)
    assert (
        registry.get_sample_value(
            "deeptrust_model_version",
            {"stage": "caption", "model": "deeptrust-captioner", "version": "1"},
        )
        == 1
    )


def test_the_cache_keeps_what_serves_and_two_spares(store, tmp_path):
    cache = ArtefactCache(store, tmp_path / "cache")
    cache.directory.mkdir()
    for age, sha in enumerate("abcde"):
        artefact = cache.directory / f"{sha * 64}.tar.gz"
        artefact.write_bytes(b"x")
        (cache.directory / f"{sha * 64}.d").mkdir()
        os.utime(artefact, (1000 + age, 1000 + age))  # a is the oldest, e the newest
        os.utime(cache.directory / f"{sha * 64}.d", (1000 + age, 1000 + age))
    (cache.directory / ".staging-in-flight").mkdir()
    doomed = cache.prune(keep={"a" * 64})
    assert sorted(doomed) == ["b" * 64, "c" * 64], "the kept one and the 2 newest others stay"
    left = sorted(path.name for path in cache.directory.iterdir())
    assert left == [
        ".staging-in-flight",
        *(f"{sha * 64}{suffix}" for sha in "ade" for suffix in (".d", ".tar.gz")),
    ]
