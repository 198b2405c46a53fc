"""A dataset version pinned down: one JSON line per example, named by the digest of its content.

Rows are sorted by path and written in one canonical JSON form, so the same files with the
same labels give byte-identical manifests and hence the same version, whatever order they
were loaded in; change one byte of one image, one label or one caption, and the version
changes. :func:`verify_manifest` re-reads the files and says which changed or vanished.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deeptrust.training.datasets.example import inside
from deeptrust.training.datasets.quality import Accepted

SUFFIX = ".manifest.jsonl"
VERSION_LENGTH = 12


@dataclass(frozen=True)
class ManifestRow:
    """What one example's file and annotations were when the version was made."""

    path: str
    sha256: str
    width: int
    height: int
    format: str
    label: int | None = None
    captions: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()

    def to_json(self) -> str:
        """The row's canonical JSON (sorted keys, no spaces, UTF-8 kept)."""
        document = {
            "path": self.path,
            "sha256": self.sha256,
            "width": self.width,
            "height": self.height,
            "format": self.format,
            "label": self.label,
            "captions": list(self.captions),
            "tags": list(self.tags),
        }
        return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str) -> ManifestRow:
        """Parse one line written by :meth:`to_json`."""
        document: dict[str, Any] = json.loads(line)
        return cls(
            path=str(document["path"]),
            sha256=str(document["sha256"]),
            width=int(document["width"]),
            height=int(document["height"]),
            format=str(document["format"]),
            label=None if document.get("label") is None else int(document["label"]),
            captions=tuple(str(caption) for caption in document.get("captions", ())),
            tags=tuple(str(tag) for tag in document.get("tags", ())),
        )


@dataclass(frozen=True)
class Manifest:
    """A named dataset's rows, sorted by path."""

    dataset: str
    rows: tuple[ManifestRow, ...]

    def content(self) -> bytes:
        """The file's bytes: one canonical line per row."""
        return "".join(row.to_json() + "\n" for row in self.rows).encode()

    @property
    def digest(self) -> str:
        """SHA-256 of :meth:`content`."""
        return hashlib.sha256(self.content()).hexdigest()

    @property
    def version(self) -> str:
        """The digest's first characters: short enough to name a run, long enough to be unique."""
        return self.digest[:VERSION_LENGTH]

    def file_name(self) -> str:
        """``<dataset>-<version>.manifest.jsonl``."""
        return f"{self.dataset}-{self.version}{SUFFIX}"


@dataclass(frozen=True)
class Verification:
    """Which files no longer match their manifest rows."""

    missing: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    checked: int = 0

    @property
    def ok(self) -> bool:
        """True when every file is present with its recorded bytes."""
        return not self.missing and not self.changed


def build_manifest(dataset: str, accepted: Iterable[Accepted]) -> Manifest:
    """The manifest of the examples that passed the quality checks.

    Two examples with one path would make the version ambiguous, so that is refused.
    """
    rows = sorted(
        (
            ManifestRow(
                path=item.example.name,
                sha256=item.sha256,
                width=item.width,
                height=item.height,
                format=item.format,
                label=item.example.label,
                captions=item.example.captions,
                tags=item.example.tags,
            )
            for item in accepted
        ),
        key=lambda row: row.path,
    )
    counts = Counter(row.path for row in rows)
    repeated = sorted(path for path, count in counts.items() if count > 1)
    if repeated:
        raise ValueError(f"paths listed more than once: {repeated[:5]}")
    return Manifest(dataset, tuple(rows))


def write_manifest(manifest: Manifest, folder: Path) -> Path:
    """Write the manifest into ``folder`` under its versioned name and return the path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / manifest.file_name()
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(manifest.content())
    partial.replace(path)
    return path


def read_manifest(path: Path) -> Manifest:
    """Read a manifest written by :func:`write_manifest`, checking that it was not edited.

    The file's name carries its version; content whose digest no longer matches it has been
    changed since it was written, and is refused.
    """
    name = path.name
    if not name.endswith(SUFFIX) or "-" not in name:
        raise ValueError(f"{path} is not named <dataset>-<version>{SUFFIX}")
    dataset, _, version = name.removesuffix(SUFFIX).rpartition("-")
    rows = tuple(
        ManifestRow.from_json(line) for line in path.read_text("utf-8").splitlines() if line
    )
    manifest = Manifest(dataset, rows)
    if manifest.version != version:
        raise ValueError(f"{path}: content has version {manifest.version}, its name says {version}")
    return manifest


def verify_manifest(manifest: Manifest, root: Path) -> Verification:
    """Re-hash every listed file below ``root``; report the missing and the changed ones."""
    missing: list[str] = []
    changed: list[str] = []
    for row in manifest.rows:
        try:
            data = inside(root, row.path).read_bytes()
        except OSError:
            missing.append(row.path)
            continue
        if hashlib.sha256(data).hexdigest() != row.sha256:
            changed.append(row.path)
    return Verification(tuple(missing), tuple(changed), len(manifest.rows))
