"""Versioned event models for every topic of the pipeline.

Fields are only ever added (optional, with a default) within a major version; removing or
retyping a field means a new major version and a new topic. Models ignore unknown fields so
that an older consumer can read events of a newer minor revision.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

ImageId = str


class Event(BaseModel):
    """Base of every event: an id, the image it concerns and where it came from."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_name: ClassVar[str]
    schema_version: ClassVar[int]

    event_id: str = Field(description="Unique id of this event (a UUID).")
    image_id: ImageId = Field(min_length=1, max_length=200, description="Key of every event.")


class UploadEvent(Event):
    """An image entered the platform; emitted by the upload path."""

    schema_name: ClassVar[str] = "upload"
    schema_version: ClassVar[int] = 1

    uri: str = Field(description="Where the image bytes live (file:// or s3://).")
    content_type: str = Field(description="MIME type the uploader declared.")
    size_bytes: int = Field(ge=0)
    sha256: str = Field(pattern="^[0-9a-f]{64}$", description="Content hash of the bytes.")
    uploaded_at: datetime
    source: str = Field(default="upload", description="Which producer emitted the event.")
    metadata: dict[str, str] = Field(default_factory=dict)


class Detection(BaseModel):
    """Verdict of the AI-generated-image detector for one image."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    ai_probability: float = Field(ge=0.0, le=1.0)
    label: Literal["ai_generated", "real"]
    model: str = Field(description="Name of the model that produced the verdict.")
    model_version: str
    signals: list[str] = Field(default_factory=list, description="Evidence found, if any.")


class DetectedEvent(Event):
    """An upload with the detector's verdict."""

    schema_name: ClassVar[str] = "detected"
    schema_version: ClassVar[int] = 1

    uri: str
    uploaded_at: datetime
    width: int = Field(ge=1)
    height: int = Field(ge=1)
    detection: Detection


class EmbeddingEvent(Event):
    """An image embedding, the input of drift monitoring and similarity search."""

    schema_name: ClassVar[str] = "embedding"
    schema_version: ClassVar[int] = 1

    uploaded_at: datetime
    model: str
    model_version: str
    vector: list[float] = Field(min_length=1)


class Caption(BaseModel):
    """A natural-language caption and what produced it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    text: str = Field(min_length=1)
    model: str


class CaptionedEvent(DetectedEvent):
    """A detected image with its caption."""

    schema_name: ClassVar[str] = "captioned"
    schema_version: ClassVar[int] = 1

    caption: Caption


class Tags(BaseModel):
    """Search tags normalised to the vocabulary, and what produced them."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    values: list[str]
    model: str


class EnrichedEvent(CaptionedEvent):
    """The pipeline's final result for one image: verdict, caption and tags."""

    schema_name: ClassVar[str] = "enriched"
    schema_version: ClassVar[int] = 1

    tags: Tags


class ModerationEvent(Event):
    """An image routed to human review, and why."""

    schema_name: ClassVar[str] = "moderation"
    schema_version: ClassVar[int] = 1

    uri: str
    reason: Literal["flagged", "sampled"]
    ai_probability: float = Field(ge=0.0, le=1.0)
    caption: str
    tags: list[str]


class DeadLetterEvent(BaseModel):
    """An input a stage could not process, kept whole with the reason it was rejected.

    The original value travels base64-encoded so that bytes that are not JSON (or not
    UTF-8) survive; the reason is repeated in headers so that tools can filter without
    parsing the value.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_name: ClassVar[str] = "dead_letter"
    schema_version: ClassVar[int] = 1

    stage: str
    reason: str = Field(description="Machine-readable reason code, e.g. undecodable_image.")
    detail: str = Field(description="Human-readable explanation.")
    source_topic: str
    source_partition: int
    source_offset: int
    original_key: str | None
    original_value_b64: str
    original_headers: dict[str, str] = Field(default_factory=dict)
    failed_at: datetime


EVENT_TYPES: tuple[type[BaseModel], ...] = (
    UploadEvent,
    DetectedEvent,
    EmbeddingEvent,
    CaptionedEvent,
    EnrichedEvent,
    ModerationEvent,
    DeadLetterEvent,
)
