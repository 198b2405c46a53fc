"""Versioned event models for every topic of the pipeline.

Fields are only ever added (optional, with a default) within a major version; removing or
retyping a field means a new major version and a new topic. Models ignore unknown fields so
that an older consumer can read events of a newer minor revision.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from deeptrust.schemas.vectors import Dtype, Encoding, pack, unpack

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
    label: Literal["ai_generated", "inconclusive", "real"] = Field(
        description="``inconclusive``: the evidence is weak either way (a detector with a "
        "calibrated band between its real and AI-generated thresholds; readers of the first "
        "revision knew only the other two)."
    )
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


class PackedVector(BaseModel):
    """A vector as base64 of its little-endian bytes (:mod:`deeptrust.schemas.vectors`)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    dtype: Dtype = Field(description="Type of each value: float32 (exact) or float16.")
    data: str = Field(min_length=1, description="Base64 of the little-endian values.")


class EmbeddingEvent(Event):
    """An image embedding, the input of drift monitoring and similarity search.

    Revision 2 carries the vector ``packed`` (a fraction of the bytes, decoded without
    parsing a float per value) with ``vector`` left empty; revision 1's readers need the
    list, so the writer keeps it while they are about (``DEEPTRUST_EMBEDDING_ENCODING``).
    Exactly one of the two holds the values; :meth:`values` reads whichever it is.
    """

    schema_name: ClassVar[str] = "embedding"
    schema_version: ClassVar[int] = 1

    uploaded_at: datetime
    model: str
    model_version: str
    vector: list[float] = Field(
        default_factory=list,
        description="The values as a JSON list (revision 1's only form); empty when packed.",
    )
    packed: PackedVector | None = Field(
        default=None, description="The values packed, when ``vector`` is empty (revision 2)."
    )
    _values: np.ndarray = PrivateAttr()

    @model_validator(mode="after")
    def _one_form(self) -> EmbeddingEvent:
        """Exactly one form holds the values; packed ones must unpack (checked once, kept)."""
        if bool(self.vector) == (self.packed is not None):
            raise ValueError("exactly one of vector and packed holds the values")
        if self.packed is not None:
            self._values = unpack(self.packed.data, self.packed.dtype)
        else:
            self._values = np.asarray(self.vector, dtype=np.float64)
            self._values.flags.writeable = False
        return self

    @classmethod
    def packing(cls, values: object, encoding: Encoding, **fields: object) -> EmbeddingEvent:
        """An event holding ``values`` in ``encoding``: a dtype packed, or the JSON list."""
        if encoding == "list":
            listed = np.asarray(values, dtype=np.float64).tolist()
            return cls.model_validate({**fields, "vector": listed})
        packed = PackedVector(dtype=encoding, data=pack(values, encoding))
        return cls.model_validate({**fields, "packed": packed})

    def values(self) -> np.ndarray:
        """The embedding as a read-only float64 array, whichever form carried it."""
        return self._values

    def __eq__(self, other: object) -> bool:
        """Equal when the fields are: the unpacked array follows from them."""
        return type(other) is type(self) and self.__dict__ == other.__dict__

    # A list field: never hashable, as before ``__eq__`` was written out.
    __hash__ = None  # type: ignore[assignment]


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
    broader: list[str] = Field(
        default_factory=list,
        description="Vocabulary terms above the tags in WordNet (ladybug: beetle, insect, "
        "animal), nearest first, so a search for a category finds its members.",
    )


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
    signals: list[str] = Field(
        default_factory=list,
        description="Provenance evidence from the file (C2PA, generator metadata), if any.",
    )


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


