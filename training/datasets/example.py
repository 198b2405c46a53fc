"""The one example type every source produces, and how its bytes are read.

Folder datasets (Kaggle, Flickr30k) and human moderation labels all become an
:class:`Example`, so quality checks, manifests, splits and evaluation need to know nothing
about where an example came from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import unquote, urlparse

LABEL_HUMAN = 0
LABEL_AI = 1
LABELS = frozenset({LABEL_HUMAN, LABEL_AI})
GENERATOR_TAG = "generator:"
"""Prefix of the tag naming an AI image's generator (``generator:dcgan``), where known."""

ByteReader = Callable[[str], bytes]
"""Reads the bytes behind an example's ``uri``; an object store's ``get`` is one."""


@dataclass(frozen=True)
class Example:
    """One image with what is known about it.

    ``name`` is stable within its source and is what a manifest records: the path relative
    to the dataset's folder, or an image id. ``uri`` says where the bytes are now (a local
    path, a ``file://`` or ``s3://`` URI). ``label`` is 1 for AI-generated, 0 for human-made,
    ``None`` when the source says nothing; ``tags`` name failure modes such as ``painting``;
    ``origin`` holds (key, value) pairs such as who decided the label and when, for examples
    that came from review (pairs rather than a dict keep the example hashable).
    """

    source: str
    name: str
    uri: str
    label: int | None = None
    captions: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    origin: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        """Refuse a label outside {0, 1}: every metric downstream assumes a binary truth."""
        if self.label is not None and self.label not in LABELS:
            raise ValueError(f"label must be 0 (human) or 1 (AI-generated), not {self.label!r}")


@dataclass(frozen=True)
class SkippedLine:
    """A line of an index file that could not become an example, and why."""

    line: int
    reason: str


@dataclass(frozen=True)
class Loaded:
    """A loader's result: the folder names are relative to, the examples, the lines skipped."""

    root: Path
    examples: tuple[Example, ...]
    skipped: tuple[SkippedLine, ...] = ()


def reviewed_example(
    image_id: str, uri: str, label: int, reviewer: str, decided_at: datetime
) -> Example:
    """A human moderation decision as an example: named by its image id, the review as origin."""
    return Example(
        source="feedback",
        name=image_id,
        uri=uri,
        label=label,
        origin=(("reviewer", reviewer), ("decided_at", decided_at.isoformat())),
    )


def read_local(uri: str) -> bytes:
    """Read a local path or ``file://`` URI (the default reader for folder datasets)."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path)).read_bytes()
    if parsed.scheme and len(parsed.scheme) > 1:  # a one-letter scheme is a Windows drive
        raise ValueError(f"read_local reads local files only, not {uri!r}")
    return Path(uri).read_bytes()


def inside(root: Path, relative: str) -> Path:
    """``root / relative``, refusing absolute paths and ``..`` that would leave ``root``.

    Index files are data, possibly from elsewhere; a row must not point the loader at
    arbitrary files on the machine.
    """
    candidate = Path(relative)
    if candidate.is_absolute() or ".." in candidate.parts or not relative.strip():
        raise ValueError(f"not a relative path inside the dataset: {relative!r}")
    return root / candidate
