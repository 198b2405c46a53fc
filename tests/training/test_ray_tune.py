"""Ray Tune runs the probe sweep: every grid point a trial, a killed trial retried, ASHA's stops.

On the session's local Ray head (tests/training/conftest.py), probe heads train on 64-d rows
of two Gaussian classes written to row files. A trial is SIGKILLed once, right after it
reported its second epoch: Tune restarts it from its last persisted checkpoint and every
trial ends with the head the same config gets in one uninterrupted in-process run. An ASHA
search stops the trials whose learning rate is far too small, and lets the best one finish.
A retrain job on the cluster sweeps through Tune, logs one nested run per trial and is
answered once: a redelivered request gets the same version.

Runs in .venv-train only (torch, ray).
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("ray.tune")

from deeptrust.training.trainer import TrainConfig, expand_sweep  # noqa: E402
from deeptrust.training.trainer.config import SearchConfig  # noqa: E402
from deeptrust.training.trainer.loop import train_probe_rows  # noqa: E402
from deeptrust.training.trainer.ray_tune import (  # noqa: E402
    ProbeTrial,
    Reporter,
    ShippedRows,
    sweep_on_ray,
    sweep_points,
)
from deeptrust.training.trainer.rows import RowFile, write_row_file  # noqa: E402
from deeptrust.training.trainer.runtime import EpochStats  # noqa: E402

DIM = 64
EPOCHS = 4


def row_file(path: Path, count: int, seed: int) -> RowFile:
    """Two overlapping Gaussian classes, half each: a probe learns them over several epochs."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 2
    rows = rng.normal(size=(count, DIM)) + 0.35 * labels[:, None]
    keys = [f"{seed}-{index}" for index in range(count)]
    by_key = dict(zip(keys, rows, strict=True))
    return write_row_file(path, keys, labels.astype(np.float64), by_key.__getitem__, "test")


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> tuple[RowFile, RowFile]:
    folder = tmp_path_factory.mktemp("rows")
    return row_file(folder / "train.f32", 256, 1), row_file(folder / "validation.f32", 128, 2)


@dataclass(frozen=True)
class KillsOnce:
    """A probe trial whose process dies once, after reporting ``victim``'s second epoch.

    Every start of a trial appends its learning rate and the epoch its checkpoint folder
    resumes after (0: none) to ``starts``, across processes. A function trial's
    ``tune.report`` returns once the driver has taken the result (Tune reports
    synchronously), so the retry resumes after epoch 2.
    """

    trial: ProbeTrial
    victim: float
    starts: Path

    def __call__(self, config: TrainConfig, checkpoints: Path, report: Reporter) -> None:
        last = checkpoints / "last.pt"
        after = torch.load(last, weights_only=True)["epoch"] if last.exists() else 0
        with self.starts.open("a", encoding="utf-8") as file:
            file.write(f"{config.learning_rate}:{after}\n")
        killed = self.starts.with_suffix(".killed")

        def report_then_die(stats: EpochStats, folder: Path) -> None:
            report(stats, folder)
            if config.learning_rate == self.victim and stats.epoch == 2 and not killed.exists():
                killed.touch()
                os.kill(os.getpid(), signal.SIGKILL)

        self.trial(config, checkpoints, report_then_die)


def grid(**sweep: list[float]) -> list[TrainConfig]:
    base = TrainConfig(epochs=EPOCHS, batch_size=32, device="cpu", sweep=sweep)
    return expand_sweep(base)


def test_sampled_points_are_distinct_and_repeatable():
    configs = grid(learning_rate=[0.001, 0.01, 0.1], weight_decay=[0.0, 0.001])
    assert sweep_points(configs, SearchConfig(), 0) == list(range(6))
    chosen = sweep_points(configs, SearchConfig(samples=3), 7)
    assert len(set(chosen)) == 3
    assert set(chosen) <= set(range(6))
    assert sweep_points(configs, SearchConfig(samples=3), 7) == chosen
    assert sweep_points(configs, SearchConfig(samples=9), 7) == list(range(6))


