"""A probe retrain job's recovery paths, against a real local MLflow server and object store.

A retry on changed data trains afresh (and on the same data resumes), a redelivered request
restores its version's ``candidate`` alias, and the run records which production version
it scored, which the canary checks before trusting the F1 comparison. The data is a small
Kaggle-layout folder (40 real crops, 40 generated images), so each job takes seconds.

Runs in .venv-train (torch and mlflow); the main environment skips it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

mlflow = pytest.importorskip("mlflow")
pytest.importorskip("torch")

from deeptrust.streams.objectstore import FetchPolicy, S3ObjectStore, content_hash  # noqa: E402
from deeptrust.training.canary.run import production_baseline  # noqa: E402
from deeptrust.training.datasets.kaggle_ai_vs_human import INDEX_FILE  # noqa: E402
from deeptrust.training.datasets.split import is_test  # noqa: E402
from deeptrust.training.service import job as job_module  # noqa: E402
from deeptrust.training.service.job import RetrainJob  # noqa: E402
from deeptrust.training.service.seed_dataset import build_seed_dataset  # noqa: E402
from deeptrust.training.tracking.registry import PRODUCTION_SCORED_TAG  # noqa: E402
from tests.training.conftest import job_settings  # noqa: E402

EPOCHS = 3
CONFIG = f"""
[train]
epochs = {EPOCHS}
batch_size = 16
learning_rate = 0.03
device = "cpu"
"""
PER_CLASS = 40


@pytest.fixture(scope="module")
def seed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_seed_dataset(tmp_path_factory.mktemp("seed"), real_count=PER_CLASS)


def small_dataset(seed: Path, folder: Path) -> tuple[Path, list[str]]:
    """``PER_CLASS`` rows of each label in the Kaggle layout; the unused generated rows."""
    header, *rows = (seed / INDEX_FILE).read_text(encoding="utf-8").splitlines()
    real = [row for row in rows if row.split(",")[1] == "0"]
    generated = [row for row in rows if row.split(",")[1] == "1"]
    # Alternate the two generators so both are in every split.
    generated.sort(key=lambda row: (int(row.split("/")[2][:4]), row))
    folder.mkdir(parents=True)
    for name in ("real", "generated"):
        (folder / name).symlink_to(seed / name, target_is_directory=True)
    index = [header, *real[:PER_CLASS], *generated[:PER_CLASS]]
    (folder / INDEX_FILE).write_text("\n".join(index) + "\n", encoding="utf-8")
    return folder, generated[PER_CLASS:]


def add_training_row(folder: Path, spare: list[str]) -> None:
    """One more labelled image, one the content split puts on the training side."""
    for row in spare:
        data = (folder / row.split(",")[0]).read_bytes()
        if not is_test(hashlib.sha256(data).hexdigest()):
            with (folder / INDEX_FILE).open("a", encoding="utf-8") as index:
                index.write(row + "\n")
            return
    raise AssertionError("no spare image lands on the training side")


@pytest.fixture
def dataset(seed: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    return small_dataset(seed, tmp_path / "dataset")


@pytest.fixture
def job(tracking, store, tmp_path, dataset) -> RetrainJob:
    settings = job_settings(tracking, tmp_path, CONFIG, datasets=[dataset[0]])
    return RetrainJob(settings, store, None)


def child_params(client, run_id: str) -> list[dict[str, str]]:
    run = client.get_run(run_id)
    children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'")
    return [child.data.params for child in children]


class Died(RuntimeError):
    """The job dying after its grid points trained, before registration."""


def test_a_retry_on_changed_data_trains_afresh_and_on_the_same_data_resumes(
    job, dataset, monkeypatch
):
    folder, spare = dataset
    client = job.registry.client
    runs: list[str] = []
    evaluate = RetrainJob._evaluate

    def die(self, candidate, data, scratch):
        runs.append(mlflow.active_run().info.run_id)
        raise Died("killed after training")

    monkeypatch.setattr(job_module.RetrainJob, "_evaluate", die)
    with pytest.raises(Died):
        job.run("request-1")
    assert [p["resumed_from"] for p in child_params(client, runs[0])] == ["None"]

    # The same data: the retry resumes the finished grid point from its checkpoint.
    with pytest.raises(Died):
        job.run("request-1")
    assert [p["resumed_from"] for p in child_params(client, runs[1])] == [str(EPOCHS)]

    # A new label between attempts: other data, so a fresh run, not "refusing to mix runs".
    add_training_row(folder, spare)
    monkeypatch.setattr(job_module.RetrainJob, "_evaluate", evaluate)
    outcome = job.run("request-1")
    assert [p["resumed_from"] for p in child_params(client, outcome.run_id)] == ["None"]
    assert not job.checkpoints_of("request-1").exists(), "registered: checkpoints go"


def test_a_redelivered_request_restores_its_candidate_alias(job):
    outcome = job.run("request-1")
    client, name = job.registry.client, job.registry.name
    assert job.registry.version_of("candidate") == outcome.version
    # A crash between registering and aliasing leaves the version without its alias.
    client.delete_registered_model_alias(name, "candidate")

    again = job.run("request-1")
    assert (again.version, again.event.event_id) == (outcome.version, outcome.event.event_id)
    assert job.registry.version_of("candidate") == outcome.version
    assert len(client.search_model_versions(f"name = '{name}'")) == 1

    # A later request's candidate is not taken back by an old request's redelivery.
    later = job.run("request-2")
    job.run("request-1")
    assert job.registry.version_of("candidate") == later.version


def test_the_job_records_the_production_it_scored_and_the_canary_checks_it(job):
    client = job.registry.client
    first = job.run("request-1")
    assert client.get_run(first.run_id).data.tags[PRODUCTION_SCORED_TAG] == "none"
    assert production_baseline(job.registry, first.version).current is None

    job.registry.set_alias("production", first.version)
    assert production_baseline(job.registry, first.version).stale, "scored none, one exists"
    second = job.run("request-2")
    assert client.get_run(second.run_id).data.tags[PRODUCTION_SCORED_TAG] == first.version
    assert "production/f1" in client.get_run(second.run_id).data.metrics
    baseline = production_baseline(job.registry, second.version)
    assert (baseline.scored, baseline.current, baseline.stale) == (
        first.version,
        first.version,
        False,
    )

    # Something else was promoted after the second job scored the first: stale.
    third = job.run("request-3")
    job.registry.set_alias("production", third.version)
    assert production_baseline(job.registry, second.version).stale


def test_on_s3_the_job_stores_its_artefact_in_the_bucket_and_scores_production_from_it(
    tracking, tmp_path, dataset, s3_server, monkeypatch
):
    bucket = "retrain-on-s3"
    s3_server.create_bucket(bucket)
    for name, value in s3_server.environment(bucket).items():
        monkeypatch.setenv(name, value)
    store = S3ObjectStore(bucket, s3_server.endpoint_url, FetchPolicy(buckets=(bucket,)))
    settings = job_settings(tracking, tmp_path, CONFIG, datasets=[dataset[0]])
    job = RetrainJob(settings, store, None)

    first = job.run("request-1")
    uri = first.event.artifact_uri
    assert uri.startswith(f"s3://{bucket}/")
    key = uri.removeprefix(f"s3://{bucket}/")
    held = s3_server.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    assert content_hash(held) == first.event.artifact_sha256

    # Scoring production means fetching its artefact back from the bucket.
    job.registry.set_alias("production", first.version)
    second = job.run("request-2")
    metrics = job.registry.client.get_run(second.run_id).data.metrics
    assert "production/f1" in metrics
