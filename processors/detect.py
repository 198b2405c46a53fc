"""The detect stage: is the image AI-generated? Plus its embedding for drift monitoring.

Both models see the same decoded batch, so the image is fetched and decoded once. The
verdict goes to ``detected.v1`` and the embedding to ``embeddings.v1``, in one transaction.

With a model follower (``DEEPTRUST_DETECT_FOLLOW``) the detector is replaced by a newly
promoted version without a restart (:mod:`deeptrust.processors.followed_model`): swapped in
only at the start of ``process``, so a batch never mixes two models.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from PIL import Image
from prometheus_client import CollectorRegistry

from deeptrust.processors.followed_model import FollowedModel, ModelSource
from deeptrust.processors.models import BatchModel, ModelSpec, load_model
from deeptrust.schemas.events import DetectedEvent, Detection, EmbeddingEvent, UploadEvent
from deeptrust.schemas.vectors import Encoding
from deeptrust.streams.images import FetchedImage, fetch_image
from deeptrust.streams.objectstore import ObjectStore
from deeptrust.streams.stage import Output, Result, derived_event_id
from deeptrust.streams.topics import Topic


@dataclass(frozen=True)
class DetectItem:
    """An upload and its fetched image."""

    event: UploadEvent
    image: FetchedImage


class DetectStage:
    """uploads.v1 → detected.v1 + embeddings.v1."""

    name = "detect"
    input_topic = Topic.UPLOADS
    input_model = UploadEvent

    def __init__(
        self,
        store: ObjectStore,
        detector: ModelSpec,
        embedder: ModelSpec,
        max_pixels: int,
        follower: ModelSource | None = None,
        embedding_encoding: Encoding = "float32",
    ) -> None:
        """Configure the stage; ``follower`` (optional) supplies promoted detector versions.

        ``embedding_encoding`` is how embeddings are written: packed (float32, float16) or,
        while readers of the embedding schema's first revision remain, as a JSON list.
        """
        self._store = store
        self._embedding_encoding: Encoding = embedding_encoding
        self._embedder_spec = embedder
        self._max_pixels = max_pixels
        self._detector: FollowedModel[FetchedImage, Detection] = FollowedModel(
            detector, follower, "detector"
        )
        self._embedder: BatchModel[Image.Image, list[float]] | None = None

    @property
    def model_version(self) -> str | None:
        """The version of the detector serving now (``None`` before ``setup``)."""
        return self._detector.version

    def register_metrics(self, registry: CollectorRegistry) -> None:
        """Export the follower's reload metrics from the registry the stage process serves."""
        self._detector.register_metrics(registry)

    def setup(self) -> None:
        """Load both models; with a follower, the production version instead of the default."""
        self._detector.load()
        try:
            model = load_model(self._embedder_spec)
        except BaseException:
            self._detector.close()
            raise
        self._embedder = cast(BatchModel[Image.Image, list[float]], model)

    def prepare(self, event: UploadEvent) -> DetectItem:
        """Fetch and decode the uploaded image."""
        return DetectItem(event, fetch_image(self._store, event.uri, self._max_pixels))

    def process(self, items: Sequence[DetectItem]) -> list[Result]:
        """Detect and embed the whole batch, first swapping in a newly promoted detector."""
        self._detector.swap_in_pending()
        detector = self._detector.model
        assert self._embedder is not None, "setup() not called"
        verdicts = detector.predict([item.image for item in items])
        vectors = self._embedder.predict([item.image.decoded.image for item in items])
        embedder = self._embedder.spec
        results: list[Result] = []
        for item, verdict, vector in zip(items, verdicts, vectors, strict=True):
            upload = item.event
            width, height = item.image.decoded.image.size
            detected = DetectedEvent(
                event_id=derived_event_id(upload.event_id, self.name, Topic.DETECTED),
                image_id=upload.image_id,
                uri=upload.uri,
                uploaded_at=upload.uploaded_at,
                width=width,
                height=height,
                detection=verdict,
            )
            embedding = EmbeddingEvent.packing(
                vector,
                self._embedding_encoding,
                event_id=derived_event_id(upload.event_id, self.name, Topic.EMBEDDINGS),
                image_id=upload.image_id,
                uploaded_at=upload.uploaded_at,
                model=embedder.label,
                model_version=embedder.version,
            )
            results.append([Output(Topic.DETECTED, detected), Output(Topic.EMBEDDINGS, embedding)])
        return results

    def close(self) -> None:
        """Stop following and drop the models."""
        self._detector.close()
        self._embedder = None
