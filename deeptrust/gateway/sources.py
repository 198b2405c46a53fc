"""Where an upload's bytes come from: a multipart body read under a cap, or a URI.

Every read is bounded before it starts (``Content-Length``) and while it runs (a counting
stream), so a client cannot make the gateway buffer more than the limit. A URI is either
the object store's own (accepted as a reference, through the store's fetch policy) or an
``http(s)`` URI on a host the operator allowed (fetched without following redirects, under
a timeout and the same byte cap); anything else is refused, so the gateway cannot be used
to reach internal services.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import urlparse

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from deeptrust.gateway.sniff import Rejection, UploadRejected
from deeptrust.streams.errors import InvalidInput, Reason
from deeptrust.streams.objectstore import ObjectStore

FORM_OVERHEAD = 64 * 1024
"""Bytes a multipart body may carry beyond the file itself (boundaries, part headers)."""
JSON_LIMIT = 16 * 1024
"""Largest JSON body: a URI, not an image."""
_FIELD_LIMIT = 8 * 1024


class UriUpload(BaseModel):
    """The JSON body of an upload by reference."""

    model_config = ConfigDict(extra="forbid")

    uri: str = Field(min_length=1, max_length=2048, description="Object store or http(s) URI.")


def check_declared_length(headers: Mapping[str, str], limit: int) -> None:
    """Refuse a body whose ``Content-Length`` is over ``limit`` before reading any of it."""
    declared = headers.get("content-length")
    if declared is None:
        return  # chunked: the counting stream enforces the limit instead
    if not declared.isdigit():
        raise UploadRejected(400, Rejection.BAD_REQUEST, "Content-Length is not a number")
    if int(declared) > limit:
        raise UploadRejected(
            413, Rejection.TOO_LARGE, f"a body of {declared} bytes; the limit is {limit}"
        )


class CutOffWhileStreaming(UploadRejected):
    """A body refused as it arrived, before it was read whole (the streaming cap)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, Rejection.TOO_LARGE, f"over {limit} bytes")


async def capped(stream: AsyncIterator[bytes], limit: int) -> AsyncGenerator[bytes, None]:
    """Yield ``stream``'s chunks, refusing (413) as soon as they add up to over ``limit``."""
    total = 0
    async for chunk in stream:
        total += len(chunk)
        if total > limit:
            raise CutOffWhileStreaming(limit)
        yield chunk


async def read_multipart_file(
    headers: Headers, stream: AsyncIterator[bytes], max_bytes: int
) -> tuple[bytes, str]:
    """Read the ``file`` field of a multipart body; return its bytes and the client's name."""
    parser = MultiPartParser(
        headers,
        capped(stream, max_bytes + FORM_OVERHEAD),
        max_files=1,
        max_fields=8,
        max_part_size=_FIELD_LIMIT,
    )
    try:
        form = await parser.parse()
    except MultiPartException as error:
        raise UploadRejected(400, Rejection.BAD_REQUEST, error.message) from error
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise UploadRejected(
                400, Rejection.BAD_REQUEST, "a multipart upload needs a file field named 'file'"
            )
        data = await upload.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise UploadRejected(413, Rejection.TOO_LARGE, f"over {max_bytes} bytes")
        return data, upload.filename or "upload"
    finally:
        await form.close()


async def read_uri_body(stream: AsyncIterator[bytes]) -> str:
    """Read the JSON body of an upload by reference; return its URI."""
    body = b"".join([chunk async for chunk in capped(stream, JSON_LIMIT)])
    try:
        return UriUpload.model_validate_json(body).uri
    except ValidationError as error:
        problems = "; ".join(f"{e['loc']}: {e['msg']}" for e in error.errors()[:3])
        raise UploadRejected(400, Rejection.BAD_REQUEST, problems or "invalid JSON") from error


@dataclass(frozen=True)
class Resolved:
    """The bytes behind a URI, and the URI itself when it is already in the object store."""

    data: bytes
    stored_uri: str | None
    filename: str


_STORE_REJECTIONS = {
    Reason.OBJECT_TOO_LARGE: (413, Rejection.TOO_LARGE),
    Reason.MISSING_OBJECT: (422, Rejection.MISSING_OBJECT),
}


class UriResolver:
    """Turns an upload's URI into bytes under the gateway's policy."""

    def __init__(
        self,
        store: ObjectStore,
        client: httpx.AsyncClient,
        fetch_hosts: frozenset[str],
        timeout_s: float,
        max_bytes: int,
    ) -> None:
        self._store = store
        self._client = client
        self._fetch_hosts = fetch_hosts
        self._timeout_s = timeout_s
        self._max_bytes = max_bytes

    async def resolve(self, uri: str) -> Resolved:
        """Fetch ``uri`` (remote) or read it from the object store (reference)."""
        try:
            parsed = urlparse(uri)
        except ValueError as error:
            raise UploadRejected(422, Rejection.DISALLOWED_URI, "not a valid URI") from error
        filename = PurePosixPath(parsed.path).name or "upload"
        if parsed.scheme in ("http", "https"):
            return Resolved(await self._fetch(uri, parsed.hostname), None, filename)
        try:
            data = await run_in_threadpool(self._store.get, uri)
        except InvalidInput as error:
            status, reason = _STORE_REJECTIONS.get(error.reason, (422, Rejection.DISALLOWED_URI))
            raise UploadRejected(status, reason, error.detail) from error
        except (OSError, ValueError) as error:  # unreadable, or a path the OS refuses
            raise UploadRejected(422, Rejection.MISSING_OBJECT, f"cannot read {uri!r}") from error
        return Resolved(data, uri, filename)

    async def _fetch(self, uri: str, host: str | None) -> bytes:
        if host is None or host.lower() not in self._fetch_hosts:
            raise UploadRejected(
                422, Rejection.DISALLOWED_URI, f"fetching from {host!r} is not allowed"
            )
        try:
            # httpx's timeout bounds each read; asyncio's bounds the whole fetch, so a server
            # that trickles bytes cannot hold a request open.
            async with (
                asyncio.timeout(self._timeout_s),
                self._client.stream(
                    "GET", uri, timeout=self._timeout_s, follow_redirects=False
                ) as response,
            ):
                if response.status_code != 200:
                    raise UploadRejected(
                        422, Rejection.FETCH_FAILED, f"{uri!r} answered {response.status_code}"
                    )
                check_declared_length(response.headers, self._max_bytes)
                chunks = capped(response.aiter_bytes(), self._max_bytes)
                return b"".join([chunk async for chunk in chunks])
        except (httpx.HTTPError, TimeoutError) as error:
            raise UploadRejected(
                422, Rejection.FETCH_FAILED, f"{uri!r}: {type(error).__name__}"
            ) from error
