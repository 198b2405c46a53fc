"""Where image bytes live: events carry a URI, never the bytes.

Fetching is where untrusted input meets the file system and the network, so every fetch
goes through a :class:`FetchPolicy`: only allowed schemes, only below allowed roots (no path
traversal, no symlink escape), only allowed buckets (no SSRF to arbitrary hosts), and never
more than a byte limit.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

from deeptrust.streams.errors import InvalidInput, Reason


@dataclass(frozen=True)
class StoredObject:
    """What the upload path needs to know after storing an image."""

    uri: str
    size_bytes: int
    sha256: str


class ObjectStore(Protocol):
    """Stores image bytes under a key and fetches them back by URI."""

    def put(self, key: str, data: bytes) -> StoredObject:
        """Store ``data`` under ``key`` and return its URI."""
        ...

    def get(self, uri: str) -> bytes:
        """Return the bytes behind ``uri``, or raise :class:`InvalidInput`."""
        ...


@dataclass(frozen=True)
class FetchPolicy:
    """What a stage may fetch: schemes, local roots, buckets, and how many bytes."""

    local_roots: tuple[Path, ...] = ()
    buckets: tuple[str, ...] = ()
    max_bytes: int = 50 * 1024 * 1024

    def local_path(self, uri: str) -> Path:
        """Return the checked local path of a ``file://`` URI."""
        parsed = urlparse(uri)
        if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
            raise InvalidInput(Reason.DISALLOWED_URI, f"not a local file URI: {uri!r}")
        path = Path(unquote(parsed.path)).resolve()
        if not any(path.is_relative_to(root.resolve()) for root in self.local_roots):
            raise InvalidInput(Reason.DISALLOWED_URI, f"{uri!r} is outside the allowed roots")
        return path

    def bucket_key(self, uri: str) -> tuple[str, str]:
        """Return the checked bucket and key of an ``s3://`` URI."""
        parsed = urlparse(uri)
        if parsed.scheme != "s3" or parsed.netloc not in self.buckets:
            raise InvalidInput(Reason.DISALLOWED_URI, f"{uri!r} is not in an allowed bucket")
        key = parsed.path.lstrip("/")
        if not key or ".." in key.split("/"):
            raise InvalidInput(Reason.DISALLOWED_URI, f"bad object key in {uri!r}")
        return parsed.netloc, key


def content_hash(data: bytes) -> str:
    """Return the SHA-256 hex digest the upload event carries."""
    return hashlib.sha256(data).hexdigest()


def _check_key(key: str) -> None:
    if not key or key.startswith("/") or ".." in key.split("/"):
        raise ValueError(f"object keys are relative paths without '..': {key!r}")


@dataclass(frozen=True)
class LocalObjectStore:
    """A directory on local disk; the default for development, tests and the demo."""

    root: Path
    policy: FetchPolicy = field(default_factory=FetchPolicy)

    @classmethod
    def at(cls, root: Path, max_bytes: int = FetchPolicy.max_bytes) -> LocalObjectStore:
        """Return a store rooted at ``root`` that may fetch only from below ``root``."""
        root = root.resolve()
        return cls(root=root, policy=FetchPolicy(local_roots=(root,), max_bytes=max_bytes))

    def put(self, key: str, data: bytes) -> StoredObject:
        """Write ``data`` below the root, atomically, and return its ``file://`` URI."""
        _check_key(key)
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_bytes(data)
        partial.replace(path)
        return StoredObject(path.as_uri(), len(data), content_hash(data))

    def get(self, uri: str) -> bytes:
        """Read the file behind ``uri`` if the policy allows it."""
        path = self.policy.local_path(uri)
        try:
            size = path.stat().st_size
            if size > self.policy.max_bytes:
                raise InvalidInput(Reason.OBJECT_TOO_LARGE, f"{size} bytes at {uri!r}")
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as error:
            raise InvalidInput(Reason.MISSING_OBJECT, f"no object at {uri!r}") from error


