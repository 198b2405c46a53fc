"""When the drift processor publishes: windows closing in a burst share one transaction."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from deeptrust.drift.service import DriftStrategy
from deeptrust.drift.settings import DriftSettings
from deeptrust.schemas.events import EmbeddingEvent
from deeptrust.streams.config import KafkaSettings
from deeptrust.streams.metrics import StageMetrics
from deeptrust.streams.runner import RunnerSettings
from deeptrust.streams.topics import Topic, TopicNames
from tests.unit.kafka_fakes import FakeCluster, FakeMessage

WINDOW = 40
TOPIC = TopicNames("t.")(Topic.EMBEDDINGS)


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


class Embeddings:
    """An embeddings partition in a fake cluster, read as it grows."""

    def __init__(self) -> None:
        self.cluster, self.rng = FakeCluster(), np.random.default_rng(0)

    def more(self, count: int) -> list[FakeMessage]:
        """Append ``count`` embeddings and return them as consumed messages."""
        log = self.cluster.logs.setdefault((TOPIC, 0), [])
        first = len(log)
        for offset in range(first, first + count):
            event = EmbeddingEvent(
                event_id=f"e{offset}",
                image_id=f"img-{offset}",
                uploaded_at=datetime.fromtimestamp(1_700_000_000 + offset, UTC),
                model="m",
                model_version="1",
                vector=[float(x) for x in self.rng.normal(size=16)],
            )
            self.cluster.append(TOPIC, event, event.image_id)
        return log[first:]


def strategy(tmp_path: Path, clock: Clock, publish_interval_s: float) -> DriftStrategy:
    settings = DriftSettings(
        window_size=WINDOW,
        reference_size=WINDOW,
        min_count=20,
        n_components=4,
        reference_dir=tmp_path / "references",
        publish_interval_s=publish_interval_s,
    )
    kafka = KafkaSettings(bootstrap_servers="unused:9092", topic_prefix="t.")
    return DriftStrategy(settings, kafka, RunnerSettings(), StageMetrics("drift"), clock)


def reports(commit: Any) -> int:
    topic = TopicNames("t.")(Topic.DRIFT)
    return sum(1 for name, _ in commit.records if name == topic)


def test_windows_closing_within_the_interval_are_published_together(tmp_path: Path) -> None:
    stream, clock = Embeddings(), Clock()
    drift = strategy(tmp_path, clock, publish_interval_s=1.0)
    clock.now += 0.2
    # The reference, then two windows, all within the interval: nothing is published yet.
    assert drift.handle(stream.more(3 * WINDOW), session=None) is None  # type: ignore[arg-type]
    clock.now += 0.9
    commit = drift.handle([], session=None)  # type: ignore[arg-type]
    assert commit is not None, "the interval has passed: what closed is published"
    assert reports(commit) == 2, "both windows' reports in one transaction"
    assert [(o.partition, o.offset) for o in commit.offsets] == [(0, 3 * WINDOW)]
    commit.committed()
    clock.now += 1.0
    assert drift.handle([], session=None) is None, "nothing is published twice"  # type: ignore[arg-type]


def test_without_an_interval_every_closed_window_is_published_at_once(tmp_path: Path) -> None:
    stream, clock = Embeddings(), Clock()
    drift = strategy(tmp_path, clock, publish_interval_s=0.0)
    drift.handle(stream.more(WINDOW), session=None)  # type: ignore[arg-type]
    commit = drift.handle(stream.more(WINDOW), session=None)  # type: ignore[arg-type]
    assert commit is not None, "a closed window is published by the batch that closed it"
    assert reports(commit) == 1
