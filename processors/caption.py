"""The caption stage: a natural-language caption for every detected image.

With a model follower (``DEEPTRUST_CAPTION_FOLLOW``) the captioner is replaced by a newly
promoted version (a retrained adapter) without a restart, between batches
(:mod:`deeptrust.processors.followed_model`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image
from prometheus_client import CollectorRegistry

from deeptrust.processors.followed_model import FollowedModel, ModelSource
from deeptrust.processors.models import ModelSpec
from deeptrust.schemas.events import Caption, CaptionedEvent, DetectedEvent
from deeptrust.streams.images import fetch_image
from deeptrust.streams.objectstore import ObjectStore
from deeptrust.streams.stage import Output, Result, derived_event_id
from deeptrust.streams.topics import Topic


@dataclass(frozen=True)
class CaptionItem:
    """A detected image and its pixels."""

    event: DetectedEvent
    image: Image.Image


class CaptionStage:
    """detected.v1 → captioned.v1."""

    name = "caption"
    input_topic = Topic.DETECTED
    input_model = DetectedEvent

    def __init__(
        self,
        store: ObjectStore,
        captioner: ModelSpec,
        max_pixels: int,
        follower: ModelSource | None = None,
    ) -> None:
        """Configure the stage; ``follower`` (optional) supplies promoted captioner versions."""
        self._store = store
        self._max_pixels = max_pixels
        self._captioner: FollowedModel[Image.Image, str] = FollowedModel(
            captioner, follower, "captioner"
        )

    @property
    def model_version(self) -> str | None:
        """The version of the captioner serving now (``None`` before ``setup``)."""
        return self._captioner.version

    def register_metrics(self, registry: CollectorRegistry) -> None:
        """Export the follower's reload metrics from the registry the stage process serves."""
        self._captioner.register_metrics(registry)

    def setup(self) -> None:
        """Load the captioning model; with a follower, the production version if any."""
        self._captioner.load()

    def prepare(self, event: DetectedEvent) -> CaptionItem:
        """Fetch and decode the image again (bytes never travel through Kafka)."""
        return CaptionItem(
            event, fetch_image(self._store, event.uri, self._max_pixels).decoded.image
        )

    def process(self, items: Sequence[CaptionItem]) -> list[Result]:
        """Caption the whole batch, first swapping in a newly promoted captioner."""
        self._captioner.swap_in_pending()
        captioner = self._captioner.model
        texts = captioner.predict([item.image for item in items])
        model = captioner.spec.label
        return [
            [
                Output(
                    Topic.CAPTIONED,
                    CaptionedEvent(
                        **item.event.model_dump(exclude={"event_id"}),
                        event_id=derived_event_id(item.event.event_id, self.name, Topic.CAPTIONED),
                        caption=Caption(text=text, model=model),
                    ),
                )
            ]
            for item, text in zip(items, texts, strict=True)
        ]

    def close(self) -> None:
        """Stop following and drop the model."""
        self._captioner.close()
