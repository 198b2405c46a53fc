"""The tag stage: search tags from the caption, normalised to the vocabulary."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from processors.models import BatchModel, ModelSpec, load_model
from schemas.events import CaptionedEvent, EnrichedEvent, Tags
from streams.stage import Output, Result, derived_event_id
from streams.topics import Topic


class TagStage:
    """captioned.v1 → enriched.v1."""

    name = "tag"
    input_topic = Topic.CAPTIONED
    input_model = CaptionedEvent

    def __init__(self, tagger: ModelSpec) -> None:
        self._spec = tagger
        self._tagger: BatchModel[str, list[str]] | None = None

    def setup(self) -> None:
        """Load the tagging model."""
        self._tagger = cast(BatchModel[str, list[str]], load_model(self._spec))

    def prepare(self, event: CaptionedEvent) -> CaptionedEvent:
        """Nothing to fetch: tags come from the caption."""
        return event

    def process(self, items: Sequence[CaptionedEvent]) -> list[Result]:
        """Tag the whole batch."""
        assert self._tagger is not None, "setup() not called"
        tag_lists = self._tagger.predict([item.caption.text for item in items])
        model = self._tagger.spec.label
        return [
            [
                Output(
                    Topic.ENRICHED,
                    EnrichedEvent(
                        **item.model_dump(exclude={"event_id"}),
                        event_id=derived_event_id(item.event_id, self.name, Topic.ENRICHED),
                        tags=Tags(values=tags, model=model),
                    ),
                )
            ]
            for item, tags in zip(items, tag_lists, strict=True)
        ]

    def close(self) -> None:
        """Drop the model."""
        self._tagger = None
