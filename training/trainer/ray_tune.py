"""The sweep on a Ray cluster: Ray Tune runs each grid point as a trial, ASHA stops weak ones.

Every trial is one :class:`~deeptrust.training.trainer.config.TrainConfig` point of
:func:`~deeptrust.training.trainer.config.expand_sweep`'s grid (all of them, or
``search.samples`` drawn with the config's seed), trained by a picklable
:class:`TrialTrainer` in a Ray worker. After each epoch the trainer's checkpoint folder goes to
``ray.tune.report`` with the epoch's numbers, so Tune persists it to the cluster's storage, the
ASHA scheduler can stop the trial on its validation loss, and a trial whose worker dies is
restarted (``cluster.max_failures`` times) from its last checkpoint, which the trainer
resumes exactly (the loops' checkpoints carry the model, optimiser and RNG). A second call
with the same run name (a redelivered job) restores the experiment instead of starting
again. The driver gets each trial's reported epochs and a local copy of its last checkpoint:
resuming the config from that copy in process trains nothing more and returns its result.

Only the retrain worker imports this module (torch and Ray, ``.venv-train``).
"""

from __future__ import annotations

import random
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Protocol

from deeptrust.training.trainer.cluster import RayCluster
from deeptrust.training.trainer.config import SearchConfig, TrainConfig
from deeptrust.training.trainer.rows import RowFile
from deeptrust.training.trainer.runtime import EpochStats

Reporter = Callable[[EpochStats, Path], None]
"""Called by a trainer once an epoch's checkpoint folder is whole."""
METRIC = "val_loss"
"""What ASHA compares trials on, lower being better: the loops keep their lowest-loss epoch."""


class TrialTrainer(Protocol):
    """Trains one config into a checkpoint folder (resuming from what is there), reporting."""

    def __call__(self, config: TrainConfig, checkpoints: Path, report: Reporter) -> None: ...


@dataclass(frozen=True)
class Trial:
    """One trial's config, the epochs it reported, and a local copy of its last checkpoint."""

    config: TrainConfig
    history: list[EpochStats]
    checkpoint: Path

    @property
    def finished(self) -> bool:
        """Whether it ran every epoch (ASHA did not stop it)."""
        return bool(self.history) and self.history[-1].epoch == self.config.epochs


def sweep_points(configs: Sequence[TrainConfig], search: SearchConfig, seed: int) -> list[int]:
    """Which grid points become trials: all of them, or ``search.samples`` distinct ones."""
    if search.samples == 0 or search.samples >= len(configs):
        return list(range(len(configs)))
    return sorted(random.Random(seed).sample(range(len(configs)), search.samples))


def sweep_on_ray(
    configs: Sequence[TrainConfig],
    trainer: TrialTrainer,
    cluster: RayCluster,
    run_name: str,
    search: SearchConfig,
    into: Path,
    seed: int = 0,
) -> list[Trial]:
    """Run the trials on Ray Tune; copy each one's last checkpoint under ``into``.

    Raises RuntimeError when a trial failed more than ``cluster.max_failures`` times or
    reported nothing. Trials come back in grid order.
    """
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

    cluster.connect()
    points = sweep_points(configs, search, seed)
    scheduler: TrialScheduler = FIFOScheduler()
    if search.scheduler == "asha":
        scheduler = ASHAScheduler(
            time_attr="epoch",
            max_t=max(configs[point].epochs for point in points),
            grace_period=search.grace_epochs,
            reduction_factor=search.reduction_factor,
        )
    trainable = tune.with_parameters(_run_trial, configs=list(configs), trainer=trainer)
    path = f"{cluster.storage.rstrip('/')}/{run_name}"
    if tune.Tuner.can_restore(path):
        tuner = tune.Tuner.restore(path, trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={"point": tune.grid_search(points)},
            tune_config=tune.TuneConfig(
                metric=METRIC,
                mode="min",
                scheduler=scheduler,
                max_concurrent_trials=search.concurrent or None,
            ),
            run_config=tune.RunConfig(
                name=run_name,
                storage_path=cluster.storage,
                failure_config=tune.FailureConfig(max_failures=cluster.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            ),
        )
    results = tuner.fit()
    trials = []
    for result in sorted(results, key=lambda r: int(r.config["point"])):
        point = int(result.config["point"])
        if result.error is not None:
            raise RuntimeError(f"trial of grid point {point} failed: {result.error}")
        if result.checkpoint is None:
            raise RuntimeError(f"trial of grid point {point} reported no checkpoint")
        local = into / f"point-{point}"
        shutil.rmtree(local, ignore_errors=True)
        result.checkpoint.to_directory(str(local))
        trials.append(Trial(configs[point], _history(result.metrics_dataframe), local))
    return trials


def _history(frame: Any) -> list[EpochStats]:
    """The reported epochs, once each (a restored trial may report an epoch again)."""
    names = [field.name for field in fields(EpochStats)]
    by_epoch: dict[int, EpochStats] = {}
    for row in frame[names].to_dict("records"):
        stats = EpochStats(**{name: row[name] for name in names})
        by_epoch[int(stats.epoch)] = replace(stats, epoch=int(stats.epoch))
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def _run_trial(params: dict[str, Any], configs: list[TrainConfig], trainer: TrialTrainer) -> None:
    """One Tune trial: restore its last checkpoint, train, report every epoch."""
    from ray import tune

    with tempfile.TemporaryDirectory(prefix="deeptrust-ray-trial-") as scratch:
        folder = Path(scratch) / "checkpoints"
        folder.mkdir()
        restored = tune.get_checkpoint()
        if restored is not None:
            restored.to_directory(str(folder))

        def report(stats: EpochStats, checkpoints: Path) -> None:
            tune.report(asdict(stats), checkpoint=tune.Checkpoint.from_directory(str(checkpoints)))

        trainer(configs[int(params["point"])], folder, report)


@dataclass(frozen=True)
class ShippedRows:
    """A row file and its bytes, so a trial on any node can read the driver's rows."""

    rows: RowFile
    data: bytes

    @classmethod
    def of(cls, rows: RowFile) -> ShippedRows:
        """Read ``rows``' file once, on the driver."""
        return cls(rows, rows.path.read_bytes())

    def open(self, folder: Path) -> RowFile:
        """The same rows (same identity, so checkpoints match) from a copy in ``folder``."""
        path = folder / self.rows.path.name
        path.write_bytes(self.data)
        return replace(self.rows, path=path)


@dataclass(frozen=True)
class ProbeTrial:
    """A :class:`TrialTrainer` for probe heads: trains on rows shipped with it."""

    train: ShippedRows
    validation: ShippedRows

    def __call__(self, config: TrainConfig, checkpoints: Path, report: Reporter) -> None:
        """:func:`~deeptrust.training.trainer.loop.train_probe_rows`, reporting each epoch."""
        from deeptrust.training.trainer.loop import train_probe_rows

        with tempfile.TemporaryDirectory(prefix="deeptrust-rows-") as scratch:
            train, validation = (rows.open(Path(scratch)) for rows in (self.train, self.validation))
            train_probe_rows(train, validation, config, checkpoints, on_checkpoint=report)
