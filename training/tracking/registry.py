"""The model registry, through MLflow: versions, aliases, and what stages need to know.

A version's tags carry where its artefact sits in the object store and its SHA-256, so a
model-update event can be rebuilt from the registry alone: promotion needs nothing else.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from deeptrust.schemas.events import ModelUpdateEvent
from deeptrust.streams.objectstore import ObjectStore, content_hash

Alias = Literal["candidate", "production"]
ARTIFACT_URI_TAG = "deeptrust.artifact_uri"
ARTIFACT_SHA_TAG = "deeptrust.artifact_sha256"
BACKEND_TAG = "deeptrust.backend"
REQUEST_TAG = "deeptrust.request_id"
PRODUCTION_SCORED_TAG = "deeptrust.production_version"
"""Run tag: the production version a job scored beside its candidate (``none`` if none)."""
NO_PRODUCTION = "none"
HEADLINE_METRICS = (
    *("accuracy", "precision", "recall", "f1", "roc_auc", "ece", "brier"),  # a detector's
    *("bleu4", "cider_d"),  # a captioner's
)
"""What a model-update event carries; slices and curves stay in the tracking server."""
_UPDATE_NAMESPACE = uuid.UUID("0b6f3c52-8f0e-4f7e-9d1c-2a6c1f4e7b90")


@dataclass(frozen=True)
class Registry:
    """One registered model's versions and aliases, and the stage task that runs it."""

    client: MlflowClient
    name: str
    task: Literal["detect", "caption"] = "detect"

    def register(self, run_id: str, artifact_path: str, tags: dict[str, str]) -> str:
        """Register the run's artefact folder as a new version; return its number."""
        try:
            self.client.create_registered_model(self.name)
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        version = self.client.create_model_version(
            self.name, source=f"runs:/{run_id}/{artifact_path}", run_id=run_id, tags=tags
        )
        return str(version.version)

    def register_candidate(
        self,
        store: ObjectStore,
        prefix: str,
        backend: str,
        artefact: Path,
        artifact_path: str,
        run_id: str,
        request_id: str,
    ) -> str:
        """Log ``artefact`` to the run, store it by its SHA-256, register it as the candidate.

        The key is ``prefix/<model>/<sha256><suffixes>``, where stages download it from; the
        version's tags name the backend that loads it, where it is, its hash and the request.
        """
        self.client.log_artifact(run_id, str(artefact), artifact_path)
        data = artefact.read_bytes()
        sha256 = content_hash(data)
        suffix = "".join(artefact.suffixes)  # the candidate named its file: .npz, .tar.gz
        stored = store.put(f"{prefix}/{self.name}/{sha256}{suffix}", data)
        tags = {
            BACKEND_TAG: backend,
            ARTIFACT_URI_TAG: stored.uri,
            ARTIFACT_SHA_TAG: sha256,
            REQUEST_TAG: request_id,
        }
        version = self.register(run_id, artifact_path, tags)
        self.set_alias("candidate", version)
        return version

    def set_alias(self, alias: Alias, version: str) -> None:
        """Point ``alias`` at ``version`` (an alias names exactly one version)."""
        self.client.set_registered_model_alias(self.name, alias, version)

    def version_of(self, alias: Alias) -> str | None:
        """The version ``alias`` points at, or None if it points nowhere yet."""
        try:
            return str(self.client.get_model_version_by_alias(self.name, alias).version)
        except MlflowException:
            return None

    def run_metrics(self, version: str) -> dict[str, float]:
        """The headline offline metrics of the run that produced ``version``."""
        run_id = self.client.get_model_version(self.name, version).run_id
        logged = self.client.get_run(run_id).data.metrics
        return {name: float(logged[name]) for name in HEADLINE_METRICS if name in logged}

    def scored_production(self, version: str) -> str | None:
        """The production version the job behind ``version`` scored; None if it scored none.

        None also for a run that predates the record: either way, the job's
        ``production/*`` metrics cannot be tied to a production version.
        """
        run_id = self.client.get_model_version(self.name, version).run_id
        recorded = self.client.get_run(run_id).data.tags.get(PRODUCTION_SCORED_TAG)
        return None if recorded in (None, "", NO_PRODUCTION) else str(recorded)

    def offline_metrics(self, version: str) -> dict[str, float]:
        """Every metric the job logged for ``version`` (test split, slices, production's)."""
        run_id = self.client.get_model_version(self.name, version).run_id
        return {
            name: float(value) for name, value in self.client.get_run(run_id).data.metrics.items()
        }

    def update_event(
        self, version: str, alias: Alias, metrics: dict[str, float] | None = None
    ) -> ModelUpdateEvent:
        """The models-topic event saying ``version`` now holds ``alias``.

        Its id is derived from name, version and alias, so announcing the same fact twice
        (a retried job, a repeated promotion) yields the same event id.
        """
        found: Any = self.client.get_model_version(self.name, version)
        tags: dict[str, str] = dict(found.tags)
        return ModelUpdateEvent(
            event_id=str(uuid.uuid5(_UPDATE_NAMESPACE, f"{self.name}/{version}/{alias}")),
            model=self.name,
            version=version,
            alias=alias,
            task=self.task,
            backend=tags[BACKEND_TAG],
            artifact_uri=tags[ARTIFACT_URI_TAG],
            artifact_sha256=tags[ARTIFACT_SHA_TAG],
            run_id=str(found.run_id),
            request_id=tags.get(REQUEST_TAG),
            metrics=metrics if metrics is not None else self.run_metrics(version),
            updated_at=datetime.now(UTC),
        )

    def version_for_request(self, request_id: str) -> str | None:
        """The version an earlier job registered for ``request_id``, if one did."""
        found = self.client.search_model_versions(
            f"name = '{self.name}' and tags.`{REQUEST_TAG}` = '{request_id}'"
        )
        return str(found[0].version) if found else None
