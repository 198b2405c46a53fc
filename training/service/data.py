"""A job's training data: every source, checked, versioned by manifest, split by content.

Sources are the configured dataset folders (or the offline seed dataset) and the human
labels on the feedback topic. Each source gets its own manifest, because paths are only
unique within a source; the data version of a job is the digest of those manifests.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from deeptrust.streams.objectstore import ObjectStore
from deeptrust.training.datasets.example import Example, read_local
from deeptrust.training.datasets.kaggle_ai_vs_human import read_kaggle_ai_vs_human
from deeptrust.training.datasets.manifest import Manifest, build_manifest, write_manifest
from deeptrust.training.datasets.quality import Accepted, QualityReport, check_quality
from deeptrust.training.datasets.split import is_test, split_by_content

VALIDATION_FRACTION = 0.2
"""Share of the training side held out to choose among the sweep's grid points."""


@dataclass(frozen=True)
class Source:
    """One named set of labelled examples."""

    name: str
    examples: tuple[Example, ...]


@dataclass
class TrainingData:
    """Accepted examples split three ways, with what was rejected and the manifests."""

    train: list[Accepted] = field(default_factory=list)
    validation: list[Accepted] = field(default_factory=list)
    test: list[Accepted] = field(default_factory=list)
    quality: dict[str, QualityReport] = field(default_factory=dict)
    manifests: list[Manifest] = field(default_factory=list)

    @property
    def version(self) -> str:
        """Digest of every source's manifest version: changes when any file does."""
        versions = sorted(f"{m.dataset}:{m.version}" for m in self.manifests)
        return hashlib.sha256("\n".join(versions).encode()).hexdigest()[:16]

    def quality_metrics(self) -> dict[str, float]:
        """Per source, how many examples each check rejected."""
        merged: dict[str, float] = {}
        for name, report in self.quality.items():
            merged |= report.metrics(f"quality/{name}")
        return merged


@dataclass(frozen=True)
class StoreReader:
    """Read object-store URIs through the store (and its policy), local paths directly.

    A picklable callable, not a closure: training loaders send it to their worker
    processes, which read the examples themselves.
    """

    store: ObjectStore

    def __call__(self, uri: str) -> bytes:
        return self.store.get(uri) if uri.startswith("s3://") else read_local(uri)


def byte_reader(store: ObjectStore) -> Callable[[str], bytes]:
    """A :class:`StoreReader` on ``store``."""
    return StoreReader(store)


def folder_sources(folders: Sequence[Path]) -> list[Source]:
    """Kaggle-layout folders as sources named after the folder."""
    return [Source(folder.name, read_kaggle_ai_vs_human(folder).examples) for folder in folders]


def in_validation(sha256: str) -> bool:
    """A second, independent content-hash split of the training side."""
    salted = hashlib.sha256(f"validation:{sha256}".encode()).hexdigest()
    return is_test(salted, VALIDATION_FRACTION)


def is_labelled(example: Example) -> bool:
    """What the detector learns from: an example with a label."""
    return example.label is not None


def is_captioned(example: Example) -> bool:
    """What the captioner learns from: an example with reference captions."""
    return bool(example.captions)


def prepare(
    sources: Sequence[Source],
    read: Callable[[str], bytes],
    manifest_dir: Path,
    usable: Callable[[Example], bool] = is_labelled,
) -> TrainingData:
    """Check every usable example, write one manifest per source, split by content hash.

    Examples that are not ``usable`` (by default: unlabelled ones, as the detector learns
    from labels only) are left out. A file seen in an earlier source is a duplicate in a
    later one, so no image lands on both sides of the split through two sources.
    """
    result = TrainingData()
    seen: set[str] = set()
    for source in sources:
        kept = [example for example in source.examples if usable(example)]
        report = check_quality(kept, reader=read)
        result.quality[source.name] = report
        fresh = [item for item in report.accepted if item.sha256 not in seen]
        seen |= {item.sha256 for item in fresh}
        manifest = build_manifest(source.name, fresh)
        write_manifest(manifest, manifest_dir)
        result.manifests.append(manifest)
        split = split_by_content(fresh, lambda item: item.sha256)
        result.test += split.test
        for item in split.train:
            (result.validation if in_validation(item.sha256) else result.train).append(item)
    return result
