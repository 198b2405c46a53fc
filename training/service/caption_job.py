"""One captioner retrain job: captioned data → LoRA fine-tune → BLEU-4/CIDEr-D → a candidate.

The detector's job (:mod:`deeptrust.training.service.job`) for the caption stage's model.
Flickr30k-layout folders (``results.csv`` and the images) pass the same quality checks and
content-hash split as the detector's data (only captioned images count), the BLIP captioner
is fine-tuned with LoRA on the training split
(:mod:`deeptrust.training.trainer.caption_finetune`), and the kept epoch and production's
captioner both caption the test split through the caption stage's own backend
(:func:`~deeptrust.training.evaluation.caption_run.score_captioner`), scored with BLEU-4 and
CIDEr-D against the references. Production is the ``production`` alias of the captioner's
registered model, or, before any, the model the caption stage is configured with. The
adapter and its processor, packed as one archive, go to the object store and are registered
with the alias ``candidate``. A request id is answered once: a redelivered one gets the
version it already produced, and a job that died resumes from its per-epoch checkpoint.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
from pathlib import Path

import mlflow
from mlflow import MlflowClient

from deeptrust.processors.artefact_archive import pack_directory, unpack_archive
from deeptrust.processors.models import ModelSpec
from deeptrust.processors.transformers_backends.common import extend_training_record
from deeptrust.streams.objectstore import ObjectStore
from deeptrust.training.datasets.example import Example
from deeptrust.training.datasets.flickr30k import read_flickr30k
from deeptrust.training.datasets.quality import Accepted
from deeptrust.training.evaluation.caption_run import CaptionScore, score_captioner
from deeptrust.training.service.data import Source, byte_reader, is_captioned, prepare
from deeptrust.training.service.job import JobOutcome
from deeptrust.training.service.settings import TrainingSettings
from deeptrust.training.service.vit_recipe import image_dataset
from deeptrust.training.tracking.registry import (
    NO_PRODUCTION,
    PRODUCTION_SCORED_TAG,
    REQUEST_TAG,
    Registry,
)
from deeptrust.training.trainer.caption_config import CaptionConfig, load_caption_config
from deeptrust.training.trainer.runtime import EpochStats

log = logging.getLogger(__name__)
ARTIFACT_PATH = "captioner"
ARCHIVE_FILE = "captioner.tar.gz"


class CaptionRetrainJob:
    """Retrains the captioner against one tracking server and object store."""

    def __init__(
        self,
        settings: TrainingSettings,
        store: ObjectStore,
        production: ModelSpec,
        max_pixels: int,
    ) -> None:
        self._settings = settings
        self._store = store
        self._production = production
        self._max_pixels = max_pixels
        self._read = byte_reader(store)
        self._loading = settings.loader_options()
        mlflow.set_tracking_uri(settings.tracking_uri)
        self.registry = Registry(
            MlflowClient(settings.tracking_uri), settings.caption_registered_model, "caption"
        )

    @property
    def work_dir(self) -> Path:
        """Where the job keeps its checkpoints."""
        return self._settings.work_dir

    def discard_checkpoints(self, request_id: str) -> None:
        """Forget ``request_id``'s checkpoints (registered, or given up on)."""
        shutil.rmtree(self.checkpoints_of(request_id), ignore_errors=True)

    def run(self, request_id: str, evidence: dict[str, str] | None = None) -> JobOutcome:
        """Fine-tune, evaluate and register a candidate captioner for ``request_id``, once.

        ``evidence`` (what prompted the request, such as a drift report) tags the run.
        """
        done = self.registry.version_for_request(request_id)
        if done is not None:
            log.info("caption request %s already produced version %s", request_id, done)
            return self._outcome(done)
        if not self._settings.caption_datasets:
            raise ValueError(
                "no captioned data: set DEEPTRUST_TRAINING_CAPTION_DATASETS to Flickr30k-layout "
                "folders (results.csv beside the images)"
            )
        mlflow.set_experiment(self._settings.caption_experiment)
        with (
            mlflow.start_run(
                run_name=f"caption-retrain-{request_id[:8]}",
                tags={
                    REQUEST_TAG: request_id,
                    **{f"deeptrust.{k}": v for k, v in (evidence or {}).items()},
                },
            ) as run,
            tempfile.TemporaryDirectory() as scratch,
        ):
            version = self._train_and_register(run.info.run_id, request_id, Path(scratch))
        return self._outcome(version)

    def checkpoints_of(self, request_id: str) -> Path:
        """The folder of ``request_id``'s checkpoints (one subfolder per data version)."""
        return self._settings.work_dir / "caption-checkpoints" / request_id

    def _train_and_register(self, run_id: str, request_id: str, scratch: Path) -> str:
        from deeptrust.training.trainer.caption_finetune import (
            CaptionedImages,
            fine_tune_captioner,
        )

        config = load_caption_config(self._settings.caption_config)
        sources = [
            Source(folder.name, read_flickr30k(folder).examples)
            for folder in self._settings.caption_datasets
        ]
        data = prepare(sources, self._read, scratch / "manifests", usable=is_captioned)
        mlflow.log_artifacts(str(scratch / "manifests"), "manifests")
        for name in ("train", "validation", "test"):
            if not getattr(data, name):
                rejected = {k: v for k, v in data.quality_metrics().items() if v}
                raise ValueError(
                    f"the {name} split of the captioned data is empty (rejected: {rejected})"
                )
        mlflow.log_params(
            {
                "data_version": data.version,
                "train_examples": len(data.train),
                "validation_examples": len(data.validation),
                "test_examples": len(data.test),
                **_hyperparameters(config),
            }
        )
        mlflow.log_metrics(data.quality_metrics())

        def captioned(items: list[Accepted]) -> CaptionedImages:
            captions = tuple(item.example.captions for item in items)
            return CaptionedImages(image_dataset(items, self._read), captions)

        def log_epoch(stats: EpochStats) -> None:
            mlflow.log_metrics(stats.metrics(), step=stats.epoch)

        checkpoints = self.checkpoints_of(request_id) / data.version / config.digest()[:16]
        result = fine_tune_captioner(
            captioned(data.train),
            captioned(data.validation),
            config,
            scratch / "model",
            checkpoints,
            log_epoch,
            self._loading,
        )
        mlflow.log_params({"resumed_from": result.resumed_from, "best_epoch": result.best_epoch})
        test = [item.example for item in data.test]
        metrics = self._evaluate(result.output_dir, config, test, scratch)
        record = {"data_version": data.version, "request_id": request_id, "run_id": run_id}
        version = self._register(result.output_dir, record, run_id, request_id, scratch)
        log.info("registered captioner version %s (CIDEr-D %.3f)", version, metrics["cider_d"])
        self.discard_checkpoints(request_id)
        return version

    def _evaluate(
        self, model_dir: Path, config: CaptionConfig, test: list[Example], scratch: Path
    ) -> dict[str, float]:
        """The candidate's and production's BLEU-4 and CIDEr-D on the test split's images."""
        ours = self._score(_blip_spec(model_dir, config), test)
        scored, production = self._production_spec(scratch / "production")
        mlflow.set_tag(PRODUCTION_SCORED_TAG, scored or NO_PRODUCTION)
        theirs = self._score(production, test)
        metrics = ours.metrics | {f"production/{k}": v for k, v in theirs.metrics.items()}
        mlflow.log_metrics(metrics)
        mlflow.log_text(ours.table(), "evaluation/captions.csv")
        mlflow.log_text(theirs.table(), "evaluation/production_captions.csv")
        return metrics

    def _score(self, spec: ModelSpec, test: list[Example]) -> CaptionScore:
        return score_captioner(spec, test, self._read, self._max_pixels)

    def _production_spec(self, folder: Path) -> tuple[str | None, ModelSpec]:
        """Production's captioner: the registered alias's archive, else the stage's model."""
        version = self.registry.version_of("production")
        if version is None:
            return None, self._production
        event = self.registry.update_event(version, "production", metrics={})
        unpack_archive(self._store.get(event.artifact_uri), folder)
        options = {**self._production.options, "path": str(folder)}
        return version, ModelSpec("caption", "hf-blip", "hf-blip", version, options)

    def _register(
        self, model_dir: Path, record: dict[str, str], run_id: str, request_id: str, scratch: Path
    ) -> str:
        """Pack the adapter, store it by its hash, register it, alias it ``candidate``."""
        extend_training_record(model_dir, record)
        archive = scratch / ARCHIVE_FILE
        archive.write_bytes(pack_directory(model_dir))
        return self.registry.register_candidate(
            self._store,
            self._settings.artifact_prefix,
            "hf-blip",
            archive,
            ARTIFACT_PATH,
            run_id,
            request_id,
        )

    def _outcome(self, version: str) -> JobOutcome:
        event = self.registry.update_event(version, "candidate")
        return JobOutcome(event.run_id, version, dict(event.metrics), event)


def _blip_spec(model_dir: Path, config: CaptionConfig) -> ModelSpec:
    """The caption stage's ``hf-blip`` backend on a trained directory, generating as configured."""
    digest = hashlib.sha256(str(model_dir).encode()).hexdigest()[:12]
    options = {"path": str(model_dir), "max_new_tokens": str(config.max_new_tokens)}
    return ModelSpec("caption", "hf-blip", "hf-blip", digest, options)


def _hyperparameters(config: CaptionConfig) -> dict[str, object]:
    """The config as run parameters (the LoRA shape only with an adapter)."""
    fields = config.model_dump(mode="json")
    if config.adapter == "none":
        fields = {k: v for k, v in fields.items() if not k.startswith("lora_")}
    return {k: ", ".join(v) if isinstance(v, list) else v for k, v in fields.items()}
