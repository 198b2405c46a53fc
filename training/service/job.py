"""One retrain job: data → sweep → offline evaluation → a registered candidate.

Everything a job learns goes to one MLflow run tagged with the request id: the data version
and quality counts, one nested run per grid point with its epoch curves, and the chosen
head's test metrics, slices and plots beside the production model's on the same test set.
The head is copied into the object store (stages download it from there) and registered
with the alias ``candidate``; promotion is the canary's decision, not the job's.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow import MlflowClient

from processors.backbones.mobilenet_v2 import WEIGHTS_SHA256
from processors.detectors.mobilenet_probe import HEAD_FILE, ProbeHead
from schemas.events import ModelUpdateEvent
from streams.config import KafkaSettings
from streams.objectstore import ObjectStore
from training.datasets.quality import Accepted
from training.evaluation.classification import evaluate_binary, write_artefacts
from training.evaluation.faces import haar_face_counter
from training.evaluation.slices import evaluate_slices, image_traits, slice_metrics
from training.service.data import Source, TrainingData, byte_reader, folder_sources, prepare
from training.service.features import FeatureCache
from training.service.feedback import feedback_examples
from training.service.seed_dataset import build_seed_dataset
from training.service.settings import TrainingSettings
from training.tracking.registry import (
    ARTIFACT_SHA_TAG,
    ARTIFACT_URI_TAG,
    BACKEND_TAG,
    REQUEST_TAG,
    Registry,
)
from training.trainer import EpochStats, TrainConfig, expand_sweep, load_config, train_probe

log = logging.getLogger(__name__)
BACKEND = "mobilenet-probe"
ARTIFACT_PATH = "detector"


@dataclass(frozen=True)
class JobOutcome:
    """What a job produced: the run, the registered version and its announcement."""

    run_id: str
    version: str
    metrics: dict[str, float]
    event: ModelUpdateEvent


@dataclass(frozen=True)
class GridPoint:
    """One trained configuration and how it did on the validation split."""

    config: TrainConfig
    head: ProbeHead
    val_auc: float
    val_loss: float


class RetrainJob:
    """Runs retrain jobs against one tracking server, object store and (optionally) Kafka."""

    def __init__(
        self, settings: TrainingSettings, store: ObjectStore, kafka: KafkaSettings | None
    ) -> None:
        self._settings = settings
        self._store = store
        self._kafka = kafka
        self._read = byte_reader(store)
        self._features = FeatureCache(settings.work_dir / "features", settings.threads)
        mlflow.set_tracking_uri(settings.tracking_uri)
        self._client = MlflowClient(settings.tracking_uri)
        self.registry = Registry(self._client, settings.registered_model)

    def run(self, request_id: str, evidence: dict[str, str] | None = None) -> JobOutcome:
        """Train, evaluate and register a candidate for ``request_id``, once.

        A request that already has a registered version is answered from the registry, so
        a redelivered request never trains twice; a job that died half-way starts a new run
        that resumes from its checkpoints.
        """
        done = self.registry.version_for_request(request_id)
        if done is not None:
            log.info("request %s already produced version %s", request_id, done)
            return self._outcome(done)
        mlflow.set_experiment(self._settings.experiment)
        tags = {
            REQUEST_TAG: request_id,
            **{f"deeptrust.{k}": v for k, v in (evidence or {}).items()},
        }
        with (
            mlflow.start_run(run_name=f"retrain-{request_id[:8]}", tags=tags) as run,
            tempfile.TemporaryDirectory() as scratch,
        ):
            version = self._train_and_register(run.info.run_id, request_id, Path(scratch))
        return self._outcome(version)

    def _outcome(self, version: str) -> JobOutcome:
        event = self.registry.update_event(version, "candidate")
        return JobOutcome(event.run_id, version, dict(event.metrics), event)

    def _sources(self) -> list[Source]:
        settings = self._settings
        folders = settings.datasets or [
            build_seed_dataset(
                settings.seed_dataset_dir,
                settings.seed_real_count,
                debian_photos=settings.seed_debian_photos,
            )
        ]
        sources = folder_sources(folders)
        if settings.include_feedback and self._kafka is not None:
            sources.append(Source("feedback", tuple(feedback_examples(self._kafka))))
        return sources

    def _train_and_register(self, run_id: str, request_id: str, scratch: Path) -> str:
        data = prepare(self._sources(), self._read, scratch / "manifests")
        mlflow.log_artifacts(str(scratch / "manifests"), "manifests")
        mlflow.log_params(
            {
                "data_version": data.version,
                "train_examples": len(data.train),
                "validation_examples": len(data.validation),
                "test_examples": len(data.test),
                "backbone_weights_sha256": WEIGHTS_SHA256[:16],
            }
        )
        mlflow.log_metrics(data.quality_metrics())
        splits = {
            name: self._arrays(getattr(data, name)) for name in ("train", "validation", "test")
        }
        for name, (_, labels) in splits.items():
            if len(set(labels.tolist())) < 2:
                raise ValueError(
                    f"the {name} split needs both labels; it has {len(labels)} examples"
                )

        base = load_config(self._settings.config)
        points = [self._fit(config, splits, request_id) for config in expand_sweep(base)]
        best = max(points, key=lambda p: (p.val_auc, -p.val_loss))
        mlflow.log_params({f"best.{k}": v for k, v in _hyperparameters(best.config).items()})

        head = replace(
            best.head,
            metadata={
                **best.head.metadata,
                "backbone": "mobilenet-v2",
                "backbone_weights_sha256": WEIGHTS_SHA256,
                "data_version": data.version,
                "request_id": request_id,
                "run_id": run_id,
            },
        )
        metrics = self._evaluate(head, data, splits["test"], scratch / "evaluation")
        return self._register(head, run_id, request_id, metrics, scratch / ARTIFACT_PATH)

    def _arrays(self, items: list[Accepted]) -> tuple[np.ndarray, np.ndarray]:
        pairs = [(item.sha256, item.example.uri) for item in items]
        features = self._features.features(pairs, self._read).astype(np.float64)
        labels = np.array([item.example.label for item in items], np.float64)
        return features, labels

    def _fit(
        self,
        config: TrainConfig,
        splits: dict[str, tuple[np.ndarray, np.ndarray]],
        request_id: str,
    ) -> GridPoint:
        """Train one grid point in a nested run, resuming from its checkpoint if one exists."""
        checkpoints = self._settings.work_dir / "checkpoints" / request_id / config.digest()[:16]
        with mlflow.start_run(
            run_name=f"lr={config.learning_rate} wd={config.weight_decay}", nested=True
        ):
            mlflow.log_params(_hyperparameters(config))

            def log_epoch(stats: EpochStats) -> None:
                mlflow.log_metrics(stats.metrics(), step=stats.epoch)

            result = train_probe(
                *splits["train"], *splits["validation"], config, checkpoints, log_epoch
            )
            best = next(s for s in result.history if s.epoch == result.best_epoch)
            mlflow.log_metrics({"best_val_auc": best.val_auc, "best_val_loss": best.val_loss})
            mlflow.log_params(
                {  # what "auto" resolved to; the requested values are logged above
                    "used_device": result.device,
                    "used_precision": result.precision,
                    "resumed_from": result.resumed_from,
                }
            )
        return GridPoint(config, result.head, best.val_auc, best.val_loss)

    def _evaluate(
        self,
        head: ProbeHead,
        data: TrainingData,
        test: tuple[np.ndarray, np.ndarray],
        folder: Path,
    ) -> dict[str, float]:
        """Test-split metrics, slices and plots, beside production's on the same images."""
        features, labels = test
        probabilities = head.probability(features)
        report = evaluate_binary(labels, probabilities, head.threshold)
        folder.mkdir(parents=True, exist_ok=True)
        write_artefacts(report, folder)
        faces = haar_face_counter()
        traits = [image_traits(self._read(item.example.uri), faces) for item in data.test]
        tags = [item.example.tags for item in data.test]
        slices = evaluate_slices(labels, probabilities, traits, tags, head.threshold)
        metrics = report.metrics() | slice_metrics(slices)
        production = self._production_head()
        if production is not None:
            theirs = evaluate_binary(labels, production.probability(features), production.threshold)
            metrics |= theirs.metrics("production/")
        mlflow.log_metrics(metrics)
        mlflow.log_artifacts(str(folder), "evaluation")
        return metrics

    def _production_head(self) -> ProbeHead | None:
        """The head the production alias points at, read from the object store."""
        version = self.registry.version_of("production")
        if version is None:
            return None
        event = self.registry.update_event(version, "production", metrics={})
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / HEAD_FILE
            path.write_bytes(self._store.get(event.artifact_uri))
            return ProbeHead.load(path)

    def _register(
        self, head: ProbeHead, run_id: str, request_id: str, metrics: dict[str, float], folder: Path
    ) -> str:
        """Log the head, copy it to the object store, register it and alias it ``candidate``."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / HEAD_FILE
        head.save(path)
        mlflow.log_artifacts(str(folder), ARTIFACT_PATH)
        data = path.read_bytes()
        sha256 = hashlib.sha256(data).hexdigest()
        key = f"{self._settings.artifact_prefix}/{self._settings.registered_model}/{sha256}.npz"
        stored = self._store.put(key, data)
        version = self.registry.register(
            run_id,
            ARTIFACT_PATH,
            {
                BACKEND_TAG: BACKEND,
                ARTIFACT_URI_TAG: stored.uri,
                ARTIFACT_SHA_TAG: sha256,
                REQUEST_TAG: request_id,
            },
        )
        self.registry.set_alias("candidate", version)
        log.info(
            "registered %s version %s (f1 %.3f)",
            self._settings.registered_model,
            version,
            metrics["f1"],
        )
        return version


def _hyperparameters(config: TrainConfig) -> dict[str, Any]:
    """The swept and fixed knobs of a config, as run parameters."""
    fields = (
        "learning_rate",
        "weight_decay",
        "epochs",
        "batch_size",
        "accumulation_steps",
        "precision",
        "seed",
    )
    return {name: getattr(config, name) for name in fields}
