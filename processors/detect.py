"""The detect stage: is the image AI-generated? Plus its embedding for drift monitoring.

Both models see the same decoded batch, so the image is fetched and decoded once. The
verdict goes to ``detected.v1`` and the embedding to ``embeddings.v1``, in one transaction.

With a model follower (``DEEPTRUST_DETECT_FOLLOW``) the detector is replaced by a newly
promoted version without a restart. The follower loads it on its own thread; the stage
swaps it in only at the start of ``process``, so a batch never mixes two models and the
batch in hand always finishes on the model it started with.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, cast

from PIL import Image
from prometheus_client import CollectorRegistry

from deeptrust.processors.model_follower import LoadedModel, ReloadMetrics
from deeptrust.processors.models import BatchModel, ModelSpec, load_model
from deeptrust.schemas.events import DetectedEvent, Detection, EmbeddingEvent, UploadEvent
from deeptrust.schemas.vectors import Encoding
from deeptrust.streams.images import FetchedImage, fetch_image
from deeptrust.streams.objectstore import ObjectStore
from deeptrust.streams.stage import Output, Result, derived_event_id
from deeptrust.streams.topics import Topic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DetectItem:
    """An upload and its fetched image."""

    event: UploadEvent
    image: FetchedImage


class ModelSource(Protocol):
    """Where newly promoted detector versions come from (a :class:`ModelFollower`)."""

    @property
    def metrics(self) -> ReloadMetrics:
        """Reload counts and the serving version, as a Prometheus collector."""
        ...

    def start(self) -> None:
        """Find the current production version (and load it); then follow updates."""
        ...

    def take_pending(self) -> LoadedModel | None:
        """Return a loaded model waiting to be swapped in, once."""
        ...

    def close(self) -> None:
        """Stop following."""
        ...


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
        self._specs = (detector, embedder)
        self._max_pixels = max_pixels
        self._follower = follower
        self._detector: BatchModel[FetchedImage, Detection] | None = None
        self._embedder: BatchModel[Image.Image, list[float]] | None = None

    @property
    def model_version(self) -> str | None:
        """The version of the detector serving now (``None`` before ``setup``)."""
        return None if self._detector is None else self._detector.spec.version

    def register_metrics(self, registry: CollectorRegistry) -> None:
        """Export the follower's reload metrics from the registry the stage process serves.

        A stage without a follower has nothing to add.
        """
        if self._follower is not None:
            registry.register(self._follower.metrics)

    def setup(self) -> None:
        """Load both models; with a follower, the production version instead of the default."""
        detector, embedder = self._specs
        promoted: LoadedModel | None = None
        if self._follower is not None:
            self._follower.start()
            promoted = self._follower.take_pending()
        try:
            model = promoted.model if promoted is not None else load_model(detector)
            self._detector = cast(BatchModel[FetchedImage, Detection], model)
            self._embedder = cast(BatchModel[Image.Image, list[float]], load_model(embedder))
        except BaseException:
            if self._follower is not None:
                self._follower.close()
            raise
        log.info("detector %s version %s", self._detector.spec.label, self.model_version)

    def prepare(self, event: UploadEvent) -> DetectItem:
        """Fetch and decode the uploaded image."""
        return DetectItem(event, fetch_image(self._store, event.uri, self._max_pixels))

    def process(self, items: Sequence[DetectItem]) -> list[Result]:
        """Detect and embed the whole batch, first swapping in a newly promoted detector."""
        self._swap_in_pending()
        detector = self._detector
        assert detector is not None, "setup() not called"
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
        if self._follower is not None:
            self._follower.close()
        self._detector = self._embedder = None

    def _swap_in_pending(self) -> None:
        """Between batches: replace the detector if the follower loaded a new version."""
        if self._follower is None or self._detector is None:
            return
        loaded = self._follower.take_pending()
        if loaded is None:
            return
        previous = self.model_version
        self._detector = cast(BatchModel[FetchedImage, Detection], loaded.model)
        log.info("detector version %s replaced by %s", previous, self.model_version)
