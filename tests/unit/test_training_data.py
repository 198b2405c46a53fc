"""A retrain job's data: sources checked, versioned and split by content; feedback deduplicated."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from deeptrust.schemas.events import FeedbackEvent
from deeptrust.training.datasets.example import Example, read_local
from deeptrust.training.service.data import Source, folder_sources, prepare
from deeptrust.training.service.feedback import latest_decisions
from deeptrust.training.service.seed_dataset import build_seed_dataset
from tests.images import corrupt_bytes, sample_paths, small_photo


def photo_examples(folder, source: str, sizes: range, label: int) -> list[Example]:
    examples = []
    for size in sizes:
        path = folder / f"{source}-{size}.jpg"
        path.write_bytes(small_photo(sample_paths()[size % 8], size))
        examples.append(Example(source, path.name, str(path), label=label))
    return examples


def test_prepare_splits_by_content_without_overlap_and_versions_each_source(tmp_path):
    real = photo_examples(tmp_path, "a", range(200, 260), label=0)
    fake = photo_examples(tmp_path, "b", range(270, 330), label=1)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(corrupt_bytes())
    unlabelled = Example("a", "x.jpg", str(real[0].uri))
    first = Source("first", (*real, Example("a", "broken.jpg", str(broken), label=0), unlabelled))
    again = Source("second", (*fake, real[0]))  # real[0] repeats: only the first copy counts

    data = prepare([first, again], read_local, tmp_path / "manifests")

    names = [
        {item.example.name for item in part} for part in (data.train, data.validation, data.test)
    ]
    assert not names[0] & names[1]
    assert not names[0] & names[2]
    assert not names[1] & names[2]
    assert sum(map(len, names)) == len(real) + len(fake)
    assert data.test
    assert data.validation
    assert len(data.train) > len(data.test)
    assert data.quality["first"].counts()["undecodable"] == 1
    assert data.quality_metrics()["quality/second/accepted"] == len(fake) + 1
    assert [m.dataset for m in data.manifests] == ["first", "second"]
    assert len(data.manifests[1].rows) == len(fake)
    assert len(list((tmp_path / "manifests").iterdir())) == 2

    same = prepare([first, again], read_local, tmp_path / "again")
    assert same.version == data.version
    fewer = prepare([first], read_local, tmp_path / "fewer")
    assert fewer.version != data.version


def feedback(image_id: str, label: str, minutes: int) -> FeedbackEvent:
    return FeedbackEvent(
        event_id=str(uuid.uuid4()),
        image_id=image_id,
        uri=f"file:///{image_id}",
        label=label,
        reviewer="ann",
        decided_at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes),
    )


def test_a_later_decision_replaces_an_earlier_one():
    events = [feedback("a", "real", 0), feedback("b", "real", 1), feedback("a", "ai_generated", 2)]
    latest = latest_decisions(events)
    assert [(e.image_id, e.label) for e in latest] == [("a", "ai_generated"), ("b", "real")]


def test_the_seed_dataset_is_deterministic_and_labelled_both_ways(tmp_path):
    folder = build_seed_dataset(tmp_path / "one", real_count=20)
    (source,) = folder_sources([folder])
    labels = {example.label for example in source.examples}
    assert labels == {0, 1}
    assert sum(1 for e in source.examples if e.label == 0) == 20
    other = build_seed_dataset(tmp_path / "two", real_count=20)
    assert (folder / "train.csv").read_bytes() == (other / "train.csv").read_bytes()
    first = prepare(folder_sources([folder]), read_local, tmp_path / "m1")
    second = prepare(folder_sources([other]), read_local, tmp_path / "m2")
    assert first.manifests[0].digest == second.manifests[0].digest
    assert build_seed_dataset(folder, real_count=20) == folder  # reused, not rebuilt
