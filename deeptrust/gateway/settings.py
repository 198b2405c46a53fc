"""The gateway's settings (``DEEPTRUST_GATEWAY_*``), read once at start-up.

Kafka (``DEEPTRUST_KAFKA_*``) and the object store (``DEEPTRUST_OBJECT_STORE_ROOT`` or
``DEEPTRUST_S3_*``) come from the settings every other command reads, so the gateway writes
where the stages read.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from deeptrust.streams.formats import ACCEPTED
from deeptrust.streams.images import DEFAULT_MAX_PIXELS

MiB = 1024 * 1024


class GatewaySettings(BaseSettings):
    """Keys, limits, the remote-fetch policy and where the status store lives."""

    model_config = SettingsConfigDict(env_prefix="DEEPTRUST_GATEWAY_")

    api_keys: list[SecretStr] = Field(default_factory=list)
    """Accepted ``X-API-Key`` values, a JSON list (``'["key-a", "key-b"]'``), or:"""
    api_keys_file: Path | None = None
    """A file of keys, one a line (a mounted Secret). Keys come from the environment or a
    file, never from a config file or the command line. At least one is required: the
    gateway takes no anonymous uploads; several allow rotation without downtime."""

    max_bytes: int = Field(default=20 * MiB, ge=1)
    """Largest image accepted, checked on ``Content-Length`` first and again while reading."""
    max_pixels: int = Field(default=DEFAULT_MAX_PIXELS, ge=1)
    """Largest image by pixel count, read from the header (no decompression bombs)."""
    allowed_types: list[str] = Field(default_factory=lambda: [f.mime for f in ACCEPTED])
    """MIME types accepted, as sniffed from the bytes; the client's declaration is ignored.
    By default every format the stages decode (docs/formats.md): JPEG, PNG, GIF, WebP,
    HEIC, HEIF, AVIF, TIFF and BMP."""

    fetch_hosts: list[str] = Field(default_factory=list)
    """Hosts whose ``http(s)://`` URIs the gateway may fetch. Empty (the default) refuses
    every remote URI: fetching whatever URL a client names would let it reach internal
    services (SSRF). URIs already in the object store are always accepted as references."""
    fetch_timeout_s: float = Field(default=5.0, gt=0)
    """Total time for one remote fetch; redirects are never followed."""

    delivery_timeout_s: float = Field(default=10.0, gt=0)
    """How long a request waits for the broker's acknowledgement before answering 503."""

    status_db: Path = Path(".deeptrust/gateway-status.db")
    """The SQLite file of results per image (one per pod; an emptyDir is enough)."""
    status_retention_s: float = Field(default=7 * 24 * 3600, gt=0)
    """Results older than this are dropped from the status store."""
    status_lookback_s: float = Field(default=3600.0, ge=0)
    """How far back a fresh status file starts reading the topics (a new replica): results
    older than this are unknown to it (404). Reading the whole retention instead would take
    hours at production rates and fill the file with results nobody asks for."""

    @model_validator(mode="after")
    def _some_keys(self) -> GatewaySettings:
        """Read the key file; refuse to start without a key, and refuse empty keys."""
        if any(not key.get_secret_value() for key in self.api_keys):
            raise ValueError("an API key is empty")
        if self.api_keys_file is not None:
            try:
                lines = self.api_keys_file.read_text(encoding="utf-8").splitlines()
            except OSError as error:
                raise ValueError(
                    f"cannot read api_keys_file {self.api_keys_file}: {error.strerror or error}"
                ) from None
            self.api_keys = [*self.api_keys, *(SecretStr(k.strip()) for k in lines if k.strip())]
        if not self.api_keys:
            raise ValueError(
                "set at least one API key (DEEPTRUST_GATEWAY_API_KEYS or "
                "DEEPTRUST_GATEWAY_API_KEYS_FILE): the gateway takes no anonymous uploads"
            )
        return self