class DeadLetterRedrive(BaseModel):
    """A dead letter sent back to its source topic (a compacted log keyed by its id).

    Written in the same transaction as the redriven message, so the log says exactly which
    letters went back: a second redrive of the same letter finds it here and does nothing.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_name: ClassVar[str] = "dead_letter_redrive"
    schema_version: ClassVar[int] = 1

    dead_letter_id: str = Field(min_length=1, description="The dead letter's event id.")
    stage: str = Field(description="The stage that had rejected it.")
    reason: str
    source_topic: str
    source_partition: int
    source_offset: int
    original_event_id: str | None = Field(description="The redriven event's id (unchanged).")
    redriven_at: datetime

    @property
    def key(self) -> str:
        """The changelog key: one record per dead letter survives compaction."""
        return self.dead_letter_id


class ModelEvent(BaseModel):
    """Base of events about a model rather than an image; keyed by ``model@version``."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_name: ClassVar[str]
    schema_version: ClassVar[int]

    event_id: str = Field(description="Unique id of this event (a UUID).")
    model: str = Field(min_length=1, description="The embedding model the windows came from.")
    model_version: str = Field(min_length=1)

    @property
    def key(self) -> str:
        """The message key: every event about one model version lands in one partition."""
        return f"{self.model}@{self.model_version}"


class DriftWindow(BaseModel):
    """Which embeddings a drift verdict was computed on."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    index: int = Field(ge=0, description="Sequence number of the window for this model version.")
    opened_at: datetime = Field(description="Timestamp of the window's first embedding.")
    closed_at: datetime = Field(description="Timestamp of the window's last embedding.")
    size: int = Field(ge=1)
    closed_by: Literal["count", "age"]
    sample_image_ids: list[str] = Field(
        default_factory=list, description="A few image ids from the window, for inspection."
    )


class DriftVerdict(BaseModel):
    """One detector's verdict on a window: higher statistics mean more drift."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    detector: str = Field(description="Which test, e.g. kl-histogram or alibi-ks.")
    statistic: float
    threshold: float
    p_value: float = Field(ge=0.0, le=1.0)
    is_drift: bool
    false_alarm_rate: float = Field(gt=0.0, lt=1.0)
    per_component: list[float] = Field(
        default_factory=list, description="The statistic's share per principal component."
    )


class DriftReportEvent(ModelEvent):
    """The verdict on one window of embeddings, emitted for every window."""

    schema_name: ClassVar[str] = "drift_report"
    schema_version: ClassVar[int] = 1

    reference_digest: str = Field(description="Content hash of the reference window used.")
    window: DriftWindow
    verdicts: list[DriftVerdict] = Field(min_length=1)
    is_drift: bool = Field(description="The combined verdict of the configured detectors.")