S3_MISSING_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "NotFound", "404"})
S3_DENIED_CODES = frozenset({"AccessDenied", "Forbidden", "403"})
READ_CHUNK = 256 * 1024


@dataclass(frozen=True)
class S3ObjectStore:
    """An S3-compatible bucket (AWS, Ceph, versitygw...), through boto3 (the ``s3`` extra).

    One client per store, made on first use: boto3 clients are thread-safe, and making one
    per request costs milliseconds of CPU and a new connection pool each time. Timeouts
    bound a stuck request; botocore's standard retry mode retries throttling, 5xx answers
    and dropped connections with backoff before an error reaches the stage, whose batch
    retry takes over from there.
    """

    bucket: str
    endpoint_url: str | None = None
    policy: FetchPolicy = field(default_factory=FetchPolicy)
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    max_attempts: int = 5

    @cached_property
    def _client(self) -> Any:
        import boto3  # optional dependency, only needed when S3 is configured
        from botocore.config import Config

        config = Config(
            connect_timeout=self.connect_timeout_s,
            read_timeout=self.read_timeout_s,
            retries={"mode": "standard", "max_attempts": self.max_attempts},
        )
        return boto3.client("s3", endpoint_url=self.endpoint_url, config=config)

    def __getstate__(self) -> dict[str, Any]:
        """Everything but the client, so a training loader's worker process makes its own."""
        return {key: value for key, value in self.__dict__.items() if key != "_client"}

    def put(self, key: str, data: bytes) -> StoredObject:
        """Upload ``data`` to the bucket and return its ``s3://`` URI."""
        _check_key(key)
        self._client.put_object(Bucket=self.bucket, Key=key, Body=data)
        return StoredObject(f"s3://{self.bucket}/{key}", len(data), content_hash(data))

    def get(self, uri: str) -> bytes:
        """Download the object behind ``uri`` if the policy allows it, up to the byte limit.

        The body is read in chunks and abandoned as soon as it passes the limit, whatever
        its declared length said. A missing object, or one the credentials may not read,
        is :class:`InvalidInput`; other errors (the server down, throttled) propagate as
        the transient faults they are.
        """
        from botocore.exceptions import ClientError

        bucket, key = self.policy.bucket_key(uri)
        try:
            response = self._client.get_object(Bucket=bucket, Key=key)
        except ClientError as error:
            refusal = refusal_of(uri, error.response)
            if refusal is None:
                raise  # a fault that may pass: the stage retries the batch
            raise refusal from error
        declared = int(response.get("ContentLength") or 0)
        return read_capped(response["Body"], declared, self.policy.max_bytes, uri)


def read_capped(body: Any, declared: int, max_bytes: int, uri: str) -> bytes:
    """Read a streamed body in chunks, giving up as soon as it passes ``max_bytes``."""
    try:
        if declared > max_bytes:
            raise InvalidInput(Reason.OBJECT_TOO_LARGE, f"{declared} bytes at {uri!r}")
        chunks: list[bytes] = []
        read = 0
        for chunk in body.iter_chunks(READ_CHUNK):
            read += len(chunk)
            if read > max_bytes:
                raise InvalidInput(
                    Reason.OBJECT_TOO_LARGE, f"more than {max_bytes} bytes at {uri!r}"
                )
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        body.close()


def refusal_of(uri: str, response: dict[str, Any]) -> InvalidInput | None:
    """What an S3 error answer to a read means: a missing object, or ``None`` (retry)."""
    code = str(response.get("Error", {}).get("Code", ""))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code in S3_MISSING_CODES or status == 404:
        return InvalidInput(Reason.MISSING_OBJECT, f"no object at {uri!r} ({code})")
    if code in S3_DENIED_CODES or status == 403:
        # Without s3:ListBucket, S3 answers a missing key with 403, not 404.
        return InvalidInput(
            Reason.MISSING_OBJECT,
            f"access denied to {uri!r}: missing, or not readable with these credentials",
        )
    return None
