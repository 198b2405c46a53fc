"""The drift processor on a real broker, fed by the project's embedding model.

Embeddings of random crops of real photographs go to one partition (so the windows are
the same on every run). An unshifted stream yields reports and no retrain request; the
processor is then killed mid-window and restarted; a blurred stream yields exactly one
retrain request with its evidence, and no window is judged twice.
"""

import time
from datetime import UTC, datetime

import numpy as np
import pytest
from confluent_kafka import Producer
from PIL import Image

import deeptrust.processors.registry  # noqa: F401 - registers the model backends
from deeptrust.drift.shifts import blur, random_crops
from deeptrust.processors.models import load_model
from deeptrust.processors.settings import ProcessorSettings
from deeptrust.schemas.events import (
    AlertEvent,
    DriftReportEvent,
    EmbeddingEvent,
    RetrainRequestEvent,
)
from deeptrust.streams.codec import encode
from deeptrust.streams.reader import read_to_end
from deeptrust.streams.topics import Topic
from tests.conftest import run_cli, wait_for
from tests.images import sample_paths

pytestmark = pytest.mark.integration
REFERENCE, WINDOW = 300, 100


@pytest.fixture(scope="module")
def embedder():
    return load_model(ProcessorSettings().model_spec("embed"))


def send_embeddings(producer, topics, embedder, images, prefix, start_at):
    vectors = embedder.predict(images)
    ids = []
    for index, vector in enumerate(vectors):
        image_id = f"{prefix}-{index}"
        event = EmbeddingEvent(
            event_id=f"{image_id}-e",
            image_id=image_id,
            uploaded_at=datetime.fromtimestamp(start_at + index, UTC),
            model=embedder.spec.label,
            model_version=embedder.spec.version,
            vector=vector,
        )
        encoded = encode(event, image_id)
        producer.produce(
            topics(Topic.EMBEDDINGS),
            partition=0,
            key=encoded.key,
            value=encoded.value,
            headers=encoded.headers,
            timestamp=int((start_at + index) * 1000),
        )
        ids.append(image_id)
    assert producer.flush(30) == 0, "every embedding delivered"
    return ids


def reports(kafka, topics):
    return [r.event for r in read_to_end(kafka, topics(Topic.DRIFT), DriftReportEvent, 30)]


def test_unshifted_stream_is_quiet_and_a_shift_asks_for_retraining_once(
    kafka, topics, start_stage, embedder, tmp_path
):
    photos = [Image.open(path).convert("RGB") for path in sample_paths()]
    rng = np.random.default_rng(11)
    env = {
        "DEEPTRUST_DRIFT_REFERENCE_SIZE": str(REFERENCE),
        "DEEPTRUST_DRIFT_WINDOW_SIZE": str(WINDOW),
        "DEEPTRUST_DRIFT_MIN_COUNT": "20",
        "DEEPTRUST_DRIFT_REFERENCE_DIR": str(tmp_path / "references"),
    }
    producer = Producer(kafka.client_config())
    clock = time.time() - 86_400  # event time in the past: brokers refuse future stamps
    send_embeddings(
        producer, topics, embedder, random_crops(photos, REFERENCE + 350, rng), "calm", clock
    )
    clock += REFERENCE + 350

    first = start_stage("drift", **env)
    wait_for(lambda: len(reports(kafka, topics)) >= 3, 60, "three reports on the calm stream")
    wait_for(
        lambda: first.metric("deeptrust_consumed_total") >= REFERENCE + 350, 30, "the open window"
    )
    calm = reports(kafka, topics)
    assert [r.window.index for r in calm] == [0, 1, 2]
    assert not any(r.is_drift for r in calm), [r.verdicts for r in calm]
    assert read_to_end(kafka, topics(Topic.RETRAIN), RetrainRequestEvent, 30) == []

    first.kill()  # 50 calm embeddings are in the open window, not yet judged
    second = start_stage("drift", **env)
    shifted = random_crops(photos, 350, rng)
    shifted_ids = send_embeddings(
        producer, topics, embedder, [blur(3)(image) for image in shifted], "blurred", clock
    )
    wait_for(lambda: len(reports(kafka, topics)) >= 7, 60, "four more reports")
    wait_for(lambda: second.metric("deeptrust_consumed_total") >= 350, 30, "the whole stream")

    judged = reports(kafka, topics)
    assert [r.window.index for r in judged] == list(range(7)), "no window lost or repeated"
    assert [r.window.size for r in judged] == [WINDOW] * 7
    assert all(r.is_drift for r in judged[4:]), "every all-blurred window drifts"
    requests = read_to_end(kafka, topics(Topic.RETRAIN), RetrainRequestEvent, 30)
    assert len(requests) == 1, "one shift, one request"
    request = requests[0].event
    assert request.window.index in (3, 4), "asked within two windows of the shift"
    (verdict,) = request.verdicts
    assert verdict.statistic > verdict.threshold
    assert request.reference_digest == judged[0].reference_digest
    assert request.drift_report_id == judged[request.window.index].event_id
    assert set(request.window.sample_image_ids) & set(shifted_ids)
    alerts = [a.event for a in read_to_end(kafka, topics(Topic.ALERTS), AlertEvent, 30)]
    assert [a.kind for a in alerts].count("drift-reference") == 1
    assert sum(a.kind == "drift" for a in alerts) == sum(r.is_drift for r in judged)

    out = tmp_path / "report"
    drawn = run_cli(kafka, "drift", "report", "--out", str(out))
    key = f"{request.model}@{request.model_version}".replace("@", "_")
    assert sorted(p.name for p in out.iterdir()) == [
        f"{key}-timeline.png",
        f"{key}-worst-window.png",
    ], drawn
