"""The gateway's Prometheus metrics, in a registry of its own (never the global one).

Requests are labelled by route *template* (``/v1/uploads/{image_id}``), never by the raw
path, so image ids cannot blow up the series count. The latency buckets bracket the
200 ms gateway budget finely, so ``histogram_quantile`` can tell 150 ms from 250 ms.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from deeptrust.gateway.sniff import Rejection

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.5, 1, 2.5, 5, 10)


class GatewayMetrics:
    """Request counts, request latency, delivery latency and rejected uploads by reason."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "deeptrust_gateway_requests",
            "HTTP requests answered.",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "deeptrust_gateway_request_seconds",
            "Seconds from a request's arrival to its response.",
            ["route", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.delivery = Histogram(
            "deeptrust_gateway_delivery_seconds",
            "Seconds from storing an upload to the broker's acknowledgement of its event.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self._rejected = Counter(
            "deeptrust_gateway_rejected_uploads",
            "Uploads refused, by reason.",
            ["reason"],
            registry=r,
        )
        for reason in Rejection:  # exported at zero from the start, so rate() sees the first
            self._rejected.labels(reason.value)
        self.cut_off = Counter(
            "deeptrust_gateway_bodies_cut_off",
            "Bodies refused while streaming (over the cap before their end).",
            registry=r,
        )
        self.status_write_failures = Counter(
            "deeptrust_gateway_status_write_failures",
            "Accepted uploads the status store could not mark pending (the follower will).",
            registry=r,
        )

    def rejected(self, reason: Rejection) -> None:
        """Count one refused upload."""
        self._rejected.labels(reason.value).inc()


class RequestMetricsMiddleware:
    """ASGI middleware that counts and times every HTTP request by route template."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self._app = app
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, noting its status and how long it took."""
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def noting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self._app(scope, receive, noting_send)
        finally:
            route = _route_template(scope)
            method = str(scope["method"])
            self._metrics.requests.labels(route, method, str(status)).inc()
            self._metrics.latency.labels(route, method).observe(time.perf_counter() - started)


def _route_template(scope: Scope) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"
