"""Human labels from the feedback topic, as training examples.

The topic is compacted and keyed by image id, so reading it to its end gives the latest
decision per image; a reviewer's correction replaces the earlier label rather than adding
a contradicting example.
"""

from __future__ import annotations

from deeptrust.schemas.events import FeedbackEvent
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.reader import read_to_end
from deeptrust.streams.topics import Topic, TopicNames
from deeptrust.training.datasets.example import LABEL_AI, LABEL_HUMAN, Example, reviewed_example

LABEL_OF = {"ai_generated": LABEL_AI, "real": LABEL_HUMAN}


def latest_decisions(events: list[FeedbackEvent]) -> list[FeedbackEvent]:
    """The last decision per image, in the order the images were first decided."""
    latest: dict[str, FeedbackEvent] = {}
    for event in events:
        latest[event.image_id] = event
    return list(latest.values())


def feedback_examples(kafka: KafkaSettings, timeout_s: float = 60.0) -> list[Example]:
    """Every image's latest human label, read from the feedback topic up to its current end."""
    topic = TopicNames(kafka.topic_prefix)(Topic.FEEDBACK)
    received = read_to_end(kafka, topic, FeedbackEvent, timeout_s)
    return [
        reviewed_example(
            event.image_id, event.uri, LABEL_OF[event.label], event.reviewer, event.decided_at
        )
        for event in latest_decisions([item.event for item in received])
    ]