def test_a_killed_trial_is_retried_and_every_trial_matches_its_run_alone(cluster, rows, tmp_path):
    train, validation = rows
    configs = grid(learning_rate=[0.003, 0.03], weight_decay=[0.0, 0.01])
    shipped = ProbeTrial(ShippedRows.of(train), ShippedRows.of(validation))
    trainer = KillsOnce(shipped, victim=0.03, starts=tmp_path / "starts")

    trials = sweep_on_ray(
        configs, trainer, cluster, "killed-trial", SearchConfig(), tmp_path / "trials"
    )

    assert trainer.starts.with_suffix(".killed").exists(), "no trial was killed"
    starts = trainer.starts.read_text(encoding="utf-8").split()
    fresh = ["0.003:0", "0.003:0", "0.03:0", "0.03:0"]
    assert sorted(starts) == sorted([*fresh, "0.03:2"])  # one retry, after epoch 2
    assert [trial.config for trial in trials] == configs
    for trial in trials:
        assert trial.finished
        assert [stats.epoch for stats in trial.history] == list(range(1, EPOCHS + 1))
        alone = train_probe_rows(train, validation, trial.config)
        resumed = train_probe_rows(train, validation, trial.config, trial.checkpoint)
        assert resumed.resumed_from == EPOCHS  # the trial trained every epoch
        np.testing.assert_allclose(resumed.head.weights, alone.head.weights, rtol=0, atol=1e-12)
        assert [s.val_loss for s in trial.history] == pytest.approx(
            [s.val_loss for s in alone.history], abs=1e-9
        )


def test_asha_stops_the_hopeless_trials_and_lets_the_best_finish(cluster, rows, tmp_path):
    train, validation = rows
    epochs = 8
    base = TrainConfig(
        epochs=epochs,
        batch_size=32,
        device="cpu",
        sweep={"learning_rate": [0.03, 1e-6, 2e-6, 3e-6]},
    )
    search = SearchConfig(scheduler="asha", grace_epochs=1, reduction_factor=2, concurrent=1)
    trainer = ProbeTrial(ShippedRows.of(train), ShippedRows.of(validation))

    trials = sweep_on_ray(expand_sweep(base), trainer, cluster, "asha", search, tmp_path / "trials")

    by_rate = {trial.config.learning_rate: trial for trial in trials}
    assert by_rate[0.03].finished
    assert len(by_rate[0.03].history) == epochs
    stopped = [trial for trial in trials if not trial.finished]
    assert stopped, "ASHA stopped no trial"
    assert all(trial.config.learning_rate < 1e-5 for trial in stopped)
    assert all(len(trial.history) < epochs for trial in stopped)


def test_a_retrain_job_on_the_cluster_sweeps_with_tune_once(cluster, tracking, store, tmp_path):
    from mlflow import MlflowClient

    from deeptrust.training.service.job import RetrainJob
    from tests.training.conftest import job_settings

    text = (
        '[train]\nepochs = 3\nbatch_size = 16\ndevice = "cpu"\n'
        "[train.sweep]\nlearning_rate = [0.003, 0.03]\n"
    )
    settings = job_settings(
        tracking,
        tmp_path,
        text,
        seed_dataset_dir=tmp_path / "seed",
        seed_real_count=40,
        ray_address=cluster.address,
        ray_storage=cluster.storage,
    )
    job = RetrainJob(settings, store, None)

    outcome = job.run("request-tuned")

    client = MlflowClient(tracking.tracking_uri)
    children = client.search_runs(
        [client.get_run(outcome.run_id).info.experiment_id],
        f"tags.mlflow.parentRunId = '{outcome.run_id}'",
    )
    assert sorted(float(run.data.params["learning_rate"]) for run in children) == [0.003, 0.03]
    for run in children:
        assert run.data.tags["deeptrust.stopped_early"] == "false"
        curve = client.get_metric_history(run.info.run_id, "val_loss")
        assert sorted(point.step for point in curve) == [1, 2, 3]  # each trial's epochs
        assert run.data.params["resumed_from"] == "3"  # the driver trained nothing itself
    assert not (Path(cluster.storage) / "request-tuned").exists()

    again = job.run("request-tuned")  # a redelivered request is answered, not trained
    assert again.version == outcome.version
    assert len(client.search_model_versions(f"name = '{settings.registered_model}'")) == 1


def test_a_search_without_a_cluster_is_refused(tracking, store, tmp_path):
    from deeptrust.training.service.job import RetrainJob
    from tests.training.conftest import job_settings

    text = '[train]\nepochs = 2\ndevice = "cpu"\n[train.search]\nscheduler = "asha"\n'
    settings = job_settings(
        tracking, tmp_path, text, seed_dataset_dir=tmp_path / "seed", seed_real_count=20
    )

    with pytest.raises(ValueError, match="Ray Tune"):
        RetrainJob(settings, store, None).run("request-untuned")
