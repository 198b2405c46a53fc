"""Settings shared by the stages (``DEEPTRUST_*``): object store, limits, models, routing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from deeptrust.processors.models import ModelSpec, Task
from deeptrust.schemas.vectors import Encoding
from deeptrust.streams.images import DEFAULT_MAX_PIXELS
from deeptrust.streams.objectstore import FetchPolicy, LocalObjectStore, ObjectStore, S3ObjectStore


class ProcessorSettings(BaseSettings):
    """What every stage process reads once at start-up."""

    model_config = SettingsConfigDict(env_prefix="DEEPTRUST_")

    object_store_root: Path = Path(".deeptrust/objects")
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = None
    s3_connect_timeout_s: float = 5.0
    s3_read_timeout_s: float = 30.0
    s3_max_attempts: int = Field(default=5, ge=1)
    """Attempts per S3 request in botocore's standard retry mode, the first included."""
    max_image_bytes: int = 50 * 1024 * 1024
    model_max_bytes: int = 4 * 1024**3
    """Largest model artefact a stage or the training service fetches (a fine-tuned ViT-B
    packs to about 330 MB): model files are not uploads and get their own limit."""
    max_pixels: int = DEFAULT_MAX_PIXELS

    detect_backend: str = "mobilenet-blocks"
    embed_backend: str = "mobilenet-v2"
    caption_backend: str = "image-statistics"
    tag_backend: str = "keywords"
    model_version: str = "1"
    model_threads: int = Field(default=2, ge=1)
    """Intra-op threads of an ONNX Runtime model: the cores one stage may use, not the host's."""
    model_options: dict[str, Any] = Field(default_factory=dict)
    """Backend options (``DEEPTRUST_MODEL_OPTIONS``, a JSON object) merged into every spec's,
    e.g. ``{"path": "/models/vit-detector", "device": "cuda", "dtype": "float16"}``. A key
    naming a task (``"caption": {"path": ...}``) holds options for that task alone and wins."""

    embedding_encoding: Encoding = "float32"
    """How detect writes embeddings (``DEEPTRUST_EMBEDDING_ENCODING``): packed as float32
    (exact, a quarter of the JSON's bytes) or float16 (an eighth, three significant digits),
    or ``list``, the JSON list that readers of the schema's first revision need: keep it
    until every reader of ``embeddings.v1`` runs this version."""

    detect_follow: str | None = None
    """Registered model name whose production versions the detect stage follows on the
    ``models.v1`` topic and swaps in without a restart (``DEEPTRUST_DETECT_FOLLOW``, e.g.
    ``deeptrust-detector``); unset, the stage serves the configured model until restarted."""
    caption_follow: str | None = None
    """The same for the caption stage (``DEEPTRUST_CAPTION_FOLLOW``, e.g.
    ``deeptrust-captioner``): its promoted adapters replace the captioner between batches. The
    stage's caption backend must be ``hf-blip``."""
    model_cache_dir: Path = Path(".deeptrust/models")
    """Where followed artefacts are cached, each named by its SHA-256."""

    moderation_threshold: float = 0.5
    moderation_sample_rate: float = 0.02
    search_db: Path = Path(".deeptrust/search.db")

    def model_spec(self, task: Task) -> ModelSpec:
        """Return the spec of the model configured for ``task``."""
        backend = getattr(self, f"{task}_backend")
        options = {"intra_op_threads": str(self.model_threads)}
        tasks = get_args(Task)
        shared = {k: v for k, v in self.model_options.items() if k not in tasks}
        own = self.model_options.get(task) or {}
        if not isinstance(own, dict):
            raise ValueError(f"model_options[{task!r}] must be an object, not {own!r}")
        for key, value in {**shared, **own}.items():
            options[key] = value if isinstance(value, str) else json.dumps(value)
        return ModelSpec(
            task=task, backend=backend, name=backend, version=self.model_version, options=options
        )

    def object_store(self, max_bytes: int | None = None) -> ObjectStore:
        """Return the configured object store: an S3 bucket if named, else the local root.

        Reads are capped at ``max_bytes``, by default the upload limit.
        """
        limit = self.max_image_bytes if max_bytes is None else max_bytes
        if self.s3_bucket:
            policy = FetchPolicy(buckets=(self.s3_bucket,), max_bytes=limit)
            return S3ObjectStore(
                self.s3_bucket,
                self.s3_endpoint_url,
                policy,
                connect_timeout_s=self.s3_connect_timeout_s,
                read_timeout_s=self.s3_read_timeout_s,
                max_attempts=self.s3_max_attempts,
            )
        return LocalObjectStore.at(self.object_store_root, limit)

    def model_store(self) -> ObjectStore:
        """The same store, for model artefacts: reads capped at ``model_max_bytes``."""
        return self.object_store(self.model_max_bytes)
