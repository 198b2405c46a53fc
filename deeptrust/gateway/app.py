"""The gateway's HTTP API: uploads in, upload events out, results back by image id.

``create_app`` takes every dependency explicitly (settings, object store, producer, status
store and follower, metrics), so a test or the server process builds exactly what it runs;
it starts nothing itself, and whoever built the parts starts and closes them (``lifespan``).

A 202 is an honest promise: the bytes are in the object store and the broker has
acknowledged the upload event (``acks=all``) before the answer leaves. Blocking work (the
store write, hashing, producing) runs in the thread pool; the event loop only awaits.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
from confluent_kafka import KafkaException
from fastapi import Depends, FastAPI, Request, Response, Security
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from deeptrust.gateway.delivery import AckedUploadProducer
from deeptrust.gateway.metrics import GatewayMetrics, RequestMetricsMiddleware
from deeptrust.gateway.settings import GatewaySettings
from deeptrust.gateway.sniff import Limits, Rejection, UploadRejected
from deeptrust.gateway.sources import (
    FORM_OVERHEAD,
    JSON_LIMIT,
    CutOffWhileStreaming,
    UriResolver,
    UriUpload,
    check_declared_length,
    read_multipart_file,
    read_uri_body,
)
from deeptrust.gateway.status import State, StatusFollower, StatusStore
from deeptrust.schemas.events import EnrichedEvent, UploadEvent
from deeptrust.streams.formats import ImageFormat
from deeptrust.streams.objectstore import ObjectStore, content_hash
from deeptrust.streams.producer import DeliveryFailed

log = logging.getLogger(__name__)
Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]
API_KEY_HEADER = "X-API-Key"


class Accepted(BaseModel):
    """The answer to an accepted upload."""

    image_id: str
    event_id: str
    status_url: str


class Pending(BaseModel):
    """The pipeline has the upload and no result yet."""

    status: Literal["pending"]
    image_id: str


class DeadLettered(BaseModel):
    """A stage could not process the image; its reason is the dead letter's."""

    status: Literal["dead_lettered"]
    image_id: str
    stage: str
    reason: str
    detail: str
    failed_at: datetime


class ErrorBody(BaseModel):
    """Why a request was refused: a machine-readable reason and a sentence."""

    error: str
    detail: str


class Health(BaseModel):
    """A probe's answer."""

    status: Literal["ok", "ready", "unavailable"]


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            },
            "application/json": {"schema": UriUpload.model_json_schema()},
        },
    }
}


