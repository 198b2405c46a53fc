"""One retrain job: data → sweep → offline evaluation → a registered candidate.

Everything a job learns goes to one MLflow run tagged with the request id: the data version
and quality counts, one nested run per grid point with its epoch curves, and the chosen
detector's test metrics, slices and plots beside the production model's on the same test
set. The artefact is copied into the object store (stages download it from there) and
registered with the alias ``candidate``; promotion is the canary's decision, not the job's.
What is trained (a probe head on frozen features, or a fine-tuned ViT) is the config's
``backbone``, and its recipe's business (:mod:`deeptrust.training.service.recipe`).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow import MlflowClient

from deeptrust.schemas.events import ModelUpdateEvent
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.objectstore import ObjectStore
from deeptrust.training.evaluation.classification import evaluate_binary, write_artefacts
from deeptrust.training.evaluation.faces import haar_face_counter
from deeptrust.training.evaluation.families import (
    family_metrics,
    family_table,
    write_family_table,
)
from deeptrust.training.evaluation.slices import evaluate_slices, image_traits, slice_metrics
from deeptrust.training.service.data import (
    Source,
    TrainingData,
    byte_reader,
    folder_sources,
    prepare,
)
from deeptrust.training.service.features import FeatureCache
from deeptrust.training.service.feedback import feedback_examples
from deeptrust.training.service.probe_recipe import (
    PROBE_BACKENDS,
    ProbeCandidate,
    ProbeFeatures,
    ProbeRecipe,
)
from deeptrust.training.service.recipe import Candidate, Outcome, Recipe, labels_of
from deeptrust.training.service.seed_dataset import build_seed_dataset
from deeptrust.training.service.settings import TrainingSettings
from deeptrust.training.service.vit_recipe import ViTCandidate, ViTRecipe
from deeptrust.training.tracking.registry import (
    NO_PRODUCTION,
    PRODUCTION_SCORED_TAG,
    REQUEST_TAG,
    Registry,
)
from deeptrust.training.trainer import EpochStats, TrainConfig, expand_sweep, load_config
from deeptrust.training.trainer.config import SearchConfig

if TYPE_CHECKING:  # torch and Ray: imported when a job sweeps on a cluster
    from deeptrust.training.trainer.ray_tune import TrialTrainer

log = logging.getLogger(__name__)
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
    candidate: Candidate
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
        self._loading = settings.loader_options()
        self._cluster = settings.ray_cluster()
        self._features = {
            name: ProbeFeatures(
                FeatureCache(
                    settings.work_dir / "features", backend.network(settings.threads), self._loading
                ),
                self._read,
                backend,
            )
            for name, backend in PROBE_BACKENDS.items()
        }
        mlflow.set_tracking_uri(settings.tracking_uri)
        self._client = MlflowClient(settings.tracking_uri)
        self.registry = Registry(self._client, settings.registered_model)

    def run(self, request_id: str, evidence: dict[str, str] | None = None) -> JobOutcome:
        """Train, evaluate and register a candidate for ``request_id``, once.

        A request that already has a registered version is answered from the registry, so
        a redelivered request never trains twice (and its version gets the ``candidate``
        alias again, in case the job died between registering and aliasing); a job that
        died half-way starts a new run that resumes from its checkpoints if its data is
        unchanged, and trains afresh if it is not.
        """
        done = self.registry.version_for_request(request_id)
        if done is not None:
            log.info("request %s already produced version %s", request_id, done)
            self._alias_candidate(done)
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

    @property
    def work_dir(self) -> Path:
        """Where the job keeps its feature cache and checkpoints (and the consumer its state)."""
        return self._settings.work_dir

    def checkpoints_of(self, request_id: str) -> Path:
        """The folder of ``request_id``'s checkpoints (one subfolder per data version)."""
        return self._settings.work_dir / "checkpoints" / request_id

    def discard_checkpoints(self, request_id: str) -> None:
        """Forget ``request_id``'s checkpoints (registered, or given up on), Ray's too."""
        shutil.rmtree(self.checkpoints_of(request_id), ignore_errors=True)
        if self._cluster is not None:
            self._cluster.discard(request_id)

    def _alias_candidate(self, version: str) -> None:
        """Point ``candidate`` at ``version`` unless a later version already holds it.

        Idempotent: the answer to a redelivered request says ``version`` is the candidate,
        so the registry must say so too; but a newer job's candidate is not taken back.
        """
        current = self.registry.version_of("candidate")
        if current == version:
            return
        if current is not None and int(current) > int(version):
            log.warning(
                "version %s holds the candidate alias; version %s does not take it back",
                current,
                version,
            )
            return
        self.registry.set_alias("candidate", version)
        log.info("version %s is the candidate again (its alias was %s)", version, current)

    def _outcome(self, version: str) -> JobOutcome:
        event = self.registry.update_event(version, "candidate")
        return JobOutcome(event.run_id, version, dict(event.metrics), event)

    def _sources(self) -> list[Source]:
        settings = self._settings
        folders = settings.datasets or [
            build_seed_dataset(
                settings.seed_dataset_dir,
                settings.seed_real_count,
                samples=settings.samples_dir,
                mate_backgrounds=settings.seed_mate_backgrounds_dir,
            )
        ]
        sources = folder_sources(folders)
        if settings.include_feedback and self._kafka is not None:
            sources.append(Source("feedback", tuple(feedback_examples(self._kafka))))
        return sources

    def _recipe(
        self, config: TrainConfig, data: TrainingData, scratch: Path, request_id: str
    ) -> Recipe:
        """What trains this config's backbone on this job's data (on Ray, if configured)."""
        if config.backbone == "hf-vit":
            cluster = None if self._cluster is None else self._cluster.scoped(request_id)
            return ViTRecipe(data, self._read, self._loading, cluster)
        return ProbeRecipe(data, self._features[config.backbone], scratch / "rows")

    def _train_and_register(self, run_id: str, request_id: str, scratch: Path) -> str:
        data = prepare(self._sources(), self._read, scratch / "manifests")
        mlflow.log_artifacts(str(scratch / "manifests"), "manifests")
        for name in ("train", "validation", "test"):
            labels = labels_of(getattr(data, name))
            if len(set(labels.tolist())) < 2:
                raise ValueError(
                    f"the {name} split needs both labels; it has {len(labels)} examples"
                )
        base = load_config(self._settings.config)
        if base.search != SearchConfig() and (self._cluster is None or base.backbone == "hf-vit"):
            raise ValueError(
                "[train.search] configures Ray Tune, which sweeps the probe backbones on a "
                "Ray cluster (DEEPTRUST_TRAINING_RAY_ADDRESS); without one, or for hf-vit, "
                "the sweep is the full grid: remove [train.search]"
            )
        recipe = self._recipe(base, data, scratch, request_id)
        mlflow.log_params(
            {
                "data_version": data.version,
                "train_examples": len(data.train),
                "validation_examples": len(data.validation),
                "test_examples": len(data.test),
                "backbone": base.backbone,
                **recipe.params(),
            }
        )
        mlflow.log_metrics(data.quality_metrics())

        # Checkpoints live per data version: a retry on changed data (a new feedback label)
        # trains afresh, a retry on the same data resumes.
        checkpoints = self.checkpoints_of(request_id) / data.version
        trainer = recipe.trial_trainer() if self._cluster is not None else None
        if trainer is not None:
            points = self._tune(base, recipe, trainer, request_id, checkpoints, scratch)
        else:
            points = [
                self._fit(
                    config,
                    recipe,
                    checkpoints / config.digest()[:16],
                    scratch / "fits" / config.digest()[:16],
                )
                for config in expand_sweep(base)
            ]
        best = max(points, key=lambda p: (p.val_auc, -p.val_loss))
        mlflow.log_params({f"best.{k}": v for k, v in _hyperparameters(best.config).items()})
        metrics = self._evaluate(best.candidate, data, scratch)
        provenance = {"data_version": data.version, "request_id": request_id, "run_id": run_id}
        artefact = best.candidate.write(scratch / ARTIFACT_PATH, provenance)
        version = self._register(best.candidate.backend, artefact, run_id, request_id, metrics)
        # Registered: a redelivered request is answered from the registry, never resumed.
        self.discard_checkpoints(request_id)
        return version

    def _fit(
        self, config: TrainConfig, recipe: Recipe, checkpoints: Path, folder: Path
    ) -> GridPoint:
        """Train one grid point in a nested run, resuming from its checkpoint if one exists."""
        with self._point_run(config):

            def log_epoch(stats: EpochStats) -> None:
                mlflow.log_metrics(stats.metrics(), step=stats.epoch)

            result, candidate = recipe.fit(config, checkpoints, log_epoch, folder)
            return self._scored(config, result, candidate)

    def _tune(
        self,
        base: TrainConfig,
        recipe: Recipe,
        trainer: TrialTrainer,
        request_id: str,
        checkpoints: Path,
        scratch: Path,
    ) -> list[GridPoint]:
        """The sweep as Ray Tune trials, one nested run each; the finished ones are points.

        Each finished trial's config resumes from its last checkpoint here, which trains
        nothing more and yields its candidate. A trial ASHA stopped keeps its run and
        curves (tag ``deeptrust.stopped_early``) but is no candidate.
        """
        from deeptrust.training.trainer.ray_tune import sweep_on_ray

        if self._cluster is None:  # the caller checked; for the type checker
            raise RuntimeError("a Tune sweep needs a Ray cluster")
        # Named by the checkpoint folder (request, data version): a redelivery restores it.
        name = "sweep-" + hashlib.sha256(str(checkpoints).encode()).hexdigest()[:16]
        trials = sweep_on_ray(
            expand_sweep(base),
            trainer,
            self._cluster.scoped(request_id),
            name,
            base.search,
            scratch / "trials",
            base.seed,
        )
        points = []
        for trial in trials:
            with self._point_run(trial.config):
                for stats in trial.history:
                    mlflow.log_metrics(stats.metrics(), step=stats.epoch)
                mlflow.set_tag("deeptrust.stopped_early", str(not trial.finished).lower())
                if not trial.finished:
                    continue
                folder = scratch / "fits" / trial.config.digest()[:16]
                result, candidate = recipe.fit(trial.config, trial.checkpoint, _unused, folder)
                points.append(self._scored(trial.config, result, candidate))
        if not points:  # ASHA always lets the best trial finish
            raise RuntimeError(f"no trial of {name} ran to its last epoch")
        return points

    @staticmethod
    def _point_run(config: TrainConfig) -> mlflow.ActiveRun:
        """A grid point's nested run, its hyperparameters logged."""
        run = mlflow.start_run(
            run_name=f"lr={config.learning_rate} wd={config.weight_decay}", nested=True
        )
        mlflow.log_params(_hyperparameters(config))
        return run

    @staticmethod
    def _scored(config: TrainConfig, result: Outcome, candidate: Candidate) -> GridPoint:
        """Log a trained point's best epoch and what "auto" resolved to; the grid point."""
        best = next(s for s in result.history if s.epoch == result.best_epoch)
        mlflow.log_metrics({"best_val_auc": best.val_auc, "best_val_loss": best.val_loss})
        mlflow.log_params(
            {  # what "auto" resolved to; the requested values are logged above
                "used_device": result.device,
                "used_precision": result.precision,
                "resumed_from": result.resumed_from,
            }
        )
        return GridPoint(config, candidate, best.val_auc, best.val_loss)

    def _evaluate(
        self, candidate: Candidate, data: TrainingData, scratch: Path
    ) -> dict[str, float]:
        """Test-split metrics, slices, per-generator rows and plots, beside production's."""
        labels = labels_of(data.test)
        probabilities = candidate.probabilities(data.test)
        report = evaluate_binary(labels, probabilities, candidate.threshold)
        folder = scratch / "evaluation"
        folder.mkdir(parents=True, exist_ok=True)
        write_artefacts(report, folder)
        faces = haar_face_counter()
        traits = [image_traits(self._read(item.example.uri), faces) for item in data.test]
        tags = [item.example.tags for item in data.test]
        slices = evaluate_slices(labels, probabilities, traits, tags, candidate.threshold)
        families = family_table(labels, probabilities, tags, candidate.threshold)
        write_family_table(families, folder / "families.md")
        metrics = report.metrics() | slice_metrics(slices) | family_metrics(families)
        scored, production = self._production(scratch / "production")
        # Which production model production/* describes: the canary's F1 gate holds only
        # while that version is still production's.
        mlflow.set_tag(PRODUCTION_SCORED_TAG, scored or NO_PRODUCTION)
        if production is not None:
            theirs = production.probabilities(data.test)
            metrics |= evaluate_binary(labels, theirs, production.threshold).metrics("production/")
        mlflow.log_metrics(metrics)
        mlflow.log_artifacts(str(folder), "evaluation")
        return metrics

    def _production(self, folder: Path) -> tuple[str | None, Candidate | None]:
        """The production alias's version and model (from the object store, by its backend)."""
        version = self.registry.version_of("production")
        if version is None:
            return None, None
        event = self.registry.update_event(version, "production", metrics={})
        data = self._store.get(event.artifact_uri)
        if event.backend == "hf-vit":
            return version, ViTCandidate.from_artefact(data, folder, self._read, self._loading)
        if event.backend not in self._features:
            raise ValueError(f"production version {version} has unknown backend {event.backend}")
        features = self._features[event.backend]
        return version, ProbeCandidate.from_artefact(data, folder, features)

    def _register(
        self, backend: str, artefact: Path, run_id: str, request_id: str, metrics: dict[str, float]
    ) -> str:
        """Log the artefact, copy it to the object store, register it, alias it ``candidate``."""
        version = self.registry.register_candidate(
            self._store,
            self._settings.artifact_prefix,
            backend,
            artefact,
            ARTIFACT_PATH,
            run_id,
            request_id,
        )
        log.info(
            "registered %s version %s (%s, f1 %.3f)",
            self._settings.registered_model,
            version,
            backend,
            metrics["f1"],
        )
        return version


def _unused(stats: EpochStats) -> None:
    """An ``on_epoch`` that never runs: a finished trial's resume trains no epoch."""
    raise RuntimeError(f"epoch {stats.epoch} trained again after its Tune trial finished")


def _hyperparameters(config: TrainConfig) -> dict[str, Any]:
    """The swept and fixed knobs of a config, as run parameters."""
    fields: tuple[str, ...] = (
        "backbone",
        "learning_rate",
        "weight_decay",
        "epochs",
        "batch_size",
        "accumulation_steps",
        "precision",
        "seed",
    )
    if config.backbone == "hf-vit":
        fields += ("model", "freeze_epochs", "adapter")
    if config.adapter == "lora":
        fields += ("lora_rank", "lora_alpha", "lora_dropout", "lora_targets")
    return {name: getattr(config, name) for name in fields}
