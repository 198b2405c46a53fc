"""Ray Train runs the ViT fine-tune data-parallel, and a worker killed mid-epoch costs nothing.

On a real local Ray cluster (``ray start --head``, started by the project's
``LocalRayCluster``), two Ray Train workers fine-tune the tiny random ViT of
tests/torch/tiny.py on 24 seed-dataset images read from disk. The reader SIGKILLs the worker
process that reads one chosen training image for the second time (in epoch 2), once: Ray
restarts the worker group, every worker copies back the checkpoint epoch 1 reported, and the
run ends with the weights of the same fine-tune run uninterrupted in one process, within
1e-4 absolute (two processes' float32 gradient sums in another order, through three epochs
of AdamW), but for the attention keys' biases (see NOISE_ONLY). A second trainer with the
same run name resumes the finished run instead of training again.

Runs in .venv-train only (torch, transformers, ray).
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("ray.train")

from safetensors.torch import load_file  # noqa: E402

from deeptrust.processors.transformers_backends.common import TRAINING_RECORD  # noqa: E402
from deeptrust.training.datasets.example import read_local  # noqa: E402
from deeptrust.training.datasets.kaggle_ai_vs_human import INDEX_FILE  # noqa: E402
from deeptrust.training.service.data import folder_sources, prepare  # noqa: E402
from deeptrust.training.service.seed_dataset import build_seed_dataset  # noqa: E402
from deeptrust.training.service.vit_recipe import image_dataset  # noqa: E402
from deeptrust.training.trainer import TrainConfig  # noqa: E402
from deeptrust.training.trainer.finetune import fine_tune_sets  # noqa: E402
from deeptrust.training.trainer.ray_train import fine_tune_on_ray  # noqa: E402
from deeptrust.training.trainer.streaming import LoaderOptions  # noqa: E402
from tests.torch.tiny import tiny_vit  # noqa: E402

PER_CLASS = 12
EPOCHS = 3
NOISE_ONLY = "attention.key.bias"
"""A key bias adds one constant to every score of a query, which softmax ignores: its exact
gradient is zero, its float gradient noise, and AdamW's normalised steps turn noise of
either sign into full-size moves. It is the one weight two summation orders cannot agree on."""
IN_PROCESS = LoaderOptions(workers=0)  # the Ray worker itself reads, so the kill hits it


@dataclass(frozen=True)
class KillsOnSecondRead:
    """Reads local files; the process reading ``victim`` for the second time dies, once.

    Pickled to the Ray workers; the reads are counted in files, across processes. Before
    dying it waits until Ray's controller has registered epoch 1's checkpoint (it writes
    its snapshot file then; it collects reports every 2 s): a worker that dies before that
    resumes from the checkpoint before, which is Ray's promise, not this test's.
    """

    victim: str
    tally: Path
    registered: Path

    def __call__(self, uri: str) -> bytes:
        killed = self.tally.with_suffix(".killed")
        if uri == self.victim and not killed.exists():
            with self.tally.open("a", encoding="utf-8") as file:
                file.write("x")
            if len(self.tally.read_text(encoding="utf-8")) == 2:
                deadline = time.monotonic() + 60
                while not self.registered.exists() and time.monotonic() < deadline:
                    time.sleep(0.1)
                killed.touch()
                os.kill(os.getpid(), signal.SIGKILL)
        return read_local(uri)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    seed = build_seed_dataset(tmp_path_factory.mktemp("seed"), real_count=PER_CLASS)
    header, *rows = (seed / INDEX_FILE).read_text(encoding="utf-8").splitlines()
    chosen = [r for r in rows if r.split(",")[1] == "0"][:PER_CLASS]
    chosen += [r for r in rows if r.split(",")[1] == "1"][:PER_CLASS]
    (seed / INDEX_FILE).write_text("\n".join([header, *chosen]) + "\n", encoding="utf-8")
    with tempfile.TemporaryDirectory() as manifests:
        return prepare(folder_sources([seed]), read_local, Path(manifests))


def config(model: Path) -> TrainConfig:
    return TrainConfig(
        backbone="hf-vit",
        model=str(model),
        epochs=EPOCHS,
        batch_size=8,
        learning_rate=1e-3,
        device="cpu",
    )


def test_a_killed_worker_resumes_to_the_uninterrupted_weights(cluster, data, tmp_path):
    settings = config(tiny_vit(tmp_path / "vit"))
    validation = image_dataset(data.validation, read_local)
    alone = fine_tune_sets(
        image_dataset(data.train, read_local),
        validation,
        settings,
        tmp_path / "alone",
        tmp_path / "alone-checkpoints",
        loading=IN_PROCESS,
    )
    victim = data.train[0].example.uri
    snapshot = Path(cluster.storage) / "killed" / "checkpoint_manager_snapshot.json"
    reader = KillsOnSecondRead(victim, tmp_path / "victim-reads", snapshot)
    train = image_dataset(data.train, reader)

    on_ray = fine_tune_on_ray(
        train, validation, settings, tmp_path / "ray", cluster, "killed", IN_PROCESS
    )

    assert reader.tally.with_suffix(".killed").exists(), "no worker was killed"
    assert on_ray.resumed_from == 1  # the restarted group began after epoch 1's checkpoint
    assert on_ray.metadata["processes"] == 2
    assert [s.epoch for s in on_ray.history] == list(range(1, EPOCHS + 1))
    assert on_ray.best_epoch == alone.best_epoch
    for ours, theirs in zip(on_ray.history, alone.history, strict=True):
        assert ours.val_loss == pytest.approx(theirs.val_loss, abs=1e-4)
    expected = load_file(alone.output_dir / "model.safetensors")
    weights = load_file(on_ray.output_dir / "model.safetensors")
    assert weights.keys() == expected.keys()
    initial = load_file(tmp_path / "vit" / "model.safetensors")
    moved = sum(
        float((expected[name] - tensor).abs().sum())
        for name, tensor in initial.items()
        if name in expected and tensor.shape == expected[name].shape
    )
    assert moved > 0.1  # training changed the weights, so equality means something
    for name, tensor in expected.items():
        if name.endswith(NOISE_ONLY):
            continue
        torch.testing.assert_close(weights[name], tensor, atol=1e-4, rtol=0, msg=name)

    again = fine_tune_on_ray(
        train, validation, settings, tmp_path / "again", cluster, "killed", IN_PROCESS
    )
    assert again.resumed_from == EPOCHS  # found every epoch done: nothing trained twice
    for name, tensor in load_file(again.output_dir / "model.safetensors").items():
        torch.testing.assert_close(tensor, weights[name], atol=0, rtol=0, msg=name)


def test_a_retrain_job_given_a_ray_address_fine_tunes_there(cluster, tracking, store, tmp_path):
    from mlflow import MlflowClient

    from deeptrust.processors.artefact_archive import unpack_archive
    from deeptrust.training.service.job import RetrainJob
    from tests.training.conftest import job_settings

    model = tiny_vit(tmp_path / "vit")
    text = (
        f'[train]\nbackbone = "hf-vit"\nmodel = "{model}"\nepochs = 2\nbatch_size = 16\n'
        'learning_rate = 1e-3\ndevice = "cpu"\n'
    )
    settings = job_settings(
        tracking,
        tmp_path,
        text,
        seed_dataset_dir=tmp_path / "seed",
        seed_real_count=40,
        loader_workers=0,
        ray_address=cluster.address,
        ray_storage=cluster.storage,
    )
    job = RetrainJob(settings, store, None)

    outcome = job.run("request-on-ray")

    record = json.loads(
        (unpack_archive(store.get(outcome.event.artifact_uri), tmp_path / "unpacked"))
        .joinpath(TRAINING_RECORD)
        .read_text(encoding="utf-8")
    )
    assert (record["processes"], record["request_id"]) == (2, "request-on-ray")
    client = MlflowClient(tracking.tracking_uri)
    (child,) = client.search_runs(
        [client.get_run(outcome.run_id).info.experiment_id],
        f"tags.mlflow.parentRunId = '{outcome.run_id}'",
    )
    curve = client.get_metric_history(child.info.run_id, "val_loss")
    assert sorted(point.step for point in curve) == [1, 2]  # the epochs, logged by the driver
    # Registered: the request's Ray runs and checkpoints are gone with its own.
    assert not (Path(cluster.storage) / "request-on-ray").exists()
    assert job.registry.version_for_request("request-on-ray") == outcome.version
