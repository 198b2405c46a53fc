"""The ViT fine-tune on a Ray cluster: Ray Train runs it data-parallel, a checkpoint an epoch.

Each of ``RayCluster.workers`` Ray Train workers runs
:func:`~deeptrust.training.trainer.finetune.fine_tune_sets` in the process group Ray starts
(gloo on CPUs, NCCL on GPUs), so the loop, its shares of each batch and its resumable
checkpoint are those of ``torchrun`` (:mod:`deeptrust.training.trainer.distributed`). After
every epoch the first worker hands its checkpoint folder (``last.pt`` and the best epoch's
snapshot) to ``ray.train.report``, which persists it to the cluster's storage. When a worker
dies, Ray restarts the whole group, each worker copies the last persisted folder back, and
the loop resumes after that epoch with the saved model, optimiser and RNG, so the result is
the uninterrupted run's (``tests/training/test_ray_train.py``). A new trainer with the same
run name (a redelivered job) resumes the same way. The last report carries the best
epoch's ``save_pretrained`` output and the run's history, which the driver copies out.

Only the retrain worker imports this module (torch and Ray, ``.venv-train``).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from deeptrust.training.trainer.cluster import RayCluster
from deeptrust.training.trainer.config import TrainConfig
from deeptrust.training.trainer.finetune import FineTuneResult, fine_tune_sets
from deeptrust.training.trainer.runtime import EpochStats
from deeptrust.training.trainer.streaming import LabelledImages, LoaderOptions

OUTPUT = "output"
"""The best epoch's ``save_pretrained`` directory, in the last reported checkpoint."""
RESULT = "result.json"
"""The run's history and provenance, beside it."""
KEPT_CHECKPOINTS = 2


def fine_tune_on_ray(
    train: LabelledImages,
    val: LabelledImages,
    config: TrainConfig,
    output_dir: Path,
    cluster: RayCluster,
    run_name: str,
    loading: LoaderOptions | None = None,
) -> FineTuneResult:
    """:func:`~deeptrust.training.trainer.finetune.fine_tune_sets` by Ray Train's workers.

    ``run_name`` names the run in the cluster's storage: a call with a name whose run left
    a checkpoint resumes from it. ``output_dir`` receives the best epoch's model, as the
    in-process fine-tune writes it. Raises ``ray.train.TrainingFailedError`` when the
    workers failed more than ``cluster.max_failures`` times.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    cluster.connect()
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={
            "train": train,
            "validation": val,
            "config": config,
            "loading": loading or LoaderOptions(),
        },
        scaling_config=ScalingConfig(num_workers=cluster.workers, use_gpu=cluster.use_gpu),
        run_config=RunConfig(
            name=run_name,
            storage_path=cluster.storage,
            failure_config=FailureConfig(max_failures=cluster.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=KEPT_CHECKPOINTS),
        ),
    )
    result = trainer.fit()
    if result.checkpoint is None:  # the workers always report one last checkpoint
        raise RuntimeError(f"Ray run {run_name} ended without a checkpoint")
    with result.checkpoint.as_directory() as folder:
        record = json.loads((Path(folder) / RESULT).read_text(encoding="utf-8"))
        shutil.rmtree(output_dir, ignore_errors=True)
        shutil.copytree(Path(folder) / OUTPUT, output_dir)
    return FineTuneResult(
        output_dir=output_dir,
        history=[EpochStats(**stats) for stats in record["history"]],
        best_epoch=int(record["best_epoch"]),
        resumed_from=record["resumed_from"],
        device=str(record["device"]),
        precision=str(record["precision"]),
        metadata=dict(record["metadata"]),
    )


def _report(metrics: dict[str, Any], folder: Path) -> None:
    """Every worker reports each time; the first also hands over its checkpoint folder."""
    import ray.train

    if ray.train.get_context().get_world_rank() == 0:
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(folder)))
    else:
        ray.train.report(metrics)


def _train_worker(arguments: dict[str, Any]) -> None:
    """One Ray Train worker: restore the last checkpoint, fine-tune, report the output."""
    import ray.train

    with tempfile.TemporaryDirectory(prefix="deeptrust-ray-finetune-") as scratch:
        folder = Path(scratch) / "checkpoints"
        restored = ray.train.get_checkpoint()
        if restored is not None:
            restored.to_directory(str(folder))

        def report_epoch(stats: EpochStats, checkpoints: Path) -> None:
            _report({"epoch": stats.epoch, **stats.metrics()}, checkpoints)

        result = fine_tune_sets(
            arguments["train"],
            arguments["validation"],
            arguments["config"],
            Path(scratch) / OUTPUT,
            folder,
            loading=arguments["loading"],
            on_checkpoint=report_epoch,
        )
        # The last checkpoint keeps last.pt: a restart after it finds every epoch done and
        # only writes the output again.
        if ray.train.get_context().get_world_rank() == 0:
            shutil.rmtree(folder / OUTPUT, ignore_errors=True)
            shutil.copytree(result.output_dir, folder / OUTPUT)
            record = {
                "history": [asdict(stats) for stats in result.history],
                "best_epoch": result.best_epoch,
                "resumed_from": result.resumed_from,
                "device": result.device,
                "precision": result.precision,
                "metadata": result.metadata,
            }
            (folder / RESULT).write_text(json.dumps(record, sort_keys=True), encoding="utf-8")
        _report({"epoch": result.history[-1].epoch, "done": 1}, folder)
