"""Retrain request → MLflow run and registered candidate → replay canary → promotion → the
running detect stage serves the new version, on the real broker and a real tracking server.

Runs in .venv-train (torch and mlflow); the main environment skips it.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

mlflow = pytest.importorskip("mlflow")
pytest.importorskip("torch")

from confluent_kafka.admin import AdminClient  # noqa: E402

from deeptrust.devtools.mlflow_server import LocalTrackingServer  # noqa: E402
from deeptrust.schemas.events import (  # noqa: E402
    DetectedEvent,
    ModelUpdateEvent,
)
from deeptrust.streams.producer import produce_one  # noqa: E402
from deeptrust.streams.reader import read_to_end  # noqa: E402
from deeptrust.streams.topics import Topic  # noqa: E402
from deeptrust.training.service.seed_dataset import GENERATED  # noqa: E402
from tests.conftest import run_cli, wait_for  # noqa: E402
from tests.events import retrain_request  # noqa: E402
from tests.images import sample_paths, small_photo  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
HEADLINE = ("accuracy", "precision", "recall", "f1", "roc_auc", "ece", "brier")
CONFIG = """
[train]
backbone = "mobilenet-blocks"
epochs = 12
batch_size = 64
learning_rate = 0.01
weight_decay = 0.001

[train.sweep]
learning_rate = [0.01, 0.03]
"""


@pytest.fixture
def training_env(tracking: LocalTrackingServer, store, tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "train.toml"
    config.write_text(CONFIG, encoding="utf-8")
    suffix = uuid.uuid4().hex[:8]
    return {
        "DEEPTRUST_TRAINING_TRACKING_URI": tracking.tracking_uri,
        "DEEPTRUST_TRAINING_EXPERIMENT": f"e2e-{suffix}",
        "DEEPTRUST_TRAINING_REGISTERED_MODEL": f"detector-{suffix}",
        "DEEPTRUST_TRAINING_CONFIG": str(config),
        "DEEPTRUST_TRAINING_WORK_DIR": str(tmp_path / "training"),
        "DEEPTRUST_TRAINING_SEED_DATASET_DIR": str(tmp_path / "seed"),
        "DEEPTRUST_TRAINING_SEED_REAL_COUNT": "160",
        "DEEPTRUST_OBJECT_STORE_ROOT": str(store.root),
    }


def model_updates(kafka, topics) -> list[ModelUpdateEvent]:
    return [r.event for r in read_to_end(kafka, topics(Topic.MODELS), ModelUpdateEvent, 30)]


def generated_pngs(count: int) -> list[bytes]:
    return [path.read_bytes() for path in sorted(GENERATED.rglob("*.png"))[:count]]


def test_a_retrain_request_becomes_a_canaried_promoted_model_the_stage_serves(
    kafka, topics, store, uploads, start_stage, training_env, tmp_path
):
    model = training_env["DEEPTRUST_TRAINING_REGISTERED_MODEL"]
    detect = start_stage("detect", DEEPTRUST_DETECT_FOLLOW=model)

    photos = [small_photo(path, 160) for path in sample_paths()]
    images = photos * 2 + generated_pngs(8)
    for index, data in enumerate(images):
        uploads.upload(data, f"{index}.png", image_id=f"before-{index}")
    uploads.flush()

    def detected() -> list[DetectedEvent]:
        return [r.event for r in read_to_end(kafka, topics(Topic.DETECTED), DetectedEvent, 30)]

    wait_for(lambda: len(detected()) >= len(images), 60, "production's verdicts")
    shipped_versions = {event.detection.model_version for event in detected()}
    assert len(shipped_versions) == 1

    # Two human labels on the feedback topic: the training set must grow by them.
    for index in range(2):
        stored = store.put(f"feedback/{index}.jpg", small_photo(sample_paths()[index], 300))
        run_cli(kafka, "feedback", f"fb-{index}", "real", "--uri", stored.uri, "--reviewer", "ann")

    request = retrain_request(str(uuid.uuid4()))
    produce_one(kafka, topics(Topic.RETRAIN), request, request.key)
    retrain = start_stage("retrain", **training_env)
    wait_for(lambda: len(model_updates(kafka, topics)) >= 1, 300, "the candidate's announcement")
    (candidate,) = model_updates(kafka, topics)
    assert candidate.alias == "candidate"
    assert candidate.request_id == request.event_id
    assert candidate.model == model
    assert candidate.backend == "mobilenet-blocks"

    client = mlflow.MlflowClient(training_env["DEEPTRUST_TRAINING_TRACKING_URI"])
    run = client.get_run(candidate.run_id)
    metrics = run.data.metrics
    assert set(HEADLINE) <= metrics.keys()
    assert metrics["quality/feedback/accepted"] == 2
    assert any(name.startswith("slice/resolution/") for name in metrics)
    # The seed dataset names each generated image's generator: one row per family.
    assert {"family/dcgan/ap", "family/vae/ap", "family/vae/tpr_5"} <= metrics.keys()
    assert run.data.tags["deeptrust.request_id"] == request.event_id
    artefacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert {
        "evaluation/confusion_matrix.png",
        "evaluation/reliability.png",
        "evaluation/families.md",
    } <= artefacts
    assert client.list_artifacts(run.info.run_id, "manifests")
    children = client.search_runs(
        [run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )
    assert len(children) == 2, "one nested run per grid point"
    assert all("val_loss" in child.data.metrics for child in children)
    assert client.get_model_version_by_alias(model, "candidate").version == candidate.version

    # The same request again (a redelivery): answered from the registry, not retrained.
    produce_one(kafka, topics(Topic.RETRAIN), request, request.key)
    wait_for(lambda: len(model_updates(kafka, topics)) >= 2, 120, "the repeated answer")
    repeated = model_updates(kafka, topics)[1]
    assert (repeated.event_id, repeated.version) == (candidate.event_id, candidate.version)
    assert len(client.search_model_versions(f"name = '{model}'")) == 1
    retrain.terminate()

    # Gates that cannot pass: the canary runs, reports, and refuses to promote.
    strict = tmp_path / "strict.toml"
    strict.write_text("[gates]\nmin_images_per_s = 1e9\n", encoding="utf-8")
    canary = ["replay", "--version", candidate.version, "--from-offset", "0"]
    refused = run_cli(
        kafka, *canary, "--gates", str(strict), timeout_s=300, env=training_env, fails=True
    )
    assert "FAIL images_per_s" in refused
    assert "no evidence" in refused, "24 uploads fit one batch: no throughput measured"
    assert "not promoted" in refused
    assert [u.alias for u in model_updates(kafka, topics)] == ["candidate", "candidate"]

    # Gates that hold: promoted, and the running detect stage swaps without a restart.
    lenient = tmp_path / "lenient.toml"
    lenient.write_text("[gates]\nmin_agreement = 0.5\nmax_mean_abs_shift = 0.5\n", "utf-8")
    output = run_cli(kafka, *canary, "--gates", str(lenient), timeout_s=300, env=training_env)
    assert "PASS agreement" in output
    assert "no production model to compare with" in output
    assert "promoted to production" in output
    admin = AdminClient(kafka.client_config())

    def canary_topics() -> list[str]:
        listed = admin.list_topics(timeout=10).topics
        return [name for name in listed if name.startswith(f"{kafka.topic_prefix}canary-")]

    wait_for(lambda: not canary_topics(), 30, "the canary's topics to be deleted")
    assert client.get_model_version_by_alias(model, "production").version == candidate.version
    promoted = f"{candidate.version}+"

    def serves_promoted() -> bool:
        uploads.upload(photos[0], "after.jpg", image_id=f"after-{uuid.uuid4().hex[:6]}")
        uploads.flush()
        return any(e.detection.model_version.startswith(promoted) for e in detected())

    wait_for(serves_promoted, 60, "the detect stage to serve the promoted version")
    assert detect.returncode is None, "the stage was never restarted"
    assert detect.log_path.read_text(errors="replace").count("stage detect consuming") == 1
