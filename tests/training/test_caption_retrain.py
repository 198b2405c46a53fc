"""A captioner retrain job, end to end on a real MLflow server and object store.

A Flickr30k-layout folder (``results.csv`` in the published ``|`` format, JPEG colour fields
captioned by their colour) trains a LoRA adapter on the tiny random BLIP of
tests/torch/tiny.py (its narrow weights: it learns in seconds), which is also production's
captioner here. The job scores both on the
test split with BLEU-4 and CIDEr-D, registers the adapter as the ``candidate``, and the
archive in the store is what the caption stage's backend serves. A redelivered request gets
the same version. Promoted, the version reaches a caption stage that follows the captioner
(its models topic in memory, as tests/unit/test_model_follower.py has it), which swaps it in
between two batches.

Runs in .venv-train only (torch, transformers, peft, mlflow).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("mlflow")

from datetime import UTC, datetime

from confluent_kafka.admin import AdminClient
from PIL import Image

import deeptrust.processors.registry  # noqa: F401 - registers the model backends
from deeptrust.processors.artefact_archive import unpack_archive
from deeptrust.processors.caption import CaptionStage
from deeptrust.processors.model_follower import ModelFollower
from deeptrust.processors.models import ModelSpec, load_model
from deeptrust.processors.transformers_backends.common import TRAINING_RECORD
from deeptrust.schemas.events import DetectedEvent, Detection, ModelUpdateEvent
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.producer import produce_one
from deeptrust.streams.reader import read_to_end
from deeptrust.streams.topics import Topic
from deeptrust.training.canary.caption_canary import CaptionGates, run_caption_canary
from deeptrust.training.canary.replay import ReplayRange
from deeptrust.training.canary.run import CanaryEnvironment
from deeptrust.training.datasets.flickr30k import IMAGE_FOLDER, INDEX_FILE
from deeptrust.training.service.caption_job import CaptionRetrainJob
from tests.torch.tiny import tiny_blip
from tests.training.conftest import job_settings
from tests.unit.test_model_follower import FakeConsumer, wait_until

COLOURS = {
    (200, 30, 30): ("a red cup", "the red coffee cup", "a red coffee cup"),
    (30, 40, 210): ("a blue sky", "the blue sky", "a blue sky in the city"),
    (30, 180, 40): ("a green street", "a green city street", "the green street"),
}
IMAGES = 60
KAFKA = KafkaSettings(bootstrap_servers="127.0.0.1:1", topic_prefix="unit.")  # never dialled
SIDE = 64  # the quality checks' smallest side


def flickr_folder(folder: Path) -> Path:
    """``IMAGES`` noisy colour-field JPEGs and their references, in Flickr30k's layout."""
    rng = np.random.default_rng(0)
    (folder / IMAGE_FOLDER).mkdir(parents=True)
    lines = ["image_name| comment_number| comment"]
    for index in range(IMAGES):
        rgb, refs = list(COLOURS.items())[index % len(COLOURS)]
        noise = rng.integers(-25, 26, (SIDE, SIDE, 3))
        pixels = np.clip(np.array(rgb)[None, None, :] + noise, 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=92)
        name = f"{1000 + index}.jpg"
        (folder / IMAGE_FOLDER / name).write_bytes(buffer.getvalue())
        lines += [f"{name}| {number}| {ref}" for number, ref in enumerate(refs)]
    (folder / INDEX_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def caption_job(tracking, store, tmp_path: Path) -> tuple[CaptionRetrainJob, ModelSpec]:
    """A job on its own registered model, trained from a narrow tiny BLIP, also production's."""
    base = tiny_blip(tmp_path / "blip", spread=0.1)
    config = tmp_path / "captioner.toml"
    config.write_text(
        f'[caption]\nmodel = "{base}"\nepochs = 8\nbatch_size = 6\nlearning_rate = 1e-2\n'
        'device = "cpu"\nmax_new_tokens = 8\n',
        encoding="utf-8",
    )
    settings = job_settings(
        tracking,
        tmp_path,
        "[train]\n",
        caption_datasets=[flickr_folder(tmp_path / "flickr")],
        caption_config=config,
        caption_registered_model=f"captioner-{tmp_path.name[-8:]}",
        caption_experiment=f"captions-{tmp_path.name[-8:]}",
        loader_workers=0,
    )
    production = ModelSpec("caption", "hf-blip", "hf-blip", "base", {"path": str(base)})
    return CaptionRetrainJob(settings, store, production, max_pixels=10_000_000), production


def test_a_caption_job_trains_scores_and_registers_an_adapter_once(tracking, store, tmp_path):
    job, production = caption_job(tracking, store, tmp_path)
    base = Path(production.options["path"])

    outcome = job.run("caption-request")
    assert set(outcome.metrics) == {"bleu4", "cider_d"}  # the headline, as announced

    from mlflow import MlflowClient

    run = MlflowClient(tracking.tracking_uri).get_run(outcome.run_id)
    metrics = run.data.metrics
    for name in ("bleu4", "cider_d", "production/bleu4", "production/cider_d"):
        assert name in metrics, name
    # The adapter learned the colours' words; the random base captions at random.
    assert metrics["cider_d"] > metrics["production/cider_d"] + 1.0
    assert run.data.params["adapter"] == "lora"
    assert job.registry.version_of("candidate") == outcome.version

    event = job.registry.update_event(outcome.version, "candidate")
    assert event.backend == "hf-blip"
    folder = unpack_archive(store.get(event.artifact_uri), tmp_path / "unpacked")
    record = json.loads((folder / TRAINING_RECORD).read_text(encoding="utf-8"))
    assert record["request_id"] == "caption-request"
    assert record["adapter"]["base_model"] == str(base)
    captioner = load_model(
        ModelSpec("caption", "hf-blip", "hf-blip", options={"path": str(folder)})
    )
    captioner.load()
    red = Image.new("RGB", (SIDE, SIDE), (200, 30, 30))
    assert "red" in captioner.predict([red])[0]
    assert not job.checkpoints_of("caption-request").exists()

    again = job.run("caption-request")
    assert again.version == outcome.version
    assert job.registry.version_for_request("caption-request") == outcome.version

    # Promoted, it reaches a running caption stage between two batches, without a restart.
    job.registry.set_alias("production", outcome.version)
    promotion = job.registry.update_event(outcome.version, "production")
    assert (promotion.task, promotion.backend) == ("caption", "hf-blip")
    topic = FakeConsumer()
    follower = ModelFollower(
        KAFKA,
        store,
        job.registry.name,
        production,
        tmp_path / "cache",
        stage="caption",
        start_timeout_s=5,
        poll_timeout_s=0.05,
        consumer_factory=topic,  # type: ignore[arg-type]
    )
    stage = CaptionStage(store, production, 10_000_000, follower)
    stage.setup()
    try:
        assert stage.model_version == "base"
        stored = store.put("images/red.jpg", jpeg(red))
        batch = [stage.prepare(detected(stored.uri, "red"))]
        before = stage.process(batch)[0][0].event.caption
        topic.append(promotion)
        wait_until(lambda: follower.metrics.loaded == 1, 60, "the follower to load the adapter")
        after = stage.process(batch)[0][0].event.caption
        assert stage.model_version == outcome.version
    finally:
        stage.close()
    assert "red" in after.text
    assert after.text != before.text


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def detected(uri: str, image_id: str) -> DetectedEvent:
    verdict = Detection(ai_probability=0.1, label="real", model="m", model_version="1")
    return DetectedEvent(
        event_id=f"detected-{image_id}",
        image_id=image_id,
        uri=uri,
        uploaded_at=datetime.now(UTC),
        width=SIDE,
        height=SIDE,
        detection=verdict,
    )


@pytest.mark.integration
@pytest.mark.timeout(900)
def test_the_caption_canary_replays_detected_images_and_promotes_by_its_gates(
    kafka, topics, tracking, store, tmp_path
):
    job, production = caption_job(tracking, store, tmp_path)
    candidate = job.run("canary-request").version
    # Production's traffic: detected images, and what production's caption stage made of them.
    served = CaptionStage(store, production, 10_000_000)
    served.setup()
    try:
        detected_images = [
            detected(store.put(f"images/{i}.jpg", jpeg(field(rgb))).uri, f"img-{i}")
            for i, rgb in enumerate(list(COLOURS) * 2)
        ]
        for event in detected_images:
            produce_one(kafka, topics(Topic.DETECTED), event, event.image_id)
        for (output,) in served.process([served.prepare(e) for e in detected_images]):
            produce_one(kafka, topics(output.topic), output.event, output.event.image_id)
    finally:
        served.close()
    environment = CanaryEnvironment(
        {
            "DEEPTRUST_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "DEEPTRUST_OBJECT_STORE_ROOT": str(store.root),
            "DEEPTRUST_MODEL_OPTIONS": json.dumps({"caption": {"max_new_tokens": "8"}}),
        },
        tmp_path / "canary",
        ready_timeout_s=240,
        drain_timeout_s=300,
    )
    replayed = ReplayRange(from_offset=0)

    strict = CaptionGates(min_images_per_s=1e9)
    refused = run_caption_canary(
        kafka, store, job.registry, candidate, replayed, strict, environment
    )
    assert not refused.promoted
    assert [g.name for g in refused.gates if not g.passed] == ["images_per_s"]
    assert job.registry.version_of("production") is None

    report = run_caption_canary(
        kafka, store, job.registry, candidate, replayed, CaptionGates(), environment
    )
    comparison = report.comparison
    assert (comparison.replayed, comparison.compared, comparison.error_rate) == (6, 6, 0.0)
    assert comparison.changed > 0.5  # the adapter's captions are not the base's
    assert comparison.empty_rate == 0.0
    assert report.passed, [str(gate) for gate in report.gates]
    assert report.promoted
    assert job.registry.version_of("production") == candidate
    updates = [r.event for r in read_to_end(kafka, topics(Topic.MODELS), ModelUpdateEvent, 30)]
    assert [(u.alias, u.task, u.version) for u in updates] == [("production", "caption", candidate)]
    listed = AdminClient(kafka.client_config()).list_topics(timeout=10).topics
    assert not [name for name in listed if name.startswith(f"{kafka.topic_prefix}canary-")]


def field(rgb: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", (SIDE, SIDE), rgb)
