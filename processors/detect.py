"""The detect stage: is the image AI-generated? Plus its embedding for drift monitoring.

Both models see the same decoded batch, so the image is fetched and decoded once. The
verdict goes to ``detected.v1`` and the embedding to ``embeddings.v1``, in one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from PIL import Image

from processors.models import BatchModel, ModelSpec, load_model
from schemas.events import DetectedEvent, Detection, EmbeddingEvent, UploadEvent
from streams.images import FetchedImage, fetch_image
from streams.objectstore import ObjectStore
from streams.stage import Output, Result, derived_event_id
from streams.topics import Topic


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
        self, store: ObjectStore, detector: ModelSpec, embedder: ModelSpec, max_pixels: int
    ) -> None:
        self._store = store
        self._specs = (detector, embedder)
        self._max_pixels = max_pixels
        self._detector: BatchModel[FetchedImage, Detection] | None = None
        self._embedder: BatchModel[Image.Image, list[float]] | None = None

    def setup(self) -> None:
        """Load both models."""
        detector, embedder = self._specs
        self._detector = cast(BatchModel[FetchedImage, Detection], load_model(detector))
        self._embedder = cast(BatchModel[Image.Image, list[float]], load_model(embedder))

    def prepare(self, event: UploadEvent) -> DetectItem:
        """Fetch and decode the uploaded image."""
        return DetectItem(event, fetch_image(self._store, event.uri, self._max_pixels))

    def process(self, items: Sequence[DetectItem]) -> list[Result]:
        """Detect and embed the whole batch."""
        assert self._detector is not None, "setup() not called"
        assert self._embedder is not None, "setup() not called"
        verdicts = self._detector.predict([item.image for item in items])
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
            embedding = EmbeddingEvent(
                event_id=derived_event_id(upload.event_id, self.name, Topic.EMBEDDINGS),
                image_id=upload.image_id,
                uploaded_at=upload.uploaded_at,
                model=embedder.label,
                model_version=embedder.version,
                vector=vector,
            )
            results.append([Output(Topic.DETECTED, detected), Output(Topic.EMBEDDINGS, embedding)])
        return results

    def close(self) -> None:
        """Drop the models."""
        self._detector = self._embedder = None