def create_app(
    settings: GatewaySettings,
    store: ObjectStore,
    uploads: AckedUploadProducer,
    status: StatusStore,
    follower: StatusFollower,
    metrics: GatewayMetrics | None = None,
    lifespan: Lifespan | None = None,
) -> FastAPI:
    """Build the gateway's application around parts the caller owns."""
    metrics = metrics or GatewayMetrics()
    limits = Limits(settings.max_bytes, settings.max_pixels, frozenset(settings.allowed_types))
    keys = [key.get_secret_value().encode() for key in settings.api_keys]
    client = httpx.AsyncClient()
    resolver = UriResolver(
        store,
        client,
        frozenset(host.lower() for host in settings.fetch_hosts),
        settings.fetch_timeout_s,
        settings.max_bytes,
    )
    app = FastAPI(
        title="DeepTrust ingest gateway",
        version="1",
        description="Upload photographs into the DeepTrust pipeline and read their results.",
        lifespan=_closing(client, lifespan),
    )
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    api_key = APIKeyHeader(name=API_KEY_HEADER, auto_error=False)

    def authenticated(presented: str | None = Security(api_key)) -> str:
        """Check the API key in constant time per key; return its fingerprint."""
        candidate = (presented or "").encode()
        matched = False
        for key in keys:  # no early exit: the time taken does not tell which key is close
            matched |= hmac.compare_digest(candidate, key)
        if not matched:
            detail = "invalid API key" if presented else f"the {API_KEY_HEADER} header is missing"
            raise UploadRejected(401, Rejection.UNAUTHORIZED, detail)
        return hashlib.sha256(candidate).hexdigest()[:12]

    @app.exception_handler(UploadRejected)
    async def rejected(request: Request, error: UploadRejected) -> JSONResponse:
        if request.method == "POST":
            metrics.rejected(error.reason)
        if isinstance(error, CutOffWhileStreaming):
            metrics.cut_off.inc()
        if error.reason is Rejection.UNAUTHORIZED:  # for whoever audits access; never the key
            client = request.client.host if request.client else "an unknown client"
            log.warning(
                "refused %s %s from %s: %s", request.method, request.url.path, client, error.detail
            )
        return JSONResponse(
            ErrorBody(error=error.reason.value, detail=error.detail).model_dump(),
            status_code=error.status,
        )

    @app.post(
        "/v1/uploads",
        status_code=202,
        response_model=Accepted,
        summary="Upload an image (multipart field 'file') or name one by URI (JSON)",
        responses={
            400: _error("The body is malformed: no 'file' field, bad JSON, bad multipart."),
            401: _error("The API key is missing or wrong."),
            413: _error("Too many bytes or pixels."),
            415: _error("Not an allowed image type (judged from the bytes), or not a form/JSON."),
            422: _error("The image's header does not parse, or the URI is refused or missing."),
            503: _error("The broker did not acknowledge the upload event in time."),
        },
        openapi_extra=_UPLOAD_BODY,
    )
    async def create_upload(
        request: Request, uploader: str = Depends(authenticated)
    ) -> JSONResponse:
        """Store the image, emit its upload event, and answer once the broker has it."""
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        stored_uri: str | None = None
        if media == "multipart/form-data":
            check_declared_length(request.headers, settings.max_bytes + FORM_OVERHEAD)
            data, filename = await read_multipart_file(
                request.headers, request.stream(), settings.max_bytes
            )
        elif media == "application/json":
            check_declared_length(request.headers, JSON_LIMIT)
            resolved = await resolver.resolve(await read_uri_body(request.stream()))
            data, filename, stored_uri = resolved.data, resolved.filename, resolved.stored_uri
        else:
            raise UploadRejected(
                415,
                Rejection.UNSUPPORTED_TYPE,
                "send multipart/form-data with a 'file' field, or application/json with a 'uri'",
            )
        signature = limits.check_image(data)
        image_id = uuid.uuid4().hex
        metadata = {"filename": filename[:200], "uploader": uploader}
        started = time.perf_counter()
        event = await _publish(uploads, data, signature, image_id, metadata, stored_uri, settings)
        metrics.delivery.observe(time.perf_counter() - started)
        try:
            await run_in_threadpool(status.mark_pending, image_id)
        except Exception:  # accepted all the same: a 5xx now would make a retry duplicate it
            metrics.status_write_failures.inc()
            log.exception("upload %s accepted, but marking it pending failed", image_id)
        status_url = f"/v1/uploads/{image_id}"
        return JSONResponse(
            Accepted(
                image_id=image_id, event_id=event.event_id, status_url=status_url
            ).model_dump(),
            status_code=202,
            headers={"Location": status_url},
        )

    @app.get(
        "/v1/uploads/{image_id}",
        response_model=EnrichedEvent,
        summary="The pipeline's result for an image",
        responses={
            202: {"model": Pending, "description": "Uploaded; no result yet."},
            401: _error("The API key is missing or wrong."),
            404: _error("No upload with this id has been seen."),
            409: {"model": DeadLettered, "description": "A stage dead-lettered the image."},
        },
    )
    def upload_status(
        image_id: str = PathParam(min_length=1, max_length=200),
        _: str = Depends(authenticated),
    ) -> Response:
        """200 with the enriched event, 202 while pending, 409 if dead-lettered, else 404."""
        found = status.get(image_id)
        if found is None:
            body = ErrorBody(error="not_found", detail=f"no upload {image_id!r} has been seen")
            return JSONResponse(body.model_dump(), status_code=404)
        code = {State.ENRICHED: 200, State.PENDING: 202, State.DEAD_LETTERED: 409}[found.state]
        return Response(found.body, status_code=code, media_type="application/json")

    @app.get("/healthz", response_model=Health, responses={503: {"model": Health}})
    def healthz() -> JSONResponse:
        """Liveness: the delivery and status threads are running."""
        alive = uploads.alive() and follower.alive()
        return JSONResponse({"status": "ok" if alive else "unavailable"}, 200 if alive else 503)

    @app.get("/readyz", response_model=Health, responses={503: {"model": Health}})
    def readyz() -> JSONResponse:
        """Readiness: the broker answers and the status follower has its partitions."""
        ready = follower.ready() and uploads.broker_reachable(timeout_s=2.0)
        return JSONResponse({"status": "ready" if ready else "unavailable"}, 200 if ready else 503)

    @app.get("/metrics", include_in_schema=False)
    def prometheus() -> Response:
        """Prometheus text format, from the gateway's own registry."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _reference_event(
    data: bytes, signature: ImageFormat, image_id: str, metadata: dict[str, str], uri: str
) -> UploadEvent:
    """The upload event of an object already in the store (hashing runs off the loop)."""
    return UploadEvent(
        event_id=str(uuid.uuid4()),
        image_id=image_id,
        uri=uri,
        content_type=signature.mime,
        size_bytes=len(data),
        sha256=content_hash(data),
        uploaded_at=datetime.now(UTC),
        source="gateway",
        metadata=metadata,
    )


def _closing(client: httpx.AsyncClient, lifespan: Lifespan | None) -> Lifespan:
    """The caller's lifespan, then closing the fetch client the app made."""

    @asynccontextmanager
    async def run(app: FastAPI) -> AsyncIterator[None]:
        try:
            if lifespan is None:
                yield
            else:
                async with lifespan(app):
                    yield
        finally:
            await client.aclose()

    return run


async def _publish(
    uploads: AckedUploadProducer,
    data: bytes,
    signature: ImageFormat,
    image_id: str,
    metadata: dict[str, str],
    stored_uri: str | None,
    settings: GatewaySettings,
) -> UploadEvent:
    """Store (unless already stored) and emit; return once the broker acknowledged."""
    try:
        if stored_uri is None:
            name = f"upload{signature.suffix}"
            event, delivered = await run_in_threadpool(
                uploads.upload_acked, data, name, image_id, metadata
            )
        else:
            event = await run_in_threadpool(
                _reference_event, data, signature, image_id, metadata, stored_uri
            )
            delivered = await run_in_threadpool(uploads.send_acked, event)
        await asyncio.wait_for(asyncio.wrap_future(delivered), settings.delivery_timeout_s)
    except (TimeoutError, DeliveryFailed, BufferError, KafkaException) as error:
        detail = f"the upload event was not acknowledged: {type(error).__name__}"
        raise UploadRejected(503, Rejection.UNAVAILABLE, detail) from error
    except Exception as error:  # the object store (disk, S3) is the other dependency here
        log.exception("storing upload %s failed", image_id)
        raise UploadRejected(503, Rejection.UNAVAILABLE, "the object store failed") from error
    return event
