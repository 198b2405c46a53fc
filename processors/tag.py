"""The tag stage: search tags from the caption, normalised to the vocabulary.

Whatever tagger runs (the language model's free tags, the keyword tagger's), its tags go
through the same :class:`~deeptrust.processors.vocabulary.mapper.TagMapper`: each lands on a term of
the controlled vocabulary or is dropped, and the terms above them in WordNet are added as
``broader``, so a search for ``animal`` finds the ladybug.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import cast

from deeptrust.processors.models import BatchModel, ModelSpec, load_model
from deeptrust.processors.vocabulary.mapper import DEFAULT_THRESHOLD, TagMapper
from deeptrust.schemas.events import CaptionedEvent, EnrichedEvent, Tags
from deeptrust.streams.stage import Output, Result, derived_event_id
from deeptrust.streams.topics import Topic

log = logging.getLogger(__name__)


class TagStage:
    """captioned.v1 → enriched.v1."""

    name = "tag"
    input_topic = Topic.CAPTIONED
    input_model = CaptionedEvent

    def __init__(self, tagger: ModelSpec) -> None:
        self._spec = tagger
        self._tagger: BatchModel[str, list[str]] | None = None
        self._mapper = TagMapper(
            threshold=float(tagger.options.get("vocabulary_threshold", DEFAULT_THRESHOLD)),
            intra_op_threads=int(tagger.options.get("intra_op_threads", "1")),
        )

    def setup(self) -> None:
        """Load the tagging model and the vocabulary mapper."""
        self._tagger = cast(BatchModel[str, list[str]], load_model(self._spec))
        self._mapper.load()

    def prepare(self, event: CaptionedEvent) -> CaptionedEvent:
        """Nothing to fetch: tags come from the caption."""
        return event

    def process(self, items: Sequence[CaptionedEvent]) -> list[Result]:
        """Tag the whole batch, then map every caption's tags onto the vocabulary at once."""
        assert self._tagger is not None, "setup() not called"
        tag_lists = self._tagger.predict([item.caption.text for item in items])
        normalised = self._mapper.normalise(tag_lists)
        dropped = [tag for tags in normalised for tag in tags.dropped]
        if dropped:
            log.info("dropped %d tags outside the vocabulary: %s", len(dropped), dropped)
        model = self._tagger.spec.label
        return [
            [
                Output(
                    Topic.ENRICHED,
                    EnrichedEvent(
                        **item.model_dump(exclude={"event_id"}),
                        event_id=derived_event_id(item.event_id, self.name, Topic.ENRICHED),
                        tags=Tags(values=tags.values, broader=tags.broader, model=model),
                    ),
                )
            ]
            for item, tags in zip(items, normalised, strict=True)
        ]

    def close(self) -> None:
        """Drop the model."""
        self._tagger = None
