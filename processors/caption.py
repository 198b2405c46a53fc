"""The caption stage: a natural-language caption for every detected image."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from PIL import Image

from deeptrust.processors.models import BatchModel, ModelSpec, load_model
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

    def __init__(self, store: ObjectStore, captioner: ModelSpec, max_pixels: int) -> None:
        self._store = store
        self._spec = captioner
        self._max_pixels = max_pixels
        self._captioner: BatchModel[Image.Image, str] | None = None

    def setup(self) -> None:
        """Load the captioning model."""
        self._captioner = cast(BatchModel[Image.Image, str], load_model(self._spec))

    def prepare(self, event: DetectedEvent) -> CaptionItem:
        """Fetch and decode the image again (bytes never travel through Kafka)."""
        return CaptionItem(
            event, fetch_image(self._store, event.uri, self._max_pixels).decoded.image
        )

    def process(self, items: Sequence[CaptionItem]) -> list[Result]:
        """Caption the whole batch."""
        assert self._captioner is not None, "setup() not called"
        texts = self._captioner.predict([item.image for item in items])
        model = self._captioner.spec.label
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
        """Drop the model."""
        self._captioner = None
