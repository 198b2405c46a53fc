"""A retrain job with an hf-vit config: sweep, evaluation, archive, registration, canary setup.

Against a real local MLflow server and object store, without Kafka (as ``deeptrust retrain
--no-feedback`` runs a job). The model is the tiny random ViT of tests/torch/tiny.py and the
data a small seed dataset, so the whole job takes seconds and downloads nothing.

Runs in .venv-train (torch, transformers, mlflow); the main environment skips it.
"""

from __future__ import annotations

import hashlib
import json

import pytest

mlflow = pytest.importorskip("mlflow")
pytest.importorskip("torch")
pytest.importorskip("transformers")

from deeptrust.processors.artefact_archive import unpack_archive  # noqa: E402
from deeptrust.processors.models import load_model  # noqa: E402
from deeptrust.processors.settings import ProcessorSettings  # noqa: E402
from deeptrust.streams.images import decode_image  # noqa: E402
from deeptrust.training.canary.run import _candidate_detector  # noqa: E402
from deeptrust.training.service.job import RetrainJob  # noqa: E402
from deeptrust.training.tracking.registry import ARTIFACT_SHA_TAG, ARTIFACT_URI_TAG, BACKEND_TAG  # noqa: E402
from tests.images import sample_paths  # noqa: E402
from tests.torch.tiny import tiny_vit  # noqa: E402
from tests.training.conftest import job_settings  # noqa: E402

HEADLINE = ("accuracy", "precision", "recall", "f1", "roc_auc", "ece", "brier")
EPOCHS = 2
CONFIG = """
[train]
backbone = "hf-vit"
model = "{model}"
epochs = {epochs}
batch_size = 32
accumulation_steps = 2
learning_rate = 0.001
device = "cpu"

[train.sweep]
learning_rate = [0.001, 0.003]
"""


@pytest.fixture
def job(tracking, store, tmp_path) -> RetrainJob:
    model = tiny_vit(tmp_path / "vit", labels={0: "cat", 1: "dog", 2: "car"})
    config = CONFIG.format(model=model, epochs=EPOCHS)
    settings = job_settings(
        tracking, tmp_path, config, seed_dataset_dir=tmp_path / "seed", seed_real_count=40
    )
    return RetrainJob(settings, store, None)


def test_an_hf_vit_job_registers_an_archive_that_the_detect_stage_loads(job, store, tmp_path):
    outcome = job.run("request-1")
    event = outcome.event
    name = job.registry.name
    assert (event.alias, event.backend, event.request_id) == ("candidate", "hf-vit", "request-1")
    assert set(HEADLINE) <= event.metrics.keys()

    # The artefact: a tar.gz in the object store under its SHA-256, as registered.
    data = store.get(event.artifact_uri)
    sha256 = hashlib.sha256(data).hexdigest()
    assert event.artifact_sha256 == sha256
    assert event.artifact_uri.endswith(f"models/{name}/{sha256}.tar.gz")
    version = job.registry.client.get_model_version(name, outcome.version)
    assert version.tags[BACKEND_TAG] == "hf-vit"
    assert (version.tags[ARTIFACT_URI_TAG], version.tags[ARTIFACT_SHA_TAG]) == (
        event.artifact_uri,
        sha256,
    )
    assert job.registry.version_of("candidate") == outcome.version
    unpacked = unpack_archive(data, tmp_path / "unpacked")
    record = json.loads((unpacked / "deeptrust_training.json").read_text())
    assert record["request_id"] == "request-1"
    assert record["run_id"] == outcome.run_id

    # The run: headline metrics, slices, plots, the archive, one nested run per grid point.
    client = mlflow.MlflowClient(job.registry.client.tracking_uri)
    run = client.get_run(outcome.run_id)
    assert set(HEADLINE) <= run.data.metrics.keys()
    assert any(metric.startswith("slice/") for metric in run.data.metrics)
    assert run.data.params["backbone"] == "hf-vit"
    assert run.data.params["best.model"] == str(tmp_path / "vit")
    artefacts = {a.path for a in client.list_artifacts(outcome.run_id, "detector")}
    assert artefacts == {"detector/model.tar.gz"}
    evaluation = {a.path for a in client.list_artifacts(outcome.run_id, "evaluation")}
    assert {"evaluation/confusion_matrix.png", "evaluation/reliability.png"} <= evaluation
    children = client.search_runs(
        [run.info.experiment_id], f"tags.mlflow.parentRunId = '{outcome.run_id}'"
    )
    assert sorted(float(child.data.params["learning_rate"]) for child in children) == [
        0.001,
        0.003,
    ]
    for child in children:
        curve = client.get_metric_history(child.info.run_id, "val_loss")
        assert [point.step for point in curve] == list(range(1, EPOCHS + 1))
        assert child.data.params["used_precision"] == "fp32"
    # Registered: the checkpoints of the request are gone, the answer is the registry's.
    assert not (job._settings.work_dir / "checkpoints" / "request-1").exists()
    assert job.run("request-1").event.event_id == event.event_id

    # The canary's detect stage gets settings that load the archive through hf-vit.
    env = _candidate_detector(store, event, tmp_path / "canary")
    assert env["DEEPTRUST_DETECT_BACKEND"] == "hf-vit"
    stage = ProcessorSettings(
        detect_backend=env["DEEPTRUST_DETECT_BACKEND"],
        model_options=json.loads(env["DEEPTRUST_MODEL_OPTIONS"]),
    )
    detector = load_model(stage.model_spec("detect"))
    photos = [path.read_bytes() for path in sample_paths()]
    verdicts = detector.predict([decode_image(photo).image for photo in photos])
    assert len(verdicts) == len(photos)
    assert all(0.0 <= verdict.ai_probability <= 1.0 for verdict in verdicts)
    tampered = event.model_copy(update={"artifact_sha256": "0" * 64})
    with pytest.raises(ValueError, match="sha256 mismatch"):
        _candidate_detector(store, tampered, tmp_path / "tampered")

    # With that version in production, the next job scores it beside the new candidate.
    job.registry.set_alias("production", outcome.version)
    second = job.run("request-2")
    assert second.version != outcome.version
    metrics = client.get_run(second.run_id).data.metrics
    assert {f"production/{name}" for name in HEADLINE} <= metrics.keys()
