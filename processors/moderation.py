"""The moderation router: flagged images, plus a random sample of the rest, go to review.

An image is flagged when the pixel detector's probability reaches the threshold, when the
detector did not call it real (``ai_generated``, or ``inconclusive`` where its calibrated
band says the evidence is weak), or when its file carries provenance evidence (a C2PA
manifest, a generator's metadata): the detectors are independent, and any is reason enough
for a human to look.

The sample is drawn by hashing the image id, not by a random generator, so a replay or a
reprocessed batch routes exactly the same images, and reviewers' labels of the sample give
an unbiased estimate of what the detector misses.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Literal

from deeptrust.schemas.events import EnrichedEvent, ModerationEvent
from deeptrust.streams.stage import Output, Result, derived_event_id
from deeptrust.streams.topics import Topic


def in_sample(image_id: str, rate: float) -> bool:
    """Tell whether ``image_id`` falls in the review sample drawn at ``rate``."""
    digest = hashlib.sha256(image_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


def route(
    event: EnrichedEvent, threshold: float, sample_rate: float
) -> Literal["flagged", "sampled"] | None:
    """Return why ``event`` goes to review, or ``None`` if it does not."""
    detection = event.detection
    if detection.ai_probability >= threshold or detection.label != "real" or detection.signals:
        return "flagged"
    if in_sample(event.image_id, sample_rate):
        return "sampled"
    return None


class ModerationRouter:
    """enriched.v1 → moderation.v1 (flagged + sampled)."""

    name = "moderation"
    input_topic = Topic.ENRICHED
    input_model = EnrichedEvent

    def __init__(self, threshold: float, sample_rate: float) -> None:
        self._threshold = threshold
        self._sample_rate = sample_rate

    def setup(self) -> None:
        """Nothing to load."""

    def prepare(self, event: EnrichedEvent) -> EnrichedEvent:
        """Nothing to fetch."""
        return event

    def process(self, items: Sequence[EnrichedEvent]) -> list[Result]:
        """Route each event to review or let it pass."""
        results: list[Result] = []
        for event in items:
            reason = route(event, self._threshold, self._sample_rate)
            if reason is None:
                results.append([])
                continue
            review = ModerationEvent(
                event_id=derived_event_id(event.event_id, self.name, Topic.MODERATION),
                image_id=event.image_id,
                uri=event.uri,
                reason=reason,
                ai_probability=event.detection.ai_probability,
                caption=event.caption.text,
                tags=event.tags.values,
                signals=event.detection.signals,
            )
            results.append([Output(Topic.MODERATION, review)])
        return results

    def close(self) -> None:
        """Nothing to release."""
