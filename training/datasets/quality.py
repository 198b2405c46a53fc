"""Data-quality checks on the way in: each example is kept, or rejected with its reason.

Images are decoded by the stages' own :func:`deeptrust.streams.images.decode_image` (pixel limit
from
the header before decompressing, then a full load), after Pillow's ``verify`` (structure
and checksums), so training keeps only what the pipeline would accept at run time.
Exact duplicates (same SHA-256 of the bytes) keep their first occurrence: a copy would
count twice in training, or leak into the test split as a file the model has seen.
"""

from __future__ import annotations

import hashlib
import io
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from PIL import Image, UnidentifiedImageError

from deeptrust.streams.errors import InvalidInput, Reason
from deeptrust.streams.images import DEFAULT_MAX_PIXELS, decode_image
from deeptrust.training.datasets.example import ByteReader, Example, read_local


class Rejection(StrEnum):
    """Why an example was left out."""

    UNREADABLE = "unreadable"
    UNDECODABLE = "undecodable"
    TOO_MANY_PIXELS = "too_many_pixels"
    FORMAT_NOT_ALLOWED = "format_not_allowed"
    TOO_SMALL = "too_small"
    DUPLICATE = "duplicate"


@dataclass(frozen=True)
class QualityPolicy:
    """What an example must satisfy. MPO is how Pillow names many phones' JPEGs."""

    allowed_formats: frozenset[str] = frozenset({"JPEG", "MPO", "PNG", "WEBP"})
    min_width: int = 64
    min_height: int = 64
    max_pixels: int = DEFAULT_MAX_PIXELS


@dataclass(frozen=True)
class Accepted:
    """An example that passed, with the facts a manifest records about its file."""

    example: Example
    sha256: str
    width: int
    height: int
    format: str


@dataclass(frozen=True)
class Rejected:
    """An example that did not pass; ``detail`` says what was found."""

    example: Example
    reason: Rejection
    detail: str


@dataclass
class QualityReport:
    """Every example's fate, in input order."""

    accepted: list[Accepted] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Examples kept (``accepted``) and rejected per reason (every reason, zeros too)."""
        by_reason = Counter(rejection.reason for rejection in self.rejected)
        return {"accepted": len(self.accepted)} | {
            reason.value: by_reason[reason] for reason in Rejection
        }

    def metrics(self, prefix: str = "quality") -> dict[str, float]:
        """:meth:`counts` as flat float metrics (``quality/too_small`` ...)."""
        return {f"{prefix}/{name}": float(count) for name, count in self.counts().items()}


def _verify(data: bytes) -> None:
    """Pillow's structural check; it leaves the image unusable, so it gets its own copy."""
    with Image.open(io.BytesIO(data)) as image:
        image.verify()


def _inspect(
    example: Example, data: bytes, digest: str, policy: QualityPolicy
) -> Accepted | Rejected:
    """Decode and measure one example's bytes against ``policy``."""
    try:
        _verify(data)
        decoded = decode_image(data, policy.max_pixels)
    except InvalidInput as error:
        reason = (
            Rejection.TOO_MANY_PIXELS
            if error.reason is Reason.TOO_MANY_PIXELS
            else Rejection.UNDECODABLE
        )
        return Rejected(example, reason, error.detail)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        return Rejected(example, Rejection.UNDECODABLE, f"verify failed: {error}")
    width, height = decoded.image.size
    if decoded.format not in policy.allowed_formats:
        allowed = ", ".join(sorted(policy.allowed_formats))
        return Rejected(example, Rejection.FORMAT_NOT_ALLOWED, f"{decoded.format} not in {allowed}")
    if width < policy.min_width or height < policy.min_height:
        return Rejected(
            example,
            Rejection.TOO_SMALL,
            f"{width}x{height} below {policy.min_width}x{policy.min_height}",
        )
    return Accepted(example, digest, width, height, decoded.format)


def check_quality(
    examples: Iterable[Example],
    policy: QualityPolicy | None = None,
    reader: ByteReader = read_local,
) -> QualityReport:
    """Check every example; a duplicate is rejected only after its first copy was accepted."""
    policy = policy or QualityPolicy()
    report = QualityReport()
    first_by_digest: dict[str, Example] = {}
    for example in examples:
        try:
            data = reader(example.uri)
        except (OSError, InvalidInput) as error:
            report.rejected.append(Rejected(example, Rejection.UNREADABLE, str(error)))
            continue
        digest = hashlib.sha256(data).hexdigest()
        if digest in first_by_digest:
            first = first_by_digest[digest]
            detail = f"same bytes as {first.name}"
            if first.label != example.label:
                detail += f" (labelled {first.label} there, {example.label} here)"
            report.rejected.append(Rejected(example, Rejection.DUPLICATE, detail))
            continue
        outcome = _inspect(example, data, digest, policy)
        if isinstance(outcome, Accepted):
            first_by_digest[digest] = example
            report.accepted.append(outcome)
        else:
            report.rejected.append(outcome)
    return report