class AlertEvent(BaseModel):
    """Something an operator should look at; subscribers filter by kind and severity."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_name: ClassVar[str] = "alert"
    schema_version: ClassVar[int] = 1

    event_id: str = Field(description="Unique id of this alert (a UUID).")
    kind: str = Field(min_length=1, description="What happened, e.g. drift.")
    severity: Literal["info", "warning", "critical"]
    subject: str = Field(min_length=1, description="What it concerns, e.g. model@version.")
    summary: str = Field(min_length=1)
    raised_at: datetime
    source: str = Field(description="The component that raised it.")
    labels: dict[str, str] = Field(default_factory=dict)
    caused_by: str | None = Field(default=None, description="Id of the event behind it.")

    @property
    def key(self) -> str:
        """The message key: alerts about one subject stay in order."""
        return self.subject


class RetrainRequestEvent(ModelEvent):
    """A request to retrain, with the evidence that prompted it.

    Its event id is the request id that the training service deduplicates on.
    """

    schema_name: ClassVar[str] = "retrain_request"
    schema_version: ClassVar[int] = 1

    reason: Literal["drift"] = "drift"
    requested_at: datetime
    reference_digest: str
    window: DriftWindow
    verdicts: list[DriftVerdict] = Field(min_length=1)
    drift_report_id: str = Field(description="The drift report that triggered the request.")


class DriftStateRecord(BaseModel):
    """The drift processor's durable state for one model version (a compacted changelog).

    Written in the same transaction as the drift outputs and the consumer offsets, so after
    a restart the processor knows which embeddings it has judged and when it last asked for
    retraining, exactly as far as its outputs went.
    """

    model_config = ConfigDict(extra="ignore")

    schema_name: ClassVar[str] = "drift_state"
    schema_version: ClassVar[int] = 1

    model: str = Field(min_length=1)
    model_version: str = Field(min_length=1)
    closed_through: dict[int, int] = Field(
        default_factory=dict, description="Per partition, the last offset in a closed window."
    )
    windows_closed: int = Field(default=0, ge=0)
    reference_digest: str | None = None
    last_retrain_at: float | None = Field(
        default=None, description="Event time (Unix seconds) of the last retrain request."
    )

    @property
    def key(self) -> str:
        """The changelog key: one record per model version survives compaction."""
        return f"{self.model}@{self.model_version}"


class FeedbackEvent(Event):
    """A human's decision about an image: the label the training set grows from.

    Keyed by image id on a compacted topic, so a reviewer's later correction replaces the
    earlier decision instead of adding a contradicting example.
    """

    schema_name: ClassVar[str] = "feedback"
    schema_version: ClassVar[int] = 1

    uri: str = Field(description="Where the image bytes live (file:// or s3://).")
    label: Literal["ai_generated", "real"]
    reviewer: str = Field(min_length=1, description="Who decided (a person or a queue).")
    decided_at: datetime
    note: str = Field(default="", max_length=2000)


class ModelUpdateEvent(BaseModel):
    """A registered model version took an alias: a candidate to try, or the new production.

    Stages that follow the model swap to a new production version between batches; the
    artefact lives in the object store, so a stage needs no access to the tracking server.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_name: ClassVar[str] = "model_update"
    schema_version: ClassVar[int] = 1

    event_id: str = Field(description="Unique id of this event (a UUID).")
    model: str = Field(min_length=1, description="Registered model name, e.g. deeptrust-detector.")
    version: str = Field(min_length=1, description="The registry's version number.")
    alias: Literal["candidate", "production"]
    task: Literal["detect", "caption"] = Field(description="The stage task that runs the model.")
    backend: str = Field(min_length=1, description="The backend that loads the artefact.")
    artifact_uri: str = Field(description="The artefact in the object store (file:// or s3://).")
    artifact_sha256: str = Field(pattern="^[0-9a-f]{64}$")
    run_id: str = Field(description="The tracking run that produced the version.")
    request_id: str | None = Field(default=None, description="The retrain request behind it.")
    metrics: dict[str, float] = Field(default_factory=dict, description="Offline evaluation.")
    updated_at: datetime

    @property
    def key(self) -> str:
        """The changelog key: the latest event per model and alias survives compaction."""
        return f"{self.model}:{self.alias}"


class SearchInteractionEvent(BaseModel):
    """What a searcher saw and picked: an impression per results page, a click per result.

    Keyed by session id, so one session's impressions and clicks stay in order and the
    click-through rate and reciprocal rank can be computed per session.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_name: ClassVar[str] = "search_interaction"
    schema_version: ClassVar[int] = 1

    event_id: str = Field(description="Unique id of this event (a UUID).")
    session_id: str = Field(min_length=1, description="The searcher's session: the key.")
    query: str = Field(description="The query as typed.")
    kind: Literal["impression", "click"]
    results: list[str] = Field(description="Image ids shown, in rank order.")
    image_id: ImageId | None = Field(default=None, description="The clicked image, if a click.")
    rank: int | None = Field(default=None, ge=1, description="1-based rank of the click.")
    occurred_at: datetime

    @property
    def key(self) -> str:
        """The message key: one session's interactions land in one partition."""
        return self.session_id


EVENT_TYPES: tuple[type[BaseModel], ...] = (
    UploadEvent,
    DetectedEvent,
    EmbeddingEvent,
    CaptionedEvent,
    EnrichedEvent,
    ModerationEvent,
    DeadLetterEvent,
    DeadLetterRedrive,
    DriftReportEvent,
    AlertEvent,
    RetrainRequestEvent,
    DriftStateRecord,
    FeedbackEvent,
    ModelUpdateEvent,
    SearchInteractionEvent,
)
